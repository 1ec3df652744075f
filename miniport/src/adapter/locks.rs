//! The queue locks: which StorPort lock guards which virtqueue in each interrupt mode, and the
//! guards through which the queues' state is reached.

use core::cell::UnsafeCell;

use virtio_core::scsi::queue_index;

use super::{Adapter, InterruptMode, QueueState};
use crate::storport::InterruptLock;

impl Adapter {
    /// The state of virtqueue `index`.
    ///
    /// # Safety
    /// The caller holds the queue's lock (or otherwise has exclusive access: setup with no
    /// I/O possible), and does not keep the reference past it.
    #[expect(
        clippy::mut_from_ref,
        reason = "interior mutability guarded by the queue lock"
    )]
    pub(crate) unsafe fn queue_cell(&self, index: u16) -> Option<&mut QueueState> {
        let table: &[UnsafeCell<Option<QueueState>>] = core::borrow::Borrow::borrow(&self.queues);
        let cell = table.get(usize::from(index))?;
        // SAFETY: the caller's lock makes this the only access to the cell.
        unsafe { (*cell.get()).as_mut() }
    }

    /// Acquires the lock that guards the queues of MSI-X message `message` in per-queue mode
    /// (the one shared message's lock, or the interrupt lock, in the other modes).
    pub(crate) fn acquire(&self, message: u32) -> Held {
        match self.mode() {
            InterruptMode::PerQueue => {
                let old_irql = self.extension.acquire_msi_lock(message);
                Held::Msi { message, old_irql }
            }
            InterruptMode::Shared => {
                let old_irql = self.extension.acquire_msi_lock(0);
                Held::Msi {
                    message: 0,
                    old_irql,
                }
            }
            InterruptMode::Line => self.acquire_interrupt_lock(),
        }
    }

    /// Acquires StorPort's interrupt lock: every message's lock in per-message mode.
    pub(crate) fn acquire_interrupt_lock(&self) -> Held {
        // SAFETY: the handle lives in the adapter (fixed address) and is touched only by the
        // lock holder, which we are about to become.
        unsafe {
            self.extension
                .acquire_interrupt_lock(self.interrupt_lock.get());
        }
        Held::Interrupt
    }

    /// Releases what [`Adapter::acquire`] took.
    pub(crate) fn release(&self, how: Held) {
        match how {
            Held::Msi { message, old_irql } => {
                self.extension.release_msi_lock(message, old_irql);
            }
            // SAFETY: the guard being dropped acquired the interrupt lock with this handle.
            Held::Interrupt => unsafe {
                self.extension
                    .release_interrupt_lock(self.interrupt_lock.get());
            },
            Held::ByCaller => {}
        }
    }

    /// Locks request queue `queue` (its MSI-X message lock, or the interrupt lock).
    #[must_use]
    pub fn lock(&self, queue: u16) -> QueueGuard<'_> {
        let message = u32::from(Self::vector_of_queue(queue + queue_index::REQUEST_BASE));
        QueueGuard {
            adapter: self,
            queue,
            how: self.acquire(message),
        }
    }

    /// A guard for `queue` whose lock StorPort already holds (inside the ISR for its message).
    ///
    /// # Safety
    /// The caller runs in the ISR whose lock guards `queue` (per-queue: that queue's message;
    /// shared: message 0; line: the interrupt lock), or holds that lock otherwise.
    #[must_use]
    pub unsafe fn assume_locked(&self, queue: u16) -> QueueGuard<'_> {
        QueueGuard {
            adapter: self,
            queue,
            how: Held::ByCaller,
        }
    }

    /// Locks the controlq (its MSI-X message lock, or the one lock of the other modes).
    #[must_use]
    pub fn lock_control(&self) -> VirtqueueGuard<'_> {
        VirtqueueGuard {
            adapter: self,
            index: queue_index::CONTROL,
            how: self.acquire(u32::from(Self::vector_of_queue(queue_index::CONTROL))),
        }
    }

    /// A guard for virtqueue `index` (the controlq or the eventq) whose lock StorPort already
    /// holds (inside the ISR for its message).
    ///
    /// # Safety
    /// The caller runs in the ISR whose lock guards virtqueue `index` (per-queue: its message;
    /// shared: message 0; line: the interrupt lock), or holds that lock otherwise.
    #[must_use]
    pub unsafe fn assume_virtqueue_locked(&self, index: u16) -> VirtqueueGuard<'_> {
        VirtqueueGuard {
            adapter: self,
            index,
            how: Held::ByCaller,
        }
    }

    /// Every queue's lock (the module documentation has why it is one lock): StorPort's
    /// interrupt lock, taken here unless the caller runs under it already
    /// (`interrupt_lock_held`: HwInitialize, ScsiStopAdapter, ScsiRestartAdapter, the dump
    /// port's poll). Released when the guard drops.
    pub(crate) fn lock_all(&self, interrupt_lock_held: bool) -> AllQueuesLocked<'_> {
        AllQueuesLocked {
            adapter: self,
            held: if interrupt_lock_held {
                Held::ByCaller
            } else {
                self.acquire_interrupt_lock()
            },
        }
    }
}

