//! The UDP socket each shard owns: SO_REUSEPORT so every shard binds the same address, a
//! large receive buffer, and SO_RXQ_OVFL so the kernel reports its drops.
//!
//! Also what the kernel says about those sockets, for the shards' metrics: how one reuseport
//! group spreads datagrams ([`attach_spread_cbpf`] for `--balance spread`, [`attach_cpu_cbpf`]
//! for `--balance cpu`), and drop counters
//! per socket ([`udp_drops_for_socket`]); the system-wide count is in `crate::obs::host`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// A bound shard socket and what the kernel granted.
pub struct BoundSocket {
    pub socket: UdpSocket,
    /// SO_RCVBUF as the kernel reports it (it doubles the request and caps it at
    /// `net.core.rmem_max` unless SO_RCVBUFFORCE was allowed).
    pub rcvbuf: usize,
}

/// Binds a UDP socket to `addr` with SO_REUSEPORT, asking for `rcvbuf` bytes of receive
/// buffer. With CAP_NET_ADMIN, SO_RCVBUFFORCE lifts the `rmem_max` cap; otherwise the plain
/// request is capped and the caller warns with the figure it got.
pub fn bind_reuseport(addr: SocketAddr, rcvbuf: usize) -> io::Result<BoundSocket> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // `[::]` serves IPv4 exporters too (as v4-mapped sources) where the OS allows it.
        let _ = socket.set_only_v6(false);
    }
    let half = (rcvbuf / 2).min(i32::MAX as usize) as libc::c_int;
    if rcvbuf > 0 && set_int_opt(&socket, libc::SO_RCVBUFFORCE, half).is_err() {
        socket.set_recv_buffer_size(rcvbuf / 2)?;
    }
    // Best effort: a kernel without SO_RXQ_OVFL just leaves the drop count unknown.
    let _ = set_int_opt(&socket, libc::SO_RXQ_OVFL, 1);
    // The kernel's receive time with every datagram (`received_at` and the latency are
    // measured from it); without it the shard reads the clock once per receive call.
    let _ = set_int_opt(&socket, libc::SO_TIMESTAMPNS, 1);
    socket.bind(&addr.into())?;
    let granted = socket.recv_buffer_size()?;
    Ok(BoundSocket {
        socket: socket.into(),
        rcvbuf: granted,
    })
}

/// What a datagram's control data (ancillary messages) told: SO_RXQ_OVFL's running drop count
/// and SO_TIMESTAMPNS's receive time, each where the kernel sent it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Control {
    pub drops: Option<u32>,
    /// When the kernel received the datagram, µs since the Unix epoch.
    pub received_us: Option<i64>,
}

/// Room the control data of one datagram needs: SO_RXQ_OVFL (a u32) and SO_TIMESTAMPNS (a
/// timespec), each after its `cmsghdr`, with slack.
pub const CONTROL_LEN: usize = 96;

/// Parses control data as the kernel wrote it (a run of `cmsghdr`s, each followed by its data
/// at the next `usize` boundary). The area may sit at any offset in a buffer (io_uring puts it
/// after the source address), so every read is unaligned and bounds-checked.
pub fn parse_control(control: &[u8]) -> Control {
    const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
    let align =
        |len: usize| len.div_ceil(std::mem::size_of::<usize>()) * std::mem::size_of::<usize>();
    let data_at = align(HDR);
    let mut out = Control::default();
    let mut off = 0;
    while off + HDR <= control.len() {
        // SAFETY: `off + HDR <= control.len()`, so the read stays in the slice; cmsghdr is plain
        // old data (every bit pattern is valid) and read_unaligned needs no alignment.
        let hdr = unsafe {
            control
                .as_ptr()
                .add(off)
                .cast::<libc::cmsghdr>()
                .read_unaligned()
        };
        // cmsg_len is size_t on glibc but socklen_t on musl.
        #[allow(clippy::unnecessary_cast)]
        let len = hdr.cmsg_len as usize;
        if len < HDR {
            break;
        }
        let data = control.get(off + data_at..(off + len).min(control.len()));
        if hdr.cmsg_level == libc::SOL_SOCKET {
            match (hdr.cmsg_type, data) {
                (libc::SO_RXQ_OVFL, Some(d)) if d.len() >= 4 => {
                    out.drops = Some(u32::from_ne_bytes([d[0], d[1], d[2], d[3]]));
                }
                (libc::SO_TIMESTAMPNS, Some(d)) if d.len() >= 16 => {
                    let word = |at: usize| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&d[at..at + 8]);
                        i64::from_ne_bytes(b)
                    };
                    // A timespec of two 64-bit words (every 64-bit Linux).
                    out.received_us = Some(word(0) * 1_000_000 + word(8) / 1_000);
                }
                _ => {}
            }
        }
        off += align(len);
    }
    out
}

