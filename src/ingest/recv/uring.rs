//! io_uring receive path: one multishot `RecvMsgMulti` per socket over a provided buffer ring,
//! so a single submission keeps yielding datagrams until the ring runs dry.
//!
//! This module owns the ring (`IoUring`), the buffer ring and its buffer memory (both anonymous
//! mappings made here), and the shard's socket. Each completion names one buffer; the datagram
//! in it is handed to the shard's sink as a [`Datagram`] borrowed from that buffer, and the
//! buffer goes back to the kernel when its `Lease` drops, right after the sink returns.
//!
//! Kernel features, and what happens without them:
//! - multishot recvmsg (6.0) and `IORING_REGISTER_PBUF_RING` (5.19): required; without them
//!   [`uring_supported`] says why and `recv::open` falls back to recvmmsg.
//! - `IORING_SETUP_SINGLE_ISSUER` + `DEFER_TASKRUN` (6.1): completions are produced only while
//!   the shard thread waits in `io_uring_enter`, so no other thread does work on its behalf.
//!   The ring is created disabled (`R_DISABLED`) and enabled by the first [`Receiver::recv`],
//!   which makes the shard thread (not the thread that built the receiver) the ring's issuer.
//!   Without these flags the ring uses `COOP_TASKRUN`, or nothing.
//!
//! Buffer layout (one per ring entry, `BUF_LEN` bytes, as the kernel writes it for multishot
//! recvmsg): `io_uring_recvmsg_out` header | source address (`NAME_LEN`) | control data
//! (`CONTROL_LEN`, where SO_RXQ_OVFL and SO_TIMESTAMPNS land) | payload (up to [`MAX_DATAGRAM`]).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::BufRingEntry;
use io_uring::{cqueue, opcode, types, IoUring, Probe};

use super::{Datagram, Receiver, MAX_DATAGRAM};

/// Size of `io_uring_recvmsg_out` (namelen, controllen, payloadlen, flags: four u32).
const OUT_HEADER_LEN: usize = 16;
/// Room for the source address: a `sockaddr_in6` (28 bytes) rounded up to 8.
const NAME_LEN: usize = 32;
use super::socket::{parse_control, CONTROL_LEN};
/// Bytes the kernel may write into one provided buffer.
const BUF_LEN: usize = OUT_HEADER_LEN + NAME_LEN + CONTROL_LEN + MAX_DATAGRAM;
/// Distance between buffers: `BUF_LEN` rounded up to a cache line.
const BUF_STRIDE: usize = BUF_LEN.div_ceil(64) * 64;
/// Buffer group id of our one buffer ring.
const BGID: u16 = 0;
/// `user_data` of the multishot receive and of its cancellation.
const RECV_TAG: u64 = 1;
const CANCEL_TAG: u64 = 2;
/// Completions ahead whose buffers are prefetched.
const AHEAD: usize = 2;
/// Submission queue size: at most a re-arm and a cancel are ever queued.
const SQ_ENTRIES: u32 = 8;
/// Longest a shard waits for a batch of completions before it takes what has come (µs).
/// 3 ms rather than 1: `--sink null` at 50,000 datagrams/s (2-core VM, 3 alternating runs
/// each) used about 5 % less CPU with `--balance hash` and 10 % less with `--balance cpu`. A
/// datagram's arrival time is the kernel's, so only the age of a batch moves.
const COALESCE_US: u32 = 3000;
/// Largest buffer ring the kernel accepts.
const MAX_RING_ENTRIES: usize = 32768;

/// How many ring entries `recv::open` gives a shard for a `--batch` of `batch`: twice the
/// batch, a power of two, 32..=4096 (each entry holds one datagram, about 9.4 KiB).
pub fn ring_entries_for(batch: usize) -> u16 {
    let n = batch.saturating_mul(2).clamp(32, 4096).next_power_of_two();
    // 4096 fits a u16; the clamp above keeps it there.
    u16::try_from(n).unwrap_or(4096)
}

