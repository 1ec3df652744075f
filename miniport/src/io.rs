//! The I/O path: an SRB becomes one virtio-scsi request built in its SRB extension (BuildIo,
//! no lock), goes on its queue's ring (StartIo, under the queue lock, notify after unlocking),
//! and comes back from the used ring as one completion with the status, sense and residual the
//! device reported (ISR/DPC, under the queue lock).
//!
//! Every SRB that enters is completed exactly once: refused ones at once, queued ones when the
//! device uses them or when a reset takes them back.

use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use virtio_core::dma::DmaMemory;
use virtio_core::features::Features;
use virtio_core::hal::Segment;
use virtio_core::queue::QueueError;

use crate::trace::{TraceEvent, ViolationKind};
use virtio_core::scsi::{
    CDB_SIZE, CmdReq, CmdResp, DataDirection, Disposition, Lun, Transfer, complete_command,
};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::adapter::{Adapter, QueueGuard};
use crate::layout::{CONTEXT_LEN, REQUEST_ALIGN, RequestContext, RequestLayout, RequestState};
use crate::luns::{self, Recorded, Snooped};
use crate::srb::{Srb, SrbError};
use crate::storport::{
    SRB_FLAGS_DATA_IN, SRB_FLAGS_DATA_OUT, SRB_FLAGS_DISABLE_AUTOSENSE,
    SRB_FLAGS_UNSPECIFIED_DIRECTION, SRB_FUNCTION_ABORT_COMMAND, SRB_FUNCTION_EXECUTE_SCSI,
    SRB_FUNCTION_FLUSH, SRB_FUNCTION_IO_CONTROL, SRB_FUNCTION_PNP, SRB_FUNCTION_POWER,
    SRB_FUNCTION_RESET_BUS, SRB_FUNCTION_RESET_DEVICE, SRB_FUNCTION_RESET_LOGICAL_UNIT,
    SRB_FUNCTION_SHUTDOWN, SRB_FUNCTION_WMI, SRB_STATUS_ABORTED, SRB_STATUS_AUTOSENSE_VALID,
    SRB_STATUS_BAD_SRB_BLOCK_LENGTH, SRB_STATUS_BUS_RESET, SRB_STATUS_BUSY,
    SRB_STATUS_DATA_OVERRUN, SRB_STATUS_ERROR, SRB_STATUS_INVALID_LUN, SRB_STATUS_INVALID_PATH_ID,
    SRB_STATUS_INVALID_REQUEST, SRB_STATUS_INVALID_TARGET_ID, SRB_STATUS_NO_DEVICE,
    SRB_STATUS_SUCCESS, ScsiRequestBlock, StorScatterGatherElement,
};
use crate::vpd;

/// Bytes of the response header the device must write for the response to be read at all
/// (`sense_len`, `resid`, `status_qualifier`, `status`, `response`).
const RESPONSE_HEADER_LEN: u32 = 12;

/// One request's memory in its SRB extension, as a bounds-checked view.
#[derive(Clone, Copy, Debug)]
struct Request {
    /// The extension from its 16-aligned start, `layout.len` bytes.
    memory: DmaMemory,
    layout: RequestLayout,
}

impl Request {
    /// The request whose aligned start is at `base`. The bus address is only meaningful for
    /// the parts [`prepare`] checked to be contiguous.
    fn at(base: usize, bus: u64, layout: RequestLayout) -> Option<Self> {
        let pointer = NonNull::new(base as *mut u8)?;
        // SAFETY: `base .. base + layout.len` is the SRB extension of a request the miniport
        // owns (StorPort sized it from `layout.extension_size()` and the start was aligned
        // inside it); it is accessed only through this view while the request lives.
        let memory = unsafe { DmaMemory::new(pointer, layout.len, bus) }?;
        Some(Self { memory, layout })
    }

    fn context(&self) -> Option<RequestContext> {
        let mut bytes = [0u8; CONTEXT_LEN];
        self.memory
            .read_bytes(self.layout.context, &mut bytes)
            .then(|| RequestContext::read_from_bytes(&bytes).ok())
            .flatten()
    }

    fn set_context(&self, context: &RequestContext) -> bool {
        self.memory
            .write_bytes(self.layout.context, context.as_bytes())
    }

    /// Moves the request to `state` (one byte; the rest of the context is unchanged).
    fn set_state(&self, state: RequestState) {
        self.memory.store_u8(
            self.layout.context + RequestContext::STATE_OFFSET,
            state as u8,
        );
    }

    /// Records the ring token of the request in flight.
    fn set_token(&self, token: u16) {
        self.memory.store_u16(
            self.layout.context + RequestContext::TOKEN_OFFSET,
            token,
            Ordering::Relaxed,
        );
    }

    /// Records the queue's submission count of the request in flight.
    fn set_sequence(&self, sequence: u64) {
        self.memory.store_u64(
            self.layout.context + RequestContext::SEQUENCE_OFFSET,
            sequence,
            Ordering::Relaxed,
        );
    }

