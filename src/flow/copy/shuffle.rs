//! NetFlow v5 tuples by byte shuffle (x86-64: AVX-512 VBMI, else SSSE3): the writers' hot
//! loop when the CPU has either.
//!
//! A v5 record and its COPY tuple are both big-endian, and every tuple value but the two
//! flow times is either a record field widened with leading zeros (ports, counters,
//! addresses, …) or the same for the whole datagram (exporter, engine, sampling, arrival
//! time). So a tuple is the datagram's template (its constant bytes, from [`super`]) with the
//! record's bytes moved into place. With SSSE3: per 16 bytes of tuple, one `pshufb` of each 16
//! bytes of the record that has something there, OR'd into the template. With AVX-512 VBMI
//! (Ice Lake and later, Zen 4): per 64 bytes of tuple, one `vpermb` that picks record bytes
//! from all 48 at once and keeps the template's where the record has none. The times are then
//! written over their (zero) place in the template.
//!
//! Owns that loop (one driver, `x86::rows`, with a row writer per way) and [`prefetch`] (the
//! cache hint the shards give before they copy records into a batch; the loop gives its own
//! for the records ahead); [`super`] owns the layout
//! (which record byte goes where, `V5_SOURCE`), builds the templates and calls [`append`] with
//! [`Shuffle::best`], falling back to its scalar loop where that is `None` (other CPUs, or
//! none with SSSE3). All write the same bytes (tested, each way this CPU has).
#![allow(unsafe_code)]

/// Bytes of a template, and of what one row's stores write (a tuple is at most
/// `V5_TUPLE_LEN + 1` = 247; the rest is overwritten by the next row or left past the end).
pub(super) const ROW: usize = 256;
/// In `V5_SOURCE`: this byte comes from the template.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) const KEEP: u8 = 0xff;

// A tuple fits, and the sixteen (SSSE3) or four (VBMI) `part!`s below write all of it.
const _: () = assert!(super::V5_TUPLE_LEN < ROW && ROW == 16 * 16 && ROW == 4 * 64);

/// A way to build v5 tuples by byte shuffle, for the CPUs that have it.
///
/// `cargo bench --bench pipeline -- copy_encode/v5_tuples` (2-core Xeon VM with both, 8,190
/// rows of 30-record datagrams, one run, hot cache): 43.4 µs by SSSE3, 37.5 by VBMI (the
/// loop is then bound by its stores, 256 bytes a row). In the collector (`--sink null
/// --balance cpu` at 50,000 datagrams/s, 5 alternating 15 s runs, medians, 64 KiB chunks):
/// VBMI 0.760 against SSSE3 0.787 µs of CPU a datagram; with 16 KiB chunks (6 runs) 0.733
/// against 0.747.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shuffle {
    /// AVX-512 VBMI (with AVX-512 BW for the masked load): one `vpermb` per 64 bytes of tuple.
    Vbmi,
    /// SSSE3: one `pshufb` per 16 bytes of tuple and 16 bytes of record that meet.
    Ssse3,
}

impl Shuffle {
    /// Every way, the fastest first.
    pub const ALL: [Shuffle; 2] = [Shuffle::Vbmi, Shuffle::Ssse3];

    /// Whether this CPU can run this way (`is_x86_feature_detected!` caches what it found, so
    /// this is a few loads).
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Shuffle::Vbmi => {
                    std::arch::is_x86_feature_detected!("avx512vbmi")
                        && std::arch::is_x86_feature_detected!("avx512bw")
                        && std::arch::is_x86_feature_detected!("avx512f")
                }
                Shuffle::Ssse3 => std::arch::is_x86_feature_detected!("ssse3"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }

    /// The fastest way this CPU has, if any.
    pub fn best() -> Option<Shuffle> {
        Shuffle::ALL.into_iter().find(|s| s.available())
    }
}

