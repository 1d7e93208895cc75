//! Address blocks (`192.0.2.0/24`, `2001:db8::/32`) for the settings that name exporters by
//! address (`--sampling-override`). A leaf: every stage may use it.

use std::net::IpAddr;

/// An address block: address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the block (IPv4 and IPv6 compared in the same form, so an
    /// IPv4 block also matches the IPv4-mapped form of its addresses).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, bits) = as_v6_bits(self.addr, self.prefix);
        let (ip, _) = as_v6_bits(ip, 0);
        if bits == 0 {
            return true;
        }
        let mask = u128::MAX << (128 - u32::from(bits));
        net & mask == ip & mask
    }
}

fn as_v6_bits(ip: IpAddr, prefix: u8) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(v4.to_ipv6_mapped()), prefix.saturating_add(96)),
        IpAddr::V6(v6) => (u128::from(v6), prefix),
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|e| format!("{s:?}: not an address ({e})"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.trim()
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?
        };
        Ok(Cidr { addr, prefix })
    }
}
