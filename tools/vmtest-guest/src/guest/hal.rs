//! The bare-metal [`Hal`]: DMA memory carved from a static pool, bus address = physical address
//! = virtual address (the guest is identity-mapped and QEMU's PC has no IOMMU here).

use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;

use virtio_core::dma::DmaMemory;
use virtio_core::hal::{Hal, HalError, Segment};
use vmtest_guest::arena::Arena;

/// Bytes of DMA memory: rings, request headers, and data buffers up to the device's default
/// `max_sectors` (0xFFFF sectors, just under 32 MiB) with room to spare.
pub const POOL_SIZE: usize = 48 << 20;

/// The pool. Atomics, because the memory is only ever accessed through [`DmaMemory`]'s atomic
/// loads and stores and by the device; being interior-mutable it lands in `.bss`, zeroed by
/// QEMU's loader.
#[repr(C, align(4096))]
struct Pool([AtomicU64; POOL_SIZE / 8]);

static POOL: Pool = Pool([const { AtomicU64::new(0) }; POOL_SIZE / 8]);

/// The guest's [`Hal`]. There is one per boot (it owns the pool's bookkeeping).
pub struct BareMetalHal {
    arena: Arena,
    base: NonNull<u8>,
}

impl BareMetalHal {
    /// The HAL over the static pool. Calling this twice would hand out the same memory twice,
    /// so the guest calls it once, in `kmain`.
    pub fn new() -> Self {
        Self {
            arena: Arena::new(POOL_SIZE),
            base: NonNull::from(&POOL).cast(),
        }
    }

    /// Bytes of the pool in use.
    pub fn used(&self) -> usize {
        self.arena.used()
    }

    /// The pool's CPU address range.
    fn pool_range(&self) -> core::ops::Range<usize> {
        let start = self.base.as_ptr().addr();
        start..start + POOL_SIZE
    }
}

// SAFETY: allocations come from a static pool that lives forever, are disjoint (the arena never
// hands out overlapping ranges while they are live), aligned as asked (the pool is page-aligned
// and the arena aligns offsets), and zeroed on allocation. The guest is identity-mapped with no
// IOMMU, so the CPU address is the bus address the device uses, as `translate` reports.
unsafe impl Hal for BareMetalHal {
    fn dma_alloc(&self, len: usize, align: usize) -> Result<DmaMemory, HalError> {
        if align > 4096 {
            return Err(HalError::OutOfMemory { len });
        }
        let offset = self
            .arena
            .allocate(len, align.max(virtio_core::dma::DMA_BASE_ALIGN))
            .map_err(|_| HalError::OutOfMemory { len })?;
        let ptr = self.base.map_addr(|base| base.saturating_add(offset));
        // SAFETY: `offset .. offset + len` lies inside the static pool (the arena checks its
        // capacity), is reserved for this allocation alone until `dma_free`, and the pool is
        // only accessed atomically through `DmaMemory`; the bus address is the physical
        // address, which is the identity-mapped CPU address.
        let memory = unsafe { DmaMemory::new(ptr, len, ptr.as_ptr().addr() as u64) }
            .ok_or(HalError::OutOfMemory { len })?;
        memory.zero();
        Ok(memory)
    }

    unsafe fn dma_free(&self, memory: DmaMemory) {
        let offset = memory.cpu_address().wrapping_sub(self.pool_range().start);
        self.arena.release(offset, memory.len());
    }

    fn translate(
        &self,
        address: usize,
        len: usize,
        out: &mut [Segment],
    ) -> Result<usize, HalError> {
        // Identity mapping: any range of the guest's RAM is one physically contiguous piece,
        // split only where a segment's 32-bit length runs out. Only the pool is shared with the
        // device, so other addresses are refused.
        let end = address
            .checked_add(len)
            .ok_or(HalError::Untranslatable { address })?;
        let pool = self.pool_range();
        if address < pool.start || end > pool.end {
            return Err(HalError::Untranslatable { address });
        }
        let capacity = out.len();
        let mut count = 0;
        let mut cursor = address;
        while cursor < end {
            let piece = (end - cursor).min(u32::MAX as usize & !0xfff);
            let slot = out
                .get_mut(count)
                .ok_or(HalError::TooManySegments { capacity })?;
            *slot = Segment::new(cursor as u64, piece as u32);
            count += 1;
            cursor += piece;
        }
        Ok(count)
    }
}
