#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/seeds/<target>/ (run.sh merges them
into fuzz/corpus/<target>/ with `cargo fuzz cmin`).

Seeds come from the test fixtures: the requests of the conformance case table
(conformance/src/cases.rs), the captured ClientHellos (core/tests/fixtures/hello/) re-framed
and split, hand-built hellos of the shapes core/tests/support/hello.rs builds, the PROXY
headers of core/tests/proxy.rs, and allowlists in the syntax of DESIGN.md §3. The `session` target's
seeds are whole sessions (requests and responses, tunnels, intercepted connections, PROXY
headers, failures) written in the encoding `arbitrary` decodes `session::Input` from (see
`Arb` below; `cargo fuzz fmt session FILE` shows one decoded).

Usage: python3 fuzz/seed.py [OUT_DIR]   (default: fuzz/seeds)
"""

import hashlib
import re
import struct
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
HELLOS = ROOT / "core/tests/fixtures/hello"
PORTS = {"echo": "443", "http": "80", "refused": "81", "blackhole": "82"}


def unescape(literal):
    """Decodes the escapes of a Rust string literal."""
    out = bytearray()
    i = 0
    while i < len(literal):
        c = literal[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        nxt = literal[i + 1]
        if nxt in "rnt0\\\"'":
            out += {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\",
                    '"': b'"', "'": b"'"}[nxt]
            i += 2
        elif nxt == "x":
            out.append(int(literal[i + 2:i + 4], 16))
            i += 4
        elif nxt == "u":
            end = literal.index("}", i)
            out += chr(int(literal[i + 3:end], 16)).encode()
            i = end + 1
        elif nxt == "\n":
            # A line continuation: the newline and the next line's leading spaces go.
            i += 2
            while i < len(literal) and literal[i] in " \t":
                i += 1
        else:
            raise ValueError(f"escape \\{nxt}")
    return bytes(out)


def fill(text):
    """Replaces the conformance table's port placeholders."""
    text = text.replace(b"{{", b"{").replace(b"}}", b"}")
    for name, port in PORTS.items():
        text = text.replace(b"{" + name.encode() + b"}", port.encode())
    return text


def requests():
    """Returns the request bytes of the conformance case table."""
    source = (ROOT / "conformance/src/cases.rs").read_text()
    found = []
    for match in re.finditer(r'"((?:[^"\\]|\\.)*)"', source, re.S):
        text = fill(unescape(match.group(1)))
        if b"{" in text:
            continue
        if b" HTTP/" in text or text.startswith((b"PRI ", b"CONN")):
            found.append(text)
    for path in re.findall(r'get\("([^"]*)"\)', source):
        found.append(fill(f"GET http://allowed.test:{{http}}{path} HTTP/1.1\r\n"
                          f"Host: allowed.test:{{http}}\r\n\r\n".encode()))
    head = "POST http://allowed.test:80/ HTTP/1.1\r\nHost: allowed.test:80\r\n{}\r\n"
    for extra in re.findall(r'head\("((?:[^"\\]|\\.)*)"\)', source):
        found.append(head.format(unescape(extra).decode()).encode())
    return found


def client_hello(extensions):
    """Returns a TLS 1.3-shaped ClientHello handshake message with `extensions`."""
    body = b"\x03\x03" + b"\x07" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    ext = b"".join(struct.pack(">HH", kind, len(data)) + data for kind, data in extensions)
    body += struct.pack(">H", len(ext)) + ext
    return b"\x01" + struct.pack(">I", len(body))[1:] + body


def sni(names):
    """Returns a server_name extension listing `names`."""
    entries = b"".join(b"\x00" + struct.pack(">H", len(n)) + n.encode() for n in names)
    return (0, struct.pack(">H", len(entries)) + entries)


def records(handshake, size):
    """Frames `handshake` in handshake records of at most `size` bytes."""
    out = b""
    for at in range(0, len(handshake), size):
        chunk = handshake[at:at + size]
        out += b"\x16\x03\x01" + struct.pack(">H", len(chunk)) + chunk
    return out


def handshake_of(stream):
    """Returns the handshake bytes carried by the records of a captured hello."""
    out, at = b"", 0
    while at + 5 <= len(stream):
        length = struct.unpack(">H", stream[at + 3:at + 5])[0]
        out += stream[at + 5:at + 5 + length]
        at += 5 + length
    return out


