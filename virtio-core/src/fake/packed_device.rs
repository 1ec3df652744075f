//! The device side of a packed virtqueue, written from the text of virtio 1.2 section 2.8 and
//! nothing else: the one spec-written packed device that virtio-core's ring tests, the
//! simulator's virtio-scsi device and the ring benchmark all drive (rust-vmm's `virtio-queue`,
//! their independent peer for split rings, has no packed queue).
//!
//! It reaches the driver's memory only through [`DeviceMemory`], at bus addresses, so the same
//! device runs over [`FakeHal`] memory, over vm-memory guest memory, or anything else. What it
//! reads is untrusted: a descriptor the driver got wrong is a [`PackedError`], never a panic.
//!
//! Access sizes follow the descriptor's fields (`addr` 64-bit, `len` 32-bit, `id` and `flags`
//! 16-bit; the event suppression structure's two 16-bit halves), each field always at its own
//! size, as the driver side accesses them.

use core::sync::atomic::{Ordering, fence};
use std::vec::Vec;

use super::FakeHal;
use crate::dma::DmaMemory;
use crate::queue::need_event;

/// `VIRTQ_DESC_F_NEXT`: the buffer continues in the next descriptor (section 2.8.13).
pub const DESC_F_NEXT: u16 = 1;
/// `VIRTQ_DESC_F_WRITE`: device-writable (section 2.8.13).
pub const DESC_F_WRITE: u16 = 2;
/// `VIRTQ_DESC_F_INDIRECT`: the descriptor points to an indirect table (section 2.8.7).
pub const DESC_F_INDIRECT: u16 = 4;
/// `VIRTQ_DESC_F_AVAIL` (section 2.8.1).
pub const DESC_F_AVAIL: u16 = 1 << 7;
/// `VIRTQ_DESC_F_USED` (section 2.8.1).
pub const DESC_F_USED: u16 = 1 << 15;
/// `RING_EVENT_FLAGS_ENABLE` (section 2.8.10).
pub const EVENT_FLAGS_ENABLE: u16 = 0;
/// `RING_EVENT_FLAGS_DISABLE` (section 2.8.10).
pub const EVENT_FLAGS_DISABLE: u16 = 1;
/// `RING_EVENT_FLAGS_DESC` (section 2.8.10; only with `VIRTIO_F_EVENT_IDX`).
pub const EVENT_FLAGS_DESC: u16 = 2;

/// Memory the device reaches at bus addresses. `None`: nothing is mapped there.
///
/// Every access is atomic at its own size, so a device on another thread races with the
/// driver only as the memory model allows.
pub trait DeviceMemory {
    /// Loads the 16-bit field at `address`.
    fn load_u16(&self, address: u64, order: Ordering) -> Option<u16>;
    /// Stores the 16-bit field at `address`.
    fn store_u16(&self, address: u64, value: u16, order: Ordering) -> Option<()>;
    /// Loads the 32-bit field at `address` (relaxed).
    fn load_u32(&self, address: u64) -> Option<u32>;
    /// Stores the 32-bit field at `address` (relaxed).
    fn store_u32(&self, address: u64, value: u32) -> Option<()>;
    /// Loads the 64-bit field at `address` (relaxed).
    fn load_u64(&self, address: u64) -> Option<u64>;
}

/// The fake HAL's view of `width` bytes at `address`: `DmaMemory` views start 8-aligned, so
/// the view starts at the aligned address below and the field sits at the returned offset.
fn fake_view(hal: &FakeHal, address: u64, width: usize) -> Option<(DmaMemory, usize)> {
    let offset = (address % 8) as usize;
    Some((
        hal.memory_at(address - offset as u64, offset + width)?,
        offset,
    ))
}

impl DeviceMemory for FakeHal {
    fn load_u16(&self, address: u64, order: Ordering) -> Option<u16> {
        let (view, offset) = fake_view(self, address, 2)?;
        Some(view.load_u16(offset, order))
    }

