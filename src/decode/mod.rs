//! The decode stage: one received datagram into a batch's flow columns.
//!
//! Today every datagram goes to the NetFlow v5 decoder of `nfpg-wire`; v9 and IPFIX will be
//! dispatched here by the version field, with their template state (per exporter and
//! observation domain, shared by all shards) living in this folder. The shard calls
//! [`datagram`] and never names a wire format itself.

pub mod hold;
pub mod shared;

use nfpg_wire::columns::{Columns, DatagramMeta};
pub use nfpg_wire::v5::DecodeError;

/// Most flows one datagram can add: a shard seals its batch when fewer than this fit.
pub const MAX_FLOWS: usize = nfpg_wire::v5::MAX_COUNT as usize;

/// Decodes one datagram into `columns` (which must have room for [`MAX_FLOWS`] more flows),
/// returning the number of flows appended. On error nothing is appended.
#[inline]
pub fn datagram(
    data: &[u8],
    meta: &DatagramMeta,
    columns: &mut Columns,
) -> Result<u16, DecodeError> {
    nfpg_wire::v5::decode(data, meta, columns)
}
