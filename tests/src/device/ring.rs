//! The device side of one virtqueue in either layout: rust-vmm's split `Queue`, or virtio-core's
//! spec-written packed device; the chains they hand out, and the bytes read and written in them.
//!
//! Everything above this module (requests, TMFs, events, limits, interrupts) sees one
//! [`DeviceRing`] and one [`Chain`] type, so every scenario runs unchanged on either ring.

use std::sync::atomic::Ordering;

use virtio_core::fake::packed_device::{
    DESC_F_AVAIL, DESC_F_USED, DESC_F_WRITE, DeviceMemory, PackedAreas, PackedDevice, PackedError,
    PackedFeatures,
};

/// Memory at bus addresses, as the device reaches it (through the IOMMU when there is one).
type BusMemory = super::memory::DeviceMemory;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

use super::ChainError;

/// One buffer descriptor of a chain, as the device walked it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Buffer {
    pub address: GuestAddress,
    pub len: u32,
    pub writable: bool,
}

/// A buffer the driver made available, walked and checked.
#[derive(Clone, Debug)]
pub(super) struct Chain {
    /// What the used element names: the head index (split) or the buffer id (packed).
    pub id: u16,
    /// Ring descriptors it occupied (packed: the used descriptor skips them).
    pub descriptors: u16,
    /// Its buffer descriptors in order (an indirect table's entries in place of the
    /// descriptor pointing to it).
    pub buffers: Vec<Buffer>,
}

impl Chain {
    fn part(&self, writable: bool) -> impl Iterator<Item = &Buffer> {
        self.buffers.iter().filter(move |b| b.writable == writable)
    }

    /// Bytes of the device-readable part.
    pub fn readable_len(&self) -> usize {
        self.part(false).map(|b| b.len as usize).sum()
    }

    /// Bytes of the device-writable part.
    pub fn writable_len(&self) -> usize {
        self.part(true).map(|b| b.len as usize).sum()
    }

    /// The first `len` bytes of the readable part (fewer if it is shorter).
    pub fn read(&self, guest: &BusMemory, len: usize) -> Result<Vec<u8>, ChainError> {
        self.read_from(guest, 0, len)
    }

    /// `len` bytes of the readable part from `offset` (fewer if it is shorter).
    pub fn read_from(
        &self,
        guest: &BusMemory,
        offset: usize,
        len: usize,
    ) -> Result<Vec<u8>, ChainError> {
        let mut out = Vec::with_capacity(len);
        let mut skip = offset;
        for buffer in self.part(false) {
            if out.len() == len {
                break;
            }
            let size = buffer.len as usize;
            if skip >= size {
                skip -= size;
                continue;
            }
            let take = (size - skip).min(len - out.len());
            let mut piece = vec![0u8; take];
            let at = buffer
                .address
                .checked_add(skip as u64)
                .ok_or(ChainError::Unmapped)?;
            guest
                .read_slice(&mut piece, at)
                .map_err(|_| ChainError::Unmapped)?;
            out.extend_from_slice(&piece);
            skip = 0;
        }
        Ok(out)
    }

    /// Writes `bytes` into the writable part from `offset`; returns the bytes written (fewer
    /// if the part is shorter).
    pub fn write_at(
        &self,
        guest: &BusMemory,
        offset: usize,
        bytes: &[u8],
    ) -> Result<usize, ChainError> {
        let mut written = 0;
        let mut skip = offset;
        for buffer in self.part(true) {
            if written == bytes.len() {
                break;
            }
            let size = buffer.len as usize;
            if skip >= size {
                skip -= size;
                continue;
            }
            let take = (size - skip).min(bytes.len() - written);
            let at = buffer
                .address
                .checked_add(skip as u64)
                .ok_or(ChainError::Unmapped)?;
            guest
                .write_slice(&bytes[written..written + take], at)
                .map_err(|_| ChainError::Unmapped)?;
            written += take;
            skip = 0;
        }
        Ok(written)
    }
}

/// vm-memory guest memory (any of its memory types: the simulator's, through the IOMMU, or the
/// benchmark's) as virtio-core's spec-written packed device reaches it (a newtype: both the
/// trait and vm-memory's types are foreign here).
pub struct Guest<'a, M>(pub &'a M);