    fn store_u16(&self, address: u64, value: u16, order: Ordering) -> Option<()> {
        let (view, offset) = fake_view(self, address, 2)?;
        view.store_u16(offset, value, order);
        Some(())
    }

    fn load_u32(&self, address: u64) -> Option<u32> {
        let (view, offset) = fake_view(self, address, 4)?;
        Some(view.load_u32(offset, Ordering::Relaxed))
    }

    fn store_u32(&self, address: u64, value: u32) -> Option<()> {
        let (view, offset) = fake_view(self, address, 4)?;
        view.store_u32(offset, value, Ordering::Relaxed);
        Some(())
    }

    fn load_u64(&self, address: u64) -> Option<u64> {
        let (view, offset) = fake_view(self, address, 8)?;
        Some(view.load_u64(offset, Ordering::Relaxed))
    }
}

/// The offset of `width` bytes at bus `address` inside `memory`, if they lie inside it.
fn dma_offset(memory: &DmaMemory, address: u64, width: usize) -> Option<usize> {
    let offset = usize::try_from(address.checked_sub(memory.bus_address())?).ok()?;
    (offset.checked_add(width)? <= memory.len()).then_some(offset)
}

/// One region of DMA memory at its own bus addresses (a ring alone, when the device touches
/// nothing else).
impl DeviceMemory for DmaMemory {
    fn load_u16(&self, address: u64, order: Ordering) -> Option<u16> {
        let offset = dma_offset(self, address, 2)?;
        Some(DmaMemory::load_u16(self, offset, order))
    }

    fn store_u16(&self, address: u64, value: u16, order: Ordering) -> Option<()> {
        let offset = dma_offset(self, address, 2)?;
        DmaMemory::store_u16(self, offset, value, order);
        Some(())
    }

    fn load_u32(&self, address: u64) -> Option<u32> {
        let offset = dma_offset(self, address, 4)?;
        Some(DmaMemory::load_u32(self, offset, Ordering::Relaxed))
    }

    fn store_u32(&self, address: u64, value: u32) -> Option<()> {
        let offset = dma_offset(self, address, 4)?;
        DmaMemory::store_u32(self, offset, value, Ordering::Relaxed);
        Some(())
    }

    fn load_u64(&self, address: u64) -> Option<u64> {
        let offset = dma_offset(self, address, 8)?;
        Some(DmaMemory::load_u64(self, offset, Ordering::Relaxed))
    }
}

/// Where the three areas of a packed queue are (the queue's `desc`, `driver` and `device`
/// registers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedAreas {
    /// The descriptor ring.
    pub descriptors: u64,
    /// The driver event suppression structure (written by the driver).
    pub driver_event: u64,
    /// The device event suppression structure (written by the device).
    pub device_event: u64,
}

/// What the device negotiated that changes how it reads the ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackedFeatures {
    /// `VIRTIO_F_INDIRECT_DESC`.
    pub indirect: bool,
    /// `VIRTIO_F_EVENT_IDX`.
    pub event_idx: bool,
}

/// One buffer descriptor of a chain, as the device read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Element {
    /// `addr`.
    pub address: u64,
    /// `len`.
    pub len: u32,
    /// `VIRTQ_DESC_F_WRITE`.
    pub writable: bool,
    /// The raw `flags` (for tests that hold a driver to reserved bits the device ignores).
    pub flags: u16,
    /// The raw `id` (reserved and ignored inside an indirect table and before a chain's last
    /// descriptor).
    pub id: u16,
}

/// A buffer the driver made available, as the device read it (section 2.8.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedChain {
    /// The buffer id, from the chain's last descriptor.
    pub id: u16,
    /// Ring descriptors the buffer occupied (the used descriptor skips this many).
    pub descriptors: u16,
    /// Its buffer descriptors in order, an indirect table's entries in place of the
    /// descriptor that points to it.
    pub elements: Vec<Element>,
    /// It was an indirect table.
    pub indirect: bool,
    /// The ring descriptor that points to the indirect table, if it was one (for tests that
    /// hold a driver to what the device ignores: its WRITE bit, the table's alignment).
    pub indirect_descriptor: Option<Element>,
}

