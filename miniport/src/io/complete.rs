//! Completions: the used ring drained under the queue lock, each request's status, sense and
//! residual mapped to its SRB, what the bus scan answered snooped; and the requests a device
//! reset takes back.
#![forbid(unsafe_code)]

use core::sync::atomic::Ordering;

use virtio_core::dma::DmaMemory;
use virtio_core::queue::Virtqueue;
use virtio_core::scsi::scsi_status::GOOD;
use virtio_core::scsi::{
    CommandOutcome, DataDirection, Disposition, Response, SENSE_SIZE, Transfer, complete_header,
};

use super::IoHost;
use super::{Completing, RESPONSE_HEADER_LEN, Request, complete, device_identification};
use crate::counters::QueueCounters;
use crate::in_flight::InFlight;
use crate::luns::{Recorded, Snooped};
use crate::queue_state::{QueueGuard, Ring};
use crate::srb_extension::{CMD_RESP_AT, INDIRECT_AT, RequestContext, RequestState};
use crate::storport::request::{InFlightRequest, KeptSrb, RequestView};
use crate::storport::srb::Srb;
use crate::storport::{
    SRB_STATUS_ABORTED, SRB_STATUS_AUTOSENSE_VALID, SRB_STATUS_BUS_RESET, SRB_STATUS_BUSY,
    SRB_STATUS_DATA_OVERRUN, SRB_STATUS_ERROR, SRB_STATUS_INVALID_LUN,
    SRB_STATUS_INVALID_TARGET_ID, SRB_STATUS_NO_DEVICE, SRB_STATUS_SUCCESS,
};
use crate::trace::{TraceEvent, ViolationKind};

/// Drains the used ring of the guarded queue, completing each request; re-arms interrupts.
/// Returns true if the device broke the protocol and must be reset (the violation is traced).
pub fn drain<H: IoHost>(host: &H, guard: &mut QueueGuard<'_>) -> bool {
    drain_used(host, guard, true)
}

/// During a device reset (the device already stopped): completes what the device had finished
/// before it stopped, up to the first protocol violation. That violation is not traced again:
/// it is the one that asked for this reset, or one the reset is about to clear anyway, and every
/// request not salvaged here fails with SRB_STATUS_BUS_RESET.
pub fn salvage<H: IoHost>(host: &H, guard: &mut QueueGuard<'_>) {
    let _ = drain_used(host, guard, false);
}

/// [`drain`] when `live` (the device running: the violation it stops at is traced, and a
/// request used without its response header is kept for the reset), [`salvage`] otherwise.
pub(super) fn drain_used<H: IoHost>(host: &H, guard: &mut QueueGuard<'_>, live: bool) -> bool {
    let queue = guard.queue();
    let Some(state) = guard.state() else {
        return false;
    };
    // The layout decided once, for the whole drain: each loop then calls its own ring's
    // `pop_used` directly, with no dispatch per element and no result merged from two rings.
    let in_flight: &mut [Option<InFlightRequest>] =
        core::borrow::BorrowMut::borrow_mut(&mut state.in_flight);
    let held = &mut state.held_for_reset;
    match &mut state.ring {
        Ring::Split(ring) => drain_ring(host, queue, ring, in_flight, held, live),
        Ring::Packed(ring) => drain_ring(host, queue, ring, in_flight, held, live),
    }
}

