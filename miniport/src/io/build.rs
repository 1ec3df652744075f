//! HwBuildIo: an SRB validated and turned into one virtio-scsi request in its SRB extension
//! (header, and the indirect table written in the ring's format or, for a direct chain, the
//! segment list), with no lock held; WMI and IOCTL requests answered here.
#![forbid(unsafe_code)]

use core::mem::offset_of;
use core::sync::atomic::Ordering;

use virtio_core::features::Features;
use virtio_core::hal::Segment;
use virtio_core::queue::{IndirectChain, IndirectWriter, RingFormat};

use virtio_core::dma::DmaTable;
use virtio_core::scsi::{CDB_SIZE, CmdReq, CmdResp, DataDirection, Lun, TaskAttr};

use super::IoHost;
use super::{Built, UNWRITTEN_RESPONSE_HEADER, complete, device_identification};
use crate::luns::{self};
use crate::sizing::HEADER_DESCRIPTORS;
use crate::srb_extension::{
    CMD_REQ_AT, CMD_RESP_AT, CONTEXT_AT, CONTEXT_LEN, INDIRECT_AT, RequestContext, RequestState,
};
use crate::storport::request::{RequestArea, ScratchList};
use crate::storport::srb::{Srb, SrbError};
use crate::storport::{
    SRB_FLAGS_DATA_IN, SRB_FLAGS_DATA_OUT, SRB_FLAGS_DISABLE_AUTOSENSE,
    SRB_FLAGS_UNSPECIFIED_DIRECTION, SRB_FUNCTION_ABORT_COMMAND, SRB_FUNCTION_EXECUTE_SCSI,
    SRB_FUNCTION_FLUSH, SRB_FUNCTION_IO_CONTROL, SRB_FUNCTION_PNP, SRB_FUNCTION_POWER,
    SRB_FUNCTION_RESET_BUS, SRB_FUNCTION_RESET_DEVICE, SRB_FUNCTION_RESET_LOGICAL_UNIT,
    SRB_FUNCTION_SHUTDOWN, SRB_FUNCTION_WMI, SRB_STATUS_BAD_SRB_BLOCK_LENGTH, SRB_STATUS_ERROR,
    SRB_STATUS_INVALID_LUN, SRB_STATUS_INVALID_PATH_ID, SRB_STATUS_INVALID_REQUEST,
    SRB_STATUS_INVALID_TARGET_ID, SRB_STATUS_NO_DEVICE, SRB_STATUS_SUCCESS,
    StorScatterGatherElement,
};

/// HwBuildIo: validates the SRB and builds its request.
pub fn build_io<H: IoHost>(host: &H, parsed: Result<Srb, (Srb, SrbError)>) -> Built {
    let mut srb = match parsed {
        Ok(srb) => srb,
        Err((srb, error)) => {
            let status = match error {
                SrbError::BadExtendedHeader { .. } => SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
                _ => SRB_STATUS_INVALID_REQUEST,
            };
            complete(host, srb, status);
            return Built::Completed;
        }
    };
    let function = srb.function();
    let status = if function == u32::from(SRB_FUNCTION_EXECUTE_SCSI) {
        match prepare(host, &mut srb) {
            Ok(()) => return Built::Ready(srb),
            Err(status) => status,
        }
    } else if [
        SRB_FUNCTION_ABORT_COMMAND,
        SRB_FUNCTION_RESET_BUS,
        SRB_FUNCTION_RESET_DEVICE,
        SRB_FUNCTION_RESET_LOGICAL_UNIT,
    ]
    .map(u32::from)
    .contains(&function)
    {
        return Built::Control(srb);
    } else if function == u32::from(SRB_FUNCTION_WMI) {
        // Answered here, completely: see `crate::control::wmi_provider` for why BuildIo.
        crate::control::wmi_provider::handle(host, &mut srb)
    } else if function == u32::from(SRB_FUNCTION_IO_CONTROL) {
        // IOCTL_SCSI_MINIPORT, also answered here: see `crate::control::ioctl`.
        crate::control::ioctl::handle(&mut srb)
    } else if [
        SRB_FUNCTION_FLUSH,
        SRB_FUNCTION_SHUTDOWN,
        SRB_FUNCTION_PNP,
        SRB_FUNCTION_POWER,
    ]
    .map(u32::from)
    .contains(&function)
    {
        // virtio-scsi has no adapter cache to flush and no adapter power state; the disk
        // class sends SYNCHRONIZE CACHE as a SCSI command, which the device executes.
        SRB_STATUS_SUCCESS
    } else {
        SRB_STATUS_INVALID_REQUEST
    };
    complete(host, srb, status);
    Built::Completed
}

