//! A virtqueue as the layers above the adapter drive it (the eventq, the controlq): the ring,
//! its token table and its notification offset, under the lock the adapter took for them.
#![forbid(unsafe_code)]

use virtio_core::queue::Virtqueue;

/// One virtqueue's ring and the table of what is posted under each token, borrowed from the
/// adapter's queue state while the caller holds the queue's lock.
pub struct RingView<'a> {
    /// The ring.
    pub queue: &'a mut dyn Virtqueue,
    /// For each token, what the owner of the queue posted under it, plus one (0 when none).
    pub tokens: &'a mut [usize],
    /// Offset of the queue's notification address in the notify BAR.
    pub notify_offset: u64,
}

impl core::fmt::Debug for RingView<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RingView")
            .field("tokens", &self.tokens.len())
            .field("notify_offset", &self.notify_offset)
            .finish_non_exhaustive()
    }
}

/// How the device is told of new buffers on a virtqueue: the adapter's notify register.
pub trait Doorbell {
    /// Notifies the device of virtqueue `index` at notification offset `offset`, after the
    /// fence that publishes the ring's updates first.
    fn notify_virtqueue(&self, index: u16, offset: u64);
}