/// [`drain_used`] on `ring`, whose requests in flight are `slots` (by token); a request used
/// without its response header goes to `held` (the queue's `held_for_reset`) while the device
/// is `live`, and nothing more is taken from the ring until the reset.
#[expect(
    clippy::inline_always,
    reason = "one copy per ring layout in drain_used, the only caller; out of line it costs a call per drain (cargo xtask bench)"
)]
#[inline(always)]
fn drain_ring<H: IoHost>(
    host: &H,
    queue: u16,
    ring: &mut impl Virtqueue,
    slots: &mut [Option<InFlightRequest>],
    held: &mut Option<InFlightRequest>,
    live: bool,
) -> bool {
    // A request kept for the reset means the device broke the protocol on this queue and may
    // still use chains it gave back: nothing more is completed from the ring before the reset
    // stops it (its salvage, with the device stopped, takes the rest). Another drain before the
    // reset (an interrupt, the timer's poll, a bus reset's) only asks for the reset again.
    if live && held.is_some() {
        return true;
    }
    let trace = |args: (u32, u64, u64)| {
        if live {
            host.tracer()
                .trace(TraceEvent::ProtocolViolation, queue, args);
        }
    };
    let mut reset = false;
    loop {
        match ring.pop_used() {
            Ok(Some(used)) => {
                let Some(slot) = slots
                    .get_mut(used.token.index())
                    .filter(|slot| slot.is_some())
                else {
                    trace((
                        ViolationKind::UnknownUsedId as u32,
                        used.token.index() as u64,
                        0,
                    ));
                    reset = true;
                    break;
                };
                if used.written < RESPONSE_HEADER_LEN {
                    // A used element that did not even write the response header is a broken
                    // (or lying) device, which may still be using the chain: the request is
                    // kept from StorPort until the reset that follows has stopped the device
                    // and completes it (BUS_RESET), and the drains before that reset take
                    // nothing more (above). In the salvage the device has stopped already: the
                    // request fails with the others the reset takes back.
                    trace((
                        ViolationKind::BadResponse as u32,
                        u64::from(used.token.0),
                        u64::from(used.written),
                    ));
                    reset = true;
                    if let Some(in_flight) = slot.take() {
                        if live {
                            *held = Some(in_flight);
                        } else {
                            fail_request(host, in_flight, Disposition::BusReset);
                        }
                    }
                    break;
                }
                if let Some(in_flight) = slot.take()
                    && complete_used(host, queue, in_flight, used.token.0)
                {
                    trace((
                        ViolationKind::BadResponse as u32,
                        u64::from(used.token.0),
                        u64::from(used.written),
                    ));
                    reset = true;
                }
            }
            Ok(None) => {
                if !ring.enable_interrupts() {
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

/// Completes the request `in_flight` that the device used, having written at least the
/// response header (`drain_ring` leaves a shorter one to the reset). Returns true if the
/// response broke the protocol (the device must be reset).
#[expect(
    clippy::inline_always,
    reason = "on every I/O, called once, from drain_used; left out of line it costs instructions per I/O (cargo xtask bench)"
)]
#[inline(always)]
pub(super) fn complete_used<H: IoHost>(
    host: &H,
    queue: u16,
    in_flight: InFlightRequest,
    token: u16,
) -> bool {
    match complete_plain(host, queue, in_flight, token) {
        Ok(reset) => reset,
        Err(in_flight) => complete_any(host, queue, in_flight, token),
    }
}

/// [`complete_used`] for the completion of nearly every I/O: the request's record sound, the
/// context the one the token was given to, the answer a plain success ([`plain_success`]).
/// Anything else comes back untouched in `Err`, for [`complete_any`], which decides it as it
/// decides every answer: so the common completion carries none of the other cases' state, and
/// the token (one word) is all that crosses to the general path.
#[expect(
    clippy::inline_always,
    reason = "on every I/O, called once, from complete_used; left out of line it costs instructions per I/O (cargo xtask bench)"
)]
#[inline(always)]
fn complete_plain<H: IoHost>(
    host: &H,
    queue: u16,
    in_flight: InFlightRequest,
    token: u16,
) -> Result<bool, InFlightRequest> {
    // As in `complete_any`: the context and response windows lie inside a view that reaches
    // the indirect table.
    let scratch = host.limits().request.segments;
    if scratch < INDIRECT_AT {
        return Err(in_flight);
    }
    let Some(view) = in_flight.view(scratch) else {
        return Err(in_flight);
    };
    let request = Request { view: &view };
    let Some(words) = request.completing_words() else {
        return Err(in_flight);
    };
    if !is_on_ring_as(&words, token) {
        return Err(in_flight);
    }
    let context = Completing::from_words(&words);
    let Some(answer) = request.response_outcome_words() else {
        return Err(in_flight);
    };
    let direction = direction_of(context.direction);
    let transfer = Transfer::new(direction, context.data_length, context.sense_capacity);
    let Some(outcome) = plain_success(answer, &transfer) else {
        return Err(in_flight);
    };
    // The view was made, so only an SRB record naming no SRB fails here; `complete_any` leaves
    // that uncompleted and resets the device too.
    let Some((srb, _)) = in_flight.into_parts(scratch) else {
        return Ok(true);
    };
    request.set_state(RequestState::Done);
    let counters = host.counters(queue);
    // Whether the unit is gone does not matter to a success (`srb_status`).
    Ok(finish(
        host,
        srb,
        &view,
        words,
        outcome,
        SRB_STATUS_SUCCESS,
        counters,
    ))
}

/// [`complete_used`] for any request and answer: every check of the record and the context,
/// the answer decoded in full, the removed units looked at. Out of line, as all but the plain
/// success are rare ([`complete_plain`]).
#[cold]
#[inline(never)]
fn complete_any<H: IoHost>(host: &H, queue: u16, in_flight: InFlightRequest, token: u16) -> bool {
    let layout = host.limits().request;
    // Every layout keeps its scratch list, where the view ends, after the indirect table
    // (`RequestLayout::new`): checked once here, the context and response windows below lie
    // inside the view without a check of their own. Were it not so, the SRB stays uncompleted
    // and the device is reset, as when the view cannot be made.
    let scratch = layout.segments;
    if scratch < INDIRECT_AT {
        if let Some((srb, _)) = in_flight.into_parts(scratch) {
            srb.hand_over();
        }
        return true;
    }
    let Some((mut srb, view)) = in_flight.into_parts(scratch) else {
        return true;
    };
    let request = Request { view: &view };
    let Some(words) = request.completing_words() else {
        srb.hand_over();
        return true;
    };
    let context = Completing::from_words(&words);
    if !is_on_ring_as(&words, token) {
        // Not the request this token was given to: left uncompleted, as the reset that
        // follows cannot complete what is no longer on a ring either.
        srb.hand_over();
        return true;
    }
    request.set_state(RequestState::Done);
    let counters = host.counters(queue);
    let direction = direction_of(context.direction);
    let transfer = Transfer::new(direction, context.data_length, context.sense_capacity);
    let Some(head) = request.response_head() else {
        // Counted here, as `finish` counts every other completion.
        if let Some(counters) = counters {
            counters.completions.fetch_add(1, Ordering::Relaxed);
        }
        srb.set_data_transfer_length(0);
        complete(host, srb, SRB_STATUS_ERROR);
        return true;
    };
    let outcome = complete_header(&head, &transfer);
    let gone = host.gone().contains(context.target, context.lun as u8)
        && !crate::events::reaches_absent_unit(context.opcode);
    let status = srb_status(outcome.disposition, gone);
    finish(host, srb, &view, words, outcome, status, counters)
}

/// Completes `srb` (whose view is `view` and context `words`) as `outcome` says, with SRB
/// status `status`, counted (the completion and its transfer) in `counters`: the bus scan's answers looked at, the transfer
/// length and the sense set. Returns true if the device must be reset. Inline in both its
/// callers, so that the plain success's copy folds its constants.
#[expect(
    clippy::inline_always,
    reason = "the plain success's copy is on every I/O, its outcome constant; out of line nothing folds (cargo xtask bench)"
)]
#[inline(always)]
fn finish<H: IoHost>(
    host: &H,
    mut srb: Srb,
    view: &RequestView,
    words: [u64; 3],
    outcome: CommandOutcome,
    mut status: u8,
    counters: Option<&QueueCounters>,
) -> bool {
    let context = Completing::from_words(&words);
    let direction = direction_of(context.direction);
    srb.set_scsi_status(outcome.scsi_status);
    let mut transferred = outcome.transferred;
    // Only the bus scan's commands (INQUIRY, READ CAPACITY, SERVICE ACTION IN, REPORT LUNS)
    // have answers the driver looks at; reads and writes skip both checks at once.
    if matches!(status, SRB_STATUS_SUCCESS | SRB_STATUS_DATA_OVERRUN)
        && direction == DataDirection::FromDevice
        && is_scan_opcode(context.opcode)
    {
        let [lengths, state, unit] = words;
        (srb, transferred, status) =
            answer_scan(host, srb, lengths, state, unit, transferred, status);
    }
    srb.set_data_transfer_length(transferred);
    if let Some(counters) = counters {
        counters.record_completion(direction, transferred);
    }
    if outcome.autosense_valid && status != SRB_STATUS_NO_DEVICE && srb.sense_buffer().is_some() {
        // The header said how many sense bytes there are (bounded by the buffer and the SRB's
        // capacity in `complete_header`); only those are read from the device.
        let response = view.part(
            CMD_RESP_AT,
            RESPONSE_HEADER_LEN as usize + usize::from(outcome.sense_len),
            0,
        );
        match copy_device_sense(srb, response) {
            Ok(copied) => {
                srb = copied;
                status |= SRB_STATUS_AUTOSENSE_VALID;
            }
            Err(mut unread) => {
                unread.set_data_transfer_length(0);
                complete(host, unread, SRB_STATUS_ERROR);
                return true;
            }
        }
    } else if status != SRB_STATUS_SUCCESS {
        srb.set_sense_length(0);
    }
    complete(host, srb, status);
    outcome.disposition.requires_device_reset()
}