/// The direction of a request with a buffer and `SRB_FLAGS_UNSPECIFIED_DIRECTION`, which
/// StorPort passes on from pass-through callers (`SCSI_IOCTL_DATA_UNSPECIFIED`): a virtio-scsi
/// request has one direction (INOUT is not negotiated), so the driver must choose.
///
/// The commands whose data phase SPC/SBC define as data-out are sent as writes, so that a
/// tool sending WRITE, MODE SELECT or PERSISTENT RESERVE OUT this way works; ATA PASS-THROUGH
/// says its direction in `T_DIR`. Everything else is sent as a read, as vioscsi sends every
/// request that is not DATA_OUT. A wrong guess is safe either way: a data-out command sent as
/// a read gets no data, and the device fails it (QEMU answers `VIRTIO_S_OVERRUN` when the
/// direction disagrees with the command); a read lets the device write at most
/// `DataTransferLength` bytes into the buffer the caller gave for the transfer.
pub(super) fn unspecified_direction(cdb: &[u8]) -> DataDirection {
    /// Commands with a data-out phase (SPC-4, SBC-3 opcode tables).
    const DATA_OUT: [u8; 21] = [
        0x0A, // WRITE(6)
        0x15, // MODE SELECT(6)
        0x1D, // SEND DIAGNOSTIC
        0x2A, // WRITE(10)
        0x2E, // WRITE AND VERIFY(10)
        0x3B, // WRITE BUFFER
        0x3F, // WRITE LONG(10)
        0x41, // WRITE SAME(10)
        0x42, // UNMAP
        0x4C, // LOG SELECT
        0x55, // MODE SELECT(10)
        0x5F, // PERSISTENT RESERVE OUT
        0x83, // THIRD-PARTY COPY OUT
        0x89, // COMPARE AND WRITE
        0x8A, // WRITE(16)
        0x8E, // WRITE AND VERIFY(16)
        0x93, // WRITE SAME(16)
        0xA4, // MAINTENANCE OUT
        0xAA, // WRITE(12)
        0xAE, // WRITE AND VERIFY(12)
        0xB6, // SEND VOLUME TAG
    ];
    /// ATA PASS-THROUGH(16) and (12) (SAT): `T_DIR` is bit 3 of byte 2, set for data-in.
    const ATA_PASS_THROUGH: [u8; 2] = [0x85, 0xA1];
    match cdb {
        [opcode, _, flags, ..] if ATA_PASS_THROUGH.contains(opcode) => {
            if flags & 0x08 == 0 {
                DataDirection::ToDevice
            } else {
                DataDirection::FromDevice
            }
        }
        [opcode, ..] if DATA_OUT.contains(opcode) => DataDirection::ToDevice,
        _ => DataDirection::FromDevice,
    }
}

/// The direction of a request with a buffer whose direction flags are not DATA_IN or DATA_OUT
/// alone: both (pass-through with `SCSI_IOCTL_DATA_UNSPECIFIED`, see [`unspecified_direction`])
/// or neither (a buffer on a request that claims no data transfer: inconsistent, refused).
#[cold]
#[inline(never)]
fn other_direction(direction_flags: u32, cdb: [u64; CDB_SIZE / 8]) -> Result<DataDirection, u8> {
    if direction_flags != SRB_FLAGS_UNSPECIFIED_DIRECTION {
        return Err(SRB_STATUS_INVALID_REQUEST);
    }
    let mut bytes = [0u8; CDB_SIZE];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(cdb) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    Ok(unspecified_direction(&bytes))
}

/// The SRB status `status` of a refusal, returned from out of line: every refusal on the path
/// of a request calls it where it refuses, so the status is loaded there and not (as the
/// compiler otherwise does with a constant) into a register on the way of every request that
/// goes through (cargo xtask bench).
#[cold]
#[inline(never)]
fn refused(status: u8) -> u8 {
    status
}

