//! recvmmsg(2) receive path: up to `batch` datagrams per system call into buffers allocated
//! once at start. Used where io_uring is missing or forced with `--recv mmsg`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::socket::{parse_control, sockaddr_to_std, CONTROL_LEN};
use super::{Datagram, Receiver, MAX_DATAGRAM};

/// A recvmmsg receiver. The iovecs and message headers point into `bufs`, `addrs` and
/// `control`, which are allocated once and never resized, so the pointers stay valid for the
/// receiver's life even if the struct itself moves.
pub struct MmsgReceiver {
    socket: UdpSocket,
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    control: Vec<[u64; CONTROL_LEN / 8]>,
    _iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    drops: super::socket::DropCount,
}

// SAFETY: the raw pointers inside `iovecs`/`headers` point only into buffers this struct owns;
// moving the whole receiver to another thread moves their only user with them.
unsafe impl Send for MmsgReceiver {}

impl MmsgReceiver {
    pub fn new(socket: UdpSocket, batch: usize) -> io::Result<Self> {
        let batch = batch.clamp(1, 1024);
        socket.set_nonblocking(true)?;
        let mut bufs = vec![0u8; batch * MAX_DATAGRAM];
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let mut addrs = vec![unsafe { std::mem::zeroed::<libc::sockaddr_storage>() }; batch];
        let mut control = vec![[0u64; CONTROL_LEN / 8]; batch];
        let mut iovecs: Vec<libc::iovec> = bufs
            .chunks_exact_mut(MAX_DATAGRAM)
            .map(|chunk| libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: MAX_DATAGRAM,
            })
            .collect();
        let headers = (0..batch)
            .map(|i| {
                // SAFETY: msghdr is plain old data; zero is its documented empty value.
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
                hdr.msg_iov = &mut iovecs[i];
                hdr.msg_iovlen = 1;
                hdr.msg_control = control[i].as_mut_ptr().cast();
                hdr.msg_controllen = CONTROL_LEN;
                libc::mmsghdr {
                    msg_hdr: hdr,
                    msg_len: 0,
                }
            })
            .collect();
        let drops = super::socket::DropCount::new(&socket);
        Ok(Self {
            socket,
            bufs,
            addrs,
            control,
            _iovecs: iovecs,
            headers,
            drops,
        })
    }

    /// One non-blocking recvmmsg; returns the number of datagrams or WouldBlock.
    fn recv_now(&mut self) -> io::Result<usize> {
        for hdr in &mut self.headers {
            hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            hdr.msg_hdr.msg_controllen = CONTROL_LEN;
            hdr.msg_hdr.msg_flags = 0;
        }
        // SAFETY: every header points at buffers owned by `self` with the lengths set above;
        // the kernel writes at most those lengths. MSG_DONTWAIT keeps the call non-blocking.
        let n = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                self.headers.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd on the stack, count 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        match rc {
            r if r < 0 => {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
            0 => Ok(false),
            _ => Ok(true),
        }
    }
}

/// A control buffer as bytes (it is `u64`s only for the alignment `cmsghdr` needs).
fn control_bytes(words: &[u64; CONTROL_LEN / 8]) -> [u8; CONTROL_LEN] {
    let mut out = [0u8; CONTROL_LEN];
    for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    out
}

impl Receiver for MmsgReceiver {
    fn recv(&mut self, timeout: Duration, sink: &mut dyn FnMut(Datagram<'_>)) -> io::Result<usize> {
        let n = match self.recv_now() {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if timeout.is_zero() || !self.wait_readable(timeout)? {
                    return Ok(0);
                }
                match self.recv_now() {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) =>
                    {
                        return Ok(0)
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
            Err(e) => return Err(e),
        };
        for i in 0..n {
            let hdr = &self.headers[i];
            let len = (hdr.msg_len as usize).min(MAX_DATAGRAM);
            let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            #[allow(clippy::unnecessary_cast)] // socklen_t on musl
            let used = (hdr.msg_hdr.msg_controllen as usize).min(CONTROL_LEN);
            let control = parse_control(&control_bytes(&self.control[i])[..used]);
            if let Some(d) = control.drops {
                self.drops.note(d);
            }
            let source = sockaddr_to_std(&self.addrs[i])
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            let start = i * MAX_DATAGRAM;
            sink(Datagram {
                data: &self.bufs[start..start + len],
                source,
                truncated,
                received_us: control.received_us,
            });
        }
        Ok(n)
    }

    fn kernel_drops(&self) -> Option<u64> {
        self.drops.get()
    }

    fn refresh_kernel_drops(&mut self) {
        self.drops.refresh();
    }

    fn name(&self) -> &'static str {
        "mmsg"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receives_a_batch_with_sources() {
        let bound =
            super::super::socket::bind_reuseport("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let addr = bound.socket.local_addr().unwrap();
        let mut rx = MmsgReceiver::new(bound.socket, 8).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..20u8 {
            tx.send_to(&[i; 10], addr).unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..10 {
            rx.recv(Duration::from_millis(200), &mut |d| {
                assert_eq!(d.source, tx.local_addr().unwrap());
                got.push(d.data[0]);
            })
            .unwrap();
            if got.len() == 20 {
                break;
            }
        }
        assert_eq!(got, (0..20).collect::<Vec<u8>>());
        assert_eq!(
            rx.recv(Duration::ZERO, &mut |_| panic!("nothing queued"))
                .unwrap(),
            0
        );
    }
}
