//! Capture files in, UDP payloads out: the reading half of `--replay`.
//!
//! Owns parsing of classic pcap (either byte order, µs or ns magic) and pcapng (section,
//! interface, enhanced/simple/obsolete packet blocks), the link layers (Ethernet with VLAN
//! tags, Linux cooked SLL and SLL2, raw IP, BSD null/loopback) and the IPv4/IPv6 + UDP
//! headers. It hands `send::replay` a list of payloads in capture order; it does no I/O
//! beyond what the caller reads into memory.

#![forbid(unsafe_code)]

use anyhow::{bail, ensure, Context, Result};

/// One UDP datagram found in a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPayload {
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

/// A captured frame and the link type of the interface it was captured on.
struct Frame<'a> {
    link_type: u32,
    data: &'a [u8],
}

fn u16_at(b: &[u8], at: usize, le: bool) -> Option<u16> {
    let x: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(if le {
        u16::from_le_bytes(x)
    } else {
        u16::from_be_bytes(x)
    })
}

fn u32_at(b: &[u8], at: usize, le: bool) -> Option<u32> {
    let x: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if le {
        u32::from_le_bytes(x)
    } else {
        u32::from_be_bytes(x)
    })
}

/// Classic pcap: 24-byte file header, then 16-byte record headers each followed by the frame.
fn classic_frames(b: &[u8]) -> Result<Vec<Frame<'_>>> {
    let le = match u32_at(b, 0, false).context("file too short")? {
        0xa1b2_c3d4 | 0xa1b2_3c4d => false,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => true,
        m => bail!("not a pcap file (magic {m:#010x})"),
    };
    let link_type = u32_at(b, 20, le).context("truncated pcap header")? & 0x0fff_ffff;
    let mut frames = Vec::new();
    let mut at = 24;
    while at < b.len() {
        let incl = u32_at(b, at + 8, le).with_context(|| format!("truncated record at {at}"))?;
        let start = at + 16;
        let end = start + incl as usize;
        let data = b
            .get(start..end)
            .with_context(|| format!("record at {at} claims {incl} bytes past the end"))?;
        frames.push(Frame { link_type, data });
        at = end;
    }
    Ok(frames)
}

/// pcapng: a sequence of blocks (type, total length, body, total length).
fn pcapng_frames(b: &[u8]) -> Result<Vec<Frame<'_>>> {
    let mut frames = Vec::new();
    let mut le = true;
    let mut links: Vec<(u32, u32)> = Vec::new(); // (link type, snaplen) per interface
    let mut at = 0;
    while at < b.len() {
        if u32_at(b, at, false) == Some(0x0a0d_0d0a) {
            // Section header: its byte-order magic decides how everything after it is read.
            le = match u32_at(b, at + 8, false).context("truncated section header")? {
                0x1a2b_3c4d => false,
                0x4d3c_2b1a => true,
                m => bail!("bad pcapng byte-order magic {m:#010x} at {at}"),
            };
            links.clear();
        }
        let kind = u32_at(b, at, le).context("truncated block")?;
        let len = u32_at(b, at + 4, le).context("truncated block")? as usize;
        ensure!(len >= 12 && len % 4 == 0, "bad block length {len} at {at}");
        let block = b
            .get(at..at + len)
            .with_context(|| format!("block at {at} runs past the end"))?;
        let body = &block[8..len - 4];
        let packet = |iface: u32, cap_at: usize, data_at: usize| -> Result<Frame<'_>> {
            let &(link_type, _) = links
                .get(iface as usize)
                .with_context(|| format!("packet at {at} names unknown interface {iface}"))?;
            let cap = u32_at(body, cap_at, le).context("short packet block")? as usize;
            let data = body
                .get(data_at..data_at + cap)
                .with_context(|| format!("packet at {at} longer than its block"))?;
            Ok(Frame { link_type, data })
        };
        match kind {
            1 => {
                let lt = u16_at(body, 0, le).context("short interface block")?;
                let snap = u32_at(body, 4, le).context("short interface block")?;
                links.push((u32::from(lt), snap));
            }
            6 => frames.push(packet(u32_at(body, 0, le).unwrap_or(0), 12, 20)?),
            2 => frames.push(packet(u32::from(u16_at(body, 0, le).unwrap_or(0)), 12, 20)?),
            3 => {
                // Simple packet block: captured length = min(original, snaplen of interface 0).
                let &(link_type, snap) = links.first().context("simple packet before interface")?;
                let orig = u32_at(body, 0, le).context("short simple packet block")?;
                let cap = if snap == 0 { orig } else { orig.min(snap) } as usize;
                let data = body
                    .get(4..4 + cap)
                    .context("simple packet longer than block")?;
                frames.push(Frame { link_type, data });
            }
            _ => {}
        }
        at += len;
    }
    Ok(frames)
}

