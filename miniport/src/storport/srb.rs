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

/// Where the SCSI fields of an SRB live, as byte offsets from the SRB's start: 16-bit, so an
/// [`Srb`] is small enough to pass around in registers and a few stores (a block is only
/// recorded if all its fields lie below 64 KiB, see [`RECORDED_BLOCK_LIMIT`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ScsiFields {
    scsi_status: u16,
    sense_length: u16,
    sense_buffer: u16,
    cdb: u16,
    /// At most [`CDB_SIZE`] in an SRB_EX (checked when parsed); 0 in a classic SRB, whose
    /// length is read from the SRB when asked for.
    cdb_length: u8,
}

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

/// What [`Srb::parse_block`] records of one SRB_EX data block.
enum Block {
    /// A CDB block: where its SCSI fields are.
    Scsi(ScsiFields),
    /// An `SRBEX_DATA_WMI` block at this offset.
    Wmi(u16),
    /// A block read, if at all, by the function that uses it.
    Other,
}

/// The shape of the SRB behind the pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// `SCSI_REQUEST_BLOCK`.
    Classic,
    /// `STORAGE_REQUEST_BLOCK`; `scsi` is `None` when it has no CDB block (non-SCSI functions),
    /// `wmi` the offset of its validated `SRBEX_DATA_WMI` block, if it has one.
    Extended {
        address: Address,
        scsi: Option<ScsiFields>,
        wmi: Option<u16>,
    },
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

