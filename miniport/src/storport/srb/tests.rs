//! Unit tests of `srb`.
use core::mem::{offset_of, size_of};

use super::*;
use crate::storport::{SRB_FUNCTION_EXECUTE_SCSI, SRB_FUNCTION_WMI, SrbExDataTypeWmi};

/// 8-aligned backing for hand-built SRBs.
struct Buffer(Vec<u64>);

impl Buffer {
    fn new(len: usize) -> Self {
        Self(vec![0; len.div_ceil(8)])
    }

    fn ptr(&mut self) -> NonNull<ScsiRequestBlock> {
        NonNull::new(self.0.as_mut_ptr().cast()).unwrap()
    }

    fn put<T>(&mut self, offset: usize, value: T) {
        let bytes = self.0.as_mut_ptr().cast::<u8>();
        assert!(offset + size_of::<T>() <= self.0.len() * 8);
        // SAFETY: in bounds (checked), aligned by construction of the offsets used.
        unsafe {
            bytes
                .wrapping_add(offset)
                .cast::<T>()
                .write_unaligned(value);
        }
    }

    fn get<T: Copy>(&self, offset: usize) -> T {
        let bytes = self.0.as_ptr().cast::<u8>();
        // SAFETY: in bounds for the offsets the tests use.
        unsafe { bytes.wrapping_add(offset).cast::<T>().read_unaligned() }
    }
}

fn classic(sense: &mut [u8; 32]) -> Buffer {
    let mut srb = ScsiRequestBlock::zeroed();
    srb.length = size_of::<ScsiRequestBlock>() as u16;
    srb.function = SRB_FUNCTION_EXECUTE_SCSI;
    srb.path_id = 0;
    srb.target_id = 3;
    srb.lun = 7;
    srb.cdb_length = 10;
    srb.cdb[..10].copy_from_slice(&[0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0]);
    srb.data_transfer_length = 512;
    srb.srb_flags = 0x40;
    srb.sense_info_buffer = sense.as_mut_ptr().cast();
    srb.sense_info_buffer_length = 32;
    let mut buffer = Buffer::new(size_of::<ScsiRequestBlock>());
    buffer.put(0, srb);
    buffer
}

/// An SRB_EX with a BTL8 address at 128 and a CDB16 block at 144.
fn extended(sense: &mut [u8; 32]) -> Buffer {
    let total = 144 + size_of::<SrbExDataScsiCdb16>();
    let mut header = StorageRequestBlock::zeroed();
    header.length = 8;
    header.function = SRB_FUNCTION_STORAGE_REQUEST_BLOCK;
    header.signature = SRB_SIGNATURE;
    header.version = STORAGE_REQUEST_BLOCK_VERSION_1;
    header.srb_length = total as u32;
    header.srb_function = u32::from(SRB_FUNCTION_EXECUTE_SCSI);
    header.srb_flags = 0x80;
    header.address_offset = 128;
    header.num_srb_ex_data = 1;
    header.data_transfer_length = 4096;
    header.srb_ex_data_offset = [144];
    let mut buffer = Buffer::new(total);
    buffer.put(0, header);
    // A typed write leaves padding uninitialised; StorPort's memory is plain bytes, so zero
    // the header's tail padding (after SrbExDataOffset[0]) and the address's.
    buffer.put(size_of::<StorageRequestBlock>() - 4, 0u32);
    buffer.put(
        128,
        StorAddrBtl8 {
            r#type: STOR_ADDRESS_TYPE_BTL8,
            port: 0,
            address_length: 4,
            path: 0,
            target: 9,
            lun: 2,
            reserved: 0,
        },
    );
    buffer.put(128 + 12, 0u32);
    let mut cdb = SrbExDataScsiCdb16::zeroed();
    cdb.r#type = SrbExDataTypeScsiCdb16;
    cdb.length = 32;
    cdb.cdb_length = 16;
    cdb.cdb = [0x8A, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0];
    cdb.sense_info_buffer = sense.as_mut_ptr().cast();
    cdb.sense_info_buffer_length = 20;
    buffer.put(144, cdb);
    buffer
}