/// Says whether this kernel and process can run the io_uring receive path, and if not, why
/// (seccomp in containers answers EPERM or ENOSYS; old kernels EINVAL or lack an opcode).
pub fn uring_supported() -> Result<(), String> {
    let (major, minor) =
        kernel_version().ok_or("cannot read the kernel version (/proc/sys/kernel/osrelease)")?;
    if (major, minor) < (6, 0) {
        return Err(format!(
            "kernel {major}.{minor} lacks multishot recvmsg (needs 6.0)"
        ));
    }
    // Declared before the ring so it drops after it: the kernel lets go of it when the ring closes.
    let bufs = BufRing::new(1).map_err(|e| format!("buffer ring allocation failed: {e}"))?;
    let ring = IoUring::new(2).map_err(|e| format!("io_uring_setup failed: {e}"))?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("io_uring probe failed: {e}"))?;
    if !probe.is_supported(opcode::RecvMsg::CODE) {
        return Err("io_uring lacks IORING_OP_RECVMSG".to_string());
    }
    bufs.register(&ring)
        .map_err(|e| format!("IORING_REGISTER_PBUF_RING failed: {e}"))?;
    // Leave nothing registered behind us (the ring closing would also do it).
    ring.submitter()
        .unregister_buf_ring(BGID)
        .map_err(|e| format!("IORING_UNREGISTER_PBUF_RING failed: {e}"))
}

/// `(major, minor)` of the running kernel.
fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Anonymous, page-aligned, zero-filled memory, unmapped on drop unless leaked.
struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Region is plain memory owned by one value; nothing in it is tied to a thread.
unsafe impl Send for Region {}

impl Region {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Self { ptr, len })
    }

    /// Gives up the memory for good: used when the kernel might still write to it.
    fn leak(&mut self) {
        self.len = 0;
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: `ptr`/`len` are exactly one mapping made in `new`, unmapped only here.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

/// A provided buffer ring: `entries` ring slots (`io_uring_buf`, the first one's reserved field
/// doubling as the tail the kernel reads) and one buffer of `BUF_LEN` bytes per slot.
/// Every buffer is either in the ring (the kernel's) or lent out as one [`Lease`].
struct BufRing {
    ring: Region,
    bufs: Region,
    entries: u16,
    /// The tail last published to the kernel (it wraps at 2^16, like the kernel's).
    tail: u16,
}

impl BufRing {
    /// Allocates the ring and its buffers and puts every buffer in the ring.
    fn new(entries: u16) -> io::Result<Self> {
        if !entries.is_power_of_two() || usize::from(entries) > MAX_RING_ENTRIES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer ring size must be a power of two up to 32768",
            ));
        }
        let n = usize::from(entries);
        let mut ring = Self {
            ring: Region::new(n * std::mem::size_of::<BufRingEntry>())?,
            bufs: Region::new(n * BUF_STRIDE)?,
            entries,
            tail: 0,
        };
        for bid in 0..entries {
            ring.push(bid);
        }
        Ok(ring)
    }

    /// Registers this ring as buffer group `BGID` of `uring`.
    fn register(&self, uring: &IoUring) -> io::Result<()> {
        // SAFETY: the ring memory is `entries` page-aligned `io_uring_buf` slots owned by `self`.
        // Every caller keeps `self` alive until the group is unregistered or `uring` is gone
        // (UringReceiver: field order and its Drop; uring_supported: unregisters explicitly).
        unsafe {
            uring.submitter().register_buf_ring_with_flags(
                self.ring.ptr.as_ptr() as u64,
                self.entries,
                BGID,
                0,
            )
        }
    }

    /// Puts buffer `bid` back at the tail and publishes it to the kernel.
    fn push(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (self.entries - 1));
        let base = self.ring.ptr.as_ptr().cast::<BufRingEntry>();
        // SAFETY: `slot` < entries, so the entry lies inside the ring mapping. The kernel reads
        // only slots between its head and the published tail; this one is past the tail until
        // the store below, so nobody else touches it. Setting addr/len/bid leaves the reserved
        // field (the tail, in slot 0) alone.
        let entry = unsafe { &mut *base.add(slot) };
        // SAFETY: `bid` < entries (checked by `lease`, or from the range in `new`), so the
        // buffer lies inside the buffer mapping.
        let addr = unsafe { self.bufs.ptr.as_ptr().add(usize::from(bid) * BUF_STRIDE) };
        entry.set_addr(addr as u64);
        entry.set_len(BUF_LEN as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: `base` is the ring's first entry, initialised (zeroed by mmap, filled above);
        // its tail field is a naturally aligned u16 the kernel only reads, so it may be viewed as
        // an AtomicU16. Release orders the slot writes before the kernel sees the new tail.
        unsafe {
            let tail = BufRingEntry::tail(base).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Lends buffer `bid`, holding `len` bytes written by the kernel, until the lease drops.
    fn lease(&mut self, bid: u16, len: usize) -> io::Result<Lease<'_>> {
        if bid >= self.entries {
            return Err(io::Error::other(format!(
                "kernel returned unknown buffer id {bid}"
            )));
        }
        Ok(Lease {
            len: len.min(BUF_LEN),
            bid,
            ring: self,
        })
    }

    /// Asks the CPU to bring the bytes of a completion's buffer into its cache.
    fn prefetch(&self, cqe: &cqueue::Entry) {
        let (Some(bid), Ok(len)) = (
            cqueue::buffer_select(cqe.flags()),
            usize::try_from(cqe.result()),
        ) else {
            return;
        };
        if bid >= self.entries {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let base = self
                .bufs
                .ptr
                .as_ptr()
                .wrapping_add(usize::from(bid) * BUF_STRIDE);
            for at in (0..len.min(BUF_LEN)).step_by(64) {
                // SAFETY: a prefetch is a hint: it reads nothing and cannot fault.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        base.wrapping_add(at).cast::<i8>(),
                    );
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (bid, len);
    }

    fn leak(&mut self) {
        self.ring.leak();
        self.bufs.leak();
    }
}

/// One buffer the kernel filled, lent to the receiver; dropping it returns it to the ring.
struct Lease<'r> {
    ring: &'r mut BufRing,
    bid: u16,
    len: usize,
}

