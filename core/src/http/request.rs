//! Request heads: strict parsing, the destination they name, and the head forwarded upstream.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use super::{
    Codings, MAX_HEADERS, classify_codings, is_hop_by_hop, line_endings_are_crlf,
    parse_content_length, push_header, tokens,
};
use crate::host::{Host, HostError, check_authority, parse_authority};

/// Where a request's destination comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// A proxy request: `CONNECT host:port` or an absolute-form target.
    Proxy,
    /// A request intercepted on its way to an origin: origin-form, destination from `Host`,
    /// port from the original destination.
    Intercepted { port: u16 },
}

/// What the request asks the gateway to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Open a tunnel (`CONNECT`).
    Connect,
    /// Forward one HTTP exchange.
    Forward,
    /// Forward the client's stream as it is (an intercepted TLS connection), then splice.
    Passthrough,
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
}

/// Why a head was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Over `max_header_bytes` or [`MAX_HEADERS`]: 431 (or 502 for a response).
    TooLarge,
    /// Malformed or ambiguous, with a snake_case detail: 400 (or 502 for a response).
    Invalid(&'static str),
}

/// A parsed, validated request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    /// The method as sent (a validated token; the common ones without an allocation).
    pub(crate) method: Cow<'static, str>,
    /// Tunnel or forward.
    pub(crate) kind: Kind,
    /// The destination host.
    pub(crate) host: Host,
    /// The destination port.
    pub(crate) port: u16,
    /// The minor HTTP version: 0 or 1.
    pub(crate) version: u8,
    /// The length of the head in the input, blank line included.
    pub(crate) head_len: usize,
    /// How the request body is delimited.
    pub(crate) body: Framing,
    /// Whether the client wants the connection kept open after this exchange.
    pub(crate) keep_alive: bool,
    /// The URL as the access log shows it: absolute, query removed (Squid's
    /// `strip_query_terms`), or `host:port` for CONNECT.
    pub(crate) url: String,
    /// The head to send upstream (empty for CONNECT).
    pub(crate) forward_head: Vec<u8>,
}

impl Request {
    /// Returns whether the response to this request has no body whatever its headers say.
    pub(crate) fn is_head(&self) -> bool {
        &*self.method == "HEAD"
    }
}

