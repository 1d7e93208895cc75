//! NetFlow v5 tuples by byte shuffle (x86-64 SSSE3): the writers' hot loop when the CPU has it.
//!
//! A v5 record and its COPY tuple are both big-endian, and every tuple value but the two
//! flow times is either a record field widened with leading zeros (ports, counters,
//! addresses, …) or the same for the whole datagram (exporter, engine, sampling, arrival
//! time). So a tuple is the datagram's template (its constant bytes, from [`super`]) with the
//! record's bytes moved into place: per 16 bytes of tuple, one `pshufb` of each 16 bytes of
//! the record that has something there, OR'd into the template. The times are then written
//! over their (zero) place in the template.
//!
//! Owns that loop and [`prefetch`] (the cache hint the shards give before they copy records
//! into a batch; the loop gives its own for the records ahead); [`super`] owns the layout
//! (which record byte goes where, `V5_SOURCE`), builds the templates and calls [`append`],
//! falling back to its scalar loop where [`available`] says no (other CPUs, or none with
//! SSSE3). Both write the same bytes (tested).
#![allow(unsafe_code)]

/// Bytes of a template, and of what one row's stores write (a tuple is at most
/// `V5_TUPLE_LEN + 1` = 247; the rest is overwritten by the next row or left past the end).
pub(super) const ROW: usize = 256;
/// In `V5_SOURCE`: this byte comes from the template.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) const KEEP: u8 = 0xff;

// A tuple fits, and the sixteen `part!`s below write all of it.
const _: () = assert!(super::V5_TUPLE_LEN < ROW && ROW == 16 * 16);

/// Whether [`append`] can run on this CPU.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("ssse3")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Appends one tuple per 48-byte record in `records` to `out`: `templates[flagged]` with the
/// record's bytes placed as `V5_SOURCE` says, and the flow start and end (µs since 2000) that
/// `times` returns for the record, with whether it is flagged `time_suspect`. `false`, with
/// nothing appended, where the CPU cannot ([`available`]).
#[inline]
pub(super) fn append<F>(
    records: &[u8],
    templates: &[[u8; ROW]; 2],
    times: F,
    out: &mut Vec<u8>,
) -> bool
where
    F: FnMut(&[u8]) -> (i64, i64, bool),
{
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has SSSE3 (checked just above), the only feature the function enables.
        unsafe { x86::append(records, templates, times, out) };
        return true;
    }
    let _ = (records, templates, times, out);
    false
}

