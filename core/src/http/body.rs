//! Streaming body framing: bytes are forwarded as they arrive and never buffered whole.
//!
//! Chunked bodies are decoded and encoded again: chunk-size lines are rewritten in canonical
//! form (`{size:x}\r\n`, extensions dropped), data is copied, trailers are validated and passed
//! on. A chunk-size trick that one parser reads differently from another cannot survive the
//! rewrite.

use std::io::Write as _;

/// The longest chunk-size line accepted, extensions included.
const MAX_CHUNK_LINE: usize = 1024;

/// A body being forwarded, consumed piece by piece.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BodyReader {
    /// This many bytes remain.
    Length(u64),
    /// A chunked body.
    Chunked(Chunked),
    /// Everything until the sender closes.
    UntilClose,
    /// The body is complete.
    Done,
}

/// Progress through a chunked body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chunked {
    state: ChunkState,
    /// Bytes of the current chunk-size line, or of the trailer section.
    line_len: usize,
    /// The most trailer bytes accepted.
    max_trailer: usize,
    /// Refuse trailer fields that frame or route a message (requests only).
    strict_trailers: bool,
    /// The lowercased name of the trailer field being read, while it may still be one of
    /// [`ROUTING_TRAILERS`].
    trailer_name: Option<Vec<u8>>,
}

/// Fields that must never arrive as trailers (RFC 9110 §6.5.1: framing and routing), with
/// the underscore spellings some back ends read as the same field. A recipient that merges
/// trailers into the head would frame or route by them.
const ROUTING_TRAILERS: &[&[u8]] = &[
    b"content-length",
    b"transfer-encoding",
    b"host",
    b"content_length",
    b"transfer_encoding",
];

/// The longest name in [`ROUTING_TRAILERS`].
const MAX_ROUTING_TRAILER: usize = 17;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Reading hex digits of a chunk size.
    Size { value: u64, digits: u8 },
    /// After the digits: optional whitespace, then `;` extensions or CR.
    SizeTail { value: u64, in_ext: bool },
    /// The chunk-size line's CR was read; LF must follow.
    SizeLf { value: u64 },
    /// Copying chunk data.
    Data { remaining: u64 },
    /// After chunk data: CR.
    DataCr,
    /// After chunk data: LF.
    DataLf,
    /// At the start of a trailer line (or the final blank line).
    TrailerLineStart,
    /// Inside a trailer line.
    TrailerLine,
    /// A trailer line's CR was read; LF must follow. `empty` marks the final blank line.
    TrailerLf { empty: bool },
    /// The body is complete.
    Done,
}

/// Why a body was refused; the detail names the fault in logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BodyError(pub(crate) &'static str);

impl BodyReader {
    /// Returns a chunked reader whose trailer section may hold up to `max_trailer` bytes.
    pub(crate) fn chunked(max_trailer: usize) -> BodyReader {
        BodyReader::Chunked(Chunked {
            state: ChunkState::Size {
                value: 0,
                digits: 0,
            },
            line_len: 0,
            max_trailer,
            strict_trailers: false,
            trailer_name: None,
        })
    }

    /// Returns a chunked reader for a request body: as [`BodyReader::chunked`], and a
    /// trailer that frames or routes (`Content-Length`, `Transfer-Encoding`, `Host`) is an
    /// error.
    pub(crate) fn chunked_request(max_trailer: usize) -> BodyReader {
        let mut reader = BodyReader::chunked(max_trailer);
        if let BodyReader::Chunked(chunked) = &mut reader {
            chunked.strict_trailers = true;
        }
        reader
    }

    /// Returns whether the body is complete.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, BodyReader::Done)
    }

    /// Consumes body bytes from `input`, appending what is to be forwarded to `out`. Returns
    /// how many bytes of `input` belong to the body; the rest follows it.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, BodyError> {
        match self {
            BodyReader::Length(remaining) => {
                let n = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                out.extend_from_slice(&input[..n]);
                *remaining -= n as u64;
                if *remaining == 0 {
                    *self = BodyReader::Done;
                }
                Ok(n)
            }
            BodyReader::Chunked(chunked) => {
                let n = chunked.feed(input, out)?;
                if chunked.state == ChunkState::Done {
                    *self = BodyReader::Done;
                }
                Ok(n)
            }
            BodyReader::UntilClose => {
                out.extend_from_slice(input);
                Ok(input.len())
            }
            BodyReader::Done => Ok(0),
        }
    }
}