/// Parses the complete head `buf[..head_len]`.
pub(crate) fn parse(buf: &[u8], head_len: usize, form: Form) -> Result<Request, Rejection> {
    let head = &buf[..head_len];
    if !line_endings_are_crlf(head) {
        return Err(Rejection::Invalid("bare_cr_or_lf"));
    }
    // Uninitialised slots: zeroing 100 headers would cost more than parsing a typical head.
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    match parsed.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Rejection::Invalid("malformed_head")),
        Err(httparse::Error::TooManyHeaders) => return Err(Rejection::TooLarge),
        Err(e) => return Err(Rejection::Invalid(httparse_detail(e))),
    }
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(Rejection::Invalid("malformed_head"));
    };
    if !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Rejection::Invalid("invalid_target"));
    }
    let fields = Fields::collect(parsed.headers)?;
    // Some back ends read `_` as `-` (CGI maps both spellings to HTTP_CONTENT_LENGTH): a
    // framing field spelt with an underscore would frame the body differently there.
    if parsed.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("content_length")
            || h.name.eq_ignore_ascii_case("transfer_encoding")
    }) {
        return Err(Rejection::Invalid("framing_header_with_underscore"));
    }
    let body = fields.framing(version)?;
    let keep_alive = version == 1 && !fields.close;
    let is_connect = method.eq_ignore_ascii_case("CONNECT");

    if is_connect {
        if form != Form::Proxy {
            return Err(Rejection::Invalid("unexpected_connect"));
        }
        if body != Framing::None {
            return Err(Rejection::Invalid("connect_with_body"));
        }
        let (host, port) = parse_authority(target.as_bytes(), None).map_err(host_detail)?;
        let url = host.authority(port);
        return Ok(Request {
            method: Cow::Borrowed("CONNECT"),
            kind: Kind::Connect,
            host,
            port,
            version,
            head_len,
            body,
            keep_alive,
            url,
            forward_head: Vec::new(),
        });
    }

    let (host, port, path) = match form {
        Form::Proxy => split_absolute(target)?,
        Form::Intercepted { port } => {
            if !target.starts_with('/') {
                return Err(Rejection::Invalid("invalid_target"));
            }
            let Some(value) = fields.host else {
                return Err(Rejection::Invalid("missing_host"));
            };
            // The port of the destination is where the client was going, whatever Host says.
            let (host, _) = parse_authority(value, Some(port)).map_err(host_detail)?;
            (host, port, Cow::Borrowed(target))
        }
    };
    if let Some(value) = fields.host {
        // RFC 9112 §3.2.2: a proxy replaces Host with the target's authority; a Host that does
        // not even parse is refused rather than silently dropped.
        check_authority(value, Some(80)).map_err(|_| Rejection::Invalid("invalid_host_header"))?;
    }
    let authority = match (port, &host) {
        (80, Host::Name(name)) => name.to_string(),
        (80, Host::Ip(_)) => host.to_string(),
        _ => host.authority(port),
    };
    let query_at = memchr::memchr(b'?', path.as_bytes()).unwrap_or(path.len());
    let mut url = String::with_capacity(7 + authority.len() + query_at);
    url.push_str("http://");
    url.push_str(&authority);
    url.push_str(&path[..query_at]);

    let mut head = Vec::with_capacity(head_len + 32);
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(if version == 1 {
        b" HTTP/1.1\r\n"
    } else {
        b" HTTP/1.0\r\n"
    });
    push_header(&mut head, b"Host", authority.as_bytes());
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") || fields.drops(h.name) {
            continue;
        }
        push_header(&mut head, h.name.as_bytes(), h.value);
    }
    let via: &[u8] = if version == 1 {
        b"1.1 egret"
    } else {
        b"1.0 egret"
    };
    push_header(&mut head, b"Via", via);
    if version == 0 {
        push_header(&mut head, b"Connection", b"close");
    }
    head.extend_from_slice(b"\r\n");

    Ok(Request {
        method: intern_method(method),
        kind: Kind::Forward,
        host,
        port,
        version,
        head_len,
        body,
        keep_alive,
        url,
        forward_head: head,
    })
}

