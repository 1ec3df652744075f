//! The simulated machine's DMA-able memory: one anonymous mapping whose "physical" addresses
//! are its process addresses, with a thread-safe first-fit allocator, and the IOMMU the device
//! reaches it through when DMA remapping is on.
//!
//! The mapping is made by vm-memory (`MmapRegion::new`, anonymous and `MAP_NORESERVE`, so untouched
//! pages cost nothing) and then registered as a `GuestMemoryMmap` region whose guest address is
//! the mapping's own host address. The driver under test therefore hands the device plain
//! pointers as bus addresses, and the device reaches them only through vm-memory, which refuses
//! any address outside the region instead of dereferencing it.
//!
//! With an IOMMU ([`PhysicalMemory::with_iommu`]) the device does not see physical addresses at
//! all: it reaches memory through rust-vmm's `IommuMemory`, whose translation table
//! ([`Translation`]) holds only the ranges the port driver mapped for DMA
//! ([`PhysicalMemory::map`]), each at an I/O virtual address (IOVA) far from any physical one.
//! A device access to any other address fails, as a DMA-remapping fault does, and is recorded
//! ([`PhysicalMemory::iommu_faults`]), unless the device model excuses it as the consequence
//! of its own hostile lie ([`PhysicalMemory::excuse_faults_of_this_thread`]).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::thread::ThreadId;

use vm_memory::iommu::{Error as IommuError, IotlbIterator, IovaRange};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap, Iommu, IommuMemory,
    Iotlb, MmapRegion, Permissions,
};

/// Default size of the simulated memory: 1 GiB of address space, reserved lazily.
pub const DEFAULT_SIZE: usize = 1 << 30;

/// Why [`PhysicalMemory::new`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryError {
    /// The anonymous mapping could not be created (`errno`, if known).
    Map {
        /// The OS error code.
        errno: Option<i32>,
    },
    /// The mapping could not be registered as a guest region at its own address.
    Register {
        /// The host (and guest) address of the mapping.
        address: u64,
    },
    /// A size of zero was asked for.
    Empty,
}

/// Why [`PhysicalMemory::free`] refused a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The range is not inside the memory.
    Outside {
        /// The address given.
        address: usize,
        /// The length given.
        len: usize,
    },
    /// The range overlaps memory that is already free (a double free).
    AlreadyFree {
        /// The address given.
        address: usize,
        /// The length given.
        len: usize,
    },
}

/// The memory as the device reaches it: through the IOMMU when it is on, else directly.
pub type DeviceMemory = IommuMemory<GuestMemoryMmap, Translation>;

/// The first I/O virtual address the IOMMU hands out: bit 56, above every user-space pointer
/// (and so every simulated physical address), so that a physical address handed to the device
/// never translates by accident.
pub const IOVA_BASE: u64 = 1 << 56;

/// A device access the IOMMU refused: no mapping (or a mapping without the access) covers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IommuFault {
    /// The bus address the device used.
    pub address: u64,
    /// The bytes it wanted.
    pub len: usize,
    /// Whether it wanted to write.
    pub write: bool,
}

/// The IOMMU's translation table: each mapping takes fresh IOVA pages (never reused, with an
/// unmapped guard page after it), keeps its offset in the page, and maps byte-exactly the range
/// the port driver mapped, so a device access one byte outside it faults.
#[derive(Debug, Default)]
pub struct Translation {
    iotlb: RwLock<Iotlb>,
    /// The next free IOVA page.
    next: Mutex<u64>,
    faults: Mutex<Faults>,
}

/// The faults recorded so far: those still charged (with the thread whose access faulted) and
/// those the device model excused.
#[derive(Debug, Default)]
struct Faults {
    charged: Vec<(ThreadId, IommuFault)>,
    excused: Vec<IommuFault>,
}

impl Translation {
    fn map(&self, physical: u64, len: usize) -> Option<u64> {
        let pages = (physical % 4096 + len as u64).div_ceil(4096) + 1;
        let iova = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let page = (*next).max(IOVA_BASE);
            *next = page.checked_add(pages * 4096)?;
            page + physical % 4096
        };
        self.iotlb
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .set_mapping(
                GuestAddress(iova),
                GuestAddress(physical),
                len,
                Permissions::ReadWrite,
            )
            .ok()?;
        Some(iova)
    }

    fn unmap(&self, iova: u64, len: usize) {
        self.iotlb
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .invalidate_mapping(GuestAddress(iova), len);
    }
}