/// The IP packet inside a frame of the given link type.
fn ip_packet(link_type: u32, f: &[u8]) -> Option<&[u8]> {
    match link_type {
        // Ethernet, skipping 802.1Q / 802.1ad tags.
        1 => {
            let mut at = 12;
            let mut ethertype = u16_at(f, at, false)?;
            while ethertype == 0x8100 || ethertype == 0x88a8 {
                at += 4;
                ethertype = u16_at(f, at, false)?;
            }
            matches!(ethertype, 0x0800 | 0x86dd).then(|| f.get(at + 2..))?
        }
        // Linux cooked capture v1: protocol at 14, header 16 bytes.
        113 => matches!(u16_at(f, 14, false)?, 0x0800 | 0x86dd).then(|| f.get(16..))?,
        // Linux cooked capture v2: protocol at 0, header 20 bytes.
        276 => matches!(u16_at(f, 0, false)?, 0x0800 | 0x86dd).then(|| f.get(20..))?,
        // Raw IP (IPv4 or IPv6 by version nibble).
        12 | 14 | 101 | 228 | 229 => Some(f),
        // BSD null/loopback: 4-byte family in the capturing host's order; trust the IP version.
        0 | 108 => f.get(4..),
        _ => None,
    }
}

/// The UDP destination port and payload of an IPv4 or IPv6 packet, if it is unfragmented UDP.
fn udp_in_ip(p: &[u8]) -> Option<(u16, &[u8])> {
    let udp = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(u16_at(p, 2, false)?);
            let frag = u16_at(p, 6, false)?;
            // A fragment (offset set or more-fragments) does not hold a whole datagram.
            if *p.get(9)? != 17 || frag & 0x3fff != 0 || ihl < 20 || total < ihl {
                return None;
            }
            p.get(ihl..total.min(p.len()))?
        }
        6 => {
            let plen = usize::from(u16_at(p, 4, false)?);
            let mut next = *p.get(6)?;
            let mut at = 40;
            // Hop-by-hop, routing and destination options can precede UDP.
            while matches!(next, 0 | 43 | 60) {
                next = *p.get(at)?;
                at += (usize::from(*p.get(at + 1)?) + 1) * 8;
            }
            if next != 17 {
                return None;
            }
            p.get(at..(40 + plen).min(p.len()))?
        }
        _ => return None,
    };
    let dst_port = u16_at(udp, 2, false)?;
    let len = usize::from(u16_at(udp, 4, false)?);
    if len < 8 {
        return None;
    }
    Some((dst_port, udp.get(8..len)?))
}

