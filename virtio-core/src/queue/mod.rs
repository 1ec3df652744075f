//! Virtqueues: the split ring ([`split`]) and the packed ring ([`packed`]) behind one trait.
//!
//! Both keep a driver-private shadow of everything they need (free lists, chain lengths,
//! posted writable lengths) in caller-provided [`Slot`] storage, so they never trust, and never
//! need to read back, anything the device could have changed. Tokens are slot indices: the
//! split ring's head descriptor index, the packed ring's buffer id. Completion is O(1).
//!
//! No allocation: ring memory and indirect tables are caller-provided [`DmaMemory`], slot
//! storage is any `BorrowMut<[Slot]>` (an array, a `Vec` in tests, a slice carved from the
//! uncached extension in the miniport).
#![forbid(unsafe_code)]

pub mod indirect;
pub mod packed;
pub mod split;

pub use indirect::{IndirectChain, IndirectWriter, RingFormat};

use crate::dma::{BusAddress, DmaMemory};
use crate::hal::Segment;

/// Identifies one in-flight chain: a slot index in `0..queue size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub u16);

impl Token {
    /// The slot index, for per-request tables indexed by token.
    #[must_use]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// One completed chain, as the device reported it (after validation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsedBuffer {
    /// The token [`Virtqueue::add`] returned for the chain.
    pub token: Token,
    /// Bytes the device wrote into the chain's writable segments, clamped to the total
    /// writable length posted (a device may report more; see [`DeviceError::UsedLengthTooLarge`]).
    pub written: u32,
}

/// Driver-private state of one slot (a descriptor for the split ring, a buffer id for the
/// packed ring). Opaque to users: they only provide storage for `queue size` of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// Free-list link (split: next free descriptor; packed: next free id). For a split chain in
    /// flight, the links the ring needs to free it in O(1) (see `split::hold_chain`).
    pub(crate) next: u16,
    /// For a chain head: ring descriptors the chain occupies (1 when indirect).
    pub(crate) descriptors: u16,
    /// For a chain head: total length of the writable segments posted.
    pub(crate) writable: u32,
    /// For a chain head: total length of every segment posted (readable and writable,
    /// saturating); no used length may exceed it.
    pub(crate) posted: u32,
    /// For a chain head: whether the chain is in flight (owned by the device).
    pub(crate) in_flight: bool,
}

impl Slot {
    /// The bytes written that a used element reporting `len` for this in-flight chain head
    /// (`id`) stands for: the policy both rings share.
    ///
    /// A length above the whole chain (readable and writable) is impossible for any device and
    /// is refused. One above the writable part is clamped: QEMU's virtio-scsi reports the
    /// response header plus the data-out bytes for every WRITE (seen by `cargo xtask vmtest`),
    /// so refusing it would fail every write on the device our users run, and virtio-scsi takes
    /// the transfer length from `resid` anyway.
    #[inline]
    pub(crate) fn used_length(&self, id: u16, len: u32) -> Result<u32, DeviceError> {
        if len > self.posted {
            return Err(DeviceError::UsedLengthTooLarge {
                id,
                written: len,
                posted: self.posted,
            });
        }
        Ok(len.min(self.writable))
    }

    /// An unused slot, for initialising storage arrays.
    pub const EMPTY: Self = Self {
        next: 0,
        descriptors: 0,
        writable: 0,
        posted: 0,
        in_flight: false,
    };
}

/// Ring features negotiated with the device that change how a queue behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueFeatures {
    /// `VIRTIO_RING_F_EVENT_IDX` (virtio 1.x section 2.7.10 / 2.8.10): event-index suppression.
    pub event_idx: bool,
    /// `VIRTIO_RING_F_INDIRECT_DESC` (section 2.7.5.3 / 2.8.18): indirect descriptor tables.
    pub indirect: bool,
}