/// Sets an integer SOL_SOCKET option that socket2 does not wrap.
fn set_int_opt(socket: &Socket, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local; the fd is open.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `SO_ATTACH_REUSEPORT_CBPF` (not in the libc crate for Linux); 51 on every architecture
/// but sparc (0x35) and parisc (0x402D, unsupported here).
#[cfg(not(target_arch = "sparc64"))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
#[cfg(target_arch = "sparc64")]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 0x35;

/// `--balance spread`: makes the kernel pick a random socket of `socket`'s reuseport group for
/// every datagram instead of hashing the 4-tuple, so one busy exporter is spread over all
/// `shards` shards. Safe for v5 (no templates). For v9/IPFIX the templates are shared by all
/// shards, so data decodes on any shard; but a template *redefinition* and the data right
/// behind it may land on two shards, and the data can be decoded with the old definition if
/// its shard reads it first. `hash` (one exporter, one shard, in order) is the default.
///
/// The classic BPF program is `A = random u32; A %= shards; return A`; its result is an index
/// into the group's socket array, which is in bind order. **Attach it after all `shards`
/// sockets of the group are bound:** an index past the sockets bound so far makes the kernel
/// fall back to the hash for that datagram, and closing a socket reorders the array. Attaching
/// to any one socket of the group sets the program for the whole group.
pub fn attach_spread_cbpf(socket: &UdpSocket, shards: u32) -> io::Result<()> {
    if shards == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a reuseport group needs at least one shard",
        ));
    }
    let mut program = [
        bpf_op(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            0,
            0,
            (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32,
        ),
        bpf_op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, 0, 0, shards),
        bpf_op(libc::BPF_RET | libc::BPF_A, 0, 0, 0),
    ];
    attach_reuseport_cbpf(socket, &mut program)
}

/// `--balance cpu`: makes the kernel hand each datagram to the shard pinned to the CPU that
/// is processing it (the one that ran the network stack's receive for it: the NIC queue's
/// interrupt or RPS CPU, or on loopback the sender's). The datagram's socket buffer is then
/// freed on the CPU that allocated it and the shard is woken on its own CPU: no
/// inter-processor interrupt for either, which on a virtual machine cost more than the copy
/// of the datagram. `shard_cpus[i]` is the CPU shard `i` (socket `i` of the group, in bind
/// order) is pinned to; a datagram processed on any other CPU goes to shard `cpu % shards`.
/// An exporter stays on one shard as long as the NIC (RSS) steers it to one CPU, as it
/// normally does; the v9/IPFIX caveat of [`attach_spread_cbpf`] applies when it moves.
/// Attach it after all sockets of the group are bound, as the spread program.
pub fn attach_cpu_cbpf(socket: &UdpSocket, shard_cpus: &[u32]) -> io::Result<()> {
    // Two instructions per shard plus three stay under the kernel's limit (BPF_MAXINSNS,
    // 4096). The kernel may still refuse a long program (ENOMEM) where net.core.optmem_max is
    // small: about 850 shards at its old default of 20 KiB.
    if !(1..=2000).contains(&shard_cpus.len()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the cpu balance needs 1..=2000 shards",
        ));
    }
    let shards = shard_cpus.len() as u32;
    let mut program = vec![bpf_op(
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        0,
        0,
        (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
    )];
    for (shard, &cpu) in shard_cpus.iter().enumerate() {
        // if A == cpu: return shard (else skip that return).
        program.push(bpf_op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            cpu,
        ));
        program.push(bpf_op(libc::BPF_RET | libc::BPF_K, 0, 0, shard as u32));
    }
    program.push(bpf_op(
        libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K,
        0,
        0,
        shards,
    ));
    program.push(bpf_op(libc::BPF_RET | libc::BPF_A, 0, 0, 0));
    attach_reuseport_cbpf(socket, &mut program)
}

