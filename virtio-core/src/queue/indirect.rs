//! Indirect descriptor tables written before the ring's lock is taken: [`IndirectWriter`]
//! writes a chain's descriptors into the caller's table in the layout of one ring format and
//! checks the chain on the way; the [`IndirectChain`] it returns is added to a ring as one
//! descriptor by [`Virtqueue::add_table`](super::Virtqueue::add_table).
//!
//! The split of the work: everything about the segments (none empty, readable before writable,
//! the writable total within 32 bits, the count within the table) is checked here, where they
//! are written; everything about the ring (the feature negotiated, the format, a free
//! descriptor) is checked by the ring when it adds the table. Together they are the checks
//! [`Virtqueue::add`](super::Virtqueue::add) makes for an indirect chain.
#![forbid(unsafe_code)]

use core::mem::offset_of;
use core::sync::atomic::Ordering;

use super::QueueError;
use super::split::{Descriptor as SplitDescriptor, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use crate::dma::{BusAddress, DmaMemory, DmaTable};
use crate::hal::Segment;

/// Bytes of one descriptor, in either format (virtio 1.2 sections 2.7.5 and 2.8.13).
const DESC_SIZE: usize = 16;
const _: () = assert!(size_of::<SplitDescriptor>() == DESC_SIZE);
const _: () = assert!(size_of::<super::packed::Descriptor>() == DESC_SIZE);

/// Field offsets: `addr` and `len` are common; the split format's `flags` and `next` and the
/// packed format's `id` and `flags` share the last four bytes differently.
const ADDR: usize = offset_of!(SplitDescriptor, addr);
const LEN: usize = offset_of!(SplitDescriptor, len);
const SPLIT_FLAGS: usize = offset_of!(SplitDescriptor, flags);
const SPLIT_NEXT: usize = offset_of!(SplitDescriptor, next);
const PACKED_ID: usize = offset_of!(super::packed::Descriptor, id);
const PACKED_FLAGS: usize = offset_of!(super::packed::Descriptor, flags);
const _: () = assert!(ADDR == offset_of!(super::packed::Descriptor, addr));
const _: () = assert!(LEN == offset_of!(super::packed::Descriptor, len));

/// The ring format a table is laid out for: the two formats' indirect descriptors differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RingFormat {
    /// `struct virtq_desc` (section 2.7.5.3): `addr, len, flags, next`, chained by `NEXT` and
    /// `next` in table order.
    Split = 1,
    /// `struct pvirtq_desc` (section 2.8.7): `addr, len, id, flags`; `WRITE` is the only valid
    /// flag, the table's length says where the chain ends and the Buffer ID is reserved
    /// (written as zero).
    Packed = 2,
}

impl RingFormat {
    /// The format stored as `raw` ([`RingFormat`] as `u8`), if it is one.
    #[must_use]
    pub const fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::Split),
            2 => Some(Self::Packed),
            _ => None,
        }
    }
}

/// Writes one chain into an indirect table, readable segments first, then writable ones.
///
/// Nothing is published: the device sees the table only once a ring adds the
/// [`IndirectChain`] that [`IndirectWriter::finish`] returns, with the ring's release store
/// ordering these stores before it. A writer that fails leaves a partly written table that no
/// ring descriptor points at.
#[derive(Debug)]
pub struct IndirectWriter {
    /// The whole table memory, as descriptors (at most `u16::MAX` of them).
    table: DmaTable<DESC_SIZE, 8>,
    /// Bus address of the table.
    bus: BusAddress,
    format: RingFormat,
    /// Descriptors written: at most the table's capacity, so at most `u16::MAX` (kept as a
    /// `usize`, the width it indexes the table with).
    count: usize,
    /// Total length of the readable segments (saturating).
    readable_len: u32,
    /// Total length of the writable segments (checked: it bounds the device's used length).
    writable_len: u32,
}

impl IndirectWriter {
    /// A writer of `format` descriptors into `memory`, from its first byte: as many as
    /// `memory` holds, up to `u16::MAX` (the split format's `next` fields are 16-bit).
    ///
    /// # Errors
    /// [`QueueError::IndirectMisaligned`] unless the bus address is 16-byte aligned (sections
    /// 2.7.5.3 and 2.8.7 require descriptor alignment).
    #[inline]
    pub fn new(memory: &DmaMemory, format: RingFormat) -> Result<Self, QueueError> {
        let bus = memory.bus_address();
        if !bus.is_multiple_of(DESC_SIZE as u64) {
            return Err(QueueError::IndirectMisaligned);
        }
        // Capped in bytes before the division: that `capacity * DESC_SIZE` fits is then plain
        // to the compiler, which drops the region check below.
        let capacity = memory.len().min(usize::from(u16::MAX) * DESC_SIZE) / DESC_SIZE;
        // In the region by construction; `DmaMemory::table` checks it again all the same.
        let table = memory
            .table(0, capacity)
            .ok_or(QueueError::IndirectMisaligned)?;
        Ok(Self {
            table,
            bus,
            format,
            count: 0,
            readable_len: 0,
            writable_len: 0,
        })
    }