/// Bus addresses of the three ring areas, for the transport's `queue_desc`, `queue_driver` and
/// `queue_device` registers (virtio 1.x section 4.1.4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueAddresses {
    /// Descriptor area (descriptor table / packed descriptor ring).
    pub descriptors: BusAddress,
    /// Driver area (available ring / driver event suppression).
    pub driver: BusAddress,
    /// Device area (used ring / device event suppression).
    pub device: BusAddress,
}

/// Why a queue could not be created or a chain not added. These are caller errors or resource
/// exhaustion, never device misbehaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The queue size is not usable: zero, above the ring kind's maximum, or (split ring) not a
    /// power of two.
    InvalidSize(u16),
    /// The ring memory is too small or misaligned for the queue size.
    RingMemory {
        /// Bytes the layout needs.
        needed: usize,
        /// Bytes provided.
        provided: usize,
    },
    /// The slot storage holds fewer slots than the queue size.
    SlotStorage {
        /// Slots needed (the queue size).
        needed: u16,
        /// Slots provided.
        provided: usize,
    },
    /// The chain has no segments at all.
    EmptyChain,
    /// A segment has length zero (not allowed by the spec for a descriptor of a request).
    EmptySegment,
    /// Not enough free descriptors (or ids): the caller should report busy and retry later.
    Full {
        /// Descriptors the chain needs.
        needed: u16,
        /// Descriptors free.
        free: u16,
    },
    /// The chain is longer than the queue size (direct) or the indirect table (indirect).
    ChainTooLong {
        /// Segments in the chain.
        segments: usize,
        /// The limit that applies.
        limit: usize,
    },
    /// An indirect table was given but `VIRTIO_RING_F_INDIRECT_DESC` was not negotiated.
    IndirectNotNegotiated,
    /// The indirect table memory is misaligned (descriptors must be 16-byte aligned).
    IndirectMisaligned,
    /// The sum of the writable segment lengths overflows 32 bits.
    WritableTooLong,
    /// A readable segment was written after a writable one (virtio 1.2 sections 2.7.4.1 and
    /// 2.8.4: the device-readable descriptors come first).
    ReadableAfterWritable,
    /// An indirect table written for one ring format was given to a ring of the other.
    IndirectFormat {
        /// The format the table was written in.
        written: RingFormat,
    },
}

impl core::fmt::Display for QueueError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::InvalidSize(size) => write!(f, "queue size {size} is not usable"),
            Self::RingMemory { needed, provided } => write!(
                f,
                "ring memory of {provided} bytes is too small or misaligned ({needed} needed)"
            ),
            Self::SlotStorage { needed, provided } => {
                write!(f, "slot storage holds {provided} slots, {needed} needed")
            }
            Self::EmptyChain => f.write_str("the chain has no segments"),
            Self::EmptySegment => f.write_str("a segment has length zero"),
            Self::Full { needed, free } => {
                write!(f, "queue full: {needed} descriptors needed, {free} free")
            }
            Self::ChainTooLong { segments, limit } => {
                write!(
                    f,
                    "a chain of {segments} segments exceeds the limit of {limit}"
                )
            }
            Self::IndirectNotNegotiated => {
                f.write_str("indirect table given without VIRTIO_RING_F_INDIRECT_DESC")
            }
            Self::IndirectMisaligned => f.write_str("indirect table memory is not 16-byte aligned"),
            Self::WritableTooLong => f.write_str("the writable segments add up to more than 4 GiB"),
            Self::ReadableAfterWritable => f.write_str("a readable segment follows a writable one"),
            Self::IndirectFormat { written } => {
                write!(
                    f,
                    "an indirect table written for the {written:?} format is for the other ring format"
                )
            }
        }
    }
}

impl core::error::Error for QueueError {}

