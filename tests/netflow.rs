//! Issue 9: NetFlow v9 and IPFIX through the real binary into a real PostgreSQL, over real
//! UDP: softflowd's exports stored exactly as tshark decodes them; data before its template,
//! template redefinition and a restart between template and data; sampling from options data,
//! from packet interval/space, from the record, and the operator's override.

mod common;

use std::net::{IpAddr, UdpSocket};
use std::time::Duration;

use common::*;
use nfpg_wire::netflow::encode::{flow_template, flow_values, Field, Flow, Message, TemplateDef};

fn fixture_payloads(name: &str) -> Vec<Vec<u8>> {
    let file = std::fs::read(fixture(name)).unwrap();
    nfpg_wire::pcap::udp_packets(&file)
        .unwrap()
        .into_iter()
        .map(|p| p.payload)
        .collect()
}

/// One row per flow, as text, in the columns both sides have.
fn expected(csv: &str) -> Vec<String> {
    let text = std::fs::read_to_string(fixture(csv)).unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
    let want = [
        "version",
        "source_id",
        "src_addr",
        "dst_addr",
        "src_port",
        "dst_port",
        "icmp_type",
        "protocol",
        "tcp_flags",
        "tos",
        "packets",
        "bytes",
        "input_if",
        "output_if",
        "direction",
        "flow_end_reason",
        "flow_start_ms",
        "flow_end_ms",
    ];
    let idx: Vec<usize> = want.iter().map(|w| col(w)).collect();
    let mut rows: Vec<String> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            idx.iter().map(|&i| f[i]).collect::<Vec<_>>().join(",")
        })
        .collect();
    rows.sort();
    rows
}

fn stored(db: &TestDb) -> Vec<String> {
    let mut rows: Vec<String> = db
        .client()
        .query(
            "SELECT concat_ws(',', netflow_version, source_id, host(src_addr), host(dst_addr),
                    coalesce(src_port::text, ''), coalesce(dst_port::text, ''),
                    coalesce(icmp_type::text, ''), protocol, coalesce(tcp_flags::text, ''),
                    coalesce(tos::text, ''), packets, bytes, input_if, output_if, direction,
                    end_reason,
                    (extract(epoch FROM flow_start) * 1000)::int8,
                    (extract(epoch FROM flow_end) * 1000)::int8)
             FROM netflow.flows",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    rows.sort();
    rows
}

/// Must show 1: both softflowd captures (688 flows, 3,918 packets, 2,079,064 bytes, IPv6
/// included) stored with every field equal to tshark's decoding (fixtures/*.expected.csv).
#[test]
fn softflowd_v9_and_ipfix_exports_are_stored_exactly() {
    for (pcap, csv, version) in [
        ("softflowd-v9.pcap", "softflowd-v9.expected.csv", 9),
        ("softflowd-ipfix.pcap", "softflowd-ipfix.expected.csv", 10),
    ] {
        let db = TestDb::start();
        let nfpg = Nfpg::start(&db, &[]);
        let tx = exporter_socket("127.0.0.1");
        let datagrams = fixture_payloads(pcap);
        for d in &datagrams {
            tx.send_to(d, nfpg.addr).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(wait_until(Duration::from_secs(30), || db
            .count("SELECT count(*) FROM netflow.flows")
            == 688));
        let s = nfpg.stop();
        assert_eq!(s["datagrams"].as_u64().unwrap(), datagrams.len() as u64);
        assert_eq!(s["malformed"]["total"], 0, "{s}");
        assert_eq!(s["flows"], 688, "v{version}: {s}");
        assert_eq!(s["sets_held"], 0, "templates came first");
        let want = expected(csv);
        let got = stored(&db);
        assert_eq!(want.len(), 688);
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(g, w, "v{version}: stored row differs from tshark's");
        }
        assert_eq!(got, want);
        assert_eq!(
            db.count("SELECT sum(packets)::int8 FROM netflow.flows"),
            3_918
        );
        assert_eq!(
            db.count("SELECT sum(bytes)::int8 FROM netflow.flows"),
            2_079_064
        );
        assert_eq!(
            db.count("SELECT count(*) FROM netflow.flows WHERE family(src_addr) = 6"),
            6
        );
        // softflowd's options data says 1 in 1, for the whole exporter.
        assert_eq!(
            db.count(
                "SELECT count(*) FROM netflow.flows WHERE sampling_interval = 1 AND sampling_source = 4"
            ),
            688
        );
        // Its templates are in the database for the next start.
        assert_eq!(db.count("SELECT count(*) FROM netflow.templates"), 5);
    }
}