/// How a [`QueueGuard`]'s lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// We acquired this MSI message's lock.
    Msi { message: u32, old_irql: u32 },
    /// We acquired StorPort's interrupt lock (line mode's queue lock, or every queue's lock
    /// for `lock_all`).
    Interrupt,
    /// StorPort holds it for us (inside the ISR, or the interrupt lock around the routine), or
    /// the caller's `lock_all` does.
    ByCaller,
}

/// Proof that a request queue's lock is held; gives access to the queue's state.
#[derive(Debug)]
pub struct QueueGuard<'a> {
    adapter: &'a Adapter,
    queue: u16,
    how: Held,
}

impl<'a> QueueGuard<'a> {
    /// The adapter.
    #[must_use]
    pub const fn adapter(&self) -> &'a Adapter {
        self.adapter
    }

    /// The request queue number.
    #[must_use]
    pub const fn queue(&self) -> u16 {
        self.queue
    }

    /// The queue's state.
    pub fn state(&mut self) -> Option<&mut QueueState> {
        // SAFETY: this guard proves the queue's lock is held, and `&mut self` makes the
        // returned reference the only one derived from it.
        unsafe {
            self.adapter
                .queue_cell(self.queue + queue_index::REQUEST_BASE)
        }
    }
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        self.adapter.release(self.how);
    }
}

/// Proof that the lock of a virtqueue other than a request queue (the controlq or the eventq)
/// is held; gives access to its state.
#[derive(Debug)]
pub struct VirtqueueGuard<'a> {
    adapter: &'a Adapter,
    index: u16,
    how: Held,
}

impl<'a> VirtqueueGuard<'a> {
    /// The adapter.
    #[must_use]
    pub const fn adapter(&self) -> &'a Adapter {
        self.adapter
    }

    /// The virtqueue's state.
    pub fn state(&mut self) -> Option<&mut QueueState> {
        // SAFETY: this guard proves the virtqueue's lock is held, and `&mut self` makes the
        // returned reference the only one derived from it.
        unsafe { self.adapter.queue_cell(self.index) }
    }
}

impl Drop for VirtqueueGuard<'_> {
    fn drop(&mut self) {
        self.adapter.release(self.how);
    }
}

/// Every queue's lock, from [`Adapter::lock_all`]: StorPort's interrupt lock, which dropping
/// the guard releases if `lock_all` took it.
pub(crate) struct AllQueuesLocked<'a> {
    adapter: &'a Adapter,
    held: Held,
}

impl Drop for AllQueuesLocked<'_> {
    fn drop(&mut self) {
        self.adapter.release(self.held);
    }
}

/// The StorPort interrupt-lock kind (for the line-mode wrappers in `port`).
pub const LINE_LOCK: u32 = InterruptLock;
