//! The SCSI commands the exerciser sends (SPC-4, SBC-3) and the parsing of their data-in and
//! sense data. Everything the device returns is checked: a short or inconsistent response is a
//! [`ParseError`] with the offending value, never a panic.

/// Operation codes used by the exerciser.
pub mod opcode {
    /// TEST UNIT READY (SPC-4 6.47).
    pub const TEST_UNIT_READY: u8 = 0x00;
    /// INQUIRY (SPC-4 6.6).
    pub const INQUIRY: u8 = 0x12;
    /// READ(16) (SBC-3 5.16).
    pub const READ_16: u8 = 0x88;
    /// WRITE(16) (SBC-3 5.40).
    pub const WRITE_16: u8 = 0x8a;
    /// SERVICE ACTION IN(16), carrying READ CAPACITY(16) (SBC-3 5.16).
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    /// REPORT LUNS (SPC-4 6.33).
    pub const REPORT_LUNS: u8 = 0xa0;
}

/// READ CAPACITY(16)'s service action.
const READ_CAPACITY_16: u8 = 0x10;

/// The length of every CDB built here; virtio-scsi's default `cdb_size` is 32, so all fit.
pub const CDB_LEN: usize = 16;

/// A command descriptor block, zero-padded to [`CDB_LEN`].
pub type Cdb = [u8; CDB_LEN];

/// TEST UNIT READY.
#[must_use]
pub const fn test_unit_ready() -> Cdb {
    [
        opcode::TEST_UNIT_READY,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]
}

/// Standard INQUIRY data, `allocation` bytes at most.
#[must_use]
pub fn inquiry(allocation: u16) -> Cdb {
    let [high, low] = allocation.to_be_bytes();
    let mut cdb = [0; CDB_LEN];
    cdb[0] = opcode::INQUIRY;
    cdb[3] = high;
    cdb[4] = low;
    cdb
}

/// INQUIRY for vital product data page `page` (EVPD = 1).
#[must_use]
pub fn inquiry_vpd(page: u8, allocation: u16) -> Cdb {
    let mut cdb = inquiry(allocation);
    cdb[1] = 1;
    cdb[2] = page;
    cdb
}

/// REPORT LUNS with SELECT REPORT 0 (all logical units), `allocation` bytes at most.
#[must_use]
pub fn report_luns(allocation: u32) -> Cdb {
    let mut cdb = [0; CDB_LEN];
    cdb[0] = opcode::REPORT_LUNS;
    cdb[6..10].copy_from_slice(&allocation.to_be_bytes());
    cdb
}

/// READ CAPACITY(16), `allocation` bytes at most.
#[must_use]
pub fn read_capacity_16(allocation: u32) -> Cdb {
    let mut cdb = [0; CDB_LEN];
    cdb[0] = opcode::SERVICE_ACTION_IN_16;
    cdb[1] = READ_CAPACITY_16;
    cdb[10..14].copy_from_slice(&allocation.to_be_bytes());
    cdb
}

/// READ(16) of `blocks` logical blocks from `lba`.
#[must_use]
pub fn read_16(lba: u64, blocks: u32) -> Cdb {
    rw_16(opcode::READ_16, lba, blocks)
}

/// WRITE(16) of `blocks` logical blocks at `lba`.
#[must_use]
pub fn write_16(lba: u64, blocks: u32) -> Cdb {
    rw_16(opcode::WRITE_16, lba, blocks)
}

fn rw_16(opcode: u8, lba: u64, blocks: u32) -> Cdb {
    let mut cdb = [0; CDB_LEN];
    cdb[0] = opcode;
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

/// Why a response could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer bytes than the fixed part of the response.
    Short {
        /// Bytes received.
        received: usize,
        /// Bytes the fixed part needs.
        needed: usize,
    },
    /// A length field points past the bytes received.
    LengthBeyondData {
        /// The length the field claims (from the start of the response).
        claimed: usize,
        /// Bytes received.
        received: usize,
    },
    /// A VPD page came back with a different page code.
    WrongPage {
        /// The page asked for.
        wanted: u8,
        /// The page code in the response.
        got: u8,
    },
    /// READ CAPACITY reported a block length that is zero or not a power of two.
    BadBlockLength(u32),
    /// Sense data with an unknown response code.
    UnknownSenseFormat(u8),
}

/// `bytes[range]` as a big-endian integer, or a [`ParseError::Short`].
fn be<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], ParseError> {
    bytes
        .get(at..at + N)
        .and_then(|slice| slice.try_into().ok())
        .ok_or(ParseError::Short {
            received: bytes.len(),
            needed: at + N,
        })
}