impl Lease<'_> {
    fn bytes(&self) -> &[u8] {
        // SAFETY: bid < entries (checked in `lease`) and len <= BUF_LEN <= BUF_STRIDE, so the
        // slice lies in the buffer mapping. The kernel filled this buffer and took it off the
        // ring; it writes it again only after `Drop` puts it back, which needs `&mut` this lease.
        unsafe {
            std::slice::from_raw_parts(
                self.ring
                    .bufs
                    .ptr
                    .as_ptr()
                    .add(usize::from(self.bid) * BUF_STRIDE),
                self.len,
            )
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.ring.push(self.bid);
    }
}

/// The `msghdr` the multishot receive was armed with: the kernel reads only its name and
/// control lengths (`NAME_LEN`, `CONTROL_LEN`), the ones [`RecvOut::parse`] splits at.
struct MsgHdr(Box<libc::msghdr>);

// SAFETY: the header carries no pointers (name/control/iov are null; only lengths are set).
unsafe impl Send for MsgHdr {}

impl MsgHdr {
    fn new() -> Self {
        // SAFETY: msghdr is plain old data; zero is its documented empty value.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_namelen = NAME_LEN as libc::socklen_t;
        hdr.msg_controllen = CONTROL_LEN as _;
        Self(Box::new(hdr))
    }
}

/// An io_uring receiver for one socket. Created once per shard, then moved into the shard
/// thread; the first `recv` binds the ring to that thread (single issuer).
pub struct UringReceiver {
    // Drop order matters: `Drop` cancels the receive, then `ring` closes (the kernel lets go of
    // the buffer ring), then the buffers are unmapped, then the socket closes.
    ring: IoUring,
    bufs: BufRing,
    msghdr: MsgHdr,
    socket: UdpSocket,
    /// The ring was created disabled and still waits for its issuer thread.
    disabled: bool,
    /// The multishot receive is queued or running.
    armed: bool,
    drops: super::socket::DropCount,
    /// Times the multishot stopped because every buffer was out (ENOBUFS).
    exhausted: u64,
    /// Completions [`RecvOut::parse`] refused.
    unparsed: u64,
    /// An error from a completion, reported by the next `recv` (this one delivered data).
    deferred: Option<io::Error>,
    setup: &'static str,
    /// Completions to wait for (batch wait), where the kernel has `IORING_FEAT_MIN_TIMEOUT`.
    coalesce: Option<usize>,
    /// Completions taken from the queue, being handled.
    pending: Vec<cqueue::Entry>,
}

