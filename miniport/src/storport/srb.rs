//! One safe view over both SRB shapes StorPort sends: `SCSI_REQUEST_BLOCK` and the extended
//! `STORAGE_REQUEST_BLOCK` (SRB_EX), whose address and CDB live in blocks at offsets that are
//! validated once, here, before anything reads them.
//!
//! An [`Srb`] is the miniport's ownership of one request between StorPort handing it over
//! (BuildIo/StartIo) and [`crate::storport::port::DeviceExtension::complete_request`] handing it back; completion consumes
//! it, so the type system keeps every SRB completed at most once on each path.

use core::ffi::c_void;
use core::mem::{offset_of, size_of};
use core::ptr::NonNull;

use crate::storport::{
    SRB_FUNCTION_IO_CONTROL, SRB_FUNCTION_STORAGE_REQUEST_BLOCK, SRB_FUNCTION_WMI, SRB_SIGNATURE,
    SRBEX_DATA_WMI_LENGTH, STOR_ADDRESS_TYPE_BTL8, STORAGE_REQUEST_BLOCK_VERSION_1,
    ScsiRequestBlock, ScsiWmiRequestBlock, SrbExDataScsiCdb16, SrbExDataScsiCdb32,
    SrbExDataScsiCdbVar, SrbExDataTypeScsiCdb16, SrbExDataTypeScsiCdb32, SrbExDataTypeScsiCdbVar,
    SrbExDataTypeWmi, SrbExDataWmi, StorAddrBtl8, StorageRequestBlock,
};
use virtio_core::scsi::CDB_SIZE;

/// Why an SRB cannot be used; each becomes the SRB status the WDK prescribes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrbError {
    /// SRB_EX header: wrong signature, version, or a length below the header.
    BadExtendedHeader {
        /// `Signature`.
        signature: u32,
        /// `Version`.
        version: u32,
        /// `SrbLength`.
        length: u32,
    },
    /// SRB_EX address block missing, outside `SrbLength`, misaligned or not BTL8.
    BadAddress {
        /// `AddressOffset`.
        offset: u32,
    },
    /// SRB_EX extended data block outside `SrbLength` or misaligned.
    BadDataBlock {
        /// The block's offset.
        offset: u32,
    },
    /// The CDB is empty or longer than virtio-scsi carries ([`CDB_SIZE`]).
    CdbLength {
        /// The length given.
        len: u32,
    },
}

impl core::fmt::Display for SrbError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::BadExtendedHeader {
                signature,
                version,
                length,
            } => write!(
                f,
                "bad SRB_EX header: signature {signature:#x}, version {version}, length {length}"
            ),
            Self::BadAddress { offset } => write!(f, "bad SRB_EX address block at {offset:#x}"),
            Self::BadDataBlock { offset } => {
                write!(f, "bad SRB_EX extended data block at {offset:#x}")
            }
            Self::CdbLength { len } => write!(f, "CDB length {len} is 0 or above {CDB_SIZE}"),
        }
    }
}

/// Bus, target and LUN of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    /// `PathId` / `Path`.
    pub path: u8,
    /// `TargetId` / `Target`.
    pub target: u8,
    /// `Lun`.
    pub lun: u8,
}

/// The parameters of an `SRB_FUNCTION_WMI` request, from either SRB shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WmiParameters {
    /// `WMISubFunction`: the `IRP_MN_*` WMI minor function.
    pub sub_function: u8,
    /// `WMIFlags`: `SRB_WMI_FLAGS_ADAPTER_REQUEST` when the request is for the adapter.
    pub flags: u8,
    /// `DataPath`: for `IRP_MN_REGINFO`(`_EX`) the `WMIREGISTER`/`WMIUPDATE` action, otherwise a
    /// pointer to the GUID the request addresses (which the WNODE header repeats). Never
    /// dereferenced by the miniport: the WNODE header is what the dispatcher validates.
    pub data_path: usize,
}

/// Where the SCSI fields of an SRB live: the byte offsets from the SRB's start of its SCSI
/// status, sense length, sense buffer pointer and CDB, 16 bits each (bits 0, 16, 32 and 48),
/// in one word that a view keeps and stores in one go (a block is only recorded if all its
/// fields lie below 64 KiB, see [`RECORDED_BLOCK_LIMIT`]). An offset of 0 means the field is
/// absent: no SRB has a SCSI field at its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ScsiFields(u64);

impl ScsiFields {
    /// No SCSI fields (non-SCSI functions, and a view that was not told where they are).
    const NONE: Self = Self(0);

    const fn new(scsi_status: u16, sense_length: u16, sense_buffer: u16, cdb: u16) -> Self {
        Self(
            scsi_status as u64
                | (sense_length as u64) << 16
                | (sense_buffer as u64) << 32
                | (cdb as u64) << 48,
        )
    }

    /// The fields of a block at `base` whose fields lie at the offsets `relative` gives from
    /// the block's start: one multiply and one add. Each sum stays in its 16 bits when `base`
    /// is at most [`RECORDED_BLOCK_LIMIT`] and each relative offset below 256.
    const fn at(base: u16, relative: Self) -> Self {
        Self(relative.0 + (base as u64) * 0x0001_0001_0001_0001)
    }

    /// One offset: `lane` 0 to 3 (SCSI status, sense length, sense buffer, CDB).
    #[expect(
        clippy::cast_possible_truncation,
        reason = "each offset is cut out of its own 16 bits"
    )]
    const fn lane(self, lane: u32) -> usize {
        (self.0 >> (16 * lane)) as u16 as usize
    }

    const fn scsi_status(self) -> usize {
        self.lane(0)
    }

    const fn sense_length(self) -> usize {
        self.lane(1)
    }

    const fn sense_buffer(self) -> usize {
        self.lane(2)
    }

    const fn cdb(self) -> usize {
        self.lane(3)
    }
}

/// The SCSI fields of a classic SRB.
const CLASSIC_FIELDS: ScsiFields = ScsiFields::new(
    field16(offset_of!(ScsiRequestBlock, scsi_status)),
    field16(offset_of!(ScsiRequestBlock, sense_info_buffer_length)),
    field16(offset_of!(ScsiRequestBlock, sense_info_buffer)),
    field16(offset_of!(ScsiRequestBlock, cdb)),
);

