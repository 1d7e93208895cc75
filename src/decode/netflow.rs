//! NetFlow v9 and IPFIX in the collector: the template and sampling state every shard shares,
//! and the per-shard decoder that uses it.
//!
//! State lives per (exporter address, source id / observation domain), as RFC 3954 and RFC
//! 7011 scope it, in [`SharedMap`]s: a shard that learns a template publishes it and every
//! shard sees it at its next datagram, without a lock on the hot path. So `--balance spread`
//! and SO_REUSEPORT stay correct. Changes are queued for the housekeeper, which writes them
//! to the `templates` table; at start the table is read back, so data decodes at once after
//! a restart. Data sets whose template is unknown go to the [`Hold`] and are decoded when it
//! arrives. Options data feeds the sampling table: a rate per sampler id, or one for the
//! whole exporter, and the exporter's boot time (IPFIX systemInitTimeMilliseconds).
//!
//! Template redefinition: a template set is applied before the data sets after it in the
//! same datagram, and a shard decodes with the definition current when it reads the data.
//! With `--balance hash` (the default) one exporter's datagrams stay on one shard, in order;
//! with `--balance spread` a redefinition and data right behind it on another shard can race
//! (the spread program's documentation says so).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_utils::CachePadded;
use nfpg_wire::columns::{Columns, DatagramMeta, SamplingSource};
use nfpg_wire::netflow::{self as nf, Plan, Set, Template, TemplateRecord, Version};

use super::hold::{HeldSet, Hold};
use super::shared::{Reader, SharedMap};
use crate::obs::stats::DecodeCounters;

/// Where a template belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TemplateKey {
    pub exporter: u128,
    pub domain: u32,
    pub id: u16,
}

/// A template as learned, compiled for decoding.
pub struct Compiled {
    pub version: Version,
    pub template: Template,
    /// `None` for options templates (their data goes to [`nf::decode_options`]).
    pub plan: Option<Plan>,
}

/// Sampling and boot time of one (exporter, domain), from its options data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExporterState {
    /// Interval by sampler / selector id.
    pub by_sampler: HashMap<u64, u32>,
    /// Interval for the whole exporter (options data without a sampler id).
    pub exporter_interval: Option<u32>,
    /// IPFIX systemInitTimeMilliseconds: the base of flowStart/EndSysUpTime.
    pub system_init_ms: Option<i64>,
}

/// A template change for the `templates` table (definition `None`: withdrawn).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub key: TemplateKey,
    pub version: u8,
    pub definition: Option<Vec<u8>>,
}

/// Everything shards share about v9/IPFIX exporters.
pub struct Shared {
    pub templates: SharedMap<TemplateKey, Compiled>,
    pub exporters: SharedMap<(u128, u32), ExporterState>,
    pub hold: Hold,
    /// Template changes not yet written to the database.
    pub changes: Mutex<Vec<Change>>,
    /// Operator overrides of the sampling interval, by exporter (`--sampling-override`).
    pub overrides: Vec<(crate::addr::Cidr, u32)>,
    pub counters: Arc<CachePadded<DecodeCounters>>,
    /// Templates kept at most over all exporters (`--max-templates`); new ones beyond it
    /// are refused and counted (`templates_refused`). Every learned template copies the map
    /// (see [`SharedMap`]), so this also bounds what a flood of template sets from spoofed
    /// addresses can cost.
    pub max_templates: usize,
}

/// Templates kept at most by default: far more than any network's routers define.
pub const DEFAULT_MAX_TEMPLATES: usize = 65_536;

impl Shared {
    pub fn new(
        hold: Hold,
        overrides: Vec<(crate::addr::Cidr, u32)>,
        counters: Arc<CachePadded<DecodeCounters>>,
    ) -> Self {
        Self {
            templates: SharedMap::default(),
            exporters: SharedMap::default(),
            hold,
            changes: Mutex::new(Vec::new()),
            overrides,
            counters,
            max_templates: DEFAULT_MAX_TEMPLATES,
        }
    }

    /// Loads templates stored by an earlier run (no change is queued for them).
    pub fn load(&self, stored: impl IntoIterator<Item = (TemplateKey, u8, Vec<u8>)>) -> usize {
        let mut n = 0;
        self.templates.update(|m| {
            for (key, version, bytes) in stored {
                let version = match version {
                    9 => Version::V9,
                    10 => Version::Ipfix,
                    _ => continue,
                };
                let Ok(template) = Template::from_bytes(&bytes) else {
                    tracing::warn!("stored template {key:?} unreadable, ignored");
                    continue;
                };
                if let Some(c) = compile(version, template) {
                    m.insert(key, Arc::new(c));
                    n += 1;
                }
            }
        });
        n
    }