impl PackedChain {
    /// Bytes the device may write.
    #[must_use]
    pub fn writable_len(&self) -> u64 {
        self.elements
            .iter()
            .filter(|e| e.writable)
            .map(|e| u64::from(e.len))
            .sum()
    }
}

/// What the driver wrote that the spec does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackedError {
    /// Ring, table or event structure memory that is not mapped.
    Unmapped {
        /// The address.
        address: u64,
    },
    /// A chain continues (NEXT) into a descriptor that is not available.
    NextNotAvailable {
        /// The ring position.
        position: u16,
        /// Its flags.
        flags: u16,
    },
    /// A buffer of more ring descriptors than the queue size (section 2.8.6): it would wrap
    /// onto itself.
    LongerThanQueue {
        /// Descriptors counted when the device gave up (at least the queue size plus one).
        descriptors: u32,
    },
    /// `VIRTQ_DESC_F_INDIRECT` without `VIRTIO_F_INDIRECT_DESC` (section 2.8.7).
    IndirectNotNegotiated {
        /// The ring position.
        position: u16,
    },
    /// An indirect descriptor chained with NEXT or inside a chain (section 2.8.7: "MUST NOT
    /// write direct descriptors with VIRTQ_DESC_F_INDIRECT set in a scatter-gather list linked
    /// by VIRTQ_DESC_F_NEXT").
    IndirectInChain {
        /// The ring position.
        position: u16,
    },
    /// An indirect table whose length is 0 or not a multiple of 16, or one with more entries
    /// than the queue size.
    IndirectTableLength {
        /// The descriptor's `len`.
        len: u32,
    },
    /// `VIRTQ_DESC_F_INDIRECT` inside an indirect table (section 2.8.7).
    IndirectInIndirect,
    /// A device-readable element after a device-writable one (section 2.8.17 via 2.7.4.2).
    ReadableAfterWritable,
    /// The driver event suppression flags are the reserved value 3, or DESC without
    /// `VIRTIO_F_EVENT_IDX` (section 2.8.10).
    EventFlags {
        /// The flags.
        flags: u16,
    },
}

impl core::fmt::Display for PackedError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Unmapped { address } => write!(f, "address {address:#x} is not mapped"),
            Self::NextNotAvailable { position, flags } => write!(
                f,
                "chain continues into descriptor {position} (flags {flags:#06x}), which is not available"
            ),
            Self::LongerThanQueue { descriptors } => {
                write!(
                    f,
                    "buffer of {descriptors} descriptors is longer than the queue"
                )
            }
            Self::IndirectNotNegotiated { position } => write!(
                f,
                "descriptor {position} is indirect without VIRTIO_F_INDIRECT_DESC"
            ),
            Self::IndirectInChain { position } => {
                write!(f, "indirect descriptor {position} is part of a chain")
            }
            Self::IndirectTableLength { len } => {
                write!(f, "indirect table length {len} is not usable")
            }
            Self::IndirectInIndirect => f.write_str("indirect descriptor inside an indirect table"),
            Self::ReadableAfterWritable => {
                f.write_str("device-readable descriptor after a device-writable one")
            }
            Self::EventFlags { flags } => write!(
                f,
                "driver event suppression flags {flags:#x} are not allowed"
            ),
        }
    }
}

impl core::error::Error for PackedError {}

