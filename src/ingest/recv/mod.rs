//! Datagram receive: one interface, two kernel paths behind it.
//!
//! A shard owns one [`Receiver`] for its own SO_REUSEPORT socket. The shard loop calls
//! [`Receiver::recv`], which blocks up to a timeout and hands each datagram it got to a
//! callback, borrowed straight from the backend's buffers (no copy, no allocation). The shard
//! never knows which backend it has:
//!
//! - [`mmsg`]: `recvmmsg(2)`, a batch of datagrams per system call; works on every Linux.
//! - [`uring`]: io_uring multishot `RecvMsgMulti` over a provided buffer ring (kernel ≥ 6.0).
//!
//! [`Backend::Auto`] picks io_uring when [`uring_supported`] says the kernel and process allow
//! it and the ring can be built; otherwise it falls back to recvmmsg, and the reason string
//! `open` returns for the start-up log says why (e.g. "recvmmsg: io_uring_setup failed:
//! Operation not permitted" under a container's seccomp profile). Measured on loopback (see
//! `tests::bench_backends_loopback`), io_uring costs the receiving thread about 9% less CPU per
//! datagram than recvmmsg; both keep up with one sender thread.

// The receive backends talk to the kernel through raw system calls and shared buffers: the
// one place besides `crate::sys` where unsafe code is allowed. Every block says why it holds.
#![allow(unsafe_code)]

pub mod mmsg;
pub mod socket;
pub mod uring;

#[cfg(test)]
mod tests;

pub use uring::uring_supported;

/// For tests that run io_uring where the kernel allows it: whether to run them. Where the
/// kernel or process refuses io_uring this prints a loud `SKIPPED` line with the reason, and
/// fails instead when `NFPG_REQUIRE_URING` is set (the CI script sets it: there a skipped
/// io_uring test must not pass silently).
pub fn uring_for_tests(test: &str) -> bool {
    match uring_supported() {
        Ok(()) => true,
        Err(why) if std::env::var_os("NFPG_REQUIRE_URING").is_some() => {
            panic!("{test}: io_uring refused ({why}) and NFPG_REQUIRE_URING is set")
        }
        Err(why) => {
            eprintln!("\n*** SKIPPED io_uring in {test}: {why} (NFPG_REQUIRE_URING=1 makes this fail) ***\n");
            false
        }
    }
}

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Largest UDP payload we accept; larger datagrams are truncated by the kernel and then
/// rejected by the decoder as malformed (a v5 datagram is at most 24 + 30·48 = 1464 bytes).
pub const MAX_DATAGRAM: usize = 9216;

/// Which receive path a shard uses (`--recv`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// io_uring when the kernel supports multishot recvmsg and buffer rings, else recvmmsg.
    Auto,
    /// io_uring multishot recvmsg over a provided buffer ring.
    Uring,
    /// recvmmsg(2) batches.
    Mmsg,
}

/// One received datagram, borrowed from the backend's buffer for the duration of the callback.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    /// The UDP payload. Truncated datagrams (larger than [`MAX_DATAGRAM`]) are delivered with
    /// `truncated` set so the decoder can reject them with a reason.
    pub data: &'a [u8],
    /// The exporter's address and port.
    pub source: SocketAddr,
    /// The kernel cut the datagram to the buffer size.
    pub truncated: bool,
    /// When the kernel received it (SO_TIMESTAMPNS), µs since the Unix epoch; `None` where
    /// the kernel sent no timestamp.
    pub received_us: Option<i64>,
}

/// A receive path bound to one socket.
pub trait Receiver: Send {
    /// Waits up to `timeout` for datagrams and calls `sink` for each one, in arrival order.
    /// Returns how many datagrams were handed over (0 on timeout). A zero timeout polls:
    /// it returns what is already queued without blocking.
    fn recv(&mut self, timeout: Duration, sink: &mut dyn FnMut(Datagram<'_>)) -> io::Result<usize>;

    /// Datagrams the kernel dropped on this socket because its receive buffer was full
    /// (a running total since the socket was opened), when the backend can tell.
    fn kernel_drops(&self) -> Option<u64>;

    /// Re-reads the socket's drop count from /proc/net/udp. SO_RXQ_OVFL only reports drops
    /// with the next datagram that arrives, so drops after the last one would stay unseen;
    /// the shard calls this about once a second and when it stops.
    fn refresh_kernel_drops(&mut self);

    /// Short name for logs and metrics ("uring", "mmsg").
    fn name(&self) -> &'static str;

    /// Running totals of the backend's own troubles (zero where a backend cannot have them).
    fn health(&self) -> Health {
        Health::default()
    }
}

/// What a backend counts about itself, as running totals since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// io_uring: times every provided buffer was in use and the receive had to be re-armed.
    pub ring_exhausted: u64,
    /// io_uring: completions whose message header could not be parsed (the datagram is lost).
    pub unparsed: u64,
}

/// Opens the receive path `backend` on `socket`. `Auto` resolves to the best supported path;
/// the returned string says why, for the start-up log. `batch` is the recvmmsg batch; io_uring
/// gets a buffer ring of [`uring::ring_entries_for`]`(batch)` buffers.
pub fn open(
    backend: Backend,
    socket: std::net::UdpSocket,
    batch: usize,
) -> io::Result<(Box<dyn Receiver>, String)> {
    match backend {
        Backend::Mmsg => Ok((
            Box::new(mmsg::MmsgReceiver::new(socket, batch)?),
            "recvmmsg (forced by --recv mmsg)".to_string(),
        )),
        Backend::Uring => {
            uring_supported().map_err(|why| io::Error::new(io::ErrorKind::Unsupported, why))?;
            let rx = uring::Parts::new(uring::ring_entries_for(batch))?.attach(socket);
            let why = format!("io_uring (forced by --recv uring; {})", rx.setup());
            Ok((Box::new(rx), why))
        }
        Backend::Auto => {
            let parts = uring_supported().and_then(|()| {
                uring::Parts::new(uring::ring_entries_for(batch))
                    .map_err(|e| format!("io_uring set-up failed: {e}"))
            });
            match parts {
                Ok(parts) => {
                    let rx = parts.attach(socket);
                    let why = format!("io_uring (supported by this kernel; {})", rx.setup());
                    Ok((Box::new(rx), why))
                }
                Err(why) => Ok((
                    Box::new(mmsg::MmsgReceiver::new(socket, batch)?),
                    format!("recvmmsg: {why}"),
                )),
            }
        }
    }
}
