//! SCSI VPD page 0x83, Device Identification (SPC-4 section 7.8.6), parsed without trusting
//! any length in it.
//!
//! Page: byte 1 = page code 0x83, bytes 2..4 = PAGE LENGTH (big-endian), then designation
//! descriptors. Each descriptor (SPC-4 7.8.6.1, table 459):
//! - byte 0: PROTOCOL IDENTIFIER (bits 7..4), CODE SET (bits 3..0);
//! - byte 1: PIV (bit 7), ASSOCIATION (bits 5..4), DESIGNATOR TYPE (bits 3..0);
//! - byte 3: DESIGNATOR LENGTH, then the designator.
//!
//! The designator type is the low nibble of byte 1 only. vioscsi compares the whole byte 1
//! with constants such as 0x61 or 0x93 (which fold PIV and association into it), so it misses
//! NAA designators and swaps node and port names; this parser splits the fields.

/// The page code of the Device Identification VPD page.
pub const PAGE_CODE: u8 = 0x83;

/// Why a VPD 0x83 page was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VpdError {
    /// Shorter than the 4-byte page header.
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// Byte 1 is not 0x83.
    WrongPageCode(u8),
    /// PAGE LENGTH runs past the bytes transferred (a truncated page).
    PageLengthPastEnd {
        /// The PAGE LENGTH field.
        page_length: u16,
        /// Bytes after the header.
        available: usize,
    },
    /// A descriptor's 4-byte header runs past the page.
    DescriptorHeaderPastEnd {
        /// Offset of the descriptor in the page.
        offset: usize,
    },
    /// A descriptor's DESIGNATOR LENGTH runs past the page.
    DesignatorPastEnd {
        /// Offset of the descriptor in the page.
        offset: usize,
        /// Its DESIGNATOR LENGTH.
        designator_length: u8,
    },
}

impl core::fmt::Display for VpdError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::TooShort { len } => {
                write!(f, "VPD page of {len} bytes is shorter than its header")
            }
            Self::WrongPageCode(code) => write!(f, "page code {code:#04x} is not 0x83"),
            Self::PageLengthPastEnd {
                page_length,
                available,
            } => write!(
                f,
                "PAGE LENGTH {page_length} runs past the {available} bytes transferred"
            ),
            Self::DescriptorHeaderPastEnd { offset } => {
                write!(
                    f,
                    "designation descriptor header at {offset} runs past the page"
                )
            }
            Self::DesignatorPastEnd {
                offset,
                designator_length,
            } => write!(
                f,
                "designator of {designator_length} bytes at {offset} runs past the page"
            ),
        }
    }
}

impl core::error::Error for VpdError {}

/// ASSOCIATION: what the designator names (SPC-4 table 460).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Association {
    /// 00b: the logical unit.
    LogicalUnit,
    /// 01b: the target port that received the request.
    TargetPort,
    /// 10b: the SCSI target device containing the logical unit.
    TargetDevice,
    /// 11b: reserved.
    Reserved,
}

/// DESIGNATOR TYPE (SPC-4 table 461).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DesignatorType {
    /// 0h: vendor specific.
    VendorSpecific,
    /// 1h: T10 vendor ID based.
    T10VendorId,
    /// 2h: EUI-64 based.
    Eui64,
    /// 3h: NAA.
    Naa,
    /// 4h: relative target port identifier.
    RelativeTargetPort,
    /// 5h: target port group.
    TargetPortGroup,
    /// 6h: logical unit group.
    LogicalUnitGroup,
    /// 7h: MD5 logical unit identifier.
    Md5LogicalUnit,
    /// 8h: SCSI name string.
    ScsiNameString,
    /// 9h: protocol specific port identifier.
    ProtocolSpecificPort,
    /// Ah: UUID.
    Uuid,
    /// Bh..Fh: reserved, with the value.
    Reserved(u8),
}

impl DesignatorType {
    fn from_nibble(value: u8) -> Self {
        match value & 0x0F {
            0x0 => Self::VendorSpecific,
            0x1 => Self::T10VendorId,
            0x2 => Self::Eui64,
            0x3 => Self::Naa,
            0x4 => Self::RelativeTargetPort,
            0x5 => Self::TargetPortGroup,
            0x6 => Self::LogicalUnitGroup,
            0x7 => Self::Md5LogicalUnit,
            0x8 => Self::ScsiNameString,
            0x9 => Self::ProtocolSpecificPort,
            0xA => Self::Uuid,
            other => Self::Reserved(other),
        }
    }
}