/// The data direction recorded in a request's context (`RequestContext::direction`).
#[inline]
const fn direction_of(recorded: u8) -> DataDirection {
    match recorded {
        1 => DataDirection::ToDevice,
        2 => DataDirection::FromDevice,
        _ => DataDirection::None,
    }
}

/// Whether the request whose context's first words are `words` ([`Completing::from_words`])
/// is the one the used token `token` stands for: on a ring (StartIo recorded it in flight, and
/// no completion has yet) with that token. Both completions ask it before they complete
/// anything; the token and the state lie side by side in one word, so it is one compare.
#[inline]
pub(super) fn is_on_ring_as(words: &[u64; 3], token: u16) -> bool {
    const TOKEN: usize = RequestContext::TOKEN_OFFSET;
    const STATE: usize = RequestContext::STATE_OFFSET;
    const {
        assert!(STATE == TOKEN + 2 && TOKEN / 8 == STATE / 8 && TOKEN % 8 + 3 <= 8);
    }
    let recorded = (words[TOKEN / 8] >> (TOKEN % 8 * 8)) & 0xFF_FFFF;
    recorded == u64::from(token) | u64::from(RequestState::InFlight as u8) << 16
}

/// What [`complete_header`] makes of a response for `transfer` when the device answered as it
/// does nearly always, `VIRTIO_SCSI_S_OK` with status GOOD and no residual: a success that moved
/// the whole transfer, with no sense to copy (whatever `sense_len` says: sense is taken only
/// with CHECK CONDITION or COMMAND TERMINATED). `[resid, last]` are the response's residual and
/// last word (`Request::response_outcome_words`). `None` for every other answer, which
/// `complete_header` decides. On every I/O: one test of two words instead of the response's
/// whole decoding.
#[inline]
pub(super) fn plain_success(
    [resid, last]: [u32; 2],
    transfer: &Transfer,
) -> Option<CommandOutcome> {
    // `status` and `response` are the last word's top two bytes (little-endian).
    const _: () = assert!(GOOD == 0 && Response::Ok as u8 == 0);
    (resid | last >> 16 == 0).then(|| CommandOutcome {
        disposition: Disposition::Success,
        scsi_status: GOOD,
        sense_len: 0,
        autosense_valid: false,
        transferred: transfer.length(),
    })
}