    /// The response header the device wrote (everything before the sense bytes), with the
    /// sense bytes zero: most completions carry no sense, so they are read only when wanted
    /// ([`Request::read_sense`]) instead of 96 bytes on every completion.
    fn response_header(&self) -> Option<CmdResp> {
        let mut response = CmdResp::new_zeroed();
        let header = response
            .as_mut_bytes()
            .get_mut(..RESPONSE_HEADER_LEN as usize)?;
        self.memory
            .read_bytes(self.layout.cmd_resp, header)
            .then_some(response)
    }

    /// Reads the first `len` sense bytes the device wrote into `response`.
    fn read_sense(&self, response: &mut CmdResp, len: usize) -> bool {
        response.sense.get_mut(..len).is_some_and(|sense| {
            self.memory
                .read_bytes(self.layout.cmd_resp + RESPONSE_HEADER_LEN as usize, sense)
        })
    }

    /// The scratch segment list's first element.
    fn scratch(&self) -> *mut Segment {
        (self.memory.cpu_address() + self.layout.segments) as *mut Segment
    }
}

/// The 16-aligned start of a request in an SRB extension at `extension`, moved to the next
/// page if the context, header and response would straddle a page boundary (so each of them is
/// physically contiguous, whatever StorPort's pool gave us).
fn request_base(extension: usize, layout: &RequestLayout) -> usize {
    let aligned = extension.next_multiple_of(REQUEST_ALIGN);
    let headers_end = layout.indirect;
    if aligned % 4096 + headers_end > 4096 {
        aligned.next_multiple_of(4096)
    } else {
        aligned
    }
}

/// What BuildIo decided for an SRB.
pub enum Built {
    /// Ready for StartIo.
    Ready(Srb),
    /// A request StartIo performs itself (aborts and resets, see [`crate::tmf`]).
    Control(Srb),
    /// Completed already (refused, or nothing to do).
    Completed,
}

/// Completes `srb` with `status`.
pub fn complete(adapter: &Adapter, mut srb: Srb, status: u8) {
    srb.set_srb_status(status);
    adapter.extension().complete_request(srb);
}