def hellos():
    """Returns ClientHello streams: captured, re-framed, and hand-built odd shapes."""
    captured = [p.read_bytes() for p in sorted(HELLOS.glob("*.bin"))]
    out = list(captured)
    for stream in captured:
        for size in (1, 100, 700):
            out.append(records(handshake_of(stream), size))
    out += [
        records(client_hello([sni(["allowed.test"])]), 16384),
        records(client_hello([sni(["sub.wild.test"]), (0xFE0D, b"\x00" * 8)]), 16384),
        records(client_hello([sni(["allowed.test", "denied.test"])]), 16384),
        records(client_hello([sni(["203.0.113.7"])]), 16384),
        records(client_hello([sni(["allowed.test"]), sni(["denied.test"])]), 16384),
        records(client_hello([(0x0A0A, b""), (0x0A0A, b"")]), 16384),
        records(client_hello([]), 16384),
        records(client_hello([sni(["allowed.test"])]), 16384) + b"\x17\x03\x03\x00\x01x",
        b"\x80\x2e\x01\x03\x01",
        b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
    ]
    return out


def v2(command, family, addresses, tlvs=b""):
    """Returns a PROXY v2 header."""
    payload = addresses + tlvs
    return (b"\r\n\r\n\0\r\nQUIT\n" + bytes([0x20 | command, family])
            + struct.pack(">H", len(payload)) + payload)


def proxy_headers():
    """Returns PROXY headers, good and broken, as core/tests/proxy.rs sends them."""
    ipv4 = bytes([10, 9, 8, 7, 10, 0, 0, 1]) + struct.pack(">HH", 51234, 3128)
    ipv6 = bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack(">HH", 1, 2)
    vpce = b"\x01vpce-0123456789abcdef0"
    aws = b"\xea" + struct.pack(">H", len(vpce)) + vpce
    return [
        b"PROXY TCP4 10.9.8.7 10.0.0.1 51234 3128\r\n",
        b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 3128\r\n",
        b"PROXY UNKNOWN\r\n",
        b"PROXY TCP4 10.9.8.7 nonsense\r\n",
        b"PROXY TCP4 999.9.8.7 10.0.0.1 1 2\r\n",
        b"PROXY TCP4 " + b"9" * 200,
        v2(1, 0x11, ipv4),
        v2(1, 0x11, ipv4, aws),
        v2(1, 0x21, ipv6, aws),
        v2(0, 0x00, b""),
        v2(1, 0x11, ipv4, b"\xea\x00\x02\x01\x00"),
        v2(1, 0x11, ipv4, b"\x04\x00\x05hello"),
        v2(1, 0x31, bytes(216)),
        v2(1, 0x11, ipv4)[:20],
    ]


LISTS = [
    (b"pypi.org, .pythonhosted.org\n# a comment\n  deb.debian.org # mirror\n",
     [b"pypi.org", b"files.pythonhosted.org", b"pythonhosted.org", b"evilpythonhosted.org",
      b"PYPI.ORG.", b"www.pypi.org", b"deb.debian.org"]),
    (b".amazonaws.com example.com:8443 .example.com 203.0.113.7 [2001:db8::1]:8443\n",
     [b"s3.amazonaws.com", b"amazonaws.com.evil", b"example.com", b"a.example.com",
      b"203.0.113.7", b"[2001:db8::1]", b"[2001:DB8::1]"]),
    ("b\u00fccher.example, .m\u00fcnchen.example\nxn--bcher-kva.example\n".encode(),
     [b"xn--bcher-kva.example", b"www.xn--mnchen-3ya.example", b"b\xc3\xbccher.example"]),
    (b".github.io\n.s3.amazonaws.com\n.test\nPyPI.org.\npypi.org:8080\n",
     [b"user.github.io", b"bucket.s3.amazonaws.com", b"a.b.test", b"pypi.org"]),
    (b"pypi.org\n\n.com\n*.example.com\nexample.com:99999\nexa mple.com\na..b\n.\n",
     [b"pypi.org"]),
    (b".10.0.0.1 0x7f.1 user@example.com [::1 under_score.example\r\n",
     [b"under_score.example"]),
]