/// The device side of one packed virtqueue.
///
/// Positions are ring slots (`0..size`) with a wrap counter; the device also counts used
/// positions free-running (`u16`) to decide EVENT_IDX notifications as Linux's vhost does.
#[derive(Clone, Debug)]
pub struct PackedDevice {
    size: u16,
    areas: PackedAreas,
    features: PackedFeatures,
    next_avail: u16,
    avail_wrap: bool,
    next_used: u16,
    used_wrap: bool,
    /// Used positions advanced, free-running.
    used_counter: u16,
    /// `used_counter` at the last notification decision (`None`: none made yet).
    decided_at: Option<u16>,
    /// Kicks are disabled in the device event suppression structure.
    kicks_disabled: bool,
}

impl PackedDevice {
    /// The device side of a queue of `size` descriptors at `areas`, reset state (both wrap
    /// counters 1, section 2.8.1).
    #[must_use]
    pub fn new(size: u16, areas: PackedAreas, features: PackedFeatures) -> Self {
        Self {
            size: size.max(1),
            areas,
            features,
            next_avail: 0,
            avail_wrap: true,
            next_used: 0,
            used_wrap: true,
            used_counter: 0,
            decided_at: None,
            kicks_disabled: false,
        }
    }

    /// The queue size.
    #[must_use]
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The areas.
    #[must_use]
    pub fn areas(&self) -> PackedAreas {
        self.areas
    }

    /// The next position the device reads and its copy of the driver's wrap counter.
    #[must_use]
    pub fn next_avail(&self) -> (u16, bool) {
        (self.next_avail, self.avail_wrap)
    }

    /// The next position the device writes a used descriptor at, and its wrap counter.
    #[must_use]
    pub fn next_used(&self) -> (u16, bool) {
        (self.next_used, self.used_wrap)
    }

    /// Section 2.8.1: a descriptor is available when AVAIL equals the wrap counter and USED
    /// does not.
    #[must_use]
    pub fn is_available(flags: u16, wrap: bool) -> bool {
        (flags & DESC_F_AVAIL != 0) == wrap && (flags & DESC_F_USED != 0) != wrap
    }

    /// The address of ring slot `position`.
    #[must_use]
    pub fn descriptor_address(&self, position: u16) -> u64 {
        self.areas.descriptors + u64::from(position) * 16
    }

    /// Advances a (position, wrap counter) pair by one slot.
    #[must_use]
    pub fn step(&self, position: u16, wrap: bool) -> (u16, bool) {
        if position + 1 >= self.size {
            (0, !wrap)
        } else {
            (position + 1, wrap)
        }
    }

    fn load16(
        memory: &impl DeviceMemory,
        address: u64,
        order: Ordering,
    ) -> Result<u16, PackedError> {
        memory
            .load_u16(address, order)
            .ok_or(PackedError::Unmapped { address })
    }

    fn store16(
        memory: &impl DeviceMemory,
        address: u64,
        value: u16,
        order: Ordering,
    ) -> Result<(), PackedError> {
        memory
            .store_u16(address, value, order)
            .ok_or(PackedError::Unmapped { address })
    }

    /// Reads the descriptor at `address` (`addr`, `len`, `id`, `flags`; flags with `order`).
    fn read_descriptor(
        memory: &impl DeviceMemory,
        address: u64,
        order: Ordering,
    ) -> Result<Element, PackedError> {
        let flags = Self::load16(memory, address + 14, order)?;
        let unmapped = PackedError::Unmapped { address };
        Ok(Element {
            address: memory.load_u64(address).ok_or(unmapped)?,
            len: memory.load_u32(address + 8).ok_or(unmapped)?,
            id: Self::load16(memory, address + 12, Ordering::Relaxed)?,
            writable: flags & DESC_F_WRITE != 0,
            flags,
        })
    }

    /// Whether the descriptor at the device's read position is available.
    ///
    /// # Errors
    /// Unmapped ring memory.
    pub fn has_available(&self, memory: &impl DeviceMemory) -> Result<bool, PackedError> {
        // ORDERING: acquire pairs with the driver's release store of a chain's first flags,
        // which it makes last (section 2.8.21), so a chain seen available is seen whole.
        let flags = Self::load16(
            memory,
            self.descriptor_address(self.next_avail) + 14,
            Ordering::Acquire,
        )?;
        Ok(Self::is_available(flags, self.avail_wrap))
    }