fn view(buffer: &mut Buffer) -> Result<Srb, SrbError> {
    // SAFETY: the buffer holds a complete SRB built by the test and outlives the view.
    unsafe { Srb::from_raw(buffer.ptr()) }.map_err(|(_, error)| error)
}

#[test]
fn classic_srbs_read_and_write_their_fields() {
    let mut sense = [0u8; 32];
    let mut buffer = classic(&mut sense);
    let mut srb = view(&mut buffer).unwrap();
    assert!(!srb.is_extended());
    assert_eq!(srb.function(), u32::from(SRB_FUNCTION_EXECUTE_SCSI));
    assert_eq!(
        srb.address(),
        Address {
            path: 0,
            target: 3,
            lun: 7
        }
    );
    let mut cdb = [0u8; CDB_SIZE];
    assert_eq!(srb.cdb(&mut cdb), Ok(10));
    assert_eq!(cdb[..10], [0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0]);
    assert!(cdb[10..].iter().all(|&b| b == 0));
    assert_eq!(srb.flags(), 0x40);
    assert_eq!(srb.data_transfer_length(), 512);
    assert_eq!(srb.sense_buffer().map(|(_, len)| len), Some(32));
    srb.set_srb_status(0x81);
    srb.set_scsi_status(0x02);
    srb.set_sense_length(18);
    srb.set_data_transfer_length(100);
    assert_eq!(
        buffer.get::<u8>(offset_of!(ScsiRequestBlock, srb_status)),
        0x81
    );
    assert_eq!(
        buffer.get::<u8>(offset_of!(ScsiRequestBlock, scsi_status)),
        0x02
    );
    assert_eq!(
        buffer.get::<u8>(offset_of!(ScsiRequestBlock, sense_info_buffer_length)),
        18
    );
    assert_eq!(
        buffer.get::<u32>(offset_of!(ScsiRequestBlock, data_transfer_length)),
        100
    );
}

#[test]
fn extended_srbs_are_read_through_their_address_and_cdb_blocks() {
    let mut sense = [0u8; 32];
    let mut buffer = extended(&mut sense);
    let mut srb = view(&mut buffer).unwrap();
    assert!(srb.is_extended());
    assert_eq!(srb.function(), u32::from(SRB_FUNCTION_EXECUTE_SCSI));
    assert_eq!(
        srb.address(),
        Address {
            path: 0,
            target: 9,
            lun: 2
        }
    );
    let mut cdb = [0u8; CDB_SIZE];
    assert_eq!(srb.cdb(&mut cdb), Ok(16));
    assert_eq!(cdb[0], 0x8A);
    assert_eq!(srb.flags(), 0x80);
    assert_eq!(srb.data_transfer_length(), 4096);
    assert_eq!(srb.sense_buffer().map(|(_, len)| len), Some(20));
    srb.set_scsi_status(0x18);
    srb.set_sense_length(0);
    srb.set_srb_status(0x04);
    assert_eq!(
        buffer.get::<u8>(144 + offset_of!(SrbExDataScsiCdb16, scsi_status)),
        0x18
    );
    assert_eq!(
        buffer.get::<u8>(144 + offset_of!(SrbExDataScsiCdb16, sense_info_buffer_length)),
        0
    );
    assert_eq!(
        buffer.get::<u8>(offset_of!(StorageRequestBlock, srb_status)),
        0x04
    );
}