/// HwBuildIo: validates the SRB and builds its request.
pub fn build_io(adapter: &Adapter, raw: NonNull<ScsiRequestBlock>) -> Built {
    // SAFETY: `raw` is the SRB StorPort passed to HwBuildIo: valid and ours until completed.
    let mut srb = match unsafe { Srb::from_raw(raw) } {
        Ok(srb) => srb,
        Err((srb, error)) => {
            let status = match error {
                SrbError::BadExtendedHeader { .. } => SRB_STATUS_BAD_SRB_BLOCK_LENGTH,
                _ => SRB_STATUS_INVALID_REQUEST,
            };
            complete(adapter, srb, status);
            return Built::Completed;
        }
    };
    let function = srb.function();
    let status = if function == u32::from(SRB_FUNCTION_EXECUTE_SCSI) {
        match prepare(adapter, &mut srb) {
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
        // Answered here, completely: see `crate::wmi` for why BuildIo.
        crate::wmi::handle(adapter, &mut srb)
    } else if function == u32::from(SRB_FUNCTION_IO_CONTROL) {
        // IOCTL_SCSI_MINIPORT, also answered here: see `crate::ioctl`.
        crate::ioctl::handle(&mut srb)
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
    complete(adapter, srb, status);
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
fn unspecified_direction(cdb: &[u8]) -> DataDirection {
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

/// Builds the request for an EXECUTE_SCSI SRB in its extension; on error, the SRB status.
#[expect(
    clippy::too_many_lines,
    reason = "one linear translation of an SRB into a request; splitting it scatters the checks"
)]
fn prepare(adapter: &Adapter, srb: &mut Srb) -> Result<(), u8> {
    let address = srb.address();
    let device = adapter.device_limits();
    if address.path != 0 {
        return Err(SRB_STATUS_INVALID_PATH_ID);
    }
    if address.target > device.max_target {
        return Err(SRB_STATUS_INVALID_TARGET_ID);
    }
    if u16::from(address.lun) > device.max_lun {
        return Err(SRB_STATUS_INVALID_LUN);
    }
    let mut cdb = [0u8; CDB_SIZE];
    let cdb_len = srb.cdb(&mut cdb).map_err(|_| SRB_STATUS_INVALID_REQUEST)?;
    // A unit the device reported removed is gone for Windows at once (see `crate::events`);
    // only the commands the device answers for an absent unit still reach it.
    if adapter
        .events()
        .gone()
        .contains(address.target, address.lun)
        && !crate::events::reaches_absent_unit(cdb[0])
    {
        return Err(SRB_STATUS_NO_DEVICE);
    }
    let lun =
        Lun::new(address.target, u16::from(address.lun)).map_err(|_| SRB_STATUS_INVALID_LUN)?;
    let flags = srb.flags();
    let length = srb.data_transfer_length();
    let direction = match (length, flags & SRB_FLAGS_UNSPECIFIED_DIRECTION) {
        (0, _) => DataDirection::None,
        (_, SRB_FLAGS_DATA_IN) => DataDirection::FromDevice,
        (_, SRB_FLAGS_DATA_OUT) => DataDirection::ToDevice,
        // Both flags: pass-through with SCSI_IOCTL_DATA_UNSPECIFIED (see
        // `unspecified_direction`).
        (_, SRB_FLAGS_UNSPECIFIED_DIRECTION) => unspecified_direction(&cdb[..]),
        // A buffer on a request that claims no data transfer: inconsistent, refused.
        _ => return Err(SRB_STATUS_INVALID_REQUEST),
    };
    let sense_capacity = if flags & SRB_FLAGS_DISABLE_AUTOSENSE == 0 {
        srb.sense_buffer().map_or(0, |(_, len)| u32::from(len))
    } else {
        0
    };

    let layout = adapter.limits().request;
    let extension = srb.extension() as usize;
    if extension == 0 {
        return Err(SRB_STATUS_INVALID_REQUEST);
    }
    let base = request_base(extension, &layout);
    let port = adapter.extension();
    // The SRB goes with its extension: under DMA remapping (an IOMMU) StorPort maps the SRB
    // extension for the device while it holds the SRB, and finds that logical address through
    // the SRB. Microsoft's storahci does the same ("SRB is needed for
    // StorPortGetPhysicalAddress to calculate logical address when DMAR is enabled"), and
    // StorPortGetPhysicalAddress "will just return zero if an IOMMU is active" when the SRB is
    // NULL (MicrosoftDocs/windows-driver-docs-ddi pull request 1640). A zero length fails the
    // SRB below instead of handing the device an address it cannot reach.
    let (bus, contiguous) = port.physical_address(Some(srb), base);
    if (contiguous as usize) < layout.indirect {
        return Err(SRB_STATUS_ERROR);
    }
    let request = Request::at(base, bus, layout).ok_or(SRB_STATUS_ERROR)?;
    let tag = base as u64;
    // `Srb::cdb` bounds the length by the buffer; `get` keeps that proof local, with no panic.
    let cdb_bytes = cdb.get(..cdb_len).ok_or(SRB_STATUS_INVALID_REQUEST)?;
    let command = CmdReq::new(lun, tag, cdb_bytes).map_err(|_| SRB_STATUS_INVALID_REQUEST)?;
    if !request
        .memory
        .write_bytes(layout.cmd_req, command.as_bytes())
        || !request
            .memory
            .write_bytes(layout.cmd_resp, &[0u8; RESPONSE_HEADER_LEN as usize])
    {
        return Err(SRB_STATUS_ERROR);
    }

    // The scratch list: header, data-out segments | response, data-in segments.
    let mut scratch = Scratch {
        first: request.scratch(),
        capacity: layout.segment_capacity(),
        count: 0,
    };
    let header = Segment::new(bus + layout.cmd_req as u64, size_of::<CmdReq>() as u32);
    let response = Segment::new(bus + layout.cmd_resp as u64, size_of::<CmdResp>() as u32);
    let data = if direction == DataDirection::None {
        &[][..]
    } else {
        data_segments(adapter, srb, length)?
    };
    scratch.push(header)?;
    if direction == DataDirection::ToDevice {
        scratch.push_data(data, length)?;
    }
    let readable = scratch.count;
    scratch.push(response)?;
    if direction == DataDirection::FromDevice {
        scratch.push_data(data, length)?;
    }
    let count = scratch.count;
    let writable = count - readable;
    // An indirect table needs the feature negotiated (virtio 1.x 2.7.5.3.1: the driver MUST NOT
    // set VIRTQ_DESC_F_INDIRECT otherwise) and the whole table contiguous in bus memory; without
    // either the request goes on the ring as a direct chain, which the limits are sized for.
    let indirect_len = count * crate::layout::DESCRIPTOR_LEN;
    let indirect_usable = adapter.features().contains(Features::INDIRECT_DESC)
        && (contiguous as usize) >= layout.indirect + indirect_len;

    let mut opcode_page = 0xFFFF;
    if cdb[0] == vpd::INQUIRY && cdb[1] & 1 == 1 {
        opcode_page = u16::from(cdb[2]);
    } else if cdb[0] == luns::SERVICE_ACTION_IN_16 {
        opcode_page = u16::from(cdb[1] & 0x1F);
    }
    let srb_layout = srb.layout();
    let context = RequestContext {
        srb: (srb.raw().as_ptr() as u64).into(),
        data_length: length.into(),
        sense_capacity: sense_capacity.into(),
        queue: adapter.queue_for_request(srb).into(),
        token: 0.into(),
        state: RequestState::Built as u8,
        direction: match direction {
            DataDirection::None => 0,
            DataDirection::ToDevice => 1,
            DataDirection::FromDevice | DataDirection::Bidirectional => 2,
        },
        target: address.target,
        opcode: cdb[0],
        lun: u16::from(address.lun).into(),
        vpd_page: opcode_page.into(),
        readable: (readable as u16).into(),
        writable: (writable as u16).into(),
        indirect_usable: u8::from(indirect_usable),
        srb_extended: u8::from(srb_layout.extended),
        scsi_status_at: srb_layout.scsi_status.into(),
        sense_length_at: srb_layout.sense_length.into(),
        sense_buffer_at: srb_layout.sense_buffer.into(),
        bus: bus.into(),
        // Numbered by StartIo, under the queue lock, when the request goes on the ring.
        sequence: 0.into(),
    };
    if request.set_context(&context) {
        Ok(())
    } else {
        Err(SRB_STATUS_ERROR)
    }
}

/// The SRB's scatter/gather elements, checked against the adapter's limits.
fn data_segments<'a>(
    adapter: &Adapter,
    srb: &'a Srb,
    length: u32,
) -> Result<&'a [StorScatterGatherElement], u8> {
    let list = adapter
        .extension()
        .scatter_gather_list(srb)
        .ok_or(SRB_STATUS_INVALID_REQUEST)?;
    // SAFETY: StorPort's list for this SRB stays valid until the SRB is completed; its header
    // is read by value.
    let elements = unsafe { list.as_ref() }.number_of_elements;
    if elements == 0 || elements > adapter.limits().max_segments || length == 0 {
        return Err(SRB_STATUS_INVALID_REQUEST);
    }
    #[expect(
        clippy::cast_ptr_alignment,
        reason = "the element array follows the 8-aligned header at its field offset"
    )]
    let first = list
        .as_ptr()
        .cast::<u8>()
        .wrapping_add(core::mem::offset_of!(
            crate::storport::StorScatterGatherList,
            list
        ))
        .cast::<StorScatterGatherElement>();
    // SAFETY: `number_of_elements` elements follow the header at `list` (StorPort's layout),
    // valid until the SRB is completed; the count was bounded above.
    Ok(unsafe { core::slice::from_raw_parts(first, elements as usize) })
}

