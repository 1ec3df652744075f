//! Guest memory for the benchmark: one vm-memory region shared by the drivers and the device.
//!
//! The device side (rust-vmm's `virtio-queue`) reads guest physical addresses through
//! `GuestMemoryMmap`; the drivers get the same bytes through a bump allocator that returns both
//! the host pointer and the guest address, exactly as a real HAL returns a virtual and a bus
//! address.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::OnceLock;

use virtio_core::dma::DmaMemory;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Guest physical address of the region (non-zero, so address mix-ups show).
pub const GUEST_BASE: u64 = 0x4000_0000;
/// Size of the region.
pub const GUEST_SIZE: usize = 64 << 20;

/// The benchmark's guest memory and its allocator. Lives for the whole process (the peer's HAL
/// has no `self`, so it reaches the memory through a global).
pub struct GuestRam {
    pub memory: GuestMemoryMmap,
    host_base: usize,
    next: std::sync::Mutex<Cell<usize>>,
}

static RAM: OnceLock<GuestRam> = OnceLock::new();

/// The process-wide guest memory.
pub fn ram() -> &'static GuestRam {
    RAM.get_or_init(|| {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(GUEST_BASE), GUEST_SIZE)])
            .expect("mmap guest memory");
        let host_base = memory
            .get_host_address(GuestAddress(GUEST_BASE))
            .expect("host address") as usize;
        GuestRam {
            memory,
            host_base,
            next: std::sync::Mutex::new(Cell::new(0)),
        }
    })
}

impl GuestRam {
    /// Carves `len` zeroed bytes aligned to `align`; returns (host pointer, guest address).
    pub fn alloc(&self, len: usize, align: usize) -> (NonNull<u8>, u64) {
        let next = self.next.lock().expect("allocator lock");
        let offset = next.get().next_multiple_of(align.max(8));
        assert!(
            offset + len <= GUEST_SIZE,
            "benchmark guest memory exhausted"
        );
        next.set(offset + len);
        let host = NonNull::new((self.host_base + offset) as *mut u8).expect("non-null");
        (host, GUEST_BASE + offset as u64)
    }

    /// Guest address of a host pointer inside the region.
    pub fn guest_address(&self, host: usize) -> u64 {
        assert!(
            host >= self.host_base && host < self.host_base + GUEST_SIZE,
            "not guest memory"
        );
        GUEST_BASE + (host - self.host_base) as u64
    }

    /// Host address of a guest address inside the region.
    pub fn memory_host(&self, guest: u64) -> usize {
        assert!(
            guest >= GUEST_BASE && guest < GUEST_BASE + GUEST_SIZE as u64,
            "not guest memory"
        );
        self.host_base + (guest - GUEST_BASE) as usize
    }

    /// Carves DMA memory for our driver.
    pub fn dma(&self, len: usize, align: usize) -> DmaMemory {
        let (host, guest) = self.alloc(len, align);
        // SAFETY: the range is freshly carved from the mmap, which lives for the whole process,
        // is never handed out twice, and is only accessed through `DmaMemory` by the driver and
        // through vm-memory's volatile accessors by the device model.
        unsafe { DmaMemory::new(host, len, guest) }.expect("8-aligned")
    }
}
