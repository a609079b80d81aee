//! The origin servers behind the gateway, as a sans-IO model shared by the simulated world and
//! the live loopback servers, so both worlds answer byte for byte alike.
//!
//! The HTTP origin answers each request according to its path:
//!
//! | path          | answer                                                               |
//! |---------------|----------------------------------------------------------------------|
//! | `/chunked`    | 200, chunked body `hello chunked` in two chunks, trailer `X-Trailer`  |
//! | `/close`      | 200 without length, body `close-delimited`, then close               |
//! | `/204`        | 204 No Content                                                       |
//! | `/304`        | 304 Not Modified                                                     |
//! | `/continue`   | `100 Continue` as soon as the head asks for it, then the echo answer |
//! | `/bad`        | a response with two different Content-Lengths                        |
//! | `/silent`     | nothing, ever                                                        |
//! | `/empty`      | close without a byte                                                 |
//! | `/truncated`  | `Content-Length: 100` but 10 bytes, then close                       |
//! | `/big`        | 200 with a 100,000-byte body                                         |
//! | anything else | 200 with a body describing the request: method, target, headers, body size |

/// What an origin does with bytes it received.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Bytes to send back.
    pub write: Vec<u8>,
    /// Close the connection after writing.
    pub close: bool,
}

/// An origin's behaviour.
#[derive(Debug)]
pub enum Origin {
    /// Echoes every byte (a tunnel destination).
    Echo,
    /// The HTTP origin of the table above.
    Http(HttpOrigin),
}

/// The HTTP origin: parses requests from a byte stream and answers them.
#[derive(Debug, Default)]
pub struct HttpOrigin {
    buf: Vec<u8>,
    /// Set once a request asked for silence or a close.
    stopped: bool,
    /// A `100 Continue` was sent for the request in progress.
    continued: bool,
}

impl Origin {
    /// Returns a new HTTP origin.
    #[must_use]
    pub fn http() -> Origin {
        Origin::Http(HttpOrigin::default())
    }

    /// Handles bytes from the gateway.
    pub fn on_data(&mut self, data: &[u8]) -> Output {
        match self {
            Origin::Echo => Output {
                write: data.to_vec(),
                close: false,
            },
            Origin::Http(http) => http.on_data(data),
        }
    }
}

impl HttpOrigin {
    fn on_data(&mut self, data: &[u8]) -> Output {
        let mut out = Output::default();
        if self.stopped {
            return out;
        }
        self.buf.extend_from_slice(data);
        if !self.continued && wants_continue(&self.buf) {
            self.continued = true;
            out.write
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        while let Some((request, used)) = parse_request(&self.buf) {
            self.buf.drain(..used);
            self.continued = false;
            answer(&request, &mut out);
            if out.close || request.path == "/silent" {
                self.stopped = true;
                break;
            }
        }
        out
    }
}

/// A request as the origin saw it.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body_len: usize,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn answer(request: &Request, out: &mut Output) {
    let head = request.method == "HEAD";
    let w = &mut out.write;
    match request.path.as_str() {
        "/chunked" => {
            w.extend_from_slice(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n");
            w.extend_from_slice(b"Content-Type: text/plain\r\n\r\n");
            if !head {
                w.extend_from_slice(b"6\r\nhello \r\n7\r\nchunked\r\n0\r\nX-Trailer: yes\r\n\r\n");
            }
        }
        "/close" => {
            w.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n");
            if !head {
                w.extend_from_slice(b"close-delimited");
            }
            out.close = true;
        }
        "/204" => w.extend_from_slice(b"HTTP/1.1 204 No Content\r\nX-Origin: yes\r\n\r\n"),
        "/304" => w.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n"),
        "/bad" => w.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        ),
        "/silent" => {}
        "/empty" => out.close = true,
        "/truncated" => {
            w.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
            out.close = true;
        }
        "/big" => {
            let body = vec![b'x'; 100_000];
            w.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
            if !head {
                w.extend_from_slice(&body);
            }
        }
        _ => {
            let mut body = format!(
                "origin: {} {}\nbody: {}\n",
                request.method, request.path, request.body_len
            );
            for (name, value) in &request.headers {
                body.push_str(&format!("{}: {}\n", name.to_ascii_lowercase(), value));
            }
            w.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            if !head {
                w.extend_from_slice(body.as_bytes());
            }
        }
    }
}

/// Parses one whole request (head and Content-Length or chunked body) from the front of `buf`.
fn parse_request(buf: &[u8]) -> Option<(Request, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = parsed.parse(buf).ok()? else {
        return None;
    };
    let method = parsed.method?.to_owned();
    let path = parsed.path?.to_owned();
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut request = Request {
        method,
        path,
        headers,
        body_len: 0,
    };
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"));
    if chunked {
        let (body_len, used) = dechunk(&buf[head_len..])?;
        request.body_len = body_len;
        return Some((request, head_len + used));
    }
    let length: usize = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if buf.len() < head_len + length {
        return None;
    }
    request.body_len = length;
    Some((request, head_len + length))
}

/// Returns whether `buf` starts with a whole head for `/continue` that expects 100-continue.
fn wants_continue(buf: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(buf) else {
        return false;
    };
    parsed.path == Some("/continue")
        && parsed.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("expect") && h.value.eq_ignore_ascii_case(b"100-continue")
        })
}

/// Returns (decoded length, bytes used) of a complete chunked body.
fn dechunk(buf: &[u8]) -> Option<(usize, usize)> {
    let mut at = 0;
    let mut total = 0;
    loop {
        let line_end = find(&buf[at..], b"\r\n")? + at;
        let line = std::str::from_utf8(&buf[at..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let end = find(&buf[at..], b"\r\n")? + at;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some((total, at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        total += size;
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_pipelined_requests_in_order() {
        let mut origin = Origin::http();
        let out = origin.on_data(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /204 HTTP/1.1\r\n\r\n");
        let text = String::from_utf8(out.write).unwrap();
        assert!(text.contains("origin: GET /a\n"), "{text}");
        assert!(
            text.ends_with("HTTP/1.1 204 No Content\r\nX-Origin: yes\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn waits_for_whole_bodies() {
        let mut origin = Origin::http();
        let partial =
            origin.on_data(b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab");
        assert!(partial.write.is_empty());
        let out = origin.on_data(b"c\r\n0\r\n\r\n");
        assert!(String::from_utf8(out.write).unwrap().contains("body: 3\n"));
    }
}