/// Writes the segment list of a request into its SRB extension's scratch area.
struct Scratch {
    first: *mut Segment,
    capacity: usize,
    count: usize,
}

impl Scratch {
    fn push(&mut self, segment: Segment) -> Result<(), u8> {
        if self.count >= self.capacity {
            return Err(SRB_STATUS_INVALID_REQUEST);
        }
        // SAFETY: the scratch list has `capacity` Segment slots inside the SRB extension,
        // 16-aligned, ours for the request's life; `count < capacity`.
        unsafe { self.first.wrapping_add(self.count).write(segment) };
        self.count += 1;
        Ok(())
    }

    /// Pushes data segments covering exactly `length` bytes.
    fn push_data(&mut self, elements: &[StorScatterGatherElement], length: u32) -> Result<(), u8> {
        let mut left = length;
        for element in elements {
            if left == 0 {
                break;
            }
            let take = element.length.min(left);
            if take == 0 {
                return Err(SRB_STATUS_INVALID_REQUEST);
            }
            self.push(Segment::new(element.physical_address.as_u64(), take))?;
            left -= take;
        }
        if left == 0 {
            Ok(())
        } else {
            Err(SRB_STATUS_INVALID_REQUEST)
        }
    }
}

/// HwStartIo for a prepared request: puts it on its queue's ring and notifies the device.
pub fn start_io(adapter: &Adapter, srb: Srb) {
    let layout = adapter.limits().request;
    let base = request_base(srb.extension() as usize, &layout);
    let Some(request) = Request::at(base, 0, layout) else {
        complete(adapter, srb, SRB_STATUS_ERROR);
        return;
    };
    let Some(context) = request.context() else {
        complete(adapter, srb, SRB_STATUS_ERROR);
        return;
    };
    let queue = context
        .queue
        .get()
        .min(adapter.request_queues().saturating_sub(1));
    let readable = usize::from(context.readable.get());
    let writable = usize::from(context.writable.get());
    // SAFETY: `prepare` wrote `readable + writable` segments at the scratch list, which lies
    // in this request's SRB extension, untouched since.
    let segments = unsafe { core::slice::from_raw_parts(request.scratch(), readable + writable) };
    let (readable_segments, writable_segments) = segments.split_at(readable);
    let indirect = if context.indirect_usable == 1 {
        // The table's bus address is the request's plus its offset: `prepare` checked the
        // whole span is contiguous.
        Request::at(base, context.bus.get(), layout).and_then(|with_bus| {
            with_bus.memory.sub(
                layout.indirect,
                segments.len() * crate::layout::DESCRIPTOR_LEN,
            )
        })
    } else {
        None
    };
    let (outcome, notify) = {
        let mut guard = adapter.lock(queue);
        if adapter.is_stopped() {
            // Stopped (ScsiStopAdapter until ScsiRestartAdapter): the device is reset and must
            // not see the request. BUSY is retryable: StorPort resubmits it later. Checked
            // under the queue lock, which the stop holds while it sets the flag, so no request
            // reaches a ring after the stop took everything back.
            drop(guard);
            adapter
                .recovery()
                .busy_while_stopped
                .fetch_add(1, Ordering::Relaxed);
            complete(adapter, srb, SRB_STATUS_BUSY);
            return;
        }
        if adapter
            .events()
            .gone()
            .contains(context.target, context.lun.get() as u8)
            && !crate::events::reaches_absent_unit(context.opcode)
        {
            // Marked removed since BuildIo accepted it (a REMOVED event, or StorPort removing
            // the unit: `crate::unit`). Read under the queue lock, under which a removal's scan
            // of what is in flight looks at this ring too: a request is either on the ring for
            // that scan (and taken back by its LUN reset) or refused here, never lost between.
            drop(guard);
            complete(adapter, srb, SRB_STATUS_NO_DEVICE);
            return;
        }
        let Some(state) = guard.state() else {
            drop(guard);
            complete(adapter, srb, SRB_STATUS_ERROR);
            return;
        };
        let added = add_with_reservation(
            adapter,
            state,
            (readable_segments, writable_segments),
            indirect.as_ref(),
        );
        match added {
            Ok(token) => {
                // Counted, and numbered, before the lock drops: once it does, the request may
                // complete (and be observed) before this processor runs another instruction.
                let sequence = adapter.counters(queue).map_or(0, |counters| {
                    counters.requests.fetch_add(1, Ordering::Relaxed)
                });
                request.set_token(token.0);
                request.set_sequence(sequence);
                request.set_state(RequestState::InFlight);
                let requests: &mut [usize] =
                    core::borrow::BorrowMut::borrow_mut(&mut state.requests);
                if let Some(slot) = requests.get_mut(token.index()) {
                    *slot = base;
                }
                let kick = state.ring.kick_prepare();
                (Ok(()), kick.then_some(state.notify_offset))
            }
            Err(error) => (Err(error), None),
        }
    };
    let counters = adapter.counters(queue);
    match outcome {
        Ok(()) => {
            if let Some(offset) = notify {
                adapter.notify(queue, offset);
            }
            // The SRB now belongs to the ring; it is completed from the used ring or a reset,
            // through the pointer stored in the request's context.
            srb.hand_over();
        }
        Err(QueueError::Full { .. }) => {
            if let Some(counters) = counters {
                counters.queue_full.fetch_add(1, Ordering::Relaxed);
            }
            // The ring is full (or its room is kept for a larger request): StorPort sends the
            // request again, and holds the others back until one request completes, so the
            // submitters do not spin on a full ring. ScsiStatus stays 0: QUEUE_FULL would tell
            // StorPort the unit's task set is full and make it lower the unit's queue depth,
            // while what is full is one of our rings (vioscsi sets it; we deliberately do not).
            adapter.extension().busy(1);
            complete(adapter, srb, SRB_STATUS_BUSY);
        }
        Err(_) => complete(adapter, srb, SRB_STATUS_INVALID_REQUEST),
    }
}

