//! HwStartIo: a built request put on its queue's ring under the queue lock, with room kept for
//! large requests, and the device notified after unlocking.
#![forbid(unsafe_code)]

use core::sync::atomic::Ordering;

use virtio_core::dma::DmaTable;
use virtio_core::queue::{IndirectChain, QueueError, Virtqueue};

use super::{IoHost, Request, complete};
use crate::queue_state::{QueueState, Reservation, Ring};
use crate::srb_extension::{CONTEXT_AT, CONTEXT_LEN, INDIRECT_AT, RequestContext, RequestState};
use crate::storport::request::{InFlightRequest, PendingRequest};
use crate::storport::srb::Srb;
use crate::storport::{
    SRB_STATUS_BUSY, SRB_STATUS_ERROR, SRB_STATUS_INVALID_REQUEST, SRB_STATUS_NO_DEVICE,
};

/// HwStartIo for a prepared request: puts it on its queue's ring and notifies the device.
pub fn start_io<H: IoHost>(host: &H, srb: Srb) {
    let layout = host.limits().request;
    let Some(shape) = layout.area else {
        complete(host, srb, SRB_STATUS_ERROR);
        return;
    };
    let pending = match PendingRequest::of(srb, shape) {
        Ok(pending) => pending,
        Err(srb) => {
            complete(host, srb, SRB_STATUS_ERROR);
            return;
        }
    };
    let request = Request {
        view: pending.view(),
    };
    // The context, checked once; before the lock only the queue number is read from it.
    let Some(fields) = request.view.fields::<CONTEXT_LEN>(CONTEXT_AT) else {
        complete(host, pending.into_srb(), SRB_STATUS_ERROR);
        return;
    };
    let queue = fields
        .load_u16(0, RequestContext::QUEUE_OFFSET, Ordering::Relaxed)
        .min(host.request_queues().saturating_sub(1));
    let (outcome, notify) = {
        let mut guard = host.lock(queue);
        if let Some(status) = refusal(host, &fields) {
            drop(guard);
            complete(host, pending.into_srb(), status);
            return;
        }
        let Some(state) = guard.state() else {
            drop(guard);
            complete(host, pending.into_srb(), SRB_STATUS_ERROR);
            return;
        };
        // The rest of the context read under the lock, once the request may go: nothing but
        // the context's address need survive the lock call.
        let context = Recorded::load(fields);
        match put_on_queue(host, queue, state, &pending, &context) {
            Ok((token, kick)) => {
                let slots: &mut [Option<InFlightRequest>] =
                    core::borrow::BorrowMut::borrow_mut(&mut state.in_flight);
                if let Some(slot) = slots.get_mut(token.index()) {
                    // The SRB now belongs to the ring; it is completed from the used ring or a
                    // reset, through the token the in-flight table keeps.
                    *slot = Some(pending.into_in_flight());
                    // Read only when the device is to be notified, not kept across the add.
                    let notify = if kick {
                        Some(state.notify_offset)
                    } else {
                        None
                    };
                    (Ok(()), notify)
                } else {
                    // The table has a slot per token, so this does not happen; were it so, the
                    // SRB completes with an error and the request's used element, finding no
                    // SRB, resets the device.
                    (Err((false, pending.into_srb())), None)
                }
            }
            Err(NotAdded::Malformed) => {
                drop(guard);
                complete(host, pending.into_srb(), SRB_STATUS_ERROR);
                return;
            }
            Err(NotAdded::Ring(error)) => (
                Err((matches!(error, QueueError::Full { .. }), pending.into_srb())),
                None,
            ),
        }
    };
    match outcome {
        Ok(()) => {
            if let Some(offset) = notify {
                host.notify(queue, offset);
            }
        }
        Err((true, srb)) => {
            if let Some(counters) = host.counters(queue) {
                counters.queue_full.fetch_add(1, Ordering::Relaxed);
            }
            // The ring is full (or its room is kept for a larger request): StorPort sends the
            // request again, and holds the others back until one request completes, so the
            // submitters do not spin on a full ring. ScsiStatus stays 0: QUEUE_FULL would tell
            // StorPort the unit's task set is full and make it lower the unit's queue depth,
            // while what is full is one of our rings (vioscsi sets it; we deliberately do not).
            host.extension().busy(1);
            complete(host, srb, SRB_STATUS_BUSY);
        }
        Err((false, srb)) => complete(host, srb, SRB_STATUS_INVALID_REQUEST),
    }
}