fn flow(i: u32, v6: bool) -> Flow {
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        (
            format!("2001:db8::{}", i + 1).parse().unwrap(),
            "2001:db8:ffff::1".parse().unwrap(),
        )
    } else {
        (
            format!("10.9.{}.{}", i / 250, i % 250 + 1).parse().unwrap(),
            "192.0.2.9".parse().unwrap(),
        )
    };
    Flow {
        src,
        dst,
        src_port: 1000 + i as u16,
        dst_port: 443,
        protocol: 6,
        tcp_flags: 0x1b,
        tos: 0,
        packets: 2 + i,
        bytes: 100 + i,
        input: 1,
        output: 2,
        direction: 0,
        end_reason: 3,
        first_ms: 10_000,
        last_ms: 11_000,
    }
}

fn send(tx: &UdpSocket, to: std::net::SocketAddr, d: &[u8]) {
    tx.send_to(d, to).unwrap();
    std::thread::sleep(Duration::from_millis(50));
}

/// Must show 2: data sent before its template is held and stored when the template comes; a
/// template redefined with another layout decodes the data after it with the new one; after a
/// restart between template and data, the data decodes at once from the stored template.
#[test]
fn data_before_template_redefinition_and_restart() {
    let db = TestDb::start();
    let spool = tempfile::tempdir().unwrap();
    let dir = spool.path().to_str().unwrap().to_string();
    let nfpg = Nfpg::start(&db, &["--spool-dir", &dir]);
    let tx = exporter_socket("127.0.0.41");
    let now = now_secs();
    let v4 = flow_template(300, false);
    let v6 = flow_template(300, true);
    let records =
        |v6: bool, n: u32| -> Vec<_> { (0..n).map(|i| flow_values(&flow(i, v6))).collect() };

    // 1. Data first, then its template: held, then stored.
    let mut m = Message::v9(20_000, now, 1, 7);
    m.data(&v4, &records(false, 10));
    send(&tx, nfpg.addr, &m.finish());
    let mut m = Message::v9(20_100, now, 2, 7);
    m.templates(&[&v4]);
    send(&tx, nfpg.addr, &m.finish());
    assert!(wait_until(Duration::from_secs(10), || db
        .count("SELECT count(*) FROM netflow.flows")
        == 10));

    // 2. The same id redefined as IPv6 with its data right behind, in one datagram.
    let mut m = Message::v9(20_200, now, 3, 7);
    m.templates(&[&v6]).data(&v6, &records(true, 5));
    send(&tx, nfpg.addr, &m.finish());
    assert!(wait_until(Duration::from_secs(10), || {
        db.count(
        "SELECT count(*) FROM netflow.flows WHERE family(src_addr) = 6 AND host(dst_addr) = '2001:db8:ffff::1'"
    ) == 5
    }));

    // 3. A template for id 301, then a restart, then data only.
    let t301 = flow_template(301, false);
    let mut m = Message::v9(20_300, now, 4, 7);
    m.templates(&[&t301]);
    send(&tx, nfpg.addr, &m.finish());
    let s = nfpg.stop();
    assert_eq!(s["sets_held"], 1);
    assert_eq!(s["held_sets_decoded"], 1);
    assert_eq!(s["templates_learned"], 2);
    assert_eq!(s["templates_changed"], 1);
    let nfpg = Nfpg::start(&db, &["--spool-dir", &dir]);
    let mut m = Message::v9(20_400, now, 5, 7);
    m.data(&t301, &records(false, 7));
    send(&tx, nfpg.addr, &m.finish());
    assert!(wait_until(Duration::from_secs(10), || db
        .count("SELECT count(*) FROM netflow.flows")
        == 22));
    let s = nfpg.stop();
    assert_eq!(
        s["sets_held"], 0,
        "decoded at once from the stored template: {s}"
    );
    assert_eq!(s["malformed"]["total"], 0);
    assert_eq!(db.count("SELECT count(*) FROM netflow.flows"), 22);
    // Each exporter/domain counted once per datagram, no loss: v9 sequence counts datagrams.
    assert_eq!(
        db.count("SELECT sum(flows)::int8 FROM netflow.exporters WHERE source_id = 7"),
        22
    );
    assert_eq!(
        db.count("SELECT sum(flows_lost)::int8 FROM netflow.exporters WHERE source_id = 7"),
        0
    );
}