impl UringReceiver {
    /// Builds the ring and a buffer ring of `ring_entries` buffers (a power of two) for `socket`.
    pub fn new(socket: UdpSocket, ring_entries: u16) -> io::Result<Self> {
        let parts = Parts::new(ring_entries)?;
        Ok(parts.attach(socket))
    }

    /// Which ring set-up flags the kernel accepted, for the start-up log.
    pub fn setup(&self) -> &'static str {
        self.setup
    }

    fn arm(&mut self) -> io::Result<()> {
        let sqe =
            opcode::RecvMsgMulti::new(types::Fd(self.socket.as_raw_fd()), &*self.msghdr.0, BGID)
                .build()
                .user_data(RECV_TAG);
        // SAFETY: the SQE points at `self.msghdr` (boxed, so its address is stable) and the
        // socket and buffer group, all owned by `self` and kept until the ring is closed or
        // the receive is cancelled in `Drop`.
        unsafe { self.ring.submission().push(&sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        self.armed = true;
        Ok(())
    }

    /// Hands every completion already posted to `sink`; returns the datagram count.
    fn drain(&mut self, sink: &mut dyn FnMut(Datagram<'_>)) -> io::Result<usize> {
        let mut n = 0;
        let mut failure = None;
        let mut cq = self.ring.completion();
        // Without DEFER_TASKRUN completions may keep arriving while we drain; stop after a few
        // passes so one call stays bounded (what is left waits for the next call).
        for _ in 0..4 {
            if cq.is_empty() {
                break;
            }
            // Taken off the queue first, so each buffer can be prefetched while the one
            // `AHEAD` before it is handled (`--sink null --balance cpu` at 50,000
            // datagrams/s, 2-core VM, 6 alternating runs: about 5 % less CPU, with the
            // parse below).
            self.pending.clear();
            self.pending.extend(&mut cq);
            cq.sync();
            for cqe in &self.pending[..self.pending.len().min(AHEAD)] {
                self.bufs.prefetch(cqe);
            }
            for (i, cqe) in self.pending.iter().enumerate() {
                if let Some(next) = self.pending.get(i + AHEAD) {
                    self.bufs.prefetch(next);
                }
                if cqe.user_data() != RECV_TAG {
                    continue;
                }
                let flags = cqe.flags();
                if !cqueue::more(flags) {
                    self.armed = false;
                }
                let res = cqe.result();
                if res < 0 {
                    match -res {
                        libc::ENOBUFS => self.exhausted += 1,
                        libc::ECANCELED => {}
                        errno => failure = Some(io::Error::from_raw_os_error(errno)),
                    }
                    continue;
                }
                let Some(bid) = cqueue::buffer_select(flags) else {
                    failure = Some(io::Error::other("io_uring completion without a buffer"));
                    continue;
                };
                // An unknown buffer id fails this call (after the rest are handled): the
                // completions are off the queue now, so returning here would lose them.
                let lease = match self.bufs.lease(bid, res as usize) {
                    Ok(lease) => lease,
                    Err(e) => {
                        failure = Some(e);
                        continue;
                    }
                };
                let Some(out) = RecvOut::parse(lease.bytes()) else {
                    self.unparsed += 1;
                    continue;
                };
                let control = parse_control(out.control);
                if let Some(d) = control.drops {
                    self.drops.note(d);
                }
                sink(Datagram {
                    data: out.payload,
                    source: source_addr(out.name),
                    truncated: out.truncated,
                    received_us: control.received_us,
                });
                n += 1;
                // `lease` drops here: the buffer goes back to the kernel.
            }
        }
        drop(cq);
        if !self.armed {
            self.arm()?;
        }
        if let Some(e) = failure {
            if n == 0 {
                return Err(e);
            }
            self.deferred = Some(e);
        }
        Ok(n)
    }

    /// Cancels the multishot receive and waits (bounded) for its last completion, so the
    /// kernel no longer writes into the buffers. Returns whether that was confirmed.
    fn quiesce(&mut self) -> bool {
        if self.disabled || !self.armed {
            return true;
        }
        let cancel = opcode::AsyncCancel::new(RECV_TAG)
            .build()
            .user_data(CANCEL_TAG);
        // SAFETY: a cancel SQE carries no pointers.
        if unsafe { self.ring.submission().push(&cancel) }.is_err() {
            return false;
        }
        let ts = types::Timespec::from(Duration::from_millis(10));
        for _ in 0..100 {
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
                Err(_) => return false,
            }
            for cqe in self.ring.completion() {
                if cqe.user_data() == RECV_TAG && !cqueue::more(cqe.flags()) {
                    self.armed = false;
                }
            }
            if !self.armed {
                return true;
            }
        }
        false
    }
}

impl Drop for UringReceiver {
    fn drop(&mut self) {
        if !self.quiesce() {
            // The kernel may still write into the buffers: keeping them mapped for the rest of
            // the process is the sound choice (a few MiB, once per shard at most).
            self.bufs.leak();
        }
    }
}

/// The ring and buffer ring before a socket is attached, so `recv::open` can fall back to
/// recvmmsg with the socket still in hand when these fail.
pub(super) struct Parts {
    ring: IoUring,
    bufs: BufRing,
    setup: &'static str,
}

impl Parts {
    pub(super) fn new(ring_entries: u16) -> io::Result<Self> {
        let bufs = BufRing::new(ring_entries)?;
        // Room for a completion per buffer plus the re-arm and cancel ones.
        let cq = u32::from(ring_entries) * 2;
        let (ring, setup) = build_ring(cq)?;
        bufs.register(&ring)?;
        Ok(Self { ring, bufs, setup })
    }

    pub(super) fn attach(self, socket: UdpSocket) -> UringReceiver {
        let drops = super::socket::DropCount::new(&socket);
        // Room for a whole completion queue, so draining one never allocates.
        let cq_entries = self.ring.params().cq_entries() as usize;
        // A quarter of the buffers: the rest stay free for what arrives meanwhile.
        let coalesce = self
            .ring
            .params()
            .is_feature_min_timeout()
            .then_some((usize::from(self.bufs.entries) / 4).max(1));
        UringReceiver {
            ring: self.ring,
            bufs: self.bufs,
            msghdr: MsgHdr::new(),
            socket,
            disabled: true,
            armed: false,
            drops,
            exhausted: 0,
            unparsed: 0,
            deferred: None,
            setup: self.setup,
            coalesce,
            pending: Vec::with_capacity(cq_entries),
        }
    }
}

/// Creates the ring with the best set-up flags this kernel accepts (EINVAL = unknown flag).
/// Every variant starts disabled, so the thread that enables it becomes its submitter.
fn build_ring(cq_entries: u32) -> io::Result<(IoUring, &'static str)> {
    let mut first = None;
    for setup in ["single_issuer+defer_taskrun", "coop_taskrun", "plain"] {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq_entries).setup_r_disabled();
        match setup {
            "single_issuer+defer_taskrun" => {
                builder.setup_single_issuer().setup_defer_taskrun();
            }
            "coop_taskrun" => {
                builder.setup_coop_taskrun();
            }
            _ => {}
        }
        match builder.build(SQ_ENTRIES) {
            Ok(ring) => return Ok((ring, setup)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                first.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(first.unwrap_or_else(|| io::Error::other("io_uring_setup failed")))
}

/// One multishot recvmsg completion's buffer, split as the kernel wrote it (see the module
/// docs): the `io_uring_recvmsg_out` header, then the source address, the control data and
/// the payload, each cut to what the kernel reports having written.
struct RecvOut<'a> {
    name: &'a [u8],
    control: &'a [u8],
    payload: &'a [u8],
    /// The datagram was longer than the payload room (`MSG_TRUNC`).
    truncated: bool,
}

impl<'a> RecvOut<'a> {
    /// What `io_uring::types::RecvMsgOut::parse` does for a buffer of our layout (the same
    /// clamps), with our fixed name and control sizes, so it is inlined into the shard's
    /// loop (that one is another crate's, not inlined, and returns its value through
    /// memory). `None` when the buffer is shorter than the header and the fixed name and control
    /// areas (the kernel never writes less).
    #[inline]
    fn parse(buf: &'a [u8]) -> Option<Self> {
        let head = buf.get(..OUT_HEADER_LEN + NAME_LEN + CONTROL_LEN)?;
        let word = |i: usize| {
            let w = u32::from_ne_bytes([
                head[4 * i],
                head[4 * i + 1],
                head[4 * i + 2],
                head[4 * i + 3],
            ]);
            w as usize
        };
        let (namelen, controllen, payloadlen, flags) = (word(0), word(1), word(2), word(3));
        let name_at = OUT_HEADER_LEN;
        let control_at = name_at + NAME_LEN;
        let payload_at = control_at + CONTROL_LEN;
        let payload = &buf[payload_at..];
        Some(Self {
            name: &head[name_at..name_at + namelen.min(NAME_LEN)],
            control: &head[control_at..control_at + controllen.min(CONTROL_LEN)],
            payload: &payload[..payloadlen.min(payload.len())],
            truncated: flags & (libc::MSG_TRUNC as usize) != 0,
        })
    }
}

/// Converts the raw `sockaddr_in`/`sockaddr_in6` bytes the kernel wrote into a `SocketAddr`
/// (unspecified `0.0.0.0:0` if it is neither).
fn source_addr(name: &[u8]) -> SocketAddr {
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let Some(family) = name.get(0..2) else {
        return unknown;
    };
    let family = libc::c_int::from(u16::from_ne_bytes([family[0], family[1]]));
    let port = |n: &[u8]| u16::from_be_bytes([n[2], n[3]]);
    match family {
        libc::AF_INET if name.len() >= 8 => {
            let ip = Ipv4Addr::new(name[4], name[5], name[6], name[7]);
            SocketAddr::from((ip, port(name)))
        }
        libc::AF_INET6 if name.len() >= 24 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&name[8..24]);
            SocketAddr::from((Ipv6Addr::from(octets), port(name)))
        }
        _ => unknown,
    }
}

