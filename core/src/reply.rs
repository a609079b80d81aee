//! The replies the gateway itself originates, in Squid's shape so existing tooling keeps working.

/// Squid's reply to an accepted CONNECT.
pub(crate) const CONNECT_ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

/// An error reply: status, reason phrase and Squid error name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// 403 `ERR_ACCESS_DENIED`.
    AccessDenied,
    /// 400 `ERR_INVALID_REQ`.
    InvalidRequest,
    /// 408 `ERR_REQUEST_START_TIMEOUT`.
    RequestTimeout,
    /// 431 `ERR_TOO_BIG`.
    HeaderTooLarge,
    /// 502 `ERR_INVALID_RESP`.
    InvalidResponse,
    /// 502 `ERR_ZERO_SIZE_OBJECT`.
    EmptyResponse,
    /// 503 `ERR_DNS_FAIL`.
    DnsFail,
    /// 503 `ERR_CONNECT_FAIL`.
    ConnectFail,
    /// 504 `ERR_CONNECT_FAIL` with ETIMEDOUT, as Squid sends for a connect timeout.
    ConnectTimeout,
    /// 504 `ERR_READ_TIMEOUT`.
    ReadTimeout,
}

impl Reply {
    /// Returns the status code.
    pub(crate) fn status(self) -> u16 {
        self.parts().0
    }

    /// Returns (status, reason phrase, Squid error name, errno for `X-Squid-Error`).
    fn parts(self) -> (u16, &'static str, &'static str, u32) {
        match self {
            Reply::AccessDenied => (403, "Forbidden", "ERR_ACCESS_DENIED", 0),
            Reply::InvalidRequest => (400, "Bad Request", "ERR_INVALID_REQ", 0),
            Reply::RequestTimeout => (408, "Request Timeout", "ERR_REQUEST_START_TIMEOUT", 0),
            Reply::HeaderTooLarge => (431, "Request Header Fields Too Large", "ERR_TOO_BIG", 0),
            Reply::InvalidResponse => (502, "Bad Gateway", "ERR_INVALID_RESP", 0),
            Reply::EmptyResponse => (502, "Bad Gateway", "ERR_ZERO_SIZE_OBJECT", 0),
            Reply::DnsFail => (503, "Service Unavailable", "ERR_DNS_FAIL", 0),
            Reply::ConnectFail => (503, "Service Unavailable", "ERR_CONNECT_FAIL", 111),
            Reply::ConnectTimeout => (504, "Gateway Timeout", "ERR_CONNECT_FAIL", 110),
            Reply::ReadTimeout => (504, "Gateway Timeout", "ERR_READ_TIMEOUT", 0),
        }
    }

    /// Appends the whole reply to `out`. A `detail` other than for 403 travels in an
    /// `X-Egret-Reason` header, so the person debugging a 400 sees why.
    pub(crate) fn write(self, detail: Option<&str>, out: &mut Vec<u8>) {
        let (status, phrase, error, errno) = self.parts();
        let version = env!("CARGO_PKG_VERSION");
        let body_len = error.len() + 1;
        let reason = match (self, detail) {
            (Reply::AccessDenied, _) | (_, None) => String::new(),
            (_, Some(detail)) => format!("X-Egret-Reason: {detail}\r\n"),
        };
        out.extend_from_slice(
            format!(
                "HTTP/1.1 {status} {phrase}\r\n\
                 Server: egret/{version}\r\n\
                 Content-Type: text/html;charset=utf-8\r\n\
                 Content-Length: {body_len}\r\n\
                 X-Squid-Error: {error} {errno}\r\n\
                 {reason}\
                 Connection: close\r\n\
                 \r\n\
                 {error}\n"
            )
            .as_bytes(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_denied_is_exactly_the_contract() {
        let mut out = Vec::new();
        Reply::AccessDenied.write(Some("not_allowlisted"), &mut out);
        let want = format!(
            "HTTP/1.1 403 Forbidden\r\nServer: egret/{}\r\nContent-Type: text/html;charset=utf-8\r\n\
             Content-Length: 18\r\nX-Squid-Error: ERR_ACCESS_DENIED 0\r\nConnection: close\r\n\r\n\
             ERR_ACCESS_DENIED\n",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn other_replies_carry_their_reason() {
        let mut out = Vec::new();
        Reply::InvalidRequest.write(Some("bare_cr_or_lf"), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(text.contains("X-Squid-Error: ERR_INVALID_REQ 0\r\n"));
        assert!(text.contains("X-Egret-Reason: bare_cr_or_lf\r\n"));
        assert!(text.contains("Content-Length: 16\r\n"));
        assert!(text.ends_with("\r\n\r\nERR_INVALID_REQ\n"));
    }
}
