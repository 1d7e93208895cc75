//! Must show 5: the binary COPY encoder round-trips through PostgreSQL itself: IPv4 and IPv6
//! `inet`, times around the 2000 epoch and across the uptime wrap, counters at their maximum.

mod common;

use nfpg::flow::batch::{addr_to_u128, Columns, DatagramInfo, DatagramMeta};
use nfpg::store::copy;
use nfpg::store::db::{migrate, Schema};
use std::io::Write;
use std::net::IpAddr;

const PG_EPOCH_MS: i64 = 946_684_800_000;

fn push_flow(b: &mut Columns, dg: usize, start_ms: i64, src: &str, dst: &str, max: bool) {
    let v = |x: u32| if max { x } else { 1 };
    b.flow_start_ms.push(start_ms);
    b.flow_end_ms.push(start_ms + 1);
    b.src_addr.push(addr_to_u128(src.parse().unwrap()));
    b.dst_addr.push(addr_to_u128(dst.parse().unwrap()));
    b.next_hop.push(addr_to_u128("0.0.0.0".parse().unwrap()));
    b.src_port.push(if max { u16::MAX } else { 0 });
    b.dst_port.push(if max { u16::MAX } else { 0 });
    b.protocol.push(if max { u8::MAX } else { 0 });
    b.tcp_flags.push(if max { u8::MAX } else { 0 });
    b.tos.push(if max { u8::MAX } else { 0 });
    b.input_if.push(v(u32::MAX));
    b.output_if.push(v(u32::MAX));
    b.packets.push(u64::from(v(u32::MAX)));
    b.bytes.push(u64::from(v(u32::MAX)));
    b.src_as.push(v(u32::MAX));
    b.dst_as.push(v(u32::MAX));
    b.src_mask.push(if max { 32 } else { 0 });
    b.dst_mask.push(if max { 128 } else { 0 });
    // max rows carry every optional field at its largest; the others none (all NULL).
    b.present.push(if max { (1 << 20) - 1 } else { 0 });
    b.direction.push(if max { u8::MAX } else { 0 });
    b.end_reason.push(if max { u8::MAX } else { 0 });
    b.vlan.push(if max { u16::MAX } else { 0 });
    b.mpls_label.push(v(u32::MAX));
    b.icmp_type.push(if max { u16::MAX } else { 0 });
    b.post_nat_src
        .push(addr_to_u128("198.51.100.7".parse().unwrap()));
    b.post_nat_dst
        .push(addr_to_u128("2001:db8::99".parse().unwrap()));
    b.post_nat_src_port.push(if max { u16::MAX } else { 0 });
    b.post_nat_dst_port.push(if max { u16::MAX } else { 0 });
    b.sampling_interval.push(v(u32::MAX));
    b.sampling_source.push(if max { 6 } else { 0 });
    b.datagrams[dg].count += 1;
    assert!(b.is_aligned());
}

