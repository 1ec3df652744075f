//! The controlq side of task management: posting a function, draining the device's answers,
//! and the timer's service of deadlines and escalation.

use core::sync::atomic::Ordering;

use virtio_core::scsi::queue_index;

use crate::recovery::host::RecoveryHost;
use crate::recovery::tmf::{Active, Answer, Decision, Ending, Nexus, Owner};
use crate::ring_view::RingView;
use crate::sizing::MAX_REQUEST_QUEUES;
use crate::storport::{SRB_STATUS_ERROR, SRB_STATUS_SUCCESS};
use crate::trace::{ResetCause, TraceEvent, ViolationKind};

/// Pops the controlq's used chains (`ring`, whose lock the caller holds) and records each
/// function's answer in its slot. A used chain that names no function in flight is a protocol
/// violation: the timer resets the device. With `kick`, the timer is asked to run now to act
/// on the answers.
pub fn drain_control<H: RecoveryHost>(host: &H, ring: Option<RingView<'_>>, kick: bool) {
    let mut answered = false;
    let mut broken = false;
    if let Some(ring) = ring {
        loop {
            match ring.queue.pop_used() {
                Ok(Some(used)) => {
                    let slot = ring
                        .tokens
                        .get_mut(used.token.index())
                        .map_or(0, core::mem::take);
                    if slot == 0 || !host.tmfs().answer(slot - 1, used.written) {
                        host.tracer().trace(
                            TraceEvent::ProtocolViolation,
                            queue_index::CONTROL,
                            (
                                ViolationKind::UnknownUsedId as u32,
                                used.token.index() as u64,
                                0,
                            ),
                        );
                        broken = true;
                        break;
                    }
                    answered = true;
                }
                Ok(None) => {
                    if !ring.queue.enable_interrupts() {
                        break;
                    }
                }
                Err(_) => {
                    host.tracer().trace(
                        TraceEvent::ProtocolViolation,
                        queue_index::CONTROL,
                        (ViolationKind::RingError as u32, 0, 0),
                    );
                    broken = true;
                    break;
                }
            }
        }
    }
    if broken {
        // `reset_later` but for the kick, which follows below.
        host.note_reset_request(ResetCause::ProtocolViolation);
    }
    if kick && (answered || broken) {
        host.kick_timer();
    }
}

/// Sends task management function `nexus` on the controlq; `owner` is the SRB it completes.
///
/// # Errors
/// [`PostError`], with the owner handed back: the adapter is stopped, or the function
/// could not be sent (no free slot, controlq full).
pub fn post_tmf<H: RecoveryHost>(
    host: &H,
    nexus: Nexus,
    mut owner: Option<Owner>,
) -> Result<(), PostError> {
    let queues = host.request_queues();
    let mut counts = [0u64; MAX_REQUEST_QUEUES as usize];
    for (queue, count) in counts.iter_mut().enumerate().take(usize::from(queues)) {
        // Read under the queue's lock, under which StartIo numbers each request, so every
        // request already on that ring is below the count and every later one is not.
        *count = host.submitted(queue as u16);
    }
    let now = host.extension().system_time();
    let Some((claim, readable, writable)) =
        host.tmfs().claim(nexus, &mut owner, now, queues, |q| {
            counts.get(usize::from(q)).copied().unwrap_or(0)
        })
    else {
        return Err(PostError::NotSent(owner));
    };
    let notify = host.with_control_ring(|ring| {
        if host.is_stopped() {
            return Err(PostError::Stopped(host.tmfs().release(claim)));
        }
        let Some(ring) = ring else {
            return Err(PostError::NotSent(host.tmfs().release(claim)));
        };
        let Ok(token) = ring.queue.add(&[readable], &[writable], None) else {
            return Err(PostError::NotSent(host.tmfs().release(claim)));
        };
        if let Some(entry) = ring.tokens.get_mut(token.index()) {
            *entry = claim.index() + 1;
        }
        // Posted before the lock drops: the answer is recorded under this lock and needs the
        // slot posted.
        host.tmfs().posted(claim);
        host.tmfs().counters.count_sent(nexus);
        host.tracer().trace(
            TraceEvent::TmfSent,
            queue_index::CONTROL,
            nexus.trace_args(),
        );
        let kick = ring.queue.kick_prepare();
        Ok(kick.then_some(ring.notify_offset))
    })?;
    if let Some(offset) = notify {
        host.notify_virtqueue(queue_index::CONTROL, offset);
    }
    // The timer watches the deadline, at the short period from now on.
    host.kick_timer();
    Ok(())
}