#[test]
fn malformed_extended_srbs_are_refused_with_their_reason() {
    type Case = (&'static str, fn(&mut Buffer), fn(SrbError) -> bool);
    let mut sense = [0u8; 32];
    let cases: [Case; 6] = [
        (
            "signature",
            |b| b.put(offset_of!(StorageRequestBlock, signature), 0u32),
            |e| matches!(e, SrbError::BadExtendedHeader { .. }),
        ),
        (
            "short length",
            |b| b.put(offset_of!(StorageRequestBlock, srb_length), 64u32),
            |e| matches!(e, SrbError::BadExtendedHeader { .. }),
        ),
        (
            "address past the end",
            |b| {
                b.put(offset_of!(StorageRequestBlock, address_offset), 4096u32);
            },
            |e| matches!(e, SrbError::BadAddress { offset: 4096 }),
        ),
        (
            "misaligned address",
            |b| {
                b.put(offset_of!(StorageRequestBlock, address_offset), 129u32);
            },
            |e| matches!(e, SrbError::BadAddress { offset: 129 }),
        ),
        (
            "block past the end",
            |b| {
                b.put(offset_of!(StorageRequestBlock, srb_ex_data_offset), 184u32);
            },
            |e| matches!(e, SrbError::BadDataBlock { offset: 184 }),
        ),
        (
            "too many blocks",
            |b| {
                b.put(offset_of!(StorageRequestBlock, num_srb_ex_data), 1000u32);
            },
            |e| matches!(e, SrbError::BadDataBlock { .. }),
        ),
    ];
    for (name, corrupt, expected) in cases {
        let mut buffer = extended(&mut sense);
        corrupt(&mut buffer);
        let error = view(&mut buffer).expect_err(name);
        assert!(expected(error), "{name}: {error:?}");
    }
}

#[test]
fn a_recorded_layout_rebuilds_the_completion_view_of_both_shapes() {
    let mut sense = [0u8; 32];
    for (mut buffer, status_at, length_at) in [
        (
            classic(&mut sense),
            offset_of!(ScsiRequestBlock, scsi_status),
            offset_of!(ScsiRequestBlock, sense_info_buffer_length),
        ),
        (
            extended(&mut sense),
            144 + offset_of!(SrbExDataScsiCdb16, scsi_status),
            144 + offset_of!(SrbExDataScsiCdb16, sense_info_buffer_length),
        ),
    ] {
        let layout = view(&mut buffer).unwrap().layout();
        // SAFETY: the buffer holds the SRB the layout was recorded from.
        let mut again = unsafe { Srb::from_layout(buffer.ptr(), layout) };
        assert!(again.sense_buffer().is_some());
        again.set_scsi_status(0x22);
        again.set_sense_length(7);
        again.set_data_transfer_length(9);
        assert_eq!(buffer.get::<u8>(status_at), 0x22);
        assert_eq!(buffer.get::<u8>(length_at), 7);
        // SAFETY: as above; BuildIo accepted it.
        let started = unsafe { Srb::validated(buffer.ptr()) };
        assert_eq!(started.function(), u32::from(SRB_FUNCTION_EXECUTE_SCSI));
        assert_eq!(started.data_transfer_length(), 9);
    }
}

#[test]
fn empty_or_oversized_cdbs_are_refused() {
    let mut sense = [0u8; 32];
    let mut buffer = classic(&mut sense);
    buffer.put(offset_of!(ScsiRequestBlock, cdb_length), 17u8);
    let srb = view(&mut buffer).unwrap();
    assert_eq!(
        srb.cdb(&mut [0; CDB_SIZE]),
        Err(SrbError::CdbLength { len: 17 })
    );
    let mut buffer = extended(&mut sense);
    buffer.put(144 + offset_of!(SrbExDataScsiCdb16, cdb_length), 0u8);
    assert_eq!(
        view(&mut buffer).err(),
        Some(SrbError::CdbLength { len: 0 })
    );
}

#[test]
fn extended_srbs_without_a_cdb_block_have_no_cdb_or_sense() {
    let mut sense = [0u8; 32];
    let mut buffer = extended(&mut sense);
    buffer.put(
        offset_of!(StorageRequestBlock, srb_function),
        u32::from(SRB_FUNCTION_WMI),
    );
    buffer.put(144usize, SrbExDataTypeWmi);
    let srb = view(&mut buffer).unwrap();
    assert_eq!(srb.function(), u32::from(SRB_FUNCTION_WMI));
    assert!(srb.sense_buffer().is_none());
    assert!(srb.cdb(&mut [0; CDB_SIZE]).is_err());
}

/// The extended SRB of [`extended`] turned into a WMI request with an `SRBEX_DATA_WMI`
/// block at 144.
fn extended_wmi(sense: &mut [u8; 32], block_length: u32) -> Buffer {
    let mut buffer = extended(sense);
    buffer.put(
        offset_of!(StorageRequestBlock, srb_function),
        u32::from(SRB_FUNCTION_WMI),
    );
    buffer.put(
        144,
        SrbExDataWmi {
            r#type: SrbExDataTypeWmi,
            length: block_length,
            wmi_sub_function: 0x0B,
            wmi_flags: 1,
            reserved: [0; 2],
            reserved1: 0,
            data_path: 0x1234_5678usize as *mut core::ffi::c_void,
        },
    );
    buffer
}

#[test]
fn wmi_parameters_come_from_either_shape() {
    let mut sense = [0u8; 32];
    let mut buffer = extended_wmi(&mut sense, 16);
    let srb = view(&mut buffer).unwrap();
    assert_eq!(
        srb.wmi_parameters(),
        Some(WmiParameters {
            sub_function: 0x0B,
            flags: 1,
            data_path: 0x1234_5678,
        })
    );
    // The classic shape: SCSI_WMI_REQUEST_BLOCK fields over the same 88 bytes.
    let mut buffer = classic(&mut sense);
    buffer.put(offset_of!(ScsiRequestBlock, function), SRB_FUNCTION_WMI);
    buffer.put(offset_of!(ScsiWmiRequestBlock, wmi_sub_function), 0x09u8);
    buffer.put(offset_of!(ScsiWmiRequestBlock, wmi_flags), 0u8);
    buffer.put(offset_of!(ScsiWmiRequestBlock, data_path), 0x42usize);
    let srb = view(&mut buffer).unwrap();
    assert_eq!(
        srb.wmi_parameters(),
        Some(WmiParameters {
            sub_function: 0x09,
            flags: 0,
            data_path: 0x42,
        })
    );
    // Not a WMI function: no parameters, even with a WMI block.
    let mut buffer = extended_wmi(&mut sense, 16);
    buffer.put(
        offset_of!(StorageRequestBlock, srb_function),
        u32::from(SRB_FUNCTION_EXECUTE_SCSI),
    );
    assert_eq!(view(&mut buffer).unwrap().wmi_parameters(), None);
    // A WMI function without a WMI block has none either.
    let mut buffer = extended(&mut sense);
    buffer.put(
        offset_of!(StorageRequestBlock, srb_function),
        u32::from(SRB_FUNCTION_WMI),
    );
    assert_eq!(view(&mut buffer).unwrap().wmi_parameters(), None);
}

#[test]
fn short_or_misplaced_wmi_blocks_are_refused() {
    let mut sense = [0u8; 32];
    let mut buffer = extended_wmi(&mut sense, 15);
    assert_eq!(
        view(&mut buffer).err(),
        Some(SrbError::BadDataBlock { offset: 144 })
    );
    // A block whose end passes SrbLength.
    let mut buffer = extended_wmi(&mut sense, 16);
    buffer.put(offset_of!(StorageRequestBlock, srb_length), 160u32);
    assert!(matches!(
        view(&mut buffer).err(),
        Some(SrbError::BadDataBlock { .. })
    ));
}

proptest::proptest! {
    /// Arbitrary extended SRBs (random offsets, counts, block types and lengths inside a
    /// 256-byte SRB whose SrbLength never claims more than that) are refused or read without
    /// panicking, and every CDB handed out fits virtio-scsi.
    #[test]
    fn arbitrary_extended_srbs_never_panic(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 256),
        srb_length in 0u32..=256,
        address_offset in 0u32..300,
        blocks in 0u32..8,
        offsets in proptest::collection::vec(0u32..300, 8),
        kinds in proptest::collection::vec(0u32..4, 8),
    ) {
        let mut buffer = Buffer::new(256);
        for (at, byte) in bytes.iter().enumerate() {
            buffer.put(at, *byte);
        }
        let types = [SrbExDataTypeScsiCdb16, SrbExDataTypeScsiCdb32, SrbExDataTypeScsiCdbVar, SrbExDataTypeWmi];
        for index in 0..blocks as usize {
            let at = offset_of!(StorageRequestBlock, srb_ex_data_offset) + 4 * index;
            if at + 4 <= 256 {
                buffer.put(at, offsets[index]);
            }
            let block = offsets[index] as usize;
            if block + 4 <= 256 {
                buffer.put(block, types[kinds[index] as usize]);
            }
        }
        // The header last, so no random block offset overwrites it: StorPort guarantees the
        // SRB really is SrbLength bytes, and the test must not break that promise.
        buffer.put(offset_of!(StorageRequestBlock, function), SRB_FUNCTION_STORAGE_REQUEST_BLOCK);
        buffer.put(offset_of!(StorageRequestBlock, signature), SRB_SIGNATURE);
        buffer.put(offset_of!(StorageRequestBlock, version), STORAGE_REQUEST_BLOCK_VERSION_1);
        buffer.put(offset_of!(StorageRequestBlock, srb_length), srb_length);
        buffer.put(offset_of!(StorageRequestBlock, address_offset), address_offset);
        buffer.put(offset_of!(StorageRequestBlock, num_srb_ex_data), blocks);
        if let Ok(mut srb) = view(&mut buffer) {
            let _ = srb.address();
            let _ = srb.function();
            let _ = srb.sense_buffer();
            let mut cdb = [0u8; CDB_SIZE];
            if let Ok(len) = srb.cdb(&mut cdb) {
                proptest::prop_assert!((1..=CDB_SIZE).contains(&len));
                proptest::prop_assert!(cdb[len..].iter().all(|&b| b == 0));
            }
            srb.set_scsi_status(0);
            srb.set_srb_status(1);
        }
    }
}