/// Fields of standard INQUIRY data the exerciser checks (SPC-4 6.6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inquiry {
    /// Peripheral qualifier (0: a device is connected; 3: no device at this LUN).
    pub qualifier: u8,
    /// Peripheral device type (0: direct-access block device).
    pub device_type: u8,
    /// VERSION (6: SPC-4; 5: SPC-3).
    pub version: u8,
    /// T10 vendor identification, space padded.
    pub vendor: [u8; 8],
    /// Product identification, space padded.
    pub product: [u8; 16],
    /// Product revision level.
    pub revision: [u8; 4],
}

/// Parses standard INQUIRY data (the 36 bytes every device must return).
///
/// # Errors
/// [`ParseError::Short`] below 36 bytes.
pub fn parse_inquiry(data: &[u8]) -> Result<Inquiry, ParseError> {
    let [byte0] = be::<1>(data, 0)?;
    let [version] = be::<1>(data, 2)?;
    Ok(Inquiry {
        qualifier: byte0 >> 5,
        device_type: byte0 & 0x1f,
        version,
        vendor: be(data, 8)?,
        product: be(data, 16)?,
        revision: be(data, 32)?,
    })
}

/// The payload of VPD page `page` (after the 4-byte header), checked against the page code and
/// the page length.
///
/// # Errors
/// [`ParseError::WrongPage`], [`ParseError::Short`] or [`ParseError::LengthBeyondData`].
pub fn vpd_payload(data: &[u8], page: u8) -> Result<&[u8], ParseError> {
    let [_, got, high, low] = be::<4>(data, 0)?;
    if got != page {
        return Err(ParseError::WrongPage { wanted: page, got });
    }
    let end = 4 + usize::from(u16::from_be_bytes([high, low]));
    data.get(4..end).ok_or(ParseError::LengthBeyondData {
        claimed: end,
        received: data.len(),
    })
}

/// One designation descriptor of the Device Identification VPD page (SPC-4 7.8.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Designator<'a> {
    /// CODE SET (1: binary, 2: ASCII, 3: UTF-8).
    pub code_set: u8,
    /// ASSOCIATION (0: the logical unit).
    pub association: u8,
    /// DESIGNATOR TYPE (1: T10 vendor ID, 2: EUI-64, 3: NAA, 8: SCSI name string, ...).
    pub designator_type: u8,
    /// The designator itself.
    pub designator: &'a [u8],
}

/// Parses the designation descriptors of a Device Identification page payload (from
/// [`vpd_payload`]), calling `visit` on each.
///
/// # Errors
/// [`ParseError::LengthBeyondData`] if a descriptor's length runs past the payload.
pub fn parse_designators<'a>(
    payload: &'a [u8],
    mut visit: impl FnMut(Designator<'a>),
) -> Result<usize, ParseError> {
    let mut at = 0;
    let mut count = 0;
    while at < payload.len() {
        let [code_set, kind, _, len] = be::<4>(payload, at)?;
        let end = at + 4 + usize::from(len);
        let designator = payload
            .get(at + 4..end)
            .ok_or(ParseError::LengthBeyondData {
                claimed: end,
                received: payload.len(),
            })?;
        visit(Designator {
            code_set: code_set & 0x0f,
            association: (kind >> 4) & 0x3,
            designator_type: kind & 0x0f,
            designator,
        });
        count += 1;
        at = end;
    }
    Ok(count)
}

/// READ CAPACITY(16) parameter data (SBC-3 5.16.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Address of the last logical block.
    pub last_lba: u64,
    /// Bytes per logical block (a power of two).
    pub block_length: u32,
}

impl Capacity {
    /// Number of logical blocks.
    #[must_use]
    pub const fn blocks(&self) -> u64 {
        self.last_lba.saturating_add(1)
    }
}

/// Parses READ CAPACITY(16) data.
///
/// # Errors
/// [`ParseError::Short`] below 12 bytes, [`ParseError::BadBlockLength`].
pub fn parse_read_capacity_16(data: &[u8]) -> Result<Capacity, ParseError> {
    let last_lba = u64::from_be_bytes(be(data, 0)?);
    let block_length = u32::from_be_bytes(be(data, 8)?);
    if !block_length.is_power_of_two() {
        return Err(ParseError::BadBlockLength(block_length));
    }
    Ok(Capacity {
        last_lba,
        block_length,
    })
}

/// The logical unit number an 8-byte LUN from REPORT LUNS addresses, for the single-level
/// peripheral (`00 ll`) and flat (`01 hh ll` as `0x4h ll`) addressing methods QEMU uses
/// (SAM-5 4.7); `None` for other methods or a non-zero second level.
#[must_use]
pub fn lun_number(lun: [u8; 8]) -> Option<u16> {
    if lun[2..].iter().any(|byte| *byte != 0) {
        return None;
    }
    match lun[0] >> 6 {
        0 if lun[0] == 0 => Some(u16::from(lun[1])),
        1 => Some(u16::from_be_bytes([lun[0] & 0x3f, lun[1]])),
        _ => None,
    }
}