/// Puts a request's segments on the queue's ring, honouring the ring's reservation
/// ([`crate::room`]): a request smaller than one that found no room is refused (as if the ring
/// were full) unless the reserved room stays free, and a request refused for room reserves it.
/// The dump stack never holds more than one request and must not ask for the system time, so it
/// keeps no reservations.
fn add_with_reservation(
    adapter: &Adapter,
    state: &mut crate::adapter::QueueState,
    (readable, writable): (&[Segment], &[Segment]),
    indirect: Option<&DmaMemory>,
) -> Result<virtio_core::queue::Token, QueueError> {
    // Descriptors the request takes on the ring: one with an indirect table, else its chain.
    let needed = if indirect.is_some() {
        1
    } else {
        (readable.len() + writable.len()) as u16
    };
    let reserves = adapter.dump_mode().is_none();
    let free = state.ring.free_descriptors();
    if reserves
        && !state
            .reservation
            .admits(needed, free, || adapter.extension().system_time())
    {
        return Err(QueueError::Full { needed, free });
    }
    let added = state.ring.add(readable, writable, indirect);
    if reserves {
        match added {
            Ok(_) => state.reservation.admitted(needed),
            Err(QueueError::Full { .. }) => state
                .reservation
                .refused(needed, adapter.extension().system_time()),
            Err(_) => {}
        }
    }
    added
}

/// Drains the used ring of the guarded queue, completing each request; re-arms interrupts.
/// Returns true if the device broke the protocol and must be reset (the violation is traced).
pub fn drain(guard: &mut QueueGuard<'_>) -> bool {
    drain_used(guard, true)
}

/// During a device reset (the device already stopped): completes what the device had finished
/// before it stopped, up to the first protocol violation. That violation is not traced again:
/// it is the one that asked for this reset, or one the reset is about to clear anyway, and every
/// request not salvaged here fails with SRB_STATUS_BUS_RESET.
pub fn salvage(guard: &mut QueueGuard<'_>) {
    let _ = drain_used(guard, false);
}

/// [`drain`], tracing the violation it stops at when `report`.
fn drain_used(guard: &mut QueueGuard<'_>, report: bool) -> bool {
    let adapter = guard.adapter();
    let queue = guard.queue();
    let trace = |args: (u32, u64, u64)| {
        if report {
            adapter.trace(TraceEvent::ProtocolViolation, queue, args);
        }
    };
    let mut reset = false;
    loop {
        let Some(state) = guard.state() else {
            return false;
        };
        let popped = state.ring.pop_used();
        match popped {
            Ok(Some(used)) => {
                let requests: &mut [usize] =
                    core::borrow::BorrowMut::borrow_mut(&mut state.requests);
                let base = requests
                    .get_mut(used.token.index())
                    .map_or(0, core::mem::take);
                if base == 0 {
                    trace((
                        ViolationKind::UnknownUsedId as u32,
                        used.token.index() as u64,
                        0,
                    ));
                    reset = true;
                    break;
                }
                if complete_used(adapter, queue, base, used.written, used.token.0) {
                    trace((
                        ViolationKind::BadResponse as u32,
                        u64::from(used.token.0),
                        u64::from(used.written),
                    ));
                    reset = true;
                }
            }
            Ok(None) => {
                if !state.ring.enable_interrupts() {
                    break;
                }
            }
            Err(_) => {
                trace((ViolationKind::RingError as u32, 0, 0));
                reset = true;
                break;
            }
        }
    }
    reset
}