/// The SCSI fields of a CDB16 or CDB32 block, from the block's start (the two layouts are the
/// same up to the CDB array, asserted at the end of this file).
const FIXED_CDB_FIELDS: ScsiFields = ScsiFields::new(
    field16(offset_of!(SrbExDataScsiCdb16, scsi_status)),
    field16(offset_of!(SrbExDataScsiCdb16, sense_info_buffer_length)),
    field16(offset_of!(SrbExDataScsiCdb16, sense_info_buffer)),
    field16(offset_of!(SrbExDataScsiCdb16, cdb)),
);

/// The SCSI fields of a CDB_VAR block, from the block's start.
const VARIABLE_CDB_FIELDS: ScsiFields = ScsiFields::new(
    field16(offset_of!(SrbExDataScsiCdbVar, scsi_status)),
    field16(offset_of!(SrbExDataScsiCdbVar, sense_info_buffer_length)),
    field16(offset_of!(SrbExDataScsiCdbVar, sense_info_buffer)),
    field16(offset_of!(SrbExDataScsiCdbVar, cdb)),
);

// `ScsiFields::at` adds relative offsets below 256 to a base at most RECORDED_BLOCK_LIMIT.
const _: () = assert!(
    FIXED_CDB_FIELDS.scsi_status() < 256
        && FIXED_CDB_FIELDS.sense_length() < 256
        && FIXED_CDB_FIELDS.sense_buffer() < 256
        && FIXED_CDB_FIELDS.cdb() < 256
        && VARIABLE_CDB_FIELDS.scsi_status() < 256
        && VARIABLE_CDB_FIELDS.sense_length() < 256
        && VARIABLE_CDB_FIELDS.sense_buffer() < 256
        && VARIABLE_CDB_FIELDS.cdb() < 256
        && (RECORDED_BLOCK_LIMIT as usize) + 256 <= u16::MAX as usize + 1
);

/// Highest offset of an SRB_EX data block this view records (its SCSI or WMI block): every
/// field of such a block then has a 16-bit offset. StorPort's SRB_EX are a few hundred bytes
/// long; a block further out is refused as [`SrbError::BadDataBlock`] instead of being
/// truncated.
const RECORDED_BLOCK_LIMIT: u32 = u16::MAX as u32 - 256;
const _: () = assert!(
    size_of::<SrbExDataScsiCdb16>() <= 256
        && size_of::<SrbExDataScsiCdb32>() <= 256
        && size_of::<SrbExDataScsiCdbVar>() + CDB_SIZE <= 256
        && size_of::<SrbExDataWmi>() <= 256
);

/// What the SRB_EX data blocks [`parse_block`] recorded: the last CDB block's fields and
/// the last WMI block's offset.
#[derive(Clone, Copy)]
struct Found {
    scsi: ScsiFields,
    /// The CDB length of the CDB block, checked against it (0 without one).
    cdb_length: u8,
    /// Bytes readable at the CDB (see [`Srb::cdb_span`]).
    cdb_span: u8,
    /// Offset of the `SRBEX_DATA_WMI` block (0 without one).
    wmi: u16,
}

/// What [`Srb::from_raw`] finds in an SRB_EX.
struct Extended {
    /// Path, target and LUN in bytes 0, 1 and 2.
    address: u32,
    blocks: Found,
}

/// What completion needs of an SRB's shape, recorded by BuildIo in the request context so the
/// SRB is not parsed again on the way back: whether it is an SRB_EX, and where its SCSI status,
/// sense length and sense buffer pointer live (byte offsets; 0 when it has no SCSI fields, as
/// no SRB has them at offset 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrbLayout {
    /// Whether the SRB is a STORAGE_REQUEST_BLOCK.
    pub extended: bool,
    /// Offset of the SCSI status byte.
    pub scsi_status: u16,
    /// Offset of the sense length byte.
    pub sense_length: u16,
    /// Offset of the sense buffer pointer.
    pub sense_buffer: u16,
}

/// A layout without SCSI fields: such a view touches the header only.
const NO_LAYOUT: SrbLayout = SrbLayout {
    extended: false,
    scsi_status: 0,
    sense_length: 0,
    sense_buffer: 0,
};

/// A request StorPort handed to the miniport. Not `Copy`: completing consumes it.
///
/// The view keeps what its accessors need as plain values, found once when it is made: the
/// address, and the offsets of the SCSI fields and of the WMI block. An accessor is then a
/// load or a store at an offset, without looking at the SRB's shape again (the header fields
/// the two shapes keep at different offsets, the function among them, cost one select). The
/// function is read when asked for, not kept: the views rebuilt on the way back
/// ([`Srb::from_layout`]) never ask.
#[derive(Debug)]
pub struct Srb {
    raw: NonNull<ScsiRequestBlock>,
    scsi: ScsiFields,
    /// Bus, target and LUN in bytes 0, 1 and 2; all 0 in a view that was not told them
    /// ([`Srb::from_layout`]).
    address: u32,
    /// `CdbLength` as the SRB gives it (classic: read when the view is made, checked when the
    /// CDB is read; SRB_EX: checked against its block when parsed); 0 when the view has no CDB.
    cdb_length: u8,
    /// Bytes at the CDB that may be read: the CDB array of a classic SRB or of a CDB16/CDB32
    /// block (16 or 32), or exactly `cdb_length` for a CDB_VAR block, which ends with its CDB.
    cdb_span: u8,
    /// Offset of the validated `SRBEX_DATA_WMI` block; 0 without one (and in a classic SRB).
    wmi: u16,
    /// Whether the SRB is a STORAGE_REQUEST_BLOCK.
    extended: bool,
    /// Whether this view wrote the SRB record of its request area
    /// ([`crate::storport::request::RequestArea::of`]): a view is made fresh for each call
    /// StorPort makes, so HwBuildIo knows that BuildIo recorded this SRB.
    recorded: bool,
    /// Whether StorPort mapped the data buffer (the SRB record says so for a request coming
    /// back from the ring, [`crate::storport::request::InFlightRequest::into_parts`]).
    mapped: bool,
}

/// A field offset of a structure, as the 16-bit offsets [`ScsiFields`] keep (checked at
/// compile time where it is used in a constant).
const fn field16(offset: usize) -> u16 {
    assert!(offset <= u16::MAX as usize);
    offset as u16
}

// The CDB arrays `Srb::cdb` reads whole: 16 bytes in a classic SRB and a CDB16 block, 32 in a
// CDB32 block.
const _: () = assert!(
    offset_of!(ScsiRequestBlock, cdb) + 16 <= size_of::<ScsiRequestBlock>()
        && offset_of!(SrbExDataScsiCdb16, cdb) + 16 <= size_of::<SrbExDataScsiCdb16>()
        && offset_of!(SrbExDataScsiCdb32, cdb) + 32 <= size_of::<SrbExDataScsiCdb32>()
);