/// Puts the request `pending` (whose context is `context`) on the ring of `state`, request
/// queue `queue`'s state, under its lock ([`put_on_ring`]).
#[expect(
    clippy::inline_always,
    reason = "StartIo's only caller; out of line the request's fields go to memory for the call (cargo xtask bench)"
)]
#[inline(always)]
fn put_on_queue<H: IoHost>(
    host: &H,
    queue: u16,
    state: &mut QueueState,
    pending: &PendingRequest,
    context: &Recorded,
) -> Result<(virtio_core::queue::Token, bool), NotAdded> {
    // The layout and the chain's kind decided once: each arm calls its own ring directly, with
    // no dispatch per ring call, and knows its chain's kind throughout.
    let reservation = &mut state.reservation;
    let table = context.table_posted != 0;
    match (&mut state.ring, table) {
        (Ring::Split(ring), true) => {
            put_on_ring(host, queue, ring, reservation, pending, context, true)
        }
        (Ring::Split(ring), false) => {
            put_on_ring(host, queue, ring, reservation, pending, context, false)
        }
        (Ring::Packed(ring), true) => {
            put_on_ring(host, queue, ring, reservation, pending, context, true)
        }
        (Ring::Packed(ring), false) => {
            put_on_ring(host, queue, ring, reservation, pending, context, false)
        }
    }
}

/// Why a request did not go on its ring.
enum NotAdded {
    /// The context's record of the request's segments cannot be BuildIo's.
    Malformed,
    /// The ring refused it (full, or its room kept for a larger request, among others).
    Ring(QueueError),
}

/// Puts the request `pending` (whose context is `context`) on `ring` under its queue's lock
/// (`reservation` is the queue's): the indirect table BuildIo wrote if `table`, else the
/// scratch list it filled; its token recorded in the context, the submission counted. The
/// token, and whether the device must be notified.
///
/// The ring's room is checked before the chain is read from the context, so that the chain's
/// fields are not kept across the rare reservation path's call for the time.
#[expect(
    clippy::inline_always,
    reason = "one copy per ring layout and chain kind in StartIo, the only caller; out of line it costs a call and the request's fields passed in memory (cargo xtask bench)"
)]
#[inline(always)]
fn put_on_ring<H: IoHost>(
    host: &H,
    queue: u16,
    ring: &mut impl Virtqueue,
    reservation: &mut Reservation,
    pending: &PendingRequest,
    context: &Recorded,
    table: bool,
) -> Result<(virtio_core::queue::Token, bool), NotAdded> {
    let readable = usize::from(context.readable);
    let segments = readable + usize::from(context.writable);
    let added = if table {
        // One descriptor: the indirect table.
        admit(host, ring, reservation, 1)?;
        // BuildIo wrote the indirect table; its bus address is the request's plus its offset
        // (`prepare` checked the span is contiguous).
        let chain = IndirectChain::from_parts(
            super::build::ring_format(host.features()),
            context.bus.wrapping_add(INDIRECT_AT as u64),
            u16::try_from(segments).map_err(|_| NotAdded::Malformed)?,
            context.table_writable,
            context.table_posted,
        )
        .ok_or(NotAdded::Malformed)?;
        settle(host, reservation, 1, ring.add_table(&chain))
    } else {
        // BuildIo wrote `readable + writable` segments to the scratch list, untouched since.
        let list = pending.segments(segments).ok_or(NotAdded::Malformed)?;
        // At most the scratch list's capacity, a few hundred.
        let needed = list.len() as u16;
        admit(host, ring, reservation, needed)?;
        let (readable, writable) = list.split_at(readable.min(list.len()));
        settle(
            host,
            reservation,
            needed,
            ring.add(readable, writable, None),
        )
    };
    let token = added.map_err(NotAdded::Ring)?;
    // Counted, and numbered, before the lock drops: once it does, the request may complete
    // (and be observed) before this processor runs another instruction.
    let sequence = host.counters(queue).map_or(0, |counters| {
        counters.requests.fetch_add(1, Ordering::Relaxed)
    });
    context.set_in_flight(token.0, sequence);
    Ok((token, ring.kick_prepare()))
}

/// Why StartIo, under the queue lock, must not put a built request (whose context is `fields`)
/// on the ring, as the SRB status to complete it with; `None` when it may go.
fn refusal<H: IoHost>(host: &H, fields: &DmaTable<CONTEXT_LEN, 8>) -> Option<u8> {
    if host.is_stopped() {
        // Stopped (ScsiStopAdapter until ScsiRestartAdapter): the device is reset and must not
        // see the request. BUSY is retryable: StorPort resubmits it later. Checked under the
        // queue lock, which the stop holds while it sets the flag, so no request reaches a ring
        // after the stop took everything back.
        host.recovery()
            .busy_while_stopped
            .fetch_add(1, Ordering::Relaxed);
        Some(SRB_STATUS_BUSY)
    } else if host.gone().contains_unit(|| {
        (
            fields.load_u8(0, RequestContext::TARGET_OFFSET),
            fields.load_u16(0, RequestContext::LUN_OFFSET, Ordering::Relaxed) as u8,
        )
    }) && !crate::events::reaches_absent_unit(
        fields.load_u8(0, RequestContext::OPCODE_OFFSET),
    ) {
        // Marked removed since BuildIo accepted it (a REMOVED event, or StorPort removing the
        // unit: `crate::recovery::unit_control`). Read under the queue lock, under which a
        // removal's scan of what is in flight looks at this ring too: a request is either on
        // the ring for that scan (and taken back by its LUN reset) or refused here, never lost
        // between.
        Some(SRB_STATUS_NO_DEVICE)
    } else {
        None
    }
}

