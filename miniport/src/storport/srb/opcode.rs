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
        let fields = self.scsi_fields();
        let layout = SrbLayout {
            extended: self.is_extended(),
            scsi_status: fields.map_or(0, |f| f.scsi_status),
            sense_length: fields.map_or(0, |f| f.sense_length),
            sense_buffer: fields.map_or(0, |f| f.sense_buffer),
        };
        let opcode = fields
            .filter(|f| f.cdb_length != 0)
            .map(|f| self.read_u8(usize::from(f.cdb)));
        (layout, opcode)
    }
}