impl<M: Bytes<GuestAddress>> DeviceMemory for Guest<'_, M> {
    fn load_u16(&self, address: u64, order: Ordering) -> Option<u16> {
        self.0.load(GuestAddress(address), order).ok()
    }

    fn store_u16(&self, address: u64, value: u16, order: Ordering) -> Option<()> {
        self.0.store(value, GuestAddress(address), order).ok()
    }

    fn load_u32(&self, address: u64) -> Option<u32> {
        self.0.load(GuestAddress(address), Ordering::Relaxed).ok()
    }

    fn store_u32(&self, address: u64, value: u32) -> Option<()> {
        self.0
            .store(value, GuestAddress(address), Ordering::Relaxed)
            .ok()
    }

    fn load_u64(&self, address: u64) -> Option<u64> {
        self.0.load(GuestAddress(address), Ordering::Relaxed).ok()
    }
}

impl From<PackedError> for ChainError {
    fn from(error: PackedError) -> Self {
        match error {
            PackedError::Unmapped { .. } => Self::Unmapped,
            PackedError::NextNotAvailable { position, flags } => {
                Self::NextNotAvailable { position, flags }
            }
            PackedError::LongerThanQueue { descriptors } => Self::LongerThanQueue {
                descriptors,
                queue_size: 0,
            },
            PackedError::IndirectNotNegotiated { position } => {
                Self::IndirectNotNegotiated { head: position }
            }
            PackedError::IndirectInChain { .. } => Self::IndirectWithNext,
            PackedError::IndirectTableLength { len } => Self::IndirectTableLength { len },
            PackedError::IndirectInIndirect => Self::IndirectInIndirect,
            PackedError::ReadableAfterWritable => Self::ReadableAfterWritable,
            PackedError::EventFlags { flags } => Self::EventFlags { flags },
        }
    }
}

/// The registers of a queue the driver enabled.
pub(super) struct QueueSetup {
    pub max_size: u16,
    pub size: u16,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
    pub packed: bool,
    pub indirect: bool,
    pub event_idx: bool,
}

/// The device side of one virtqueue.
pub(super) enum DeviceRing {
    /// rust-vmm's split queue.
    Split {
        /// The queue.
        queue: Queue,
        /// `VIRTIO_F_INDIRECT_DESC` was negotiated (rust-vmm does not know).
        indirect: bool,
    },
    /// virtio-core's spec-written packed device.
    Packed(PackedDevice),
}

impl DeviceRing {
    /// The ring the registers describe; `Err` if its areas are misaligned or unmapped.
    pub fn new(guest: &BusMemory, setup: &QueueSetup) -> Result<Self, ChainError> {
        if setup.packed {
            let size = setup.size;
            // Section 2.8.10.1 / 4.1.4.3: the ring 16-aligned, the event structures 4-aligned;
            // the ring and both structures mapped.
            let aligned = setup.desc.is_multiple_of(16)
                && setup.driver.is_multiple_of(4)
                && setup.device.is_multiple_of(4);
            let mapped = [
                (setup.desc, 16 * u64::from(size)),
                (setup.driver, 4),
                (setup.device, 4),
            ]
            .iter()
            .all(|&(at, len)| {
                guest.check_range(GuestAddress(at), len as usize, Permissions::ReadWrite)
            });
            if size == 0 || size > setup.max_size || !aligned || !mapped {
                return Err(ChainError::Unmapped);
            }
            return Ok(Self::Packed(PackedDevice::new(
                size,
                PackedAreas {
                    descriptors: setup.desc,
                    driver_event: setup.driver,
                    device_event: setup.device,
                },
                PackedFeatures {
                    indirect: setup.indirect,
                    event_idx: setup.event_idx,
                },
            )));
        }
        let mut queue = Queue::new(setup.max_size.max(1)).map_err(|_| ChainError::Unmapped)?;
        queue.set_size(setup.size);
        queue
            .try_set_desc_table_address(GuestAddress(setup.desc))
            .map_err(|_| ChainError::Unmapped)?;
        queue
            .try_set_avail_ring_address(GuestAddress(setup.driver))
            .map_err(|_| ChainError::Unmapped)?;
        queue
            .try_set_used_ring_address(GuestAddress(setup.device))
            .map_err(|_| ChainError::Unmapped)?;
        queue.set_event_idx(setup.event_idx);
        queue.set_ready(true);
        if !queue.is_valid(guest) {
            return Err(ChainError::Unmapped);
        }
        Ok(Self::Split {
            queue,
            indirect: setup.indirect,
        })
    }