    /// Takes the next available buffer (section 2.8.6), or `None` if there is none. On an
    /// error the device's read position is unchanged.
    ///
    /// # Errors
    /// What the driver wrote breaks the spec, or names unmapped memory.
    pub fn pop(&mut self, memory: &impl DeviceMemory) -> Result<Option<PackedChain>, PackedError> {
        if !self.has_available(memory)? {
            return Ok(None);
        }
        let (mut position, mut wrap) = (self.next_avail, self.avail_wrap);
        let mut chain = PackedChain {
            id: 0,
            descriptors: 0,
            elements: Vec::new(),
            indirect: false,
            indirect_descriptor: None,
        };
        let mut seen_writable = false;
        let mut push = |element: Element| {
            if element.writable {
                seen_writable = true;
            } else if seen_writable {
                return Err(PackedError::ReadableAfterWritable);
            }
            Ok(())
        };
        loop {
            let address = self.descriptor_address(position);
            // Relaxed: the acquire in `has_available` ordered the whole chain (the driver
            // released the head's flags after every other descriptor of it).
            let descriptor = Self::read_descriptor(memory, address, Ordering::Relaxed)?;
            if chain.descriptors > 0 && !Self::is_available(descriptor.flags, wrap) {
                return Err(PackedError::NextNotAvailable {
                    position,
                    flags: descriptor.flags,
                });
            }
            chain.descriptors += 1;
            if chain.descriptors > self.size {
                return Err(PackedError::LongerThanQueue {
                    descriptors: u32::from(chain.descriptors),
                });
            }
            let next = descriptor.flags & DESC_F_NEXT != 0;
            if descriptor.flags & DESC_F_INDIRECT != 0 {
                if !self.features.indirect {
                    return Err(PackedError::IndirectNotNegotiated { position });
                }
                if next || chain.descriptors > 1 {
                    return Err(PackedError::IndirectInChain { position });
                }
                let len = descriptor.len;
                let entries = len / 16;
                // The table may hold more entries than the queue size: a device sets its own
                // limit on it (QEMU's is 1024), which callers enforce on `elements`.
                if len == 0 || len % 16 != 0 {
                    return Err(PackedError::IndirectTableLength { len });
                }
                for entry in 0..u64::from(entries) {
                    let element = Self::read_descriptor(
                        memory,
                        descriptor.address.wrapping_add(entry * 16),
                        Ordering::Relaxed,
                    )?;
                    // Section 2.8.7: WRITE is the only valid flag in the table; NEXT and the
                    // id are reserved and ignored, INDIRECT is forbidden.
                    if element.flags & DESC_F_INDIRECT != 0 {
                        return Err(PackedError::IndirectInIndirect);
                    }
                    push(element)?;
                    chain.elements.push(element);
                }
                chain.indirect = true;
                chain.indirect_descriptor = Some(descriptor);
            } else {
                push(descriptor)?;
                chain.elements.push(descriptor);
            }
            (position, wrap) = self.step(position, wrap);
            if !next {
                chain.id = descriptor.id;
                break;
            }
        }
        (self.next_avail, self.avail_wrap) = (position, wrap);
        Ok(Some(chain))
    }

