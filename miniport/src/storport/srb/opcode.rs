//! What the request record keeps of a validated SRB ([`crate::storport::request`]): its
//! layout, and its operation code, by which the record knows whether StorPort mapped the SRB's
//! data buffer.

use super::{Srb, SrbLayout};

impl Srb {
    /// The shape the SRB record keeps: the layout (see [`Srb::layout`]) and the operation
    /// code, read with one look at the SCSI fields.
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "on every I/O; left out of line it costs instructions per I/O (cargo xtask bench)"
    )]
    #[inline(always)]
    pub(in crate::storport) fn record_shape(&self) -> (SrbLayout, Option<u8>) {
        let opcode = (self.cdb_length != 0).then(|| self.read_u8(self.scsi.cdb()));
        (self.layout(), opcode)
    }
}