    /// Asks the driver not to notify while the device drains.
    pub fn disable_notification(&mut self, guest: &BusMemory) -> Result<(), ChainError> {
        match self {
            Self::Split { queue, .. } => queue
                .disable_notification(guest)
                .map_err(|_| ChainError::Unmapped),
            Self::Packed(device) => Ok(device.disable_kicks(&Guest(guest))?),
        }
    }

    /// Asks to be notified again; `true` if buffers became available meanwhile.
    pub fn enable_notification(&mut self, guest: &BusMemory) -> Result<bool, ChainError> {
        match self {
            Self::Split { queue, .. } => queue
                .enable_notification(guest)
                .map_err(|_| ChainError::Unmapped),
            Self::Packed(device) => Ok(device.enable_kicks(&Guest(guest))?),
        }
    }

    /// Takes the next available chain and walks it (`Err`: it breaks the protocol, or one of
    /// its buffers lies outside guest memory).
    pub fn pop(&mut self, guest: &BusMemory) -> Result<Option<Chain>, ChainError> {
        let chain = self.pop_unchecked(guest)?;
        if let Some(chain) = &chain
            && !chain.buffers.iter().all(|b| {
                let access = if b.writable {
                    Permissions::Write
                } else {
                    Permissions::Read
                };
                guest.check_range(b.address, b.len as usize, access)
            })
        {
            return Err(ChainError::Unmapped);
        }
        Ok(chain)
    }

    fn pop_unchecked(&mut self, guest: &BusMemory) -> Result<Option<Chain>, ChainError> {
        match self {
            Self::Split { queue, indirect } => {
                let Some(chain) = queue.pop_descriptor_chain(guest) else {
                    return Ok(None);
                };
                let buffers = walk_split(guest, queue, chain.head_index(), *indirect)?;
                Ok(Some(Chain {
                    id: chain.head_index(),
                    descriptors: 1,
                    buffers,
                }))
            }
            Self::Packed(device) => {
                let size = device.size();
                let Some(chain) = device.pop(&Guest(guest)).map_err(|e| match e {
                    PackedError::LongerThanQueue { descriptors } => ChainError::LongerThanQueue {
                        descriptors,
                        queue_size: size,
                    },
                    other => other.into(),
                })?
                else {
                    return Ok(None);
                };
                // The same rule as on the split ring: no more buffer descriptors than the queue
                // size, an indirect table's entries included.
                let descriptors = chain.elements.len() as u32;
                if descriptors > u32::from(size) {
                    return Err(ChainError::LongerThanQueue {
                        descriptors,
                        queue_size: size,
                    });
                }
                Ok(Some(Chain {
                    id: chain.id,
                    descriptors: chain.descriptors,
                    buffers: chain
                        .elements
                        .iter()
                        .map(|e| Buffer {
                            address: GuestAddress(e.address),
                            len: e.len,
                            writable: e.writable,
                        })
                        .collect(),
                }))
            }
        }
    }

    /// Publishes the used element for `chain` with `len` bytes written.
    pub fn add_used(
        &mut self,
        guest: &BusMemory,
        chain: &Chain,
        len: u32,
    ) -> Result<(), ChainError> {
        match self {
            Self::Split { queue, .. } => queue
                .add_used(guest, chain.id, len)
                .map_err(|_| ChainError::Unmapped),
            // WRITE in a used descriptor says the buffer was written (section 2.8.3); `len`
            // counts those bytes either way.
            Self::Packed(device) => {
                Ok(device.push_used(&Guest(guest), chain.id, len, chain.descriptors, len > 0)?)
            }
        }
    }

