//! The Windows `GUID` as it appears in WMI buffers: 16 bytes, its integer fields little-endian.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// A `GUID` (guiddef.h): `Data1` (u32), `Data2` (u16), `Data3` (u16), `Data4` (8 bytes).
///
/// On Windows the integer fields are stored in the machine's (little-endian) order, so the
/// registry form `{BDC67EFA-E5E7-4777-B13C-621459657099}` is stored as
/// `FA 7E C6 BD E7 E5 77 47 B1 3C 62 14 59 65 70 99`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct Guid {
    /// `Data1`.
    pub data1: U32,
    /// `Data2`.
    pub data2: U16,
    /// `Data3`.
    pub data3: U16,
    /// `Data4`, stored as written in the registry form (big-endian order).
    pub data4: [u8; 8],
}

const _: () = assert!(size_of::<Guid>() == 16);

impl Guid {
    /// Builds a GUID from the fields of its registry form `{data1-data2-data3-data4}`.
    #[must_use]
    pub const fn from_fields(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> Self {
        Self {
            data1: U32::new(data1),
            data2: U16::new(data2),
            data3: U16::new(data3),
            data4,
        }
    }

    /// The all-zero GUID (`GUID_NULL`).
    pub const NULL: Self = Self::from_fields(0, 0, 0, [0; 8]);
}

impl core::fmt::Display for Guid {
    /// The registry form, `{BDC67EFA-E5E7-4777-B13C-621459657099}`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{{{:08X}-{:04X}-{:04X}-",
            self.data1.get(),
            self.data2.get(),
            self.data3.get()
        )?;
        for (index, byte) in self.data4.iter().enumerate() {
            if index == 2 {
                f.write_str("-")?;
            }
            write!(f, "{byte:02X}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;

    use super::*;

    #[test]
    fn stored_byte_order_is_windows_order() {
        // {BDC67EFA-E5E7-4777-B13C-621459657099}, MS_SM_AdapterInformationQuery.
        let guid = Guid::from_fields(
            0xbdc6_7efa,
            0xe5e7,
            0x4777,
            [0xb1, 0x3c, 0x62, 0x14, 0x59, 0x65, 0x70, 0x99],
        );
        assert_eq!(guid.to_string(), "{BDC67EFA-E5E7-4777-B13C-621459657099}");
        assert_eq!(
            guid.as_bytes(),
            &[
                0xfa, 0x7e, 0xc6, 0xbd, 0xe7, 0xe5, 0x77, 0x47, 0xb1, 0x3c, 0x62, 0x14, 0x59, 0x65,
                0x70, 0x99
            ]
        );
        assert_ne!(guid, Guid::NULL);
    }
}
