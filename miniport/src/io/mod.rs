//! The I/O path: an SRB becomes one virtio-scsi request built in its SRB extension (BuildIo,
//! no lock), goes on its queue's ring (StartIo, under the queue lock, notify after unlocking),
//! and comes back from the used ring as one completion with the status, sense and residual the
//! device reported (ISR/DPC, under the queue lock).
//!
//! Every SRB that enters is completed exactly once: refused ones at once, queued ones when the
//! device uses them or when a reset takes them back.

#![forbid(unsafe_code)]

use core::sync::atomic::Ordering;

use virtio_core::scsi::{CmdResp, CmdRespHeader, Response};
use zerocopy::FromBytes;

use crate::srb_extension::{CMD_RESP_AT, CONTEXT_AT, CONTEXT_LEN, RequestContext, RequestState};
use crate::storport::request::RequestView;
use crate::storport::srb::Srb;

mod build;
mod complete;
pub mod device_identification;
mod host;
mod submit;

pub use build::build_io;
#[cfg(test)]
use build::unspecified_direction;
pub use complete::{complete_kept, drain, fail_in_flight, salvage, scan_in_flight};
#[cfg(test)]
use complete::{is_on_ring_as, plain_success, srb_status};
pub use host::IoHost;
pub use submit::start_io;

/// Bytes of the response header the device must write for the response to be read at all
/// (`sense_len`, `resid`, `status_qualifier`, `status`, `response`).
const RESPONSE_HEADER_LEN: u32 = 12;

/// What the response header holds before the device answers: every field zero except
/// `response`, which reads `VIRTIO_SCSI_S_FAILURE`. A used element whose header the device never
/// wrote then completes as a failure; a zeroed header would read as `VIRTIO_SCSI_S_OK` with
/// status GOOD, and a WRITE the device never performed would complete SUCCESS (found by the
/// hostile-device sessions).
const UNWRITTEN_RESPONSE_HEADER: [u8; RESPONSE_HEADER_LEN as usize] =
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, Response::Failure as u8];

/// The window of the response the completion reads words from: the header and the first
/// bytes of the sense that follows it, which every response has (a whole number of words, as
/// `fields` takes).
const RESPONSE_WINDOW: usize = 16;
const _: () = assert!(
    RESPONSE_WINDOW >= RESPONSE_HEADER_LEN as usize && RESPONSE_WINDOW <= size_of::<CmdResp>()
);

/// One request's memory in its SRB extension, as the floor's bounds-checked view (its parts at
/// the constant offsets every layout keeps them at).
#[derive(Clone, Copy, Debug)]
struct Request<'v> {
    view: &'v RequestView,
}

impl Request<'_> {
    fn context(self) -> Option<RequestContext> {
        let mut bytes = [0u8; CONTEXT_LEN];
        self.view
            .read_bytes(CONTEXT_AT, &mut bytes)
            .then(|| RequestContext::read_from_bytes(&bytes).ok())
            .flatten()
    }

    /// Moves the request to `state` (one byte; the rest of the context is unchanged).
    fn set_state(self, state: RequestState) {
        self.view
            .store_u8(CONTEXT_AT + RequestContext::STATE_OFFSET, state as u8);
    }

    /// The words of the context a completion reads ([`Completing::from_words`]): the first
    /// three, loaded one by one from a window checked once, instead of the whole context copied
    /// out.
    #[inline]
    fn completing_words(self) -> Option<[u64; 3]> {
        let context = self.view.fields::<CONTEXT_LEN>(CONTEXT_AT)?;
        Some([0, 8, 16].map(|word| context.load_u64(0, word, Ordering::Relaxed)))
    }

    /// The response's fixed head as the device wrote it: three 32-bit loads from a window
    /// checked once.
    #[inline]
    fn response_head(self) -> Option<CmdRespHeader> {
        let head = self.view.fields::<RESPONSE_WINDOW>(CMD_RESP_AT)?;
        let word = |field: usize| head.load_u32(0, field, Ordering::Relaxed);
        let last = word(8).to_le_bytes();
        Some(CmdRespHeader {
            sense_len: word(0).into(),
            resid: word(4).into(),
            status_qualifier: u16::from_le_bytes([last[0], last[1]]).into(),
            status: last[2],
            response: last[3],
        })
    }

    /// The response's residual and its last word (`status_qualifier`, `status`, `response`,
    /// little-endian), as [`Self::response_head`] loads them, without the sense length: what
    /// deciding a plain success needs ([`complete::plain_success`]).
    #[inline]
    fn response_outcome_words(self) -> Option<[u32; 2]> {
        let head = self.view.fields::<RESPONSE_WINDOW>(CMD_RESP_AT)?;
        Some([4, 8].map(|field| head.load_u32(0, field, Ordering::Relaxed)))
    }
}

/// The fields of a request's context its completion reads, all in the context's first three
/// words (asserted below, so a layout change that moves one out fails to build).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Completing {
    data_length: u32,
    sense_capacity: u32,
    token: u16,
    state: u8,
    direction: u8,
    target: u8,
    opcode: u8,
    lun: u16,
    vpd_page: u16,
}

/// The `SIZE`-byte little-endian field at byte `OFFSET` of the context, from its first three
/// words.
const fn context_field<const OFFSET: usize, const SIZE: usize>(words: &[u64; 3]) -> u64 {
    const {
        assert!(OFFSET + SIZE <= 24 && OFFSET % 8 + SIZE <= 8 && OFFSET.is_multiple_of(SIZE));
    }
    let value = words[OFFSET / 8] >> ((OFFSET % 8) * 8);
    if SIZE == 8 {
        value
    } else {
        value & ((1 << (SIZE * 8)) - 1)
    }
}

impl Completing {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "each field is cut out of its own bytes"
    )]
    const fn from_words(words: &[u64; 3]) -> Self {
        use core::mem::offset_of;
        macro_rules! field {
            ($name:ident, $ty:ty) => {
                context_field::<{ offset_of!(RequestContext, $name) }, { size_of::<$ty>() }>(words)
                    as $ty
            };
        }
        Self {
            data_length: field!(data_length, u32),
            sense_capacity: field!(sense_capacity, u32),
            token: field!(token, u16),
            state: field!(state, u8),
            direction: field!(direction, u8),
            target: field!(target, u8),
            opcode: field!(opcode, u8),
            lun: field!(lun, u16),
            vpd_page: field!(vpd_page, u16),
        }
    }
}

/// What BuildIo decided for an SRB.
pub enum Built {
    /// Ready for StartIo.
    Ready(Srb),
    /// A request StartIo performs itself (aborts and resets, see [`crate::recovery::tmf`]).
    Control(Srb),
    /// Completed already (refused, or nothing to do).
    Completed,
}

/// Completes `srb` with `status`.
pub fn complete<H: IoHost>(host: &H, mut srb: Srb, status: u8) {
    srb.set_srb_status(status);
    host.extension().complete_request(srb);
}

#[cfg(test)]
mod tests;
