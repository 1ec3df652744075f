//! Device resets and lifecycle: resets asked for from interrupt context, the health timer
//! (lost interrupts, deadlines), the reset itself, ScsiStopAdapter and ScsiRestartAdapter.

use core::sync::atomic::{AtomicU64, Ordering, fence};

use virtio_core::hal::RegisterIo;
use virtio_core::pci::DeviceStatus;
use virtio_core::scsi::queue_index;

use super::locks::AllQueuesLocked;
use super::{Adapter, AdapterError, HEALTH_PERIOD, RecoveryCounters};
use crate::events::GoneUnits;
use crate::in_flight::InFlight;
use crate::luns::{LunSlot, LunTable};
use crate::queue_state::QueueState;
use crate::recovery::host::RecoveryHost;
use crate::recovery::tmf::{Owner, TmfSlot, TmfTable};
use crate::ring_view::RingView;
use crate::sizing::{HEALTH_PERIOD_MICROSECONDS, KICK_MICROSECONDS, TMF_POLL_MICROSECONDS};
use crate::storport::dma::Carved;
use crate::storport::port::DeviceExtension;
use crate::storport::queue_locks::HeldByStorPort;
use crate::storport::srb::Srb;
use crate::trace::{ADAPTER_WIDE, ResetCause, TraceEvent, Tracer};

impl Adapter {
    /// Asks the timer to reset the device for `cause`, right after this ISR (or this context,
    /// which holds a queue lock): the reset takes every lock. If a reset is already pending,
    /// its first cause is kept. Never in dump mode, where the poll resets inline.
    pub(crate) fn reset_later(&self, cause: ResetCause) {
        self.note_reset_request(cause);
        self.kick_timer();
    }