/// Builds the request for an EXECUTE_SCSI SRB in its extension; on error, the SRB status.
#[expect(
    clippy::too_many_lines,
    reason = "one linear translation of an SRB into a request; splitting it scatters the checks"
)]
pub(super) fn prepare<H: IoHost>(host: &H, srb: &mut Srb) -> Result<(), u8> {
    // The queue asked for first, while little else is live (with several queues it may take a
    // call to StorPort), so that it is stored with the other context fields BuildIo knows
    // before the request's address, in the same word.
    let queue = host.queue_for_request(srb);
    let address = srb.address();
    let device = host.device_limits();
    if address.path != 0 {
        return Err(refused(SRB_STATUS_INVALID_PATH_ID));
    }
    if address.target > device.max_target {
        return Err(refused(SRB_STATUS_INVALID_TARGET_ID));
    }
    if u16::from(address.lun) > device.max_lun {
        return Err(refused(SRB_STATUS_INVALID_LUN));
    }
    let (cdb_length, cdb) = srb
        .cdb_words()
        .map_err(|_| refused(SRB_STATUS_INVALID_REQUEST))?;
    let [opcode, cdb1, cdb2, ..] = cdb[0].to_le_bytes();
    // A unit the device reported removed is gone for Windows at once (see `crate::events`);
    // only the commands the device answers for an absent unit still reach it.
    if host.gone().contains(address.target, address.lun)
        && !crate::events::reaches_absent_unit(opcode)
    {
        return Err(refused(SRB_STATUS_NO_DEVICE));
    }
    let lun = Lun::new(address.target, u16::from(address.lun))
        .map_err(|_| refused(SRB_STATUS_INVALID_LUN))?;
    let flags = srb.flags();
    let length = srb.data_transfer_length();
    // The two directions of reads and writes tested first, one compare each; the rest out of
    // line.
    let direction_flags = flags & SRB_FLAGS_UNSPECIFIED_DIRECTION;
    let direction = if length == 0 {
        DataDirection::None
    } else if direction_flags == SRB_FLAGS_DATA_IN {
        DataDirection::FromDevice
    } else if direction_flags == SRB_FLAGS_DATA_OUT {
        DataDirection::ToDevice
    } else {
        other_direction(direction_flags, cdb)?
    };
    let sense_capacity = if flags & SRB_FLAGS_DISABLE_AUTOSENSE == 0 {
        srb.sense_buffer().map_or(0, |(_, len)| u32::from(len))
    } else {
        0
    };

    let layout = host.limits().request;
    let shape = layout.area.ok_or_else(|| refused(SRB_STATUS_ERROR))?;
    // The area (its start moved past a page boundary if the headers would straddle one) and the
    // floor's record of this SRB in it.
    let (mut area, srb) =
        RequestArea::of(srb, shape).ok_or_else(|| refused(SRB_STATUS_INVALID_REQUEST))?;
    // The headers and the context, up to the indirect table, as one window: checked once here
    // (the adapter's layout puts the scratch list, where the view ends, after the table), so
    // each store below at a constant offset in it needs no check of its own.
    let head = area
        .view()
        .fields::<HEAD_LEN>(CONTEXT_AT)
        .ok_or_else(|| refused(SRB_STATUS_ERROR))?;
    let base = area.view().start();
    let tag = base as u64;
    // The request header and the response written before the address is asked for, so the
    // CDB need not be kept across that call; a request the address then fails is completed
    // with its extension unused.
    if cdb_length <= 16 {
        // Its last two words are zero (`cdb_words` clears the bytes past the CDB): said here,
        // the stores of the header's last bytes are constants.
        write_command(&head, lun, tag, [cdb[0], cdb[1], 0, 0]);
    } else {
        write_command(&head, lun, tag, cdb);
    }
    write_unwritten_response(&head);
    // The context fields known now, stored before the calls to StorPort below so that none of
    // them (nor the CDB they come from) need be kept across those calls.
    let mut opcode_page = 0xFFFF;
    if opcode == device_identification::INQUIRY && cdb1 & 1 == 1 {
        opcode_page = u16::from(cdb2);
    } else if opcode == luns::SERVICE_ACTION_IN_16 {
        opcode_page = u16::from(cdb1 & 0x1F);
    }
    let direction_byte = match direction {
        DataDirection::None => 0,
        DataDirection::ToDevice => 1,
        DataDirection::FromDevice | DataDirection::Bidirectional => 2,
    };
    write_known_context(
        &head,
        Known {
            queue,
            data_length: length,
            sense_capacity,
            direction: direction_byte,
            target: address.target,
            opcode,
            lun: u16::from(address.lun),
            vpd_page: opcode_page,
        },
    );
    let port = host.extension();
    // The SRB goes with its extension: under DMA remapping (an IOMMU) StorPort maps the SRB
    // extension for the device while it holds the SRB, and finds that logical address through
    // the SRB. Microsoft's storahci does the same ("SRB is needed for
    // StorPortGetPhysicalAddress to calculate logical address when DMAR is enabled"), and
    // StorPortGetPhysicalAddress "will just return zero if an IOMMU is active" when the SRB is
    // NULL (MicrosoftDocs/windows-driver-docs-ddi pull request 1640). A zero length fails the
    // SRB below instead of handing the device an address it cannot reach.
    let (bus, contiguous) = port.physical_address(Some(srb), base);
    if (contiguous as usize) < INDIRECT_AT {
        return Err(refused(SRB_STATUS_ERROR));
    }

    let header = Segment::new(bus + CMD_REQ_AT as u64, size_of::<CmdReq>() as u32);
    let response = Segment::new(bus + CMD_RESP_AT as u64, size_of::<CmdResp>() as u32);
    let data = if direction == DataDirection::None {
        &[][..]
    } else {
        data_segments(host, srb)?
    };
    // An indirect table needs the feature negotiated (virtio 1.x 2.7.5.3.1: the driver MUST NOT
    // set VIRTQ_DESC_F_INDIRECT otherwise) and the whole table contiguous in bus memory; without
    // either the request goes on the ring as a direct chain, which the limits are sized for.
    // The table holds at most the header, the response and one descriptor per element (fewer
    // when the elements cover the length early); that much must be contiguous.
    let features = host.features();
    let table_len = (HEADER_DESCRIPTORS as usize + data.len()) * crate::sizing::DESCRIPTOR_LEN;
    let indirect_usable = features.contains(Features::INDIRECT_DESC)
        && (contiguous as usize) >= INDIRECT_AT + table_len;
    let (readable, writable, table_writable, table_posted) = if indirect_usable {
        // Written here, with no lock held: StartIo only adds the table as one descriptor.
        let format = ring_format(features);
        let memory = area
            .view()
            .part(INDIRECT_AT, table_len, bus)
            .ok_or_else(|| refused(SRB_STATUS_ERROR))?;
        // One copy of the writing per format, each with its format a constant: the writer's
        // per-descriptor format tests then fold away.
        let (readable, chain) = match format {
            RingFormat::Split => write_table_for(
                &memory,
                RingFormat::Split,
                header,
                response,
                data,
                length,
                direction,
            )?,
            RingFormat::Packed => write_table_for(
                &memory,
                RingFormat::Packed,
                header,
                response,
                data,
                length,
                direction,
            )?,
        };
        (
            readable,
            // The writable ones follow the `readable` written first.
            chain.descriptors().wrapping_sub(readable),
            chain.writable(),
            chain.posted(),
        )
    } else {
        // The scratch list: header, data-out segments | response, data-in segments.
        let mut scratch = area.scratch();
        push(&mut scratch, header)?;
        if direction == DataDirection::ToDevice {
            push_data(&mut scratch, data, length)?;
        }
        let readable = scratch.len();
        push(&mut scratch, response)?;
        if direction == DataDirection::FromDevice {
            push_data(&mut scratch, data, length)?;
        }
        // At most the list's capacity, a few hundred.
        let count = scratch.len() as u16;
        (readable as u16, count.wrapping_sub(readable as u16), 0, 0)
    };

    write_built_context(
        &head,
        [readable, writable],
        [table_writable, table_posted],
        bus,
    );
    Ok(())
}