/// Header offsets of the two shapes: `(classic, extended)`.
const FLAGS_AT: (usize, usize) = (
    offset_of!(ScsiRequestBlock, srb_flags),
    offset_of!(StorageRequestBlock, srb_flags),
);
const DATA_LENGTH_AT: (usize, usize) = (
    offset_of!(ScsiRequestBlock, data_transfer_length),
    offset_of!(StorageRequestBlock, data_transfer_length),
);
const DATA_BUFFER_AT: (usize, usize) = (
    offset_of!(ScsiRequestBlock, data_buffer),
    offset_of!(StorageRequestBlock, data_buffer),
);
const EXTENSION_AT: (usize, usize) = (
    offset_of!(ScsiRequestBlock, srb_extension),
    offset_of!(StorageRequestBlock, miniport_context),
);
const NEXT_SRB_AT: (usize, usize) = (
    offset_of!(ScsiRequestBlock, next_srb),
    offset_of!(StorageRequestBlock, next_srb),
);

/// Reads a `T` at byte `offset` of the SRB at `raw`.
///
/// # Safety
/// `offset .. offset + size_of::<T>()` lies inside the SRB (its fixed header, or bytes checked
/// against `SrbLength`), which is valid for reads (the contract of [`Srb::from_raw`]), and is
/// aligned for `T`; `T` is plain data (integers, byte arrays, raw pointers), valid for any
/// bits.
#[expect(
    clippy::inline_always,
    reason = "on every I/O; a call per field costs instructions per I/O (cargo xtask bench)"
)]
#[inline(always)]
unsafe fn read_at<T: Copy>(raw: NonNull<ScsiRequestBlock>, offset: usize) -> T {
    // SAFETY: the caller's contract.
    unsafe {
        raw.as_ptr()
            .cast::<u8>()
            .wrapping_add(offset)
            .cast::<T>()
            .read()
    }
}

/// Reads a `T` at `offset` of an SRB_EX of `length` (`SrbLength`) bytes if it lies inside
/// them and is aligned for `T`.
///
/// # Safety
/// `raw` is an SRB_EX valid for reads of `length` bytes (the contract of [`Srb::from_raw`]);
/// `T` is plain data.
#[expect(
    clippy::inline_always,
    reason = "on every I/O; a call per field costs instructions per I/O (cargo xtask bench)"
)]
#[inline(always)]
unsafe fn read_inside<T: Copy>(
    raw: NonNull<ScsiRequestBlock>,
    offset: u32,
    length: u32,
) -> Option<T> {
    if u64::from(offset) + size_of::<T>() as u64 > u64::from(length)
        || !(offset as usize).is_multiple_of(align_of::<T>())
    {
        return None;
    }
    // SAFETY: checked just above: inside the `length` valid bytes and aligned.
    Some(unsafe { read_at(raw, offset as usize) })
}

/// Signature and Version of a valid SRB_EX, as the one little-endian word they make.
const SRB_EX_IDENTITY: u64 = SRB_SIGNATURE as u64 | (STORAGE_REQUEST_BLOCK_VERSION_1 as u64) << 32;

/// Whether the block of type `T` at `offset` lies inside `length` bytes and is aligned.
const fn block_fits<T>(offset: u32, length: u32) -> bool {
    (offset as u64) + (size_of::<T>() as u64) <= length as u64
        && (offset as usize).is_multiple_of(align_of::<T>())
}

