//! One virtqueue as the I/O path and the adapter share it: the ring of either layout, the
//! requests in flight on it, the room kept for a large request, and the guard that proves the
//! queue's lock is held. Below both the adapter (which builds and locks the queues) and the I/O
//! path (which fills and drains them), so neither needs the other's module.
#![forbid(unsafe_code)]

use virtio_core::pci::PciTransport;
use virtio_core::queue::packed::PackedQueue;
use virtio_core::queue::split::SplitQueue;
use virtio_core::queue::{Slot, Virtqueue};

use crate::ring_view::RingView;
use crate::storport::dma::{Carved, StorPortRegisters};
use crate::storport::queue_locks::Guard;
use crate::storport::request::InFlightRequest;

pub mod room;

pub use room::Reservation;

/// A ring of either layout, driven through the common trait.
#[derive(Debug)]
pub enum Ring {
    /// Split virtqueue (virtio 1.x section 2.7).
    Split(SplitQueue<Carved<Slot>>),
    /// Packed virtqueue (virtio 1.x section 2.8).
    Packed(PackedQueue<Carved<Slot>>),
}

impl Ring {
    /// The ring as the common trait.
    pub fn queue(&mut self) -> &mut dyn Virtqueue {
        match self {
            Self::Split(queue) => queue,
            Self::Packed(queue) => queue,
        }
    }

    // The I/O path's ring calls, dispatched on the layout with static calls, which the
    // compiler can inline into StartIo and the drain (through `queue()` each is an indirect
    // call that inlines nothing).

    /// [`Virtqueue::free_descriptors`].
    #[must_use]
    #[inline]
    pub fn free_descriptors(&self) -> u16 {
        match self {
            Self::Split(queue) => queue.free_descriptors(),
            Self::Packed(queue) => queue.free_descriptors(),
        }
    }

    /// [`Virtqueue::add`].
    ///
    /// # Errors
    /// As [`Virtqueue::add`].
    #[inline]
    pub fn add(
        &mut self,
        readable: &[virtio_core::hal::Segment],
        writable: &[virtio_core::hal::Segment],
        indirect: Option<&virtio_core::dma::DmaMemory>,
    ) -> Result<virtio_core::queue::Token, virtio_core::queue::QueueError> {
        match self {
            Self::Split(queue) => queue.add(readable, writable, indirect),
            Self::Packed(queue) => queue.add(readable, writable, indirect),
        }
    }

    /// [`Virtqueue::add_table`].
    ///
    /// # Errors
    /// As [`Virtqueue::add_table`].
    #[inline]
    pub fn add_table(
        &mut self,
        chain: &virtio_core::queue::IndirectChain,
    ) -> Result<virtio_core::queue::Token, virtio_core::queue::QueueError> {
        match self {
            Self::Split(queue) => queue.add_table(chain),
            Self::Packed(queue) => queue.add_table(chain),
        }
    }

    /// [`Virtqueue::kick_prepare`].
    #[inline]
    pub fn kick_prepare(&mut self) -> bool {
        match self {
            Self::Split(queue) => queue.kick_prepare(),
            Self::Packed(queue) => queue.kick_prepare(),
        }
    }

    /// [`Virtqueue::pop_used`].
    ///
    /// # Errors
    /// As [`Virtqueue::pop_used`].
    #[inline]
    pub fn pop_used(
        &mut self,
    ) -> Result<Option<virtio_core::queue::UsedBuffer>, virtio_core::queue::DeviceError> {
        match self {
            Self::Split(queue) => queue.pop_used(),
            Self::Packed(queue) => queue.pop_used(),
        }
    }

    /// [`Virtqueue::enable_interrupts`].
    #[inline]
    pub fn enable_interrupts(&mut self) -> bool {
        match self {
            Self::Split(queue) => queue.enable_interrupts(),
            Self::Packed(queue) => queue.enable_interrupts(),
        }
    }
}

impl QueueState {
    /// The ring as the event queue and task management drive it.
    pub fn ring_view(&mut self) -> RingView<'_> {
        RingView {
            queue: self.ring.queue(),
            tokens: core::borrow::BorrowMut::borrow_mut(&mut self.requests),
            notify_offset: self.notify_offset,
        }
    }
}

/// One virtqueue and the requests in flight on it, alone on its cache lines ([`crate::sizing::CACHE_LINE`]).
#[derive(Debug)]
#[repr(align(64))]
pub struct QueueState {
    /// The ring.
    pub ring: Ring,
    /// The controlq's and the eventq's ring tokens: what each token stands for (0 when
    /// nothing; empty for a request queue).
    pub requests: Carved<usize>,
    /// A request queue's SRBs in flight, by ring token (empty for the controlq and eventq).
    pub in_flight: Carved<Option<InFlightRequest>>,
    /// Offset of the queue's notification address in the notify BAR.
    pub notify_offset: u64,
    /// The virtqueue index.
    pub index: u16,
    /// Room kept for a large request that found none (request queues only).
    pub reservation: Reservation,
    /// A request the device used without writing even its response header: the device is
    /// broken (or lying) and may still be using the chain, so the request is kept from StorPort
    /// until the reset has stopped the device, which then completes it
    /// ([`crate::io::fail_in_flight`]). The ring's own bookkeeping no longer lists it.
    pub held_for_reset: Option<InFlightRequest>,
}

// Four cache lines, as many as the I/O path touches: a field that pushes the state past them
// costs every queue a fifth line and StartIo a multiply in the table lookup (cargo xtask bench).
const _: () = assert!(size_of::<QueueState>() <= 4 * crate::sizing::CACHE_LINE);

/// The transport every queue shares.
pub type Transport = PciTransport<StorPortRegisters>;

/// Proof that a request queue's lock is held; gives access to the queue's state.
#[derive(Debug)]
pub struct QueueGuard<'a> {
    queue: u16,
    inner: Guard<'a, QueueState, Transport>,
}

impl<'a> QueueGuard<'a> {
    /// The guard of request queue `queue` (0-based) over the lock guard `inner` of its
    /// virtqueue.
    #[must_use]
    pub const fn new(queue: u16, inner: Guard<'a, QueueState, Transport>) -> Self {
        Self { queue, inner }
    }

    /// The request queue number.
    #[must_use]
    pub const fn queue(&self) -> u16 {
        self.queue
    }

    /// The queue's state.
    pub fn state(&mut self) -> Option<&mut QueueState> {
        self.inner.state()
    }

    /// Releases the lock now ([`Guard::unlock`]).
    #[inline]
    pub fn unlock(self) {
        self.inner.unlock();
    }
}