class Arb:
    """Writes values as arbitrary 1.x reads them: integers little-endian, a bool as a byte, an
    enum variant as a u32 whose product with the variant count, shifted right by 32, is its
    index, and each collection element after a continue byte (1), the end as a 0 byte."""

    def __init__(self):
        self.out = bytearray()

    def u8(self, v):
        self.out.append(v)
        return self

    def u16(self, v):
        self.out += struct.pack("<H", v)
        return self

    def u32(self, v):
        self.out += struct.pack("<I", v)
        return self

    def bool(self, v):
        return self.u8(1 if v else 0)

    def variant(self, index, count):
        return self.u32(((2 * index + 1) << 32) // (2 * count))


# The variants of session::Op and its parts, in declaration order.
OPS = ["read", "write", "flush", "eof", "io_error", "resolved", "connected", "advance",
       "deadline", "splice_progress", "splice_end", "shutdown"]
SIDES = ["client", "upstream"]
CONNECT_RESULTS = ["ok", "refused", "unreachable", "other"]


def session_input(setup, ops):
    """Encodes a session::Input: `setup` is a dict of SetupInput's fields, `ops` a list of
    tuples (name, args...)."""
    a = Arb()
    a.variant(["explicit", "http", "tls"].index(setup.get("listener", "explicit")), 3)
    a.variant(["off", "optional", "required"].index(setup.get("proxy", "off")), 3)
    for flag in ("audit", "allow_ip_literals", "inspect_tunnels", "ech_allow", "tls_reset",
                 "small_heads", "loopback_exception", "own_ports"):
        a.bool(setup.get(flag, False))
    a.variant(0, 3).u8(0)  # original_dst: Addr::Table(0), 151.101.0.223
    for op in ops:
        a.u8(1)
        name, args = op[0], op[1:]
        a.variant(OPS.index(name), len(OPS))
        if name == "read":
            side, what = args
            a.variant(SIDES.index(side), 2)
            if isinstance(what, int):
                a.variant(0, 2).u8(what)
            else:
                a.variant(1, 2)
                for b in what:
                    a.u8(1).u8(b)
                a.u8(0)
        elif name == "write":
            a.variant(SIDES.index(args[0]), 2).u8(args[1])
        elif name in ("eof", "io_error"):
            a.variant(SIDES.index(args[0]), 2)
        elif name == "resolved":
            a.variant(0, 2)  # the current ticket
            answer = args[0]
            if answer in ("nxdomain", "failed"):
                a.variant(1 if answer == "nxdomain" else 2, 3)
            else:
                a.variant(0, 3)
                for index in answer:
                    a.u8(1).variant(0, 3).u8(index)
                a.u8(0)
        elif name == "connected":
            a.variant(0, 2).variant(CONNECT_RESULTS.index(args[0]), 4)
        elif name == "advance":
            a.u32(args[0])
        elif name == "splice_progress":
            a.variant(SIDES.index(args[0]), 2).u32(args[1])
        elif name == "splice_end":
            if args[0] == "finished":
                a.variant(0, 2)
            else:
                a.variant(1, 2).variant(SIDES.index(args[0]), 2)
        elif name == "shutdown":
            a.u16(args[0])
    a.u8(0)
    return bytes(a.out)


# Indexes into session::CLIENT_CHUNKS, UPSTREAM_CHUNKS and ADDRS.
C_CONNECT, C_CONNECT_EARLY, C_CONNECT_PORTY, C_CONNECT_OWN, C_CONNECT_LOOPBACK = 0, 1, 2, 3, 4
C_CONNECT_V6, C_GET, C_GET_CLOSE, C_GET_10, C_HEAD, C_POST_LEN, C_POST_CHUNKED = 5, 6, 7, 8, 9, 10, 11
C_GET_IP, C_GET_PRIVATE_IP, C_GET_EVIL, C_ORIGIN, C_ORIGIN_EVIL, C_HELLO_BODY = 12, 13, 14, 15, 16, 17
C_CHUNK, C_LAST_CHUNK, C_CRLF, C_GET_HALF1, C_GET_HALF2 = 18, 19, 20, 21, 22
C_PROXY_V1, C_PROXY_UNKNOWN, C_PROXY_V2, C_PROXY_LOCAL, C_TLS_JUNK = 23, 24, 25, 26, 27
C_HELLO, C_HELLO_DENIED, C_HELLO_NO_SNI, C_HELLO_CHROMIUM = 28, 29, 30, 31
U_OK, U_HALF1, U_HALF2, U_CHUNKED_HEAD, U_CHUNKED_BODY, U_LAST_CHUNK = 0, 1, 2, 3, 4, 5
U_CONTINUE, U_NO_CONTENT, U_UNTIL_CLOSE, U_CLOSE, U_HTTP10, U_304, U_PARTIAL, U_GARBAGE = \
    6, 7, 8, 9, 10, 11, 12, 13
U_SSH = 14
A_PUBLIC, A_PUBLIC2, A_PUBLIC6, A_PRIVATE, A_LOOPBACK, A_METADATA, A_MAPPED_LOOPBACK = \
    0, 1, 2, 3, 4, 5, 6


def sessions():
    """Returns session seeds: (setup, ops) pairs."""
    open_ = [("resolved", [A_PUBLIC]), ("connected", "ok")]
    tunnel = [("read", "client", C_CONNECT)] + open_ + [
        ("flush",), ("splice_progress", "client", 300), ("splice_progress", "upstream", 5000),
        ("splice_end", "finished")]
    exchange = [("read", "client", C_GET)] + open_ + [
        ("flush",), ("read", "upstream", U_OK), ("flush",)]
    keep_alive = exchange + [("read", "client", C_GET), ("flush",), ("read", "upstream", U_OK),
                             ("flush",), ("read", "client", C_GET_CLOSE), ("resolved", [A_PUBLIC]),
                             ("connected", "ok"), ("flush",), ("read", "upstream", U_CHUNKED_HEAD),
                             ("read", "upstream", U_CHUNKED_BODY), ("flush",), ("eof", "client")]
    return [
        ({}, tunnel),
        ({"inspect_tunnels": True}, [("read", "client", C_CONNECT)] + open_ + [
            ("read", "client", C_HELLO), ("flush",), ("splice_end", "upstream")]),
        ({"inspect_tunnels": True}, [("read", "client", C_CONNECT)] + open_ + [
            ("flush",), ("read", "client", C_HELLO_DENIED), ("flush",), ("eof", "client")]),
        ({"inspect_tunnels": True}, [("read", "client", C_CONNECT)] + open_ + [
            ("read", "upstream", U_SSH), ("flush",), ("shutdown", 1000), ("deadline",)]),
        ({}, [("read", "client", C_CONNECT_EARLY)] + open_ + [("write", "client", 1),
                                                              ("flush",), ("advance", 300000)]),
        ({}, exchange + [("eof", "client")]),
        ({}, keep_alive),
        ({"small_heads": True}, [("read", "client", C_GET_HALF1), ("read", "client", C_GET_HALF2)]
         + open_ + [("flush",), ("read", "upstream", U_HALF1), ("write", "client", 2),
                    ("read", "upstream", U_HALF2), ("flush",), ("eof", "upstream")]),
        ({}, [("read", "client", C_POST_LEN), ("read", "client", C_HELLO_BODY)] + open_ + [
            ("flush",), ("read", "upstream", U_CONTINUE), ("read", "upstream", U_OK), ("flush",)]),
        ({}, [("read", "client", C_POST_CHUNKED)] + open_ + [
            ("read", "client", C_CHUNK), ("flush",), ("read", "client", C_LAST_CHUNK), ("flush",),
            ("read", "upstream", U_UNTIL_CLOSE), ("flush",), ("eof", "upstream"), ("flush",)]),
        ({}, [("read", "client", C_HEAD)] + open_ + [("flush",), ("read", "upstream", U_304),
                                                     ("flush",), ("read", "client", C_GET_10)]),
        ({}, [("read", "client", C_GET)] + open_ + [("flush",), ("read", "upstream", U_GARBAGE),
                                                    ("flush",)]),
        ({}, [("read", "client", C_GET)] + open_ + [("flush",), ("eof", "upstream")]),
        ({}, [("read", "client", C_GET), ("resolved", [A_PRIVATE, A_PUBLIC, A_PUBLIC2]),
              ("connected", "refused"), ("connected", "unreachable"), ("flush",),
              ("eof", "client")]),
        ({}, [("read", "client", C_GET), ("resolved", [A_LOOPBACK, A_METADATA,
                                                       A_MAPPED_LOOPBACK]), ("flush",)]),
        ({"loopback_exception": True, "own_ports": True},
         [("read", "client", C_CONNECT_OWN), ("resolved", [A_LOOPBACK, A_PUBLIC])]
         + [("connected", "ok"), ("flush",)]),
        ({}, [("read", "client", C_GET), ("resolved", "nxdomain"), ("flush",)]),
        ({}, [("read", "client", C_GET), ("advance", 10000), ("flush",)]),
        ({}, [("read", "client", C_GET), ("resolved", [A_PUBLIC]), ("advance", 10000),
              ("connected", "ok"), ("flush",)]),
        ({"allow_ip_literals": True}, [("read", "client", C_GET_IP), ("connected", "ok"),
                                       ("flush",), ("read", "upstream", U_OK), ("flush",)]),
        ({"allow_ip_literals": True}, [("read", "client", C_GET_PRIVATE_IP), ("flush",)]),
        ({"audit": True}, [("read", "client", C_GET_EVIL)] + open_ + [
            ("flush",), ("read", "upstream", U_NO_CONTENT), ("flush",)]),
        ({}, [("read", "client", C_GET_EVIL), ("flush",), ("eof", "client")]),
        ({"listener": "http"}, [("read", "client", C_ORIGIN)] + open_ + [
            ("flush",), ("read", "upstream", U_HTTP10), ("flush",)]),
        ({"listener": "http"}, [("read", "client", C_ORIGIN_EVIL), ("flush",)]),
        ({"listener": "tls"}, [("read", "client", C_HELLO)] + open_ + [
            ("flush",), ("splice_progress", "upstream", 100), ("splice_end", "client")]),
        ({"listener": "tls", "ech_allow": True}, [("read", "client", C_HELLO_CHROMIUM)] + open_
         + [("flush",), ("shutdown", 500), ("advance", 600)]),
        ({"listener": "tls"}, [("read", "client", C_HELLO_CHROMIUM), ("flush",)]),
        ({"listener": "tls", "tls_reset": True}, [("read", "client", C_HELLO_DENIED)]),
        ({"listener": "tls"}, [("read", "client", C_HELLO_NO_SNI), ("flush",), ("eof", "client")]),
        ({"listener": "tls"}, [("read", "client", C_TLS_JUNK), ("advance", 10000)]),
        ({"proxy": "required"}, [("read", "client", C_PROXY_V1)] + tunnel),
        ({"proxy": "optional"}, [("read", "client", C_PROXY_V2)] + exchange),
        ({"proxy": "required", "listener": "tls"}, [("read", "client", C_PROXY_UNKNOWN),
                                                    ("read", "client", C_HELLO)] + open_),
        ({"proxy": "required"}, [("read", "client", C_PROXY_LOCAL)]),
        ({"proxy": "required"}, [("read", "client", C_GET)]),
        ({}, [("read", "client", C_CONNECT_V6), ("resolved", [A_PUBLIC6])]),
        ({}, [("read", "client", C_CONNECT_LOOPBACK), ("flush",), ("io_error", "client")]),
        ({}, [("read", "client", C_CONNECT_PORTY)] + open_ + [("shutdown", 100), ("flush",),
                                                              ("deadline",)]),
        ({}, [("read", "client", C_CRLF), ("read", "client", b"GET http://a.example/ HTTP/1.1"
                                                                b"\r\nX-Raw: 1\r\n\r\n")]
         + open_ + [("flush",), ("read", "upstream", U_PARTIAL), ("io_error", "upstream")]),
    ]


def write(out, target, data):
    """Writes one seed, named by its hash as cargo-fuzz names corpus files."""
    folder = out / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else FUZZ / "seeds"
    reqs = requests()
    hello_streams = hellos()
    for i, req in enumerate(reqs):
        write(out, "http_preamble", bytes([0, 0]) + req)
        write(out, "http_preamble", bytes([i % 8, 0x11 + i]) + req)
    for i, stream in enumerate(hello_streams):
        write(out, "tls_hello", bytes([0, 0]) + stream)
        write(out, "tls_hello", bytes([i % 16, 0x23 + i]) + stream)
    tails = {0: b"CONNECT allowed.test:443 HTTP/1.1\r\n\r\n",
             1: b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
             2: hello_streams[0]}
    for i, header in enumerate(proxy_headers()):
        for listener, tail in tails.items():
            for required in (0, 1):
                write(out, "proxy_protocol", bytes([listener << 1 | required, 0]) + header + tail)
        write(out, "proxy_protocol", bytes([i & 1, 0x31 + i]) + header + tails[0])
    for listener, tail in tails.items():
        write(out, "proxy_protocol", bytes([listener << 1, 0]) + tail)
    for text, hosts in LISTS:
        write(out, "allowlist", text + b"\0" + b"\n".join(hosts))
    for setup, ops in sessions():
        write(out, "session", session_input(setup, ops))


if __name__ == "__main__":
    main()