/// What the completion does with the answer of a bus scan command (`is_scan_opcode`) that
/// succeeded: the VPD 0x83 synthesis and the snoop into the LUN table. Returns the SRB, the
/// bytes transferred and the SRB status, as they then are. Out of line, and everything passed
/// by value (the context as the three words it was loaded as, [`Completing::from_words`]): on
/// the reads and writes of every I/O, the SRB and the context stay in registers instead of
/// being stored for a call they do not make.
#[cold]
#[inline(never)]
fn answer_scan<H: IoHost>(
    host: &H,
    mut srb: Srb,
    lengths: u64,
    state: u64,
    unit: u64,
    mut transferred: u32,
    mut status: u8,
) -> (Srb, u32, u8) {
    let context = Completing::from_words(&[lengths, state, unit]);
    if context.vpd_page == u16::from(device_identification::DEVICE_IDENTIFICATION)
        && context.opcode == device_identification::INQUIRY
        && let Some(new_len) = synthesize_vpd(host, &mut srb, &context, transferred)
    {
        transferred = new_len;
        if transferred == context.data_length {
            status = SRB_STATUS_SUCCESS;
        }
    }
    if let Some(snooped) = Snooped::of(context.opcode, context.vpd_page) {
        snoop(host, &srb, &context, snooped, transferred);
    }
    (srb, transferred, status)
}