/// The `extended` SRB with its CDB16 block moved to `offset` in an SRB of `offset + 64` bytes.
fn extended_with_cdb_at(sense: &mut [u8; 32], offset: u32) -> Buffer {
    let near = extended(sense);
    let total = offset as usize + 64;
    let mut buffer = Buffer::new(total);
    let block_len = size_of::<SrbExDataScsiCdb16>();
    for at in (0..144 + block_len).step_by(8) {
        let word: u64 = near.get(at);
        let to = if at < 144 {
            at
        } else {
            offset as usize + at - 144
        };
        buffer.put(to, word);
    }
    buffer.put(offset_of!(StorageRequestBlock, srb_length), total as u32);
    buffer.put(offset_of!(StorageRequestBlock, srb_ex_data_offset), offset);
    buffer
}

#[test]
fn scsi_blocks_are_recorded_only_below_the_16_bit_offset_limit() {
    let mut sense = [0u8; 32];
    // Far out but within the limit: read like the near one.
    let mut buffer = extended_with_cdb_at(&mut sense, RECORDED_BLOCK_LIMIT & !7);
    let srb = view(&mut buffer).unwrap();
    let mut cdb = [0u8; CDB_SIZE];
    assert_eq!(srb.cdb(&mut cdb), Ok(16));
    assert_eq!(cdb[0], 0x8A);
    assert_eq!(srb.sense_buffer().map(|(_, len)| len), Some(20));
    let layout = srb.layout();
    assert_eq!(
        usize::from(layout.sense_length),
        (RECORDED_BLOCK_LIMIT & !7) as usize
            + offset_of!(SrbExDataScsiCdb16, sense_info_buffer_length)
    );
    // Past it: refused, not recorded with truncated offsets.
    let past = (RECORDED_BLOCK_LIMIT + 8) & !7;
    let mut buffer = extended_with_cdb_at(&mut sense, past);
    assert_eq!(
        view(&mut buffer).err(),
        Some(SrbError::BadDataBlock { offset: past })
    );
}