/// A device wrote something the spec forbids. The queue's state is unchanged; the caller must
/// reset the device and fail what is in flight (see [`Virtqueue::detach_next`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// A used element's id is not a slot index (`id >= queue size`).
    UsedIdOutOfRange {
        /// The id the device wrote.
        id: u32,
    },
    /// A used element names a slot that is not in flight (or not a chain head).
    UsedIdNotInFlight {
        /// The id the device wrote.
        id: u16,
    },
    /// A used element's length exceeds everything posted for that chain (readable and
    /// writable), which no device can have written.
    ///
    /// A length above the writable part alone is not an error: it is clamped, because QEMU's
    /// virtio-scsi reports the response header plus the data-out bytes for every WRITE
    /// (hw/scsi/virtio-scsi.c, `virtqueue_push(.., qsgl.size + resp size)`).
    UsedLengthTooLarge {
        /// The chain's token.
        id: u16,
        /// The length the device wrote.
        written: u32,
        /// The whole chain's length posted.
        posted: u32,
    },
    /// The split ring's `used.idx` moved further than the number of chains in flight.
    UsedIndexJump {
        /// The last used index the driver consumed.
        last_seen: u16,
        /// The used index the device published.
        published: u16,
    },
    /// A packed-ring used descriptor's AVAIL/USED flags do not match the expected wrap counter.
    PackedWrapMismatch {
        /// Ring position of the descriptor.
        position: u16,
        /// The flags the device wrote.
        flags: u16,
    },
}

impl core::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::UsedIdOutOfRange { id } => write!(f, "used id {id} is not a slot index"),
            Self::UsedIdNotInFlight { id } => write!(f, "used id {id} is not in flight"),
            Self::UsedLengthTooLarge {
                id,
                written,
                posted,
            } => write!(
                f,
                "used length {written} for id {id} exceeds the {posted} bytes posted"
            ),
            Self::UsedIndexJump {
                last_seen,
                published,
            } => write!(
                f,
                "used index jumped from {last_seen} to {published}, past the chains in flight"
            ),
            Self::PackedWrapMismatch { position, flags } => write!(
                f,
                "used descriptor {position} has flags {flags:#06x}, not matching the wrap counter"
            ),
        }
    }
}

impl core::error::Error for DeviceError {}

/// The operations common to split and packed virtqueues.
///
/// Locking is the caller's: every method takes `&mut self`, so one queue is driven by one
/// context at a time (in the miniport, under the queue's StorPort lock).
pub trait Virtqueue {
    /// The queue's index on the device.
    fn index(&self) -> u16;

    /// Number of slots (the queue size negotiated with the device).
    fn size(&self) -> u16;

    /// Ring descriptors currently free. A direct chain of `n` segments needs `n`; an indirect
    /// chain needs 1.
    fn free_descriptors(&self) -> u16;

    /// Number of chains in flight.
    fn in_flight(&self) -> u16;

    /// Bus addresses of the ring areas, for queue setup.
    fn addresses(&self) -> QueueAddresses;

    /// Makes a chain of `readable` then `writable` segments available to the device and returns
    /// its token.
    ///
    /// With `indirect` (memory of at least 16 bytes per segment, 16-byte aligned, that stays
    /// valid until the chain is used or detached), the chain is written there and takes one ring
    /// descriptor; otherwise it takes one ring descriptor per segment.
    ///
    /// The chain is visible to the device when this returns; whether to notify is
    /// [`Virtqueue::kick_prepare`]'s answer.
    ///
    /// # Errors
    /// [`QueueError::Full`] when there is no room (retryable), others for malformed chains.
    fn add(
        &mut self,
        readable: &[Segment],
        writable: &[Segment],
        indirect: Option<&DmaMemory>,
    ) -> Result<Token, QueueError>;

