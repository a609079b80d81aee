//! HTTP/1.x message heads and body framing, for a proxy that re-frames nothing it can pass
//! through and trusts nothing it has not validated.
//!
//! Heads are parsed by `httparse` after a pre-scan that refuses bare CR and bare LF (RFC 9112
//! §2.2 lets a recipient accept a lone LF; a gateway that does while the origin does not is a
//! smuggling vector). Heads are then written again from the parsed fields, so the upstream only
//! ever sees canonical syntax.

pub(crate) mod body;
pub(crate) mod request;
pub(crate) mod response;

/// The most header fields a head may carry.
pub(crate) const MAX_HEADERS: usize = 100;

/// Headers that describe one connection and never cross a proxy (RFC 9110 §7.6.1), besides
/// any named in `Connection` and every `Proxy-*` header. `Transfer-Encoding` is hop-by-hop
/// too, but bodies are passed on with their chunked framing, so it stays.
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "te", "upgrade"];

/// Returns the length of the head (up to and including the blank line) if `buf` holds a whole
/// one. `searched` is how many bytes of `buf` were already searched without success.
pub(crate) fn find_head_end(buf: &[u8], searched: usize) -> Option<usize> {
    let start = searched.saturating_sub(3);
    // A head has a handful of lines: looking at each LF is cheaper than a substring search.
    memchr::memchr_iter(b'\n', &buf[start..])
        .map(|i| start + i)
        .find(|&i| i >= 3 && &buf[i - 3..=i] == b"\r\n\r\n")
        .map(|i| i + 1)
}

/// Returns whether `buf[from..]` has a line ending other than CRLF: an LF without CR before
/// it, or a CR followed by anything but LF. A CR as the very last byte is not judged (its LF
/// may follow).
pub(crate) fn has_bare_line_ending(buf: &[u8], from: usize) -> bool {
    let from = from.min(buf.len());
    buf[from..].iter().enumerate().any(|(offset, &b)| {
        let i = from + offset;
        match b {
            b'\n' => i == 0 || buf[i - 1] != b'\r',
            b'\r' => buf.get(i + 1).is_some_and(|&next| next != b'\n'),
            _ => false,
        }
    })
}

/// Returns whether every CR in `head` is followed by LF and every LF preceded by CR.
pub(crate) fn line_endings_are_crlf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).all(|i| i > 0 && head[i - 1] == b'\r')
        && memchr::memchr_iter(b'\r', head).all(|i| head.get(i + 1) == Some(&b'\n'))
}

/// Returns whether `b` may appear in a token (RFC 9110 §5.6.2), such as a method.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Returns whether a header is hop-by-hop for every message, whatever `Connection` says.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || name.len() >= 6 && name[..6].eq_ignore_ascii_case("proxy-")
}

/// Iterates over the comma-separated tokens of a header value, trimmed of whitespace.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Parses a Content-Length value: decimal digits only, at most 18 of them (RFC 9110 §8.6).
pub(crate) fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')),
    )
}

/// The transfer codings a request may name before its final `chunked`.
const KNOWN_CODINGS: &[&[u8]] = &[b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress"];

/// What a list of transfer codings says about framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codings {
    /// `chunked` is last and appears once; every other coding is known.
    Chunked,
    /// `chunked` is missing or not last (a response is then delimited by close).
    NotChunkedLast,
    /// An unknown coding, or `chunked` more than once.
    Invalid,
}

/// Classifies the transfer codings of every `Transfer-Encoding` field, in order.
pub(crate) fn classify_codings<'a>(values: impl Iterator<Item = &'a [u8]>) -> Codings {
    let mut chunked_seen = 0;
    let mut chunked_last = false;
    let mut any = false;
    for value in values {
        for coding in tokens(value) {
            any = true;
            if coding.eq_ignore_ascii_case(b"chunked") {
                chunked_seen += 1;
                chunked_last = true;
            } else if KNOWN_CODINGS.iter().any(|k| coding.eq_ignore_ascii_case(k)) {
                chunked_last = false;
            } else {
                return Codings::Invalid;
            }
        }
    }
    match (any, chunked_seen, chunked_last) {
        (false, _, _) => Codings::Invalid,
        (true, 1, true) => Codings::Chunked,
        (true, 0, _) => Codings::NotChunkedLast,
        (true, _, _) => Codings::Invalid,
    }
}

/// Appends `name: value\r\n`.
pub(crate) fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_is_found_across_searches() {
        let buf = b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest";
        assert_eq!(find_head_end(buf, 0), Some(24));
        assert_eq!(find_head_end(&buf[..22], 0), None);
        assert_eq!(find_head_end(buf, 22), Some(24));
    }

    #[test]
    fn bare_cr_and_bare_lf_are_refused() {
        assert!(line_endings_are_crlf(b"a\r\nb\r\n\r\n"));
        assert!(!line_endings_are_crlf(b"a\nb\r\n\r\n"));
        assert!(!line_endings_are_crlf(b"a\rb\r\n\r\n"));
        assert!(!line_endings_are_crlf(b"a\r"));
        assert!(has_bare_line_ending(b"GET / HTTP/1.1\nHost", 0));
        assert!(has_bare_line_ending(b"A: b\rc", 0));
        assert!(!has_bare_line_ending(b"GET / HTTP/1.1\r\nHost: a\r", 0));
        // Judged with the byte before `from` in view.
        assert!(!has_bare_line_ending(b"A: b\r\nC", 5));
        assert!(has_bare_line_ending(b"A: b\n\nC", 5));
    }

    #[test]
    fn transfer_codings() {
        let one = |v: &'static [u8]| classify_codings(std::iter::once(v));
        assert_eq!(one(b"chunked"), Codings::Chunked);
        assert_eq!(one(b"CHUNKED"), Codings::Chunked);
        assert_eq!(one(b"gzip, chunked"), Codings::Chunked);
        assert_eq!(one(b"chunked, gzip"), Codings::Invalid);
        assert_eq!(one(b"gzip"), Codings::NotChunkedLast);
        assert_eq!(one(b"chunked, chunked"), Codings::Invalid);
        assert_eq!(one(b"identity"), Codings::Invalid);
        assert_eq!(one(b"chunked;q=1"), Codings::Invalid);
        assert_eq!(one(b""), Codings::Invalid);
        let split = [&b"gzip"[..], b"chunked"];
        assert_eq!(classify_codings(split.into_iter()), Codings::Chunked);
    }

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b"1234"), Some(1234));
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b"1 ",
            b"0x10",
            b"1,1",
            b"1234567890123456789",
        ] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hop_by_hop_names() {
        assert!(is_hop_by_hop("Connection"));
        assert!(is_hop_by_hop("proxy-authorization"));
        assert!(is_hop_by_hop("Proxy-Connection"));
        assert!(is_hop_by_hop("TE"));
        assert!(!is_hop_by_hop("Transfer-Encoding"));
        assert!(!is_hop_by_hop("Content-Length"));
        assert!(!is_hop_by_hop("Host"));
        assert!(!is_hop_by_hop("Trailer"));
    }
}