/// The context fields BuildIo knows before it asks StorPort for the request's address and
/// its scatter/gather list.
#[derive(Clone, Copy)]
struct Known {
    /// The request queue (`RequestContext::queue`).
    queue: u16,
    data_length: u32,
    sense_capacity: u32,
    /// `RequestContext::direction`.
    direction: u8,
    target: u8,
    opcode: u8,
    lun: u16,
    vpd_page: u16,
}

// The context as words (little-endian): `data_length`, `sense_capacity` | `queue`, `token`,
// `state`, `direction`, `target`, `opcode` | `lun`, `vpd_page`, `readable`, `writable` |
// `table_writable`, `table_posted` | `bus` | `sequence`. BuildIo stores each word whole, once;
// these offsets, and the sizes adding up to the context's, make a field moved or added without
// the stores below following it fail to build.
const _: () = {
    use core::mem::offset_of;
    type C = RequestContext;
    assert!(
        offset_of!(C, data_length) == 0
            && offset_of!(C, sense_capacity) == 4
            && offset_of!(C, queue) == 8
            && offset_of!(C, token) == 10
            && offset_of!(C, state) == 12
            && offset_of!(C, direction) == 13
            && offset_of!(C, target) == 14
            && offset_of!(C, opcode) == 15
            && offset_of!(C, lun) == 16
            && offset_of!(C, vpd_page) == 18
            && offset_of!(C, readable) == 20
            && offset_of!(C, writable) == 22
            && offset_of!(C, table_writable) == 24
            && offset_of!(C, table_posted) == 28
            && offset_of!(C, bus) == 32
            && offset_of!(C, sequence) == 40
            && 4 + 4 + 2 + 2 + 1 + 1 + 1 + 1 + 2 + 2 + 2 + 2 + 4 + 4 + 8 + 8 == CONTEXT_LEN
    );
};

/// Stores the words and half-words of the context that hold only [`Known`] fields (`token`
/// 0 and state `Built`; `sequence`, StartIo's, zero until then), in the window checked once.
#[expect(
    clippy::inline_always,
    reason = "on every I/O, one caller; out of line the fields go through memory (cargo xtask bench)"
)]
#[inline(always)]
fn write_known_context(head: &Head, known: Known) {
    let relaxed = Ordering::Relaxed;
    head.store_u64(
        0,
        0,
        u64::from(known.data_length) | u64::from(known.sense_capacity) << 32,
        relaxed,
    );
    head.store_u64(
        0,
        8,
        u64::from(known.queue)
            | u64::from(RequestState::Built as u8) << 32
            | u64::from(known.direction) << 40
            | u64::from(known.target) << 48
            | u64::from(known.opcode) << 56,
        relaxed,
    );
    head.store_u32(
        0,
        16,
        u32::from(known.lun) | u32::from(known.vpd_page) << 16,
        relaxed,
    );
    head.store_u64(0, RequestContext::SEQUENCE_OFFSET, 0, relaxed);
}

/// Stores the rest of the context, what BuildIo learnt from StorPort: the segment counts, the indirect table's totals and the request's bus address.
#[expect(
    clippy::inline_always,
    reason = "on every I/O, one caller; out of line the fields go through memory (cargo xtask bench)"
)]
#[inline(always)]
fn write_built_context(
    head: &Head,
    [readable, writable]: [u16; 2],
    [table_writable, table_posted]: [u32; 2],
    bus: u64,
) {
    let relaxed = Ordering::Relaxed;
    head.store_u32(
        0,
        RequestContext::READABLE_OFFSET,
        u32::from(readable) | u32::from(writable) << 16,
        relaxed,
    );
    head.store_u64(
        0,
        RequestContext::TABLE_WRITABLE_OFFSET,
        u64::from(table_writable) | u64::from(table_posted) << 32,
        relaxed,
    );
    head.store_u64(0, RequestContext::BUS_OFFSET, bus, relaxed);
}

/// Bytes from the context to the indirect table: the window BuildIo writes the context, the
/// request header and the response through.
const HEAD_LEN: usize = INDIRECT_AT - CONTEXT_AT;

/// The window BuildIo writes through ([`HEAD_LEN`] bytes from the context).
type Head = DmaTable<HEAD_LEN, 8>;