// `Recorded::load` loads `readable` and `writable` as one word.
const _: () = assert!(RequestContext::WRITABLE_OFFSET == RequestContext::READABLE_OFFSET + 2);

/// The fields of the context BuildIo wrote ([`RequestContext`]) that StartIo needs to put the
/// request on its ring.
struct Recorded {
    /// The context, checked once.
    fields: DmaTable<CONTEXT_LEN, 8>,
    readable: u16,
    writable: u16,
    table_writable: u32,
    table_posted: u32,
    bus: u64,
}

impl Recorded {
    /// Loads them from the context `fields` (checked once, when taken from the view), each
    /// at its own size.
    #[expect(
        clippy::inline_always,
        reason = "on every I/O; left out of line it costs instructions per I/O (cargo xtask bench)"
    )]
    #[inline(always)]
    fn load(fields: DmaTable<CONTEXT_LEN, 8>) -> Self {
        let relaxed = Ordering::Relaxed;
        // `readable` and `writable`, adjacent (BuildIo stores them as one word too), loaded
        // as one little-endian word.
        let counts = fields.load_u32(0, RequestContext::READABLE_OFFSET, relaxed);
        Self {
            fields,
            readable: counts as u16,
            writable: (counts >> 16) as u16,
            table_writable: fields.load_u32(0, RequestContext::TABLE_WRITABLE_OFFSET, relaxed),
            table_posted: fields.load_u32(0, RequestContext::TABLE_POSTED_OFFSET, relaxed),
            bus: fields.load_u64(0, RequestContext::BUS_OFFSET, relaxed),
        }
    }

    /// Records the request on the ring: its token and state, which the completion checks, and
    /// the queue's submission count, which task management compares; each one store into the
    /// context checked once at `load`.
    #[inline]
    fn set_in_flight(&self, token: u16, sequence: u64) {
        let relaxed = Ordering::Relaxed;
        let fields = &self.fields;
        fields.store_u16(0, RequestContext::TOKEN_OFFSET, token, relaxed);
        fields.store_u64(0, RequestContext::SEQUENCE_OFFSET, sequence, relaxed);
        fields.store_u8(
            0,
            RequestContext::STATE_OFFSET,
            RequestState::InFlight as u8,
        );
    }
}

/// Whether a request taking `needed` descriptors may try `ring`, honouring the ring's
/// reservation ([`crate::queue_state::room`]): a request smaller than one that found no room is
/// refused (as if the ring were full) unless the reserved room stays free. The dump stack never
/// holds more than one request and must not ask for the system time, so it keeps no
/// reservations ([`settle`] makes none there): without one, this asks for nothing.
#[expect(
    clippy::inline_always,
    reason = "on every I/O; left out of line it costs instructions per I/O (cargo xtask bench)"
)]
#[inline(always)]
fn admit<H: IoHost>(
    host: &H,
    ring: &impl Virtqueue,
    reservation: &mut Reservation,
    needed: u16,
) -> Result<(), NotAdded> {
    let free = ring.free_descriptors();
    // Without a reservation `admits` answers at its first test, without asking the time; the
    // dump stack has none (`settle` makes none there), so it is asked nothing either.
    if !reservation.admits(needed, free, || host.extension().system_time()) {
        return Err(NotAdded::Ring(QueueError::Full { needed, free }));
    }
    Ok(())
}

/// The reservation after the ring's answer `added` to a request taking `needed` descriptors:
/// the room kept for it used if it went on, kept for it if it found none.
#[expect(
    clippy::inline_always,
    reason = "on every I/O; left out of line it costs instructions per I/O (cargo xtask bench)"
)]
#[inline(always)]
fn settle<H: IoHost>(
    host: &H,
    reservation: &mut Reservation,
    needed: u16,
    added: Result<virtio_core::queue::Token, QueueError>,
) -> Result<virtio_core::queue::Token, QueueError> {
    match added {
        // Stores nothing without a reservation, so nothing on the dump stack either.
        Ok(_) => reservation.admitted(needed),
        Err(QueueError::Full { .. }) if host.keeps_reservations() => {
            reservation.refused(needed, host.extension().system_time());
        }
        Err(_) => {}
    }
    added
}
