//! Which IP addresses are **globally reachable**: IANA's IPv4 and IPv6 Special-Purpose Address
//! Registries (RFC 6890 and its updates), applied in full, plus multicast and the address space
//! IANA has not allocated for unicast. The one policy every outgoing connection a client can
//! aim uses: the origin's webhook targets and the proxy's Web Push endpoints, so neither becomes
//! a way into the server's own network (SSRF).
//!
//! [`non_global`] names the block an address falls in (the registry's own entry); [`is_global`]
//! is its negation. A block the registry marks *globally reachable* inside a larger non-global
//! one (e.g. `192.0.0.9/32` in `192.0.0.0/24`, `2001:3::/32` in `2001::/23`) is an exception:
//! the most specific entry decides. Addresses that carry an IPv4 address are judged by it:
//! IPv4-mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96` (RFC 6052) and 6to4 `2002::/16` (RFC
//! 3056), so `2002:7f00:1::` is loopback.
//!
//! Plain values, no I/O: the resolvers that apply it at connect time are in the servers
//! (`service::egress`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One registry entry: a prefix, its name, and whether the registry says it is globally
/// reachable (true only for exceptions inside larger non-global blocks).
struct Block<A> {
    net: A,
    len: u8,
    name: &'static str,
    global: bool,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, name: &'static str, global: bool) -> Block<u32> {
    Block {
        net: u32::from_be_bytes([a, b, c, d]),
        len,
        name,
        global,
    }
}

const fn v6(net: u128, len: u8, name: &'static str, global: bool) -> Block<u128> {
    Block {
        net,
        len,
        name,
        global,
    }
}

/// The IPv4 Special-Purpose Address Registry, plus multicast (224.0.0.0/4, the multicast
/// registry). Entries whose "Globally Reachable" is False or N/A refuse; True ones are the
/// exceptions inside a refused block.
const V4: &[Block<u32>] = &[
    v4(0, 0, 0, 0, 8, "0.0.0.0/8 (\"this network\")", false),
    v4(10, 0, 0, 0, 8, "10.0.0.0/8 (private-use)", false),
    v4(
        100,
        64,
        0,
        0,
        10,
        "100.64.0.0/10 (shared address space)",
        false,
    ),
    v4(127, 0, 0, 0, 8, "127.0.0.0/8 (loopback)", false),
    v4(169, 254, 0, 0, 16, "169.254.0.0/16 (link local)", false),
    v4(172, 16, 0, 0, 12, "172.16.0.0/12 (private-use)", false),
    v4(
        192,
        0,
        0,
        0,
        24,
        "192.0.0.0/24 (IETF protocol assignments)",
        false,
    ),
    v4(192, 0, 0, 9, 32, "192.0.0.9/32 (PCP anycast)", true),
    v4(192, 0, 0, 10, 32, "192.0.0.10/32 (TURN anycast)", true),
    v4(
        192,
        0,
        2,
        0,
        24,
        "192.0.2.0/24 (documentation, TEST-NET-1)",
        false,
    ),
    v4(
        192,
        88,
        99,
        0,
        24,
        "192.88.99.0/24 (deprecated 6to4 relay anycast)",
        false,
    ),
    v4(192, 168, 0, 0, 16, "192.168.0.0/16 (private-use)", false),
    v4(198, 18, 0, 0, 15, "198.18.0.0/15 (benchmarking)", false),
    v4(
        198,
        51,
        100,
        0,
        24,
        "198.51.100.0/24 (documentation, TEST-NET-2)",
        false,
    ),
    v4(
        203,
        0,
        113,
        0,
        24,
        "203.0.113.0/24 (documentation, TEST-NET-3)",
        false,
    ),
    v4(224, 0, 0, 0, 4, "224.0.0.0/4 (multicast)", false),
    v4(240, 0, 0, 0, 4, "240.0.0.0/4 (reserved)", false),
    v4(
        255,
        255,
        255,
        255,
        32,
        "255.255.255.255/32 (limited broadcast)",
        false,
    ),
];

