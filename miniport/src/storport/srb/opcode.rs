//! The operation code of a validated SRB, which the request record keeps to know whether
//! StorPort mapped the SRB's data buffer ([`crate::storport::request`]).

use super::Srb;

impl Srb {
    /// The operation code (the CDB's first byte), if the SRB carries a CDB.
    #[must_use]
    pub(in crate::storport) fn opcode(&self) -> Option<u8> {
        let fields = self.scsi_fields()?;
        (fields.cdb_length != 0).then(|| self.read_u8(fields.cdb))
    }
}