    /// Descriptors written so far.
    #[must_use]
    pub const fn len(&self) -> u16 {
        // At most the capacity, which is at most `u16::MAX`.
        self.count as u16
    }

    /// Whether nothing was written yet.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends a device-readable segment.
    ///
    /// # Errors
    /// [`QueueError::EmptySegment`] for a zero length, [`QueueError::ReadableAfterWritable`]
    /// once a writable segment was written (sections 2.7.4.1 / 2.8.4: readable descriptors
    /// come first), [`QueueError::ChainTooLong`] when the table is full.
    #[inline]
    pub fn push_readable(&mut self, segment: Segment) -> Result<(), QueueError> {
        if self.writable_len != 0 {
            return Err(QueueError::ReadableAfterWritable);
        }
        if segment.len == 0 {
            return Err(QueueError::EmptySegment);
        }
        self.write(segment, 0)?;
        self.readable_len = self.readable_len.saturating_add(segment.len);
        Ok(())
    }

    /// Appends a device-writable segment.
    ///
    /// # Errors
    /// [`QueueError::EmptySegment`] for a zero length, [`QueueError::WritableTooLong`] if the
    /// writable total passes 32 bits, [`QueueError::ChainTooLong`] when the table is full.
    #[inline]
    pub fn push_writable(&mut self, segment: Segment) -> Result<(), QueueError> {
        if segment.len == 0 {
            return Err(QueueError::EmptySegment);
        }
        let writable_len = self
            .writable_len
            .checked_add(segment.len)
            .ok_or(QueueError::WritableTooLong)?;
        self.write(segment, VIRTQ_DESC_F_WRITE)?;
        // Non-zero from here on, which is what tells a later readable segment it is late.
        self.writable_len = writable_len;
        Ok(())
    }

    /// Writes descriptor `count` for `segment` with `write` (0 or `VIRTQ_DESC_F_WRITE`; the
    /// bit has the same value in both formats).
    #[inline]
    fn write(&mut self, segment: Segment, write: u16) -> Result<(), QueueError> {
        let index = self.count;
        if index >= self.table.count() {
            return Err(QueueError::ChainTooLong {
                segments: index + 1,
                limit: self.table.count(),
            });
        }
        // ORDERING: Relaxed: the table is published by the ring's release store of the
        // descriptor (split: `avail.idx`; packed: the descriptor's flags) that points at it.
        let relaxed = Ordering::Relaxed;
        self.table.store_u64(index, ADDR, segment.address, relaxed);
        self.table.store_u32(index, LEN, segment.len, relaxed);
        match self.format {
            RingFormat::Split => {
                // Every descriptor links to the next in table order; `finish` clears NEXT in
                // the last one (one store there instead of a "last or not" test here), whose
                // `next` the device then ignores (section 2.7.5).
                // `index` is below the capacity, at most `u16::MAX`: `next` fits.
                let next = (index + 1) as u16;
                self.table
                    .store_u16(index, SPLIT_FLAGS, write | VIRTQ_DESC_F_NEXT, relaxed);
                self.table.store_u16(index, SPLIT_NEXT, next, relaxed);
            }
            RingFormat::Packed => {
                // Section 2.8.7: WRITE is the only valid flag in an indirect descriptor and
                // the Buffer ID is reserved; the table's length ends the chain, so no NEXT.
                self.table.store_u16(index, PACKED_ID, 0, relaxed);
                self.table.store_u16(index, PACKED_FLAGS, write, relaxed);
            }
        }
        self.count += 1;
        Ok(())
    }

    /// Ends the chain: what a ring needs to add the table as one descriptor.
    ///
    /// # Errors
    /// [`QueueError::EmptyChain`] if nothing was written.
    #[inline]
    pub fn finish(self) -> Result<IndirectChain, QueueError> {
        // `count` never passes the table's capacity, so the last index lies inside the table
        // exactly when there is a descriptor (with none it wraps to `usize::MAX`): one compare,
        // the one the store below makes again and the compiler merges with this.
        let last = self.count.wrapping_sub(1);
        if last >= self.table.count() {
            return Err(QueueError::EmptyChain);
        }
        if self.format == RingFormat::Split {
            let write = if self.writable_len == 0 {
                0
            } else {
                VIRTQ_DESC_F_WRITE
            };
            self.table
                .store_u16(last, SPLIT_FLAGS, write, Ordering::Relaxed);
        }
        Ok(IndirectChain {
            table: self.bus,
            descriptors: self.count as u16,
            writable: self.writable_len,
            posted: self.writable_len.saturating_add(self.readable_len),
            format: self.format,
        })
    }
}