/// Parses REPORT LUNS parameter data, calling `visit` with each LUN. Returns how many LUNs the
/// device has in total (which may exceed what fit in `data`).
///
/// # Errors
/// [`ParseError::Short`] below the 8-byte header.
pub fn parse_report_luns(data: &[u8], mut visit: impl FnMut([u8; 8])) -> Result<usize, ParseError> {
    let list_length = u32::from_be_bytes(be(data, 0)?) as usize;
    // Bytes 4..8 are reserved, but they are part of the header every response carries.
    be::<4>(data, 4)?;
    let total = list_length / 8;
    let received = data.len().saturating_sub(8) / 8;
    for index in 0..total.min(received) {
        visit(be(data, 8 + index * 8)?);
    }
    Ok(total)
}

/// Sense key, additional sense code and qualifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    /// SENSE KEY (6: UNIT ATTENTION, 5: ILLEGAL REQUEST, ...).
    pub key: u8,
    /// ADDITIONAL SENSE CODE.
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub ascq: u8,
}

/// Sense key UNIT ATTENTION.
pub const UNIT_ATTENTION: u8 = 0x6;

/// Parses fixed (0x70/0x71) or descriptor (0x72/0x73) format sense data (SPC-4 4.5).
///
/// # Errors
/// [`ParseError::Short`] or [`ParseError::UnknownSenseFormat`].
pub fn parse_sense(data: &[u8]) -> Result<Sense, ParseError> {
    let [code] = be::<1>(data, 0)?;
    match code & 0x7f {
        0x70 | 0x71 => {
            let [key] = be::<1>(data, 2)?;
            let [asc, ascq] = be::<2>(data, 12)?;
            Ok(Sense {
                key: key & 0x0f,
                asc,
                ascq,
            })
        }
        0x72 | 0x73 => {
            let [key, asc, ascq] = be::<3>(data, 1)?;
            Ok(Sense {
                key: key & 0x0f,
                asc,
                ascq,
            })
        }
        other => Err(ParseError::UnknownSenseFormat(other)),
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn cdbs_carry_big_endian_fields_where_the_standards_put_them() {
        assert_eq!(inquiry(0x0124)[..6], [0x12, 0, 0, 0x01, 0x24, 0]);
        assert_eq!(inquiry_vpd(0x83, 255)[..6], [0x12, 1, 0x83, 0, 255, 0]);
        assert_eq!(
            report_luns(0x0102_0304)[..12],
            [0xa0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0]
        );
        let capacity = read_capacity_16(32);
        assert_eq!(capacity[..2], [0x9e, 0x10]);
        assert_eq!(capacity[10..14], [0, 0, 0, 32]);
        let read = read_16(0x0102_0304_0506_0708, 0x0a0b_0c0d);
        assert_eq!(read[0], 0x88);
        assert_eq!(read[2..10], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(read[10..14], [0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(write_16(7, 1)[0], 0x8a);
        assert_eq!(test_unit_ready(), [0; 16]);
    }

    #[test]
    fn inquiry_data_is_parsed_and_short_data_rejected() {
        let mut data = [0x20u8; 36];
        data[0] = 0x00;
        data[2] = 0x05;
        data[8..12].copy_from_slice(b"QEMU");
        data[16..29].copy_from_slice(b"QEMU HARDDISK");
        data[32..36].copy_from_slice(b"2.5+");
        let parsed = parse_inquiry(&data).unwrap();
        assert_eq!(
            (parsed.qualifier, parsed.device_type, parsed.version),
            (0, 0, 5)
        );
        assert_eq!(&parsed.vendor, b"QEMU    ");
        assert_eq!(&parsed.product, b"QEMU HARDDISK   ");
        assert_eq!(&parsed.revision, b"2.5+");
        data[0] = 0x7f;
        assert_eq!(parse_inquiry(&data).unwrap().qualifier, 3);
        assert_eq!(
            parse_inquiry(&data[..35]),
            Err(ParseError::Short {
                received: 35,
                needed: 36
            })
        );
    }

    #[test]
    fn vpd_pages_check_code_and_length() {
        let page = [0, 0x00, 0, 3, 0x00, 0x80, 0x83, 0xee];
        assert_eq!(vpd_payload(&page, 0x00), Ok(&[0x00, 0x80, 0x83][..]));
        assert_eq!(
            vpd_payload(&page, 0x80),
            Err(ParseError::WrongPage {
                wanted: 0x80,
                got: 0
            })
        );
        let long = [0, 0x80, 0, 9, b'a'];
        assert_eq!(
            vpd_payload(&long, 0x80),
            Err(ParseError::LengthBeyondData {
                claimed: 13,
                received: 5
            })
        );
    }

    #[test]
    fn designators_are_walked_and_overruns_rejected() {
        let payload = [
            0x02, 0x00, 0, 4, b'Q', b'E', b'M', b'U', // ASCII, LU, vendor specific
            0x01, 0x03, 0, 8, 0x50, 1, 2, 3, 4, 5, 6, 7, // binary, LU, NAA
        ];
        let mut seen = Vec::new();
        assert_eq!(parse_designators(&payload, |d| seen.push(d)), Ok(2));
        assert_eq!(seen[0].designator, b"QEMU");
        assert_eq!(
            (
                seen[1].code_set,
                seen[1].designator_type,
                seen[1].association
            ),
            (1, 3, 0)
        );
        assert_eq!(seen[1].designator.len(), 8);
        let truncated = &payload[..15];
        assert_eq!(
            parse_designators(truncated, |_| {}),
            Err(ParseError::LengthBeyondData {
                claimed: 20,
                received: 15
            })
        );
    }

    #[test]
    fn read_capacity_16_is_parsed_and_bad_block_lengths_rejected() {
        let mut data = [0u8; 32];
        data[..8].copy_from_slice(&0x1_ffffu64.to_be_bytes());
        data[8..12].copy_from_slice(&512u32.to_be_bytes());
        let capacity = parse_read_capacity_16(&data).unwrap();
        assert_eq!(
            capacity,
            Capacity {
                last_lba: 0x1_ffff,
                block_length: 512
            }
        );
        assert_eq!(capacity.blocks(), 0x2_0000);
        data[8..12].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(
            parse_read_capacity_16(&data),
            Err(ParseError::BadBlockLength(0))
        );
        data[8..12].copy_from_slice(&520u32.to_be_bytes());
        assert_eq!(
            parse_read_capacity_16(&data),
            Err(ParseError::BadBlockLength(520))
        );
        assert!(matches!(
            parse_read_capacity_16(&data[..11]),
            Err(ParseError::Short { .. })
        ));
    }

    #[test]
    fn report_luns_lists_what_fits_and_counts_all() {
        let mut data = [0u8; 8 + 16];
        data[3] = 24; // three LUNs, only two fit
        data[8 + 1] = 0; // LUN 0
        data[16] = 0x41; // flat addressing: LUN 0x105
        data[17] = 0x05;
        let mut luns = Vec::new();
        assert_eq!(
            parse_report_luns(&data, |lun| luns.push(lun_number(lun))),
            Ok(3)
        );
        assert_eq!(luns, [Some(0), Some(0x105)]);
        assert_eq!(lun_number([0x00, 7, 0, 0, 0, 0, 0, 0]), Some(7));
        assert_eq!(
            lun_number([0x00, 7, 0, 1, 0, 0, 0, 0]),
            None,
            "second level"
        );
        assert_eq!(
            lun_number([0x80, 7, 0, 0, 0, 0, 0, 0]),
            None,
            "logical unit addressing"
        );
        assert!(parse_report_luns(&data[..7], |_| {}).is_err());
    }

    #[test]
    fn sense_in_both_formats() {
        let mut fixed = [0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x06;
        fixed[12] = 0x29;
        fixed[13] = 0x03;
        assert_eq!(
            parse_sense(&fixed),
            Ok(Sense {
                key: 6,
                asc: 0x29,
                ascq: 3
            })
        );
        let descriptor = [0x72, 0x05, 0x24, 0x00, 0, 0, 0, 0];
        assert_eq!(
            parse_sense(&descriptor),
            Ok(Sense {
                key: 5,
                asc: 0x24,
                ascq: 0
            })
        );
        assert_eq!(
            parse_sense(&[0x7e]),
            Err(ParseError::UnknownSenseFormat(0x7e))
        );
        assert!(parse_sense(&fixed[..13]).is_err());
        assert!(parse_sense(&[]).is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_inquiry(&data);
            let _ = vpd_payload(&data, 0x83).map(|p| parse_designators(p, |_| {}));
            let _ = parse_read_capacity_16(&data);
            let _ = parse_report_luns(&data, |lun| { let _ = lun_number(lun); });
            let _ = parse_sense(&data);
        }

        #[test]
        fn rw_cdbs_round_trip(lba in any::<u64>(), blocks in any::<u32>()) {
            let cdb = read_16(lba, blocks);
            prop_assert_eq!(u64::from_be_bytes(cdb[2..10].try_into().unwrap()), lba);
            prop_assert_eq!(u32::from_be_bytes(cdb[10..14].try_into().unwrap()), blocks);
        }
    }
}
