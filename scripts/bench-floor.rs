//! The floor under a cold `verify-attestation` (scripts/bench-attestations.py): the three
//! registry round trips any client of a legacy `.att` attestation must make one after the
//! other, and nothing else. Not part of ocigate; std only, built by the bench script with
//! `rustc -O`.
//!
//!     bench-floor HOST:PORT REPOSITORY TAG
//!
//! On one plain-HTTP/1.1 connection (TCP_NODELAY): GET the tag's manifest, take its digest
//! from `Docker-Content-Digest`; GET the `sha256-<hex>.att` manifest; GET the blob its last
//! `"digest"` names (the layer: the config comes first). Nothing is parsed beyond that and
//! nothing is verified: a process that does less cannot be a client. Exits 1 on anything
//! unexpected (a bench helper, not a tool: it trusts the registry the bench started).

use std::io::{Read, Write};
use std::net::TcpStream;

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
                      application/vnd.oci.image.index.v1+json";

/// One response: its header block (lower-cased) and body.
struct Response {
    head: String,
    body: Vec<u8>,
}

fn get(conn: &mut TcpStream, host: &str, path: &str) -> Option<Response> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: {ACCEPT}\r\n\r\n");
    conn.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            return None;
        }
        let len: usize = header(&head, "content-length")?.parse().ok()?;
        if buf.len() >= end + 4 + len {
            let body = buf[end + 4..end + 4 + len].to_vec();
            return Some(Response { head, body });
        }
    }
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn run(host: &str, repo: &str, tag: &str) -> Option<usize> {
    let mut conn = TcpStream::connect(host).ok()?;
    conn.set_nodelay(true).ok()?;
    let image = get(&mut conn, host, &format!("/v2/{repo}/manifests/{tag}"))?;
    let digest = header(&image.head, "docker-content-digest")?;
    let att_tag = format!("{}.att", digest.replacen(':', "-", 1));
    let att = get(&mut conn, host, &format!("/v2/{repo}/manifests/{att_tag}"))?;
    let text = String::from_utf8_lossy(&att.body);
    let (_, rest) = text.rsplit_once("\"digest\":\"")?;
    let (layer, _) = rest.split_once('"')?;
    let blob = get(&mut conn, host, &format!("/v2/{repo}/blobs/{layer}"))?;
    Some(blob.body.len())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [host, repo, tag] if run(host, repo, tag).is_some() => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::FAILURE,
    }
}