/// A chain written into an indirect table by an [`IndirectWriter`], ready for
/// [`Virtqueue::add_table`](super::Virtqueue::add_table): where the table is, how many
/// descriptors it holds, the byte totals the ring keeps to check the device's used length,
/// and the format it was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndirectChain {
    table: BusAddress,
    descriptors: u16,
    writable: u32,
    posted: u32,
    format: RingFormat,
}

impl IndirectChain {
    /// The record of a chain a writer returned, from the parts its accessors gave, for a caller
    /// that keeps it in its own memory between two contexts (the miniport writes the table in
    /// BuildIo and adds it in StartIo). `None` if the parts cannot come from a writer: no
    /// descriptor, more writable bytes than posted, or a misaligned table. The segments
    /// themselves were checked when they were written; a record that names a table no writer
    /// wrote is the caller's bug.
    #[must_use]
    #[inline]
    pub fn from_parts(
        format: RingFormat,
        table: BusAddress,
        descriptors: u16,
        writable: u32,
        posted: u32,
    ) -> Option<Self> {
        let consistent =
            descriptors != 0 && writable <= posted && table.is_multiple_of(DESC_SIZE as u64);
        consistent.then_some(Self {
            table,
            descriptors,
            writable,
            posted,
            format,
        })
    }

    /// Bus address of the table.
    #[must_use]
    pub const fn table(&self) -> BusAddress {
        self.table
    }

    /// Descriptors in the table (at least one).
    #[must_use]
    pub const fn descriptors(&self) -> u16 {
        self.descriptors
    }

    /// Bytes of the table the ring descriptor names: 16 per descriptor.
    #[must_use]
    pub const fn table_len(&self) -> u32 {
        self.descriptors as u32 * DESC_SIZE as u32
    }

    /// Total length of the writable segments.
    #[must_use]
    pub const fn writable(&self) -> u32 {
        self.writable
    }

    /// Total length of every segment (saturating): no used length may exceed it.
    #[must_use]
    pub const fn posted(&self) -> u32 {
        self.posted
    }

    /// Whether a ring of `format`, with indirect descriptors negotiated when `negotiated`, may
    /// add this chain: what both rings' `add_table` check before taking a descriptor.
    ///
    /// # Errors
    /// [`QueueError::IndirectNotNegotiated`] without the feature, [`QueueError::IndirectFormat`]
    /// for a table written in the other ring's format.
    #[inline]
    pub const fn check_for(&self, format: RingFormat, negotiated: bool) -> Result<(), QueueError> {
        // One compare on every add: both formats are nonzero, so the chain's format equals
        // `format` times `negotiated` only when the feature is negotiated and the formats match.
        if self.format as u8 == format as u8 * negotiated as u8 {
            return Ok(());
        }
        Err(self.refusal(negotiated))
    }

    /// Why [`Self::check_for`] refused the chain.
    #[cold]
    const fn refusal(&self, negotiated: bool) -> QueueError {
        if !negotiated {
            return QueueError::IndirectNotNegotiated;
        }
        QueueError::IndirectFormat {
            written: self.format,
        }
    }

    /// The checks of [`Self::check_for`] one by one, the definition its single compare is tested
    /// against.
    #[cfg(test)]
    const fn check_for_by_definition(
        &self,
        format: RingFormat,
        negotiated: bool,
    ) -> Result<(), QueueError> {
        if !negotiated {
            return Err(QueueError::IndirectNotNegotiated);
        }
        if !matches!(
            (self.format, format),
            (RingFormat::Split, RingFormat::Split) | (RingFormat::Packed, RingFormat::Packed)
        ) {
            return Err(QueueError::IndirectFormat {
                written: self.format,
            });
        }
        Ok(())
    }

    /// The ring format the table was written in.
    #[must_use]
    pub const fn format(&self) -> RingFormat {
        self.format
    }
}

/// Writes `readable` then `writable` into `table` with a writer of `format`: the rings' tests
/// compare what `add_table` does with such a chain against `add`.
#[cfg(test)]
pub(super) fn write_chain(
    table: &DmaMemory,
    format: RingFormat,
    readable: &[Segment],
    writable: &[Segment],
) -> Result<IndirectChain, QueueError> {
    let mut writer = IndirectWriter::new(table, format)?;
    for segment in readable {
        writer.push_readable(*segment)?;
    }
    for segment in writable {
        writer.push_writable(*segment)?;
    }
    writer.finish()
}

#[cfg(test)]
mod tests;