/// One designation descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Designator<'a> {
    /// PROTOCOL IDENTIFIER (6 = SAS), meaningful when [`Designator::piv`] is set.
    pub protocol_identifier: u8,
    /// CODE SET: 1 binary, 2 ASCII, 3 UTF-8.
    pub code_set: u8,
    /// PIV: the protocol identifier is valid.
    pub piv: bool,
    /// ASSOCIATION.
    pub association: Association,
    /// DESIGNATOR TYPE.
    pub designator_type: DesignatorType,
    /// The designator.
    pub value: &'a [u8],
    /// The whole descriptor, header included (what SM-HBA calls the LUID).
    pub descriptor: &'a [u8],
}

/// An NAA designator (SPC-4 7.8.6.6) whose length matches its NAA field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Naa<'a> {
    /// The NAA field (the designator's top nibble): 2 IEEE extended, 3 locally assigned,
    /// 5 IEEE registered (8 bytes each), 6 IEEE registered extended (16 bytes).
    pub naa: u8,
    /// The designator, NAA nibble included.
    pub bytes: &'a [u8],
}

impl<'a> Designator<'a> {
    /// The designator as an NAA name, if it is one and its length fits its NAA field.
    #[must_use]
    pub fn naa(&self) -> Option<Naa<'a>> {
        if self.designator_type != DesignatorType::Naa {
            return None;
        }
        let naa = self.value.first()? >> 4;
        let expected = match naa {
            0x2 | 0x3 | 0x5 => 8,
            0x6 => 16,
            _ => return None,
        };
        (self.value.len() == expected).then_some(Naa {
            naa,
            bytes: self.value,
        })
    }

    /// The 8-byte NAA name (NAA 2, 3 or 5), the form a SAS address or a WWN takes.
    #[must_use]
    pub fn naa8(&self) -> Option<[u8; 8]> {
        self.naa().and_then(|naa| naa.bytes.try_into().ok())
    }

    /// The EUI-64 based designator, if this is one of a valid length (8, 12 or 16 bytes).
    #[must_use]
    pub fn eui64(&self) -> Option<&'a [u8]> {
        (self.designator_type == DesignatorType::Eui64 && matches!(self.value.len(), 8 | 12 | 16))
            .then_some(self.value)
    }

    /// The T10 vendor ID based designator split into its 8-byte vendor identification and the
    /// vendor specific rest, if long enough.
    #[must_use]
    pub fn t10_vendor_id(&self) -> Option<(&'a [u8], &'a [u8])> {
        (self.designator_type == DesignatorType::T10VendorId && self.value.len() >= 8)
            .then(|| self.value.split_at(8))
    }
}

/// A validated VPD 0x83 page: every descriptor lies inside the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceIdentification<'a> {
    descriptors: &'a [u8],
}

impl<'a> DeviceIdentification<'a> {
    /// Parses `page` (the bytes the device transferred), checking the page code, PAGE LENGTH
    /// and every descriptor length. Bytes after PAGE LENGTH are ignored.
    ///
    /// # Errors
    /// A [`VpdError`] naming the first length that does not fit.
    pub fn parse(page: &'a [u8]) -> Result<Self, VpdError> {
        let [_, page_code, length_high, length_low, rest @ ..] = page else {
            return Err(VpdError::TooShort { len: page.len() });
        };
        if *page_code != PAGE_CODE {
            return Err(VpdError::WrongPageCode(*page_code));
        }
        let page_length = u16::from_be_bytes([*length_high, *length_low]);
        let descriptors =
            rest.get(..usize::from(page_length))
                .ok_or(VpdError::PageLengthPastEnd {
                    page_length,
                    available: rest.len(),
                })?;
        let mut offset = 0;
        while offset < descriptors.len() {
            let header = descriptors
                .get(offset..offset + 4)
                .ok_or(VpdError::DescriptorHeaderPastEnd { offset: offset + 4 })?;
            let designator_length = header[3];
            let end = offset + 4 + usize::from(designator_length);
            if end > descriptors.len() {
                return Err(VpdError::DesignatorPastEnd {
                    offset: offset + 4,
                    designator_length,
                });
            }
            offset = end;
        }
        Ok(Self { descriptors })
    }

    /// The designation descriptors, in page order.
    #[must_use]
    pub fn designators(&self) -> Designators<'a> {
        Designators {
            rest: self.descriptors,
        }
    }

    /// The target port's 8-byte NAA name (association target port, type NAA): for a SAS target
    /// this is its SAS address.
    #[must_use]
    pub fn target_port_naa8(&self) -> Option<[u8; 8]> {
        self.designators()
            .filter(|designator| designator.association == Association::TargetPort)
            .find_map(|designator| designator.naa8())
    }

    /// The logical unit's best designation descriptor (header included), by preference NAA
    /// (NAA 6, then 5, then others), EUI-64, SCSI name string, T10 vendor ID.
    #[must_use]
    pub fn logical_unit_descriptor(&self) -> Option<&'a [u8]> {
        let rank = |designator: &Designator<'_>| -> Option<u8> {
            if designator.association != Association::LogicalUnit {
                return None;
            }
            if let Some(naa) = designator.naa() {
                return Some(match naa.naa {
                    0x6 => 0,
                    0x5 => 1,
                    _ => 2,
                });
            }
            if designator.eui64().is_some() {
                return Some(3);
            }
            match designator.designator_type {
                DesignatorType::ScsiNameString if !designator.value.is_empty() => Some(4),
                DesignatorType::T10VendorId if designator.t10_vendor_id().is_some() => Some(5),
                _ => None,
            }
        };
        self.designators()
            .filter_map(|designator| rank(&designator).map(|r| (r, designator.descriptor)))
            .min_by_key(|(r, _)| *r)
            .map(|(_, descriptor)| descriptor)
    }
}