/// Every UDP payload in the capture, in order; `port` keeps only that destination port.
pub fn udp_payloads(file: &[u8], port: Option<u16>) -> Result<Vec<UdpPayload>> {
    let frames = if u32_at(file, 0, false) == Some(0x0a0d_0d0a) {
        pcapng_frames(file)?
    } else {
        classic_frames(file)?
    };
    Ok(frames
        .iter()
        .filter_map(|f| udp_in_ip(ip_packet(f.link_type, f.data)?))
        .filter(|(p, _)| match port {
            Some(want) => *p == want,
            None => true,
        })
        .map(|(dst_port, payload)| UdpPayload {
            dst_port,
            payload: payload.to_vec(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v5;

    fn fixture(name: &str) -> Option<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        [
            dir.join("../shared/fixtures"),
            dir.join("../../shared/fixtures"),
        ]
        .iter()
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .and_then(|p| std::fs::read(p).ok())
    }

    #[test]
    fn softflowd_fixture_totals() {
        let file = fixture("softflowd-v5.pcap").expect("shared/fixtures/softflowd-v5.pcap");
        let all = udp_payloads(&file, None).expect("parse");
        let v5s = udp_payloads(&file, Some(9805)).expect("parse");
        assert_eq!(all.len(), 23);
        assert_eq!(v5s.len(), 23);
        assert!(udp_payloads(&file, Some(9806)).expect("parse").is_empty());
        let (mut flows, mut packets, mut bytes) = (0u64, 0u64, 0u64);
        for p in &v5s {
            let s = v5::peek(&p.payload).expect("every payload is v5");
            flows += u64::from(s.count);
            packets += s.packets;
            bytes += s.bytes;
        }
        assert_eq!((flows, packets, bytes), (682, 3858, 2_036_135));
    }

    /// Wraps IPv4/UDP payloads in a classic pcap of the given link type and byte order.
    fn classic(link: u32, le: bool, nsec: bool, frames: &[Vec<u8>]) -> Vec<u8> {
        let w32 = |v: &mut Vec<u8>, x: u32| {
            v.extend_from_slice(&if le { x.to_le_bytes() } else { x.to_be_bytes() })
        };
        let w16 = |v: &mut Vec<u8>, x: u16| {
            v.extend_from_slice(&if le { x.to_le_bytes() } else { x.to_be_bytes() })
        };
        let mut v = Vec::new();
        w32(&mut v, if nsec { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
        w16(&mut v, 2);
        w16(&mut v, 4);
        w32(&mut v, 0);
        w32(&mut v, 0);
        w32(&mut v, 65535);
        w32(&mut v, link);
        for f in frames {
            w32(&mut v, 1);
            w32(&mut v, 2);
            w32(&mut v, f.len() as u32);
            w32(&mut v, f.len() as u32);
            v.extend_from_slice(f);
        }
        v
    }

    fn ipv4_udp(port: u16, payload: &[u8]) -> Vec<u8> {
        let total = 28 + payload.len() as u16;
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&1234u16.to_be_bytes());
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn classic_link_types_and_byte_orders() {
        let ip = ipv4_udp(2055, b"hello");
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x81, 0x00, 0, 5, 0x08, 0x00]);
        eth.extend_from_slice(&ip);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&ip);
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(&ip);
        let want = vec![UdpPayload {
            dst_port: 2055,
            payload: b"hello".to_vec(),
        }];
        for (link, frame) in [(1, &eth), (113, &sll), (101, &ip), (228, &ip), (0, &null)] {
            for (le, nsec) in [(true, false), (false, true)] {
                let file = classic(link, le, nsec, std::slice::from_ref(frame));
                assert_eq!(
                    udp_payloads(&file, None).expect("parse"),
                    want,
                    "link {link}"
                );
                assert!(udp_payloads(&file, Some(1)).expect("parse").is_empty());
            }
        }
    }

    #[test]
    fn truncated_files_are_errors_not_panics() {
        let file = classic(101, true, false, &[ipv4_udp(9, b"abc")]);
        for cut in 1..file.len() {
            // Cutting inside the file header or a record must not panic.
            let _ = udp_payloads(&file[..cut], None);
        }
        assert!(udp_payloads(&file[..file.len() - 1], None).is_err());
        assert!(udp_payloads(b"garbage!", None).is_err());
    }
}
