//! Counters of the whole host that say something about nfpg's receive path.

/// `Udp: RcvbufErrors` from /proc/net/snmp: UDP datagrams this network namespace dropped
/// because a socket's receive buffer was full, all sockets together, since boot.
pub fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = udp.next()?;
    let values = udp.next()?;
    let column = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(column)?.parse().ok()
}