    /// Writes one used descriptor for buffer `id` (`len` bytes written; WRITE set if `write`)
    /// at the used position, then skips the `descriptors` the buffer occupied (section 2.8.6).
    ///
    /// # Errors
    /// Unmapped ring memory (nothing is published then).
    pub fn push_used(
        &mut self,
        memory: &impl DeviceMemory,
        id: u16,
        len: u32,
        descriptors: u16,
        write: bool,
    ) -> Result<(), PackedError> {
        let address = self.descriptor_address(self.next_used);
        Self::store16(memory, address + 12, id, Ordering::Relaxed)?;
        memory
            .store_u32(address + 8, len)
            .ok_or(PackedError::Unmapped { address })?;
        let wrap_bits = if self.used_wrap {
            DESC_F_AVAIL | DESC_F_USED
        } else {
            0
        };
        let flags = wrap_bits | if write { DESC_F_WRITE } else { 0 };
        // ORDERING: release publishes id and len before the flags that make the descriptor used
        // (section 2.8.21); pairs with the driver's acquire load of the flags.
        Self::store16(memory, address + 14, flags, Ordering::Release)?;
        for _ in 0..descriptors.clamp(1, self.size) {
            (self.next_used, self.used_wrap) = self.step(self.next_used, self.used_wrap);
            self.used_counter = self.used_counter.wrapping_add(1);
        }
        Ok(())
    }

    /// Asks the driver not to notify (section 2.8.10), while the device drains the ring.
    ///
    /// # Errors
    /// Unmapped event structure.
    pub fn disable_kicks(&mut self, memory: &impl DeviceMemory) -> Result<(), PackedError> {
        if self.kicks_disabled {
            return Ok(());
        }
        self.kicks_disabled = true;
        Self::store16(
            memory,
            self.areas.device_event + 2,
            EVENT_FLAGS_DISABLE,
            Ordering::Relaxed,
        )
    }

    /// Asks to be notified again, for the descriptor at the read position with EVENT_IDX,
    /// for any otherwise; then re-checks the ring. `Ok(true)`: a buffer became available
    /// meanwhile (the driver may not notify for it), so the device must drain again.
    ///
    /// # Errors
    /// Unmapped ring or event structure.
    pub fn enable_kicks(&mut self, memory: &impl DeviceMemory) -> Result<bool, PackedError> {
        let event = self.areas.device_event;
        if self.features.event_idx {
            let off_wrap = self.next_avail | (u16::from(self.avail_wrap) << 15);
            Self::store16(memory, event, off_wrap, Ordering::Relaxed)?;
            // ORDERING: release after the offset pairs with the driver's acquire load of the
            // flags, so a driver that sees DESC sees the offset it goes with.
            Self::store16(memory, event + 2, EVENT_FLAGS_DESC, Ordering::Release)?;
        } else {
            Self::store16(memory, event + 2, EVENT_FLAGS_ENABLE, Ordering::Relaxed)?;
        }
        self.kicks_disabled = false;
        // ORDERING: a full fence between publishing the event structure and re-reading the
        // ring pairs with the driver's full fence between making a buffer available and reading
        // this structure: one of the two sees the other's write, so no buffer is left without
        // either a kick or this re-check (section 2.8.21).
        fence(Ordering::SeqCst);
        self.has_available(memory)
    }

    /// Whether the driver asks for a used buffer notification for the used descriptors written
    /// since the last decision (section 2.8.10): never with DISABLE, for any with ENABLE, and
    /// with DESC (EVENT_IDX) if the descriptor named by offset and wrap counter was passed.
    ///
    /// # Errors
    /// Unmapped event structure, or flags the spec reserves.
    pub fn needs_interrupt(&mut self, memory: &impl DeviceMemory) -> Result<bool, PackedError> {
        // ORDERING: the used descriptors written before are ordered before the read of the
        // driver's event structure; pairs with the driver's full fence between re-enabling
        // interrupts and re-checking the ring (section 2.8.21), so one side sees the other.
        fence(Ordering::SeqCst);
        let event = self.areas.driver_event;
        let flags = Self::load16(memory, event + 2, Ordering::Acquire)? & 3;
        let old = self.decided_at.replace(self.used_counter);
        let new = self.used_counter;
        match flags {
            EVENT_FLAGS_DISABLE => Ok(false),
            EVENT_FLAGS_ENABLE => Ok(old != Some(new)),
            EVENT_FLAGS_DESC if self.features.event_idx => {
                let off_wrap = Self::load16(memory, event, Ordering::Relaxed)?;
                let Some(old) = old else {
                    return Ok(true);
                };
                // The named descriptor in the free-running space: the current lap if its wrap
                // counter is the device's, else the lap before (as vhost does).
                let lap_start = new.wrapping_sub(self.next_used);
                let mut named = lap_start.wrapping_add(off_wrap & 0x7fff);
                if (off_wrap & 0x8000 != 0) != self.used_wrap {
                    named = named.wrapping_sub(self.size);
                }
                Ok(need_event(named, new, old))
            }
            flags => Err(PackedError::EventFlags { flags }),
        }
    }