    /// Takes the queued changes (the housekeeper writes them; [`Shared::requeue`] if it fails).
    pub fn take_changes(&self) -> Vec<Change> {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn requeue(&self, mut failed: Vec<Change>) {
        let mut c = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        failed.append(&mut c);
        *c = failed;
    }

    fn override_for(&self, exporter: u128) -> Option<u32> {
        let ip = crate::flow::batch::u128_to_addr(exporter);
        self.overrides
            .iter()
            .find(|(net, _)| net.contains(ip))
            .map(|(_, n)| *n)
    }
}

fn compile(version: Version, template: Template) -> Option<Compiled> {
    let plan = if template.is_options() {
        None
    } else {
        match Plan::new(&template, version) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::debug!("template {} not usable: {e}", template.id);
                return None;
            }
        }
    };
    Some(Compiled {
        version,
        template,
        plan,
    })
}

/// Why a v9/IPFIX datagram was not (fully) decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The datagram needs room for this many rows: seal the batch and call again.
    NoRoom(usize),
    /// More rows than a whole batch holds.
    TooManyRecords(usize),
    Malformed(nf::DecodeError),
}

/// One shard's decoder.
pub struct Decoder {
    shared: Arc<Shared>,
    templates: Reader<TemplateKey, Compiled>,
    exporters: Reader<(u128, u32), ExporterState>,
    /// Held sets whose template this shard just learned: decoded by [`Decoder::released`].
    released: Vec<HeldSet>,
}

/// The context wire's data decoder needs, for one datagram.
fn data_context<'a>(
    meta: &DatagramMeta,
    hdr: &nf::Header,
    state: Option<&ExporterState>,
    lookup: &'a dyn Fn(Option<u64>) -> Option<(u32, SamplingSource)>,
) -> nf::DataContext<'a> {
    let mut ctx = nf::DataContext::new(hdr, meta, lookup);
    ctx.system_init_ms = state.and_then(|s| s.system_init_ms);
    ctx
}

/// The sampling lookup for one (exporter, domain): by sampler id from options data, else the
/// exporter's own from options data, else the operator's override.
fn sampling_lookup(
    state: Option<Arc<ExporterState>>,
    override_interval: Option<u32>,
) -> impl Fn(Option<u64>) -> Option<(u32, SamplingSource)> {
    move |sampler: Option<u64>| {
        let s = state.as_deref();
        if let Some(n) = sampler.and_then(|id| s.and_then(|s| s.by_sampler.get(&id).copied())) {
            return Some((n, SamplingSource::OptionsSampler));
        }
        if let Some(n) = s.and_then(|s| s.exporter_interval) {
            return Some((n, SamplingSource::OptionsExporter));
        }
        override_interval.map(|n| (n, SamplingSource::Override))
    }
}

impl Decoder {
    pub fn new(shared: Arc<Shared>) -> Self {
        let templates = Reader::new(&shared.templates);
        let exporters = Reader::new(&shared.exporters);
        Self {
            shared,
            templates,
            exporters,
            released: Vec::new(),
        }
    }