/// Validates the SRB_EX at `raw` and finds its fields.
///
/// # Safety
/// `raw` is an SRB whose Function is `SRB_FUNCTION_STORAGE_REQUEST_BLOCK`, valid for reads
/// of its fixed header and of `SrbLength` bytes if that is larger (the contract of
/// [`Srb::from_raw`]).
#[expect(
    clippy::inline_always,
    reason = "on every I/O (the bench sends SRB_EX); a call costs instructions per I/O (cargo xtask bench)"
)]
#[inline(always)]
unsafe fn parse_extended(raw: NonNull<ScsiRequestBlock>) -> Result<Extended, SrbError> {
    // SAFETY: Signature and Version, adjacent fields of the fixed STORAGE_REQUEST_BLOCK
    // header, which the caller guarantees is valid, read as one aligned word (asserted at the
    // end of this file); the other header reads below are single fields at their naturally
    // aligned offsets.
    let identity =
        u64::from_le(unsafe { read_at::<u64>(raw, offset_of!(StorageRequestBlock, signature)) });
    // SAFETY: as above.
    let length: u32 = unsafe { read_at(raw, offset_of!(StorageRequestBlock, srb_length)) };
    if identity != SRB_EX_IDENTITY || (length as usize) < size_of::<StorageRequestBlock>() {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "Signature and Version are the low and high halves of the word"
        )]
        return Err(SrbError::BadExtendedHeader {
            signature: identity as u32,
            version: (identity >> 32) as u32,
            length,
        });
    }
    // SAFETY: as above.
    let function: u32 = unsafe { read_at(raw, offset_of!(StorageRequestBlock, srb_function)) };
    // SAFETY: as above.
    let address_offset: u32 =
        unsafe { read_at(raw, offset_of!(StorageRequestBlock, address_offset)) };
    let address = if block_fits::<StorAddrBtl8>(address_offset, length)
        // SAFETY: the address block lies inside `SrbLength` and is aligned (just checked).
        && unsafe {
            read_at::<u16>(raw, address_offset as usize + offset_of!(StorAddrBtl8, r#type))
        } == STOR_ADDRESS_TYPE_BTL8
    {
        // SAFETY: Path, Target, Lun and Reserved: the aligned last word of the checked block.
        let word: u32 = unsafe {
            read_at(
                raw,
                address_offset as usize + offset_of!(StorAddrBtl8, path),
            )
        };
        u32::from_le(word) & 0x00FF_FFFF
    } else if function == u32::from(SRB_FUNCTION_IO_CONTROL) {
        // Of an SRB_FUNCTION_IO_CONTROL request the WDK declares only Function, SrbFlags,
        // TimeOutValue, DataBuffer and DataTransferLength valid: it is for the adapter, and
        // its address block, whatever it holds, is never read.
        0
    } else {
        return Err(SrbError::BadAddress {
            offset: address_offset,
        });
    };
    // SAFETY: as above.
    let count: u32 = unsafe { read_at(raw, offset_of!(StorageRequestBlock, num_srb_ex_data)) };
    // The offsets array runs from SrbExDataOffset to the end of `SrbLength`: each entry is
    // checked before it is read, so the blocks before an entry past the end are parsed (and
    // their errors reported) first.
    let offsets_start = offset_of!(StorageRequestBlock, srb_ex_data_offset);
    let mut blocks = Found {
        scsi: ScsiFields::NONE,
        cdb_length: 0,
        cdb_span: 0,
        wmi: 0,
    };
    // `at <= length` throughout (120 < 128 <= length at the start, and `at` moves on only
    // past an entry that fits), so nothing here overflows, whatever the count.
    let mut at = offsets_start;
    for _ in 0..count {
        if length as usize - at < 4 {
            return Err(SrbError::BadDataBlock { offset: u32::MAX });
        }
        // SAFETY: the entry at `at` lies inside `SrbLength` (just checked) and is 4-aligned
        // (SrbExDataOffset is, and entries are 4 bytes).
        let offset: u32 = unsafe { read_at(raw, at) };
        at += 4;
        // SAFETY: the caller's contract, with `length` the SRB's validated `SrbLength`.
        unsafe { parse_block(raw, offset, length, &mut blocks) }?;
    }
    Ok(Extended { address, blocks })
}

/// Records in `found` what a view keeps of the SRB_EX data block at `offset` (read from the
/// offsets array), validated against `length` (`SrbLength`). The CDB16 block, which StorPort
/// sends for every CDB of up to 16 bytes, is parsed here; every other type in
/// [`parse_other_block`].
///
/// # Safety
/// As for [`parse_extended`], and `length` is the SRB's `SrbLength`, at least its header.
#[expect(
    clippy::inline_always,
    reason = "on every I/O (the bench sends SRB_EX); a call costs instructions per I/O (cargo xtask bench)"
)]
#[inline(always)]
unsafe fn parse_block(
    raw: NonNull<ScsiRequestBlock>,
    offset: u32,
    length: u32,
    found: &mut Found,
) -> Result<(), SrbError> {
    // The common case first: an aligned CDB16 block inside `SrbLength`, at a recorded
    // offset. Any other block, or one failing these checks, takes the general way, which
    // checks in the order the errors are reported (type, then offset limit, then extent).
    if offset <= RECORDED_BLOCK_LIMIT && block_fits::<SrbExDataScsiCdb16>(offset, length) {
        // SAFETY: the block's first field, inside `SrbLength` and aligned (just checked).
        let kind: u32 = unsafe { read_at(raw, offset as usize) };
        if kind == SrbExDataTypeScsiCdb16 {
            // SAFETY: the caller's contract.
            return unsafe {
                parse_fixed_cdb_block::<SrbExDataScsiCdb16, 16>(raw, offset, length, found)
            };
        }
    }
    // Passed and returned by value, so that `found` stays in registers on the common way.
    // SAFETY: the caller's contract.
    *found = unsafe { parse_other_block(raw, offset, length, *found) }?;
    Ok(())
}

/// [`parse_block`] for a CDB16 or CDB32 block (type `T`, a CDB array of `SPAN` bytes; the two
/// layouts are the same up to the CDB array, asserted at the end of this file).
///
/// # Safety
/// As for [`parse_block`].
#[expect(
    clippy::inline_always,
    reason = "on every I/O (the bench sends SRB_EX); a call costs instructions per I/O (cargo xtask bench)"
)]
#[inline(always)]
unsafe fn parse_fixed_cdb_block<T, const SPAN: u8>(
    raw: NonNull<ScsiRequestBlock>,
    offset: u32,
    length: u32,
    found: &mut Found,
) -> Result<(), SrbError> {
    if offset > RECORDED_BLOCK_LIMIT || !block_fits::<T>(offset, length) {
        return Err(SrbError::BadDataBlock { offset });
    }
    // SAFETY: a byte of the block just checked to lie inside `SrbLength`.
    let cdb_length: u8 = unsafe {
        read_at(
            raw,
            offset as usize + offset_of!(SrbExDataScsiCdb16, cdb_length),
        )
    };
    if cdb_length == 0 || cdb_length > SPAN {
        return Err(SrbError::CdbLength {
            len: u32::from(cdb_length),
        });
    }
    // Below RECORDED_BLOCK_LIMIT, so every field offset of the block fits in 16 bits; the
    // narrowing cast is exact.
    found.scsi = ScsiFields::at(offset as u16, FIXED_CDB_FIELDS);
    found.cdb_length = cdb_length;
    found.cdb_span = SPAN;
    Ok(())
}

/// [`parse_block`] for every block but a well-placed CDB16 one: out of the I/O path's line.
/// Returns `found` with what the block adds.
///
/// # Safety
/// As for [`parse_block`].
#[cold]
#[inline(never)]
unsafe fn parse_other_block(
    raw: NonNull<ScsiRequestBlock>,
    offset: u32,
    length: u32,
    mut found: Found,
) -> Result<Found, SrbError> {
    let bad = SrbError::BadDataBlock { offset };
    // SAFETY: the caller's contract.
    let kind: u32 = unsafe { read_inside(raw, offset, length) }.ok_or(bad)?;
    let recorded = kind == SrbExDataTypeScsiCdb16
        || kind == SrbExDataTypeScsiCdb32
        || kind == SrbExDataTypeScsiCdbVar
        || kind == SrbExDataTypeWmi;
    if !recorded {
        // Other blocks (PnP, power, I/O info, bidirectional address) are read by the
        // functions that use them.
        return Ok(found);
    }
    if offset > RECORDED_BLOCK_LIMIT {
        return Err(bad);
    }
    // Below RECORDED_BLOCK_LIMIT, so every field offset of the block fits in 16 bits; the
    // narrowing cast is exact.
    let base = offset as u16;
    let at = offset as usize;
    if kind == SrbExDataTypeScsiCdb16 {
        // SAFETY: the caller's contract.
        unsafe {
            parse_fixed_cdb_block::<SrbExDataScsiCdb16, 16>(raw, offset, length, &mut found)
        }?;
    } else if kind == SrbExDataTypeScsiCdb32 {
        // SAFETY: the caller's contract.
        unsafe {
            parse_fixed_cdb_block::<SrbExDataScsiCdb32, 32>(raw, offset, length, &mut found)
        }?;
    } else if kind == SrbExDataTypeScsiCdbVar {
        if !block_fits::<SrbExDataScsiCdbVar>(offset, length) {
            return Err(bad);
        }
        // SAFETY: a field of the block just checked to lie inside `SrbLength`.
        let cdb_length: u32 =
            unsafe { read_at(raw, at + offset_of!(SrbExDataScsiCdbVar, cdb_length)) };
        let Some(cdb_length) = u8::try_from(cdb_length)
            .ok()
            .filter(|&len| len != 0 && usize::from(len) <= CDB_SIZE)
        else {
            return Err(SrbError::CdbLength { len: cdb_length });
        };
        let fields = ScsiFields::at(base, VARIABLE_CDB_FIELDS);
        if fields.cdb() + usize::from(cdb_length) > length as usize {
            return Err(bad);
        }
        found.scsi = fields;
        found.cdb_length = cdb_length;
        found.cdb_span = cdb_length;
    } else {
        // An SRBEX_DATA_WMI block: aligned and inside `SrbLength`, and as long as the WDK
        // says the block is; its fields are read later, at fixed offsets.
        if !block_fits::<SrbExDataWmi>(offset, length) {
            return Err(bad);
        }
        // SAFETY: a field of the block just checked to lie inside `SrbLength`.
        let block_length: u32 = unsafe { read_at(raw, at + offset_of!(SrbExDataWmi, length)) };
        if block_length < SRBEX_DATA_WMI_LENGTH {
            return Err(bad);
        }
        found.wmi = base;
    }
    Ok(found)
}