/// The IPv6 Special-Purpose Address Registry, plus multicast, the deprecated site-local
/// `fec0::/10`, and every address outside `2000::/3` (the only space IANA allocates for global
/// unicast) — which covers `::/128`, `::1/128`, `100::/64`, `5f00::/16`, `fc00::/7`, `fe80::/10`
/// and the deprecated IPv4-compatible `::/96` as well; they are listed for their names. The
/// IPv4-carrying prefixes are handled before this table (see [`non_global_v6`]).
const V6: &[Block<u128>] = &[
    v6(0, 128, "::/128 (unspecified)", false),
    v6(1, 128, "::1/128 (loopback)", false),
    v6(0, 96, "::/96 (deprecated IPv4-compatible)", false),
    v6(
        0x0064_ff9b_0001 << 80,
        48,
        "64:ff9b:1::/48 (local-use IPv4/IPv6 translation)",
        false,
    ),
    v6(0x0100 << 112, 64, "100::/64 (discard-only)", false),
    v6(
        0x0100_0000_0000_0001 << 64,
        64,
        "100:0:0:1::/64 (dummy IPv6 prefix)",
        false,
    ),
    v6(
        0x2001 << 112,
        23,
        "2001::/23 (IETF protocol assignments)",
        false,
    ),
    v6(0x2001_0000 << 96, 32, "2001::/32 (Teredo)", false),
    v6(
        (0x2001_0001 << 96) | 1,
        128,
        "2001:1::1/128 (PCP anycast)",
        true,
    ),
    v6(
        (0x2001_0001 << 96) | 2,
        128,
        "2001:1::2/128 (TURN anycast)",
        true,
    ),
    v6(
        (0x2001_0001 << 96) | 3,
        128,
        "2001:1::3/128 (DNS-SD SRP anycast)",
        true,
    ),
    v6(
        0x2001_0002_0000 << 80,
        48,
        "2001:2::/48 (benchmarking)",
        false,
    ),
    v6(0x2001_0003 << 96, 32, "2001:3::/32 (AMT)", true),
    v6(
        0x2001_0004_0112 << 80,
        48,
        "2001:4:112::/48 (AS112-v6)",
        true,
    ),
    v6(
        0x2001_0010 << 96,
        28,
        "2001:10::/28 (deprecated ORCHID)",
        false,
    ),
    v6(0x2001_0020 << 96, 28, "2001:20::/28 (ORCHIDv2)", true),
    v6(
        0x2001_0030 << 96,
        28,
        "2001:30::/28 (drone remote ID DETs)",
        true,
    ),
    v6(
        0x2001_0db8 << 96,
        32,
        "2001:db8::/32 (documentation)",
        false,
    ),
    v6(0x3fff << 112, 20, "3fff::/20 (documentation)", false),
    v6(0x5f00 << 112, 16, "5f00::/16 (segment routing SIDs)", false),
    v6(0xfc00 << 112, 7, "fc00::/7 (unique-local)", false),
    v6(0xfe80 << 112, 10, "fe80::/10 (link-local unicast)", false),
    v6(
        0xfec0 << 112,
        10,
        "fec0::/10 (deprecated site-local)",
        false,
    ),
    v6(0xff00 << 112, 8, "ff00::/8 (multicast)", false),
];

/// Outside `2000::/3` and none of the entries above: reserved or unallocated by IANA.
const V6_UNALLOCATED: &str = "outside 2000::/3 (not allocated for global unicast)";

/// The most specific entry of `table` that holds `addr` (one function per width: the masks
/// differ only in their type).
fn lookup_v4(addr: u32) -> Option<&'static Block<u32>> {
    let mask = |len: u8| u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    V4.iter()
        .filter(|b| addr & mask(b.len) == b.net & mask(b.len))
        .max_by_key(|b| b.len)
}

fn lookup_v6(addr: u128) -> Option<&'static Block<u128>> {
    let mask = |len: u8| u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    V6.iter()
        .filter(|b| addr & mask(b.len) == b.net & mask(b.len))
        .max_by_key(|b| b.len)
}

