//! The UDP socket each shard owns: SO_REUSEPORT so every shard binds the same address, a
//! large receive buffer, and SO_RXQ_OVFL so the kernel reports its drops.

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
    socket.bind(&addr.into())?;
    let granted = socket.recv_buffer_size()?;
    Ok(BoundSocket {
        socket: socket.into(),
        rcvbuf: granted,
    })
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