    /// Writes arbitrary values into ring slot `position` as if it were a used descriptor
    /// (tests of malformed devices); the device's own state is unchanged.
    ///
    /// # Errors
    /// Unmapped ring memory.
    pub fn write_raw(
        &self,
        memory: &impl DeviceMemory,
        position: u16,
        id: u16,
        len: u32,
        flags: u16,
    ) -> Result<(), PackedError> {
        let address = self.descriptor_address(position);
        Self::store16(memory, address + 12, id, Ordering::Relaxed)?;
        memory
            .store_u32(address + 8, len)
            .ok_or(PackedError::Unmapped { address })?;
        // ORDERING: as in `push_used`.
        Self::store16(memory, address + 14, flags, Ordering::Release)
    }

    /// Writes the device event suppression structure as given (tests that steer the driver's
    /// kicks), followed by a full fence.
    ///
    /// # Errors
    /// Unmapped event structure.
    pub fn set_device_event(
        &mut self,
        memory: &impl DeviceMemory,
        off_wrap: u16,
        flags: u16,
    ) -> Result<(), PackedError> {
        let event = self.areas.device_event;
        Self::store16(memory, event, off_wrap, Ordering::Relaxed)?;
        // ORDERING: as in `enable_kicks`.
        Self::store16(memory, event + 2, flags, Ordering::Release)?;
        self.kicks_disabled = flags == EVENT_FLAGS_DISABLE;
        // ORDERING: as in `enable_kicks`, before the caller re-reads the ring.
        fence(Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hal::Hal;

    fn rig(size: u16, features: PackedFeatures) -> (FakeHal, PackedDevice, u64) {
        let hal = FakeHal::new();
        let ring = hal.dma_alloc(16 * usize::from(size) + 8, 16).unwrap();
        let base = ring.bus_address();
        let areas = PackedAreas {
            descriptors: base,
            driver_event: base + 16 * u64::from(size),
            device_event: base + 16 * u64::from(size) + 4,
        };
        (hal, PackedDevice::new(size, areas, features), base)
    }

    /// Writes a descriptor as a driver would: the flags last, with release.
    fn post(hal: &FakeHal, base: u64, position: u16, element: (u64, u32, u16, u16)) {
        let at = base + u64::from(position) * 16;
        let memory = hal.memory_at(at, 16).unwrap();
        memory.store_u64(0, element.0, Ordering::Relaxed);
        memory.store_u32(8, element.1, Ordering::Relaxed);
        memory.store_u16(12, element.2, Ordering::Relaxed);
        memory.store_u16(14, element.3, Ordering::Release);
    }

    const AVAIL: u16 = DESC_F_AVAIL;

    #[test]
    fn reads_a_chain_and_answers_with_one_used_descriptor_that_skips_it() {
        let (hal, mut device, base) = rig(4, PackedFeatures::default());
        post(&hal, base, 1, (0x2000, 8, 0, AVAIL | DESC_F_WRITE));
        post(&hal, base, 0, (0x1000, 4, 9, AVAIL | DESC_F_NEXT));
        let chain = device.pop(&hal).unwrap().unwrap();
        assert_eq!(chain.id, 0, "the id is the last descriptor's");
        assert_eq!(chain.descriptors, 2);
        assert_eq!(chain.writable_len(), 8);
        assert_eq!(device.pop(&hal).unwrap(), None);
        device.push_used(&hal, 0, 8, 2, true).unwrap();
        assert_eq!(device.next_used(), (2, true));
        let flags = hal.load_u16(base + 14, Ordering::Relaxed).unwrap();
        assert_eq!(flags, AVAIL | DESC_F_USED | DESC_F_WRITE);
    }

    #[test]
    fn a_chain_into_a_descriptor_not_available_is_an_error_and_consumes_nothing() {
        let (hal, mut device, base) = rig(4, PackedFeatures::default());
        post(&hal, base, 0, (0x1000, 4, 0, AVAIL | DESC_F_NEXT));
        assert_eq!(
            device.pop(&hal),
            Err(PackedError::NextNotAvailable {
                position: 1,
                flags: 0
            })
        );
        assert_eq!(device.next_avail(), (0, true));
    }

    #[test]
    fn indirect_rules_are_enforced() {
        let (hal, mut device, base) = rig(4, PackedFeatures::default());
        let table = hal.dma_alloc(32, 16).unwrap();
        post(
            &hal,
            base,
            0,
            (table.bus_address(), 32, 0, AVAIL | DESC_F_INDIRECT),
        );
        assert_eq!(
            device.pop(&hal),
            Err(PackedError::IndirectNotNegotiated { position: 0 })
        );
        let (hal, mut device, base) = rig(
            4,
            PackedFeatures {
                indirect: true,
                event_idx: false,
            },
        );
        let table = hal.dma_alloc(32, 16).unwrap();
        table.store_u16(14, DESC_F_INDIRECT, Ordering::Relaxed);
        post(
            &hal,
            base,
            0,
            (table.bus_address(), 32, 0, AVAIL | DESC_F_INDIRECT),
        );
        assert_eq!(device.pop(&hal), Err(PackedError::IndirectInIndirect));
        table.store_u16(14, 0, Ordering::Relaxed);
        table.store_u16(30, DESC_F_WRITE, Ordering::Relaxed);
        let chain = device.pop(&hal).unwrap().unwrap();
        assert!(chain.indirect);
        assert_eq!(chain.elements.len(), 2);
        post(
            &hal,
            base,
            1,
            (table.bus_address(), 24, 0, AVAIL | DESC_F_INDIRECT),
        );
        assert_eq!(
            device.pop(&hal),
            Err(PackedError::IndirectTableLength { len: 24 })
        );
    }

    #[test]
    fn event_idx_interrupts_once_the_named_descriptor_is_passed() {
        let (hal, mut device, base) = rig(
            4,
            PackedFeatures {
                indirect: false,
                event_idx: true,
            },
        );
        let driver_event = base + 64;
        // The driver asks for an interrupt when position 2 of the first lap is used.
        hal.store_u16(driver_event, 2 | 0x8000, Ordering::Relaxed);
        hal.store_u16(driver_event + 2, EVENT_FLAGS_DESC, Ordering::Relaxed);
        device.push_used(&hal, 0, 0, 1, false).unwrap();
        assert!(device.needs_interrupt(&hal).unwrap(), "first decision");
        device.push_used(&hal, 1, 0, 1, false).unwrap();
        assert!(!device.needs_interrupt(&hal).unwrap(), "position 1 only");
        device.push_used(&hal, 2, 0, 1, false).unwrap();
        assert!(device.needs_interrupt(&hal).unwrap(), "position 2 written");
        device.push_used(&hal, 3, 0, 1, false).unwrap();
        assert!(!device.needs_interrupt(&hal).unwrap(), "already passed");
        hal.store_u16(driver_event + 2, 3, Ordering::Relaxed);
        assert_eq!(
            device.needs_interrupt(&hal),
            Err(PackedError::EventFlags { flags: 3 })
        );
    }
}