/// Appends one tuple per 48-byte record in `records` to `out`, `how`: `templates[flagged]` with
/// the record's bytes placed as `V5_SOURCE` says, and the flow start and end (µs since 2000)
/// that `times` returns for the record, with whether it is flagged `time_suspect`. `false`,
/// with nothing appended, where the CPU cannot ([`Shuffle::available`]).
#[inline]
pub(super) fn append<F>(
    how: Shuffle,
    records: &[u8],
    templates: &[[u8; ROW]; 2],
    times: F,
    out: &mut Vec<u8>,
) -> bool
where
    F: FnMut(&[u8]) -> (i64, i64, bool),
{
    #[cfg(target_arch = "x86_64")]
    if how.available() {
        match how {
            // SAFETY: the CPU has AVX-512 F, BW and VBMI (checked just above), the features the
            // function enables.
            Shuffle::Vbmi => unsafe { x86::append_vbmi(records, templates, times, out) },
            // SAFETY: the CPU has SSSE3 (checked just above), the only feature the function
            // enables.
            Shuffle::Ssse3 => unsafe { x86::append(records, templates, times, out) },
        }
        return true;
    }
    let _ = (how, records, templates, times, out);
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
        __m128i, __m512i, _mm512_loadu_si512, _mm512_mask_permutexvar_epi8,
        _mm512_maskz_loadu_epi8, _mm512_storeu_si512, _mm_loadu_si128, _mm_or_si128, _mm_prefetch,
        _mm_shuffle_epi8, _mm_storeu_si128, _MM_HINT_T0,
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

    /// The loop both ways share: per record, its times and its template, room for ROW bytes,
    /// the prefetch of the records ahead, `row` to write the tuple's ROW bytes, then the times
    /// over their place and the length.
    ///
    /// `row(record, template, dst)` gets the record's 48 bytes, the template's ROW bytes and a
    /// pointer with ROW bytes of room (asserted here before each call), and writes those ROW
    /// bytes, no more. Inlined into each `#[target_feature]` function, whose closures inherit
    /// its features.
    #[inline(always)]
    fn rows<F, W>(
        records: &[u8],
        templates: &[[u8; ROW]; 2],
        mut times: F,
        out: &mut Vec<u8>,
        mut row: W,
    ) where
        F: FnMut(&[u8]) -> (i64, i64, bool),
        W: FnMut(&[u8], &[u8; ROW], *mut u8),
    {
        let rows = records.len() / RECORD_LEN;
        // Every row writes ROW bytes where it starts and keeps at most V5_TUPLE_LEN + 1.
        out.reserve(rows * (V5_TUPLE_LEN + 1) + ROW);
        for r in records.chunks_exact(RECORD_LEN) {
            let (start, end, flagged) = times(r);
            let t = &templates[usize::from(flagged)];
            let at = out.len();
            assert!(out.capacity() - at >= ROW);
            // A hint, never a fault: past the slice's end it may name memory that is not ours
            // (a datagram's next records usually follow it in the batch).
            // SAFETY: a prefetch never faults and changes no memory; `wrapping_add` computes
            // the address without claiming it is in bounds.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(r.as_ptr().wrapping_add(PREFETCH_AHEAD).cast()) };
            // SAFETY: `out` has at least ROW bytes of capacity after its length (asserted
            // above): `row` writes those, and the two 8-byte time writes lie inside the tuple
            // (V5_AT[0..2] + 8 <= V5_TUPLE_LEN < ROW). `set_len` then covers only bytes just
            // written.
            unsafe {
                let dst = out.as_mut_ptr().add(at);
                row(r, t, dst);
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

    /// See [`super::append`]; by `pshufb`.
    ///
    /// # Safety
    /// The CPU must have SSSE3.
    #[target_feature(enable = "ssse3")]
    pub(super) unsafe fn append<F>(
        records: &[u8],
        templates: &[[u8; ROW]; 2],
        times: F,
        out: &mut Vec<u8>,
    ) where
        F: FnMut(&[u8]) -> (i64, i64, bool),
    {
        rows(records, templates, times, out, |r, t, dst| {
            // SAFETY: `r` is RECORD_LEN = 48 bytes, read by three unaligned 16-byte loads; `t`
            // is ROW bytes, read by ROW / 16 unaligned loads; `dst` has ROW bytes of room
            // (`rows`), written by ROW / 16 unaligned stores.
            unsafe {
                let src = r.as_ptr().cast::<__m128i>();
                let rec = [
                    _mm_loadu_si128(src),
                    _mm_loadu_si128(src.add(1)),
                    _mm_loadu_si128(src.add(2)),
                ];
                let tp = t.as_ptr().cast::<__m128i>();
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
            }
        });
    }

    /// Per 64 bytes of tuple (`c`): for each byte, the record byte `vpermb` puts there (0
    /// where the template's is kept).
    const INDEX: [[u8; 64]; ROW / 64] = {
        let mut m = [[0u8; 64]; ROW / 64];
        let mut j = 0;
        while j < ROW {
            let s = V5_SOURCE[j];
            if s != super::KEEP {
                m[j / 64][j % 64] = s;
            }
            j += 1;
        }
        m
    };

    /// Per 64 bytes of tuple: bit `i` set where byte `i` comes from the record.
    const FROM_RECORD: [u64; ROW / 64] = {
        let mut m = [0u64; ROW / 64];
        let mut j = 0;
        while j < ROW {
            if V5_SOURCE[j] != super::KEEP {
                m[j / 64] |= 1 << (j % 64);
            }
            j += 1;
        }
        m
    };

    /// The record's bytes in a 64-byte load: the first 48.
    const RECORD_BYTES: u64 = (1 << RECORD_LEN) - 1;

    /// See [`super::append`]; by `vpermb`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VBMI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn append_vbmi<F>(
        records: &[u8],
        templates: &[[u8; ROW]; 2],
        times: F,
        out: &mut Vec<u8>,
    ) where
        F: FnMut(&[u8]) -> (i64, i64, bool),
    {
        // SAFETY: each `INDEX` entry is 64 bytes, read by one unaligned 64-byte load.
        let index: [__m512i; ROW / 64] =
            std::array::from_fn(|c| unsafe { _mm512_loadu_si512(INDEX[c].as_ptr().cast()) });
        rows(records, templates, times, out, |r, t, dst| {
            // SAFETY: `r` is RECORD_LEN = 48 bytes, read by one 64-byte load masked to its
            // first 48 (a masked-off byte is neither read nor able to fault); `t` is ROW
            // bytes, read by ROW / 64 unaligned loads; `dst` has ROW bytes of room (`rows`),
            // written by ROW / 64 unaligned stores.
            unsafe {
                let rec = _mm512_maskz_loadu_epi8(RECORD_BYTES, r.as_ptr().cast());
                let tp = t.as_ptr();
                macro_rules! part {
                    ($c:literal) => {{
                        // The template's bytes, the record's where FROM_RECORD says.
                        let v = _mm512_mask_permutexvar_epi8(
                            _mm512_loadu_si512(tp.add(64 * $c).cast()),
                            FROM_RECORD[$c],
                            index[$c],
                            rec,
                        );
                        _mm512_storeu_si512(dst.add(64 * $c).cast(), v);
                    }};
                }
                part!(0);
                part!(1);
                part!(2);
                part!(3);
            }
        });
    }
}