#[test]
fn cdb_bytes_past_the_length_are_cleared_whatever_the_array_holds() {
    let mut sense = [0u8; 32];
    // Classic: a 6-byte CDB in a 16-byte array whose tail holds other bytes.
    let mut buffer = classic(&mut sense);
    buffer.put(offset_of!(ScsiRequestBlock, cdb_length), 6u8);
    buffer.put(offset_of!(ScsiRequestBlock, cdb) + 6, [0xEEu8; 10]);
    let mut cdb = [0xAAu8; CDB_SIZE];
    assert_eq!(view(&mut buffer).unwrap().cdb(&mut cdb), Ok(6));
    assert_eq!(cdb[..6], [0x28, 0, 0, 0, 0, 8]);
    assert!(cdb[6..].iter().all(|&b| b == 0), "{cdb:?}");
    // CDB16 block: 12 of its 16 bytes.
    let mut buffer = extended(&mut sense);
    buffer.put(144 + offset_of!(SrbExDataScsiCdb16, cdb_length), 12u8);
    let mut cdb = [0xAAu8; CDB_SIZE];
    assert_eq!(view(&mut buffer).unwrap().cdb(&mut cdb), Ok(12));
    assert_eq!(cdb[..12], [0x8A, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert!(cdb[12..].iter().all(|&b| b == 0), "{cdb:?}");
}

/// An SRB_EX whose one data block at 144 is a CDB32 block holding `cdb` (32 bytes) with
/// CdbLength `len`.
fn extended_cdb32(sense: &mut [u8; 32], cdb: [u8; 32], len: u8) -> Buffer {
    let near = extended(sense);
    let total = 144 + size_of::<SrbExDataScsiCdb32>();
    let mut buffer = Buffer::new(total);
    for at in (0..144).step_by(8) {
        buffer.put(at, near.get::<u64>(at));
    }
    buffer.put(offset_of!(StorageRequestBlock, srb_length), total as u32);
    let mut block = SrbExDataScsiCdb32::zeroed();
    block.r#type = SrbExDataTypeScsiCdb32;
    block.length = 48;
    block.cdb_length = len;
    block.cdb = cdb;
    block.sense_info_buffer = sense.as_mut_ptr().cast();
    block.sense_info_buffer_length = 20;
    buffer.put(144, block);
    buffer
}

#[test]
fn cdb32_blocks_give_up_to_32_bytes_and_clear_the_rest() {
    let mut sense = [0u8; 32];
    let bytes: [u8; 32] = core::array::from_fn(|i| i as u8 + 1);
    // Every length, so that each row of the mask table is seen to be its own length's.
    for len in 1..=32u8 {
        let mut buffer = extended_cdb32(&mut sense, bytes, len);
        let srb = view(&mut buffer).unwrap();
        let mut cdb = [0xAAu8; CDB_SIZE];
        assert_eq!(srb.cdb(&mut cdb), Ok(usize::from(len)));
        let len = usize::from(len);
        assert_eq!(cdb[..len], bytes[..len]);
        assert!(cdb[len..].iter().all(|&b| b == 0), "{len}: {cdb:?}");
        assert_eq!(srb.sense_buffer().map(|(_, capacity)| capacity), Some(20));
    }
    let mut buffer = extended_cdb32(&mut sense, bytes, 33);
    assert_eq!(
        view(&mut buffer).err(),
        Some(SrbError::CdbLength { len: 33 })
    );
}

/// An SRB_EX whose one data block at 144 is a CDB_VAR block with a `len`-byte CDB, the SRB
/// ending right after it.
fn extended_cdb_var(sense: &mut [u8; 32], cdb: &[u8], len: u32) -> Buffer {
    let near = extended(sense);
    let cdb_at = 144 + offset_of!(SrbExDataScsiCdbVar, cdb);
    let total = (cdb_at + cdb.len()).max(144 + size_of::<SrbExDataScsiCdbVar>());
    let mut buffer = Buffer::new(total);
    for at in (0..144).step_by(8) {
        buffer.put(at, near.get::<u64>(at));
    }
    buffer.put(offset_of!(StorageRequestBlock, srb_length), total as u32);
    buffer.put(144, SrbExDataTypeScsiCdbVar);
    buffer.put(144 + offset_of!(SrbExDataScsiCdbVar, length), 40u32);
    buffer.put(144 + offset_of!(SrbExDataScsiCdbVar, cdb_length), len);
    buffer.put(
        144 + offset_of!(SrbExDataScsiCdbVar, sense_info_buffer),
        sense.as_mut_ptr(),
    );
    buffer.put(
        144 + offset_of!(SrbExDataScsiCdbVar, sense_info_buffer_length),
        18u8,
    );
    for (index, byte) in cdb.iter().enumerate() {
        buffer.put(cdb_at + index, *byte);
    }
    buffer
}

#[test]
fn cdb_var_blocks_give_exactly_their_bytes() {
    let mut sense = [0u8; 32];
    let bytes: [u8; 32] = core::array::from_fn(|i| 0x80 | i as u8);
    // Lengths read in 16 or 32 bytes and lengths read byte by byte.
    for len in [1usize, 6, 16, 20, 32] {
        let mut buffer = extended_cdb_var(&mut sense, &bytes[..len], len as u32);
        let mut srb = view(&mut buffer).unwrap();
        let mut cdb = [0xAAu8; CDB_SIZE];
        assert_eq!(srb.cdb(&mut cdb), Ok(len));
        assert_eq!(cdb[..len], bytes[..len]);
        assert!(cdb[len..].iter().all(|&b| b == 0), "{len}: {cdb:?}");
        srb.set_scsi_status(0x02);
        assert_eq!(
            buffer.get::<u8>(144 + offset_of!(SrbExDataScsiCdbVar, scsi_status)),
            0x02
        );
    }
    // A CDB longer than virtio-scsi carries, an empty one, and one past SrbLength.
    let mut buffer = extended_cdb_var(&mut sense, &bytes, 33);
    assert_eq!(
        view(&mut buffer).err(),
        Some(SrbError::CdbLength { len: 33 })
    );
    let mut buffer = extended_cdb_var(&mut sense, &bytes[..4], 0);
    assert_eq!(
        view(&mut buffer).err(),
        Some(SrbError::CdbLength { len: 0 })
    );
    let mut buffer = extended_cdb_var(&mut sense, &bytes[..8], 16);
    assert_eq!(
        view(&mut buffer).err(),
        Some(SrbError::BadDataBlock { offset: 144 })
    );
}

#[test]
fn rebuilt_views_have_no_address_or_cdb() {
    let mut sense = [0u8; 32];
    for mut buffer in [classic(&mut sense), extended(&mut sense)] {
        let layout = view(&mut buffer).unwrap().layout();
        // SAFETY: the buffer holds the SRB the layout was recorded from.
        let again = unsafe { Srb::from_layout(buffer.ptr(), layout) };
        assert_eq!(
            again.address(),
            Address {
                path: 0,
                target: 0,
                lun: 0
            }
        );
        assert_eq!(
            again.cdb(&mut [0; CDB_SIZE]),
            Err(SrbError::CdbLength { len: 0 })
        );
        assert_eq!(again.function(), u32::from(SRB_FUNCTION_EXECUTE_SCSI));
    }
}

#[test]
fn a_bad_header_is_reported_with_its_signature_version_and_length() {
    let mut sense = [0u8; 32];
    let mut buffer = extended(&mut sense);
    buffer.put(offset_of!(StorageRequestBlock, version), 2u32);
    assert_eq!(
        view(&mut buffer).err(),
        Some(SrbError::BadExtendedHeader {
            signature: SRB_SIGNATURE,
            version: 2,
            length: 184,
        })
    );
    let mut buffer = extended(&mut sense);
    buffer.put(offset_of!(StorageRequestBlock, signature), 0x1234_5678u32);
    buffer.put(offset_of!(StorageRequestBlock, srb_length), 100u32);
    assert_eq!(
        view(&mut buffer).err(),
        Some(SrbError::BadExtendedHeader {
            signature: 0x1234_5678,
            version: STORAGE_REQUEST_BLOCK_VERSION_1,
            length: 100,
        })
    );
}

#[test]
fn cdb16_blocks_off_the_common_placement_are_checked_the_general_way() {
    let mut sense = [0u8; 32];
    // 4-aligned (its type can be read) but not 8-aligned as the block must be.
    let mut buffer = extended(&mut sense);
    buffer.put(offset_of!(StorageRequestBlock, srb_ex_data_offset), 140u32);
    buffer.put(140usize, SrbExDataTypeScsiCdb16);
    assert_eq!(
        view(&mut buffer).err(),
        Some(SrbError::BadDataBlock { offset: 140 })
    );
    // Its type inside SrbLength, its end past it.
    let mut buffer = extended(&mut sense);
    buffer.put(offset_of!(StorageRequestBlock, srb_length), 160u32);
    assert_eq!(
        view(&mut buffer).err(),
        Some(SrbError::BadDataBlock { offset: 144 })
    );
    // Well placed, with a bad CDB length: the error is the length's.
    let mut buffer = extended(&mut sense);
    buffer.put(144 + offset_of!(SrbExDataScsiCdb16, cdb_length), 17u8);
    assert_eq!(
        view(&mut buffer).err(),
        Some(SrbError::CdbLength { len: 17 })
    );
}
