//! Response heads from upstream: framing (RFC 9112 §6.3) and the head forwarded to the client.

use super::request::{Fields, Rejection};
use super::{Codings, MAX_HEADERS, classify_codings, line_endings_are_crlf, push_header};

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Body {
    /// No body (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the upstream closes.
    UntilClose,
}

/// A parsed, validated response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Response {
    /// The status code.
    pub(crate) status: u16,
    /// The length of the head in the input, blank line included.
    pub(crate) head_len: usize,
    /// How the body is delimited.
    pub(crate) body: Body,
    /// Whether the upstream connection may carry another request afterwards.
    pub(crate) reusable: bool,
    /// The media type for the access log.
    pub(crate) content_type: Option<Box<str>>,
    /// The status line and forwarded fields, without the final blank line, so that the caller
    /// can still add `Connection: close`.
    pub(crate) forward_head: Vec<u8>,
}

impl Response {
    /// Returns whether this is an interim (1xx) response.
    pub(crate) fn is_interim(&self) -> bool {
        (100..200).contains(&self.status)
    }
}

/// Parses the complete head `buf[..head_len]` of a response to a request whose method was
/// HEAD when `to_head` is set.
pub(crate) fn parse(buf: &[u8], head_len: usize, to_head: bool) -> Result<Response, Rejection> {
    let head = &buf[..head_len];
    if !line_endings_are_crlf(head) {
        return Err(Rejection::Invalid("bare_cr_or_lf"));
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Rejection::Invalid("malformed_head")),
        Err(httparse::Error::TooManyHeaders) => return Err(Rejection::TooLarge),
        Err(_) => return Err(Rejection::Invalid("malformed_response")),
    }
    let (Some(version), Some(status)) = (parsed.version, parsed.code) else {
        return Err(Rejection::Invalid("malformed_response"));
    };
    if !(100..=599).contains(&status) {
        return Err(Rejection::Invalid("invalid_status"));
    }
    if status == 101 {
        // Upgrade is stripped from every forwarded request, so a switch was never asked for.
        return Err(Rejection::Invalid("unexpected_switching_protocols"));
    }
    let fields = Fields::collect(parsed.headers).map_err(|e| match e {
        Rejection::Invalid("multiple_host") => Rejection::Invalid("malformed_response"),
        Rejection::TooLarge => Rejection::TooLarge,
        Rejection::Invalid(detail) => Rejection::Invalid(detail),
    })?;
    let no_body = to_head || (100..200).contains(&status) || status == 204 || status == 304;
    let (body, framing_reusable) = if no_body {
        (Body::None, true)
    } else if !fields.transfer_encoding.is_empty() {
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; such a message must not
        // be followed by another on the same connection.
        let reusable = fields.content_length.is_none();
        match classify_codings(fields.transfer_encoding.iter().copied()) {
            Codings::Chunked => (Body::Chunked, reusable),
            Codings::NotChunkedLast => (Body::UntilClose, false),
            Codings::Invalid => return Err(Rejection::Invalid("unsupported_transfer_coding")),
        }
    } else {
        match fields.content_length {
            Some(0) => (Body::None, true),
            Some(n) => (Body::Length(n), true),
            None => (Body::UntilClose, false),
        }
    };
    let persistent = if version == 1 {
        !fields.close
    } else {
        fields.keep_alive && !fields.close
    };
    let content_type = fields
        .content_type
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim())
        .filter(|v| !v.is_empty() && v.len() <= 100 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(Box::from);

    let mut head = Vec::with_capacity(head_len + 32);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.to_string().as_bytes());
    head.push(b' ');
    head.extend_from_slice(parsed.reason.unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for h in parsed.headers.iter() {
        if !fields.drops(h.name) {
            push_header(&mut head, h.name.as_bytes(), h.value);
        }
    }
    push_header(
        &mut head,
        b"Via",
        if version == 1 {
            b"1.1 egret"
        } else {
            b"1.0 egret"
        },
    );

    Ok(Response {
        status,
        head_len,
        body,
        reusable: persistent && framing_reusable,
        content_type,
        forward_head: head,
    })
}