#[test]
fn encoder_round_trips_through_postgresql() {
    let db = common::TestDb::start();
    let schema = Schema::new("rt").unwrap();
    let mut c = db.client();
    migrate(&mut c, &schema).unwrap();

    let mut b = Columns::with_capacity(64);
    let exporter6: IpAddr = "2001:db8::53".parse().unwrap();
    b.datagrams.push(DatagramInfo {
        exporter: addr_to_u128(exporter6),
        received_us: PG_EPOCH_MS * 1000 - 1, // 1 µs before 2000-01-01
        first_flow: 0,
        count: 0,
        version: 5,
        engine_type: 255,
        engine_id: 255,
        sampling_mode: 3,
        sampling_interval: 0x3fff,
        ..Default::default()
    });
    // Around the PostgreSQL epoch, before the Unix epoch, and now-ish.
    let times = [
        PG_EPOCH_MS - 1,
        PG_EPOCH_MS,
        PG_EPOCH_MS + 1,
        -1,
        0,
        1_794_525_571_081,
    ];
    for (i, t) in times.iter().enumerate() {
        push_flow(&mut b, 0, *t, "10.1.2.3", "2001:db8:ffff::1", i % 2 == 0);
    }
    push_flow(&mut b, 0, 4_102_444_800_000, "255.255.255.255", "::", true);
    push_flow(
        &mut b,
        0,
        1_000,
        "::ffff:0:1",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        false,
    );

    // A datagram through the decoder whose record started before the exporter's uptime wrapped.
    let mut d = vec![0u8; 72];
    d[1] = 5;
    d[3] = 1;
    d[4..8].copy_from_slice(&500u32.to_be_bytes()); // sys_uptime: 500 ms after the wrap
    d[8..12].copy_from_slice(&1_000_000_000u32.to_be_bytes());
    d[24 + 24..24 + 28].copy_from_slice(&(u32::MAX - 1499).to_be_bytes()); // first: 2 s earlier
    d[24 + 28..24 + 32].copy_from_slice(&100u32.to_be_bytes()); // last: 0.4 s earlier
    let meta = DatagramMeta {
        exporter: addr_to_u128("192.0.2.1".parse().unwrap()),
        received_us: 1_700_000_000_000_000,
    };
    nfpg_wire::v5::decode(&d, &meta, &mut b).unwrap();

    // Every column, so the fields only v9/IPFIX carry round-trip too.
    let mut data = copy::HEADER.to_vec();
    copy::encode_rows(&b, copy::Shape::Full, &mut data);
    data.extend_from_slice(copy::TRAILER);
    let mut w = c
        .copy_in(copy::copy_statement(&schema.quoted(), copy::Shape::Full).as_str())
        .unwrap();
    w.write_all(&data).unwrap();
    assert_eq!(w.finish().unwrap(), b.len() as u64);
    // The decoded v5 row left the v9-only columns short (they are filled lazily); pad them so
    // the expectations below can index every row (absent fields are NULL either way).
    b.pad_extras();

    let rows = c
        .query(
            "SELECT (extract(epoch FROM flow_start) * 1000)::int8, (extract(epoch FROM flow_end) * 1000)::int8,
                    src_addr::text, dst_addr::text, next_hop::text, family(dst_addr),
                    src_port, dst_port, protocol, tcp_flags, tos, input_if, output_if, packets, bytes,
                    src_as, dst_as, src_mask, dst_mask, exporter::text, engine_type, engine_id,
                    sampling_interval, sampling_mode, netflow_version,
                    (extract(epoch FROM received_at) * 1000000)::int8,
                    source_id, direction, end_reason, vlan, mpls_label, icmp_type,
                    post_nat_src_addr::text, post_nat_dst_addr::text, post_nat_src_port,
                    post_nat_dst_port, sampling_source
             FROM rt.flows ORDER BY received_at, flow_start",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), b.len());
    let mut expected: Vec<usize> = (0..b.len()).collect();
    expected.sort_by_key(|&i| (if i < 8 { 0 } else { 1 }, b.flow_start_ms[i]));
    for (r, &i) in rows.iter().zip(&expected) {
        let dg = if i < 8 {
            &b.datagrams[0]
        } else {
            &b.datagrams[1]
        };
        assert_eq!(r.get::<_, i64>(0), b.flow_start_ms[i], "flow_start row {i}");
        assert_eq!(r.get::<_, i64>(1), b.flow_end_ms[i]);
        let host = |v: u128| {
            let ip = nfpg::flow::batch::u128_to_addr(v);
            format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 })
        };
        assert_eq!(r.get::<_, String>(2), host(b.src_addr[i]));
        assert_eq!(r.get::<_, String>(3), host(b.dst_addr[i]));
        let has = |bit: u32| b.present[i] & bit != 0;
        use nfpg_wire::columns::present as p;
        let opt = |bit: u32, v: i64| has(bit).then_some(v);
        assert_eq!(
            r.get::<_, Option<String>>(4),
            has(p::NEXT_HOP).then(|| host(b.next_hop[i]))
        );
        let fam = if nfpg::flow::batch::u128_to_addr(b.dst_addr[i]).is_ipv4() {
            4
        } else {
            6
        };
        assert_eq!(r.get::<_, i32>(5), fam);
        let i32_at = |k: usize| r.get::<_, Option<i32>>(k).map(i64::from);
        let i16_at = |k: usize| r.get::<_, Option<i16>>(k).map(i64::from);
        let i64_at = |k: usize| r.get::<_, Option<i64>>(k);
        assert_eq!(i32_at(6), opt(p::SRC_PORT, i64::from(b.src_port[i])));
        assert_eq!(i32_at(7), opt(p::DST_PORT, i64::from(b.dst_port[i])));
        assert_eq!(r.get::<_, i16>(8), i16::from(b.protocol[i]));
        assert_eq!(i16_at(9), opt(p::TCP_FLAGS, i64::from(b.tcp_flags[i])));
        assert_eq!(i16_at(10), opt(p::TOS, i64::from(b.tos[i])));
        assert_eq!(i64_at(11), opt(p::INPUT_IF, i64::from(b.input_if[i])));
        assert_eq!(i64_at(12), opt(p::OUTPUT_IF, i64::from(b.output_if[i])));
        assert_eq!(r.get::<_, i64>(13) as u64, b.packets[i]);
        assert_eq!(r.get::<_, i64>(14) as u64, b.bytes[i]);
        assert_eq!(i64_at(15), opt(p::SRC_AS, i64::from(b.src_as[i])));
        assert_eq!(i64_at(16), opt(p::DST_AS, i64::from(b.dst_as[i])));
        assert_eq!(i16_at(17), opt(p::SRC_MASK, i64::from(b.src_mask[i])));
        assert_eq!(i16_at(18), opt(p::DST_MASK, i64::from(b.dst_mask[i])));
        assert_eq!(r.get::<_, String>(19), host(dg.exporter));
        assert_eq!(r.get::<_, i16>(20), i16::from(dg.engine_type));
        assert_eq!(r.get::<_, i16>(21), i16::from(dg.engine_id));
        assert_eq!(
            i64::from(r.get::<_, i32>(22)),
            i64::from(b.sampling_interval[i]).min(i64::from(i32::MAX)),
            "sampling interval per row, saturated"
        );
        assert_eq!(r.get::<_, i16>(23), i16::from(dg.sampling_mode));
        assert_eq!(r.get::<_, i16>(24), 5);
        assert_eq!(r.get::<_, i64>(25), dg.received_us);
        assert_eq!(r.get::<_, i64>(26), i64::from(dg.source_id));
        assert_eq!(i16_at(27), opt(p::DIRECTION, i64::from(b.direction[i])));
        assert_eq!(i16_at(28), opt(p::END_REASON, i64::from(b.end_reason[i])));
        assert_eq!(i32_at(29), opt(p::VLAN, i64::from(b.vlan[i])));
        assert_eq!(
            i32_at(30),
            opt(p::MPLS_LABEL, i64::from(b.mpls_label[i] & 0xfffff))
        );
        assert_eq!(i32_at(31), opt(p::ICMP_TYPE, i64::from(b.icmp_type[i])));
        assert_eq!(
            r.get::<_, Option<String>>(32),
            has(p::POST_NAT_SRC_ADDR).then(|| host(b.post_nat_src[i]))
        );
        assert_eq!(
            r.get::<_, Option<String>>(33),
            has(p::POST_NAT_DST_ADDR).then(|| host(b.post_nat_dst[i]))
        );
        assert_eq!(
            i32_at(34),
            opt(p::POST_NAT_SRC_PORT, i64::from(b.post_nat_src_port[i]))
        );
        assert_eq!(
            i32_at(35),
            opt(p::POST_NAT_DST_PORT, i64::from(b.post_nat_dst_port[i]))
        );
        assert_eq!(r.get::<_, i16>(36), i16::from(b.sampling_source[i]));
    }
    // The explicit edge values, read back by PostgreSQL's own text forms.
    let edge: Vec<(String, String)> = c
        .query("SELECT flow_start AT TIME ZONE 'UTC' || '', src_addr::text FROM rt.flows ORDER BY received_at, flow_start LIMIT 3", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(edge[0].0, "1969-12-31 23:59:59.999");
    assert!(c
        .query_one(
            "SELECT count(*) FROM rt.flows WHERE flow_start = '2000-01-01 00:00:00+00'",
            &[]
        )
        .map(|r| r.get::<_, i64>(0) == 1)
        .unwrap());
    let wrapped: i64 = c
        .query_one(
            "SELECT (extract(epoch FROM flow_end - flow_start) * 1000)::int8 FROM rt.flows WHERE host(exporter) = '192.0.2.1'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(wrapped, 1600, "first before the uptime wrap, last after it");
    let max_row: (i64, i64) = c
        .query_one("SELECT max(packets), max(bytes) FROM rt.flows", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(max_row, (i64::from(u32::MAX), i64::from(u32::MAX)));
}

/// Exactly once: a writer that lost its connection while committing retries the same COPY
/// with the same (writer, sequence); when the first attempt had in fact committed, the retry
/// is refused by the marker's primary key and no row is stored twice.
#[test]
fn a_retried_copy_is_stored_once() {
    use nfpg::store::writer::{PgSink, Sink};
    let db = common::TestDb::start();
    let schema = Schema::new("netflow").unwrap();
    let mut c = db.client();
    migrate(&mut c, &schema).unwrap();
    nfpg::store::db::ensure_partitions(&mut c, &schema, 1).unwrap();
    let file = std::fs::read(common::fixture("softflowd-v5.pcap")).unwrap();
    let mut b = Columns::with_capacity(1024);
    let meta = DatagramMeta {
        exporter: addr_to_u128("127.0.0.1".parse().unwrap()),
        received_us: 1_800_000_000_000_000,
    };
    for p in nfpg_wire::pcap::udp_packets(&file).unwrap() {
        nfpg_wire::v5::decode(&p.payload, &meta, &mut b).unwrap();
    }
    let mut data = Vec::new();
    let shape = copy::encode_copy([&b], &mut data);
    assert_eq!(shape, copy::Shape::Basic);
    let rows = b.len() as i64;
    assert_eq!(rows, 682);

    use nfpg::store::spool::Marker;
    use nfpg::store::writer::{Committed, WriteError};
    let m = |writer, seq| Marker { writer, seq };
    let mut first = PgSink::new(db.conninfo(), &schema);
    assert_eq!(
        first.write_copy(&data, shape, b.len(), m(7, 0), 0),
        Ok(Committed::Now)
    );
    assert_eq!(db.count("SELECT count(*) FROM netflow.flows"), rows);
    // The same COPY retried after a reconnect, with the marker it was given.
    let mut retry = PgSink::new(db.conninfo(), &schema);
    assert_eq!(
        retry.write_copy(&data, shape, b.len(), m(7, 0), 0),
        Ok(Committed::Already)
    );
    assert_eq!(
        db.count("SELECT count(*) FROM netflow.flows"),
        rows,
        "not stored twice"
    );
    // A new marker is a new COPY; a part of the same COPY is its own.
    retry.write_copy(&data, shape, b.len(), m(7, 1), 0).unwrap();
    retry.write_copy(&data, shape, b.len(), m(7, 1), 5).unwrap();
    assert_eq!(db.count("SELECT count(*) FROM netflow.flows"), 3 * rows);
    assert_eq!(
        db.count("SELECT count(*) FROM netflow.nfpg_copies WHERE writer = 7"),
        3
    );
    // A unique violation that is not the marker's is a refusal, never "already committed".
    c.batch_execute("DELETE FROM netflow.flows").unwrap();
    c.batch_execute(
        "CREATE UNIQUE INDEX flows_once_all ON netflow.flows (flow_start, src_addr, dst_addr, src_port, dst_port, protocol, packets, bytes, received_at, input_if)",
    )
    .unwrap();
    retry.write_copy(&data, shape, b.len(), m(8, 0), 0).unwrap();
    match retry.write_copy(&data, shape, b.len(), m(8, 1), 0) {
        Err(WriteError::Rejected { message, .. }) => {
            assert!(message.contains("23505"), "{message}")
        }
        other => panic!("a duplicate row is refused, not taken as committed: {other:?}"),
    }
    assert_eq!(db.count("SELECT count(*) FROM netflow.flows"), rows);
}
