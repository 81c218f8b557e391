//! A Kubernetes API server for unit tests: a thread on loopback that answers each request
//! (one per connection) with what `answer` makes of its request line.

use std::io::{BufRead as _, Write as _};

use super::{KubeApi, Token};

/// A client of a server on loopback answering up to `connections` requests: `answer` gets the
/// request line (`GET /api/v1/pods?limit=100 HTTP/1.1`) and gives the status line's code and
/// text (`"404 Not Found"`) and the JSON body.
pub(crate) fn api(
    connections: usize,
    answer: impl Fn(&str) -> (&'static str, String) + Send + 'static,
) -> Result<KubeApi, Box<dyn std::error::Error>> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { return };
            let Ok(read_half) = stream.try_clone() else {
                continue;
            };
            let mut reader = std::io::BufReader::new(read_half);
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let (status, body) = answer(&request);
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(KubeApi::new(
        format!("http://127.0.0.1:{port}"),
        None,
        Token::None,
    )?)
}