impl Iommu for Translation {
    type IotlbGuard<'a> = RwLockReadGuard<'a, Iotlb>;

    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<Self::IotlbGuard<'_>>, IommuError> {
        let iotlb = self.iotlb.read().unwrap_or_else(PoisonError::into_inner);
        Iotlb::lookup(iotlb, iova, length, access).map_err(|fails| {
            self.faults
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .charged
                .push((
                    std::thread::current().id(),
                    IommuFault {
                        address: iova.0,
                        len: length,
                        write: access.has_write(),
                    },
                ));
            IommuError::CannotResolve {
                iova_range: IovaRange { base: iova, length },
                reason: format!(
                    "{} unmapped range(s), {} without the access",
                    fails.misses.len(),
                    fails.access_fails.len()
                ),
            }
        })
    }
}

#[derive(Debug)]
struct Inner {
    memory: GuestMemoryMmap,
    /// The same memory behind the IOMMU (in pass-through when it is off).
    device: DeviceMemory,
    base: usize,
    size: usize,
    /// Free ranges as offset -> length, coalesced: no two are adjacent or overlapping.
    free: Mutex<BTreeMap<usize, usize>>,
}

/// The simulated physical memory. A cheap handle: clones share the memory.
#[derive(Clone, Debug)]
pub struct PhysicalMemory {
    inner: Arc<Inner>,
}

impl PhysicalMemory {
    /// Maps `size` bytes (rounded up to 4 KiB) and registers them at their own address.
    ///
    /// # Errors
    /// [`MemoryError`] if the mapping or the registration fails.
    pub fn new(size: usize) -> Result<Self, MemoryError> {
        Self::build(size, false)
    }

    /// As [`PhysicalMemory::new`], with the device behind an IOMMU: it reaches only what
    /// [`PhysicalMemory::map`] mapped, at the bus addresses `map` returned.
    ///
    /// # Errors
    /// As [`PhysicalMemory::new`].
    pub fn with_iommu(size: usize) -> Result<Self, MemoryError> {
        Self::build(size, true)
    }

    fn build(size: usize, iommu: bool) -> Result<Self, MemoryError> {
        if size == 0 {
            return Err(MemoryError::Empty);
        }
        let size = size.next_multiple_of(4096);
        let region = MmapRegion::new(size).map_err(|e| MemoryError::Map {
            errno: match e {
                vm_memory::mmap::MmapRegionError::Mmap(io) => io.raw_os_error(),
                _ => None,
            },
        })?;
        let base = region.as_ptr().addr();
        let address = base as u64;
        let region = GuestRegionMmap::new(region, GuestAddress(address))
            .ok_or(MemoryError::Register { address })?;
        let memory = GuestMemoryMmap::from_regions(vec![region])
            .map_err(|_| MemoryError::Register { address })?;
        let mut free = BTreeMap::new();
        free.insert(0, size);
        let device = IommuMemory::new(memory.clone(), Translation::default(), iommu, ());
        Ok(Self {
            inner: Arc::new(Inner {
                memory,
                device,
                base,
                size,
                free: Mutex::new(free),
            }),
        })
    }

