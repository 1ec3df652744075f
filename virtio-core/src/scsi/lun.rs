//! The 8-byte virtio-scsi `lun` field (virtio 1.x section 5.6.6.1): target plus single-level LUN.
//!
//! The spec allows one format for addressing a target and logical unit: byte 0 is 1, byte 1 is
//! the target, bytes 2-3 are a SAM single-level LUN structure, bytes 4-7 are zero. That gives
//! 256 targets and 16384 LUNs per target.
//!
//! Encoding (SAM-5 section 4.7, single-level LUN structure):
//! - LUN 0-255: peripheral device addressing, `[0x00, lun]` (address method 00b, bus 0);
//! - LUN 256-16383: flat space addressing, `[0x40 | lun >> 8, lun & 0xFF]` (method 01b).
//!
//! Linux's `virtio_scsi` always uses flat space (`0x40 | lun >> 8`, even for LUN 0), vioscsi
//! always uses peripheral addressing and so cannot reach LUN 256 and above. QEMU
//! (`virtio_scsi_get_lun`) ignores the address method and takes the low 14 bits of bytes 2-3, so
//! it accepts all three. We use the SAM canonical form: peripheral below 256, which is also what
//! the most widely deployed Windows driver sends (so no device that works with vioscsi sees
//! anything new), and flat space above.
//!
//! Decoding accepts both methods for any LUN (a device may well answer in Linux's form) and
//! rejects everything else: another byte 0 (such as the REPORT LUNS well-known logical unit,
//! `0xC1 0x01`), a peripheral-method bus number other than 0, the logical-unit and extended
//! address methods, and non-zero bytes 4-7.

/// A target and single-level LUN in the virtio-scsi addressing scheme. Always valid: the LUN
/// is at most [`Lun::MAX_LUN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lun {
    target: u8,
    lun: u16,
}

/// Why a target/LUN pair or an 8-byte LUN field is not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LunError {
    /// The LUN is above [`Lun::MAX_LUN`] (14 bits).
    OutOfRange {
        /// The LUN asked for.
        lun: u16,
    },
    /// The 8 bytes are not in the one format the spec allows for a target and LUN.
    Malformed {
        /// The bytes as received.
        bytes: [u8; 8],
    },
}

impl core::fmt::Display for LunError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::OutOfRange { lun } => {
                write!(
                    f,
                    "LUN {lun} is above the highest single-level LUN {}",
                    Lun::MAX_LUN
                )
            }
            Self::Malformed { bytes } => write!(
                f,
                "LUN field {bytes:02x?} is not a target plus single-level LUN"
            ),
        }
    }
}

impl core::error::Error for LunError {}

/// Byte 0 of every LUN field that addresses a target and logical unit.
const LUN_FORMAT: u8 = 1;
/// Address method bits (7-6) of byte 2.
const ADDRESS_METHOD_MASK: u8 = 0xC0;
/// Address method 00b: peripheral device addressing.
const PERIPHERAL: u8 = 0x00;
/// Address method 01b: flat space addressing.
const FLAT_SPACE: u8 = 0x40;

impl Lun {
    /// The highest LUN the single-level structure can carry (14 bits).
    pub const MAX_LUN: u16 = 0x3FFF;

    /// Target `target`, LUN `lun`.
    ///
    /// # Errors
    /// [`LunError::OutOfRange`] if `lun` is above [`Lun::MAX_LUN`].
    pub const fn new(target: u8, lun: u16) -> Result<Self, LunError> {
        if lun > Self::MAX_LUN {
            return Err(LunError::OutOfRange { lun });
        }
        Ok(Self { target, lun })
    }

    /// The target number.
    #[must_use]
    pub const fn target(self) -> u8 {
        self.target
    }

    /// The logical unit number.
    #[must_use]
    pub const fn lun(self) -> u16 {
        self.lun
    }

    /// The 8-byte `lun` field for requests.
    #[must_use]
    pub const fn encode(self) -> [u8; 8] {
        let [high, low] = self.lun.to_be_bytes();
        let method_and_high = if self.lun < 256 {
            PERIPHERAL
        } else {
            FLAT_SPACE | high
        };
        [LUN_FORMAT, self.target, method_and_high, low, 0, 0, 0, 0]
    }