/// Writes the request header for `lun`, `tag` and the zero-padded `cdb` at [`CMD_REQ_AT`]: the
/// bytes of [`CmdReq::new`] with task attribute SIMPLE, priority and CRN 0 (a unit test
/// compares them), stored as the words they make. The CDB (as [`Srb::cdb_words`] gives it)
/// starts at byte 19, so its words are shifted into place instead of being copied from a
/// `CmdReq` built on the stack first. Always inlined: on every I/O, a call would take the CDB through memory.
#[inline(always)]
fn write_command(head: &Head, lun: Lun, tag: u64, cdb: [u64; CDB_SIZE / 8]) {
    const AT: usize = CMD_REQ_AT - CONTEXT_AT;
    const _: () = assert!(
        CDB_SIZE == 32
            && offset_of!(CmdReq, lun) == 0
            && offset_of!(CmdReq, tag) == 8
            && offset_of!(CmdReq, task_attr) == 16
            && offset_of!(CmdReq, prio) == 17
            && offset_of!(CmdReq, crn) == 18
            && offset_of!(CmdReq, cdb) == 19
            && AT.is_multiple_of(8)
            // The last word stored: bytes 48-51, the last a byte of padding.
            && size_of::<CmdReq>() == 51
            && CMD_REQ_AT + 52 <= CMD_RESP_AT
    );
    let relaxed = Ordering::Relaxed;
    let [c0, c1, c2, c3] = cdb;
    // Bytes 16-18: task attribute SIMPLE, priority 0, CRN 0.
    let attributes = u64::from(TaskAttr::Simple.raw());
    head.store_u64(0, AT, u64::from_le_bytes(lun.encode()), relaxed);
    head.store_u64(0, AT + 8, tag, relaxed);
    // Bytes 16-23: the attributes and CDB bytes 0-4; then CDB bytes 5-12, 13-20, 21-28.
    head.store_u64(0, AT + 16, attributes | c0 << 24, relaxed);
    head.store_u64(0, AT + 24, c0 >> 40 | c1 << 24, relaxed);
    head.store_u64(0, AT + 32, c1 >> 40 | c2 << 24, relaxed);
    head.store_u64(0, AT + 40, c2 >> 40 | c3 << 24, relaxed);
    // Bytes 48-50: CDB bytes 29-31, stored with byte 51, the first byte past the header
    // (padding before the response, which no one reads), as one word.
    head.store_u32(0, AT + 48, (c3 >> 40) as u32, relaxed);
}

/// Writes [`UNWRITTEN_RESPONSE_HEADER`] at [`CMD_RESP_AT`], as a word and a half-word.
#[inline]
fn write_unwritten_response(head: &Head) {
    const AT: usize = CMD_RESP_AT - CONTEXT_AT;
    const HEADER: [u8; 12] = UNWRITTEN_RESPONSE_HEADER;
    const LOW: u64 = u64::from_le_bytes([
        HEADER[0], HEADER[1], HEADER[2], HEADER[3], HEADER[4], HEADER[5], HEADER[6], HEADER[7],
    ]);
    const HIGH: u32 = u32::from_le_bytes([HEADER[8], HEADER[9], HEADER[10], HEADER[11]]);
    const _: () = assert!(AT.is_multiple_of(8));
    head.store_u64(0, AT, LOW, Ordering::Relaxed);
    head.store_u32(0, AT + 8, HIGH, Ordering::Relaxed);
}

/// The format of the indirect tables BuildIo writes: the rings' own, which the same negotiated
/// features chose when they were made (StartIo names it again when it adds a table, and the
/// ring refuses a table of the other format).
pub(super) fn ring_format(features: Features) -> RingFormat {
    if features.contains(Features::RING_PACKED) {
        RingFormat::Packed
    } else {
        RingFormat::Split
    }
}

/// The SRB's scatter/gather elements, checked against the adapter's limits. An empty list is
/// refused where the elements are written ([`write_data`], [`push_data`]): they must cover the
/// transfer's length, which is not 0 for a request with data.
pub(super) fn data_segments<'a, H: IoHost>(
    host: &H,
    srb: &'a Srb,
) -> Result<&'a [StorScatterGatherElement], u8> {
    host.extension()
        .scatter_gather_elements(srb, host.limits().max_segments)
        .ok_or_else(|| refused(SRB_STATUS_INVALID_REQUEST))
}

/// Appends `segment` to the scratch list; a full list refuses the request.
fn push(scratch: &mut ScratchList<'_>, segment: Segment) -> Result<(), u8> {
    if scratch.push(segment) {
        Ok(())
    } else {
        Err(refused(SRB_STATUS_INVALID_REQUEST))
    }
}

/// [`write_table`] with the direction a constant in each arm, as the format is in its
/// callers: the direction's tests in the writing then fold away (cargo xtask bench).
#[expect(
    clippy::inline_always,
    reason = "called with a constant format in each arm so that the format's and the direction's tests fold away (cargo xtask bench)"
)]
#[inline(always)]
fn write_table_for(
    memory: &virtio_core::dma::DmaMemory,
    format: RingFormat,
    header: Segment,
    response: Segment,
    data: &[StorScatterGatherElement],
    length: u32,
    direction: DataDirection,
) -> Result<(u16, IndirectChain), u8> {
    match direction {
        DataDirection::FromDevice => write_table(
            memory,
            format,
            header,
            response,
            data,
            length,
            DataDirection::FromDevice,
        ),
        DataDirection::ToDevice => write_table(
            memory,
            format,
            header,
            response,
            data,
            length,
            DataDirection::ToDevice,
        ),
        DataDirection::None | DataDirection::Bidirectional => {
            write_table(memory, format, header, response, data, length, direction)
        }
    }
}

