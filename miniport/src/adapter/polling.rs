//! The adapter as the dump port drives it ([`crate::dump`]): one processor, interrupts off, the
//! port calling HwInterrupt to poll, and no DPC or timer to defer anything to, so a device that
//! breaks the protocol is reset right where the poll finds it.
#![forbid(unsafe_code)]

use core::sync::atomic::Ordering;

use super::{Adapter, InterruptMode};
use crate::dump::DumpMode;
use crate::storport::queue_locks::HeldByStorPort;
use crate::trace::ResetCause;

impl Adapter {
    /// Why the dump stack loaded this instance; `None` in the normal stack.
    #[must_use]
    pub const fn dump_mode(&self) -> Option<DumpMode> {
        self.dump
    }

    /// HwInterrupt in dump mode: the dump port's poll. Drains every request queue whatever the
    /// ISR status says, then asks the device for no interrupts (virtio 1.x section 2.7.7):
    /// nobody takes them, every completion is found by the next poll, and so the poll never
    /// depends on an ISR bit the device had no reason to set. Resets the device here if it
    /// broke the protocol: the normal ISR leaves that to a StorPort timer, which the dump port
    /// does not have. Returns whether the device had interrupted, a request completed or the
    /// device was reset.
    pub(super) fn poll(&self, held: &mut HeldByStorPort) -> bool {
        if self.mode() != InterruptMode::Line {
            // Not initialised yet (HwInitialize chooses line mode in dump mode): no queue is
            // running, and the lock the drain relies on is not the one held.
            return false;
        }
        // In line mode StorPort (the dump port) holds the interrupt lock around HwInterrupt, and
        // the reset path takes it too, so the transport is not being mutated. Reading the ISR
        // status also deasserts a level-triggered line (virtio 1.x 4.1.4.5).
        let isr = self.queues.shared_under(held).read_isr();
        let completed_before = self.completions();
        let mut broken = false;
        for queue in 0..self.request_queues() {
            // In line mode the interrupt lock, held by the caller of HwInterrupt, is every
            // request queue's lock.
            let Some(mut guard) = self.queue_under(held, queue) else {
                continue;
            };
            broken |= crate::io::drain(self, &mut guard);
            // The drain re-armed interrupts when it found the ring empty; polling needs none.
            if let Some(state) = guard.state() {
                state.ring.queue().disable_interrupts();
            }
        }
        if broken {
            // The interrupt lock is every queue's lock in line mode, and we hold it: the reset
            // takes no lock, and runs now, synchronously (a status write and read-back).
            let _ = self.reset_device_with(ResetCause::ProtocolViolation, Some(held));
        }
        !isr.is_empty() || broken || self.completions() != completed_before
    }

    /// HwResetBus (or a reset SRB: `cause` says which). In dump mode Microsoft asks miniports to
    /// disregard bus resets, so one with nothing in flight is ignored; with a request in flight
    /// the device is reset (no timer needed), which completes that request once with
    /// SRB_STATUS_BUS_RESET instead of leaving the dump waiting for it forever. In the normal
    /// stack, task management resets the nexus of each target holding requests
    /// ([`crate::recovery::tmf::reset_bus`]), escalating to the device reset.
    pub fn reset_bus(&self, cause: ResetCause) {
        if self.dump.is_none() {
            crate::recovery::tmf::reset_bus(self, cause);
            return;
        }
        if self.requests_in_flight() != 0 {
            let _ = self.reset_device(cause);
        }
    }

    /// Requests on the device's request queues, each queue read under its lock.
    fn requests_in_flight(&self) -> u32 {
        (0..self.request_queues())
            .map(|queue| {
                let mut guard = self.lock(queue);
                guard
                    .state()
                    .map_or(0, |state| u32::from(state.ring.queue().in_flight()))
            })
            .sum()
    }

    /// Requests completed from the used rings so far, over every request queue.
    fn completions(&self) -> u64 {
        (0..self.request_queues())
            .filter_map(|queue| self.counters(queue))
            .map(|counters| counters.completions.load(Ordering::Relaxed))
            .sum()
    }
}
