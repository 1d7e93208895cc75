//! The durable spool: COPY data that could not be committed now, on disk until it can.
//!
//! A **segment** is one file holding one whole binary COPY stream for the flows table, so
//! replay is a plain COPY and an operator can load a segment by hand:
//!
//! ```sql
//! COPY netflow.flows (flow_start, …, received_at) FROM '/path/0001….seg' (FORMAT binary);
//! ```
//!
//! (the column list depends on the segment's [`Shape`], in its header; `nfpg spool` prints the
//! statement for each). The
//! COPY header's extension area, which PostgreSQL skips, carries a JSON [`SegmentHeader`]: the
//! database the rows were meant for ([`Identity`]), the exactly-once marker they were or will
//! be committed with, the row count, and for dead letters the error. Segments are written to
//! `NAME.tmp`, fsynced, renamed to `NAME.seg` and the directory fsynced: a segment that has
//! its final name is complete and on disk, so a crash or power loss costs at most the batches
//! still in memory (the shards' open batches, at most `FLUSH_INTERVAL` old, and any being
//! written at that moment). Names sort by creation time, which is the replay order.
//!
//! Rows PostgreSQL refuses go to `dead/` as segments of their own, with the error in the
//! header, for an operator to inspect (`nfpg spool`) and load by hand once fixed.
//!
//! A spool belongs to one database: segments whose identity differs from the current target
//! are kept, counted and reported, never replayed. A lock file keeps a second nfpg process
//! out of the same directory. With several database endpoints the collector opens one spool
//! per endpoint, each in its own `db-…` directory ([`Identity::dir_name`]), all sharing one
//! set of gauges (so `--spool-max` bounds them together). Each segment's header carries the
//! collector's instance name, part of its marker.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::copy::{self, Piece, Shape, HEADER, TRAILER};
use crate::obs::stats::SpoolGauges;
use std::sync::Arc;

/// The database a segment's rows are meant for: the server and database of the connection
/// target (host or socket directory, port, database name; never the password) and the schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub server: String,
    pub database: String,
    pub schema: String,
}

impl Identity {
    /// The identity of a connection string (URL or key=value) and schema.
    pub fn of(conninfo: &str, schema: &str) -> Result<Self> {
        let cfg: postgres::Config = conninfo
            .parse()
            .context("parsing the database connection settings")?;
        let hosts: Vec<String> = cfg
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(s) => s.clone(),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = cfg.get_ports().iter().map(|p| p.to_string()).collect();
        let user = cfg.get_user().unwrap_or_default();
        Ok(Self {
            server: format!(
                "host={} port={}",
                if hosts.is_empty() {
                    "localhost".into()
                } else {
                    hosts.join(",")
                },
                if ports.is_empty() {
                    "5432".into()
                } else {
                    ports.join(",")
                }
            ),
            database: cfg.get_dbname().unwrap_or(user).to_string(),
            schema: schema.to_string(),
        })
    }
}

/// The start of an endpoint's spool directory name (see [`Identity::dir_name`]).
pub const ENDPOINT_DIR_PREFIX: &str = "db-";

impl Identity {
    /// The name of this database's own spool directory inside the spool directory, used when
    /// nfpg writes to several endpoints: `db-` and a hash (FNV-1a, 64 bits) of the identity,
    /// so it stays the same whatever the order the endpoints are given in.
    pub fn dir_name(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.to_string().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{ENDPOINT_DIR_PREFIX}{h:016x}")
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} dbname={} schema={}",
            self.server, self.database, self.schema
        )
    }
}

/// The exactly-once marker of a COPY: `(writer, seq)` is unique per attempt and never reused;
/// `part` is 0 for the whole and identifies a row range when replay had to split it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub writer: i64,
    pub seq: i64,
}

/// What the COPY header extension of a segment says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentHeader {
    pub nfpg_spool: u32,
    pub identity: Identity,
    pub marker: Marker,
    /// Which columns the rows carry (the COPY column list to load them with).
    #[serde(default)]
    pub shape: Shape,
    pub rows: u64,
    pub created_us: i64,
    /// Dead letters: why PostgreSQL refused the rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The collector instance whose marker the rows carry (`nfpg_copies.instance`); empty in
    /// segments written before instance names, whose markers have the instance ''.
    #[serde(default)]
    pub instance: String,
}

/// A segment read back: its header and the binary COPY stream with the header extension
/// removed (what is sent to PostgreSQL).
#[derive(Debug)]
pub struct Segment {
    pub path: PathBuf,
    pub header: SegmentHeader,
    /// Tuples only (no COPY header or trailer).
    pub tuples: Vec<u8>,
    /// Bytes the file takes on disk.
    pub file_len: u64,
}