/// Copies the sense bytes the device wrote, those after the response header in `response`
/// (the response, up to the sense length the header said, if the request's view holds that
/// much), into the SRB's sense buffer and sets its sense length. The SRB back: `Err` if the
/// bytes are not all in the view. Out of line and passed by value, as [`answer_scan`].
#[cold]
#[inline(never)]
fn copy_device_sense(mut srb: Srb, response: Option<DmaMemory>) -> Result<Srb, Srb> {
    const HEADER: usize = RESPONSE_HEADER_LEN as usize;
    let mut bytes = [0u8; SENSE_SIZE];
    let read = response.and_then(|response| {
        let bytes = bytes.get_mut(..response.len().checked_sub(HEADER)?)?;
        response.read_bytes(HEADER, bytes).then_some(bytes)
    });
    let Some(bytes) = read else {
        return Err(srb);
    };
    let len = srb.copy_sense(bytes);
    srb.set_sense_length(len);
    Ok(srb)
}

/// Whether a command with `opcode` is one whose answer the completion may snoop or complete
/// (INQUIRY, READ CAPACITY (10), SERVICE ACTION IN (16), REPORT LUNS): one test on every
/// completion instead of the two lookups those need.
const fn is_scan_opcode(opcode: u8) -> bool {
    matches!(
        opcode,
        device_identification::INQUIRY
            | crate::luns::READ_CAPACITY_10
            | crate::luns::SERVICE_ACTION_IN_16
            | crate::luns::REPORT_LUNS
    )
}