/// Asks the CPU to fetch the cache lines of `len` bytes from `at` into its caches (`prefetcht0`,
/// a hint: no effect on what any code reads; nothing on other CPUs). The shards call it for
/// where a datagram's records are about to be copied into a batch, before they check the
/// records: that memory was last read by a writer, on another core as often as not, so the
/// copy's stores otherwise wait for it (`--sink null --balance cpu` at 50,000 datagrams/s,
/// 6 alternating 15 s runs: 0.920 → 0.893 µs of CPU a datagram, medians, within this VM's
/// noise). `prefetchw` (the lines asked for in a writable state, where CPUID says the CPU has
/// it) measured no better (README, Performance), so this is the plain prefetch.
#[inline(always)]
pub(crate) fn prefetch(at: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in (0..len).step_by(64) {
        // SAFETY: a prefetch never faults and changes no memory, whatever address it names;
        // `wrapping_add` computes the address without claiming it is in bounds.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                at.wrapping_add(line).cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, len);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::{V5_AT, V5_SOURCE, V5_TUPLE_LEN};
    use super::ROW;
    use nfpg_wire::v5::RECORD_LEN;
    use std::arch::x86_64::{
        __m128i, _mm_loadu_si128, _mm_or_si128, _mm_prefetch, _mm_shuffle_epi8, _mm_storeu_si128,
        _MM_HINT_T0,
    };

    /// Bytes ahead of the record being encoded that are prefetched: the records were written by
    /// a shard, often on another core, and the first load of each row waited for them (a
    /// sixth of this loop's samples) although they are read in order.
    const PREFETCH_AHEAD: usize = 8 * RECORD_LEN;

    /// Per 16 bytes of tuple (`c`) and per 16 bytes of record (`k`): the `pshufb` control
    /// that moves record bytes `16k..16k + 16` into tuple bytes `16c..16c + 16` (0x80: zero).
    const MASKS: [[[u8; 16]; 3]; ROW / 16] = {
        let mut m = [[[0x80u8; 16]; 3]; ROW / 16];
        let mut j = 0;
        while j < ROW {
            let s = V5_SOURCE[j];
            if s != super::KEEP {
                m[j / 16][s as usize / 16][j % 16] = s % 16;
            }
            j += 1;
        }
        m
    };

    const _: () = assert!(RECORD_LEN == 48);

    /// Whether record part `k` has bytes for tuple part `c`.
    const fn used(c: usize, k: usize) -> bool {
        let mut i = 0;
        while i < 16 {
            if MASKS[c][k][i] != 0x80 {
                return true;
            }
            i += 1;
        }
        false
    }

    const fn mask(c: usize, k: usize) -> __m128i {
        // SAFETY: both are 16 plain bytes; every bit pattern is a valid `__m128i`.
        unsafe { std::mem::transmute::<[u8; 16], __m128i>(MASKS[c][k]) }
    }

    /// See [`super::append`].
    ///
    /// # Safety
    /// The CPU must have SSSE3.
    #[target_feature(enable = "ssse3")]
    pub(super) unsafe fn append<F>(
        records: &[u8],
        templates: &[[u8; ROW]; 2],
        mut times: F,
        out: &mut Vec<u8>,
    ) where
        F: FnMut(&[u8]) -> (i64, i64, bool),
    {
        let rows = records.len() / RECORD_LEN;
        // Every row writes ROW bytes where it starts and keeps at most V5_TUPLE_LEN + 1.
        out.reserve(rows * (V5_TUPLE_LEN + 1) + ROW);
        for r in records.chunks_exact(RECORD_LEN) {
            let (start, end, flagged) = times(r);
            let t = &templates[usize::from(flagged)];
            let at = out.len();
            assert!(out.capacity() - at >= ROW);
            // SAFETY: `r` is RECORD_LEN = 48 bytes (chunks_exact), read by three unaligned
            // 16-byte loads; `t` is ROW bytes, read by ROW / 16 unaligned loads; `out` has at
            // least ROW bytes of capacity after its length (asserted above), which the
            // unaligned stores and the two 8-byte time writes (inside the tuple) stay within.
            // `set_len` then covers only bytes just written.
            unsafe {
                // A hint, never a fault: past the slice's end it may name memory that is not
                // ours (a datagram's next records usually follow it in the batch).
                _mm_prefetch::<_MM_HINT_T0>(r.as_ptr().wrapping_add(PREFETCH_AHEAD).cast());
                let src = r.as_ptr().cast::<__m128i>();
                let rec = [
                    _mm_loadu_si128(src),
                    _mm_loadu_si128(src.add(1)),
                    _mm_loadu_si128(src.add(2)),
                ];
                let tp = t.as_ptr().cast::<__m128i>();
                let dst = out.as_mut_ptr().add(at);
                macro_rules! part {
                    ($c:literal) => {{
                        let mut v = _mm_loadu_si128(tp.add($c));
                        if const { used($c, 0) } {
                            v = _mm_or_si128(v, _mm_shuffle_epi8(rec[0], const { mask($c, 0) }));
                        }
                        if const { used($c, 1) } {
                            v = _mm_or_si128(v, _mm_shuffle_epi8(rec[1], const { mask($c, 1) }));
                        }
                        if const { used($c, 2) } {
                            v = _mm_or_si128(v, _mm_shuffle_epi8(rec[2], const { mask($c, 2) }));
                        }
                        _mm_storeu_si128(dst.add(16 * $c).cast(), v);
                    }};
                }
                part!(0);
                part!(1);
                part!(2);
                part!(3);
                part!(4);
                part!(5);
                part!(6);
                part!(7);
                part!(8);
                part!(9);
                part!(10);
                part!(11);
                part!(12);
                part!(13);
                part!(14);
                part!(15);
                dst.add(V5_AT[0])
                    .cast::<[u8; 8]>()
                    .write_unaligned(start.to_be_bytes());
                dst.add(V5_AT[1])
                    .cast::<[u8; 8]>()
                    .write_unaligned(end.to_be_bytes());
                out.set_len(at + V5_TUPLE_LEN + usize::from(flagged));
            }
        }
    }
}