/// For each CDB length from 1 to [`CDB_SIZE`] (at index `length - 1`), the masks that keep its
/// bytes of the four little-endian words of a CDB array and clear the rest (what
/// [`Srb::cdb_words`] applies).
static CDB_WORD_MASKS: [[u64; CDB_SIZE / 8]; CDB_SIZE] = {
    let mut masks = [[0u64; CDB_SIZE / 8]; CDB_SIZE];
    let mut index = 0;
    while index < CDB_SIZE {
        let len = index + 1;
        let mut word = 0;
        while word < CDB_SIZE / 8 {
            let start = 8 * word;
            masks[index][word] = if len >= start + 8 {
                u64::MAX
            } else if len <= start {
                0
            } else {
                (1u64 << (8 * (len - start))) - 1
            };
            word += 1;
        }
        index += 1;
    }
    masks
};

impl Srb {
    /// Takes ownership of the SRB StorPort passed, validating an SRB_EX's layout.
    ///
    /// # Errors
    /// A malformed SRB_EX comes back with the [`SrbError`], so the caller can complete it with
    /// the status the error calls for.
    ///
    /// # Safety
    /// `raw` is the SRB pointer StorPort passed to HwBuildIo/HwStartIo (or one the miniport
    /// stored while the request was in flight): valid for reads and writes of its declared
    /// length, not completed yet, and not accessed by anyone else until completed.
    #[expect(
        clippy::inline_always,
        reason = "on every I/O; out of line its result goes through memory (cargo xtask bench)"
    )]
    #[inline(always)]
    pub unsafe fn from_raw(raw: NonNull<ScsiRequestBlock>) -> Result<Self, (Self, SrbError)> {
        // SAFETY: every SRB starts with Length (u16), Function (u8): the caller guarantees
        // `raw` is a valid SRB of at least that size.
        let function: u8 = unsafe { read_at(raw, offset_of!(ScsiRequestBlock, function)) };
        if function != SRB_FUNCTION_STORAGE_REQUEST_BLOCK {
            // SAFETY: not an SRB_EX, so a SCSI_REQUEST_BLOCK (a classic WMI SRB shares its
            // header and size, asserted at the end of this file), valid per the contract: the
            // aligned word of ScsiStatus, PathId, TargetId and Lun.
            let word: u32 = unsafe { read_at(raw, offset_of!(ScsiRequestBlock, scsi_status)) };
            // SAFETY: as above, CdbLength.
            let cdb_length: u8 = unsafe { read_at(raw, offset_of!(ScsiRequestBlock, cdb_length)) };
            return Ok(Self {
                raw,
                scsi: CLASSIC_FIELDS,
                address: u32::from_le(word) >> 8,
                cdb_length,
                cdb_span: 16,
                wmi: 0,
                extended: false,
                recorded: false,
                mapped: false,
            });
        }
        // SAFETY: Function says this is a STORAGE_REQUEST_BLOCK; the caller's contract.
        match unsafe { parse_extended(raw) } {
            Ok(found) => Ok(Self {
                raw,
                scsi: found.blocks.scsi,
                address: found.address,
                cdb_length: found.blocks.cdb_length,
                cdb_span: found.blocks.cdb_span,
                wmi: found.blocks.wmi,
                extended: true,
                recorded: false,
                mapped: false,
            }),
            Err(error) => Err((
                // SAFETY: the caller's contract; a layout without SCSI fields of an SRB_EX
                // touches only its fixed header, which it has.
                unsafe {
                    Self::from_layout(
                        raw,
                        SrbLayout {
                            extended: true,
                            ..NO_LAYOUT
                        },
                    )
                },
                error,
            )),
        }
    }

    /// The shape to record for completion (see [`SrbLayout`]).
    #[must_use]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the offsets are 16-bit lanes of `ScsiFields`"
    )]
    pub const fn layout(&self) -> SrbLayout {
        SrbLayout {
            extended: self.extended,
            scsi_status: self.scsi.scsi_status() as u16,
            sense_length: self.scsi.sense_length() as u16,
            sense_buffer: self.scsi.sense_buffer() as u16,
        }
    }

    /// The view of an SRB BuildIo validated, for StartIo: its function, extension, data length
    /// and status, without parsing its blocks again.
    ///
    /// # Safety
    /// As for [`Srb::from_raw`], and BuildIo accepted this SRB.
    #[must_use]
    pub unsafe fn validated(raw: NonNull<ScsiRequestBlock>) -> Self {
        // SAFETY: every SRB starts with Length (u16), Function (u8), valid per the contract.
        let function: u8 = unsafe { read_at(raw, offset_of!(ScsiRequestBlock, function)) };
        let layout = SrbLayout {
            extended: function == SRB_FUNCTION_STORAGE_REQUEST_BLOCK,
            ..NO_LAYOUT
        };
        // SAFETY: the caller's contract; without SCSI fields the view touches only header
        // fields, whose offsets follow from the function byte read above.
        unsafe { Self::from_layout(raw, layout) }
    }

    /// The view of an SRB this miniport validated before, rebuilt from its recorded layout
    /// without parsing it again (its address and CDB are not available through it: it reads
    /// them as 0 and as no CDB).
    ///
    /// # Safety
    /// As for [`Srb::from_raw`], and `layout` is what [`Srb::layout`] returned for this SRB
    /// when it was validated, or a layout without SCSI fields of the SRB's shape (the SRB has
    /// not changed shape since: StorPort does not touch an SRB the miniport owns). Each
    /// accessor tests the offsets it uses, so a layout with some offsets 0 touches none of
    /// those fields.
    #[must_use]
    pub const unsafe fn from_layout(raw: NonNull<ScsiRequestBlock>, layout: SrbLayout) -> Self {
        Self {
            raw,
            scsi: ScsiFields::new(
                layout.scsi_status,
                layout.sense_length,
                layout.sense_buffer,
                0,
            ),
            address: 0,
            cdb_length: 0,
            cdb_span: 0,
            wmi: 0,
            extended: layout.extended,
            recorded: false,
            mapped: false,
        }
    }

    /// The raw pointer, for StorPort calls and for storing while the request is in flight.
    #[must_use]
    pub const fn raw(&self) -> NonNull<ScsiRequestBlock> {
        self.raw
    }

    /// Whether this is an SRB_EX.
    #[must_use]
    pub const fn is_extended(&self) -> bool {
        self.extended
    }

    /// The header offset of a field the two shapes keep at `(classic, extended)`.
    const fn header(&self, (classic, extended): (usize, usize)) -> usize {
        if self.extended { extended } else { classic }
    }

    /// The address of byte `offset` of the SRB (computed, not dereferenced).
    fn at(&self, offset: usize) -> *mut u8 {
        self.raw.as_ptr().cast::<u8>().wrapping_add(offset)
    }

    fn read_u8(&self, offset: usize) -> u8 {
        // SAFETY: `offset` is one of the field offsets of the validated SRB shape (fixed header
        // fields or a block checked against `SrbLength`), inside the SRB.
        unsafe { self.at(offset).read() }
    }

    fn write_u8(&mut self, offset: usize, value: u8) {
        // SAFETY: as in `read_u8`; the miniport owns the SRB until completion.
        unsafe { self.at(offset).write(value) }
    }

    #[expect(
        clippy::cast_ptr_alignment,
        reason = "only offsets of naturally aligned fields are passed"
    )]
    fn read_u32(&self, offset: usize) -> u32 {
        // SAFETY: as in `read_u8`; the offsets used are of 4-aligned u32 header fields.
        unsafe { self.at(offset).cast::<u32>().read() }
    }

    #[expect(
        clippy::cast_ptr_alignment,
        reason = "only offsets of naturally aligned fields are passed"
    )]
    fn write_u32(&mut self, offset: usize, value: u32) {
        // SAFETY: as in `read_u32`; the miniport owns the SRB until completion.
        unsafe { self.at(offset).cast::<u32>().write(value) }
    }

    #[expect(
        clippy::cast_ptr_alignment,
        reason = "only offsets of naturally aligned fields are passed"
    )]
    fn read_ptr(&self, offset: usize) -> *mut c_void {
        // SAFETY: as in `read_u8`; the offsets used are of 8-aligned pointer fields.
        unsafe { self.at(offset).cast::<*mut c_void>().read() }
    }

    /// Gives the SRB up without completing it: it continues in StartIo, or lives on a ring
    /// (its pointer is in the request context) until the device or a reset completes it.
    pub fn hand_over(self) {}

    /// Whether this view wrote its SRB record ([`crate::storport::request::RequestArea::of`]).
    #[must_use]
    pub const fn is_recorded(&self) -> bool {
        self.recorded
    }

    /// Whether StorPort mapped the SRB's data buffer (known for SRBs back from the ring).
    #[must_use]
    pub(in crate::storport) const fn is_mapped(&self) -> bool {
        self.mapped
    }

    /// Notes that StorPort mapped the SRB's data buffer (from the SRB record).
    pub(in crate::storport) const fn set_mapped(&mut self, mapped: bool) {
        self.mapped = mapped;
    }

    /// Notes that this view wrote its SRB record.
    pub(in crate::storport) const fn set_recorded(&mut self) {
        self.recorded = true;
    }

    /// The `SRB_FUNCTION_*` code (for SRB_EX, `SrbFunction`).
    #[must_use]
    pub fn function(&self) -> u32 {
        if self.extended {
            self.read_u32(offset_of!(StorageRequestBlock, srb_function))
        } else {
            u32::from(self.read_u8(offset_of!(ScsiRequestBlock, function)))
        }
    }

    /// Bus, target and LUN (all 0 in a view rebuilt by [`Srb::from_layout`]).
    #[must_use]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "each of the three is cut out of its own byte"
    )]
    pub const fn address(&self) -> Address {
        Address {
            path: self.address as u8,
            target: (self.address >> 8) as u8,
            lun: (self.address >> 16) as u8,
        }
    }

    /// `SrbFlags`.
    #[must_use]
    pub fn flags(&self) -> u32 {
        self.read_u32(self.header(FLAGS_AT))
    }

    /// `DataTransferLength`.
    #[must_use]
    pub fn data_transfer_length(&self) -> u32 {
        self.read_u32(self.header(DATA_LENGTH_AT))
    }

    /// Sets `DataTransferLength` (to the bytes really moved, on an underrun).
    pub fn set_data_transfer_length(&mut self, length: u32) {
        self.write_u32(self.header(DATA_LENGTH_AT), length);
    }

    /// `DataBuffer`: the buffer's system virtual address (mapped for non-read/write commands,
    /// as the miniport asks with `STOR_MAP_NON_READ_WRITE_BUFFERS`).
    #[must_use]
    pub fn data_buffer(&self) -> *mut c_void {
        self.read_ptr(self.header(DATA_BUFFER_AT))
    }

    /// The WMI parameters of an `SRB_FUNCTION_WMI` request: from the `SCSI_WMI_REQUEST_BLOCK`
    /// fields of a classic SRB, or from the `SRBEX_DATA_WMI` block of an SRB_EX (validated
    /// when the SRB was taken over). `None` for other functions and for an SRB_EX without
    /// that block.
    #[must_use]
    pub fn wmi_parameters(&self) -> Option<WmiParameters> {
        if self.function() != u32::from(SRB_FUNCTION_WMI) {
            return None;
        }
        let (sub_function, flags, data_path) = if !self.extended {
            // A classic WMI SRB is a SCSI_WMI_REQUEST_BLOCK: same size and header as the
            // SCSI_REQUEST_BLOCK the pointer is typed as (asserted at the end of this file).
            (
                offset_of!(ScsiWmiRequestBlock, wmi_sub_function),
                offset_of!(ScsiWmiRequestBlock, wmi_flags),
                offset_of!(ScsiWmiRequestBlock, data_path),
            )
        } else if self.wmi != 0 {
            let block = usize::from(self.wmi);
            (
                block + offset_of!(SrbExDataWmi, wmi_sub_function),
                block + offset_of!(SrbExDataWmi, wmi_flags),
                block + offset_of!(SrbExDataWmi, data_path),
            )
        } else {
            return None;
        };
        Some(WmiParameters {
            sub_function: self.read_u8(sub_function),
            flags: self.read_u8(flags),
            data_path: self.read_ptr(data_path).addr(),
        })
    }

    /// The data buffer of an `SRB_FUNCTION_IO_CONTROL` request, as one slice of exactly
    /// `DataTransferLength` bytes: the only view through which the miniport reads the caller's
    /// `SRB_IO_CONTROL` and payload. `None` for other functions and for a null `DataBuffer`.
    pub fn io_control_buffer(&mut self) -> Option<&mut [u8]> {
        if self.function() != u32::from(SRB_FUNCTION_IO_CONTROL) {
            return None;
        }
        let length = self.data_transfer_length() as usize;
        let buffer = NonNull::new(self.data_buffer().cast::<u8>())?;
        // SAFETY: for SRB_FUNCTION_IO_CONTROL, StorPort passes in DataBuffer the IOCTL's system
        // buffer, valid for reads and writes of DataTransferLength bytes whatever MapBuffers
        // says (WDK, SCSI_REQUEST_BLOCK and STORAGE_REQUEST_BLOCK), and touched by no one else
        // until the SRB is completed; the slice borrows the SRB mutably, so it ends before the
        // SRB can be completed.
        Some(unsafe { core::slice::from_raw_parts_mut(buffer.as_ptr(), length) })
    }

    /// The SRB extension (`SrbExtension` / `MiniportContext`).
    #[must_use]
    pub fn extension(&self) -> *mut c_void {
        self.read_ptr(self.header(EXTENSION_AT))
    }

    /// `NextSrb`: for `SRB_FUNCTION_ABORT_COMMAND`, the request to abort (both shapes keep it
    /// there). Only compared with the SRBs this miniport has in flight, never dereferenced.
    #[must_use]
    pub fn next_srb(&self) -> usize {
        self.read_ptr(self.header(NEXT_SRB_AT)) as usize
    }

    /// Copies the CDB into `out` and returns its length; the bytes of `out` past it are 0.
    ///
    /// # Errors
    /// As [`Self::cdb_words`].
    pub fn cdb(&self, out: &mut [u8; CDB_SIZE]) -> Result<usize, SrbError> {
        let (len, words) = self.cdb_words()?;
        for (bytes, word) in out.chunks_exact_mut(8).zip(words) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        Ok(len)
    }

    /// The CDB's length and its [`CDB_SIZE`] bytes zero-padded, as four little-endian words
    /// (the bytes of [`Self::cdb`]): the CDB array read a word at a time and masked
    /// (a table of masks per length), which is what the request header is stored as.
    ///
    /// # Errors
    /// [`SrbError::CdbLength`] if the SRB has no CDB, an empty one, or one longer than the
    /// SRB's own array or than virtio-scsi carries.
    #[expect(
        clippy::inline_always,
        reason = "on every I/O; a call costs instructions per I/O (cargo xtask bench)"
    )]
    #[inline(always)]
    pub fn cdb_words(&self) -> Result<(usize, [u64; CDB_SIZE / 8]), SrbError> {
        let len = usize::from(self.cdb_length);
        let error = SrbError::CdbLength {
            len: u32::from(self.cdb_length),
        };
        // `len` is 1 to `cdb_span` exactly when `len - 1` (wrapping, so 0 becomes the largest
        // value) is below the span: one compare for both ends.
        let below = self.cdb_length.wrapping_sub(1);
        if below >= self.cdb_span {
            return Err(error);
        }
        // Every span is at most CDB_SIZE (16 or 32 for a CDB array, a CDB_VAR block's length
        // checked against CDB_SIZE when parsed), so `below` is a row of the table already; the
        // remainder only says so to the compiler, without a second compare.
        let masks = &CDB_WORD_MASKS[usize::from(below) % CDB_SIZE];
        let at = self.scsi.cdb();
        let words = match self.cdb_span {
            // The CDB array of a classic SRB or of a CDB16 block, or a CDB_VAR block's 16
            // bytes: two words.
            16 => {
                let mut words = [0u64; CDB_SIZE / 8];
                for (index, word) in words.iter_mut().take(2).enumerate() {
                    // SAFETY: `at .. at + 16` is the CDB array (or the checked CDB_VAR bytes)
                    // of the validated SRB; `[u8; 8]` needs no alignment.
                    let bytes: [u8; 8] = unsafe { read_at(self.raw, at + 8 * index) };
                    *word = u64::from_le_bytes(bytes) & masks[index];
                }
                words
            }
            // A CDB32 block's array, or a CDB_VAR block's 32 bytes: four words.
            32 => {
                let mut words = [0u64; CDB_SIZE / 8];
                for (index, word) in words.iter_mut().enumerate() {
                    // SAFETY: `at .. at + 32` is the CDB array (or the checked CDB_VAR bytes)
                    // of the validated SRB; `[u8; 8]` needs no alignment.
                    let bytes: [u8; 8] = unsafe { read_at(self.raw, at + 8 * index) };
                    *word = u64::from_le_bytes(bytes) & masks[index];
                }
                words
            }
            // A CDB_VAR block of another length: exactly its `len` bytes, which were checked
            // against SrbLength.
            _ => self.variable_cdb_words(at, len),
        };
        Ok((len, words))
    }

    /// The `len` bytes of a CDB_VAR block's CDB at `at` (checked against SrbLength when the
    /// SRB was validated), a byte at a time, as [`Self::cdb_words`] gives them. Out of line:
    /// its words indexed by a variable live in memory, which the I/O path's CDBs, read a word
    /// at a time, then need not.
    #[cold]
    #[inline(never)]
    fn variable_cdb_words(&self, at: usize, len: usize) -> [u64; CDB_SIZE / 8] {
        let mut words = [0u64; CDB_SIZE / 8];
        for index in 0..len {
            let byte = u64::from(self.read_u8(at + index));
            if let Some(word) = words.get_mut(index / 8) {
                *word |= byte << (8 * (index % 8));
            }
        }
        words
    }

    /// The sense buffer and its capacity; `None` when the SRB has none.
    #[must_use]
    pub fn sense_buffer(&self) -> Option<(NonNull<u8>, u8)> {
        let (length_at, buffer_at) = (self.scsi.sense_length(), self.scsi.sense_buffer());
        if length_at == 0 || buffer_at == 0 {
            return None;
        }
        let len = self.read_u8(length_at);
        let buffer = NonNull::new(self.read_ptr(buffer_at).cast::<u8>())?;
        (len > 0).then_some((buffer, len))
    }

    /// The data buffer of an `SRB_FUNCTION_WMI` request, `DataTransferLength` bytes; `None` for
    /// another function or a null buffer.
    pub fn wmi_buffer(&mut self) -> Option<&mut [u8]> {
        if self.function() != u32::from(crate::storport::SRB_FUNCTION_WMI) {
            return None;
        }
        let buffer = core::ptr::NonNull::new(self.data_buffer().cast::<u8>())?;
        let length = self.data_transfer_length() as usize;
        // SAFETY: for SRB_FUNCTION_WMI, StorPort passes in DataBuffer the system-space buffer
        // of the WMI request, valid for reads and writes of DataTransferLength bytes and used
        // by no one else until the SRB is completed; the slice borrows this view mutably, so
        // it is the only one and ends before the SRB can be completed.
        Some(unsafe { core::slice::from_raw_parts_mut(buffer.as_ptr(), length) })
    }

    /// Copies as much of `sense` as the SRB's sense buffer holds into it; returns the bytes
    /// copied (0 without a sense buffer).
    pub fn copy_sense(&mut self, sense: &[u8]) -> u8 {
        let Some((buffer, capacity)) = self.sense_buffer() else {
            return 0;
        };
        let len = sense.len().min(usize::from(capacity));
        // SAFETY: the SRB's sense buffer holds `capacity` bytes (StorPort's contract for
        // SenseInfoBuffer/SenseInfoBufferLength), `len <= capacity`, and `&mut self` is the
        // request's only view.
        unsafe { core::ptr::copy_nonoverlapping(sense.as_ptr(), buffer.as_ptr(), len) };
        u8::try_from(len).unwrap_or(capacity)
    }

    /// Sets `SenseInfoBufferLength` to the bytes of sense written.
    pub fn set_sense_length(&mut self, len: u8) {
        let at = self.scsi.sense_length();
        if at != 0 {
            self.write_u8(at, len);
        }
    }

    /// Sets the SCSI status byte.
    pub fn set_scsi_status(&mut self, status: u8) {
        let at = self.scsi.scsi_status();
        if at != 0 {
            self.write_u8(at, status);
        }
    }

    /// Sets `SrbStatus` (same offset in both shapes).
    pub fn set_srb_status(&mut self, status: u8) {
        self.write_u8(offset_of!(ScsiRequestBlock, srb_status), status);
    }

    /// The `SrbStatus` currently set.
    #[must_use]
    pub fn srb_status(&self) -> u8 {
        self.read_u8(offset_of!(ScsiRequestBlock, srb_status))
    }
}

