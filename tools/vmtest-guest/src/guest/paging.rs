//! The guest's identity-mapped page tables, and mapping of MMIO windows above 4 GiB.
//!
//! The boot code ([`super::boot`]) fills [`BOOT_PML4`], [`BOOT_PDPT`] and [`BOOT_PD`] to map
//! the low 4 GiB with 2 MiB pages before long mode is on. Firmware may place 64-bit BARs above
//! 4 GiB (SeaBIOS does when its 32-bit window is full or the CPU has enough address bits), so
//! [`map_mmio`] adds identity mappings for such windows from a small pool of tables. Entries are
//! atomics: the CPU's page walker reads them, and Rust never holds a reference into a table the
//! walker could see half-written.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Entries per table (4 KiB of 8-byte entries).
const ENTRIES: usize = 512;
/// Present.
const PRESENT: u64 = 1 << 0;
/// Writable.
const WRITABLE: u64 = 1 << 1;
/// Write-through (with PCD: uncacheable, as MMIO must be).
const WRITE_THROUGH: u64 = 1 << 3;
/// Cache disable.
const CACHE_DISABLE: u64 = 1 << 4;
/// A 2 MiB page in a page directory entry.
const PAGE_SIZE_2M: u64 = 1 << 7;
/// Physical address bits of an entry (bits 12..52).
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Size of one page directory entry's page.
const LARGE_PAGE: u64 = 2 << 20;
/// Everything below this is mapped by the boot code.
const BOOT_MAPPED: u64 = 4 << 30;
/// Tables available for windows above 4 GiB.
const POOL_TABLES: usize = 8;

/// One 4 KiB paging structure (PML4, PDPT or page directory).
#[repr(C, align(4096))]
pub struct PageTable([AtomicU64; ENTRIES]);

impl PageTable {
    /// An empty table (all entries not present).
    const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; ENTRIES])
    }

    /// Physical address of the table (the guest is identity-mapped).
    fn physical_address(&self) -> u64 {
        core::ptr::from_ref(self).addr() as u64
    }

    /// Entry `index` (always in range: callers mask the index to 9 bits).
    fn entry(&self, index: usize) -> &AtomicU64 {
        &self.0[index % ENTRIES]
    }
}

/// The top-level table, loaded into CR3 by the boot code.
pub static BOOT_PML4: PageTable = PageTable::new();
/// Maps 0..512 GiB; its first four entries point at [`BOOT_PD`].
pub static BOOT_PDPT: PageTable = PageTable::new();
/// The four page directories that map 0..4 GiB with 2 MiB pages (contiguous: the boot code
/// fills them as one array of 2048 entries).
pub static BOOT_PD: [PageTable; 4] = [const { PageTable::new() }; 4];

/// Tables handed out by [`map_mmio`].
static POOL: [PageTable; POOL_TABLES] = [const { PageTable::new() }; POOL_TABLES];
/// How many of [`POOL`] are in use.
static POOL_USED: AtomicUsize = AtomicUsize::new(0);

/// Why a window could not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The window wraps around the 64-bit address space or lies above the 4-level limit.
    OutOfRange {
        /// Start of the window.
        address: u64,
    },
    /// The table pool is exhausted.
    NoTables,
    /// A 2 MiB page there is already mapped to something else.
    Conflict {
        /// The 2 MiB page's address.
        address: u64,
    },
}

/// Identity-maps the physical window `address .. address + len` as uncacheable memory.
/// Windows below 4 GiB are already mapped by the boot code.
///
/// # Errors
/// [`MapError`] if the window cannot be mapped.
pub fn map_mmio(address: u64, len: u64) -> Result<(), MapError> {
    let end = address
        .checked_add(len)
        .ok_or(MapError::OutOfRange { address })?;
    // Four-level paging reaches 2^48 bytes; identity mapping needs the address to be canonical
    // and below the top half.
    if end > 1 << 47 {
        return Err(MapError::OutOfRange { address });
    }
    let mut page = address & !(LARGE_PAGE - 1);
    let mut changed = false;
    while page < end {
        if page >= BOOT_MAPPED {
            changed |= map_large_page(page)?;
        }
        page += LARGE_PAGE;
    }
    if changed {
        flush_tlb();
    }
    Ok(())
}

/// Maps the 2 MiB page at `page` (2 MiB aligned), returning whether an entry was added.
fn map_large_page(page: u64) -> Result<bool, MapError> {
    let pdpt = next_level(&BOOT_PML4, (page >> 39) as usize)?;
    let pd = next_level(pdpt, (page >> 30) as usize)?;
    let wanted = page | PRESENT | WRITABLE | WRITE_THROUGH | CACHE_DISABLE | PAGE_SIZE_2M;
    match pd.entry((page >> 21) as usize).compare_exchange(
        0,
        wanted,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => Ok(true),
        Err(existing) if existing == wanted => Ok(false),
        Err(_) => Err(MapError::Conflict { address: page }),
    }
}

/// The table entry `index` of `table` points to, creating it from the pool if absent.
fn next_level(table: &'static PageTable, index: usize) -> Result<&'static PageTable, MapError> {
    let entry = table.entry(index % ENTRIES);
    let current = entry.load(Ordering::Acquire);
    if current & PRESENT != 0 {
        if current & PAGE_SIZE_2M != 0 {
            return Err(MapError::Conflict {
                address: current & ADDRESS_MASK,
            });
        }
        return table_at(current & ADDRESS_MASK).ok_or(MapError::Conflict {
            address: current & ADDRESS_MASK,
        });
    }
    let fresh = POOL
        .get(POOL_USED.fetch_add(1, Ordering::AcqRel))
        .ok_or(MapError::NoTables)?;
    entry.store(
        fresh.physical_address() | PRESENT | WRITABLE,
        Ordering::Release,
    );
    Ok(fresh)
}

/// The boot or pool table at physical address `address`: the only tables this module links,
/// so an entry pointing anywhere else is not followed.
fn table_at(address: u64) -> Option<&'static PageTable> {
    core::iter::once(&BOOT_PDPT)
        .chain(BOOT_PD.iter())
        .chain(POOL.iter())
        .find(|table| table.physical_address() == address)
}

/// Reloads CR3 so the new entries are used (the walker may have cached upper levels).
fn flush_tlb() {
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects; we run in ring 0.
    unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags)) };
    // SAFETY: writing back the same CR3 only flushes non-global TLB entries; the tables it
    // points at are this module's statics, which stay valid for the guest's lifetime.
    unsafe { asm!("mov cr3, {}", in(reg) cr3, options(nostack, preserves_flags)) };
}
