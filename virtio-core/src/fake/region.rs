//! [`RegionHal`]: a [`Hal`] over one contiguous memory region the caller owns, such as the guest
//! memory of a device model, where the bus address is an offset into the region.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::split_at_pages;
use crate::dma::{BusAddress, DmaMemory};
use crate::hal::{Hal, HalError, Segment};

/// A [`Hal`] that carves DMA memory from one region with a bump pointer: byte `i` of the region
/// is at bus address `bus_base + i`. Memory is never reused ([`Hal::dma_free`] does nothing);
/// it goes back with the region.
///
/// Use it when the device side needs the memory in a structure of its own, e.g. rust-vmm's
/// `vm-memory` guest memory, which `virtio-queue` reads at guest physical addresses. Where the
/// device side can take any bus address, [`FakeHal`](super::FakeHal) is the stricter double (it
/// catches double and foreign frees, and its bus addresses are far from CPU addresses).
#[derive(Debug)]
pub struct RegionHal {
    base: NonNull<u8>,
    len: usize,
    bus_base: BusAddress,
    /// Offset of the first byte not handed out yet.
    next: AtomicUsize,
}

// SAFETY: the region is only accessed through `DmaMemory` (atomically) and the bump pointer is
// atomic; `new`'s contract makes the region valid from any thread for the HAL's lifetime.
unsafe impl Send for RegionHal {}
// SAFETY: as for `Send`: shared use only moves the atomic bump pointer.
unsafe impl Sync for RegionHal {}

impl RegionHal {
    /// A HAL over `base .. base + len`, which the device reaches at `bus_base ..`.
    ///
    /// Returns `None` unless `base` and `bus_base` have the same offset within a 4 KiB page, so
    /// that an allocation aligned for the device (up to a page) is aligned for the CPU too.
    ///
    /// # Safety
    /// For as long as this HAL or any [`DmaMemory`] it returned is used, the region is valid for
    /// reads and writes and is accessed only through `DmaMemory` and by the device (no Rust
    /// references to it), and the device reaches byte `i` of it at `bus_base + i`.
    #[must_use]
    pub unsafe fn new(base: NonNull<u8>, len: usize, bus_base: BusAddress) -> Option<Self> {
        const PAGE: u64 = 4096;
        (base.as_ptr().addr() as u64 % PAGE == bus_base % PAGE).then_some(Self {
            base,
            len,
            bus_base,
            next: AtomicUsize::new(0),
        })
    }

    /// The bus address of a CPU address inside the region, if it is inside.
    #[must_use]
    pub fn bus_of(&self, cpu: usize) -> Option<BusAddress> {
        let offset = cpu.checked_sub(self.base.as_ptr().addr())?;
        (offset < self.len).then(|| self.bus_base + offset as u64)
    }

    /// Bytes handed out so far (including alignment padding).
    #[must_use]
    pub fn used(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }
}