    /// Leaves `cause` for the timer unless a reset is already asked for, without kicking the
    /// timer (for a caller that kicks it anyway).
    pub(crate) fn note_reset_request(&self, cause: ResetCause) {
        // ORDERING: relaxed; the timer request in `kick_timer` is StorPort's, which orders it
        // before the timer routine on any processor (a lock hand-over inside StorPort).
        let _ = self.reset_requested.compare_exchange(
            0,
            cause as u32,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Takes the reset cause [`Self::reset_later`] left for the timer, if any.
    pub(crate) fn take_reset_request(&self) -> Option<ResetCause> {
        // ORDERING: relaxed; see `reset_later`.
        match self.reset_requested.swap(0, Ordering::Relaxed) {
            0 => None,
            raw if raw == ResetCause::DeviceNeedsReset as u32 => Some(ResetCause::DeviceNeedsReset),
            _ => Some(ResetCause::ProtocolViolation),
        }
    }

    /// Whether `device_status` has `DEVICE_NEEDS_RESET`. A device that reads all ones is gone
    /// (surprise removal), not asking for a reset.
    pub(crate) fn device_needs_reset(&self) -> bool {
        let (bar, offset) = self.status_register;
        let status = self.registers.read8(bar, offset);
        status != 0xFF
            && DeviceStatus::from_bits_retain(status).contains(DeviceStatus::DEVICE_NEEDS_RESET)
    }

    /// Drains every request queue, each under its lock (completions whose interrupt has not
    /// come, or never will). Returns true if the device broke the protocol.
    pub fn poll_all(&self) -> bool {
        let mut reset = false;
        for queue in 0..self.request_queues() {
            let mut guard = self.lock(queue);
            reset |= crate::io::drain(self, &mut guard);
        }
        reset
    }

    /// Calls `visit` for every request in flight, queue by queue, each under its lock.
    pub fn for_each_in_flight(&self, mut visit: impl FnMut(&InFlight)) {
        for queue in 0..self.request_queues() {
            let mut guard = self.lock(queue);
            crate::io::scan_in_flight(self, &mut guard, &mut visit);
        }
    }

    /// HwTimer: every deferred piece of work (see the module documentation), then the next
    /// timer request. Runs at DISPATCH_LEVEL with no queue lock held.
    pub fn on_timer(&self) {
        self.timer_kick.store(false, Ordering::Relaxed);
        // ORDERING: the kick flag was cleared before anything this run looks at, so a kick
        // that arrives from here on is seen by `arm_timer`'s check (pairs with the fence in
        // `kick_timer`).
        fence(Ordering::SeqCst);
        if self.is_stopped() {
            // Nothing is in flight, and the timer stays off until ScsiRestartAdapter.
            return;
        }
        let requested = self.take_reset_request();
        let cause = if self.device_needs_reset() {
            self.recovery.needs_reset.fetch_add(1, Ordering::Relaxed);
            Some(ResetCause::DeviceNeedsReset)
        } else {
            requested
        };
        if let Some(cause) = cause {
            self.reset_device(cause);
        }
        let now = self.extension.system_time();
        let last = self.last_health.load(Ordering::Relaxed);
        // A system time that went backwards counts as a period gone, so polling never stops.
        if now < last || now - last >= HEALTH_PERIOD {
            self.last_health.store(now, Ordering::Relaxed);
            self.find_lost_interrupts();
        }
        crate::recovery::tmf::service_tmfs(self, now);
        self.arm_timer();
    }

    /// Drains each request queue whose completions have waited a whole health period: their
    /// interrupt was lost (or a device that completes without interrupting).
    pub(crate) fn find_lost_interrupts(&self) {
        let seen_before = self.used_seen.load(Ordering::Relaxed);
        let mut seen = 0u64;
        let mut reset = false;
        for queue in 0..self.request_queues().min(64) {
            let bit = 1u64 << queue;
            let mut guard = self.lock(queue);
            let waiting = guard
                .state()
                .is_some_and(|state| state.ring.queue().has_used());
            if !waiting {
                continue;
            }
            if seen_before & bit == 0 {
                seen |= bit;
                continue;
            }
            self.recovery
                .lost_interrupts
                .fetch_add(1, Ordering::Relaxed);
            reset |= crate::io::drain(self, &mut guard);
        }
        self.used_seen.store(seen, Ordering::Relaxed);
        if reset {
            self.reset_device(ResetCause::ProtocolViolation);
        }
    }

    /// Asks StorPort for the next timer call: soon while a task management function is out,
    /// at the health period otherwise. Never in dump mode: the dump port has no timer (asking
    /// for one there is a contract violation, see [`crate::dump`]).
    pub(crate) fn arm_timer(&self) {
        if self.dump.is_some() {
            return;
        }
        let period = if self.tmfs.any_active() {
            TMF_POLL_MICROSECONDS
        } else {
            HEALTH_PERIOD_MICROSECONDS
        };
        self.extension.request_timer(self.callbacks.timer, period);
        // ORDERING: the request above replaced any kick made while this run was going on; the
        // fence orders it before the flag's load, pairing with the fence in `kick_timer`: either
        // this load sees the kicker's flag (and renews the kick), or the kicker's request comes
        // after ours (and stands).
        fence(Ordering::SeqCst);
        if self.timer_kick.load(Ordering::Relaxed) {
            self.extension
                .request_timer(self.callbacks.timer, KICK_MICROSECONDS);
        }
    }

    /// Asks for the timer to run now (from an ISR, or a context that must not do the work
    /// itself). Nothing in dump mode, which has no timer (and no work for one: its poll resets
    /// the device inline and it sends no task management function).
    pub fn kick_timer(&self) {
        if self.dump.is_some() {
            return;
        }
        self.timer_kick.store(true, Ordering::Relaxed);
        // ORDERING: pairs with the fence in `arm_timer` (see there).
        fence(Ordering::SeqCst);
        self.extension
            .request_timer(self.callbacks.timer, KICK_MICROSECONDS);
    }

    /// Resets the device for `cause`: completes what it had finished, fails every other request
    /// in flight with SRB_STATUS_BUS_RESET, ends every task management function, then brings
    /// the queues back and restocks the eventq. Only one context resets at a time; a second
    /// caller returns at once (the reset it would do is under way). Call with no queue lock
    /// held. Returns false if the device could not be brought back (it is then failed).
    pub fn reset_device(&self, cause: ResetCause) -> bool {
        self.reset_device_with(cause, None)
    }

    /// [`Self::reset_device`], from a context that holds StorPort's interrupt lock when `held`
    /// says so (which is every queue's lock already: the dump port's poll).
    pub(crate) fn reset_device_with(
        &self,
        cause: ResetCause,
        held: Option<&mut HeldByStorPort>,
    ) -> bool {
        // ORDERING: the flag only elects one resetter; the queue locks order everything the
        // reset touches. Acquire pairs with the Release below of the previous reset, so a new
        // winner starts after the last one finished.
        if self
            .resetting
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return true;
        }
        let mut restarted = true;
        let mut reset = false;
        {
            // Only a proof of another lock than the interrupt lock gives none: a caller's bug,
            // answered as a device that could not be brought back.
            let Some(mut locks) = self.lock_all(held) else {
                self.resetting.store(false, Ordering::Release);
                return false;
            };
            // A stopped adapter has nothing in flight and its device stays reset until
            // ScsiRestartAdapter.
            if !self.is_stopped() {
                reset = true;
                let resets = self.resets.fetch_add(1, Ordering::Relaxed) + 1;
                self.trace(
                    TraceEvent::DeviceReset,
                    ADAPTER_WIDE,
                    (cause as u32, resets, 0),
                );
                self.take_everything_back(&mut locks);
                restarted = self.bring_up(&mut locks).is_ok();
                if !restarted {
                    locks.shared_mut().fail();
                    self.recovery
                        .bring_up_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                crate::recovery::tmf::end_every_tmf(self, restarted);
            }
            // The election ends while every queue lock is still held, not after: a drain that
            // finds the device broken (and may keep a request for the reset it then asks for,
            // `QueueState::held_for_reset`) runs under its queue's lock, so it either ran
            // before this reset took the locks (and the request was completed above), or runs
            // after they are released and finds no reset under way, so its own is not skipped.
            // Ended after the release, a drain in between lost its reset, and the request it
            // kept waited for one that might never come (a fuzz run's lost WRITE).
            // ORDERING: Release pairs with the Acquire of the next winner's compare-exchange
            // above; the queue locks' release orders it before any drain that follows.
            self.resetting.store(false, Ordering::Release);
        }
        self.extension.reset_detected();
        if reset {
            self.events.restarted(&self.event_context());
        }
        restarted
    }

    /// Negotiates again and sets the queues up, insisting on the state find-adapter
    /// established: the same features and limits (so the same queue count), and the same queue
    /// sizes (the rings are reused as they are; a device that now offers less fails setup).
    pub(crate) fn bring_up(
        &self,
        every_lock: &mut AllQueuesLocked<'_>,
    ) -> Result<(), AdapterError> {
        let transport = every_lock.shared_mut();
        let accepted = transport.begin_init(self.features)?;
        if accepted != self.features {
            return Err(AdapterError::FeaturesChanged { accepted });
        }
        if Self::configure_device(transport)? != self.device_limits {
            return Err(AdapterError::LimitsChanged);
        }
        self.start_queues(every_lock)
    }

    /// ScsiStopAdapter: resets the device (it stops using every buffer) and marks the adapter
    /// stopped; requests in flight are completed with SRB_STATUS_BUS_RESET (StorPort normally
    /// drains them first), task management functions end.
    pub fn stop(&self, held: &mut HeldByStorPort) {
        self.trace(TraceEvent::Stopped, ADAPTER_WIDE, (0, 0, 0));
        // StorPort calls ScsiStopAdapter at DIRQL holding the interrupt lock, which is every
        // queue's lock (every message's, with per-message synchronisation): taking any of them
        // here would spin forever on a lock this processor holds.
        let Some(mut locks) = self.lock_all(Some(held)) else {
            return;
        };
        // ORDERING: Release pairs with `is_stopped`'s Acquire; StartIo reads it under a queue
        // lock held here, so no request reaches a ring once this store is made.
        self.stopped.store(true, Ordering::Release);
        self.take_everything_back(&mut locks);
        crate::recovery::tmf::end_every_tmf(self, true);
        self.recovery.stops.fetch_add(1, Ordering::Relaxed);
        drop(locks);
        // Zero microseconds cancels the pending timer request (the dump stack has none).
        if self.dump.is_none() {
            self.extension.request_timer(self.callbacks.timer, 0);
        }
    }

    /// ScsiRestartAdapter: renegotiates and sets the queues up again, as after power-up, with
    /// the state find-adapter established (see `Adapter::bring_up`); false if the device
    /// cannot be brought back that way (it is then failed and the adapter stays stopped).
    pub fn restart(&self, held: &mut HeldByStorPort) -> bool {
        // Under StorPort's interrupt lock, as ScsiStopAdapter (see `stop`).
        let Some(mut locks) = self.lock_all(Some(held)) else {
            return false;
        };
        let restarted = self.bring_up(&mut locks).is_ok();
        if restarted {
            // ORDERING: Release pairs with `is_stopped`'s Acquire: the queues set up above are
            // published before StartIo sees the adapter running.
            self.stopped.store(false, Ordering::Release);
            self.recovery.restarts.fetch_add(1, Ordering::Relaxed);
        } else {
            locks.shared_mut().fail();
            self.recovery
                .bring_up_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        drop(locks);
        if restarted {
            self.used_seen.store(0, Ordering::Relaxed);
            self.arm_timer();
            self.events.restarted(&self.event_context());
        }
        self.trace(
            TraceEvent::Restarted,
            ADAPTER_WIDE,
            (u32::from(restarted), 0, 0),
        );
        restarted
    }

    /// With every queue lock held: resets the device, completes what it had finished (their
    /// used elements are valid: written before the reset), fails every other request in
    /// flight with SRB_STATUS_BUS_RESET, and returns every ring to its initial state. The
    /// caller then brings the device back (or not).
    pub(crate) fn take_everything_back(&self, every_lock: &mut AllQueuesLocked<'_>) {
        // Once the device reads back status 0 it no longer touches any buffer (virtio 1.x
        // section 2.4), so the requests in flight can be handed back.
        let _ = every_lock.shared_mut().reset();
        for queue in 0..self.request_queues() {
            let mut guard = Self::queue_in(every_lock, queue);
            crate::io::salvage(self, &mut guard);
            crate::io::fail_in_flight(self, &mut guard);
        }
        for index in 0..self.active_queues() {
            if let Some(state) = every_lock.state(index) {
                state.ring.queue().reset();
                if index == queue_index::CONTROL {
                    let tokens: &mut [usize] =
                        core::borrow::BorrowMut::borrow_mut(&mut state.requests);
                    tokens.fill(0);
                }
            }
        }
    }

    /// Completes the SRB a task management slot handed back, with `status`.
    pub fn complete_owner(&self, owner: Owner, status: u8) {
        crate::io::complete_kept(self, owner, status);
    }
}

impl RecoveryHost for Adapter {
    fn tracer(&self) -> Tracer<'_> {
        Self::tracer(self)
    }

    fn extension(&self) -> DeviceExtension {
        self.extension
    }

    fn device_limits(&self) -> &virtio_core::scsi::Limits {
        &self.device_limits
    }

    fn in_dump_mode(&self) -> bool {
        self.dump.is_some()
    }

    fn is_stopped(&self) -> bool {
        Self::is_stopped(self)
    }

    fn tmfs(&self) -> &TmfTable<Carved<TmfSlot>> {
        &self.tmfs
    }

    fn recovery(&self) -> &RecoveryCounters {
        &self.recovery
    }

    fn luns(&self) -> &LunTable<Carved<LunSlot>> {
        &self.luns
    }

    fn gone(&self) -> &GoneUnits<Carved<AtomicU64>> {
        self.events.gone()
    }

    fn request_queues(&self) -> u16 {
        Self::request_queues(self)
    }

    fn submitted(&self, queue: u16) -> u64 {
        let guard = self.lock(queue);
        let count = self
            .counters(queue)
            .map_or(0, |counters| counters.requests.load(Ordering::Relaxed));
        drop(guard);
        count
    }

    fn with_control_ring<R>(&self, f: impl FnOnce(Option<RingView<'_>>) -> R) -> R {
        let mut guard = self.lock_control();
        let result = f(guard.state().map(QueueState::ring_view));
        drop(guard);
        result
    }

    fn for_each_in_flight(&self, visit: impl FnMut(&InFlight)) {
        Self::for_each_in_flight(self, visit);
    }

    fn poll_all(&self) -> bool {
        Self::poll_all(self)
    }

    fn complete(&self, srb: Srb, status: u8) {
        crate::io::complete(self, srb, status);
    }

    fn complete_owner(&self, owner: Owner, status: u8) {
        Self::complete_owner(self, owner, status);
    }

    fn reset_device(&self, cause: ResetCause) -> bool {
        Self::reset_device(self, cause)
    }

    fn reset_bus(&self, cause: ResetCause) {
        Self::reset_bus(self, cause);
    }

    fn note_reset_request(&self, cause: ResetCause) {
        Self::note_reset_request(self, cause);
    }

    fn kick_timer(&self) {
        Self::kick_timer(self);
    }
}
