//! Address classes that an egress gateway must never reach on a client's behalf.
//!
//! A name on the allowlist may resolve to anything (DNS is controlled by whoever owns the name),
//! so every answer is classified before it is connected to. IPv4 embedded in IPv6 (mapped,
//! compatible, NAT64, 6to4) is judged by the embedded address, which is where packets end up.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A non-public address class; any of them is denied unless listed in `private_exceptions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrClass {
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// RFC 6598 carrier-grade NAT, `100.64.0.0/10`.
    CarrierNat,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// The cloud instance metadata service: `169.254.169.254`, `fd00:ec2::254`.
    Metadata,
    /// RFC 4193 unique-local `fc00::/7` and deprecated site-local `fec0::/10`.
    UniqueLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// One of the gateway's own listeners (a non-public address on one of its ports).
    OwnListener,
    /// Special-purpose ranges that are never a public destination: `192.0.0.0/24`,
    /// documentation, benchmarking (`198.18/15`), `240/4`, discard-only `100::/64`, local-use
    /// NAT64 `64:ff9b:1::/48`, Teredo `2001::/32`, `2001:db8::/32`.
    Reserved,
}

impl AddrClass {
    /// Returns the snake_case name used in logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AddrClass::Unspecified => "unspecified",
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::CarrierNat => "carrier_nat",
            AddrClass::LinkLocal => "link_local",
            AddrClass::Metadata => "metadata",
            AddrClass::UniqueLocal => "unique_local",
            AddrClass::Multicast => "multicast",
            AddrClass::Broadcast => "broadcast",
            AddrClass::OwnListener => "own_listener",
            AddrClass::Reserved => "reserved",
        }
    }
}

impl fmt::Display for AddrClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returns the class of a non-public address, or `None` for a public one.
#[must_use]
pub fn classify(ip: IpAddr) -> Option<AddrClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

