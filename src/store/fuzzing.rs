//! The body of the `spool_segment` fuzz target: a spool segment file read back from arbitrary
//! bytes, as replay and `nfpg spool` read one (a segment on disk may be truncated, damaged or
//! not nfpg's at all). Shared by the cargo-fuzz target (`fuzz/fuzz_targets/spool_segment.rs`)
//! and the corpus replay in `cargo test` (`tests/fuzz_corpus.rs`), so the two cannot drift.
//!
//! Not part of the API: hidden from the documentation, used by no stage.

use std::path::Path;

use super::copy::copy_statement;
use super::spool::{parse_segment, tuple_offsets};

/// Target `spool_segment`: the input as a whole segment file ([`parse_segment`], then its
/// rows, as replay splits them), and as a bare tuple stream ([`tuple_offsets`]).
///
/// Checks: the tuples lie inside the file, between the COPY header with its JSON and the
/// trailer; row offsets start at 0, increase, end at the end of the tuples, and number at
/// most one per two bytes (a tuple is at least its 2-byte field count).
pub fn spool_segment(data: &[u8]) {
    if let Ok(seg) = parse_segment(Path::new("fuzz.seg"), data) {
        assert_eq!(seg.file_len, data.len() as u64);
        assert!(
            19 + seg.tuples.len() + 2 <= data.len(),
            "spool: tuples longer than the file"
        );
        let _ = copy_statement("\"netflow\"", seg.header.shape);
        let _ = (seg.header.identity.to_string(), seg.header.error.as_deref());
        if let Ok(offsets) = seg.row_offsets() {
            check_offsets(&offsets, seg.tuples.len());
        }
    }
    if let Ok(offsets) = tuple_offsets(data) {
        check_offsets(&offsets, data.len());
    }
}

fn check_offsets(offsets: &[usize], len: usize) {
    assert_eq!(offsets.first(), Some(&0), "spool: rows do not start at 0");
    assert_eq!(
        offsets.last(),
        Some(&len),
        "spool: rows do not end at the end"
    );
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "spool: row offsets do not increase"
    );
    assert!(
        offsets.len() <= len / 2 + 1,
        "spool: more rows than bytes allow"
    );
}