impl Chunked {
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, BodyError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                ChunkState::Size { value, digits } => match hex_value(b) {
                    Some(d) => {
                        if digits >= 15 {
                            return Err(BodyError("chunk_size_too_large"));
                        }
                        ChunkState::Size {
                            value: value << 4 | u64::from(d),
                            digits: digits + 1,
                        }
                    }
                    None if digits == 0 => return Err(BodyError("invalid_chunk_size")),
                    None => self.size_tail(value, false, b)?,
                },
                ChunkState::SizeTail { value, in_ext } => self.size_tail(value, in_ext, b)?,
                ChunkState::SizeLf { value } => {
                    if b != b'\n' {
                        return Err(BodyError("bare_cr_in_chunk"));
                    }
                    self.line_len = 0;
                    write!(out, "{value:x}\r\n").map_err(|_| BodyError("write"))?;
                    if value == 0 {
                        ChunkState::TrailerLineStart
                    } else {
                        ChunkState::Data { remaining: value }
                    }
                }
                ChunkState::Data { remaining } => {
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data { remaining }
                    };
                    continue;
                }
                ChunkState::DataCr if b == b'\r' => ChunkState::DataLf,
                ChunkState::DataLf if b == b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    ChunkState::Size {
                        value: 0,
                        digits: 0,
                    }
                }
                ChunkState::DataCr | ChunkState::DataLf => {
                    return Err(BodyError("missing_crlf_after_chunk"));
                }
                ChunkState::TrailerLineStart => {
                    self.count_trailer()?;
                    match b {
                        b'\r' => ChunkState::TrailerLf { empty: true },
                        // RFC 9112 §5.2: obs-fold is refused, in trailers as in heads.
                        b' ' | b'\t' | b':' => return Err(BodyError("invalid_trailer")),
                        _ if is_field_byte(b) => {
                            out.push(b);
                            self.trailer_name = Some(vec![b.to_ascii_lowercase()]);
                            ChunkState::TrailerLine
                        }
                        _ => return Err(BodyError("invalid_trailer")),
                    }
                }
                ChunkState::TrailerLine => {
                    self.count_trailer()?;
                    self.check_trailer_name(b)?;
                    match b {
                        b'\r' => ChunkState::TrailerLf { empty: false },
                        _ if is_field_byte(b) || b == b' ' || b == b'\t' => {
                            out.push(b);
                            ChunkState::TrailerLine
                        }
                        _ => return Err(BodyError("invalid_trailer")),
                    }
                }
                ChunkState::TrailerLf { empty } => {
                    if b != b'\n' {
                        return Err(BodyError("bare_cr_in_chunk"));
                    }
                    out.extend_from_slice(b"\r\n");
                    if empty {
                        self.state = ChunkState::Done;
                        return Ok(i + 1);
                    }
                    ChunkState::TrailerLineStart
                }
                ChunkState::Done => return Ok(i),
            };
            i += 1;
        }
        Ok(i)
    }

    /// Handles a byte after the chunk size: BWS and `;` extensions (RFC 9112 §7.1.1), then CR.
    fn size_tail(&mut self, value: u64, in_ext: bool, b: u8) -> Result<ChunkState, BodyError> {
        self.line_len += 1;
        if self.line_len > MAX_CHUNK_LINE {
            return Err(BodyError("chunk_line_too_long"));
        }
        match b {
            b'\r' if in_ext || self.line_len == 1 => Ok(ChunkState::SizeLf { value }),
            b'\r' => Err(BodyError("invalid_chunk_size")),
            b';' => Ok(ChunkState::SizeTail {
                value,
                in_ext: true,
            }),
            b' ' | b'\t' => Ok(ChunkState::SizeTail { value, in_ext }),
            b'\n' => Err(BodyError("bare_lf_in_chunk")),
            0x21..=0x7e if in_ext => Ok(ChunkState::SizeTail { value, in_ext }),
            _ => Err(BodyError("invalid_chunk_size")),
        }
    }

    /// Follows the name of the trailer field being read; at its colon, refuses a routing
    /// field when trailers are strict.
    fn check_trailer_name(&mut self, b: u8) -> Result<(), BodyError> {
        let Some(name) = self.trailer_name.as_mut() else {
            return Ok(());
        };
        if b == b':' {
            let routing = ROUTING_TRAILERS.contains(&name.as_slice());
            self.trailer_name = None;
            if routing && self.strict_trailers {
                return Err(BodyError("routing_field_in_trailer"));
            }
        } else if name.len() < MAX_ROUTING_TRAILER {
            name.push(b.to_ascii_lowercase());
        } else {
            self.trailer_name = None;
        }
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), BodyError> {
        self.line_len += 1;
        if self.line_len > self.max_trailer {
            return Err(BodyError("trailers_too_large"));
        }
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Visible ASCII and obs-text: what a field line may hold besides SP and HTAB.
fn is_field_byte(b: u8) -> bool {
    matches!(b, 0x21..=0x7e | 0x80..=0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_bodies_stop_at_their_length() {
        let mut body = BodyReader::Length(5);
        let mut out = Vec::new();
        assert_eq!(body.feed(b"abc", &mut out), Ok(3));
        assert_eq!(body.feed(b"defGET", &mut out), Ok(2));
        assert!(body.is_done());
        assert_eq!(out, b"abcde");
    }

    #[test]
    fn chunked_bodies_are_rewritten_canonically() {
        let input = b"5;name=value\r\nhello\r\n00A \t; x\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (out, used) = decode(input).unwrap();
        assert_eq!(out, b"5\r\nhello\r\na\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n");
        assert_eq!(&input[used..], b"NEXT");
    }

    #[test]
    fn chunked_decoding_is_the_same_at_every_split() {
        let input = b"4\r\nwiki\r\n5\r\npedia\r\n0\r\nA: b\r\nC: d\r\n\r\n";
        let (whole, _) = decode(input).unwrap();
        for split in 0..input.len() {
            let mut body = BodyReader::chunked(1024);
            let mut out = Vec::new();
            let a = body.feed(&input[..split], &mut out).unwrap();
            assert_eq!(a, split);
            let b = body.feed(&input[split..], &mut out).unwrap();
            assert_eq!(a + b, input.len());
            assert!(body.is_done());
            assert_eq!(out, whole, "split at {split}");
        }
    }

    #[test]
    fn chunk_tricks_are_refused() {
        let cases: &[(&[u8], &str)] = &[
            (b"0x5\r\nhello\r\n0\r\n\r\n", "invalid_chunk_size"),
            (b"+5\r\nhello\r\n0\r\n\r\n", "invalid_chunk_size"),
            (b"-1\r\n", "invalid_chunk_size"),
            (b" 5\r\nhello\r\n", "invalid_chunk_size"),
            (b"5 \r\nhello\r\n", "invalid_chunk_size"),
            (b"\r\n", "invalid_chunk_size"),
            (b"5\nhello\r\n", "bare_lf_in_chunk"),
            (b"5\rxhello", "bare_cr_in_chunk"),
            (b"5\r\nhelloX\r\n", "missing_crlf_after_chunk"),
            (b"5\r\nhello\n0\r\n\r\n", "missing_crlf_after_chunk"),
            (b"1000000000000000\r\n", "chunk_size_too_large"),
            (b"0\r\n folded\r\n\r\n", "invalid_trailer"),
            (b"0\r\nA: \x00\r\n\r\n", "invalid_trailer"),
            (b"0\r\nA: b\rc\r\n\r\n", "bare_cr_in_chunk"),
        ];
        for (input, want) in cases {
            assert_eq!(decode(input).unwrap_err(), BodyError(want), "{input:?}");
        }
        let long_ext = [b"1;".as_slice(), &[b'x'; 2000], b"\r\n"].concat();
        assert_eq!(
            decode(&long_ext).unwrap_err(),
            BodyError("chunk_line_too_long")
        );
        let big_trailer = [b"0\r\nA: ".as_slice(), &[b'x'; 2000], b"\r\n\r\n"].concat();
        assert_eq!(
            decode(&big_trailer).unwrap_err(),
            BodyError("trailers_too_large")
        );
    }

    #[test]
    fn request_trailers_may_not_frame_or_route() {
        for trailer in [
            &b"Content-Length: 0"[..],
            b"transfer-encoding: chunked",
            b"HOST: denied.example",
            b"Content_Length: 0",
        ] {
            let input = [b"1\r\na\r\n0\r\n".as_slice(), trailer, b"\r\n\r\n"].concat();
            let mut body = BodyReader::chunked_request(1024);
            assert_eq!(
                body.feed(&input, &mut Vec::new()),
                Err(BodyError("routing_field_in_trailer")),
                "{trailer:?}"
            );
            // Responses keep their trailers: the gateway frames and routes by its own head.
            assert!(decode(&input).is_ok(), "{trailer:?}");
        }
        let fine = b"1\r\na\r\n0\r\nX-Host: a\r\nContent-Lengthy: 1\r\n\r\n";
        let mut body = BodyReader::chunked_request(1024);
        assert_eq!(body.feed(fine, &mut Vec::new()), Ok(fine.len()));
    }

    #[test]
    fn until_close_takes_everything() {
        let mut body = BodyReader::UntilClose;
        let mut out = Vec::new();
        assert_eq!(body.feed(b"all of it", &mut out), Ok(9));
        assert!(!body.is_done());
    }

    fn decode(input: &[u8]) -> Result<(Vec<u8>, usize), BodyError> {
        let mut body = BodyReader::chunked(1024);
        let mut out = Vec::new();
        let used = body.feed(input, &mut out)?;
        Ok((out, used))
    }
}
