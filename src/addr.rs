//! Address blocks (`192.0.2.0/24`, `2001:db8::/32`) for the settings that name exporters by
//! address (`--sampling-override`, `--allow-exporters`). A leaf: every stage may use it.

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

/// The exporters nfpg accepts datagrams from (`--allow-exporters`), matched against the
/// column form of an address (IPv4 as IPv4-mapped IPv6) in a few instructions per block.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    /// (network, mask) in column form; empty: every address is allowed.
    blocks: Vec<(u128, u128)>,
}

impl AllowList {
    pub fn new(blocks: &[Cidr]) -> Self {
        Self {
            blocks: blocks
                .iter()
                .map(|c| {
                    let (net, bits) = as_v6_bits(c.addr, c.prefix);
                    let mask = if bits == 0 {
                        0
                    } else {
                        u128::MAX << (128 - u32::from(bits))
                    };
                    (net & mask, mask)
                })
                .collect(),
        }
    }

    /// No list: every exporter is allowed.
    pub fn is_open(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Whether the column-form address `addr` may send.
    #[inline]
    pub fn allows(&self, addr: u128) -> bool {
        self.blocks.is_empty() || self.blocks.iter().any(|&(net, mask)| addr & mask == net)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(s: &str) -> u128 {
        match s.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => u128::from(v6),
        }
    }

    #[test]
    fn allow_list_matches_blocks_of_both_families() {
        let list: Vec<Cidr> = ["192.0.2.0/24", "198.51.100.7", "2001:db8::/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let a = AllowList::new(&list);
        for (addr, ok) in [
            ("192.0.2.1", true),
            ("192.0.2.255", true),
            ("192.0.3.1", false),
            ("198.51.100.7", true),
            ("198.51.100.8", false),
            ("2001:db8:1::1", true),
            ("2001:db9::1", false),
            ("::ffff:192.0.2.9", true),
        ] {
            assert_eq!(a.allows(col(addr)), ok, "{addr}");
        }
        assert!(AllowList::new(&[]).allows(col("203.0.113.1")));
        let all = AllowList::new(&["0.0.0.0/0".parse().unwrap()]);
        assert!(all.allows(col("203.0.113.1")) && !all.allows(col("2001:db8::1")));
    }
}