/// The timer's work on task management functions at time `now`: records answers whose
/// interrupt was lost, then ends, keeps waiting for, or escalates each function (see
/// [`crate::recovery::tmf::decide`]).
pub fn service_tmfs<H: RecoveryHost>(host: &H, now: u64) {
    if !host.tmfs().any_active() {
        return;
    }
    host.with_control_ring(|ring| drain_control(host, ring, false));
    let mut drained = false;
    let mut escalate = false;
    host.tmfs().for_each_active(|active| {
        if escalate {
            return;
        }
        let covered = if matches!(active.answer, Answer::Outcome(_)) {
            if !drained {
                // The device completed what it took back before it answered: collect
                // those completions before counting what is left.
                escalate |= host.poll_all();
                drained = true;
            }
            covered_in_flight(host, &active)
        } else {
            0
        };
        let elapsed = now.saturating_sub(active.posted_at);
        match crate::recovery::tmf::decide(active.answer, covered, elapsed) {
            Decision::Wait => {
                if covered > 0 {
                    host.tmfs().mark_waiting(&active);
                }
            }
            Decision::Complete(ending) => {
                if let Some(ended) = host.tmfs().finish(&active) {
                    let counters = &host.tmfs().counters;
                    let counter = match ending {
                        Ending::Done => &counters.completed,
                        Ending::AbsentNexus => &counters.absent_nexus,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if active.was_waiting() {
                        counters.waited.fetch_add(1, Ordering::Relaxed);
                    }
                    host.tracer().trace(
                        TraceEvent::TmfDone,
                        queue_index::CONTROL,
                        active.trace_args(),
                    );
                    if let Some(owner) = ended.owner {
                        host.complete_owner(owner, SRB_STATUS_SUCCESS);
                    }
                }
            }
            Decision::Escalate(why) => {
                host.tmfs().counters.count_escalation(why);
                escalate = true;
            }
        }
    });
    if escalate {
        // The reset ends every function, this one included (its TmfDone is recorded then,
        // after the reset's own record).
        host.reset_device(ResetCause::TmfEscalation);
    }
}

/// Requests in flight that `active` covers.
pub fn covered_in_flight<H: RecoveryHost>(host: &H, active: &Active) -> u32 {
    let mut covered = 0u32;
    host.for_each_in_flight(|request| {
        if host.tmfs().covers(active, request) {
            covered += 1;
        }
    });
    covered
}

/// Ends every task management function after a device reset (every queue lock held): their
/// SRBs complete with SUCCESS if the device came back, SRB_STATUS_ERROR if not.
pub fn end_every_tmf<H: RecoveryHost>(host: &H, restarted: bool) {
    let status = if restarted {
        SRB_STATUS_SUCCESS
    } else {
        SRB_STATUS_ERROR
    };
    host.tmfs().resolve_all(|active, owner| {
        host.tracer().trace(
            TraceEvent::TmfDone,
            queue_index::CONTROL,
            active.trace_args(),
        );
        if let Some(owner) = owner {
            host.complete_owner(owner, status);
        }
    });
}

/// Why a task management function was not sent; the owner comes back to be completed.
#[derive(Debug, PartialEq, Eq)]
pub enum PostError {
    /// The adapter is stopped: nothing is in flight, nothing to do.
    Stopped(Option<Owner>),
    /// No free slot, or the controlq is full.
    NotSent(Option<Owner>),
}

impl core::fmt::Display for PostError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Stopped(_) => f.write_str("task management not sent: the adapter is stopped"),
            Self::NotSent(_) => {
                f.write_str("task management not sent: no free slot or the controlq is full")
            }
        }
    }
}