impl Segment {
    /// Byte offsets of each tuple in `tuples`, plus the end: `offsets[i]..offsets[i+1]` is
    /// row `i`. Fails on a stream that does not parse.
    pub fn row_offsets(&self) -> Result<Vec<usize>> {
        tuple_offsets(&self.tuples)
    }
}

/// Offsets of the tuples of a tuple stream (no header, no trailer), and its end.
pub fn tuple_offsets(t: &[u8]) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < t.len() {
        out.push(at);
        let Some(n) = t.get(at..at + 2) else {
            bail!("truncated tuple at byte {at}");
        };
        let fields = i16::from_be_bytes([n[0], n[1]]);
        if fields < 0 {
            bail!("unexpected trailer at byte {at}");
        }
        at += 2;
        for _ in 0..fields {
            let Some(l) = t.get(at..at + 4) else {
                bail!("truncated field length at byte {at}");
            };
            let len = i32::from_be_bytes([l[0], l[1], l[2], l[3]]);
            at += 4;
            if len > 0 {
                at += len as usize;
            }
        }
        if at > t.len() {
            bail!("truncated field data before byte {at}");
        }
    }
    out.push(at);
    Ok(out)
}

/// Why a segment could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({used} of {max} bytes)")]
    Full { used: u64, max: u64 },
    #[error("writing the spool: {0}")]
    Io(#[from] io::Error),
}

/// The spool directory of this process.
pub struct Spool {
    dir: PathBuf,
    dead: PathBuf,
    max_bytes: u64,
    identity: Identity,
    /// Bytes and count of this database's segments (not dead letters, not foreign ones), and
    /// of the foreign ones: the metrics read them.
    gauges: Arc<SpoolGauges>,
    /// Makes names unique within one microsecond.
    counter: AtomicU64,
    /// Segments of this spool waiting for replay (the gauges add up every spool's).
    own_segments: AtomicU64,
    /// The instance name written into new segments' headers (see [`SegmentHeader::instance`]).
    instance: String,
    /// Held for the life of the process: the lock on `dir/lock`.
    _lock: File,
}