/// The fields of a head that framing and forwarding depend on.
#[derive(Debug, Default)]
pub(crate) struct Fields<'a> {
    pub(crate) host: Option<&'a [u8]>,
    pub(crate) content_length: Option<u64>,
    pub(crate) transfer_encoding: Vec<&'a [u8]>,
    pub(crate) close: bool,
    pub(crate) keep_alive: bool,
    /// Header names listed in `Connection`, dropped when forwarding.
    pub(crate) connection_names: Vec<&'a [u8]>,
    pub(crate) content_type: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    /// Collects the framing fields, refusing duplicates that would make framing ambiguous.
    pub(crate) fn collect(headers: &[httparse::Header<'a>]) -> Result<Fields<'a>, Rejection> {
        let mut fields = Fields::default();
        for h in headers {
            let name = h.name;
            if name.eq_ignore_ascii_case("host") {
                if fields.host.replace(h.value).is_some() {
                    return Err(Rejection::Invalid("multiple_host"));
                }
            } else if name.eq_ignore_ascii_case("content-length") {
                let length = parse_content_length(h.value)
                    .ok_or(Rejection::Invalid("invalid_content_length"))?;
                if fields.content_length.replace(length).is_some() {
                    return Err(Rejection::Invalid("duplicate_content_length"));
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                fields.transfer_encoding.push(h.value);
            } else if name.eq_ignore_ascii_case("connection")
                || name.eq_ignore_ascii_case("proxy-connection")
            {
                for token in tokens(h.value) {
                    // Framing is judged from these fields: a Connection option that strips
                    // them would send the body on as messages the gateway never saw.
                    let framing = token.eq_ignore_ascii_case(b"content-length")
                        || token.eq_ignore_ascii_case(b"transfer-encoding");
                    if framing && name.eq_ignore_ascii_case("connection") {
                        return Err(Rejection::Invalid("connection_names_framing_header"));
                    }
                    if token.eq_ignore_ascii_case(b"close") {
                        fields.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        fields.keep_alive = true;
                    } else if name.eq_ignore_ascii_case("connection") {
                        fields.connection_names.push(token);
                    }
                }
            } else if name.eq_ignore_ascii_case("content-type") && fields.content_type.is_none() {
                fields.content_type = Some(h.value);
            }
        }
        Ok(fields)
    }

    /// Returns how a request body is delimited (RFC 9112 §6.3), refusing every ambiguity.
    fn framing(&self, version: u8) -> Result<Framing, Rejection> {
        if self.transfer_encoding.is_empty() {
            return Ok(match self.content_length {
                None | Some(0) => Framing::None,
                Some(n) => Framing::Length(n),
            });
        }
        if self.content_length.is_some() {
            return Err(Rejection::Invalid("content_length_and_transfer_encoding"));
        }
        if version == 0 {
            // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
            return Err(Rejection::Invalid("transfer_encoding_in_http10"));
        }
        match classify_codings(self.transfer_encoding.iter().copied()) {
            Codings::Chunked => Ok(Framing::Chunked),
            Codings::NotChunkedLast | Codings::Invalid => {
                Err(Rejection::Invalid("unsupported_transfer_coding"))
            }
        }
    }

    /// Returns whether a header is dropped when a message is forwarded.
    pub(crate) fn drops(&self, name: &str) -> bool {
        is_hop_by_hop(name)
            || self
                .connection_names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Returns the method, borrowed from a static string when it is a common one.
fn intern_method(method: &str) -> Cow<'static, str> {
    const COMMON: [&str; 8] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE",
    ];
    match COMMON.iter().find(|m| **m == method) {
        Some(common) => Cow::Borrowed(common),
        None => Cow::Owned(method.to_owned()),
    }
}

/// Splits an absolute-form `http://authority/path?query` target.
fn split_absolute(target: &str) -> Result<(Host, u16, Cow<'_, str>), Rejection> {
    if target.starts_with('/') || target == "*" {
        return Err(Rejection::Invalid("origin_form_to_proxy"));
    }
    let rest = match target.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &target[7..],
        _ if target.contains("://") => return Err(Rejection::Invalid("unsupported_scheme")),
        _ => return Err(Rejection::Invalid("invalid_target")),
    };
    let end = memchr::memchr3(b'/', b'?', b'#', rest.as_bytes()).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if path.starts_with('#') {
        return Err(Rejection::Invalid("invalid_target"));
    }
    let (host, port) = parse_authority(authority.as_bytes(), Some(80)).map_err(host_detail)?;
    // RFC 9112 §3.2.1: an empty path is sent as "/", also in front of a query.
    let path = match path {
        "" => Cow::Borrowed("/"),
        p if p.starts_with('?') => Cow::Owned(format!("/{p}")),
        p => Cow::Borrowed(p),
    };
    Ok((host, port, path))
}

fn host_detail(e: HostError) -> Rejection {
    Rejection::Invalid(e.as_str())
}

fn httparse_detail(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid_header_name",
        httparse::Error::HeaderValue => "invalid_header_value",
        httparse::Error::NewLine => "bare_cr_or_lf",
        httparse::Error::Token => "invalid_request_line",
        httparse::Error::Version => "unsupported_version",
        httparse::Error::Status | httparse::Error::TooManyHeaders => "malformed_head",
    }
}