    /// Makes a chain written into an indirect table by an [`IndirectWriter`] available to the
    /// device as one descriptor, and returns its token. The table must stay valid until the
    /// chain is used or detached.
    ///
    /// The writer checked the segments; this checks what only the ring knows: that
    /// `VIRTIO_RING_F_INDIRECT_DESC` was negotiated, that the table is in this ring's format,
    /// and that a descriptor is free. The chain is visible to the device when this returns, as
    /// with [`Virtqueue::add`].
    ///
    /// # Errors
    /// [`QueueError::Full`] when no descriptor is free (retryable),
    /// [`QueueError::IndirectNotNegotiated`], [`QueueError::IndirectFormat`].
    fn add_table(&mut self, chain: &IndirectChain) -> Result<Token, QueueError>;

    /// Whether the device must be notified of the chains added since the last call, honouring
    /// EVENT_IDX (`vring_need_event`) or the device's NO_NOTIFY flag. Call under the queue lock;
    /// notify after releasing it.
    fn kick_prepare(&mut self) -> bool;

    /// Whether the device has used chains the driver has not popped yet.
    fn has_used(&self) -> bool;

    /// Pops one used chain, after checking everything the device wrote about it.
    ///
    /// # Errors
    /// A [`DeviceError`] if the device broke the protocol; nothing is consumed.
    fn pop_used(&mut self) -> Result<Option<UsedBuffer>, DeviceError>;

    /// Asks the device not to interrupt for used chains (a hint; the device may still do so).
    fn disable_interrupts(&mut self);

    /// Asks the device to interrupt on the next used chain, then re-checks for chains used in
    /// the meantime. Returns `true` if there are some: the caller must drain again, since no
    /// interrupt may come for them.
    fn enable_interrupts(&mut self) -> bool;

    /// Takes one in-flight chain back from the device (after a device reset), returning its
    /// token, or `None` when nothing is in flight. Call until `None`, then [`Virtqueue::reset`].
    fn detach_next(&mut self) -> Option<Token>;

    /// Returns the ring to its initial state (all slots free, indices zero, memory cleared), as
    /// after creation. Any chain still in flight is forgotten, so detach them first.
    fn reset(&mut self);
}

/// `vring_need_event` (virtio 1.x section 2.7.10): whether moving an index from `old` to `new`
/// crossed `event`, i.e. `event` is in the half-open window `[old, new)` modulo 2^16.
#[must_use]
#[inline]
pub const fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// [`need_event`] for the `published` entries made available since the last check, the index
/// now `new`: whether the window of those entries, `[new - published, new)`, holds `event`. A
/// window of 65,536 entries or more holds every index, so it is true then whatever `event`
/// says, with the same one compare (the window's length is not cut to 16 bits).
#[must_use]
#[inline]
pub const fn need_event_since(event: u16, new: u16, published: u64) -> bool {
    (new.wrapping_sub(event).wrapping_sub(1) as u64) < published
}

#[cfg(test)]
mod tests {
    use super::{need_event, need_event_since};

    #[test]
    fn need_event_since_is_need_event_below_a_whole_index_space_and_true_from_there() {
        for new in [0u16, 1, 9, 65_530, 65_535] {
            for published in (0u64..40).chain([65_530, 65_535, 65_536, 65_537, 131_072, u64::MAX]) {
                for delta in 0u16..50 {
                    let event = new.wrapping_sub(45).wrapping_add(delta);
                    let expected = published > u64::from(u16::MAX)
                        || need_event(event, new, new.wrapping_sub(published as u16));
                    assert_eq!(
                        need_event_since(event, new, published),
                        expected,
                        "{event} {new} {published}"
                    );
                }
            }
        }
    }

    #[test]
    fn need_event_matches_the_window_definition() {
        // Exhaustive over a window that crosses the u16 wrap.
        for old in [0u16, 1, 100, 65_530, 65_535] {
            for step in 0u16..20 {
                let new = old.wrapping_add(step);
                for delta in 0u16..40 {
                    let event = old.wrapping_sub(10).wrapping_add(delta);
                    let in_window = event.wrapping_sub(old) < step;
                    assert_eq!(
                        need_event(event, new, old),
                        in_window,
                        "{event} {new} {old}"
                    );
                }
            }
        }
    }
}