/// Completes the request at `base` that the device used with `written` bytes. Returns true
/// if the response broke the protocol (the device must be reset).
fn complete_used(adapter: &Adapter, queue: u16, base: usize, written: u32, token: u16) -> bool {
    let layout = adapter.limits().request;
    let Some(request) = Request::at(base, 0, layout) else {
        return true;
    };
    let Some(context) = request.context() else {
        return true;
    };
    if context.state != RequestState::InFlight as u8 || context.token.get() != token {
        return true;
    }
    request.set_state(RequestState::Done);
    let Some(raw) = NonNull::new(context.srb.get() as usize as *mut ScsiRequestBlock) else {
        return true;
    };
    // SAFETY: the context holds the SRB this request was built for and the layout BuildIo
    // recorded when it validated it; it was in flight (state checked) and is completed
    // exactly once, here, after its state moved to Done.
    let mut srb = unsafe { Srb::from_layout(raw, context.srb_layout()) };
    if let Some(counters) = adapter.counters(queue) {
        counters.completions.fetch_add(1, Ordering::Relaxed);
    }
    let direction = match context.direction {
        1 => DataDirection::ToDevice,
        2 => DataDirection::FromDevice,
        _ => DataDirection::None,
    };
    let transfer = Transfer::new(
        direction,
        context.data_length.get(),
        context.sense_capacity.get(),
    );
    let response = if written >= RESPONSE_HEADER_LEN {
        request.response_header()
    } else {
        None
    };
    let Some(mut response) = response else {
        srb.set_data_transfer_length(0);
        complete(adapter, srb, SRB_STATUS_ERROR);
        return true;
    };
    let outcome = complete_command(&response, &transfer);
    let gone = adapter
        .events()
        .gone()
        .contains(context.target, context.lun.get() as u8)
        && !crate::events::reaches_absent_unit(context.opcode);
    let mut status = srb_status(outcome.disposition, gone);
    srb.set_scsi_status(outcome.scsi_status);
    let mut transferred = outcome.transferred;
    if matches!(status, SRB_STATUS_SUCCESS | SRB_STATUS_DATA_OVERRUN)
        && context.vpd_page.get() == u16::from(vpd::DEVICE_IDENTIFICATION)
        && context.opcode == vpd::INQUIRY
        && let Some(new_len) = synthesize_vpd(adapter, &srb, &context, transferred)
    {
        transferred = new_len;
        if transferred == context.data_length.get() {
            status = SRB_STATUS_SUCCESS;
        }
    }
    if matches!(status, SRB_STATUS_SUCCESS | SRB_STATUS_DATA_OVERRUN)
        && direction == DataDirection::FromDevice
        && let Some(snooped) = Snooped::of(context.opcode, context.vpd_page.get())
    {
        snoop(adapter, &srb, &context, snooped, transferred);
    }
    srb.set_data_transfer_length(transferred);
    if let Some(counters) = adapter.counters(queue) {
        counters.record_transfer(direction, transferred);
    }
    if outcome.autosense_valid
        && status != SRB_STATUS_NO_DEVICE
        && let Some((buffer, capacity)) = srb.sense_buffer()
    {
        // The header said how many sense bytes there are (bounded by the buffer and the
        // SRB's capacity in `complete_command`); only those are read from the device.
        let wanted = outcome.sense(&response).len();
        if !request.read_sense(&mut response, wanted) {
            srb.set_data_transfer_length(0);
            complete(adapter, srb, SRB_STATUS_ERROR);
            return true;
        }
        let sense = outcome.sense(&response);
        let len = sense.len().min(usize::from(capacity));
        // SAFETY: the SRB's sense buffer holds `capacity` bytes (StorPort's contract for
        // SenseInfoBuffer/SenseInfoBufferLength) and `len <= capacity`.
        unsafe { core::ptr::copy_nonoverlapping(sense.as_ptr(), buffer.as_ptr(), len) };
        srb.set_sense_length(len as u8);
        status |= SRB_STATUS_AUTOSENSE_VALID;
    } else if status != SRB_STATUS_SUCCESS {
        srb.set_sense_length(0);
    }
    complete(adapter, srb, status);
    outcome.disposition.requires_device_reset()
}