// SAFETY: allocations are disjoint pieces of the region (the bump pointer only moves forward),
// zeroed before they are returned, aligned as asked for both the CPU and the device (checked),
// and valid as long as `new`'s contract holds; `translate` maps a CPU address to the bus address
// `new` was promised.
unsafe impl Hal for RegionHal {
    fn dma_alloc(&self, len: usize, align: usize) -> Result<DmaMemory, HalError> {
        let out_of_memory = HalError::OutOfMemory { len };
        let align = align.max(8);
        let base = self.base.as_ptr().addr();
        let mut start = 0;
        self.next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
                start = (base + next).next_multiple_of(align) - base;
                let end = start.checked_add(len).filter(|&end| end <= self.len)?;
                Some(end)
            })
            .map_err(|_| out_of_memory)?;
        let bus = self.bus_base + start as u64;
        if !bus.is_multiple_of(align as u64) {
            return Err(out_of_memory);
        }
        let ptr = NonNull::new(self.base.as_ptr().wrapping_add(start)).ok_or(out_of_memory)?;
        // SAFETY: `start .. start + len` lies inside the region (checked above) and was handed
        // out to no one else; `new`'s contract makes it valid DMA memory at `bus`.
        let memory = unsafe { DmaMemory::new(ptr, len, bus) }.ok_or(out_of_memory)?;
        memory.zero();
        Ok(memory)
    }

    unsafe fn dma_free(&self, _memory: DmaMemory) {
        // A bump allocator: the memory goes back with the region.
    }

    fn translate(
        &self,
        address: usize,
        len: usize,
        out: &mut [Segment],
    ) -> Result<usize, HalError> {
        let untranslatable = HalError::Untranslatable { address };
        let offset = address
            .checked_sub(self.base.as_ptr().addr())
            .ok_or(untranslatable)?;
        offset
            .checked_add(len)
            .filter(|&end| end <= self.len)
            .ok_or(untranslatable)?;
        split_at_pages(address, len, out, |cpu| {
            self.bus_base + (cpu - self.base.as_ptr().addr()) as u64
        })
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{Layout, alloc_zeroed, dealloc};

    use super::*;

    /// A page-aligned heap region, freed on drop.
    struct Region {
        ptr: NonNull<u8>,
        layout: Layout,
    }

    impl Region {
        fn new(len: usize) -> Self {
            let layout = Layout::from_size_align(len, 4096).unwrap();
            // SAFETY: the layout has a non-zero size.
            let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }).unwrap();
            Self { ptr, layout }
        }
    }

    impl Drop for Region {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout, freed once.
            unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
        }
    }

    #[test]
    fn allocations_are_disjoint_aligned_zeroed_and_at_their_bus_offsets() {
        let region = Region::new(4 * 4096);
        assert!(
            // SAFETY: never used; the page offsets differ, so `new` refuses.
            unsafe { RegionHal::new(region.ptr, 4 * 4096, 0x10_0010) }.is_none()
        );
        // SAFETY: the region lives until the end of the test, is only used through the HAL.
        let hal = unsafe { RegionHal::new(region.ptr, 4 * 4096, 0x10_0000) }.unwrap();
        let first = hal.dma_alloc(100, 8).unwrap();
        let second = hal.dma_alloc(4096, 4096).unwrap();
        assert_eq!(first.bus_address(), 0x10_0000);
        assert_eq!(second.bus_address(), 0x10_1000);
        assert_eq!(second.cpu_address() % 4096, 0);
        assert_eq!(hal.bus_of(second.cpu_address() + 5), Some(0x10_1005));
        assert!(second.write_bytes(0, &[0xAA; 16]));
        // A third allocation of the rest fits exactly; one more byte does not.
        let rest = 4 * 4096 - hal.used();
        let third = hal.dma_alloc(rest, 8).unwrap();
        assert_eq!(third.load_u64(0, Ordering::Relaxed), 0);
        assert_eq!(hal.dma_alloc(1, 8), Err(HalError::OutOfMemory { len: 1 }));
    }

    #[test]
    fn translate_splits_at_pages_and_refuses_addresses_outside_the_region() {
        let region = Region::new(4 * 4096);
        // SAFETY: as above.
        let hal = unsafe { RegionHal::new(region.ptr, 4 * 4096, 0) }.unwrap();
        let memory = hal.dma_alloc(3 * 4096, 4096).unwrap();
        let mut out = [Segment::default(); 4];
        let count = hal
            .translate(memory.cpu_address() + 100, 2 * 4096, &mut out)
            .unwrap();
        assert_eq!(count, 3);
        assert_eq!(out[0], Segment::new(memory.bus_address() + 100, 4096 - 100));
        let address = memory.cpu_address() + 4 * 4096;
        assert_eq!(
            hal.translate(address, 1, &mut out),
            Err(HalError::Untranslatable { address })
        );
        assert_eq!(
            hal.translate(memory.cpu_address(), 3 * 4096, &mut out[..2]),
            Err(HalError::TooManySegments { capacity: 2 })
        );
    }
}