fn unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Spool {
    /// Opens (creating) the spool in `dir` for `identity`, takes its lock, removes unfinished
    /// `.tmp` files and counts what is there.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        identity: Identity,
        gauges: Arc<SpoolGauges>,
    ) -> Result<Self> {
        let dead = dir.join("dead");
        fs::create_dir_all(&dead)
            .with_context(|| format!("creating the spool directory {}", dead.display()))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .with_context(|| format!("opening {}", dir.join("lock").display()))?;
        if lock.try_lock().is_err() {
            bail!(
                "the spool directory {} is in use by another nfpg process (two collectors must \
                 not share a spool; give each its own --spool-dir)",
                dir.display()
            );
        }
        let spool = Self {
            dir: dir.to_path_buf(),
            dead,
            max_bytes,
            identity,
            gauges,
            counter: AtomicU64::new(0),
            own_segments: AtomicU64::new(0),
            instance: String::new(),
            _lock: lock,
        };
        for e in fs::read_dir(dir)?.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "tmp") {
                tracing::warn!("removing an unfinished spool file {}", p.display());
                let _ = fs::remove_file(&p);
            }
        }
        let mut own = 0;
        for p in spool.list()? {
            match read_header(&p) {
                Ok(h) if h.identity == spool.identity => {
                    own += 1;
                    spool.own_segments.fetch_add(1, Relaxed);
                    spool.gauges.segments.fetch_add(1, Relaxed);
                    spool
                        .gauges
                        .bytes
                        .fetch_add(fs::metadata(&p).map_or(0, |m| m.len()), Relaxed);
                }
                Ok(h) => {
                    spool.gauges.foreign_segments.fetch_add(1, Relaxed);
                    tracing::warn!(
                        "spool segment {} was written for another database ({}), not {}: kept, \
                         not replayed; load it by hand there or point nfpg back at it",
                        p.display(),
                        h.identity,
                        spool.identity
                    );
                }
                Err(e) => {
                    spool.gauges.foreign_segments.fetch_add(1, Relaxed);
                    tracing::warn!("spool segment {} is unreadable, kept: {e:#}", p.display());
                }
            }
        }
        if own > 0 {
            tracing::info!(
                "spool {}: {own} segment(s), {} bytes to replay",
                dir.display(),
                spool.bytes()
            );
        }
        Ok(spool)
    }

    /// Sets the instance name new segments carry with their marker.
    pub fn with_instance(mut self, instance: &str) -> Self {
        self.instance = instance.to_string();
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Bytes of segments waiting to be replayed.
    pub fn bytes(&self) -> u64 {
        self.gauges.bytes.load(Relaxed)
    }

    /// Segments waiting to be replayed (in every spool sharing these gauges).
    pub fn segments(&self) -> u64 {
        self.gauges.segments.load(Relaxed)
    }

    /// Segments of this spool waiting to be replayed.
    pub fn own_segments(&self) -> u64 {
        self.own_segments.load(Relaxed)
    }

    /// Segments kept for another database (or unreadable).
    pub fn foreign(&self) -> u64 {
        self.gauges.foreign_segments.load(Relaxed)
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn header(
        &self,
        marker: Marker,
        shape: Shape,
        rows: u64,
        error: Option<String>,
    ) -> SegmentHeader {
        SegmentHeader {
            nfpg_spool: 1,
            identity: self.identity.clone(),
            marker,
            shape,
            rows,
            created_us: unix_us(),
            error,
            instance: self.instance.clone(),
        }
    }

    /// Every `.seg` file in the spool (not dead letters), oldest first.
    pub fn list(&self) -> Result<Vec<PathBuf>> {
        list_segments(&self.dir)
    }

    /// Writes one segment holding `tuples` (binary COPY tuples, no header or trailer) of
    /// `rows` rows, meant to be committed with `marker`. Durable when it returns.
    pub fn write(
        &self,
        marker: Marker,
        shape: Shape,
        tuples: &[Piece<'_>],
        rows: u64,
    ) -> Result<u64, SpoolError> {
        let header = self.header(marker, shape, rows, None);
        let len = segment_len(&header, tuples);
        let used = self.gauges.bytes.fetch_add(len, Relaxed);
        if used + len > self.max_bytes {
            self.gauges.bytes.fetch_sub(len, Relaxed);
            return Err(SpoolError::Full {
                used,
                max: self.max_bytes,
            });
        }
        let name = format!(
            "{:020}-{:06}-{:016x}-{}.seg",
            header.created_us,
            self.counter.fetch_add(1, Relaxed) % 1_000_000,
            marker.writer as u64,
            marker.seq
        );
        match write_segment(&self.dir, &name, &header, tuples) {
            Ok(()) => {
                self.gauges.segments.fetch_add(1, Relaxed);
                self.own_segments.fetch_add(1, Relaxed);
                Ok(len)
            }
            Err(e) => {
                self.gauges.bytes.fetch_sub(len, Relaxed);
                Err(e.into())
            }
        }
    }

    /// Reads a segment of this spool.
    pub fn read(&self, path: &Path) -> Result<Segment> {
        read_segment(path)
    }

    /// Deletes a replayed segment.
    pub fn remove(&self, seg: &Segment) -> Result<()> {
        fs::remove_file(&seg.path)
            .with_context(|| format!("removing the replayed segment {}", seg.path.display()))?;
        self.gauges
            .bytes
            .fetch_sub(seg.file_len.min(self.bytes()), Relaxed);
        self.gauges.segments.fetch_sub(1, Relaxed);
        self.own_segments.fetch_sub(1, Relaxed);
        Ok(())
    }

    /// Writes rows PostgreSQL refused as a dead letter named after their segment and row
    /// range (so doing it again after a crash replaces the file instead of adding one).
    pub fn dead_letter(
        &self,
        marker: Marker,
        shape: Shape,
        first_row: usize,
        tuples: &[u8],
        rows: u64,
        error: &str,
    ) -> Result<PathBuf> {
        let header = self.header(marker, shape, rows, Some(error.to_string()));
        let name = format!(
            "{:016x}-{}-row{first_row}.seg",
            marker.writer as u64, marker.seq
        );
        write_segment(&self.dead, &name, &header, &[Piece::Bytes(tuples)])?;
        Ok(self.dead.join(name))
    }
}

/// `.seg` files of a directory, by name (= creation order).
pub fn list_segments(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    Ok(v)
}

fn header_json(h: &SegmentHeader) -> Vec<u8> {
    serde_json::to_vec(h).unwrap_or_default()
}

fn segment_len(h: &SegmentHeader, tuples: &[Piece<'_>]) -> u64 {
    let body: usize = tuples.iter().map(Piece::len).sum();
    (HEADER.len() + header_json(h).len() + body + TRAILER.len()) as u64
}

/// The COPY signature, flags, the extension length and the JSON header.
fn copy_header(h: &SegmentHeader) -> Vec<u8> {
    let json = header_json(h);
    let mut out = Vec::with_capacity(HEADER.len() + json.len());
    // Signature (11 bytes) and flags (4); then the extension length and the extension.
    out.extend_from_slice(&HEADER[..15]);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out
}

/// Writes a segment whose tuples are `tuples` one after the other (the batches of one COPY;
/// v5 rows encoded on the way).
fn write_segment(
    dir: &Path,
    name: &str,
    h: &SegmentHeader,
    tuples: &[Piece<'_>],
) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let done = dir.join(name);
    let mut f = File::create(&tmp)?;
    f.write_all(&copy_header(h))?;
    copy::stream(tuples, |chunk| f.write_all(chunk))?;
    f.write_all(TRAILER)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &done)?;
    File::open(dir)?.sync_all()
}

/// The header of a segment file, without reading its rows.
pub fn read_header(path: &Path) -> Result<SegmentHeader> {
    use std::io::Read;
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut head = [0u8; 19];
    f.read_exact(&mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    let ext = parse_signature(&head, path)?;
    let mut json = vec![0u8; ext];
    f.read_exact(&mut json)?;
    serde_json::from_slice(&json).with_context(|| format!("the header of {}", path.display()))
}

fn parse_signature(head: &[u8], path: &Path) -> Result<usize> {
    if head.len() < 19 || head[..11] != HEADER[..11] {
        bail!("{} is not a binary COPY file", path.display());
    }
    let ext = u32::from_be_bytes([head[15], head[16], head[17], head[18]]) as usize;
    if ext == 0 || ext > 1 << 20 {
        bail!("{} has no nfpg spool header", path.display());
    }
    Ok(ext)
}

/// A whole segment file.
pub fn read_segment(path: &Path) -> Result<Segment> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_segment(path, &bytes)
}

/// A segment from the bytes of its file (`path` names it, in errors and in
/// [`Segment::path`]): what [`read_segment`] does once the file is read, apart so that it can
/// be fed arbitrary bytes (the `spool_segment` fuzz target).
pub fn parse_segment(path: &Path, bytes: &[u8]) -> Result<Segment> {
    let ext = parse_signature(bytes, path)?;
    let start = 19 + ext;
    if bytes.len() < start + TRAILER.len() || bytes[bytes.len() - 2..] != *TRAILER {
        bail!("{} is truncated (no COPY trailer)", path.display());
    }
    let header: SegmentHeader = serde_json::from_slice(&bytes[19..start])
        .with_context(|| format!("the header of {}", path.display()))?;
    Ok(Segment {
        path: path.to_path_buf(),
        header,
        tuples: bytes[start..bytes.len() - 2].to_vec(),
        file_len: bytes.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(db: &str) -> Identity {
        Identity::of(&format!("host=/tmp/x port=5433 dbname={db}"), "netflow").unwrap()
    }

    /// Two tuples of two int2 fields each.
    fn tuples() -> Vec<u8> {
        let mut t = Vec::new();
        for v in [1i16, 2] {
            t.extend_from_slice(&2i16.to_be_bytes());
            for _ in 0..2 {
                t.extend_from_slice(&2i32.to_be_bytes());
                t.extend_from_slice(&v.to_be_bytes());
            }
        }
        t
    }

    #[test]
    fn identity_leaves_out_the_password() {
        let a = Identity::of("postgres://u:secret@db.example:5433/flows", "netflow").unwrap();
        assert_eq!(a.server, "host=db.example port=5433");
        assert_eq!(a.database, "flows");
        assert!(!format!("{a}").contains("secret"));
    }

    #[test]
    fn segments_round_trip_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 1 << 20, identity("a"), Arc::default()).unwrap();
        let m = Marker { writer: -5, seq: 7 };
        let len = s
            .write(m, Shape::Basic, &[Piece::Bytes(&tuples())], 2)
            .unwrap();
        assert_eq!((s.segments(), s.bytes()), (1, len));
        let files = s.list().unwrap();
        assert_eq!(files.len(), 1);
        let seg = s.read(&files[0]).unwrap();
        assert_eq!(seg.header.marker, m);
        assert_eq!(seg.header.rows, 2);
        assert_eq!(seg.tuples, tuples());
        assert_eq!(seg.row_offsets().unwrap(), vec![0, 14, 28]);
        s.remove(&seg).unwrap();
        assert_eq!((s.segments(), s.bytes()), (0, 0));
    }

    #[test]
    fn full_spool_refuses_and_counts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 100, identity("a"), Arc::default()).unwrap();
        let m = Marker { writer: 1, seq: 1 };
        assert!(matches!(
            s.write(m, Shape::Basic, &[Piece::Bytes(&[0u8; 200])], 1),
            Err(SpoolError::Full { .. })
        ));
        assert_eq!((s.segments(), s.bytes()), (0, 0));
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn one_process_per_directory_and_foreign_segments_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let a = Spool::open(dir.path(), 1 << 20, identity("a"), Arc::default()).unwrap();
            assert!(Spool::open(dir.path(), 1 << 20, identity("a"), Arc::default()).is_err());
            a.write(
                Marker { writer: 1, seq: 1 },
                Shape::Basic,
                &[Piece::Bytes(&tuples())],
                2,
            )
            .unwrap();
        }
        let b = Spool::open(dir.path(), 1 << 20, identity("b"), Arc::default()).unwrap();
        assert_eq!((b.segments(), b.foreign()), (0, 1));
        assert_eq!(b.list().unwrap().len(), 1, "kept on disk");
    }
}
