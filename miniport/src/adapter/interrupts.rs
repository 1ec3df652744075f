//! Interrupt routing: which queue a request goes to, device notifications, and the ISR and DPC
//! paths from an MSI-X message (or the line interrupt) to the queue it serves.
#![forbid(unsafe_code)]

use core::sync::atomic::{Ordering, fence};

use virtio_core::hal::RegisterIo;
use virtio_core::pci::Isr;
use virtio_core::scsi::queue_index;

use super::{Adapter, InterruptMode};
use crate::storport::queue_locks::HeldByStorPort;
use crate::trace::ResetCause;

impl Adapter {
    /// The request queue `srb`, submitted on the current processor, goes to: with message
    /// ranges, the queue of the message StorPort names for this processor (so that it
    /// completes here); otherwise the processor number modulo the queues.
    ///
    /// Inline on every I/O, with StorPort's message query out of line: the SRB view then goes
    /// to memory (the query takes it by reference) only when there are message ranges.
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "on every I/O; left out of line the SRB view goes to memory for the call (cargo xtask bench)"
    )]
    #[inline(always)]
    pub fn queue_for_request(&self, srb: &crate::storport::srb::Srb) -> u16 {
        let queues = self.request_queues().max(1);
        // One queue (always so in dump mode): no need to ask StorPort where we run.
        if queues == 1 {
            return 0;
        }
        if self.message_ranges.load(Ordering::Relaxed)
            && let Some(queue) = self.queue_of_start_io_message(srb, queues)
        {
            return queue;
        }
        queue_of_processor(self.extension.current_processor(), queues)
    }

    /// The request queue of the message StorPort says a request submitted here interrupts on,
    /// if it says and the message is one of a request queue in use. Inline, its answer tested
    /// where it is made: the query itself (`DeviceExtension::start_io_message`) stays out of
    /// line, and the SRB view goes to memory for it only on this branch (with one queue there
    /// is none).
    #[inline]
    fn queue_of_start_io_message(
        &self,
        srb: &crate::storport::srb::Srb,
        queues: u16,
    ) -> Option<u16> {
        self.extension
            .start_io_message(srb)
            .and_then(|message| queue_of_message(message, queues))
    }

    /// Notifies the device of new requests on request queue `queue` (after unlocking).
    pub fn notify(&self, queue: u16, offset: u64) {
        // Counted before the write: the device may complete the request inside it.
        if let Some(counters) = self.counters(queue) {
            counters.kicks.fetch_add(1, Ordering::Relaxed);
        }
        self.notify_virtqueue(queue + queue_index::REQUEST_BASE, offset);
    }

    /// Notifies the device of new buffers on virtqueue `index`, whose notification address is
    /// at `offset` in the notify BAR (after unlocking, or from the ISR that owns the queue).
    pub fn notify_virtqueue(&self, index: u16, offset: u64) {
        // ORDERING: the ring updates (descriptors, then the available index published with
        // release by the queue) must be visible before the device reacts to the notification
        // (virtio 1.x section 2.7.13 step 4 / 2.8.21). Pairs with the device's read of the
        // available index after the notification; the register routine orders the MMIO store.
        fence(Ordering::SeqCst);
        self.registers.write16(self.notify_bar, offset, index);
    }

    /// Handles MSI message `message`; true if it was ours.
    pub fn on_message(&self, message: u32, held: &mut HeldByStorPort) -> bool {
        // The per-queue test first, on the stored byte: decoding the mode costs about 9
        // instructions on every interrupt (cargo xtask bench).
        if self.is_per_queue_mode() {
            return match MessageRoute::of(message, self.request_queues()) {
                MessageRoute::Config => {
                    self.on_config_interrupt(held);
                    true
                }
                MessageRoute::Event => {
                    self.on_event_interrupt(held);
                    true
                }
                MessageRoute::Control => {
                    self.on_control_interrupt(held);
                    true
                }
                MessageRoute::Request(queue) => {
                    self.on_queue_interrupt(queue, held);
                    true
                }
                MessageRoute::NotOurs => false,
            };
        }
        match self.mode() {
            // Answered above; the arm stays for the match to be exhaustive.
            InterruptMode::PerQueue => false,
            InterruptMode::Shared => {
                // One message for everything: the configuration is checked on each (its
                // interrupt carries no ISR bit a driver may rely on with MSI-X, virtio 1.x
                // section 4.1.5.3).
                self.on_config_interrupt(held);
                self.on_every_queue(held);
                true
            }
            InterruptMode::Line => self.on_line_interrupt(held),
        }
    }

    /// HwInterrupt (line-based): reads and clears the ISR status; true if the device
    /// interrupted. In dump mode, the dump port's poll.
    pub fn on_line_interrupt(&self, held: &mut HeldByStorPort) -> bool {
        if self.dump.is_some() {
            // The dump port's poll, not an interrupt.
            return self.poll(held);
        }
        // In line mode the ISR holds the interrupt lock, which the reset path also takes, so
        // the transport is not being mutated.
        let isr = self.queues.shared_under(held).read_isr();
        if isr.is_empty() {
            return false;
        }
        if isr.contains(Isr::CONFIG) {
            self.on_config_interrupt(held);
        }
        self.on_every_queue(held);
        true
    }

    /// The ISR of the one message (or line) every queue shares: the eventq, the controlq, then
    /// each request queue.
    pub(crate) fn on_every_queue(&self, held: &mut HeldByStorPort) {
        self.on_event_interrupt(held);
        self.on_control_interrupt(held);
        for queue in 0..self.request_queues() {
            self.on_queue_interrupt(queue, held);
        }
    }

    /// The configuration-change interrupt, in the ISR that owns it (message 0, the shared
    /// message, or the line ISR): re-reads the configuration ([`EventQueue::on_config_change`]).
    /// A device that set `DEVICE_NEEDS_RESET` (or changed the request layout) is reset by the
    /// timer, an ISR not being able to take every queue lock; the timer's health check reads
    /// `DEVICE_NEEDS_RESET` as well, so one missed configuration interrupt delays the reset by
    /// at most [`HEALTH_PERIOD_MICROSECONDS`].
    pub(crate) fn on_config_interrupt(&self, held: &HeldByStorPort) {
        // The ISR for message 0 (or the shared/line ISR) holds a lock the reset path takes too
        // (`lock_all`), so the transport is not being mutated; it is only read here.
        let transport = self.queues.shared_under(held);
        if self
            .events
            .on_config_change(&self.event_context(), transport)
        {
            self.reset_later(ResetCause::DeviceNeedsReset);
        }
    }

    /// The eventq's interrupt, in the ISR that owns it (message 2, the shared message, or the
    /// line ISR): see [`EventQueue::drain`].
    pub(crate) fn on_event_interrupt(&self, held: &mut HeldByStorPort) {
        // We run in the ISR whose lock guards the eventq (see the callers).
        let Some(mut guard) = self.virtqueue_under(held, queue_index::EVENT) else {
            return;
        };
        let Some(state) = guard.state() else {
            return;
        };
        if self.events.drain(&self.event_context(), state.ring_view()) {
            self.reset_later(ResetCause::ProtocolViolation);
        }
    }

    /// The controlq's interrupt, in the ISR that owns it (message 1, the shared message, or
    /// the line ISR): records the answers of task management functions.
    pub(crate) fn on_control_interrupt(&self, held: &mut HeldByStorPort) {
        // We run in the ISR whose lock guards the controlq (see the callers).
        let Some(mut guard) = self.virtqueue_under(held, queue_index::CONTROL) else {
            return;
        };
        crate::recovery::tmf::drain_control(
            self,
            guard.state().map(crate::queue_state::QueueState::ring_view),
            true,
        );
    }

    /// A request queue's interrupt, in the ISR that owns it: hands the drain to the queue's
    /// DPC once there are DPCs, drains the queue here otherwise.
    #[expect(
        clippy::inline_always,
        reason = "on every interrupt at low queue depth, from on_message; out of line it costs a call and the lock proof stored for it (cargo xtask bench)"
    )]
    #[inline(always)]
    pub(crate) fn on_queue_interrupt(&self, queue: u16, held: &mut HeldByStorPort) {
        if let Some(counters) = self.counters(queue) {
            counters.interrupts.fetch_add(1, Ordering::Relaxed);
        }
        // ORDERING: pairs with the release store in `passive_initialize`.
        if self.dpc_ready.load(Ordering::Acquire)
            && let Some(dpc) = self.dpc(queue)
        {
            let _already_queued = !self.extension.issue_dpc(dpc, usize::from(queue));
        } else {
            // We are in the ISR for this queue's message, whose lock StorPort holds.
            let Some(mut guard) = self.queue_under(held, queue) else {
                return;
            };
            let reset = crate::io::drain(self, &mut guard);
            // Inlined, the release of a lock StorPort holds is nothing at all.
            guard.unlock();
            if reset {
                // The device broke the protocol. The reset takes every queue lock, which an ISR
                // holding one of them cannot do: StorPort's timer runs it right after, with no
                // queue lock held.
                self.reset_later(ResetCause::ProtocolViolation);
            }
        }
    }

    /// The queue DPC: drains request queue `queue` under its lock.
    pub fn on_dpc(&self, queue: u16) {
        if queue >= self.request_queues() {
            return;
        }
        let reset = {
            let mut guard = self.lock(queue);
            let reset = crate::io::drain(self, &mut guard);
            guard.unlock();
            reset
        };
        if reset {
            self.reset_device(ResetCause::ProtocolViolation);
        }
    }
}