    /// The memory as the device sees it.
    #[must_use]
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.inner.memory
    }

    /// The memory as the device reaches it: bus addresses, translated by the IOMMU if it is on.
    #[must_use]
    pub fn device_memory(&self) -> &DeviceMemory {
        &self.inner.device
    }

    /// Whether the device reaches memory through an IOMMU.
    #[must_use]
    pub fn iommu_enabled(&self) -> bool {
        self.inner.device.get_iommu_enabled()
    }

    /// Maps `len` bytes at physical `address` for the device's DMA and returns their bus
    /// address: a fresh IOVA with the IOMMU on, `address` itself without one. `None` for an
    /// empty range or one outside the memory.
    #[must_use]
    pub fn map(&self, address: usize, len: usize) -> Option<u64> {
        if len == 0 || !self.contains(address, len) {
            return None;
        }
        if self.iommu_enabled() {
            self.inner.device.iommu().map(address as u64, len)
        } else {
            Some(address as u64)
        }
    }

    /// Removes the mapping of `len` bytes at bus address `bus` (from [`PhysicalMemory::map`]);
    /// the device's next access there faults. Nothing to do without an IOMMU.
    pub fn unmap(&self, bus: u64, len: usize) {
        if self.iommu_enabled() && len > 0 {
            self.inner.device.iommu().unmap(bus, len);
        }
    }

    /// The device accesses the IOMMU refused, in order, less those excused
    /// ([`Self::excuse_faults_of_this_thread`]).
    #[must_use]
    pub fn iommu_faults(&self) -> Vec<IommuFault> {
        self.faults()
            .charged
            .iter()
            .map(|&(_, fault)| fault)
            .collect()
    }

    /// The faults [`Self::excuse_faults_of_this_thread`] excused, in order.
    #[must_use]
    pub fn excused_iommu_faults(&self) -> Vec<IommuFault> {
        self.faults().excused.clone()
    }

    /// Excuses every fault the calling thread's accesses caused and nothing excused yet. The device model calls it when a chain it cannot read is its own lie's
    /// consequence (a lie named an id the driver then reused and gave back): the fault is then
    /// no more the driver's than the chain error is. Faults of other threads stay charged; an
    /// earlier fault of this thread on a queue the model did not lie on came with its own chain
    /// error, recorded as the driver's violation.
    pub fn excuse_faults_of_this_thread(&self) {
        let this = std::thread::current().id();
        let mut faults = self.faults();
        let (mine, others) = std::mem::take(&mut faults.charged)
            .into_iter()
            .partition::<Vec<_>, _>(|&(thread, _)| thread == this);
        faults.charged = others;
        faults
            .excused
            .extend(mine.into_iter().map(|(_, fault)| fault));
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.inner
            .device
            .iommu()
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The first address of the memory.
    #[must_use]
    pub fn base(&self) -> usize {
        self.inner.base
    }

    /// Size of the memory in bytes.
    #[must_use]
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// Whether `address .. address + len` lies entirely inside the memory.
    #[must_use]
    pub fn contains(&self, address: usize, len: usize) -> bool {
        let Some(offset) = address.checked_sub(self.inner.base) else {
            return false;
        };
        offset
            .checked_add(len)
            .is_some_and(|end| end <= self.inner.size)
    }

    /// Allocates `len` zeroed bytes aligned to `align` (a power of two; at least 8 is used),
    /// first fit. `None` if `len` is zero, `align` is not a power of two, or nothing fits.
    #[must_use]
    pub fn alloc(&self, len: usize, align: usize) -> Option<NonNull<u8>> {
        if len == 0 || !align.is_power_of_two() {
            return None;
        }
        let align = align.max(8);
        let base = self.inner.base;
        let offset = {
            let mut free = self.free_list();
            let (start, aligned, range_len) = free.iter().find_map(|(&start, &range_len)| {
                let aligned = (base + start).checked_next_multiple_of(align)? - base;
                let end = aligned.checked_add(len)?;
                (end <= start + range_len).then_some((start, aligned, range_len))
            })?;
            free.remove(&start);
            if aligned > start {
                free.insert(start, aligned - start);
            }
            let after = start + range_len - (aligned + len);
            if after > 0 {
                free.insert(aligned + len, after);
            }
            aligned
        };
        let address = base + offset;
        self.zero(address, len);
        NonNull::new(self.pointer(address))
    }

    /// Returns `len` bytes at `ptr` (from [`PhysicalMemory::alloc`]) to the free list.
    ///
    /// # Errors
    /// [`FreeError`] for a range outside the memory or one overlapping free memory; nothing is
    /// changed then.
    pub fn free(&self, ptr: NonNull<u8>, len: usize) -> Result<(), FreeError> {
        let address = ptr.as_ptr().addr();
        if len == 0 || !self.contains(address, len) {
            return Err(FreeError::Outside { address, len });
        }
        let mut start = address - self.inner.base;
        let mut end = start + len;
        let mut free = self.free_list();
        let before = free.range(..end).next_back().map(|(&s, &l)| (s, s + l));
        if let Some((_, before_end)) = before
            && before_end > start
        {
            return Err(FreeError::AlreadyFree { address, len });
        }
        if let Some((before_start, before_end)) = before
            && before_end == start
        {
            free.remove(&before_start);
            start = before_start;
        }
        if let Some(after_len) = free.get(&end).copied() {
            free.remove(&end);
            end += after_len;
        }
        free.insert(start, end - start);
        Ok(())
    }

    /// Bytes currently free (for leak checks in tests).
    #[must_use]
    pub fn free_bytes(&self) -> usize {
        self.free_list().values().sum()
    }

    /// Copies `bytes` to `address` through vm-memory; `false` if outside the memory.
    #[must_use]
    pub fn write(&self, address: usize, bytes: &[u8]) -> bool {
        self.inner
            .memory
            .write_slice(bytes, GuestAddress(address as u64))
            .is_ok()
    }

    /// Copies from `address` into `out` through vm-memory; `false` if outside the memory.
    #[must_use]
    pub fn read(&self, address: usize, out: &mut [u8]) -> bool {
        self.inner
            .memory
            .read_slice(out, GuestAddress(address as u64))
            .is_ok()
    }

    fn zero(&self, address: usize, len: usize) {
        const ZEROES: [u8; 4096] = [0; 4096];
        let mut done = 0;
        while done < len {
            let chunk = (len - done).min(ZEROES.len());
            // The range was just carved from the region, so the write cannot miss it.
            let _ = self.write(address + done, &ZEROES[..chunk]);
            done += chunk;
        }
    }

    /// A pointer to `address` inside the mapping, derived from the mapping's own pointer so it
    /// keeps the mapping's provenance.
    fn pointer(&self, address: usize) -> *mut u8 {
        self.inner
            .memory
            .get_host_address(GuestAddress(address as u64))
            .unwrap_or(std::ptr::null_mut())
    }

    fn free_list(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, usize>> {
        self.inner
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn guest_addresses_are_host_addresses() {
        let memory = PhysicalMemory::new(1 << 20).unwrap();
        let ptr = memory.alloc(4096, 4096).unwrap();
        assert_eq!(ptr.as_ptr().addr() % 4096, 0);
        assert!(memory.contains(ptr.as_ptr().addr(), 4096));
        assert!(memory.write(ptr.as_ptr().addr() + 10, &[1, 2, 3]));
        let mut back = [0; 3];
        assert!(memory.read(ptr.as_ptr().addr() + 10, &mut back));
        assert_eq!(back, [1, 2, 3]);
        assert!(!memory.contains(memory.base() + memory.size() - 2, 4));
        assert!(!memory.write(memory.base() + memory.size(), &[0]));
        assert!(!memory.read(8, &mut back));
    }

    #[test]
    fn allocations_are_zeroed_after_reuse_and_double_free_is_refused() {
        let memory = PhysicalMemory::new(64 << 10).unwrap();
        let a = memory.alloc(100, 8).unwrap();
        assert!(memory.write(a.as_ptr().addr(), &[0xAA; 100]));
        memory.free(a, 100).unwrap();
        assert_eq!(
            memory.free(a, 100),
            Err(FreeError::AlreadyFree {
                address: a.as_ptr().addr(),
                len: 100
            })
        );
        let b = memory.alloc(100, 8).unwrap();
        assert_eq!(a, b);
        let mut back = [1; 100];
        assert!(memory.read(b.as_ptr().addr(), &mut back));
        assert_eq!(back, [0; 100]);
        assert!(memory.alloc(1 << 20, 8).is_none());
        assert!(memory.alloc(0, 8).is_none());
        assert!(memory.alloc(8, 3).is_none());
    }

    #[test]
    fn without_an_iommu_bus_addresses_are_physical_and_nothing_faults() {
        let memory = PhysicalMemory::new(1 << 20).unwrap();
        let address = memory.alloc(64, 16).unwrap().as_ptr().addr();
        assert!(!memory.iommu_enabled());
        assert_eq!(memory.map(address, 64), Some(address as u64));
        let device = memory.device_memory();
        assert!(
            device
                .write_slice(&[7; 4], GuestAddress(address as u64))
                .is_ok()
        );
        assert!(device.read_slice(&mut [0; 4], GuestAddress(8)).is_err());
        assert_eq!(memory.iommu_faults(), Vec::new());
    }

    #[test]
    fn the_iommu_translates_exactly_what_is_mapped_while_it_is_mapped() {
        let memory = PhysicalMemory::with_iommu(1 << 20).unwrap();
        let address = memory.alloc(100, 8).unwrap().as_ptr().addr() + 4;
        assert!(memory.write(address, &[1, 2, 3, 4]));
        let bus = memory.map(address, 50).unwrap();
        // A fresh I/O virtual address, far from any physical one, in the same page offset.
        assert!(bus >= IOVA_BASE);
        assert_eq!(bus % 4096, address as u64 % 4096);
        let device = memory.device_memory();
        let mut back = [0; 4];
        assert!(device.read_slice(&mut back, GuestAddress(bus)).is_ok());
        assert_eq!(back, [1, 2, 3, 4]);
        assert!(device.write_slice(&[9; 50], GuestAddress(bus)).is_ok());
        let mut physical = [0; 50];
        assert!(memory.read(address, &mut physical));
        assert_eq!(physical, [9; 50]);
        // The physical address, one byte past the mapping, and the mapping once unmapped:
        // each faults, and each fault is recorded.
        assert!(
            device
                .read_slice(&mut back, GuestAddress(address as u64))
                .is_err()
        );
        assert!(device.write_slice(&[0; 2], GuestAddress(bus + 49)).is_err());
        memory.unmap(bus, 50);
        assert!(device.read_slice(&mut back, GuestAddress(bus)).is_err());
        assert_eq!(
            memory.iommu_faults(),
            vec![
                IommuFault {
                    address: address as u64,
                    len: 4,
                    write: false
                },
                IommuFault {
                    address: bus + 49,
                    len: 2,
                    write: true
                },
                IommuFault {
                    address: bus,
                    len: 4,
                    write: false
                },
            ]
        );
        // Mapping the same memory again never hands out the old address.
        let again = memory.map(address, 50).unwrap();
        assert!(again > bus + 50);
        assert!(memory.map(address, 0).is_none());
        assert!(memory.map(memory.base() + memory.size(), 1).is_none());
    }

    #[test]
    fn only_the_calling_threads_faults_are_excused() {
        let memory = Arc::new(PhysicalMemory::with_iommu(1 << 20).unwrap());
        let fault = |memory: &PhysicalMemory, address: u64| {
            let mut byte = [0; 1];
            assert!(
                memory
                    .device_memory()
                    .read_slice(&mut byte, GuestAddress(address))
                    .is_err()
            );
        };
        fault(&memory, IOVA_BASE + 16);
        let other = Arc::clone(&memory);
        std::thread::spawn(move || fault(&other, IOVA_BASE + 32))
            .join()
            .unwrap();
        fault(&memory, IOVA_BASE + 48);
        memory.excuse_faults_of_this_thread();
        let at = |address| IommuFault {
            address,
            len: 1,
            write: false,
        };
        assert_eq!(memory.iommu_faults(), vec![at(IOVA_BASE + 32)]);
        assert_eq!(
            memory.excused_iommu_faults(),
            vec![at(IOVA_BASE + 16), at(IOVA_BASE + 48)]
        );
        // Nothing is excused twice.
        memory.excuse_faults_of_this_thread();
        assert_eq!(memory.excused_iommu_faults().len(), 2);
    }

    proptest! {
        #[test]
        fn allocations_never_overlap_and_everything_comes_back(
            ops in proptest::collection::vec((1usize..5000, 0u32..7, any::<bool>()), 1..80)
        ) {
            let memory = PhysicalMemory::new(256 << 10).unwrap();
            let total = memory.free_bytes();
            let mut live: Vec<(usize, usize)> = Vec::new();
            for (len, align_shift, free_one) in ops {
                if free_one && !live.is_empty() {
                    let (address, len) = live.swap_remove(len % live.len());
                    memory.free(NonNull::new(address as *mut u8).unwrap(), len).unwrap();
                } else if let Some(ptr) = memory.alloc(len, 1 << (align_shift + 3)) {
                    let address = ptr.as_ptr().addr();
                    prop_assert_eq!(address % (1 << (align_shift + 3)), 0);
                    prop_assert!(memory.contains(address, len));
                    for &(other, other_len) in &live {
                        prop_assert!(address + len <= other || other + other_len <= address);
                    }
                    live.push((address, len));
                }
            }
            for (address, len) in live {
                memory.free(NonNull::new(address as *mut u8).unwrap(), len).unwrap();
            }
            prop_assert_eq!(memory.free_bytes(), total);
            prop_assert_eq!(memory.free_list().len(), 1);
        }
    }
}