/// A request StorPort handed to the miniport. Not `Copy`: completing consumes it.
#[derive(Debug)]
pub struct Srb {
    raw: NonNull<ScsiRequestBlock>,
    shape: Shape,
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

const CLASSIC_FIELDS: ScsiFields = ScsiFields {
    scsi_status: field16(offset_of!(ScsiRequestBlock, scsi_status)),
    sense_length: field16(offset_of!(ScsiRequestBlock, sense_info_buffer_length)),
    sense_buffer: field16(offset_of!(ScsiRequestBlock, sense_info_buffer)),
    cdb: field16(offset_of!(ScsiRequestBlock, cdb)),
    cdb_length: 0,
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
    pub unsafe fn from_raw(raw: NonNull<ScsiRequestBlock>) -> Result<Self, (Self, SrbError)> {
        let bytes = raw.cast::<u8>();
        // SAFETY: every SRB starts with Length (u16), Function (u8): the caller guarantees
        // `raw` is a valid SRB of at least that size.
        let function = unsafe {
            bytes
                .as_ptr()
                .wrapping_add(offset_of!(ScsiRequestBlock, function))
                .read()
        };
        if function != SRB_FUNCTION_STORAGE_REQUEST_BLOCK {
            return Ok(Self {
                raw,
                shape: Shape::Classic,
                recorded: false,
                mapped: false,
            });
        }
        // SAFETY: Function says this is a STORAGE_REQUEST_BLOCK, whose fixed header the caller
        // guarantees is valid to read; it is read by value (Copy) once.
        let header = unsafe { raw.cast::<StorageRequestBlock>().read() };
        let mut srb = Self {
            raw,
            shape: Shape::Extended {
                address: Address {
                    path: 0,
                    target: 0,
                    lun: 0,
                },
                scsi: None,
                wmi: None,
            },
            recorded: false,
            mapped: false,
        };
        match srb.parse_extended(&header) {
            Ok(shape) => {
                srb.shape = shape;
                Ok(srb)
            }
            Err(error) => Err((srb, error)),
        }
    }

    fn parse_extended(&self, header: &StorageRequestBlock) -> Result<Shape, SrbError> {
        let length = header.srb_length;
        if header.signature != SRB_SIGNATURE
            || header.version != STORAGE_REQUEST_BLOCK_VERSION_1
            || (length as usize) < size_of::<StorageRequestBlock>()
        {
            return Err(SrbError::BadExtendedHeader {
                signature: header.signature,
                version: header.version,
                length,
            });
        }
        let address_offset = header.address_offset;
        let address = match self
            .read_block::<StorAddrBtl8>(address_offset, length)
            .filter(|address| address.r#type == STOR_ADDRESS_TYPE_BTL8)
        {
            Some(address) => Address {
                path: address.path,
                target: address.target,
                lun: address.lun,
            },
            // Of an SRB_FUNCTION_IO_CONTROL request the WDK declares only Function, SrbFlags,
            // TimeOutValue, DataBuffer and DataTransferLength valid: it is for the adapter, and
            // its address block, whatever it holds, is never read.
            None if header.srb_function == u32::from(SRB_FUNCTION_IO_CONTROL) => Address {
                path: 0,
                target: 0,
                lun: 0,
            },
            None => {
                return Err(SrbError::BadAddress {
                    offset: address_offset,
                });
            }
        };
        let offsets_start = offset_of!(StorageRequestBlock, srb_ex_data_offset);
        let mut scsi = None;
        let mut wmi = None;
        for index in 0..header.num_srb_ex_data {
            let at = (index as usize)
                .checked_mul(4)
                .and_then(|n| n.checked_add(offsets_start))
                .filter(|&at| at + 4 <= length as usize)
                .ok_or(SrbError::BadDataBlock { offset: u32::MAX })?;
            let offset: u32 = self
                .read_at(at, length)
                .ok_or(SrbError::BadDataBlock { offset: u32::MAX })?;
            match self.parse_block(offset, length)? {
                Block::Scsi(fields) => scsi = Some(fields),
                Block::Wmi(block) => wmi = Some(block),
                Block::Other => {}
            }
        }
        Ok(Shape::Extended { address, scsi, wmi })
    }

    /// The SRB_EX data block at `offset` (read from the offsets array): what this view records
    /// of it, validated against `length` (`SrbLength`).
    fn parse_block(&self, offset: u32, length: u32) -> Result<Block, SrbError> {
        let kind: u32 = self
            .read_block(offset, length)
            .ok_or(SrbError::BadDataBlock { offset })?;
        let recorded = [
            SrbExDataTypeScsiCdb16,
            SrbExDataTypeScsiCdb32,
            SrbExDataTypeScsiCdbVar,
            SrbExDataTypeWmi,
        ]
        .contains(&kind);
        if recorded && offset > RECORDED_BLOCK_LIMIT {
            return Err(SrbError::BadDataBlock { offset });
        }
        // Below RECORDED_BLOCK_LIMIT (when recorded), so every field offset of the block
        // fits in 16 bits; the narrowing casts below are exact.
        let base = offset as u16;
        Ok(match kind {
            k if k == SrbExDataTypeScsiCdb16 => {
                let block: SrbExDataScsiCdb16 = self
                    .read_block(offset, length)
                    .ok_or(SrbError::BadDataBlock { offset })?;
                Block::Scsi(Self::fixed_fields(base, block.cdb_length, 16)?)
            }
            k if k == SrbExDataTypeScsiCdb32 => {
                let block: SrbExDataScsiCdb32 = self
                    .read_block(offset, length)
                    .ok_or(SrbError::BadDataBlock { offset })?;
                Block::Scsi(Self::fixed_fields(base, block.cdb_length, 32)?)
            }
            k if k == SrbExDataTypeScsiCdbVar => {
                let block: SrbExDataScsiCdbVar = self
                    .read_block(offset, length)
                    .ok_or(SrbError::BadDataBlock { offset })?;
                let cdb = base + field16(offset_of!(SrbExDataScsiCdbVar, cdb));
                let cdb_length = block.cdb_length;
                let Some(cdb_length) = u8::try_from(cdb_length)
                    .ok()
                    .filter(|&len| len != 0 && usize::from(len) <= CDB_SIZE)
                else {
                    return Err(SrbError::CdbLength { len: cdb_length });
                };
                if u32::from(cdb) + u32::from(cdb_length) > length {
                    return Err(SrbError::BadDataBlock { offset });
                }
                Block::Scsi(ScsiFields {
                    scsi_status: base + field16(offset_of!(SrbExDataScsiCdbVar, scsi_status)),
                    sense_length: base
                        + field16(offset_of!(SrbExDataScsiCdbVar, sense_info_buffer_length)),
                    sense_buffer: base
                        + field16(offset_of!(SrbExDataScsiCdbVar, sense_info_buffer)),
                    cdb,
                    cdb_length,
                })
            }
            k if k == SrbExDataTypeWmi => {
                // Aligned and inside `SrbLength` (read_block checks both), and as long as
                // the WDK says the block is: its fields are read later, at fixed offsets.
                let block: SrbExDataWmi = self
                    .read_block(offset, length)
                    .ok_or(SrbError::BadDataBlock { offset })?;
                if block.length < SRBEX_DATA_WMI_LENGTH {
                    return Err(SrbError::BadDataBlock { offset });
                }
                Block::Wmi(base)
            }
            // Other blocks (PnP, power, I/O info, bidirectional address) are read by the
            // functions that use them.
            _ => Block::Other,
        })
    }

    /// Offsets of the SCSI fields of a CDB16/CDB32 block at `base` (at most
    /// [`RECORDED_BLOCK_LIMIT`]); they share one layout.
    fn fixed_fields(base: u16, cdb_length: u8, capacity: u8) -> Result<ScsiFields, SrbError> {
        if cdb_length == 0 || cdb_length > capacity {
            return Err(SrbError::CdbLength {
                len: u32::from(cdb_length),
            });
        }
        // The two layouts are the same up to the CDB array (asserted at the end of this file).
        Ok(ScsiFields {
            scsi_status: base + field16(offset_of!(SrbExDataScsiCdb16, scsi_status)),
            sense_length: base + field16(offset_of!(SrbExDataScsiCdb16, sense_info_buffer_length)),
            sense_buffer: base + field16(offset_of!(SrbExDataScsiCdb16, sense_info_buffer)),
            cdb: base + field16(offset_of!(SrbExDataScsiCdb16, cdb)),
            cdb_length,
        })
    }

    /// The shape to record for completion (see [`SrbLayout`]).
    #[must_use]
    pub fn layout(&self) -> SrbLayout {
        let fields = self.scsi_fields();
        SrbLayout {
            extended: self.is_extended(),
            scsi_status: fields.map_or(0, |f| f.scsi_status),
            sense_length: fields.map_or(0, |f| f.sense_length),
            sense_buffer: fields.map_or(0, |f| f.sense_buffer),
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
        let function = unsafe {
            raw.as_ptr()
                .cast::<u8>()
                .wrapping_add(offset_of!(ScsiRequestBlock, function))
                .read()
        };
        let layout = SrbLayout {
            extended: function == SRB_FUNCTION_STORAGE_REQUEST_BLOCK,
            scsi_status: 0,
            sense_length: 0,
            sense_buffer: 0,
        };
        // SAFETY: the caller's contract; without SCSI fields the view touches only header
        // fields, whose offsets follow from the function byte read above.
        unsafe { Self::from_layout(raw, layout) }
    }

    /// The view of an SRB this miniport validated before, rebuilt from its recorded layout
    /// without parsing it again (its address and CDB are not available through it).
    ///
    /// # Safety
    /// As for [`Srb::from_raw`], and `layout` is what [`Srb::layout`] returned for this SRB
    /// when it was validated (the SRB has not changed shape since: StorPort does not touch an
    /// SRB the miniport owns).
    #[must_use]
    pub const unsafe fn from_layout(raw: NonNull<ScsiRequestBlock>, layout: SrbLayout) -> Self {
        let scsi =
            if layout.scsi_status == 0 || layout.sense_length == 0 || layout.sense_buffer == 0 {
                None
            } else {
                Some(ScsiFields {
                    scsi_status: layout.scsi_status,
                    sense_length: layout.sense_length,
                    sense_buffer: layout.sense_buffer,
                    cdb: 0,
                    cdb_length: 0,
                })
            };
        let shape = if layout.extended {
            Shape::Extended {
                address: Address {
                    path: 0,
                    target: 0,
                    lun: 0,
                },
                scsi,
                wmi: None,
            }
        } else {
            Shape::Classic
        };
        Self {
            raw,
            shape,
            recorded: false,
            mapped: false,
        }
    }

    /// Reads a `T` at byte `offset` of the SRB if it lies inside `length` bytes and is aligned.
    fn read_block<T: Copy>(&self, offset: u32, length: u32) -> Option<T> {
        self.read_at(offset as usize, length)
    }

    fn read_at<T: Copy>(&self, offset: usize, length: u32) -> Option<T> {
        let end = offset.checked_add(size_of::<T>())?;
        if end > length as usize || !offset.is_multiple_of(align_of::<T>()) {
            return None;
        }
        // SAFETY: `offset .. offset + size_of::<T>()` lies inside the SRB's `SrbLength` bytes,
        // which the caller of `from_raw` guaranteed are valid, and is aligned for `T`; every
        // `T` read here is plain data (integers and raw pointers), valid for any bits.
        Some(unsafe { self.at(offset).cast::<T>().read() })
    }

    /// The raw pointer, for StorPort calls and for storing while the request is in flight.
    #[must_use]
    pub const fn raw(&self) -> NonNull<ScsiRequestBlock> {
        self.raw
    }

    /// Whether this is an SRB_EX.
    #[must_use]
    pub const fn is_extended(&self) -> bool {
        matches!(self.shape, Shape::Extended { .. })
    }

    /// The address of byte `offset` of the SRB (computed, not dereferenced).
    fn at(&self, offset: usize) -> *mut u8 {
        self.raw.as_ptr().cast::<u8>().wrapping_add(offset)
    }

    fn read_u8(&self, offset: usize) -> u8 {
        // SAFETY: `offset` is one of the field offsets of the validated SRB shape (fixed header
        // fields or a CDB block checked against `SrbLength`), inside the SRB.
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
        match self.shape {
            Shape::Classic => u32::from(self.read_u8(offset_of!(ScsiRequestBlock, function))),
            Shape::Extended { .. } => self.read_u32(offset_of!(StorageRequestBlock, srb_function)),
        }
    }

    /// Bus, target and LUN.
    #[must_use]
    pub fn address(&self) -> Address {
        match self.shape {
            Shape::Classic => Address {
                path: self.read_u8(offset_of!(ScsiRequestBlock, path_id)),
                target: self.read_u8(offset_of!(ScsiRequestBlock, target_id)),
                lun: self.read_u8(offset_of!(ScsiRequestBlock, lun)),
            },
            Shape::Extended { address, .. } => address,
        }
    }

    /// `SrbFlags`.
    #[must_use]
    pub fn flags(&self) -> u32 {
        match self.shape {
            Shape::Classic => self.read_u32(offset_of!(ScsiRequestBlock, srb_flags)),
            Shape::Extended { .. } => self.read_u32(offset_of!(StorageRequestBlock, srb_flags)),
        }
    }

    const fn data_length_offset(&self) -> usize {
        match self.shape {
            Shape::Classic => offset_of!(ScsiRequestBlock, data_transfer_length),
            Shape::Extended { .. } => offset_of!(StorageRequestBlock, data_transfer_length),
        }
    }

    /// `DataTransferLength`.
    #[must_use]
    pub fn data_transfer_length(&self) -> u32 {
        self.read_u32(self.data_length_offset())
    }

    /// Sets `DataTransferLength` (to the bytes really moved, on an underrun).
    pub fn set_data_transfer_length(&mut self, length: u32) {
        self.write_u32(self.data_length_offset(), length);
    }

    /// `DataBuffer`: the buffer's system virtual address (mapped for non-read/write commands,
    /// as the miniport asks with `STOR_MAP_NON_READ_WRITE_BUFFERS`).
    #[must_use]
    pub fn data_buffer(&self) -> *mut c_void {
        match self.shape {
            Shape::Classic => self.read_ptr(offset_of!(ScsiRequestBlock, data_buffer)),
            Shape::Extended { .. } => self.read_ptr(offset_of!(StorageRequestBlock, data_buffer)),
        }
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
        let (sub_function, flags, data_path) = match self.shape {
            // A classic WMI SRB is a SCSI_WMI_REQUEST_BLOCK: same size and header as the
            // SCSI_REQUEST_BLOCK the pointer is typed as (asserted at the end of this file).
            Shape::Classic => (
                offset_of!(ScsiWmiRequestBlock, wmi_sub_function),
                offset_of!(ScsiWmiRequestBlock, wmi_flags),
                offset_of!(ScsiWmiRequestBlock, data_path),
            ),
            Shape::Extended {
                wmi: Some(block), ..
            } => (
                usize::from(block) + offset_of!(SrbExDataWmi, wmi_sub_function),
                usize::from(block) + offset_of!(SrbExDataWmi, wmi_flags),
                usize::from(block) + offset_of!(SrbExDataWmi, data_path),
            ),
            Shape::Extended { wmi: None, .. } => return None,
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
        match self.shape {
            Shape::Classic => self.read_ptr(offset_of!(ScsiRequestBlock, srb_extension)),
            Shape::Extended { .. } => {
                self.read_ptr(offset_of!(StorageRequestBlock, miniport_context))
            }
        }
    }

    /// `NextSrb`: for `SRB_FUNCTION_ABORT_COMMAND`, the request to abort (both shapes keep it
    /// there). Only compared with the SRBs this miniport has in flight, never dereferenced.
    #[must_use]
    pub fn next_srb(&self) -> usize {
        let pointer = match self.shape {
            Shape::Classic => self.read_ptr(offset_of!(ScsiRequestBlock, next_srb)),
            Shape::Extended { .. } => self.read_ptr(offset_of!(StorageRequestBlock, next_srb)),
        };
        pointer as usize
    }

    fn scsi_fields(&self) -> Option<ScsiFields> {
        match self.shape {
            Shape::Classic => Some(ScsiFields {
                cdb_length: self.read_u8(offset_of!(ScsiRequestBlock, cdb_length)),
                ..CLASSIC_FIELDS
            }),
            Shape::Extended { scsi, .. } => scsi,
        }
    }

    /// Copies the CDB into `out` and returns its length.
    ///
    /// # Errors
    /// [`SrbError::CdbLength`] if the SRB has no CDB, an empty one, or one longer than the
    /// SRB's own array or than virtio-scsi carries.
    pub fn cdb(&self, out: &mut [u8; CDB_SIZE]) -> Result<usize, SrbError> {
        let fields = self.scsi_fields().ok_or(SrbError::CdbLength { len: 0 })?;
        let len = usize::from(fields.cdb_length);
        let capacity = if matches!(self.shape, Shape::Classic) {
            16
        } else {
            CDB_SIZE
        };
        if len == 0 || len > capacity {
            return Err(SrbError::CdbLength {
                len: u32::from(fields.cdb_length),
            });
        }
        // One read of the whole CDB array (16 bytes in an SRB or a CDB16 block, 32 in a CDB32
        // block or, for a CDB_VAR block, the bytes the block was checked to hold), then the
        // bytes past `len` are cleared.
        let mut bytes = [0u8; CDB_SIZE];
        let Some(head) = bytes.get_mut(..len) else {
            return Err(SrbError::CdbLength {
                len: u32::from(fields.cdb_length),
            });
        };
        // SAFETY: `fields.cdb .. fields.cdb + len` lies inside the validated SRB (the fixed CDB
        // array, or a CDB block checked against SrbLength); the copy is bytewise.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.at(usize::from(fields.cdb)),
                head.as_mut_ptr(),
                len,
            );
        };
        *out = bytes;
        Ok(len)
    }

    /// The sense buffer and its capacity; `None` when the SRB has none.
    #[must_use]
    pub fn sense_buffer(&self) -> Option<(NonNull<u8>, u8)> {
        let fields = self.scsi_fields()?;
        let len = self.read_u8(usize::from(fields.sense_length));
        let buffer = NonNull::new(self.read_ptr(usize::from(fields.sense_buffer)).cast::<u8>())?;
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
        if let Some(fields) = self.scsi_fields() {
            self.write_u8(usize::from(fields.sense_length), len);
        }
    }

    /// Sets the SCSI status byte.
    pub fn set_scsi_status(&mut self, status: u8) {
        if let Some(fields) = self.scsi_fields() {
            self.write_u8(usize::from(fields.scsi_status), status);
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
        && offset_of!(SrbExDataScsiCdb16, cdb) == offset_of!(SrbExDataScsiCdb32, cdb)
);

mod opcode;

#[cfg(test)]
mod tests;