impl Receiver for UringReceiver {
    fn recv(&mut self, timeout: Duration, sink: &mut dyn FnMut(Datagram<'_>)) -> io::Result<usize> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        if self.disabled {
            self.ring.submitter().register_enable_rings()?;
            self.disabled = false;
        }
        if !self.armed {
            self.arm()?;
        }
        // One enter submits a pending re-arm, runs deferred work and waits for a completion
        // (a zero timeout only collects what is ready). Where the kernel has the batch wait
        // (`IORING_FEAT_MIN_TIMEOUT`, 6.12), it waits up to `COALESCE_US` for `coalesce`
        // completions and then returns with whatever is there, so a busy shard wakes once per
        // batch of datagrams rather than once per datagram; a datagram waits at most that long
        // before decoding (its arrival time comes from the kernel, so only batch ages shift).
        let ts = types::Timespec::from(timeout);
        let (want, args) = match self.coalesce {
            Some(n) if !timeout.is_zero() => (
                n,
                types::SubmitArgs::new()
                    .min_wait_usec(COALESCE_US)
                    .timespec(&ts),
            ),
            _ => (1, types::SubmitArgs::new().timespec(&ts)),
        };
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => {}
            // ETIME: nothing arrived in time; EINTR: a signal; EBUSY: completions are waiting
            // in the kernel's overflow list and the drain below makes room for them.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        self.drain(sink)
    }

