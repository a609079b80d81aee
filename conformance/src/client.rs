//! The client's side of a case: reading responses out of received bytes and checking them.

use crate::case::ResponseExpect;

/// A response as the client read it.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header fields in order.
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
}

/// The outcome of reading a response from the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// A whole response and the bytes it took.
    Complete(Response, usize),
    /// More bytes are needed (or, for a close-delimited body, the end of the stream).
    Incomplete,
    /// The bytes are not an HTTP response.
    Invalid(String),
}

/// Reads one response from `buf`; `closed` says the stream has ended, which completes a
/// close-delimited body.
#[must_use]
pub fn read_response(buf: &[u8], closed: bool, to_head: bool) -> Read {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Read::Incomplete,
        Err(e) => return Read::Invalid(format!("{e}: {:?}", String::from_utf8_lossy(buf))),
    };
    let status = parsed.code.unwrap_or(0);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let rest = &buf[head_len..];
    let no_body = to_head || (100..200).contains(&status) || status == 204 || status == 304;
    let (body, used) = if no_body {
        (Vec::new(), 0)
    } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        match dechunk(rest) {
            Some(done) => done,
            None => return Read::Incomplete,
        }
    } else if let Some(length) = get("content-length") {
        let Ok(length) = length.trim().parse::<usize>() else {
            return Read::Invalid(format!("content-length {length:?}"));
        };
        if rest.len() < length {
            return Read::Incomplete;
        }
        (rest[..length].to_vec(), length)
    } else if closed {
        (rest.to_vec(), rest.len())
    } else {
        return Read::Incomplete;
    };
    Read::Complete(
        Response {
            status,
            headers,
            body,
        },
        head_len + used,
    )
}

/// Checks a response against an expectation; returns what differs.
pub fn check(response: &Response, want: &ResponseExpect) -> Result<(), String> {
    let body = String::from_utf8_lossy(&response.body);
    let describe = || {
        let heads: Vec<String> = response
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        format!(
            "got {} [{}] body {:?}",
            response.status,
            heads.join(" | "),
            body
        )
    };
    if response.status != want.status {
        return Err(format!("status {} expected; {}", want.status, describe()));
    }
    if let Some(error) = want.squid_error {
        let got = response.headers.iter().find(|(n, _)| n == "x-squid-error");
        if got.is_none_or(|(_, v)| v.split(' ').next() != Some(error)) {
            return Err(format!("X-Squid-Error {error} expected; {}", describe()));
        }
    }
    for line in &want.headers {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        let found = response
            .headers
            .iter()
            .any(|(n, v)| *n == name && v.eq_ignore_ascii_case(value));
        if !found {
            return Err(format!("header '{line}' expected; {}", describe()));
        }
    }
    for name in &want.headers_absent {
        if response
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            return Err(format!("header '{name}' must be absent; {}", describe()));
        }
    }
    for part in &want.body_has {
        if !body.contains(part.as_str()) {
            return Err(format!("body must contain {part:?}; {}", describe()));
        }
    }
    for part in &want.body_lacks {
        if body.contains(part.as_str()) {
            return Err(format!("body must not contain {part:?}; {}", describe()));
        }
    }
    if let Some(len) = want.body_len {
        if response.body.len() != len {
            return Err(format!(
                "body of {len} bytes expected, got {}",
                response.body.len()
            ));
        }
    }
    if let Some(exact) = &want.body {
        if body != *exact {
            return Err(format!("body {exact:?} expected; {}", describe()));
        }
    }
    Ok(())
}

fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let size =
            usize::from_str_radix(std::str::from_utf8(&buf[at..end]).ok()?.trim(), 16).ok()?;
        at = end + 2;
        if size == 0 {
            loop {
                let end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some((body, at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_framing() {
        let cl = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiNEXT";
        let Read::Complete(r, used) = read_response(cl, false, false) else {
            panic!()
        };
        assert_eq!((r.body.as_slice(), used), (&b"hi"[..], cl.len() - 4));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
        assert!(
            matches!(read_response(chunked, false, false), Read::Complete(r, _) if r.body == b"hi")
        );
        let close = b"HTTP/1.1 200 OK\r\n\r\nall";
        assert_eq!(read_response(close, false, false), Read::Incomplete);
        assert!(
            matches!(read_response(close, true, false), Read::Complete(r, _) if r.body == b"all")
        );
    }
}