/// Must show 3: the sampling interval from options data by sampler id (v9), from packet
/// interval/space (IPFIX options), from the record itself, and the override for an exporter
/// that sends none; each stored with where it came from.
#[test]
fn sampling_from_options_packet_space_record_and_override() {
    let db = TestDb::start();
    let nfpg = Nfpg::start(&db, &["--sampling-override", "127.0.0.44/32=64"]);
    let now = now_secs();
    let base = flow_template(400, false);
    let with = |id: u16, extra: &[Field]| {
        let mut t = base.clone();
        t.id = id;
        t.fields.extend_from_slice(extra);
        t
    };
    let values = |i: u32, extra: &[u64]| {
        let mut v = flow_values(&flow(i, false));
        v.extend(extra.iter().map(|&x| x.into()));
        v
    };

    // v9: options template (scope System, fields FLOW_SAMPLER_ID 48 + SAMPLING_INTERVAL 34),
    // sampler 7 samples 1 in 100; data records carry sampler id 7.
    let tx = exporter_socket("127.0.0.42");
    let opt = TemplateDef::options(
        256,
        &[Field::new(1, 4)],
        &[Field::new(48, 2), Field::new(34, 4)],
    );
    let t = with(401, &[Field::new(48, 2)]);
    let mut m = Message::v9(5_000, now, 1, 1);
    m.options_templates(&[&opt])
        .templates(&[&t])
        .data(&opt, &[vec![0u64.into(), 7u64.into(), 100u64.into()]])
        .data(&t, &(0..4).map(|i| values(i, &[7])).collect::<Vec<_>>());
    send(&tx, nfpg.addr, &m.finish());

    // IPFIX: options with samplingPacketInterval 1, samplingPacketSpace 99 for the whole
    // domain: 1 in 100.
    let tx2 = exporter_socket("127.0.0.43");
    let opt = TemplateDef::options(
        256,
        &[Field::new(149, 4)],
        &[Field::new(305, 4), Field::new(306, 4)],
    );
    let mut m = Message::ipfix(now, 0, 5);
    m.options_templates(&[&opt])
        .templates(&[&base])
        .data(&opt, &[vec![5u64.into(), 1u64.into(), 99u64.into()]])
        .data(&base, &(0..3).map(|i| values(i, &[])).collect::<Vec<_>>());
    send(&tx2, nfpg.addr, &m.finish());

    // The record's own samplingInterval (34) wins over everything; an exporter with no
    // sampling information gets the override.
    let tx3 = exporter_socket("127.0.0.44");
    let t34 = with(402, &[Field::new(34, 4)]);
    let mut m = Message::v9(5_000, now, 1, 0);
    m.templates(&[&t34, &base])
        .data(
            &t34,
            &(0..2).map(|i| values(i, &[1000])).collect::<Vec<_>>(),
        )
        .data(&base, &(0..5).map(|i| values(i, &[])).collect::<Vec<_>>());
    send(&tx3, nfpg.addr, &m.finish());

    assert!(wait_until(Duration::from_secs(15), || db
        .count("SELECT count(*) FROM netflow.flows")
        == 14));
    let s = nfpg.stop();
    assert_eq!(s["malformed"]["total"], 0, "{s}");
    let by = |exporter: &str, interval: i32, source: i16| {
        db.count(&format!(
            "SELECT count(*) FROM netflow.flows WHERE host(exporter) = '{exporter}' \
             AND sampling_interval = {interval} AND sampling_source = {source}"
        ))
    };
    assert_eq!(
        by("127.0.0.42", 100, 3),
        4,
        "v9 options data, by sampler id"
    );
    assert_eq!(by("127.0.0.43", 100, 4), 3, "IPFIX packet interval/space");
    assert_eq!(by("127.0.0.44", 1000, 2), 2, "the record's own interval");
    assert_eq!(by("127.0.0.44", 64, 6), 5, "the operator's override");
}