/// Why `ip` is not globally reachable (the registry block it is in), or `None` when it is.
pub fn non_global(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => non_global_v4(a),
        IpAddr::V6(a) => non_global_v6(a),
    }
}

/// Whether `ip` is globally reachable: a public unicast address an outgoing request may go to.
pub fn is_global(ip: IpAddr) -> bool {
    non_global(ip).is_none()
}

fn non_global_v4(ip: Ipv4Addr) -> Option<&'static str> {
    lookup_v4(u32::from(ip))
        .filter(|b| !b.global)
        .map(|b| b.name)
}

fn non_global_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    let low_v4 = Ipv4Addr::from(bits as u32);
    // ::ffff:0:0/96 (IPv4-mapped): a dual-stack socket connects to the IPv4 address itself.
    if bits >> 32 == 0xffff {
        return non_global_v4(low_v4);
    }
    // 64:ff9b::/96 (the well-known NAT64 prefix, globally reachable): the translator connects
    // to the embedded IPv4 address (RFC 6052 §2.2, /96: the last 32 bits).
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return non_global_v4(low_v4);
    }
    // 2002::/16 (6to4): the packets go to the relay router at the embedded IPv4 address.
    if bits >> 112 == 0x2002 {
        return non_global_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    match lookup_v6(bits) {
        Some(b) if b.global => None,
        Some(b) => Some(b.name),
        None if bits >> 125 == 0b001 => None,
        None => Some(V6_UNALLOCATED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One address from every entry of both registries (and the ends of the larger blocks),
    /// with what the registry says.
    #[test]
    fn the_registries_row_by_row() {
        let refused = [
            // IPv4
            "0.0.0.0",
            "0.255.255.255",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.8.9.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.0",
            "192.0.0.1",
            "192.0.0.8",
            "192.0.0.170",
            "192.0.0.255",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "254.1.2.3",
            "255.255.255.255",
            // IPv6
            "::",
            "::1",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:198.18.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::c612:1",
            "64:ff9b:1::808:808",
            "100::1",
            "100:0:0:1::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:1::4",
            "2001:2::1",
            "2001:10::1",
            "2001:1ff:ffff::1",
            "2001:db8::1",
            "2001:db8:ffff::1",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2002:a9fe:a9fe::1",
            "2002:c612:1::1",
            "3fff::1",
            "3fff:fff::1",
            "5f00::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "1::1",
            "4000::1",
            "e000::1",
        ];
        for ip in refused {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!is_global(ip), "{ip} taken as global");
            assert!(non_global(ip).is_some());
        }
        let allowed = [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.0.9",
            "192.0.0.10",
            "192.0.1.1",
            "192.31.196.1",
            "192.52.193.1",
            "192.88.98.255",
            "192.175.48.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2001:1::1",
            "2001:1::2",
            "2001:1::3",
            "2001:3::1",
            "2001:4:112::1",
            "2001:20::1",
            "2001:30::1",
            "2001:200::1",
            "2002:808:808::1",
            "2606:2800:220:1:248:1893:25c8:1946",
            "2620:4f:8000::1",
            "2a00:1450:4001::200e",
            "3ffe::1",
        ];
        for ip in allowed {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_global(ip), "{ip} refused: {:?}", non_global(ip));
        }
    }

    #[test]
    fn refusals_name_the_registry_entry() {
        let name = |s: &str| non_global(s.parse().unwrap()).unwrap();
        assert_eq!(name("198.18.0.1"), "198.18.0.0/15 (benchmarking)");
        assert_eq!(
            name("192.0.0.1"),
            "192.0.0.0/24 (IETF protocol assignments)"
        );
        assert_eq!(name("2002:7f00:1::"), "127.0.0.0/8 (loopback)");
        assert_eq!(name("::1"), "::1/128 (loopback)");
        assert_eq!(name("2001:2::5"), "2001:2::/48 (benchmarking)");
    }
}
