//! Where a hosted tenant's upstream may point. A tenant names its upstream, and the gateway then
//! connects to it from inside the operator's network: without this guard a tenant could make the
//! gateway fetch loopback services, private hosts or a cloud's metadata endpoint (SSRF). The check
//! runs on the resolved addresses, when the upstream is saved and each time a tenant is (re)built
//! from the database, and the address connected to is the one checked (no second lookup).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why an address is refused, or `None` when it is a public one.
pub fn refused(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => refused_v4(v4),
            None => refused_v6(v6),
        },
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        Some("a cloud metadata address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_private() || (o[0] == 100 && (64..128).contains(&o[1])) {
        Some("a private address")
    } else if ip.is_unspecified() || o[0] == 0 || ip.is_broadcast() || ip.is_multicast() || o[0] >= 240 {
        Some("not a unicast address")
    } else {
        None
    }
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() || ip.is_multicast() {
        Some("not a unicast address")
    } else if s[0] & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if s[0] & 0xfe00 == 0xfc00 {
        // Unique local, which also holds AWS's IPv6 metadata address (fd00:ec2::254).
        Some("a private address")
    } else if s[0] == 0x64 && s[1] == 0xff9b {
        // NAT64: the IPv4 address is embedded in the last 32 bits.
        refused_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ))
    } else {
        None
    }
}

/// Checks every address a host name resolved to: one refused address refuses the upstream (a name
/// that resolves both ways must not be a coin toss).
pub fn check(upstream: &str, addrs: &[SocketAddr]) -> Result<(), String> {
    for a in addrs {
        if let Some(why) = refused(a.ip()) {
            return Err(format!(
                "upstream '{upstream}' resolves to {} ({why}); a hosted tenant's upstream must be a public address (an operator may allow private ones with hosted.allow_private_upstreams)",
                a.ip()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_refused() {
        for a in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(refused(a.parse().unwrap()).is_some(), "{a} should be refused");
        }
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(refused(a.parse().unwrap()), None, "{a} should be allowed");
        }
    }
}
