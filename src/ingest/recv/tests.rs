//! Tests that run every backend through `open` the same way, and the loopback throughput
//! measurement (`#[ignore]`, prints datagrams/s per backend; run it with `--release`).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::socket::{bind_reuseport, udp_drops_for_socket};
use super::{open, uring_supported, Backend, Receiver};
use crate::obs::host::udp_rcvbuf_errors;

/// The backends this kernel can run, each with a fresh socket, bound to a loopback port with
/// receive buffer `rcvbuf`; io_uring is left out (and the reason printed) where unsupported.
fn backends(rcvbuf: usize) -> Vec<(Box<dyn Receiver>, UdpSocket, SocketAddr)> {
    let mut out = Vec::new();
    let mut kinds = vec![Backend::Mmsg];
    if super::uring_for_tests(module_path!()) {
        kinds.push(Backend::Uring);
    }
    for kind in kinds {
        let bound = bind_reuseport("127.0.0.1:0".parse().unwrap(), rcvbuf).unwrap();
        let addr = bound.socket.local_addr().unwrap();
        let probe = bound.socket.try_clone().unwrap();
        let (rx, _) = open(kind, bound.socket, 64).unwrap();
        out.push((rx, probe, addr));
    }
    out
}

/// Reads until a call returns nothing twice in a row (bounded); returns the count.
fn read_all(rx: &mut dyn Receiver) -> usize {
    let mut total = 0;
    let mut idle = 0;
    for _ in 0..1000 {
        let n = rx.recv(Duration::from_millis(20), &mut |_| {}).unwrap();
        total += n;
        idle = if n == 0 { idle + 1 } else { 0 };
        if idle == 2 {
            break;
        }
    }
    total
}

#[test]
fn overflow_drops_add_up_exactly() {
    const SENT: usize = 1000;
    for (mut rx, socket, addr) in backends(8 << 10) {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let errors_before = udp_rcvbuf_errors().unwrap();
        for i in 0..SENT {
            tx.send_to(&[i as u8; 100], addr).unwrap();
        }
        let received = read_all(rx.as_mut());
        let proc_drops = udp_drops_for_socket(&socket).unwrap();
        let errors_after = udp_rcvbuf_errors().unwrap();
        // SO_RXQ_OVFL rides on the next datagram queued after the drops: send a marker.
        tx.send_to(b"marker", addr).unwrap();
        let marker = read_all(rx.as_mut());
        let ovfl = rx.kernel_drops().unwrap();
        println!(
            "{}: sent {SENT}+1, received {received}+{marker}, dropped {ovfl} (SO_RXQ_OVFL), \
             {proc_drops} (/proc/net/udp), RcvbufErrors +{}",
            rx.name(),
            errors_after - errors_before
        );
        assert!(received > 0 && proc_drops > 0);
        assert_eq!(marker, 1);
        assert_eq!(ovfl, proc_drops);
        assert_eq!(received as u64 + ovfl, SENT as u64);
        // System-wide: other sockets (other tests) may add to it, never take away.
        assert!(errors_after - errors_before >= proc_drops);
    }
}

#[test]
fn every_backend_delivers_payload_and_source() {
    for (mut rx, _socket, addr) in backends(1 << 20) {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..300u16 {
            tx.send_to(&[&i.to_be_bytes()[..], &[0xAB; 1462]].concat(), addr)
                .unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..100 {
            rx.recv(Duration::from_millis(100), &mut |d| {
                assert_eq!(d.source, tx.local_addr().unwrap());
                assert_eq!(d.data.len(), 1464);
                assert!(!d.truncated);
                got.push(u16::from_be_bytes([d.data[0], d.data[1]]));
            })
            .unwrap();
            if got.len() == 300 {
                break;
            }
        }
        assert_eq!(got, (0..300).collect::<Vec<u16>>(), "{}", rx.name());
        assert_eq!(rx.kernel_drops(), None, "{}", rx.name());
    }
}

#[test]
fn auto_picks_uring_where_supported_and_says_why() {
    let bound = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
    let (rx, why) = open(Backend::Auto, bound.socket, 64).unwrap();
    println!("auto: {} ({why})", rx.name());
    match uring_supported() {
        Ok(()) => assert_eq!(rx.name(), "uring"),
        Err(reason) => {
            assert_eq!(rx.name(), "mmsg");
            assert!(why.contains(&reason), "{why}");
        }
    }
    let bound = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
    let forced = open(Backend::Uring, bound.socket, 64);
    assert_eq!(forced.is_ok(), uring_supported().is_ok());
}

/// CPU time the calling thread has used, in ns (/proc/thread-self/schedstat, first field).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What one run measured.
struct Run {
    rate: f64,
    got: u64,
    drops: u64,
    cpu_ns_per_datagram: f64,
}

/// One measurement: `total` datagrams of `size` bytes blasted from one sender thread over
/// loopback; the receiver's wall-clock rate and its own CPU time per datagram.
fn measure(kind: Backend, total: u64, size: usize) -> Run {
    let bound = bind_reuseport("127.0.0.1:0".parse().unwrap(), 8 << 20).unwrap();
    let addr = bound.socket.local_addr().unwrap();
    let (mut rx, _) = open(kind, bound.socket, 64).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let done = done.clone();
        std::thread::spawn(move || {
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let payload = vec![0x55u8; size];
            for _ in 0..total {
                let _ = tx.send_to(&payload, addr);
            }
            done.store(true, Ordering::Release);
        })
    };
    let start = Instant::now();
    let cpu_start = thread_cpu_ns();
    let mut got = 0u64;
    let mut idle = 0;
    while got < total && idle < 10 {
        let n = rx
            .recv(Duration::from_millis(50), &mut |d| {
                std::hint::black_box(d.data);
            })
            .unwrap() as u64;
        got += n;
        if n == 0 && done.load(Ordering::Acquire) {
            idle += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = thread_cpu_ns() - cpu_start;
    sender.join().unwrap();
    Run {
        rate: got as f64 / secs,
        got,
        drops: rx.kernel_drops().unwrap_or(0),
        cpu_ns_per_datagram: cpu as f64 / got.max(1) as f64,
    }
}

#[test]
#[ignore = "throughput measurement; run with --release --ignored --nocapture"]
fn bench_backends_loopback() {
    const TOTAL: u64 = 200_000;
    let mut kinds = vec![Backend::Mmsg];
    if super::uring_for_tests(module_path!()) {
        kinds.push(Backend::Uring);
    }
    for round in 1..=5 {
        // Alternate which backend goes first, so warm-up and drift do not favour one.
        if round % 2 == 0 {
            kinds.reverse();
        }
        for &kind in &kinds {
            let run = measure(kind, TOTAL, 1464);
            println!(
                "round {round} {kind:?}: {:.0} datagrams/s, receiver CPU {:.0} ns/datagram \
                 ({}/{TOTAL} received, {} dropped by the kernel)",
                run.rate, run.cpu_ns_per_datagram, run.got, run.drops
            );
        }
    }
}