/// The SRB status of a command that ended with `disposition`; `gone` when its unit was
/// reported removed by the device and the command is one that needs the unit.
fn srb_status(disposition: Disposition, gone: bool) -> u8 {
    match disposition {
        Disposition::Success => SRB_STATUS_SUCCESS,
        // However the command failed, the unit is gone for Windows (see `crate::events`).
        Disposition::Error
        | Disposition::ProtocolViolation(_)
        | Disposition::Aborted
        | Disposition::InvalidTargetId
        | Disposition::InvalidLun
        | Disposition::BusReset
        | Disposition::Busy
            if gone =>
        {
            SRB_STATUS_NO_DEVICE
        }
        Disposition::DataOverrun => SRB_STATUS_DATA_OVERRUN,
        Disposition::Error | Disposition::ProtocolViolation(_) => SRB_STATUS_ERROR,
        Disposition::Aborted => SRB_STATUS_ABORTED,
        Disposition::InvalidTargetId => SRB_STATUS_INVALID_TARGET_ID,
        Disposition::InvalidLun => SRB_STATUS_INVALID_LUN,
        Disposition::BusReset => SRB_STATUS_BUS_RESET,
        Disposition::Busy => SRB_STATUS_BUSY,
    }
}

/// Records in the LUN table what a successful `snooped` command returned: the first
/// `transferred` bytes of its data buffer (after the VPD 0x83 synthesis, so the table keeps
/// what Windows sees).
fn snoop(
    adapter: &Adapter,
    srb: &Srb,
    context: &RequestContext,
    snooped: Snooped,
    transferred: u32,
) {
    let Some(buffer) = NonNull::new(srb.data_buffer().cast::<u8>()) else {
        return;
    };
    let len = transferred.min(context.data_length.get()) as usize;
    // SAFETY: INQUIRY, READ CAPACITY and REPORT LUNS are non-read/write commands, so StorPort
    // mapped their buffers (STOR_MAP_NON_READ_WRITE_BUFFERS) and `DataBuffer` is valid for
    // `DataTransferLength` bytes (the posted length, at least `len`); the device finished
    // writing it (the request was used) and nothing writes it until the SRB is completed.
    let data = unsafe { core::slice::from_raw_parts(buffer.as_ptr(), len) };
    let recorded = adapter
        .luns()
        .observe(context.target, context.lun.get(), snooped, data);
    if snooped == Snooped::Answer(crate::luns::Answer::Inquiry)
        && matches!(
            recorded,
            Recorded::Inserted | Recorded::Updated | Recorded::KeptLonger | Recorded::Full
        )
        && let Ok(lun) = u8::try_from(context.lun.get())
    {
        // The unit answers INQUIRY as present again: it is back, event or not.
        adapter.events().gone().clear(context.target, lun);
    }
}

/// Adds a designator to an empty VPD 0x83 answer; returns the new transferred length.
fn synthesize_vpd(
    adapter: &Adapter,
    srb: &Srb,
    context: &RequestContext,
    transferred: u32,
) -> Option<u32> {
    let buffer = NonNull::new(srb.data_buffer().cast::<u8>())?;
    let len = context.data_length.get() as usize;
    // SAFETY: INQUIRY is a non-read/write command, so StorPort mapped its buffer
    // (STOR_MAP_NON_READ_WRITE_BUFFERS) and `DataBuffer` is valid for `DataTransferLength`
    // bytes; the device finished writing it (the request was used).
    let page = unsafe { core::slice::from_raw_parts_mut(buffer.as_ptr(), len) };
    let location = adapter.location(context.target, context.lun.get());
    vpd::synthesize_designator(page, transferred as usize, location).map(|n| n as u32)
}

/// Completes every request in flight on `queue` with SRB_STATUS_BUS_RESET after a device
/// reset. The caller holds every queue lock (or the shared one) and has reset the device.
pub fn fail_in_flight(adapter: &Adapter, queue: u16) {
    // SAFETY: the caller holds the queue's lock (see above).
    let mut guard = unsafe { adapter.assume_locked(queue) };
    loop {
        let Some(state) = guard.state() else {
            return;
        };
        let Some(token) = state.ring.queue().detach_next() else {
            return;
        };
        let requests: &mut [usize] = core::borrow::BorrowMut::borrow_mut(&mut state.requests);
        let base = requests.get_mut(token.index()).map_or(0, core::mem::take);
        if base == 0 {
            continue;
        }
        let layout = adapter.limits().request;
        let Some(request) = Request::at(base, 0, layout) else {
            continue;
        };
        let Some(context) = request.context() else {
            continue;
        };
        if context.state != RequestState::InFlight as u8 {
            continue;
        }
        request.set_state(RequestState::Done);
        let Some(raw) = NonNull::new(context.srb.get() as usize as *mut ScsiRequestBlock) else {
            continue;
        };
        // SAFETY: as in `complete_used`: the SRB was in flight and is completed once, here.
        let mut srb = unsafe { Srb::from_layout(raw, context.srb_layout()) };
        srb.set_data_transfer_length(0);
        // A request of a unit the device reported removed fails as that unit's do everywhere
        // else (NO_DEVICE), not with a retryable BUS_RESET whose retry would fail anyway.
        let gone = adapter
            .events()
            .gone()
            .contains(context.target, context.lun.get() as u8)
            && !crate::events::reaches_absent_unit(context.opcode);
        complete(adapter, srb, srb_status(Disposition::BusReset, gone));
    }
}