/// Iterator over the descriptors of a validated page.
#[derive(Clone, Debug)]
pub struct Designators<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Designators<'a> {
    type Item = Designator<'a>;

    fn next(&mut self) -> Option<Designator<'a>> {
        // The page was validated, but this stays bounds-checked rather than relying on it.
        let [byte0, byte1, _, length, ..] = *self.rest else {
            return None;
        };
        let end = 4 + usize::from(length);
        let (descriptor, rest) = self.rest.split_at_checked(end)?;
        self.rest = rest;
        Some(Designator {
            protocol_identifier: byte0 >> 4,
            code_set: byte0 & 0x0F,
            piv: byte1 & 0x80 != 0,
            association: match (byte1 >> 4) & 0x3 {
                0 => Association::LogicalUnit,
                1 => Association::TargetPort,
                2 => Association::TargetDevice,
                _ => Association::Reserved,
            },
            designator_type: DesignatorType::from_nibble(byte1),
            value: descriptor.get(4..).unwrap_or(&[]),
            descriptor,
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn error_messages_name_the_offending_values() {
        assert_eq!(
            VpdError::PageLengthPastEnd {
                page_length: 64,
                available: 20,
            }
            .to_string(),
            "PAGE LENGTH 64 runs past the 20 bytes transferred"
        );
        assert_eq!(
            VpdError::WrongPageCode(0x80).to_string(),
            "page code 0x80 is not 0x83"
        );
    }

    fn page(descriptors: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = descriptors.iter().flat_map(|d| d.iter().copied()).collect();
        let mut page = std::vec![0x00, 0x83];
        page.extend_from_slice(&(body.len() as u16).to_be_bytes());
        page.extend_from_slice(&body);
        page
    }

    const NAA5_LU: [u8; 12] = [
        0x01, 0x03, 0x00, 0x08, 0x50, 0x01, 0x40, 0x5a, 0xbc, 0xde, 0xf0, 0x12,
    ];
    // PIV=1, association target port, NAA; protocol SAS (6), binary.
    const NAA5_PORT: [u8; 12] = [
        0x61, 0x93, 0x00, 0x08, 0x50, 0x00, 0xc5, 0x00, 0x11, 0x22, 0x33, 0x44,
    ];
    const NAA6_LU: [u8; 20] = [
        0x01, 0x03, 0x00, 0x10, 0x60, 0x01, 0x40, 0x5a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    const EUI64_LU: [u8; 12] = [
        0x01, 0x02, 0x00, 0x08, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
    ];
    const T10_LU: [u8; 17] = [
        0x02, 0x01, 0x00, 0x0d, b'Q', b'E', b'M', b'U', b' ', b' ', b' ', b' ', b'd', b'i', b's',
        b'k', b'0',
    ];
    // A relative target port designator (type 4) with association target port.
    const RELATIVE_PORT: [u8; 8] = [0x61, 0x94, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01];

    #[test]
    fn splits_byte_1_into_piv_association_and_type() {
        let bytes = page(&[&NAA5_PORT, &RELATIVE_PORT]);
        let parsed = DeviceIdentification::parse(&bytes).unwrap();
        let all: Vec<_> = parsed.designators().collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].protocol_identifier, 6);
        assert_eq!(all[0].code_set, 1);
        assert!(all[0].piv);
        assert_eq!(all[0].association, Association::TargetPort);
        assert_eq!(all[0].designator_type, DesignatorType::Naa);
        assert_eq!(all[1].designator_type, DesignatorType::RelativeTargetPort);
        assert_eq!(all[1].association, Association::TargetPort);
        // 0x93 as a whole byte is not a designator type: a byte comparison would miss this.
        assert_eq!(
            parsed.target_port_naa8(),
            Some([0x50, 0x00, 0xc5, 0x00, 0x11, 0x22, 0x33, 0x44])
        );
    }

    #[test]
    fn naa5_and_naa6_logical_unit_names() {
        let bytes = page(&[&NAA5_LU, &NAA6_LU]);
        let parsed = DeviceIdentification::parse(&bytes).unwrap();
        let naa: Vec<_> = parsed.designators().filter_map(|d| d.naa()).collect();
        assert_eq!(naa.len(), 2);
        assert_eq!(naa[0].naa, 5);
        assert_eq!(naa[0].bytes, &NAA5_LU[4..]);
        assert_eq!(naa[1].naa, 6);
        assert_eq!(naa[1].bytes.len(), 16);
        // NAA 6 is preferred as the LU's identifier; it has no 8-byte form.
        assert_eq!(parsed.logical_unit_descriptor(), Some(&NAA6_LU[..]));
        assert_eq!(parsed.designators().nth(1).unwrap().naa8(), None);
        // No target port designator: no port name, even though LU names exist.
        assert_eq!(parsed.target_port_naa8(), None);
    }

    #[test]
    fn eui64_and_t10_designators() {
        let bytes = page(&[&T10_LU, &EUI64_LU]);
        let parsed = DeviceIdentification::parse(&bytes).unwrap();
        let all: Vec<_> = parsed.designators().collect();
        assert_eq!(
            all[0].t10_vendor_id(),
            Some((&b"QEMU    "[..], &b"disk0"[..]))
        );
        assert_eq!(all[0].code_set, 2);
        assert_eq!(all[1].eui64(), Some(&EUI64_LU[4..]));
        assert_eq!(all[1].naa(), None);
        // EUI-64 outranks T10 vendor ID.
        assert_eq!(parsed.logical_unit_descriptor(), Some(&EUI64_LU[..]));
    }

    #[test]
    fn naa_with_a_length_that_contradicts_its_nibble_is_not_an_naa_name() {
        // NAA 5 with 16 bytes, NAA 6 with 8 bytes, and NAA 1 (reserved).
        let bad5 = [
            0x01, 0x03, 0x00, 0x10, 0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let bad6 = [0x01, 0x13, 0x00, 0x08, 0x60, 0, 0, 0, 0, 0, 0, 1];
        let reserved = [0x01, 0x13, 0x00, 0x08, 0x10, 0, 0, 0, 0, 0, 0, 1];
        let bytes = page(&[&bad5, &bad6, &reserved]);
        let parsed = DeviceIdentification::parse(&bytes).unwrap();
        assert!(parsed.designators().all(|d| d.naa().is_none()));
        assert_eq!(parsed.target_port_naa8(), None);
        assert_eq!(parsed.logical_unit_descriptor(), None);
    }

    #[test]
    fn malformed_pages_are_errors() {
        assert_eq!(
            DeviceIdentification::parse(&[0, 0x83, 0]),
            Err(VpdError::TooShort { len: 3 })
        );
        assert_eq!(
            DeviceIdentification::parse(&[0, 0x80, 0, 0]),
            Err(VpdError::WrongPageCode(0x80))
        );
        // PAGE LENGTH 12 but only 8 bytes follow (a truncated transfer).
        let mut truncated = page(&[&NAA5_LU]);
        truncated.truncate(12);
        assert_eq!(
            DeviceIdentification::parse(&truncated),
            Err(VpdError::PageLengthPastEnd {
                page_length: 12,
                available: 8
            })
        );
        // A descriptor whose length runs past PAGE LENGTH.
        let mut overlong = page(&[&NAA5_LU]);
        overlong[7] = 9;
        assert_eq!(
            DeviceIdentification::parse(&overlong),
            Err(VpdError::DesignatorPastEnd {
                offset: 4,
                designator_length: 9
            })
        );
        // Two stray bytes after the last descriptor: not a whole header.
        let mut stray = page(&[&NAA5_LU]);
        stray.extend_from_slice(&[0x01, 0x03]);
        let length = (stray.len() - 4) as u16;
        stray[2..4].copy_from_slice(&length.to_be_bytes());
        assert_eq!(
            DeviceIdentification::parse(&stray),
            Err(VpdError::DescriptorHeaderPastEnd { offset: 16 })
        );
    }

    #[test]
    fn bytes_after_page_length_are_ignored_and_empty_pages_are_fine() {
        let mut padded = page(&[&NAA5_LU]);
        padded.extend_from_slice(&[0xFF; 8]);
        let parsed = DeviceIdentification::parse(&padded).unwrap();
        assert_eq!(parsed.designators().count(), 1);
        let empty = DeviceIdentification::parse(&[0, 0x83, 0, 0]).unwrap();
        assert_eq!(empty.designators().count(), 0);
        assert_eq!(empty.logical_unit_descriptor(), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_pages_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(parsed) = DeviceIdentification::parse(&bytes) {
                let total: usize = parsed.designators().map(|d| d.descriptor.len()).sum();
                let page_length = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
                proptest::prop_assert_eq!(total, page_length);
                let _ = parsed.target_port_naa8();
                let _ = parsed.logical_unit_descriptor();
            }
        }
    }
}