/// Writes the request's chain into the indirect table in `memory`: the header, the data-out
/// segments, the response, the data-in segments; the readable count and the chain, or the SRB
/// status of a refusal.
#[expect(
    clippy::inline_always,
    reason = "called with a constant format in each arm so that the format's tests fold away \
              (cargo xtask bench)"
)]
#[inline(always)]
fn write_table(
    memory: &virtio_core::dma::DmaMemory,
    format: RingFormat,
    header: Segment,
    response: Segment,
    data: &[StorScatterGatherElement],
    length: u32,
    direction: DataDirection,
) -> Result<(u16, IndirectChain), u8> {
    let mut writer = IndirectWriter::new(memory, format).map_err(|_| refused(SRB_STATUS_ERROR))?;
    writer
        .push_readable(header)
        .map_err(|_| refused(SRB_STATUS_INVALID_REQUEST))?;
    if direction == DataDirection::ToDevice {
        write_data(&mut writer, data, length, false)?;
    }
    let readable = writer.len();
    writer
        .push_writable(response)
        .map_err(|_| refused(SRB_STATUS_INVALID_REQUEST))?;
    if direction == DataDirection::FromDevice {
        write_data(&mut writer, data, length, true)?;
    }
    let chain = writer
        .finish()
        .map_err(|_| refused(SRB_STATUS_INVALID_REQUEST))?;
    Ok((readable, chain))
}

/// Writes data segments covering exactly `length` bytes into the indirect table, device
/// writable (data-in) or readable (data-out); the same checks as [`push_data`].
#[expect(
    clippy::inline_always,
    reason = "on every I/O with data; out of line it costs a call per I/O (cargo xtask bench)"
)]
#[inline(always)]
fn write_data(
    writer: &mut IndirectWriter,
    elements: &[StorScatterGatherElement],
    length: u32,
    device_writes: bool,
) -> Result<(), u8> {
    let mut left = length;
    if left == 0 {
        return Ok(());
    }
    // The common case first: one element covers the whole transfer (a 4 KiB request, or any
    // physically contiguous buffer); it is written without the loop's bookkeeping.
    if let Some(first) = elements.first()
        && first.length >= left
    {
        let segment = Segment::new(first.physical_address.as_u64(), left);
        let written = if device_writes {
            writer.push_writable(segment)
        } else {
            writer.push_readable(segment)
        };
        return written.map_err(|_| refused(SRB_STATUS_INVALID_REQUEST));
    }
    // Whether the length is covered is tested after each element, once per element.
    for element in elements {
        // An empty element is refused by the writer (`QueueError::EmptySegment`).
        let take = element.length.min(left);
        let segment = Segment::new(element.physical_address.as_u64(), take);
        let written = if device_writes {
            writer.push_writable(segment)
        } else {
            writer.push_readable(segment)
        };
        written.map_err(|_| refused(SRB_STATUS_INVALID_REQUEST))?;
        left -= take;
        if left == 0 {
            return Ok(());
        }
    }
    Err(refused(SRB_STATUS_INVALID_REQUEST))
}