    /// Publishes a used element `{id, len}` that names no chain the device took (to exercise
    /// the driver's validation); `false` if the ring memory is unusable.
    pub fn publish_bogus(&mut self, guest: &BusMemory, id: u16, len: u32) -> bool {
        match self {
            Self::Split { queue, .. } => {
                let size = queue.size().max(1);
                let next = queue.next_used();
                let ring = queue.used_ring();
                let element = ring + 4 + u64::from(next % size) * 8;
                let written = guest
                    .write_obj(u32::from(id).to_le(), GuestAddress(element))
                    .is_ok()
                    && guest
                        .write_obj(len.to_le(), GuestAddress(element + 4))
                        .is_ok();
                if !written {
                    return false;
                }
                let new = next.wrapping_add(1);
                // ORDERING: release pairs with the driver's acquire load of used.idx, so the
                // element written above is visible first (virtio 1.x section 2.7.8.2).
                if guest
                    .store(new.to_le(), GuestAddress(ring + 2), Ordering::Release)
                    .is_err()
                {
                    return false;
                }
                queue.set_next_used(new);
                true
            }
            Self::Packed(device) => device.push_used(&Guest(guest), id, len, 1, false).is_ok(),
        }
    }

    /// Writes a used element of any shape at the device's next used position. On the split
    /// ring a `{id, len}` element, published by advancing `used.idx` (as
    /// [`Self::publish_bogus`]). On the packed ring a descriptor with these `flags`: if their
    /// AVAIL and USED bits mark it used for the driver (both equal to the used wrap counter),
    /// the device moves on by `descriptors` ring slots, as it would for a buffer of that many
    /// descriptors; otherwise the driver does not see it and the device's next used
    /// descriptor goes to the same slot. `false` if the ring memory is unusable.
    pub fn publish_raw(
        &mut self,
        guest: &BusMemory,
        id: u16,
        len: u32,
        flags: u16,
        descriptors: u16,
    ) -> bool {
        match self {
            Self::Split { .. } => self.publish_bogus(guest, id, len),
            Self::Packed(device) => {
                let (position, wrap) = device.next_used();
                let visible =
                    (flags & DESC_F_AVAIL != 0) == wrap && (flags & DESC_F_USED != 0) == wrap;
                if visible
                    && device
                        .push_used(
                            &Guest(guest),
                            id,
                            len,
                            descriptors,
                            flags & DESC_F_WRITE != 0,
                        )
                        .is_err()
                {
                    return false;
                }
                // Unseen, the descriptor is only written over a slot the device holds (read, not
                // yet given back). With the used position caught up with the available one the
                // slot is the driver's, which may be half-way through its next chain there
                // (address, length and id stored, flags not yet): the lie's length and id would
                // become the chain's when the driver's flags make it available.
                if !visible && !Self::holds_slot(device, position, wrap) {
                    return false;
                }
                // Unseen by the driver, the slot must not look available to the device either,
                // or the device would take its own lie for a driver's buffer when its reading
                // reaches the slot. Earlier lies may have moved the used position past the
                // available one, so that is any slot, not only the next one the device reads:
                // it reads a slot at or past `next_avail` in this lap, one before it in the
                // next. Flipping both bits makes AVAIL differ from USED (never used for the
                // driver) and from that lap's wrap (never available for the device).
                let (next_avail, avail_wrap) = device.next_avail();
                let read_wrap = if position >= next_avail {
                    avail_wrap
                } else {
                    !avail_wrap
                };
                let flags = if !visible && PackedDevice::is_available(flags, read_wrap) {
                    flags ^ (DESC_F_AVAIL | DESC_F_USED)
                } else {
                    flags
                };
                device
                    .write_raw(&Guest(guest), position, id, len, flags)
                    .is_ok()
            }
        }
    }

    /// Whether a chain the device has not taken is available (a peek: nothing is taken).
    pub fn has_available(&self, guest: &BusMemory) -> bool {
        match self {
            Self::Split { queue, .. } => queue
                .avail_idx(guest, Ordering::Acquire)
                .is_ok_and(|index| index.0 != queue.next_avail()),
            Self::Packed(device) => device.has_available(&Guest(guest)).unwrap_or(false),
        }
    }

    /// Whether the device's used position is past its available one (packed ring: a used
    /// descriptor the device writes now lands on a slot it has not read; only a lie of the
    /// hostile mode gets it there). Split rings keep used elements apart: never.
    pub fn used_ahead_of_available(&self) -> bool {
        match self {
            Self::Split { .. } => false,
            // Less than a lap apart, the used position is behind the available one (on a slot
            // the device holds), at it, or ahead.
            Self::Packed(device) => {
                let (used, used_wrap) = device.next_used();
                !Self::holds_slot(device, used, used_wrap)
                    && (used, used_wrap) != device.next_avail()
            }
        }
    }

