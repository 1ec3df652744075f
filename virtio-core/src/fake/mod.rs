//! Fakes for tests (feature `test-utils`), shared by this crate's tests, the simulator
//! (`tests/`), the fuzzers and the QEMU guest's unit tests:
//! - [`FakeHal`]: heap-backed DMA memory. Bus addresses are deliberately *not* CPU addresses
//!   (they are offset by [`BUS_OFFSET`]), so a driver that hands the device a CPU pointer fails
//!   its tests; every allocation is tracked, so a double or foreign free panics and a leak shows
//!   in [`FakeHal::live_allocations`].
//! - [`RegionHal`]: a bump allocator over one region the caller owns, at bus addresses that are
//!   offsets into it, for device models that read memory through their own structure.
//! - [`pci`]: [`pci::FakeVirtioPci`], a memory-backed virtio PCI device that records what the
//!   driver did and the accesses the spec forbids, and [`pci::RawConfigSpace`], raw bytes.
//! - [`packed_device`]: the device side of a packed virtqueue, written from the spec.
//!
//! # One fake where the doubles' needs agree
//! Merged here: the `vm-memory` HAL of `tests/split_against_virtio_queue.rs` is [`RegionHal`];
//! the byte-array configuration space of the PCI transport's property test is
//! [`pci::RawConfigSpace`]; [`FakeHal`] and [`RegionHal`] share the page splitting of
//! `translate`. Kept apart, because their needs differ:
//! - [`FakeHal`] and [`RegionHal`]: `virtio-queue` reads guest memory through `vm-memory`, at
//!   guest physical addresses inside one mapping; [`FakeHal`]'s allocations are scattered over
//!   the heap at addresses no such mapping covers, and the bookkeeping that makes it strict
//!   (frees checked one by one) has nothing to check in a bump allocator.
//! - The simulator's `Mmio` (`tests/src/device/tests.rs`) forwards [`RegisterIo`] to the device
//!   model's MMIO entry points: glue to a real model, which this crate cannot name, not a
//!   register double. Its `dma` maps through the simulated IOMMU at fresh bus addresses, which
//!   neither HAL here models.
//! - The capability fuzzer's `Config` (`tools/fuzz`) has [`pci::RawConfigSpace`]'s semantics
//!   and could use it; its `Bars` panic on any register access, an oracle for "probe touches no
//!   register" that [`pci::FakeVirtioPci`] answers by recording instead.
//! - The QEMU guest's `FakeBars` (`tools/vmtest-guest/src/pci_scan.rs`) stores 32-bit writes to
//!   an MSI-X table BAR, which [`pci::FakeVirtioPci`] does not model.
//! - The ring benchmark's `PeerHal` (`tools/bench`) implements `virtio-drivers`' own `Hal`
//!   trait, not ours; its guest-memory `dma` carving is what [`RegionHal`] does.
//!
//! The miniport's `platform.rs` and the QEMU guest's `guest/hal.rs` are the production HALs,
//! not doubles.
//!
//! [`RegisterIo`]: crate::hal::RegisterIo

pub mod packed_device;
pub mod pci;
mod region;

pub use region::RegionHal;

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;
use std::sync::Mutex;
use std::vec::Vec;

use crate::dma::{BusAddress, DmaMemory};
use crate::hal::{Hal, HalError, Segment};

/// Added to a CPU address to make the fake bus address.
pub const BUS_OFFSET: u64 = 1 << 56;

#[derive(Debug)]
struct Allocation {
    /// The allocation's pointer, kept (not just its address) so views derived from it keep
    /// its provenance: Miri checks that, and a pointer made from an integer would have none.
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Allocation {
    fn cpu(&self) -> usize {
        self.ptr.as_ptr().addr()
    }
}

// SAFETY: the allocation is plain heap memory owned by the `FakeHal`, accessed only through
// `DmaMemory` (atomically); the pointer is kept for its provenance, not shared as a reference.
unsafe impl Send for Allocation {}

/// A [`Hal`] backed by the process heap. Remembers its live allocations so a device model can
/// map bus addresses back ([`FakeHal::memory_at`]) and so a double or foreign free is caught.
#[derive(Debug, Default)]
pub struct FakeHal {
    live: Mutex<Vec<Allocation>>,
}

impl FakeHal {
    /// An empty fake HAL.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live allocations (tests check that everything is freed).
    ///
    /// # Panics
    /// If the internal lock is poisoned.
    #[must_use]
    pub fn live_allocations(&self) -> usize {
        self.live.lock().unwrap().len()
    }

    /// The DMA memory the device reaches at `bus .. bus + len`, if it lies inside one live
    /// allocation. This is how fake devices read and write what the driver shared.
    ///
    /// # Panics
    /// If the internal lock is poisoned.
    #[must_use]
    pub fn memory_at(&self, bus: BusAddress, len: usize) -> Option<DmaMemory> {
        let cpu = usize::try_from(bus.checked_sub(BUS_OFFSET)?).ok()?;
        let live = self.live.lock().unwrap();
        let alloc = live
            .iter()
            .find(|a| cpu >= a.cpu() && cpu + len <= a.cpu() + a.layout.size())?;
        // `DmaMemory::new` refuses a base that is not 8-aligned; device structures are.
        let ptr = NonNull::new(alloc.ptr.as_ptr().wrapping_add(cpu - alloc.cpu()))?;
        // SAFETY: the range lies inside a live allocation of this HAL, which is valid for reads
        // and writes until freed, and is only accessed through `DmaMemory` (atomically).
        unsafe { DmaMemory::new(ptr, len, bus) }
    }