/// Pushes data segments covering exactly `length` bytes.
fn push_data(
    scratch: &mut ScratchList<'_>,
    elements: &[StorScatterGatherElement],
    length: u32,
) -> Result<(), u8> {
    let mut left = length;
    for element in elements {
        if left == 0 {
            break;
        }
        let take = element.length.min(left);
        if take == 0 {
            return Err(refused(SRB_STATUS_INVALID_REQUEST));
        }
        push(
            scratch,
            Segment::new(element.physical_address.as_u64(), take),
        )?;
        left -= take;
    }
    if left == 0 {
        Ok(())
    } else {
        Err(refused(SRB_STATUS_INVALID_REQUEST))
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use virtio_core::dma::DmaMemory;
    use virtio_core::fake::FakeHal;
    use virtio_core::hal::Hal;

    use super::*;
    use crate::storport::StorPhysicalAddress;

    fn element(address: u64, length: u32) -> StorScatterGatherElement {
        StorScatterGatherElement {
            physical_address: StorPhysicalAddress::from_u64(address),
            length,
            reserved: 0,
        }
    }

    /// (address, length, flags) of the table's first `count` split descriptors.
    fn descriptors(table: &DmaMemory, count: usize) -> Vec<(u64, u32, u16)> {
        let relaxed = Ordering::Relaxed;
        (0..count)
            .map(|i| {
                let at = 16 * i;
                (
                    table.load_u64(at, relaxed),
                    table.load_u32(at + 8, relaxed),
                    table.load_u16(at + 12, relaxed),
                )
            })
            .collect()
    }

    #[test]
    fn command_words_are_the_bytes_of_cmd_req_new() {
        use zerocopy::IntoBytes;
        let hal = FakeHal::new();
        let memory = hal.dma_alloc(HEAD_LEN, 16).unwrap();
        let head: Head = memory.table(0, 1).unwrap();
        let mut cdb = [0u8; CDB_SIZE];
        for (index, byte) in cdb.iter_mut().enumerate() {
            *byte = 0xA0 ^ (index as u8 * 7);
        }
        let lengths = [1, 6, 10, 16, 17, 31, 32];
        for (target, lun) in [(0, 0), (3, 255), (255, 256), (7, 16383)] {
            for len in lengths {
                let mut padded = [0u8; CDB_SIZE];
                padded[..len].copy_from_slice(&cdb[..len]);
                let lun = Lun::new(target, lun).unwrap();
                let tag = 0x0123_4567_89AB_CDE0 + len as u64;
                let mut words = [0u64; CDB_SIZE / 8];
                for (word, bytes) in words.iter_mut().zip(padded.chunks_exact(8)) {
                    *word = u64::from_le_bytes(bytes.try_into().unwrap());
                }
                write_command(&head, lun, tag, words);
                let expected = CmdReq::new(lun, tag, &padded[..len]).unwrap();
                let mut written = [0u8; size_of::<CmdReq>()];
                assert!(memory.read_bytes(CMD_REQ_AT - CONTEXT_AT, &mut written));
                assert_eq!(written, expected.as_bytes(), "{len}-byte CDB, {lun:?}");
            }
        }
        write_unwritten_response(&head);
        let mut response = [0u8; UNWRITTEN_RESPONSE_HEADER.len()];
        assert!(memory.read_bytes(CMD_RESP_AT - CONTEXT_AT, &mut response));
        assert_eq!(response, UNWRITTEN_RESPONSE_HEADER);
    }

    #[test]
    fn context_words_are_the_bytes_of_the_context() {
        use zerocopy::IntoBytes;
        let hal = FakeHal::new();
        let memory = hal.dma_alloc(HEAD_LEN, 16).unwrap();
        let head: Head = memory.table(0, 1).unwrap();
        // Garbage from an earlier request first: every byte must be written. The context is
        // accessed here at the sizes BuildIo stores it (Miri cannot run a location accessed
        // atomically at two sizes).
        let relaxed = Ordering::Relaxed;
        let sizes = [(0, 8), (8, 8), (16, 4), (20, 4), (24, 8), (32, 8), (40, 8)];
        for (at, size) in sizes {
            if size == 8 {
                head.store_u64(0, at, 0xA5A5_A5A5_A5A5_A5A5, relaxed);
            } else {
                head.store_u32(0, at, 0xA5A5_A5A5, relaxed);
            }
        }
        // Every field a distinct value with no zero byte where it can have one, so a field
        // stored at the wrong place or width shows.
        let known = Known {
            queue: 0x1A2B,
            data_length: 0x8877_6655,
            sense_capacity: 0x0000_00F1,
            direction: 2,
            target: 0xE5,
            opcode: 0x9E,
            lun: 0x0307,
            vpd_page: 0x0083,
        };
        write_known_context(&head, known);
        write_built_context(
            &head,
            [0x1111, 0x2222],
            [0x0000_1060, 0x0000_1093],
            0xDEAD_BEEF_0BAD_F00D,
        );
        let expected = RequestContext {
            data_length: known.data_length.into(),
            sense_capacity: known.sense_capacity.into(),
            queue: 0x1A2B.into(),
            token: 0.into(),
            state: RequestState::Built as u8,
            direction: known.direction,
            target: known.target,
            opcode: known.opcode,
            lun: known.lun.into(),
            vpd_page: 0x0083.into(),
            readable: 0x1111.into(),
            writable: 0x2222.into(),
            table_writable: 0x0000_1060.into(),
            table_posted: 0x0000_1093.into(),
            bus: 0xDEAD_BEEF_0BAD_F00D.into(),
            sequence: 0.into(),
        };
        let mut written = [0u8; CONTEXT_LEN];
        for (at, size) in sizes {
            if size == 8 {
                written[at..at + 8].copy_from_slice(&head.load_u64(0, at, relaxed).to_le_bytes());
            } else {
                written[at..at + 4].copy_from_slice(&head.load_u32(0, at, relaxed).to_le_bytes());
            }
        }
        assert_eq!(written, expected.as_bytes());
    }

    #[test]
    fn directions_other_than_in_or_out_alone_follow_the_cdb_or_are_refused() {
        let word = |opcode: u8| [u64::from(opcode), 0, 0, 0];
        // Both flags: the CDB decides (WRITE(10) is a write, READ(10) a read).
        let both = SRB_FLAGS_UNSPECIFIED_DIRECTION;
        assert_eq!(
            other_direction(both, word(0x2A)),
            Ok(DataDirection::ToDevice)
        );
        assert_eq!(
            other_direction(both, word(0x28)),
            Ok(DataDirection::FromDevice)
        );
        // Neither flag on a request with a buffer: refused, whatever the command.
        for opcode in [0x2A, 0x28] {
            assert_eq!(
                other_direction(0, word(opcode)),
                Err(SRB_STATUS_INVALID_REQUEST)
            );
        }
    }

    #[test]
    fn data_segments_cover_exactly_the_transfer_length() {
        let hal = FakeHal::new();
        let table = hal.dma_alloc(16 * 8, 16).unwrap();
        let elements = [
            element(0x1_0000, 4096),
            element(0x2_0000, 4096),
            element(0x3_0000, 4096),
        ];
        // A read of 6000 bytes: the second element is cut short, the third not used.
        let mut writer = IndirectWriter::new(&table, RingFormat::Split).unwrap();
        writer.push_readable(Segment::new(0x100, 51)).unwrap();
        writer.push_writable(Segment::new(0x200, 108)).unwrap();
        assert_eq!(write_data(&mut writer, &elements, 6000, true), Ok(()));
        let chain = writer.finish().unwrap();
        assert_eq!(chain.descriptors(), 4);
        assert_eq!(
            (chain.writable(), chain.posted()),
            (108 + 6000, 51 + 108 + 6000)
        );
        // NEXT = 1, WRITE = 2: the data after the response, device-writable, the last ends it.
        assert_eq!(
            descriptors(&table, 4),
            [
                (0x100, 51, 1),
                (0x200, 108, 3),
                (0x1_0000, 4096, 3),
                (0x2_0000, 1904, 2)
            ]
        );

        // A write: the data after the header, device-readable, before the response.
        let mut writer = IndirectWriter::new(&table, RingFormat::Split).unwrap();
        writer.push_readable(Segment::new(0x100, 51)).unwrap();
        assert_eq!(write_data(&mut writer, &elements, 8192, false), Ok(()));
        writer.push_writable(Segment::new(0x200, 108)).unwrap();
        let chain = writer.finish().unwrap();
        assert_eq!((chain.descriptors(), chain.writable()), (4, 108));
        assert_eq!(
            descriptors(&table, 4),
            [
                (0x100, 51, 1),
                (0x1_0000, 4096, 1),
                (0x2_0000, 4096, 1),
                (0x200, 108, 2)
            ]
        );

        // Elements past the covered length are not looked at, even an empty one; a transfer
        // of nothing writes nothing.
        let past = [element(0x1_0000, 512), element(0x2_0000, 0)];
        for (length, descriptors) in [(512, 2), (0, 1)] {
            let mut writer = IndirectWriter::new(&table, RingFormat::Split).unwrap();
            writer.push_readable(Segment::new(0x100, 51)).unwrap();
            assert_eq!(write_data(&mut writer, &past, length, true), Ok(()));
            assert_eq!(writer.len(), descriptors, "{length} bytes");
        }

        // A first element longer than the transfer (the one-element path) is cut to the
        // length, in either direction; with no room left in the table it is refused.
        let long = [element(0x1_0000, 8192), element(0x2_0000, 4096)];
        for device_writes in [false, true] {
            let mut writer = IndirectWriter::new(&table, RingFormat::Split).unwrap();
            writer.push_readable(Segment::new(0x100, 51)).unwrap();
            assert_eq!(write_data(&mut writer, &long, 4096, device_writes), Ok(()));
            let chain = writer.finish().unwrap();
            let (flags, writable) = if device_writes { (2, 4096) } else { (0, 0) };
            assert_eq!((chain.descriptors(), chain.writable()), (2, writable));
            assert_eq!(
                descriptors(&table, 2),
                [(0x100, 51, 1), (0x1_0000, 4096, flags)]
            );

            let full = table.sub(0, 16).unwrap();
            let mut writer = IndirectWriter::new(&full, RingFormat::Split).unwrap();
            writer.push_readable(Segment::new(0x100, 51)).unwrap();
            assert_eq!(
                write_data(&mut writer, &long, 4096, device_writes),
                Err(SRB_STATUS_INVALID_REQUEST)
            );
        }
    }

    #[test]
    fn data_segments_that_do_not_cover_the_length_or_are_empty_are_refused() {
        let hal = FakeHal::new();
        let table = hal.dma_alloc(16 * 8, 16).unwrap();
        let cases: [(&[StorScatterGatherElement], u32); 3] = [
            // The elements end before the transfer does.
            (&[element(0x1_0000, 4096)], 8192),
            // An empty element before the length is covered.
            (&[element(0x1_0000, 0), element(0x2_0000, 4096)], 4096),
            // No elements at all for a transfer.
            (&[], 512),
        ];
        for (elements, length) in cases {
            for device_writes in [false, true] {
                let mut writer = IndirectWriter::new(&table, RingFormat::Packed).unwrap();
                writer.push_readable(Segment::new(0x100, 51)).unwrap();
                assert_eq!(
                    write_data(&mut writer, elements, length, device_writes),
                    Err(SRB_STATUS_INVALID_REQUEST),
                    "{length} bytes over {elements:?}"
                );
            }
        }
        // More elements than the table holds: refused, not written past it.
        let small = table.sub(0, 16 * 2).unwrap();
        let mut writer = IndirectWriter::new(&small, RingFormat::Split).unwrap();
        writer.push_readable(Segment::new(0x100, 51)).unwrap();
        let elements = [element(0x1_0000, 512), element(0x2_0000, 512)];
        assert_eq!(
            write_data(&mut writer, &elements, 1024, false),
            Err(SRB_STATUS_INVALID_REQUEST)
        );
    }
}
