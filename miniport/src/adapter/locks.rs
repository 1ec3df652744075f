//! The queue locks as the adapter uses them: guards that carry the request queue number along
//! with the proof of the lock ([`crate::storport::queue_locks`], where
//! which lock guards which virtqueue is decided).
#![forbid(unsafe_code)]

use virtio_core::scsi::queue_index;

use super::Adapter;
use crate::queue_state::{QueueGuard, QueueState, Transport};
use crate::storport::queue_locks::{AllLocked, Guard, HeldByStorPort};

/// Every queue's lock, held (StorPort's interrupt lock).
pub type AllQueuesLocked<'a> = AllLocked<'a, QueueState, Transport>;

impl Adapter {
    /// Locks request queue `queue` (its MSI-X message lock, or the one lock of the other
    /// modes).
    #[must_use]
    pub fn lock(&self, queue: u16) -> QueueGuard<'_> {
        QueueGuard::new(queue, self.queues.lock(queue + queue_index::REQUEST_BASE))
    }

    /// A guard for request queue `queue` under the lock StorPort holds for us (inside the ISR
    /// for its message), if that lock guards it.
    #[must_use]
    pub fn queue_under<'a>(
        &'a self,
        held: &'a mut HeldByStorPort,
        queue: u16,
    ) -> Option<QueueGuard<'a>> {
        Some(QueueGuard::new(
            queue,
            self.queues.under(held, queue + queue_index::REQUEST_BASE)?,
        ))
    }

    /// A guard for request queue `queue` under every queue's lock.
    pub(crate) fn queue_in<'a>(
        every_lock: &'a mut AllQueuesLocked<'_>,
        queue: u16,
    ) -> QueueGuard<'a> {
        QueueGuard::new(queue, every_lock.guard(queue + queue_index::REQUEST_BASE))
    }

    /// Locks the controlq (its MSI-X message lock, or the one lock of the other modes).
    #[must_use]
    pub fn lock_control(&self) -> VirtqueueGuard<'_> {
        VirtqueueGuard {
            adapter: self,
            inner: self.queues.lock(queue_index::CONTROL),
        }
    }

    /// A guard for virtqueue `index` (the controlq or the eventq) under the lock StorPort holds
    /// for us (inside the ISR for its message), if that lock guards it.
    #[must_use]
    pub fn virtqueue_under<'a>(
        &'a self,
        held: &'a mut HeldByStorPort,
        index: u16,
    ) -> Option<VirtqueueGuard<'a>> {
        Some(VirtqueueGuard {
            adapter: self,
            inner: self.queues.under(held, index)?,
        })
    }

    /// Every queue's lock: StorPort's interrupt lock, taken here unless the caller runs under
    /// it already (`held`: HwInitialize, ScsiStopAdapter, ScsiRestartAdapter, the dump port's
    /// poll), where taking it would spin on a lock this processor holds. `None` if `held` is
    /// not the interrupt lock. Released when the guard drops.
    pub(crate) fn lock_all<'a>(
        &'a self,
        held: Option<&'a mut HeldByStorPort>,
    ) -> Option<AllQueuesLocked<'a>> {
        match held {
            Some(held) => self.queues.all_under(held),
            None => Some(self.queues.lock_all()),
        }
    }
}

/// Proof that the lock of a virtqueue other than a request queue (the controlq or the eventq)
/// is held; gives access to its state.
#[derive(Debug)]
pub struct VirtqueueGuard<'a> {
    adapter: &'a Adapter,
    inner: Guard<'a, QueueState, Transport>,
}

impl<'a> VirtqueueGuard<'a> {
    /// The adapter.
    #[must_use]
    pub const fn adapter(&self) -> &'a Adapter {
        self.adapter
    }

    /// The virtqueue's state.
    pub fn state(&mut self) -> Option<&mut QueueState> {
        self.inner.state()
    }
}