const _: () = assert!(
    offset_of!(ScsiRequestBlock, srb_status) == offset_of!(StorageRequestBlock, srb_status)
);
// A classic WMI SRB is read through the SCSI_REQUEST_BLOCK-typed pointer: it must be exactly as
// large and share the fields the common accessors read.
const _: () = assert!(
    size_of::<ScsiWmiRequestBlock>() == size_of::<ScsiRequestBlock>()
        && offset_of!(ScsiWmiRequestBlock, function) == offset_of!(ScsiRequestBlock, function)
        && offset_of!(ScsiWmiRequestBlock, data_transfer_length)
            == offset_of!(ScsiRequestBlock, data_transfer_length)
        && offset_of!(ScsiWmiRequestBlock, data_buffer)
            == offset_of!(ScsiRequestBlock, data_buffer)
);
const _: () = assert!(
    offset_of!(SrbExDataScsiCdb16, scsi_status) == offset_of!(SrbExDataScsiCdb32, scsi_status)
        && offset_of!(SrbExDataScsiCdb16, sense_info_buffer_length)
            == offset_of!(SrbExDataScsiCdb32, sense_info_buffer_length)
        && offset_of!(SrbExDataScsiCdb16, sense_info_buffer)
            == offset_of!(SrbExDataScsiCdb32, sense_info_buffer)
        && offset_of!(SrbExDataScsiCdb16, cdb_length) == offset_of!(SrbExDataScsiCdb32, cdb_length)
        && offset_of!(SrbExDataScsiCdb16, cdb) == offset_of!(SrbExDataScsiCdb32, cdb)
);
// Signature and Version are read as one aligned word.
const _: () = assert!(
    offset_of!(StorageRequestBlock, signature).is_multiple_of(8)
        && offset_of!(StorageRequestBlock, version)
            == offset_of!(StorageRequestBlock, signature) + 4
);
// The address is read as one aligned word in both shapes: ScsiStatus, PathId, TargetId, Lun
// of a classic SRB; Path, Target, Lun, Reserved of a BTL8 address (4-aligned, `block_fits`).
const _: () = assert!(
    offset_of!(ScsiRequestBlock, scsi_status).is_multiple_of(4)
        && offset_of!(ScsiRequestBlock, path_id) == offset_of!(ScsiRequestBlock, scsi_status) + 1
        && offset_of!(ScsiRequestBlock, target_id) == offset_of!(ScsiRequestBlock, scsi_status) + 2
        && offset_of!(ScsiRequestBlock, lun) == offset_of!(ScsiRequestBlock, scsi_status) + 3
        && offset_of!(StorAddrBtl8, path).is_multiple_of(4)
        && offset_of!(StorAddrBtl8, target) == offset_of!(StorAddrBtl8, path) + 1
        && offset_of!(StorAddrBtl8, lun) == offset_of!(StorAddrBtl8, path) + 2
        && align_of::<StorAddrBtl8>() >= 4
);

mod opcode;

#[cfg(test)]
mod tests;