/// What MSI-X message `message` interrupts for in per-queue mode, with `request_queues`
/// request queues in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageRoute {
    /// Message 0: a configuration change.
    Config,
    /// The eventq's message.
    Event,
    /// The controlq's message.
    Control,
    /// The message of this request queue.
    Request(u16),
    /// No virtqueue in use has this message.
    NotOurs,
}

impl MessageRoute {
    /// The route of `message` (virtqueue `index` has message `index + 1`).
    #[must_use]
    #[inline]
    pub fn of(message: u32, request_queues: u16) -> Self {
        // The request queues' messages first: they are nearly every interrupt, and one
        // subtraction and one compare find them.
        // Wrapping: a message before the first request queue's wraps past every queue count.
        let queue = message.wrapping_sub(u32::from(queue_index::REQUEST_BASE) + 1);
        if queue < u32::from(request_queues) {
            return Self::Request(queue as u16);
        }
        let Some(index) = message.checked_sub(1) else {
            return Self::Config;
        };
        let Ok(index) = u16::try_from(index) else {
            return Self::NotOurs;
        };
        if index == queue_index::EVENT {
            return Self::Event;
        }
        if index == queue_index::CONTROL {
            return Self::Control;
        }
        match index.checked_sub(queue_index::REQUEST_BASE) {
            Some(queue) if queue < request_queues => Self::Request(queue),
            _ => Self::NotOurs,
        }
    }
}

/// The request queue whose message is `message`, if it is one of the `queues` in use: with
/// message ranges, where a request StorPort says will interrupt on `message` goes.
#[must_use]
pub fn queue_of_message(message: u32, queues: u16) -> Option<u16> {
    let first = u32::from(Adapter::vector_of_queue(queue_index::REQUEST_BASE));
    // Wrapping: a message before the first request queue's wraps past every queue count.
    let queue = message.wrapping_sub(first);
    (queue < u32::from(queues)).then_some(queue as u16)
}

/// The request queue of a request submitted on `processor` without message ranges: its own
/// number below the `queues` in use (at least 1), else that number folded by a mask onto the
/// largest power-of-two count of queues: a spread with no division on the I/O path.
#[must_use]
pub const fn queue_of_processor(processor: u32, queues: u16) -> u16 {
    let queues = queues as u32;
    if processor < queues {
        return processor as u16;
    }
    // `| 1`: no queue recorded yet counts as one (and ilog2 needs a non-zero value).
    let span = 1u32 << (queues | 1).ilog2();
    (processor & (span - 1)) as u16
}