/// Returns the IPv4 address that packets to `ip` really reach, when `ip` embeds one: mapped
/// (`::ffff:0:0/96`), compatible (`::/96`), NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`).
#[must_use]
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low32 = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // `::` and `::1` are IPv6's own unspecified and loopback addresses, not compatible ones.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0xffff | 0, _, _] => Some(low32()),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low32()),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddrClass> {
    let [a, b, c, _] = ip.octets();
    let class = match (a, b, c) {
        (0, _, _) => AddrClass::Unspecified,
        (127, _, _) => AddrClass::Loopback,
        (10, _, _) => AddrClass::Private,
        (172, 16..=31, _) => AddrClass::Private,
        (192, 168, _) => AddrClass::Private,
        (100, 64..=127, _) => AddrClass::CarrierNat,
        (169, 254, _) if ip == Ipv4Addr::new(169, 254, 169, 254) => AddrClass::Metadata,
        (169, 254, _) => AddrClass::LinkLocal,
        (224..=239, _, _) => AddrClass::Multicast,
        (255, 255, 255) if ip == Ipv4Addr::BROADCAST => AddrClass::Broadcast,
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => AddrClass::Reserved,
        (198, 18..=19, _) => AddrClass::Reserved,
        (240..=255, _, _) => AddrClass::Reserved,
        _ => return None,
    };
    Some(class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddrClass> {
    let s = ip.segments();
    let class = match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => AddrClass::Unspecified,
        [0, 0, 0, 0, 0, 0, 0, 1] => AddrClass::Loopback,
        [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] => AddrClass::Metadata,
        [x, ..] if x & 0xffc0 == 0xfe80 => AddrClass::LinkLocal,
        [x, ..] if x & 0xffc0 == 0xfec0 => AddrClass::UniqueLocal,
        [x, ..] if x & 0xfe00 == 0xfc00 => AddrClass::UniqueLocal,
        [x, ..] if x & 0xff00 == 0xff00 => AddrClass::Multicast,
        [0x100, 0, 0, 0, ..] => AddrClass::Reserved,
        [0x64, 0xff9b, 1, ..] => AddrClass::Reserved,
        [0x2001, 0, ..] | [0x2001, 0xdb8, ..] => AddrClass::Reserved,
        // Anything else outside 2000::/3 (global unicast) is unassigned or special.
        [x, ..] if x & 0xe000 != 0x2000 => AddrClass::Reserved,
        _ => return None,
    };
    Some(class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_classes() {
        let cases = [
            ("0.0.0.0", Some(AddrClass::Unspecified)),
            ("0.1.2.3", Some(AddrClass::Unspecified)),
            ("127.0.0.1", Some(AddrClass::Loopback)),
            ("127.255.255.254", Some(AddrClass::Loopback)),
            ("10.1.2.3", Some(AddrClass::Private)),
            ("172.16.0.1", Some(AddrClass::Private)),
            ("172.31.255.255", Some(AddrClass::Private)),
            ("172.32.0.1", None),
            ("172.15.255.255", None),
            ("192.168.1.1", Some(AddrClass::Private)),
            ("100.64.0.1", Some(AddrClass::CarrierNat)),
            ("100.127.255.255", Some(AddrClass::CarrierNat)),
            ("100.128.0.1", None),
            ("169.254.169.254", Some(AddrClass::Metadata)),
            ("169.254.1.1", Some(AddrClass::LinkLocal)),
            ("224.0.0.1", Some(AddrClass::Multicast)),
            ("239.255.255.255", Some(AddrClass::Multicast)),
            ("255.255.255.255", Some(AddrClass::Broadcast)),
            ("240.0.0.1", Some(AddrClass::Reserved)),
            ("198.18.0.1", Some(AddrClass::Reserved)),
            ("192.0.2.1", Some(AddrClass::Reserved)),
            ("8.8.8.8", None),
            ("151.101.0.223", None),
        ];
        for (ip, want) in cases {
            assert_eq!(classify(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn ipv6_classes() {
        let cases = [
            ("::", Some(AddrClass::Unspecified)),
            ("::1", Some(AddrClass::Loopback)),
            ("fe80::1", Some(AddrClass::LinkLocal)),
            ("febf::1", Some(AddrClass::LinkLocal)),
            ("fec0::1", Some(AddrClass::UniqueLocal)),
            ("fc00::1", Some(AddrClass::UniqueLocal)),
            ("fd12:3456::1", Some(AddrClass::UniqueLocal)),
            ("fd00:ec2::254", Some(AddrClass::Metadata)),
            ("ff02::1", Some(AddrClass::Multicast)),
            ("100::1", Some(AddrClass::Reserved)),
            ("2001:db8::1", Some(AddrClass::Reserved)),
            ("2001::1", Some(AddrClass::Reserved)),
            ("64:ff9b:1::1", Some(AddrClass::Reserved)),
            ("4000::1", Some(AddrClass::Reserved)),
            ("2a00:1450:4001::200e", None),
            ("2606:4700::1111", None),
        ];
        for (ip, want) in cases {
            assert_eq!(classify(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn embedded_ipv4_is_judged_by_the_embedded_address() {
        let cases = [
            ("::ffff:127.0.0.1", Some(AddrClass::Loopback)),
            ("::ffff:169.254.169.254", Some(AddrClass::Metadata)),
            ("::ffff:8.8.8.8", None),
            ("::10.0.0.1", Some(AddrClass::Private)),
            ("::8.8.8.8", None),
            ("64:ff9b::10.0.0.1", Some(AddrClass::Private)),
            ("64:ff9b::a9fe:a9fe", Some(AddrClass::Metadata)),
            ("64:ff9b::8.8.8.8", None),
            ("2002:7f00:1::", Some(AddrClass::Loopback)),
            ("2002:a9fe:a9fe::1", Some(AddrClass::Metadata)),
            ("2002:808:808::1", None),
        ];
        for (ip, want) in cases {
            assert_eq!(classify(ip.parse().unwrap()), want, "{ip}");
        }
    }
}
