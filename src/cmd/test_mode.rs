//! The original collector's test mode (`--test`): wait up to 5 s for one datagram, decode
//! it, print its first record, store it, exit. For checking a router's set-up by hand.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};

use crate::config::RunArgs;
use std::sync::Arc;
use std::time::Instant;

use crate::decode::hold::Hold;
use crate::decode::netflow::Shared;
use crate::decode::{Decoder, Failure};
use crate::flow::batch::{addr_to_u128, u128_to_addr, Columns, DatagramMeta};
use crate::ingest::recv::{self, socket, Backend};
use crate::store::copy;
use crate::store::db::{open_database, prepare_schema, Schema};
use crate::store::writer::{PgSink, Sink};

fn fmt_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

pub fn test_mode(args: &RunArgs) -> Result<()> {
    let listen = SocketAddr::new(args.listen, args.port);
    let bound = socket::bind_reuseport(listen, 1 << 20)?;
    let (mut rx, _) = recv::open(Backend::Mmsg, bound.socket, 1)?;
    println!("waiting up to 5 s for one datagram on udp {listen} ...");
    // v9/IPFIX: templates may come in datagrams of their own; keep reading (within the 5 s)
    // until a datagram yields flows.
    let shared = Arc::new(Shared::new(
        Hold::new(1 << 20, Duration::from_secs(5)),
        args.sampling_override.clone(),
        Arc::default(),
    ));
    let mut decoder = Decoder::new(shared);
    let mut batch = Columns::with_capacity(1 << 16);
    let mut outcome: Option<Result<u16, String>> = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = 0usize;
    while !matches!(outcome, Some(Ok(n)) if n > 0) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let received_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        rx.recv(left, &mut |d| {
            if matches!(outcome, Some(Ok(n)) if n > 0) {
                return;
            }
            seen += 1;
            println!("received {} bytes from {}", d.data.len(), d.source);
            let meta = DatagramMeta {
                exporter: addr_to_u128(d.source.ip()),
                received_us,
            };
            outcome = Some(
                decoder
                    .datagram(d.data, &meta, &mut batch)
                    .map_err(|e| match e {
                        Failure::Fault(f) => f.to_string(),
                        Failure::NoRoom(n) => format!("{n} records do not fit"),
                    }),
            );
            while decoder.has_released() {
                if let Ok(Some(n)) = decoder.released(&mut batch) {
                    if n > 0 {
                        outcome = Some(Ok(n));
                    }
                } else {
                    break;
                }
            }
        })?;
    }
    match outcome {
        None => bail!(
            "no datagram within 5 s: check the router's flow-export destination and port {}",
            args.port
        ),
        Some(Err(e)) => bail!("the datagram is not NetFlow nfpg can decode: {e}"),
        Some(Ok(0)) => bail!(
            "{seen} datagram(s) in 5 s, none with flows nfpg could decode yet (v9/IPFIX: \
             templates not seen; routers resend them every few minutes)"
        ),
        Some(Ok(_)) => {}
    }
    let d = batch.datagrams[0];
    println!(
        "NetFlow v{} from {}: {} flows, sequence {}, engine {}/{}, sampling {}",
        d.version,
        u128_to_addr(d.exporter),
        d.count,
        d.sequence,
        d.engine_type,
        d.engine_id,
        d.sampling_interval
    );
    println!(
        "first record: {}:{} -> {}:{} protocol {} packets {} bytes {} start {} end {}",
        u128_to_addr(batch.src_addr[0]),
        batch.src_port[0],
        u128_to_addr(batch.dst_addr[0]),
        batch.dst_port[0],
        batch.protocol[0],
        batch.packets[0],
        batch.bytes[0],
        fmt_ms(batch.flow_start_ms[0]),
        fmt_ms(batch.flow_end_ms[0]),
    );
    let schema = Schema::new(&args.db.schema)?;
    let database = open_database(&args.db.target())?;
    prepare_schema(&database.conninfo, &schema)?;
    let mut data = Vec::new();
    let shape = copy::encode_copy([&batch], &mut data);
    let marker = crate::store::spool::Marker {
        writer: crate::store::writer::new_marker_writer(),
        seq: 0,
    };
    PgSink::new(&database.conninfo, &schema)
        .with_instance(&args.instance_name())
        .write_copy(&data, shape, batch.len(), marker, 0)?;
    println!("stored {} flows in {}.flows", batch.len(), schema.name());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_times() {
        assert_eq!(super::fmt_ms(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(
            super::fmt_ms(1_794_525_571_081),
            "2026-11-12 23:19:31.081 UTC"
        );
        assert_eq!(
            super::fmt_ms(951_782_400_000),
            "2000-02-29 00:00:00.000 UTC"
        );
    }
}