    /// The bus address of a CPU address inside an allocation (for tests that build chains by
    /// hand).
    #[must_use]
    pub fn bus_of(cpu: usize) -> BusAddress {
        cpu as u64 + BUS_OFFSET
    }
}

impl Drop for FakeHal {
    /// Frees what the test did not (a test that ends in an expected panic, say), so leak
    /// checkers (Miri) see only real leaks. Any `DmaMemory` still held is dead with the HAL.
    fn drop(&mut self) {
        let live = self
            .live
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for alloc in live.drain(..) {
            // SAFETY: pointer and layout of a live `alloc_zeroed`, removed from the list so it
            // is freed once.
            unsafe { dealloc(alloc.ptr.as_ptr(), alloc.layout) };
        }
    }
}

// SAFETY: allocations are zeroed, aligned as asked (at least 8), unique, and live until
// `dma_free`; bus addresses are CPU addresses plus `BUS_OFFSET`, which `memory_at` and
// `translate` invert consistently.
unsafe impl Hal for FakeHal {
    fn dma_alloc(&self, len: usize, align: usize) -> Result<DmaMemory, HalError> {
        let layout = Layout::from_size_align(len.max(1), align.max(8))
            .map_err(|_| HalError::OutOfMemory { len })?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or(HalError::OutOfMemory { len })?;
        self.live.lock().unwrap().push(Allocation { ptr, layout });
        // SAFETY: freshly allocated, zeroed, aligned to at least 8, exclusively ours until
        // `dma_free`.
        unsafe { DmaMemory::new(ptr, len, Self::bus_of(ptr.as_ptr().addr())) }
            .ok_or(HalError::OutOfMemory { len })
    }

    unsafe fn dma_free(&self, memory: DmaMemory) {
        let mut live = self.live.lock().unwrap();
        let position = live
            .iter()
            .position(|a| a.cpu() == memory.cpu_address())
            .expect("FakeHal: freeing memory it did not allocate, or freeing it twice");
        let alloc = live.swap_remove(position);
        // SAFETY: the pointer and layout are exactly those of a live `alloc_zeroed`, removed from
        // the live list so this cannot happen twice.
        unsafe { dealloc(alloc.ptr.as_ptr(), alloc.layout) };
    }

    fn translate(
        &self,
        address: usize,
        len: usize,
        out: &mut [Segment],
    ) -> Result<usize, HalError> {
        // Heap memory is contiguous here; split at 4 KiB pages anyway, as a real HAL would, so
        // callers are exercised with multi-segment buffers.
        address
            .checked_add(len)
            .ok_or(HalError::Untranslatable { address })?;
        split_at_pages(address, len, out, Self::bus_of)
    }
}

/// Splits the CPU buffer `address .. address + len` (whose end the caller checked) at 4 KiB
/// page boundaries into `out`, as a real HAL's scatter-gather list would be, mapping each
/// piece's start with `bus_of`. Shared by the fakes so every caller sees multi-segment buffers.
fn split_at_pages(
    address: usize,
    len: usize,
    out: &mut [Segment],
    bus_of: impl Fn(usize) -> BusAddress,
) -> Result<usize, HalError> {
    const PAGE: usize = 4096;
    let capacity = out.len();
    let end = address + len;
    let mut count = 0;
    let mut cursor = address;
    while cursor < end {
        let page_end = (cursor / PAGE + 1) * PAGE;
        let piece = page_end.min(end) - cursor;
        let slot = out
            .get_mut(count)
            .ok_or(HalError::TooManySegments { capacity })?;
        *slot = Segment::new(bus_of(cursor), piece as u32);
        count += 1;
        cursor += piece;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_zeroed_aligned_and_mapped_back() {
        let hal = FakeHal::new();
        let mem = hal.dma_alloc(4096, 4096).unwrap();
        assert_eq!(mem.cpu_address() % 4096, 0);
        assert_ne!(mem.bus_address(), mem.cpu_address() as u64);
        assert!(
            (0..4096)
                .step_by(8)
                .all(|o| mem.load_u64(o, core::sync::atomic::Ordering::Relaxed) == 0)
        );
        let view = hal.memory_at(mem.bus_address() + 16, 32).unwrap();
        view.store_u32(0, 0xdead_beef, core::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            mem.load_u32(16, core::sync::atomic::Ordering::Relaxed),
            0xdead_beef
        );
        assert!(hal.memory_at(mem.bus_address() + 4090, 32).is_none());
        // SAFETY: allocated above, no device uses it.
        unsafe { hal.dma_free(mem) };
        assert_eq!(hal.live_allocations(), 0);
    }

    #[test]
    fn translate_splits_at_pages_and_reports_short_arrays() {
        let hal = FakeHal::new();
        let mut out = [Segment::default(); 3];
        assert_eq!(hal.translate(4096 - 10, 20, &mut out), Ok(2));
        assert_eq!(out[0].len, 10);
        assert_eq!(out[1].len, 10);
        assert_eq!(
            hal.translate(0, 4 * 4096, &mut out),
            Err(HalError::TooManySegments { capacity: 3 })
        );
    }
}