    fn kernel_drops(&self) -> Option<u64> {
        self.drops.get()
    }

    fn refresh_kernel_drops(&mut self) {
        self.drops.refresh();
    }

    fn name(&self) -> &'static str {
        "uring"
    }

    fn health(&self) -> super::Health {
        super::Health {
            ring_exhausted: self.exhausted,
            unparsed: self.unparsed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::recv::socket::{bind_reuseport, Control};

    /// Skips (returns None, printing why) where io_uring cannot run, else binds a receiver
    /// with `entries` buffers on a fresh loopback port.
    fn receiver(entries: u16) -> Option<(UringReceiver, SocketAddr)> {
        if let Err(why) = uring_supported() {
            eprintln!("skipped: io_uring unavailable: {why}");
            return None;
        }
        let bound = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let addr = bound.socket.local_addr().unwrap();
        Some((UringReceiver::new(bound.socket, entries).unwrap(), addr))
    }

    /// Receives until `want` datagrams arrived or `rounds` calls passed.
    fn collect(rx: &mut UringReceiver, want: usize, rounds: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut got = Vec::new();
        for _ in 0..rounds {
            rx.recv(Duration::from_millis(200), &mut |d| {
                assert!(!d.truncated);
                got.push((d.data.to_vec(), d.source));
            })
            .unwrap();
            if got.len() >= want {
                break;
            }
        }
        got
    }

    #[test]
    fn receives_a_batch_with_sources() {
        let Some((mut rx, addr)) = receiver(32) else {
            return;
        };
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..20u8 {
            tx.send_to(&[i; 10], addr).unwrap();
        }
        let got = collect(&mut rx, 20, 10);
        assert!(got
            .iter()
            .all(|(d, s)| d.len() == 10 && *s == tx.local_addr().unwrap()));
        let firsts: Vec<u8> = got.iter().map(|(d, _)| d[0]).collect();
        assert_eq!(firsts, (0..20).collect::<Vec<u8>>());
        assert_eq!(
            rx.recv(Duration::ZERO, &mut |_| panic!("nothing queued"))
                .unwrap(),
            0
        );
        assert_eq!(rx.name(), "uring");
    }

    #[test]
    fn rearms_when_the_buffer_ring_runs_dry() {
        // 8 buffers, 100 datagrams: the multishot stops with ENOBUFS at least 12 times and must
        // be re-armed each time; nothing may be lost or reordered (the socket holds the rest).
        let Some((mut rx, addr)) = receiver(8) else {
            return;
        };
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..100u32 {
            tx.send_to(&i.to_be_bytes(), addr).unwrap();
        }
        let mut got = Vec::new();
        let mut rounds = 0;
        while got.len() < 100 && rounds < 200 {
            rounds += 1;
            let n = rx
                .recv(Duration::from_millis(200), &mut |d| {
                    got.push(u32::from_be_bytes(d.data.try_into().unwrap()));
                })
                .unwrap();
            // With deferred task work nothing lands while we drain, so a call sees one ring's
            // worth at most; other set-ups may refill returned buffers mid-drain.
            if rx.setup() == "single_issuer+defer_taskrun" {
                assert!(n <= 8, "one drain cannot exceed the ring ({n})");
            }
        }
        assert_eq!(got, (0..100).collect::<Vec<u32>>());
        assert!(rounds >= 13, "took only {rounds} rounds");
        assert!(
            rx.health().ring_exhausted >= 12,
            "exhausted {}",
            rx.health().ring_exhausted
        );
        // Still armed and working after all that.
        tx.send_to(b"again", addr).unwrap();
        let again = collect(&mut rx, 1, 10);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].0, b"again");
    }

    #[test]
    fn works_after_moving_to_another_thread() {
        // Built here, used in a shard thread: the single-issuer ring must accept that thread.
        let Some((mut rx, addr)) = receiver(16) else {
            return;
        };
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let handle = std::thread::spawn(move || {
            let got = collect(&mut rx, 5, 20);
            // Only the issuer thread can cancel the receive, so the drop belongs here too.
            let quiet = rx.quiesce();
            (got.len(), quiet)
        });
        for i in 0..5u8 {
            tx.send_to(&[i], addr).unwrap();
        }
        let (n, quiet) = handle.join().unwrap();
        assert_eq!(n, 5);
        assert!(quiet);
    }

    #[test]
    fn flags_truncated_datagrams() {
        let Some((mut rx, addr)) = receiver(8) else {
            return;
        };
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&vec![7u8; MAX_DATAGRAM + 100], addr).unwrap();
        tx.send_to(&[1u8; MAX_DATAGRAM], addr).unwrap();
        let mut seen = Vec::new();
        for _ in 0..10 {
            rx.recv(Duration::from_millis(200), &mut |d| {
                seen.push((d.data.len(), d.truncated));
            })
            .unwrap();
            if seen.len() == 2 {
                break;
            }
        }
        assert_eq!(seen, vec![(MAX_DATAGRAM, true), (MAX_DATAGRAM, false)]);
    }

    #[test]
    fn zero_timeout_does_not_block_and_drop_is_clean() {
        let Some((mut rx, _addr)) = receiver(8) else {
            return;
        };
        let start = std::time::Instant::now();
        for _ in 0..100 {
            assert_eq!(
                rx.recv(Duration::ZERO, &mut |_| panic!("no data")).unwrap(),
                0
            );
        }
        // Not a timing assertion on the path, just that 100 polls did not each wait for data.
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(rx.quiesce());
    }

    /// A completion's buffer splits at the fixed offsets, each part cut to the length the
    /// kernel reported (the payload also to what the buffer holds); too short is `None`.
    #[test]
    fn splits_a_completion_buffer() {
        let payload_at = OUT_HEADER_LEN + NAME_LEN + CONTROL_LEN;
        let mut buf = vec![0u8; payload_at + 10];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = i as u8;
        }
        let words = [16u32, 24, 500, libc::MSG_TRUNC as u32];
        for (i, w) in words.iter().enumerate() {
            buf[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
        }
        let out = RecvOut::parse(&buf).unwrap();
        assert_eq!(out.name, &buf[OUT_HEADER_LEN..OUT_HEADER_LEN + 16]);
        let control_at = OUT_HEADER_LEN + NAME_LEN;
        assert_eq!(out.control, &buf[control_at..control_at + 24]);
        assert_eq!(out.payload, &buf[payload_at..]);
        assert!(out.truncated);
        // Lengths past the fixed areas are cut to them; no MSG_TRUNC, not truncated.
        let words = [1000u32, 1000, 3, 0];
        for (i, w) in words.iter().enumerate() {
            buf[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
        }
        let out = RecvOut::parse(&buf).unwrap();
        assert_eq!((out.name.len(), out.control.len()), (NAME_LEN, CONTROL_LEN));
        assert_eq!(out.payload, &buf[payload_at..payload_at + 3]);
        assert!(!out.truncated);
        assert!(RecvOut::parse(&buf[..payload_at])
            .unwrap()
            .payload
            .is_empty());
        assert!(RecvOut::parse(&buf[..payload_at - 1]).is_none());
    }

    #[test]
    fn parses_source_addresses_and_control_data() {
        let mut v4 = [0u8; NAME_LEN];
        v4[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&2055u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(source_addr(&v4[..16]), "10.1.2.3:2055".parse().unwrap());
        let mut v6 = [0u8; 28];
        v6[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&9995u16.to_be_bytes());
        v6[23] = 1;
        assert_eq!(source_addr(&v6), "[::1]:9995".parse().unwrap());
        assert_eq!(source_addr(&[]), SocketAddr::from(([0, 0, 0, 0], 0)));

        // SO_RXQ_OVFL carrying 42, then SO_TIMESTAMPNS, at an odd offset.
        let hdr = std::mem::size_of::<libc::cmsghdr>();
        let mut control = vec![0u8; 1 + hdr + 8 + hdr + 16];
        let put = |control: &mut Vec<u8>, at: usize, len: usize, kind: libc::c_int| {
            // SAFETY: `control` has room for a cmsghdr at `at`; write_unaligned needs no
            // alignment.
            unsafe {
                control
                    .as_mut_ptr()
                    .add(at)
                    .cast::<libc::cmsghdr>()
                    .write_unaligned(libc::cmsghdr {
                        cmsg_len: (hdr + len) as _,
                        cmsg_level: libc::SOL_SOCKET,
                        cmsg_type: kind,
                    });
            }
        };
        put(&mut control, 1, 4, libc::SO_RXQ_OVFL);
        control[1 + hdr..1 + hdr + 4].copy_from_slice(&42u32.to_ne_bytes());
        let ts = 1 + hdr + 8;
        put(&mut control, ts, 16, libc::SO_TIMESTAMPNS);
        control[ts + hdr..ts + hdr + 8].copy_from_slice(&1_700_000_000i64.to_ne_bytes());
        control[ts + hdr + 8..ts + hdr + 16].copy_from_slice(&123_456_789i64.to_ne_bytes());
        let got = parse_control(&control[1..]);
        assert_eq!(got.drops, Some(42));
        assert_eq!(got.received_us, Some(1_700_000_000_123_456));
        // Cut short: the timestamp's data is missing, the drop count is still read.
        let cut = parse_control(&control[1..ts + hdr + 8]);
        assert_eq!((cut.drops, cut.received_us), (Some(42), None));
        assert_eq!(parse_control(&control[1..hdr]), Control::default());
    }
}
