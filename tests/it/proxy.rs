//! The tests' own HTTP/1.1 server on loopback, in two roles:
//! - a *recorder*: a second origin that answers with a handler and records every request it
//!   receives (to prove that no credential ever arrives there);
//! - a *proxy* in front of the real registry: forwards each request, then lets a test rewrite the
//!   answer (add a `Link`, move an upload `Location`, turn a blob into a redirect). The registry
//!   behind it is real; only the answer on the wire is changed.
//!
//! One request per connection (`Connection: close`); every loop is bounded in time.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request as received.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer to send.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub(crate) fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub(crate) fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    pub(crate) fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// A "status" that makes the server close the connection without answering.
pub(crate) const DROP: u16 = 0;

/// A header (never sent) that makes the server send the head and half the body, then pause this
/// many milliseconds before the rest: an answer whose body stops arriving.
pub(crate) const STALL_BODY_MS: &str = "x-test-stall-body-ms";

/// An HTTP server on a free loopback port; stops on drop (and by itself after 10 minutes).
pub(crate) struct HttpServer {
    port: u16,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Request>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    pub(crate) fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s, log) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (h, log) = (handler.clone(), log.clone());
                        std::thread::spawn(move || serve_one(stream, &*h, &log));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(3)),
                }
            }
        });
        HttpServer {
            port,
            stop,
            seen,
            thread: Some(thread),
        }
    }

    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host())
    }

    /// Every request received so far.
    pub(crate) fn seen(&self) -> Vec<Request> {
        self.seen.lock().expect("log").clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Request>>) {
    stream.set_nonblocking(false).ok();
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let Some(req) = read_request(&mut reader) else {
        return;
    };
    log.lock().expect("log").push(req.clone());
    let resp = handler(&req);
    if resp.status == DROP {
        // The connection is closed without an answer (a reset, as the client sees it).
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return;
    }
    write_response(stream, &resp);
}

fn read_request(reader: &mut impl std::io::BufRead) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        if headers.len() > 200 {
            return None;
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len.min(64 << 20)];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn write_response(mut stream: TcpStream, resp: &Response) {
    let mut head = format!("HTTP/1.1 {} X\r\n", resp.status);
    for (k, v) in &resp.headers {
        if [
            "content-length",
            "connection",
            "transfer-encoding",
            STALL_BODY_MS,
        ]
        .iter()
        .any(|n| k.eq_ignore_ascii_case(n))
        {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        resp.body.len()
    ));
    let _ = stream.write_all(head.as_bytes());
    let stall: Option<u64> = resp
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(STALL_BODY_MS))
        .and_then(|(_, ms)| ms.parse().ok());
    let (first, rest) = resp.body.split_at(stall.map_or(0, |_| resp.body.len() / 2));
    let _ = stream.write_all(first);
    let _ = stream.flush();
    if let Some(ms) = stall {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let _ = stream.write_all(rest);
    let _ = stream.flush();
}

/// Forward `req` to `upstream` (host:port) over HTTP/1.0 (so that the answer is never chunked)
/// and return its answer.
pub(crate) fn forward(upstream: &str, req: &Request) -> Response {
    let Ok(mut s) = TcpStream::connect(upstream) else {
        return Response::new(502).body("proxy: upstream unreachable");
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let mut head = format!("{} {} HTTP/1.0\r\n", req.method, req.path);
    for (k, v) in &req.headers {
        if ["connection", "content-length", "transfer-encoding"]
            .iter()
            .any(|n| k.eq_ignore_ascii_case(n))
        {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", req.body.len()));
    if s.write_all(head.as_bytes()).is_err() || s.write_all(&req.body).is_err() {
        return Response::new(502).body("proxy: upstream write failed");
    }
    let mut reader = BufReader::new(s);
    let mut status_line = String::new();
    if reader.read_line(&mut status_line).is_err() {
        return Response::new(502).body("proxy: no status line");
    }
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(502);
    let mut resp = Response::new(status);
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            resp.headers
                .push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut body = Vec::new();
    let _ = reader.take(64 << 20).read_to_end(&mut body);
    resp.body = body;
    resp
}

/// A proxy in front of `upstream`: every request is forwarded, and `rewrite` may change the
/// answer before it goes back.
pub(crate) fn proxy(
    upstream: String,
    rewrite: impl Fn(&Request, Response) -> Response + Send + Sync + 'static,
) -> HttpServer {
    HttpServer::start(move |req| rewrite(req, forward(&upstream, req)))
}