/// The SRB status of a command that ended with `disposition`; `gone` when its unit was
/// reported removed by the device and the command is one that needs the unit.
pub(super) fn srb_status(disposition: Disposition, gone: bool) -> u8 {
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
pub(super) fn snoop<H: IoHost>(
    host: &H,
    srb: &Srb,
    context: &Completing,
    snooped: Snooped,
    transferred: u32,
) {
    let len = transferred.min(context.data_length) as usize;
    // INQUIRY, READ CAPACITY and REPORT LUNS are non-read/write commands, so StorPort mapped
    // their buffers (STOR_MAP_NON_READ_WRITE_BUFFERS); the device finished writing them.
    let Some(data) = srb.mapped_data(len) else {
        return;
    };
    let recorded = host
        .luns()
        .observe(context.target, context.lun, snooped, data);
    if snooped == Snooped::Answer(crate::luns::Answer::Inquiry)
        && matches!(
            recorded,
            Recorded::Inserted | Recorded::Updated | Recorded::KeptLonger | Recorded::Full
        )
        && let Ok(lun) = u8::try_from(context.lun)
    {
        // The unit answers INQUIRY as present again: it is back, event or not.
        host.gone().clear(context.target, lun);
    }
}

/// Adds a designator to an empty VPD 0x83 answer; returns the new transferred length.
pub(super) fn synthesize_vpd<H: IoHost>(
    host: &H,
    srb: &mut Srb,
    context: &Completing,
    transferred: u32,
) -> Option<u32> {
    let len = context.data_length as usize;
    // INQUIRY is a non-read/write command, so StorPort mapped its buffer; the device finished
    // writing it (the request was used).
    let page = srb.mapped_data_mut(len)?;
    let location = host.location(context.target, context.lun);
    device_identification::synthesize_designator(page, transferred as usize, location)
        .map(|n| n as u32)
}

/// Completes every request in flight on the guarded queue with SRB_STATUS_BUS_RESET after a
/// device reset, the one the drain held for it (`QueueState::held_for_reset`) last. The caller
/// has reset the device.
pub fn fail_in_flight<H: IoHost>(host: &H, guard: &mut QueueGuard<'_>) {
    loop {
        let Some(state) = guard.state() else {
            return;
        };
        let Some(token) = state.ring.queue().detach_next() else {
            if let Some(held) = state.held_for_reset.take() {
                fail_request(host, held, Disposition::BusReset);
            }
            return;
        };
        let slots: &mut [Option<InFlightRequest>] =
            core::borrow::BorrowMut::borrow_mut(&mut state.in_flight);
        let Some(in_flight) = slots.get_mut(token.index()).and_then(Option::take) else {
            continue;
        };
        fail_request(host, in_flight, Disposition::BusReset);
    }
}

/// Completes `in_flight` without a response, as `disposition`; a request of a unit the device
/// reported removed fails as that unit's do everywhere else (NO_DEVICE), not with a retryable
/// BUS_RESET whose retry would fail anyway.
fn fail_request<H: IoHost>(host: &H, in_flight: InFlightRequest, disposition: Disposition) {
    let layout = host.limits().request;
    let Some((mut srb, view)) = in_flight.into_parts(layout.segments) else {
        return;
    };
    let request = Request { view: &view };
    let Some(context) = request
        .context()
        .filter(|context| context.state == RequestState::InFlight as u8)
    else {
        srb.hand_over();
        return;
    };
    request.set_state(RequestState::Done);
    srb.set_data_transfer_length(0);
    let gone = host
        .gone()
        .contains(context.target, context.lun.get() as u8)
        && !crate::events::reaches_absent_unit(context.opcode);
    complete(host, srb, srb_status(disposition, gone));
}

/// Calls `visit` for every request in flight on the guarded queue.
pub fn scan_in_flight<H: IoHost>(
    host: &H,
    guard: &mut QueueGuard<'_>,
    mut visit: impl FnMut(&InFlight),
) {
    let queue = guard.queue();
    let layout = host.limits().request;
    let Some(state) = guard.state() else {
        return;
    };
    let slots: &[Option<InFlightRequest>] = core::borrow::Borrow::borrow(&state.in_flight);
    for in_flight in slots.iter().flatten() {
        let Some(view) = in_flight.view(layout.segments) else {
            continue;
        };
        let Some(context) = (Request { view: &view }).context() else {
            continue;
        };
        if context.state != RequestState::InFlight as u8 {
            continue;
        }
        visit(&InFlight {
            queue,
            target: context.target,
            lun: context.lun.get(),
            tag: in_flight.start() as u64,
            srb: in_flight.srb_address(),
            sequence: context.sequence.get(),
        });
    }
}

/// Completes an SRB task management kept (its [`crate::recovery::tmf`] slot held it) with
/// `status`.
pub fn complete_kept<H: IoHost>(host: &H, srb: KeptSrb, status: u8) {
    complete(host, srb.into_srb(), status);
}
