//! The decode stage: one received datagram into a batch's flow columns, by NetFlow version.
//!
//! v5 goes straight to the stateless decoder of `nfpg-wire`; v9 and IPFIX go through
//! [`netflow`], which keeps the template and sampling state shared by all shards, holds data
//! that arrives before its template ([`hold`]) and publishes changes without locks on the hot
//! path ([`shared`]). The shard owns one [`Decoder`] and never names a wire format itself.

#[doc(hidden)]
pub mod fuzzing;
pub mod hold;
pub mod netflow;
pub mod shared;

use std::sync::Arc;
use std::time::Instant;

use nfpg_wire::columns::{Columns, DatagramMeta};

use crate::flow::reason::Reason;

/// Most flows one v5 datagram can add: a shard seals its batch when fewer than this fit.
pub const MAX_FLOWS: usize = nfpg_wire::v5::MAX_COUNT as usize;

/// Why a datagram was rejected: the decoder's error, with its byte offset where it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    V5(nfpg_wire::v5::DecodeError),
    Netflow(nfpg_wire::netflow::DecodeError),
    /// More records than a whole batch holds.
    TooManyRecords(usize),
}

impl Fault {
    pub fn reason(&self) -> Reason {
        match self {
            Fault::V5(e) => Reason::from(e),
            Fault::Netflow(e) => Reason::from(e),
            Fault::TooManyRecords(_) => Reason::TooManyRecords,
        }
    }

    /// The offending value, kept with a malformed sample.
    pub fn detail(&self) -> u32 {
        match self {
            Fault::V5(e) => e.detail(),
            Fault::Netflow(e) => e.detail(),
            Fault::TooManyRecords(n) => u32::try_from(*n).unwrap_or(u32::MAX),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::V5(e) => e.fmt(f),
            Fault::Netflow(e) => e.fmt(f),
            Fault::TooManyRecords(n) => {
                write!(f, "{n} records in one datagram, more than a batch holds")
            }
        }
    }
}

/// What stopped a datagram from being decoded now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The batch has no room for its `n` rows: seal it and call again.
    NoRoom(usize),
    Fault(Fault),
}

/// One shard's decoder.
pub struct Decoder {
    netflow: netflow::Decoder,
}

impl Decoder {
    pub fn new(shared: Arc<netflow::Shared>) -> Self {
        Self {
            netflow: netflow::Decoder::new(shared),
        }
    }

    /// Decodes one datagram into `columns` (a v5 datagram needs room for [`MAX_FLOWS`];
    /// v9/IPFIX say how much they need with [`Failure::NoRoom`]), returning the number of flows
    /// appended. On `Err` nothing is appended.
    #[inline]
    pub fn datagram(
        &mut self,
        data: &[u8],
        meta: &DatagramMeta,
        columns: &mut Columns,
    ) -> Result<u16, Failure> {
        match data.get(..2) {
            Some([0, 9]) | Some([0, 10]) => {
                self.netflow
                    .datagram(data, meta, columns)
                    .map_err(|e| match e {
                        netflow::Failure::NoRoom(n) => Failure::NoRoom(n),
                        netflow::Failure::TooManyRecords(n) => {
                            Failure::Fault(Fault::TooManyRecords(n))
                        }
                        netflow::Failure::Malformed(e) => Failure::Fault(Fault::Netflow(e)),
                    })
            }
            _ => {
                nfpg_wire::v5::decode(data, meta, columns).map_err(|e| Failure::Fault(Fault::V5(e)))
            }
        }
    }

    /// Data sets held for a template this shard just learned wait to be decoded.
    pub fn has_released(&self) -> bool {
        self.netflow.has_released()
    }

    /// Decodes the next released held set (see [`netflow::Decoder::released`]).
    pub fn released(&mut self, columns: &mut Columns) -> Result<Option<u16>, Failure> {
        self.netflow.released(columns).map_err(|e| match e {
            netflow::Failure::NoRoom(n) => Failure::NoRoom(n),
            netflow::Failure::TooManyRecords(n) => Failure::Fault(Fault::TooManyRecords(n)),
            netflow::Failure::Malformed(e) => Failure::Fault(Fault::Netflow(e)),
        })
    }

    /// Gives up held data older than its bound.
    pub fn expire_held(&self, now: Instant) {
        self.netflow.expire_held(now);
    }
}