    /// Reads an 8-byte `lun` field written by the device (events) or by a driver (device
    /// models).
    ///
    /// # Errors
    /// [`LunError::Malformed`] if the bytes are not a target plus single-level LUN in
    /// peripheral or flat space addressing, with bytes 4-7 zero.
    pub const fn decode(bytes: [u8; 8]) -> Result<Self, LunError> {
        let [format, target, method_and_high, low, tail @ ..] = bytes;
        let tail_is_zero = u32::from_ne_bytes(tail) == 0;
        if format != LUN_FORMAT || !tail_is_zero {
            return Err(LunError::Malformed { bytes });
        }
        let high = method_and_high & !ADDRESS_METHOD_MASK;
        let lun = match method_and_high & ADDRESS_METHOD_MASK {
            // Peripheral device addressing: the low six bits are a bus number, and bus 0 is
            // the only one a virtio-scsi LUN field can name.
            PERIPHERAL if high == 0 => low as u16,
            FLAT_SPACE => u16::from_be_bytes([high, low]),
            _ => return Err(LunError::Malformed { bytes }),
        };
        Ok(Self { target, lun })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    #[cfg_attr(
        miri,
        ignore = "tens of thousands of pure-arithmetic steps: run natively; Miri covers the same code in shorter tests"
    )]
    fn every_target_and_lun_round_trips_in_the_sam_form() {
        for target in 0..=u8::MAX {
            for lun in 0..=Lun::MAX_LUN {
                let bytes = Lun::new(target, lun).unwrap().encode();
                let [hi, lo] = lun.to_be_bytes();
                let expected_method = if lun < 256 { 0x00 } else { 0x40 | hi };
                assert_eq!(bytes, [1, target, expected_method, lo, 0, 0, 0, 0]);
                let decoded = Lun::decode(bytes).unwrap();
                assert_eq!((decoded.target(), decoded.lun()), (target, lun));
            }
        }
    }

    #[test]
    fn linux_flat_space_form_decodes_for_small_luns() {
        // Linux sets 0x40 even for LUN 0; QEMU masks it off, so must we.
        assert_eq!(
            Lun::decode([1, 2, 0x40, 0, 0, 0, 0, 0]),
            Ok(Lun::new(2, 0).unwrap())
        );
        assert_eq!(
            Lun::decode([1, 2, 0x40, 0xFF, 0, 0, 0, 0]),
            Ok(Lun::new(2, 255).unwrap())
        );
        assert_eq!(
            Lun::decode([1, 9, 0x7F, 0xFF, 0, 0, 0, 0]),
            Ok(Lun::new(9, 16383).unwrap())
        );
    }

    #[test]
    fn out_of_range_luns_are_refused() {
        assert_eq!(Lun::new(0, 16384), Err(LunError::OutOfRange { lun: 16384 }));
        assert_eq!(
            Lun::new(0, u16::MAX),
            Err(LunError::OutOfRange { lun: u16::MAX })
        );
    }

    #[test]
    fn malformed_fields_are_refused_with_their_bytes() {
        let cases: [[u8; 8]; 7] = [
            [0, 0, 0, 0, 0, 0, 0, 0],          // byte 0 is not 1 (an unused event's LUN)
            [0xC1, 0x01, 0, 0, 0, 0, 0, 0],    // REPORT LUNS well-known logical unit
            [1, 0, 0x01, 0x00, 0, 0, 0, 0],    // peripheral method, bus 1
            [1, 0, 0x80, 0x01, 0, 0, 0, 0],    // logical unit addressing method
            [1, 0, 0xC0, 0x01, 0, 0, 0, 0],    // extended addressing method
            [1, 0, 0x00, 0x01, 0, 0, 0, 0x01], // non-zero second level
            [1, 0, 0x00, 0x01, 0x40, 0, 0, 0], // non-zero second level, first byte
        ];
        for bytes in cases {
            assert_eq!(
                Lun::decode(bytes),
                Err(LunError::Malformed { bytes }),
                "{bytes:02x?}"
            );
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics_and_re_encodes_consistently(
            bytes in any::<[u8; 8]>()
        ) {
            if let Ok(lun) = Lun::decode(bytes) {
                prop_assert!(lun.lun() <= Lun::MAX_LUN);
                prop_assert_eq!(bytes[1], lun.target());
                prop_assert_eq!(Lun::decode(lun.encode()), Ok(lun));
            }
        }
    }
}