    /// Whether packed ring slot `position` of the lap `wrap` is one the device has read and not
    /// given back: at or past the used position (where it is by the caller's contract) and
    /// before the available one, less than a lap away.
    fn holds_slot(device: &PackedDevice, position: u16, wrap: bool) -> bool {
        let (avail, avail_wrap) = device.next_avail();
        if wrap == avail_wrap {
            position < avail
        } else {
            position >= avail
        }
    }

    /// The flags a used descriptor written now carries (packed: AVAIL and USED both equal to
    /// the used wrap counter; split rings have no flags in used elements: 0).
    pub fn used_flags(&self) -> u16 {
        match self {
            Self::Split { .. } => 0,
            Self::Packed(device) => {
                if device.next_used().1 {
                    DESC_F_AVAIL | DESC_F_USED
                } else {
                    0
                }
            }
        }
    }

    /// Whether the driver asks for an interrupt for what was used since the last decision.
    pub fn needs_notification(&mut self, guest: &BusMemory) -> Result<bool, ChainError> {
        match self {
            // An unreadable used_event: interrupt, as a device that cannot tell would.
            Self::Split { queue, .. } => Ok(queue.needs_notification(guest).unwrap_or(true)),
            Self::Packed(device) => Ok(device.needs_interrupt(&Guest(guest))?),
        }
    }
}

/// Walks the split chain at `head` through its descriptor table (and indirect table) as the
/// driver wrote it, instead of rust-vmm's reader: rust-vmm follows an indirect descriptor
/// whatever was negotiated and silently stops a chain at a bad `next`, a loop or a nested
/// table, so the device checks those itself. Returns the buffer descriptors in order.
fn walk_split(
    guest: &BusMemory,
    queue: &Queue,
    head: u16,
    indirect_negotiated: bool,
) -> Result<Vec<Buffer>, ChainError> {
    let queue_size = queue.size();
    let mut table = GuestAddress(queue.desc_table());
    let mut table_len = queue_size;
    let mut index = head;
    let mut indirect = false;
    let mut steps_in_table = 0u32;
    let mut buffers = Vec::new();
    let mut seen_writable = false;
    loop {
        if index >= table_len {
            return Err(ChainError::NextOutOfRange {
                next: index,
                table_len,
            });
        }
        steps_in_table += 1;
        if steps_in_table > u32::from(table_len) {
            return Err(ChainError::Loop);
        }
        let at = table
            .checked_add(u64::from(index) * 16)
            .ok_or(ChainError::Unmapped)?;
        let descriptor: Descriptor = guest.read_obj(at).map_err(|_| ChainError::Unmapped)?;
        if descriptor.refers_to_indirect_table() {
            if !indirect_negotiated {
                return Err(ChainError::IndirectNotNegotiated { head });
            }
            if indirect {
                return Err(ChainError::IndirectInIndirect);
            }
            if descriptor.has_next() {
                return Err(ChainError::IndirectWithNext);
            }
            let len = descriptor.len();
            let entries = len / 16;
            if len == 0 || !len.is_multiple_of(16) || entries > u32::from(u16::MAX) {
                return Err(ChainError::IndirectTableLength { len });
            }
            table = descriptor.addr();
            table_len = entries as u16;
            index = 0;
            indirect = true;
            steps_in_table = 0;
            continue;
        }
        if descriptor.is_write_only() {
            seen_writable = true;
        } else if seen_writable {
            return Err(ChainError::ReadableAfterWritable);
        }
        buffers.push(Buffer {
            address: descriptor.addr(),
            len: descriptor.len(),
            writable: descriptor.is_write_only(),
        });
        if !descriptor.has_next() {
            break;
        }
        index = descriptor.next();
    }
    let descriptors = buffers.len() as u32;
    if descriptors > u32::from(queue_size) {
        return Err(ChainError::LongerThanQueue {
            descriptors,
            queue_size,
        });
    }
    Ok(buffers)
}
