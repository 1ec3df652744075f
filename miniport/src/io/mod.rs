//! The I/O path: an SRB becomes one virtio-scsi request built in its SRB extension (BuildIo,
//! no lock), goes on its queue's ring (StartIo, under the queue lock, notify after unlocking),
//! and comes back from the used ring as one completion with the status, sense and residual the
//! device reported (ISR/DPC, under the queue lock).
//!
//! Every SRB that enters is completed exactly once: refused ones at once, queued ones when the
//! device uses them or when a reset takes them back.

#![forbid(unsafe_code)]

use virtio_core::scsi::{CmdResp, Response};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::srb_extension::{CONTEXT_LEN, RequestContext, RequestLayout, RequestState};
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
#[cfg(test)]
use complete::srb_status;
pub use complete::{complete_kept, drain, fail_in_flight, salvage, scan_in_flight};
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

/// One request's memory in its SRB extension, as the floor's bounds-checked view with the
/// adapter's layout.
#[derive(Clone, Copy, Debug)]
struct Request<'v> {
    view: &'v RequestView,
    layout: RequestLayout,
}

impl Request<'_> {
    fn context(&self) -> Option<RequestContext> {
        let mut bytes = [0u8; CONTEXT_LEN];
        self.view
            .read_bytes(self.layout.context, &mut bytes)
            .then(|| RequestContext::read_from_bytes(&bytes).ok())
            .flatten()
    }

    /// Moves the request to `state` (one byte; the rest of the context is unchanged).
    fn set_state(&self, state: RequestState) {
        self.view.store_u8(
            self.layout.context + RequestContext::STATE_OFFSET,
            state as u8,
        );
    }

    /// The response header the device wrote (everything before the sense bytes), with the
    /// sense bytes zero: most completions carry no sense, so they are read only when wanted
    /// ([`Request::read_sense`]) instead of 96 bytes on every completion.
    fn response_header(&self) -> Option<CmdResp> {
        let mut response = CmdResp::new_zeroed();
        let header = response
            .as_mut_bytes()
            .get_mut(..RESPONSE_HEADER_LEN as usize)?;
        self.view
            .read_bytes(self.layout.cmd_resp, header)
            .then_some(response)
    }

    /// Reads the first `len` sense bytes the device wrote into `response`.
    fn read_sense(&self, response: &mut CmdResp, len: usize) -> bool {
        response.sense.get_mut(..len).is_some_and(|sense| {
            self.view
                .read_bytes(self.layout.cmd_resp + RESPONSE_HEADER_LEN as usize, sense)
        })
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