/// A request on a ring, as [`scan_in_flight`] reports it: what a task management function
/// needs to decide whether it covers the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// Request queue (0-based).
    pub queue: u16,
    /// Target addressed.
    pub target: u8,
    /// LUN addressed.
    pub lun: u16,
    /// The tag the request header carries (the request's address; unique while in flight).
    pub tag: u64,
    /// The SRB's address.
    pub srb: usize,
    /// The queue's submission count when the request went on the ring.
    pub sequence: u64,
}

/// Calls `visit` for every request in flight on the guarded queue.
pub fn scan_in_flight(guard: &mut QueueGuard<'_>, mut visit: impl FnMut(&InFlight)) {
    let adapter = guard.adapter();
    let queue = guard.queue();
    let layout = adapter.limits().request;
    let Some(state) = guard.state() else {
        return;
    };
    let requests: &[usize] = core::borrow::Borrow::borrow(&state.requests);
    for &base in requests {
        if base == 0 {
            continue;
        }
        let Some(context) = Request::at(base, 0, layout).and_then(|request| request.context())
        else {
            continue;
        };
        if context.state != RequestState::InFlight as u8 {
            continue;
        }
        visit(&InFlight {
            queue,
            target: context.target,
            lun: context.lun.get(),
            tag: base as u64,
            srb: context.srb.get() as usize,
            sequence: context.sequence.get(),
        });
    }
}

/// Completes an SRB the miniport kept by address (a task management SRB held by its
/// [`crate::tmf`] slot) with `status`.
///
/// # Safety
/// `srb` is the address of an SRB StorPort handed this miniport, validated by BuildIo, not
/// completed since, whose ownership the caller holds alone (it is completed exactly once,
/// here); `extended` says whether it is an SRB_EX.
pub unsafe fn complete_kept(adapter: &Adapter, srb: usize, extended: bool, status: u8) {
    let Some(raw) = NonNull::new(srb as *mut ScsiRequestBlock) else {
        return;
    };
    let layout = crate::srb::SrbLayout {
        extended,
        scsi_status: 0,
        sense_length: 0,
        sense_buffer: 0,
    };
    // SAFETY: the caller's contract; a layout without SCSI fields touches only the header,
    // whose shape `extended` names.
    let srb = unsafe { Srb::from_layout(raw, layout) };
    complete(adapter, srb, status);
}
#[cfg(test)]
mod tests {
    use virtio_core::scsi::ProtocolViolation;

    use super::*;

    #[test]
    fn an_unspecified_direction_follows_the_cdb_and_is_otherwise_a_read() {
        let cases: [(&[u8], DataDirection); 10] = [
            (&[0x2A, 0, 0, 0, 0, 0, 0, 0, 8, 0], DataDirection::ToDevice), // WRITE(10)
            (&[0x8A; 16], DataDirection::ToDevice),                        // WRITE(16)
            (
                &[0x55, 0x10, 0, 0, 0, 0, 0, 0, 24, 0],
                DataDirection::ToDevice,
            ), // MODE SELECT(10)
            (&[0x5F, 1, 0, 0, 0, 0, 0, 0, 24, 0], DataDirection::ToDevice), // PR OUT
            (
                &[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0],
                DataDirection::FromDevice,
            ), // READ(10)
            (&[0x12, 0, 0, 0, 96, 0], DataDirection::FromDevice),          // INQUIRY
            (&[0xC7, 1, 2, 3], DataDirection::FromDevice),                 // vendor: a read
            (&[0x85, 0x08, 0x0E, 0, 0, 0, 1], DataDirection::FromDevice),  // ATA PT, T_DIR 1
            (&[0x85, 0x0A, 0x06, 0, 0, 0, 1], DataDirection::ToDevice),    // ATA PT, T_DIR 0
            (&[], DataDirection::FromDevice),
        ];
        for (cdb, direction) in cases {
            assert_eq!(unspecified_direction(cdb), direction, "{cdb:02X?}");
        }
    }

    #[test]
    fn a_removed_unit_fails_with_no_device_whatever_the_device_said() {
        let failures = [
            (Disposition::Error, SRB_STATUS_ERROR),
            (
                Disposition::ProtocolViolation(ProtocolViolation::InvalidResponse { response: 99 }),
                SRB_STATUS_ERROR,
            ),
            (Disposition::Aborted, SRB_STATUS_ABORTED),
            (Disposition::InvalidTargetId, SRB_STATUS_INVALID_TARGET_ID),
            (Disposition::InvalidLun, SRB_STATUS_INVALID_LUN),
            (Disposition::BusReset, SRB_STATUS_BUS_RESET),
            (Disposition::Busy, SRB_STATUS_BUSY),
        ];
        for (disposition, status) in failures {
            assert_eq!(srb_status(disposition, false), status, "{disposition:?}");
            assert_eq!(
                srb_status(disposition, true),
                SRB_STATUS_NO_DEVICE,
                "{disposition:?}"
            );
        }
        // What the device did complete stays as it was: the data moved before the removal.
        for gone in [false, true] {
            assert_eq!(srb_status(Disposition::Success, gone), SRB_STATUS_SUCCESS);
            assert_eq!(
                srb_status(Disposition::DataOverrun, gone),
                SRB_STATUS_DATA_OVERRUN
            );
        }
    }
}