/// One classic BPF instruction.
fn bpf_op(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Sets `program` as the reuseport group's socket selector (SO_ATTACH_REUSEPORT_CBPF).
fn attach_reuseport_cbpf(socket: &UdpSocket, program: &mut [libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: libc::c_ushort::try_from(program.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: setsockopt reads one sock_fprog whose filter points at `program`, both live for
    // the call; the kernel copies the program before returning.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Datagrams the kernel dropped on `socket` (receive buffer full, or a failed checksum), from
/// the `drops` column of /proc/net/udp or udp6 for the socket's inode: a running total that,
/// unlike SO_RXQ_OVFL, does not wait for the next datagram to be read. None if not found.
pub fn udp_drops_for_socket(socket: &UdpSocket) -> Option<u64> {
    SocketDrops::new(socket)?.read()
}

/// A socket's running count of kernel drops, from the SO_RXQ_OVFL value that comes with
/// each datagram and from /proc (which also sees drops after the last datagram).
pub struct DropCount {
    total: Option<u64>,
    reader: Option<SocketDrops>,
}

impl DropCount {
    pub fn new(socket: &UdpSocket) -> Self {
        Self {
            total: None,
            reader: SocketDrops::new(socket),
        }
    }

    /// Takes the SO_RXQ_OVFL value a datagram carried.
    #[inline]
    pub fn note(&mut self, drops: u32) {
        self.raise(u64::from(drops));
    }

    /// Re-reads /proc/net/udp (no allocation after the first call).
    pub fn refresh(&mut self) {
        if let Some(d) = self.reader.as_mut().and_then(SocketDrops::read) {
            self.raise(d);
        }
    }

    pub fn get(&self) -> Option<u64> {
        self.total
    }

    fn raise(&mut self, d: u64) {
        self.total = Some(self.total.map_or(d, |t| t.max(d)));
    }
}

/// Reads one socket's `drops` column from /proc/net/udp (or udp6) without allocating after
/// the first read: the inode is found once, the file is read into a buffer kept between
/// calls, and lines are scanned in place. The shards call it about once a second.
pub struct SocketDrops {
    inode: u64,
    buf: Vec<u8>,
}

impl SocketDrops {
    pub fn new(socket: &UdpSocket) -> Option<Self> {
        // SAFETY: libc::stat is plain old data; all-zero is a valid value for fstat to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes one `stat` into a live local; the fd is open for `socket`'s life.
        if unsafe { libc::fstat(socket.as_raw_fd(), &mut st) } != 0 {
            return None;
        }
        Some(Self {
            inode: st.st_ino,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// The kernel's drop count for the socket, if it is listed.
    pub fn read(&mut self) -> Option<u64> {
        use std::io::Read;
        for path in ["/proc/net/udp", "/proc/net/udp6"] {
            self.buf.clear();
            let mut file = std::fs::File::open(path).ok()?;
            file.read_to_end(&mut self.buf).ok()?;
            let text = std::str::from_utf8(&self.buf).ok()?;
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
            for line in text.lines().skip(1) {
                let mut fields = line.split_ascii_whitespace();
                if fields.nth(9).and_then(|f| f.parse::<u64>().ok()) == Some(self.inode) {
                    return fields.nth(2)?.parse().ok();
                }
            }
        }
        None
    }
}

/// `net.core.rmem_max`, for the start-up warning when the receive buffer was capped.
pub fn rmem_max() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Converts a `sockaddr_storage` filled by the kernel into a `SocketAddr`.
pub(crate) fn sockaddr_to_std(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote an AF_INET address, so the storage holds a sockaddr_in;
            // sockaddr_storage is large and aligned enough for it.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for AF_INET6 and sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(sin6.sin6_port))))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Binds `n` reuseport sockets to one loopback port, in order.
    fn group(n: usize) -> (Vec<UdpSocket>, SocketAddr) {
        let first = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let addr = first.socket.local_addr().unwrap();
        let mut sockets = vec![first.socket];
        for _ in 1..n {
            sockets.push(bind_reuseport(addr, 1 << 20).unwrap().socket);
        }
        for s in &sockets {
            s.set_nonblocking(true).unwrap();
        }
        (sockets, addr)
    }

    /// Sends `total` datagrams from one source socket in chunks, reading every socket of the
    /// group empty after each chunk; returns how many each socket got.
    fn spread_counts(sockets: &[UdpSocket], addr: SocketAddr, total: usize) -> Vec<usize> {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut counts = vec![0; sockets.len()];
        let mut buf = [0u8; 64];
        for chunk in 0..total / 250 {
            for i in 0..250u32 {
                tx.send_to(&(chunk as u32 * 250 + i).to_be_bytes(), addr)
                    .unwrap();
            }
            for (s, count) in sockets.iter().zip(counts.iter_mut()) {
                // Loopback delivers inside send_to, so everything sent is queued by now.
                while s.recv_from(&mut buf).is_ok() {
                    *count += 1;
                }
            }
        }
        counts
    }

    #[test]
    fn spread_cbpf_uses_every_socket_for_one_source() {
        let (sockets, addr) = group(4);
        attach_spread_cbpf(&sockets[0], 4).unwrap();
        let counts = spread_counts(&sockets, addr, 4000);
        println!("spread over 4 sockets: {counts:?}");
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), 4000);
        for s in &sockets {
            assert_eq!(udp_drops_for_socket(s), Some(0));
        }
    }

    #[test]
    fn default_hash_keeps_one_source_on_one_socket() {
        let (sockets, addr) = group(4);
        let counts = spread_counts(&sockets, addr, 1000);
        println!("hash over 4 sockets: {counts:?}");
        assert_eq!(counts.iter().filter(|&&c| c > 0).count(), 1, "{counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), 1000);
    }

    /// `--balance cpu`: loopback runs the receive of a datagram on the sending CPU, so what a
    /// thread pinned to CPU c sends lands on the socket of the shard mapped to c. The shards
    /// are mapped to the CPUs in reverse, so the lookup is tested, not only its `cpu % shards`
    /// fallback.
    #[test]
    fn cpu_cbpf_picks_the_socket_of_the_processing_cpu() {
        let cores: Vec<_> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .take(4)
            .collect();
        if cores.len() < 2 {
            eprintln!("skipped: needs 2 CPUs, has {}", cores.len());
            return;
        }
        let n = cores.len();
        let (sockets, addr) = group(n);
        let cpus: Vec<u32> = cores.iter().rev().map(|c| c.id as u32).collect();
        attach_cpu_cbpf(&sockets[0], &cpus).unwrap();
        let mut buf = [0u8; 64];
        for (k, &core) in cores.iter().enumerate() {
            let pinned = std::thread::spawn(move || {
                if !core_affinity::set_for_current(core) {
                    return false;
                }
                let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
                for i in 0..200u32 {
                    tx.send_to(&i.to_be_bytes(), addr).unwrap();
                }
                true
            })
            .join()
            .unwrap();
            assert!(pinned, "could not pin a thread to CPU {}", core.id);
            // Loopback normally delivers inside send_to; the kernel may leave it to its
            // softirq thread (on the same CPU): read until all 200 are in, bounded.
            let mut counts = vec![0usize; n];
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while counts.iter().sum::<usize>() < 200 && std::time::Instant::now() < deadline {
                for (s, count) in sockets.iter().zip(counts.iter_mut()) {
                    while s.recv_from(&mut buf).is_ok() {
                        *count += 1;
                    }
                }
            }
            let mut want = vec![0; n];
            want[n - 1 - k] = 200;
            assert_eq!(counts, want, "sent from CPU {}", core.id);
        }
    }

    #[test]
    fn cpu_balance_needs_a_shard() {
        let (sockets, _) = group(1);
        assert!(attach_cpu_cbpf(&sockets[0], &[]).is_err());
    }

    #[test]
    fn spread_needs_a_shard() {
        let (sockets, _) = group(1);
        assert!(attach_spread_cbpf(&sockets[0], 0).is_err());
    }

    #[test]
    fn proc_counters_are_readable() {
        let (sockets, _) = group(1);
        assert_eq!(udp_drops_for_socket(&sockets[0]), Some(0));
        assert!(crate::obs::host::udp_rcvbuf_errors().is_some());
    }
}