    /// Applies the template and options template sets and the options data of a datagram,
    /// in order (idempotent: a second call for the same datagram changes nothing).
    fn learn(
        &mut self,
        exporter: u128,
        hdr: &nf::Header,
        body: &[u8],
    ) -> Result<(), nf::DecodeError> {
        let c = self.shared.counters.clone();
        for set in nf::sets(hdr.version, body) {
            let (at, set) = set?;
            let (records, options) = match set {
                Set::Templates(b) => (nf::parse_templates(hdr.version, b), false),
                Set::OptionsTemplates(b) => (nf::parse_options_templates(hdr.version, b), true),
                Set::Data { template_id, body } => {
                    // Options data applies before the flows after it in the same datagram.
                    let key = TemplateKey {
                        exporter,
                        domain: hdr.domain,
                        id: template_id,
                    };
                    let t = match self.templates.get(&self.shared.templates, &key) {
                        Some(c) if c.plan.is_none() => c.template.clone(),
                        _ => continue,
                    };
                    self.options(exporter, hdr.domain, hdr.version, &t, body);
                    continue;
                }
                Set::Reserved { .. } => continue,
            };
            for rec in records.map_err(|e| e.shifted(at))? {
                match rec {
                    TemplateRecord::Define(t) => {
                        let key = TemplateKey {
                            exporter,
                            domain: hdr.domain,
                            id: t.id,
                        };
                        let same = self
                            .templates
                            .get(&self.shared.templates, &key)
                            .is_some_and(|old| old.template == t && old.version == hdr.version);
                        if same {
                            continue;
                        }
                        let Some(compiled) = compile(hdr.version, t) else {
                            c.templates_unusable.fetch_add(1, Relaxed);
                            continue;
                        };
                        let was = self.templates.get(&self.shared.templates, &key).is_some();
                        if !was && self.shared.templates.len() >= self.shared.max_templates {
                            c.templates_refused.fetch_add(1, Relaxed);
                            continue;
                        }
                        if let Some(plan) = &compiled.plan {
                            c.template_fields_ignored
                                .fetch_add(u64::from(plan.ignored()), Relaxed);
                        }
                        let bytes = compiled.template.to_bytes();
                        self.shared.templates.insert(key, compiled);
                        self.shared
                            .changes
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Change {
                                key,
                                version: hdr.version.number(),
                                definition: Some(bytes),
                            });
                        if was {
                            c.templates_changed.fetch_add(1, Relaxed);
                        } else {
                            c.templates_learned.fetch_add(1, Relaxed);
                        }
                        let held = self.shared.hold.release(exporter, hdr.domain, key.id);
                        self.released.extend(held);
                    }
                    TemplateRecord::Withdraw { id } => {
                        self.withdraw(exporter, hdr, |k| k.id == id);
                    }
                    TemplateRecord::WithdrawAll => {
                        let snapshot = self.shared.templates.snapshot();
                        self.withdraw(exporter, hdr, |k| {
                            snapshot
                                .get(k)
                                .is_some_and(|t| t.template.is_options() == options)
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn withdraw(&mut self, exporter: u128, hdr: &nf::Header, which: impl Fn(&TemplateKey) -> bool) {
        let gone: Vec<TemplateKey> = self.shared.templates.update(|m| {
            let keys: Vec<TemplateKey> = m
                .keys()
                .filter(|k| k.exporter == exporter && k.domain == hdr.domain && which(k))
                .copied()
                .collect();
            for k in &keys {
                m.remove(k);
            }
            keys
        });
        let n = gone.len() as u64;
        self.shared
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(gone.into_iter().map(|key| Change {
                key,
                version: hdr.version.number(),
                definition: None,
            }));
        self.shared
            .counters
            .templates_withdrawn
            .fetch_add(n, Relaxed);
    }

    /// Applies options data (sampling, boot time) of one data set.
    fn options(
        &mut self,
        exporter: u128,
        domain: u32,
        version: Version,
        t: &Template,
        body: &[u8],
    ) {
        let Ok(records) = nf::decode_options(t, version, body) else {
            self.shared.counters.options_malformed.fetch_add(1, Relaxed);
            return;
        };
        self.shared
            .counters
            .options_records
            .fetch_add(records.len() as u64, Relaxed);
        let key = (exporter, domain);
        let old = self
            .exporters
            .get(&self.shared.exporters, &key)
            .map(|s| (**s).clone())
            .unwrap_or_default();
        let mut state = old.clone();
        for r in &records {
            if let Some(ms) = r.system_init_ms {
                state.system_init_ms = Some(ms);
            }
            if let Some(interval) = r.interval() {
                match r.sampler_id {
                    Some(id) => {
                        state.by_sampler.insert(id, interval);
                    }
                    None => state.exporter_interval = Some(interval),
                }
            }
        }
        if state != old {
            self.shared.exporters.insert(key, state);
        }
    }

    /// Decodes one v9/IPFIX datagram into `cols`: learns its templates, applies its options
    /// data, holds data sets without a template, decodes the rest. On `Err` nothing was
    /// appended (templates learned stay learned).
    pub fn datagram(
        &mut self,
        data: &[u8],
        meta: &DatagramMeta,
        cols: &mut Columns,
    ) -> Result<u16, Failure> {
        let (hdr, body) = nf::parse_header(data).map_err(Failure::Malformed)?;
        self.learn(meta.exporter, &hdr, body)
            .map_err(Failure::Malformed)?;
        // Room: count the records of every data set that has a data template now.
        let mut need = 0usize;
        for set in nf::sets(hdr.version, body) {
            let (at, set) = set.map_err(Failure::Malformed)?;
            if let Set::Data { template_id, body } = set {
                let key = TemplateKey {
                    exporter: meta.exporter,
                    domain: hdr.domain,
                    id: template_id,
                };
                if let Some(Compiled {
                    plan: Some(plan), ..
                }) = self
                    .templates
                    .get(&self.shared.templates, &key)
                    .map(|c| &**c)
                {
                    need += nf::validate_data(plan, body)
                        .map_err(|e| Failure::Malformed(e.shifted(at)))?;
                }
            }
        }
        if need > cols.capacity() {
            return Err(Failure::TooManyRecords(need));
        }
        if need > 0 && !cols.has_room_for(need) {
            return Err(Failure::NoRoom(need));
        }
        let rows_before = cols.len();
        let dgrams_before = cols.datagrams.len();
        let state = self
            .exporters
            .get(&self.shared.exporters, &(meta.exporter, hdr.domain))
            .cloned();
        let lookup = sampling_lookup(state.clone(), self.shared.override_for(meta.exporter));
        let ctx = data_context(meta, &hdr, state.as_deref(), &lookup);
        let mut flows = 0usize;
        let mut held = 0u64;
        for set in nf::sets(hdr.version, body) {
            let Ok((at, set)) = set else { break };
            let Set::Data {
                template_id,
                body: set_body,
            } = set
            else {
                if let Set::Reserved { .. } = set {
                    self.shared.counters.reserved_sets.fetch_add(1, Relaxed);
                }
                continue;
            };
            let key = TemplateKey {
                exporter: meta.exporter,
                domain: hdr.domain,
                id: template_id,
            };
            let compiled = self.templates.get(&self.shared.templates, &key).cloned();
            match compiled {
                Some(c) => {
                    // Options data (no plan) was applied while learning, before the flows.
                    if let Some(plan) = &c.plan {
                        match nf::decode_data(plan, &ctx, set_body, cols) {
                            Ok(out) => flows += usize::from(out.records),
                            Err(e) => {
                                cols.truncate(rows_before, dgrams_before);
                                return Err(Failure::Malformed(e.shifted(at)));
                            }
                        }
                    }
                }
                None => {
                    held += 1;
                    let gave = self.shared.hold.hold(HeldSet {
                        exporter: meta.exporter,
                        domain: hdr.domain,
                        template_id,
                        version: hdr.version.number(),
                        export_ms: hdr.export_ms(),
                        sys_uptime_ms: hdr.sys_uptime_ms,
                        sequence: hdr.sequence,
                        received_us: meta.received_us,
                        held_at: Instant::now(),
                        body: set_body.to_vec(),
                    });
                    self.count_given_up(gave);
                }
            }
        }
        if held > 0 {
            self.shared.counters.sets_held.fetch_add(held, Relaxed);
        }
        merge_datagrams(cols, dgrams_before, &hdr);
        Ok(flows as u16)
    }

    fn count_given_up(&self, gave: super::hold::GivenUp) {
        let c = &self.shared.counters;
        if gave.overflow > 0 {
            c.held_sets_overflow.fetch_add(gave.overflow, Relaxed);
        }
        if gave.expired > 0 {
            c.held_sets_expired.fetch_add(gave.expired, Relaxed);
        }
    }

    /// Gives up held sets older than the bound (the shard calls it about once a second).
    pub fn expire_held(&self, now: Instant) {
        let gave = self.shared.hold.expire(now);
        self.count_given_up(gave);
    }

    /// Whether sets released by a template this shard learned wait for [`Decoder::released`].
    pub fn has_released(&self) -> bool {
        !self.released.is_empty()
    }

    /// Decodes the next released held set into `cols`, if there is room for it; returns the
    /// flows decoded, `Err(NoRoom)` when the batch must be sealed first.
    pub fn released(&mut self, cols: &mut Columns) -> Result<Option<u16>, Failure> {
        let Some(set) = self.released.first() else {
            return Ok(None);
        };
        let key = TemplateKey {
            exporter: set.exporter,
            domain: set.domain,
            id: set.template_id,
        };
        let Some(c) = self.templates.get(&self.shared.templates, &key).cloned() else {
            // Withdrawn again before we got to it.
            self.released.remove(0);
            self.shared.counters.held_sets_expired.fetch_add(1, Relaxed);
            return Ok(Some(0));
        };
        let Some(plan) = &c.plan else {
            let set = self.released.remove(0);
            let t = c.template.clone();
            self.options(set.exporter, set.domain, c.version, &t, &set.body);
            return Ok(Some(0));
        };
        let need = match nf::validate_data(plan, &set.body) {
            Ok(n) => n,
            Err(e) => {
                self.released.remove(0);
                return Err(Failure::Malformed(e));
            }
        };
        if need > cols.capacity() {
            self.released.remove(0);
            return Err(Failure::TooManyRecords(need));
        }
        if !cols.has_room_for(need) {
            return Err(Failure::NoRoom(need));
        }
        let set = self.released.remove(0);
        let hdr = nf::Header {
            version: c.version,
            count: 0,
            length: 0,
            sys_uptime_ms: set.sys_uptime_ms,
            export_secs: (set.export_ms / 1000) as u32,
            sequence: set.sequence,
            domain: set.domain,
        };
        let meta = DatagramMeta {
            exporter: set.exporter,
            received_us: set.received_us,
        };
        let state = self
            .exporters
            .get(&self.shared.exporters, &(set.exporter, set.domain))
            .cloned();
        let lookup = sampling_lookup(state.clone(), self.shared.override_for(set.exporter));
        let ctx = data_context(&meta, &hdr, state.as_deref(), &lookup);
        let dgrams_before = cols.datagrams.len();
        let out = nf::decode_data(plan, &ctx, &set.body, cols).map_err(Failure::Malformed)?;
        // A held set's rows are not a datagram of their own for sequence accounting.
        for d in &mut cols.datagrams[dgrams_before..] {
            d.held = true;
        }
        self.shared.counters.held_sets_decoded.fetch_add(1, Relaxed);
        Ok(Some(out.records))
    }
}

/// Makes the datagram records the data sets of one datagram appended into one, spanning all
/// their rows (the sets were decoded one after another, so their rows are contiguous).
fn merge_datagrams(cols: &mut Columns, from: usize, hdr: &nf::Header) {
    if cols.datagrams.len() <= from + 1 {
        return;
    }
    let count: u32 = cols.datagrams[from..]
        .iter()
        .map(|d| u32::from(d.count))
        .sum();
    cols.datagrams.truncate(from + 1);
    let d = &mut cols.datagrams[from];
    d.count = u16::try_from(count).unwrap_or(u16::MAX);
    d.sequence = hdr.sequence;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// v5 rows leave the v9-only columns short; a v9 datagram after them pads first, and a
    /// mixed batch encodes (full shape) without reading past them.
    #[test]
    fn v5_and_v9_rows_share_a_batch() {
        let v5 = fixture("softflowd-v5.pcap");
        let v9 = fixture("softflowd-v9.pcap");
        let meta = nfpg_wire::columns::DatagramMeta {
            exporter: 1,
            received_us: 0,
        };
        let mut cols = crate::flow::batch::Columns::with_capacity(4096);
        let mut d = Decoder::new(shared());
        let a = nfpg_wire::v5::decode(&v5[0], &meta, &mut cols).unwrap();
        assert_eq!(cols.extras_len(), 0, "v5 writes no v9-only column");
        let b = d.datagram(&v9[0], &meta, &mut cols).unwrap();
        assert_eq!(cols.extras_len(), cols.len());
        let c = nfpg_wire::v5::decode(&v5[1], &meta, &mut cols).unwrap();
        assert_eq!(cols.len(), usize::from(a + b + c));
        assert_eq!(cols.extras_len(), usize::from(a + b));
        assert!(cols.is_aligned());
        let mut out = Vec::new();
        assert_eq!(
            crate::flow::copy::encode_copy([&cols], &mut out),
            crate::flow::copy::Shape::Full
        );
    }

    use std::time::Duration;

    fn fixture(name: &str) -> Vec<Vec<u8>> {
        let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nfpg_wire::pcap::udp_packets(&file)
            .unwrap()
            .into_iter()
            .map(|p| p.payload)
            .collect()
    }

    fn shared() -> Arc<Shared> {
        Arc::new(Shared::new(
            Hold::new(1 << 20, Duration::from_secs(60)),
            Vec::new(),
            Arc::default(),
        ))
    }

    /// Both softflowd captures through the decoder: every flow, every datagram once.
    #[test]
    fn softflowd_captures_decode_whole() {
        for name in ["softflowd-v9.pcap", "softflowd-ipfix.pcap"] {
            let mut d = Decoder::new(shared());
            let mut cols = Columns::with_capacity(4096);
            let meta = DatagramMeta {
                exporter: 1,
                received_us: 0,
            };
            let mut flows = 0u64;
            let dgrams = fixture(name);
            for (i, p) in dgrams.iter().enumerate() {
                let n = d
                    .datagram(p, &meta, &mut cols)
                    .unwrap_or_else(|e| panic!("{name} datagram {i}: {e:?}"));
                flows += u64::from(n);
            }
            assert_eq!(flows, 688, "{name}");
            assert_eq!(cols.len(), 688, "{name}");
            assert!(cols.is_aligned());
            assert_eq!(
                cols.datagrams.len(),
                dgrams.len(),
                "{name}: one record per datagram with flows"
            );
            assert_eq!(cols.packets.iter().sum::<u64>(), 3_918);
            assert_eq!(cols.bytes.iter().sum::<u64>(), 2_079_064);
        }
    }
}
