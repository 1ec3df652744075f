//! A StorPort for the bare-metal guest: it loads the shipped `rvscsi.sys` (through
//! `rvscsi-pe-loader`, the simulator's loader), binds its imports to the `extern "win64"`
//! routines of [`exports`], and plays storport.sys over real hardware: PCI configuration
//! through mechanism #1, BARs identity-mapped uncached by the guest's page tables, MSI-X
//! messages programmed to real vectors and delivered through the IDT and local APIC into the
//! image's message routine, DPCs run after the interrupt returns, HwTimer from the APIC timer,
//! StorPort's locks, SRB_EX (or classic) SRBs and scatter/gather lists built in guest memory.
//!
//! The calling rules the simulator checks are checked here too, on the real device: routines
//! only in the contexts and at the IRQLs storport.sys allows, a lock never taken twice, an SRB
//! completed exactly once and only while outstanding, BuildIo's answer consistent with its
//! completions, scatter/gather and StartIo parameters only for outstanding SRBs. A violation is
//! printed (`VIOLATION ...`) and counted; the run fails on any.
//!
//! Where this host differs from the simulator, and why:
//! - One CPU (`-smp 1`, TCG). The image is told of [`LOGICAL_PROCESSORS`] processors and each
//!   submission says which one it comes from (StorPortGetCurrentProcessorNumber and the
//!   StartIo message number follow it), so that every request queue is used; all of them run
//!   on the boot CPU, so the locks are real IRQL changes (`cli` at DIRQL) and held-flags, never
//!   contended spinning.
//! - IRQL is modelled: DIRQL is "interrupts off" on this CPU, DISPATCH_LEVEL and below are
//!   "interrupts on". Raising to DIRQL from an image routine masks the real MSI-X delivery.
//! - No per-section page protection: the guest maps memory with 2 MiB identity pages, so a
//!   stray write into the image's `.text` is not caught here (the simulator catches it).
//! - No IOMMU: bus addresses are physical addresses are virtual addresses.
//! - No registry: StorPortRegistryRead finds nothing, as for a fresh install, and the image
//!   runs on its defaults.
//! - No request timeouts or bus resets driven by StorPort: a request that never completes is
//!   reported by the runner's wait, with the SRB named.
//! - HwTimer runs at the APIC timer's 100 ms granularity.
//! - StorPortDebugPrint prints the format string only (see [`exports`]).

mod exports;

use core::arch::asm;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use virtio_core::dma::DmaMemory;
use virtio_core::hal::Hal;
use vmtest_guest::pci_scan::{self, Bdf, ConfigAccess};
use vmtest_guest::storport_abi as abi;
use zerocopy::{FromZeros, IntoBytes};

use super::hal::BareMetalHal;
use super::{interrupts, pci, println};

/// PASSIVE_LEVEL.
pub const PASSIVE_LEVEL: u8 = 0;
/// DISPATCH_LEVEL.
pub const DISPATCH_LEVEL: u8 = 2;
/// The device IRQL (DIRQL) the image's interrupt routine and MSI spin locks run at.
pub const DEVICE_LEVEL: u8 = 5;
/// Processors the image is told about (see the module header).
pub const LOGICAL_PROCESSORS: u32 = 4;
/// SRBs that may be outstanding at once.
pub const MAX_SRBS: usize = 40;
/// DPCs the image may initialise.
const MAX_DPCS: usize = 24;
/// MSI-X messages this host connects: the vectors the boot code routes to device interrupts
/// (the last of the 16 is the APIC timer's).
pub const MAX_MESSAGES: usize = 15;
/// Scatter/gather elements per SRB at most (a 4 MiB transfer in 4 KiB pages, plus one).
const MAX_SG_ELEMENTS: usize = 1025;
/// Bytes reserved for the uncached extension (the image sizes it from the device's queues).
const UNCACHED_BUDGET: usize = 8 << 20;
/// Bytes of the area the image is laid out in.
const IMAGE_AREA_BYTES: usize = 512 * 1024;
/// `sizeof(DRIVER_OBJECT)` on x64.
const DRIVER_OBJECT_BYTES: usize = 0x150;
/// The byte after `Again` that a miniport must not touch (the simulator's `Reserved3` check).
const RESERVED3_SENTINEL: u8 = 0xa5;

/// Where an image routine is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// No image routine (the host itself).
    Host,
    /// DriverEntry.
    DriverEntry,
    /// HwFindAdapter.
    FindAdapter,
    /// HwInitialize.
    Initialize,
    /// HwPassiveInitializeRoutine.
    PassiveInitialize,
    /// HwBuildIo.
    BuildIo,
    /// HwStartIo.
    StartIo,
    /// HwMessageSignaledInterruptRoutine.
    Interrupt,
    /// A DPC routine.
    Dpc,
    /// HwTimer.
    Timer,
    /// HwResetBus.
    ResetBus,
}

/// What an SRB slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    Outstanding,
    Completed,
}

/// One SRB the host built and tracks.
#[derive(Clone, Copy, Debug)]
struct Slot {
    state: SlotState,
    /// The SRB's address (its memory is the slot's, allocated at start).
    srb: usize,
    /// SRB extension, data buffer, sense buffer: the memory StorPortGetPhysicalAddress may
    /// translate for this SRB.
    regions: [(usize, usize); 3],
    /// Where its scatter/gather list is built.
    sg: usize,
    /// Whether RequestComplete was seen during HwBuildIo (BuildIo's answer is checked).
    completed_in: Context,
}

impl Slot {
    const FREE: Self = Self {
        state: SlotState::Free,
        srb: 0,
        regions: [(0, 0); 3],
        sg: 0,
        completed_in: Context::Host,
    };
}

/// A DPC the image initialised.
#[derive(Clone, Copy, Debug)]
struct Dpc {
    address: usize,
    routine: usize,
    queued: bool,
    order: u64,
    arguments: (usize, usize),
}

/// What this host counted.
#[derive(Clone, Copy, Debug)]
pub struct Counters {
    /// RequestComplete notifications accepted.
    pub completions: u64,
    /// MSI-X deliveries handed to the image, per message.
    pub interrupts: [u64; MAX_MESSAGES],
    /// Deliveries with no routine to run (before connection, or a message beyond the grant).
    pub unclaimed_interrupts: u64,
    /// DPC routines run.
    pub dpcs: u64,
    /// HwTimer calls.
    pub timer_calls: u64,
    /// StorPortBusy calls.
    pub busy: u64,
    /// StorPortDebugPrint calls.
    pub debug_prints: u64,
    /// Rule violations.
    pub violations: u64,
    /// RequestCompletes dropped by the planted fault.
    pub dropped: u64,
    /// MSI-X deliveries withheld from the image by the planted lost interrupt.
    pub lost_interrupts: u64,
    /// RequestCompletes made from HwTimer (the image's own recovery of lost interrupts).
    pub timer_completions: u64,
    /// BusChangeDetected notifications (the image asking for a rescan).
    pub bus_changes: u64,
}

/// The host's whole state, touched only through [`with`].
struct Host {
    /// The image's code range (routine addresses must lie in it).
    code: (usize, usize),
    hw: Option<abi::HwInitializationData>,
    driver_object: usize,
    extension: usize,
    uncached: Option<(usize, usize)>,
    /// The memory reserved for the uncached extension before HwFindAdapter (base, bytes).
    uncached_region: (usize, usize),
    registry_buffer: Option<(usize, usize)>,
    /// Memory BARs (physical = virtual base, length).
    bars: [(u64, u64); 6],
    bdf: Option<Bdf>,
    messages: u32,
    message_routine: usize,
    per_message: bool,
    passive_routine: usize,
    dpcs: [Option<Dpc>; MAX_DPCS],
    dpc_order: u64,
    timer: Option<(usize, u64)>,
    perf_flags: u32,
    message_range: Option<(u32, u32)>,
    processor: u32,
    irql: u8,
    context: Context,
    start_io_held: bool,
    interrupt_held: bool,
    messages_held: u32,
    dpc_locks_held: u32,
    slots: [Slot; MAX_SRBS],
    counters: Counters,
    /// The planted fault: drop the RequestComplete with this (1-based) number.
    drop_completion: Option<u64>,
    /// The planted lost interrupt: withhold this (1-based) arrival of this message.
    lose_interrupt: Option<(u32, u64)>,
    /// The planted double completion: repeat the RequestComplete with this number.
    repeat_completion: Option<u64>,
    /// MSI-X arrivals per message, handed to the image or not.
    arrivals: [u64; MAX_MESSAGES],
    /// After a withheld interrupt: the next RequestComplete, still to come or the context it
    /// came from (HwTimer's drain, or a later interrupt).
    recovery: Recovery,
}

/// What followed the planted lost interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recovery {
    /// No interrupt was withheld.
    NotPlanted,
    /// Withheld; no request has completed since.
    Awaiting,
    /// The first request completed afterwards completed in this context.
    Completed(Context),
}

impl Host {
    const fn new() -> Self {
        Self {
            code: (0, 0),
            hw: None,
            driver_object: 0,
            extension: 0,
            uncached: None,
            uncached_region: (0, 0),
            registry_buffer: None,
            bars: [(0, 0); 6],
            bdf: None,
            messages: 0,
            message_routine: 0,
            per_message: false,
            passive_routine: 0,
            dpcs: [None; MAX_DPCS],
            dpc_order: 0,
            timer: None,
            perf_flags: 0,
            message_range: None,
            processor: 0,
            irql: PASSIVE_LEVEL,
            context: Context::Host,
            start_io_held: false,
            interrupt_held: false,
            messages_held: 0,
            dpc_locks_held: 0,
            slots: [Slot::FREE; MAX_SRBS],
            counters: Counters {
                completions: 0,
                interrupts: [0; MAX_MESSAGES],
                unclaimed_interrupts: 0,
                dpcs: 0,
                timer_calls: 0,
                busy: 0,
                debug_prints: 0,
                violations: 0,
                dropped: 0,
                lost_interrupts: 0,
                timer_completions: 0,
                bus_changes: 0,
            },
            drop_completion: None,
            lose_interrupt: None,
            repeat_completion: None,
            arrivals: [0; MAX_MESSAGES],
            recovery: Recovery::NotPlanted,
        }
    }

    /// Records a broken rule.
    fn violate(&mut self, what: fmt::Arguments<'_>) {
        self.counters.violations += 1;
        println!(
            "VIOLATION {what} (in {:?} at IRQL {})",
            self.context, self.irql
        );
    }

    /// Checks that the current context is one of `allowed`.
    fn require_context(&mut self, routine: &str, allowed: &[Context]) -> bool {
        let ok = allowed.contains(&self.context);
        if !ok {
            self.violate(format_args!("{routine} called outside {allowed:?}"));
        }
        ok
    }

    /// Checks that the IRQL is at most `max`.
    fn require_irql_at_most(&mut self, routine: &str, max: u8) -> bool {
        let ok = self.irql <= max;
        if !ok {
            self.violate(format_args!("{routine} above IRQL {max}"));
        }
        ok
    }

    /// Whether `extension` is the device extension.
    fn check_extension(&mut self, routine: &str, extension: *mut c_void) -> bool {
        let ok = extension.addr() == self.extension && self.extension != 0;
        if !ok {
            self.violate(format_args!("{routine} with extension {extension:p}"));
        }
        ok
    }

    /// The slot of the outstanding SRB at `srb`.
    fn outstanding(&self, srb: usize) -> Option<usize> {
        self.slots
            .iter()
            .position(|slot| slot.state == SlotState::Outstanding && slot.srb == srb)
    }

    /// The MSI-X message the current logical processor's requests complete on (as storport.sys
    /// names it in StartIo's performance parameters).
    fn message_for_processor(&self) -> u32 {
        match self.message_range {
            Some((first, last)) => first + self.processor % (last - first + 1),
            None if self.messages > 0 => self.processor % self.messages,
            None => 0,
        }
    }

    /// Whether `address` is a routine inside the image's code.
    fn is_code(&self, address: usize) -> bool {
        (self.code.0..self.code.1).contains(&address)
    }
}

/// The single host, behind interrupt masking.
struct HostCell(UnsafeCell<Host>);

// SAFETY: the guest runs on one CPU; every access goes through `with`, which masks interrupts
// (the only other flow of control) and refuses re-entry, so no two `&mut Host` coexist.
unsafe impl Sync for HostCell {}

static HOST: HostCell = HostCell(UnsafeCell::new(Host::new()));
/// Set while a `with` closure runs (catches re-entry, which would alias the state).
static HOST_BUSY: AtomicBool = AtomicBool::new(false);
/// Whether the MSI-X vectors belong to the image (set once its message routine is known).
static CONNECTED: AtomicBool = AtomicBool::new(false);

/// Masks interrupts, returning whether they were enabled.
fn interrupts_off() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack and masks maskable interrupts on this CPU; the
    // caller restores the previous state with `interrupts_restore`.
    unsafe { asm!("pushfq", "pop {}", "cli", out(reg) flags, options(preserves_flags)) };
    flags & (1 << 9) != 0
}

/// Re-enables interrupts if `enabled`.
fn interrupts_restore(enabled: bool) {
    if enabled {
        // SAFETY: every vector the APIC can deliver has a gate (boot.rs), whose handlers
        // preserve the state they touch.
        unsafe { asm!("sti", options(nomem, nostack)) };
    }
}

/// Runs `f` on the host state with interrupts masked.
fn with<R>(f: impl FnOnce(&mut Host) -> R) -> R {
    let enabled = interrupts_off();
    assert!(
        !HOST_BUSY.swap(true, Ordering::Acquire),
        "storport host state re-entered"
    );
    // SAFETY: interrupts are off and `HOST_BUSY` was clear, so this is the only reference to
    // the host state until it is dropped below (see `HostCell`).
    let result = f(unsafe { &mut *HOST.0.get() });
    HOST_BUSY.store(false, Ordering::Release);
    interrupts_restore(enabled);
    result
}

/// Sets the modelled IRQL and context, returning the previous ones (interrupt masking is
/// the caller's).
fn set_level(irql: u8, context: Context) -> (u8, Context) {
    with(|host| {
        let previous = (host.irql, host.context);
        host.irql = irql;
        host.context = context;
        previous
    })
}

/// Sets the IRQL and context for an image call, returning the previous ones. Interrupts are
/// masked at DIRQL and above, enabled below it.
fn enter(irql: u8, context: Context) -> (u8, Context) {
    let previous = set_level(irql, context);
    if irql >= DEVICE_LEVEL {
        let _ = interrupts_off();
    } else {
        interrupts_restore(true);
    }
    previous
}

/// Restores what [`enter`] returned.
fn leave((irql, context): (u8, Context)) {
    with(|host| {
        host.irql = irql;
        host.context = context;
    });
    if irql >= DEVICE_LEVEL {
        let _ = interrupts_off();
    } else {
        interrupts_restore(true);
    }
}

/// Calls an image routine at `address` with the Windows x64 convention.
macro_rules! image_call {
    ($address:expr, fn($($ty:ty),*) $(-> $ret:ty)?, $($argument:expr),*) => {{
        let address: usize = $address;
        // SAFETY: `address` was checked to lie in the loaded image's code (`Host::is_code`),
        // where the image's linker placed a routine of this StorPort prototype (storport.h);
        // the arguments are what storport.sys passes it, pointing at live host memory.
        let routine = unsafe {
            core::mem::transmute::<usize, extern "win64" fn($($ty),*) $(-> $ret)?>(address)
        };
        routine($($argument),*)
    }};
}

/// The area the image is laid out in: page-aligned, writable and executable (the boot code's
/// 2 MiB identity pages set no NX bit).
#[repr(C, align(4096))]
struct ImageArea(UnsafeCell<[u8; IMAGE_AREA_BYTES]>);

// SAFETY: the area is written once, by `load`, before any of its code runs, and never again
// from Rust; afterwards only the image's own code touches it.
unsafe impl Sync for ImageArea {}

static IMAGE_AREA: ImageArea = ImageArea(UnsafeCell::new([0; IMAGE_AREA_BYTES]));
/// Whether the area was handed out.
static IMAGE_LOADED: AtomicBool = AtomicBool::new(false);

/// Why the adapter did not start.
#[derive(Clone, Copy, Debug)]
pub enum StartError {
    /// The image was refused by the loader.
    Load(rvscsi_pe_loader::LinkError),
    /// The image was already loaded.
    LoadedTwice,
    /// DriverEntry failed (NTSTATUS).
    DriverEntry(i32),
    /// DriverEntry returned without StorPortInitialize.
    NotInitialized,
    /// A routine address outside the image's code.
    RoutineOutsideImage(&'static str, usize),
    /// The DMA pool ran out.
    OutOfMemory(usize),
    /// MSI-X could not be enabled.
    Msix(pci_scan::MsixError),
    /// The BARs could not be mapped.
    Bars(pci::BarMapError),
    /// HwFindAdapter's answer (SP_RETURN_*).
    FindAdapter(u32),
    /// HwInitialize returned FALSE.
    Initialize,
    /// The passive-initialization routine returned FALSE.
    PassiveInitialize,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Load(error) => write!(f, "the loader refused the image: {error}"),
            Self::LoadedTwice => write!(f, "the image was already loaded"),
            Self::DriverEntry(status) => write!(f, "DriverEntry returned {status:#x}"),
            Self::NotInitialized => write!(f, "DriverEntry did not call StorPortInitialize"),
            Self::RoutineOutsideImage(name, address) => {
                write!(f, "{name} at {address:#x} is outside the image's code")
            }
            Self::OutOfMemory(len) => write!(f, "out of DMA memory for {len} bytes"),
            Self::Msix(error) => write!(f, "MSI-X: {error:?}"),
            Self::Bars(error) => write!(f, "{error}"),
            Self::FindAdapter(answer) => write!(f, "HwFindAdapter answered {answer}"),
            Self::Initialize => write!(f, "HwInitialize returned FALSE"),
            Self::PassiveInitialize => {
                write!(f, "the passive-initialization routine returned FALSE")
            }
        }
    }
}

/// What the image said at find-adapter, for the runner.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// MaximumTransferLength.
    pub max_transfer: u32,
    /// NumberOfPhysicalBreaks.
    pub physical_breaks: u32,
    /// MaxNumberOfIO.
    pub max_io: u32,
    /// Whether SRB_EX is in use.
    pub extended: bool,
    /// MSI-X messages connected.
    pub messages: u32,
    /// Bytes of the uncached extension the image asked for.
    pub uncached: usize,
    /// Base relocations and imports the loader applied.
    pub relocations: usize,
    /// Imports bound.
    pub imports: usize,
    /// Where the image was loaded, and its preferred base.
    pub base: usize,
    /// The image's preferred base.
    pub preferred_base: u64,
}

/// The started adapter: per-slot memory for SRBs.
pub struct Adapter {
    slots: [Option<SlotMemory>; MAX_SRBS],
    /// The BARs as mapped for the image, kept for [`Adapter::negotiated_features`].
    registers: pci::DeviceBars,
    bdf: Bdf,
    limits: Limits,
    extended: bool,
    hw: abi::HwInitializationData,
}

/// The memory of one SRB slot.
struct SlotMemory {
    srb: DmaMemory,
    extension: Option<DmaMemory>,
    sense: DmaMemory,
}

/// The planted faults this host can play.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Drop the RequestComplete with this (1-based) number: the SRB never completes.
    pub drop_completion: Option<u64>,
    /// Withhold this (1-based) arrival of this MSI-X message from the image.
    pub lose_interrupt: Option<(u32, u64)>,
    /// Play the RequestComplete with this (1-based) number twice, as a miniport that
    /// completes an SRB twice would: the exactly-once rule must catch it.
    pub repeat_completion: Option<u64>,
}

/// Loads `file` and starts the adapter on the virtio-scsi function at `bdf`: DriverEntry,
/// HwFindAdapter, MSI-X connection, HwInitialize, passive initialisation, as storport.sys and
/// the PnP manager do, with the planted `faults`.
///
/// # Errors
/// [`StartError`] naming the failed step.
pub fn start(
    file: &[u8],
    hal: &BareMetalHal,
    bdf: Bdf,
    classic: bool,
    faults: Faults,
) -> Result<Adapter, StartError> {
    let image = rvscsi_pe_loader::Image::parse(file).map_err(StartError::Load)?;
    if IMAGE_LOADED.swap(true, Ordering::AcqRel) {
        return Err(StartError::LoadedTwice);
    }
    // SAFETY: `IMAGE_LOADED` was clear, so this is the only reference to the area ever made
    // from Rust (see `ImageArea`).
    let area = unsafe { &mut *IMAGE_AREA.0.get() };
    let base = area.as_ptr().addr();
    let linked = image
        .link_into(area, base as u64, exports::resolve, |_, _, _| {})
        .map_err(StartError::Load)?;
    let code = image
        .sections()
        .find(|section| section.protection == rvscsi_pe_loader::Protection::ReadExecute)
        .map_or((0, 0), |section| {
            (base + section.rva, base + section.rva + section.len)
        });
    let driver_object = alloc(hal, DRIVER_OBJECT_BYTES)?;
    // The registry path: a UNICODE_STRING naming the service key, as the I/O manager passes.
    let path_text: &[u8] = b"\\Registry\\Machine\\System\\CurrentControlSet\\Services\\rvscsi";
    let registry = alloc(hal, 16 + path_text.len() * 2)?;
    for (index, byte) in path_text.iter().enumerate() {
        registry.store_u16(16 + index * 2, u16::from(*byte), Ordering::Relaxed);
    }
    let path_bytes = (path_text.len() * 2) as u16;
    registry.store_u16(0, path_bytes, Ordering::Relaxed);
    registry.store_u16(2, path_bytes, Ordering::Relaxed);
    registry.store_u64(8, (registry.cpu_address() + 16) as u64, Ordering::Relaxed);
    with(|host| {
        host.code = code;
        host.driver_object = driver_object.cpu_address();
        host.drop_completion = faults.drop_completion;
        host.lose_interrupt = faults.lose_interrupt;
        host.repeat_completion = faults.repeat_completion;
        host.bdf = Some(bdf);
    });
    let entry = base + image.entry_rva();
    let previous = enter(PASSIVE_LEVEL, Context::DriverEntry);
    let status = image_call!(
        entry,
        fn(*mut c_void, *mut c_void) -> i32,
        ptr(driver_object.cpu_address()),
        ptr(registry.cpu_address())
    );
    leave(previous);
    if status != abi::STATUS_SUCCESS {
        return Err(StartError::DriverEntry(status));
    }
    let hw = with(|host| host.hw).ok_or(StartError::NotInitialized)?;
    for (name, address) in [
        ("HwFindAdapter", hw.hw_find_adapter),
        ("HwInitialize", hw.hw_initialize),
        ("HwStartIo", hw.hw_start_io),
    ] {
        if !with(|host| host.is_code(address as usize)) {
            return Err(StartError::RoutineOutsideImage(name, address as usize));
        }
    }
    let mut adapter = find_adapter(hal, bdf, &hw, classic)?;
    adapter.limits.relocations = linked.relocations;
    adapter.limits.imports = linked.imports;
    adapter.limits.base = base;
    adapter.limits.preferred_base = image.preferred_base();
    initialize(&hw)?;
    Ok(adapter)
}

/// A pointer to host memory at `address`, for an image argument.
fn ptr(address: usize) -> *mut c_void {
    core::ptr::with_exposed_provenance_mut(address)
}

/// `len` zeroed bytes of the DMA pool, page-aligned.
fn alloc(hal: &BareMetalHal, len: usize) -> Result<DmaMemory, StartError> {
    hal.dma_alloc(len.max(1), 4096)
        .map_err(|_| StartError::OutOfMemory(len))
}

/// Builds the configuration, connects MSI-X and calls HwFindAdapter.
fn find_adapter(
    hal: &BareMetalHal,
    bdf: Bdf,
    hw: &abi::HwInitializationData,
    classic: bool,
) -> Result<Adapter, StartError> {
    let access = pci::Mechanism1;
    let bars = pci_scan::read_bars(&access, bdf);
    let registers = pci::DeviceBars::map(&bars).map_err(StartError::Bars)?;
    pci_scan::enable(
        &access,
        bdf,
        pci_scan::command::MEMORY_SPACE
            | pci_scan::command::BUS_MASTER
            | pci_scan::command::INTX_DISABLE,
    );
    // The PCI bus driver programs the MSI-X table when the adapter's interrupt resources are
    // assigned: message n to vector FIRST_VECTOR + n on this CPU's APIC.
    let entries = pci_scan::enable_msix(&access, bdf, &registers, interrupts::FIRST_VECTOR, false)
        .map_err(StartError::Msix)?;
    let messages = u32::from(entries).min(MAX_MESSAGES as u32);
    let mut ranges = [abi::AccessRange::default(); 6];
    let mut count = 0;
    let mut windows = [(0, 0); 6];
    for bar in bars.iter().flatten().flatten() {
        if let pci_scan::BarKind::Memory { .. } = bar.kind {
            ranges[count] = abi::AccessRange {
                range_start: bar.address,
                range_length: u32::try_from(bar.size).unwrap_or(u32::MAX),
                range_in_memory: 1,
                padding: [0; 3],
            };
            windows[count] = (bar.address, bar.size);
            count += 1;
        }
    }
    let ranges_memory = alloc(hal, size_of_val(&ranges))?;
    let _ = ranges_memory.write_bytes(0, ranges.as_bytes());
    let extended = !classic && hw.srb_type_flags & abi::SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK != 0;
    let config = port_configuration(hw, bdf, &ranges_memory, count, extended);
    let config_memory = alloc(hal, size_of::<abi::PortConfigurationInformation>() + 8)?;
    let _ = config_memory.write_bytes(0, config.as_bytes());
    let reserved3_at = size_of::<abi::PortConfigurationInformation>() + 1;
    config_memory.store_u8(reserved3_at, RESERVED3_SENTINEL);
    let extension = alloc(hal, hw.device_extension_size as usize)?;
    let argument = alloc(hal, 8)?;
    let uncached = alloc(hal, UNCACHED_BUDGET)?;
    with(|host| {
        host.uncached_region = (uncached.cpu_address(), uncached.len());
        host.extension = extension.cpu_address();
        host.messages = messages;
        host.bars = windows;
    });
    let previous = enter(PASSIVE_LEVEL, Context::FindAdapter);
    let found = image_call!(
        hw.hw_find_adapter as usize,
        fn(*mut c_void, *mut c_void, *mut c_void, *mut u8, *mut c_void, *mut u8) -> u32,
        ptr(extension.cpu_address()),
        core::ptr::null_mut(),
        core::ptr::null_mut(),
        ptr(argument.cpu_address()).cast(),
        ptr(config_memory.cpu_address()),
        ptr(config_memory.cpu_address() + reserved3_at - 1).cast()
    );
    leave(previous);
    if config_memory.load_u8(reserved3_at) != RESERVED3_SENTINEL {
        with(|host| host.violate(format_args!("HwFindAdapter wrote past `Again`")));
    }
    if found != abi::SP_RETURN_FOUND {
        return Err(StartError::FindAdapter(found));
    }
    let mut after = abi::PortConfigurationInformation::new_zeroed();
    let _ = config_memory.read_bytes(0, after.as_mut_bytes());
    let message_routine = after.hw_ms_interrupt_routine as usize;
    if messages > 0 && !with(|host| host.is_code(message_routine)) {
        return Err(StartError::RoutineOutsideImage(
            "HwMessageSignaledInterruptRoutine",
            message_routine,
        ));
    }
    with(|host| {
        host.message_routine = message_routine;
        host.per_message =
            after.interrupt_synchronization_mode == abi::INTERRUPT_SYNCHRONIZE_PER_MESSAGE;
    });
    CONNECTED.store(messages > 0, Ordering::Release);
    let limits = Limits {
        max_transfer: after.maximum_transfer_length,
        physical_breaks: after.number_of_physical_breaks,
        max_io: after.max_number_of_io,
        extended,
        messages,
        uncached: with(|host| host.uncached.map_or(0, |(_, len)| len)),
        relocations: 0,
        imports: 0,
        base: 0,
        preferred_base: 0,
    };
    let slots = allocate_slots(hal, hw)?;
    Ok(Adapter {
        slots,
        registers,
        bdf,
        limits,
        extended,
        hw: *hw,
    })
}

/// The memory of every SRB slot: the SRB with room for its scatter/gather list, its SRB
/// extension, its sense buffer.
fn allocate_slots(
    hal: &BareMetalHal,
    hw: &abi::HwInitializationData,
) -> Result<[Option<SlotMemory>; MAX_SRBS], StartError> {
    let mut slots = [const { None }; MAX_SRBS];
    for slot in &mut slots {
        *slot = Some(SlotMemory {
            srb: alloc(hal, 256 + 16 + 24 * MAX_SG_ELEMENTS)?,
            extension: if hw.srb_extension_size > 0 {
                Some(alloc(hal, hw.srb_extension_size as usize)?)
            } else {
                None
            },
            sense: alloc(hal, 32)?,
        });
    }
    Ok(slots)
}

/// PORT_CONFIGURATION_INFORMATION as storport.sys fills it for a PCI adapter before
/// HwFindAdapter (the simulator's values: one bus, 128 targets, 8 LUNs, 64-bit DMA).
fn port_configuration(
    hw: &abi::HwInitializationData,
    bdf: Bdf,
    ranges: &DmaMemory,
    count: usize,
    extended: bool,
) -> abi::PortConfigurationInformation {
    let mut config = abi::PortConfigurationInformation::new_zeroed();
    config.length = abi::PORT_CONFIGURATION_INFORMATION_SIZE;
    config.system_io_bus_number = u32::from(bdf.bus);
    config.adapter_interface_type = abi::PCI_BUS;
    config.interrupt_mode = abi::LATCHED;
    config.maximum_transfer_length = abi::SP_UNINITIALIZED_VALUE;
    config.number_of_physical_breaks = abi::SP_UNINITIALIZED_VALUE;
    config.dma_channel = abi::SP_UNINITIALIZED_VALUE;
    config.dma_port = abi::SP_UNINITIALIZED_VALUE;
    config.number_of_access_ranges = count as u32;
    config.access_ranges = ranges.cpu_address() as u64;
    config.number_of_buses = 1;
    config.initiator_bus_id = [0xff; 8];
    config.scatter_gather = 1;
    config.master = 1;
    config.dma32_bit_addresses = 1;
    config.map_buffers = hw.map_buffers;
    config.need_physical_addresses = hw.need_physical_addresses;
    config.tagged_queuing = hw.tagged_queuing;
    config.auto_request_sense = hw.auto_request_sense;
    config.multiple_request_per_lu = hw.multiple_request_per_lu;
    config.maximum_number_of_targets = 128;
    config.srb_type = if extended {
        abi::SRB_TYPE_STORAGE_REQUEST_BLOCK
    } else {
        abi::SRB_TYPE_SCSI_REQUEST_BLOCK
    };
    config.address_type = abi::STORAGE_ADDRESS_TYPE_BTL8;
    config.slot_number = u32::from(bdf.device) | (u32::from(bdf.function) << 5);
    config.device_extension_size = hw.device_extension_size;
    config.specific_lu_extension_size = hw.specific_lu_extension_size;
    config.srb_extension_size = hw.srb_extension_size;
    config.dma64_bit_addresses = abi::SCSI_DMA64_SYSTEM_SUPPORTED;
    config.maximum_number_of_logical_units = 8;
    config.max_number_of_io = 1000;
    config.max_ios_per_lun = 1000;
    config.initial_lun_queue_depth = 20;
    config.bus_reset_hold_time = 4_000_000;
    config
}

/// HwInitialize under the interrupt lock, then the passive-initialization routine.
fn initialize(hw: &abi::HwInitializationData) -> Result<(), StartError> {
    // Raise to DIRQL before taking the interrupt lock, so no message finds it held.
    let _ = interrupts_off();
    let extension = with(|host| {
        host.interrupt_held = true;
        host.extension
    });
    let previous = enter(DEVICE_LEVEL, Context::Initialize);
    let ok = image_call!(
        hw.hw_initialize as usize,
        fn(*mut c_void) -> u8,
        ptr(extension)
    );
    // Release the interrupt lock before lowering the IRQL, in that order.
    with(|host| host.interrupt_held = false);
    leave(previous);
    if ok == 0 {
        return Err(StartError::Initialize);
    }
    service();
    let passive = with(|host| host.passive_routine);
    if passive != 0 {
        let previous = enter(PASSIVE_LEVEL, Context::PassiveInitialize);
        let ok = image_call!(passive, fn(*mut c_void) -> u8, ptr(extension));
        leave(previous);
        if ok == 0 {
            return Err(StartError::PassiveInitialize);
        }
        service();
    }
    Ok(())
}

/// Called by the interrupt stubs (interrupts masked) for a device vector: runs the image's
/// message routine at DIRQL under the message's lock, saving the SSE state the image's code
/// may change (the interrupted code may be the image's own).
pub fn interrupt(vector: u8) {
    if !CONNECTED.load(Ordering::Acquire) {
        return;
    }
    let message = u32::from(vector.wrapping_sub(interrupts::FIRST_VECTOR));
    let call = with(|host| {
        if message >= host.messages || host.message_routine == 0 {
            host.counters.unclaimed_interrupts += 1;
            return None;
        }
        let arrival = host.arrivals.get_mut(message as usize).map_or(0, |count| {
            *count += 1;
            *count
        });
        if host.lose_interrupt == Some((message, arrival)) {
            // The planted lost interrupt: EOI'd, never seen by the image, whose HwTimer must
            // find the completion waiting.
            host.counters.lost_interrupts += 1;
            host.recovery = Recovery::Awaiting;
            println!(
                "storport: planted fault: MSI-X arrival #{arrival} of message {message} withheld"
            );
            return None;
        }
        if let Some(count) = host.counters.interrupts.get_mut(message as usize) {
            *count += 1;
        }
        let held = if host.per_message {
            host.messages_held & (1 << message) != 0
        } else {
            host.interrupt_held
        };
        if held {
            // On real hardware the delivery waits until the lock's holder lowers the IRQL;
            // here the holder raised to DIRQL with interrupts masked, so this cannot happen.
            host.violate(format_args!(
                "message {message} delivered while its lock is held"
            ));
            return None;
        }
        if host.per_message {
            host.messages_held |= 1 << message;
        } else {
            host.interrupt_held = true;
        }
        Some((host.message_routine, host.extension))
    });
    let Some((routine, extension)) = call else {
        return;
    };
    let mut saved = SseState([0; 512]);
    saved.save();
    // Interrupts stay masked throughout: this is the interrupt gate's handler, before EOI.
    let previous = set_level(DEVICE_LEVEL, Context::Interrupt);
    let _claimed = image_call!(routine, fn(*mut c_void, u32) -> u8, ptr(extension), message);
    let _ = set_level(previous.0, previous.1);
    let _ = interrupts_off();
    with(|host| {
        if host.per_message {
            host.messages_held &= !(1 << message);
        } else {
            host.interrupt_held = false;
        }
    });
    saved.restore();
}

/// The FXSAVE area (x87, MMX and SSE registers, MXCSR).
#[repr(C, align(16))]
struct SseState([u8; 512]);

impl SseState {
    fn save(&mut self) {
        // SAFETY: FXSAVE64 writes 512 bytes to a 16-byte-aligned buffer, which `self` is;
        // CR4.OSFXSR is set by the boot code.
        unsafe { asm!("fxsave64 [{}]", in(reg) self.0.as_mut_ptr(), options(nostack)) };
    }

    fn restore(&self) {
        // SAFETY: FXRSTOR64 reads what `save` wrote (512 bytes, 16-byte aligned).
        unsafe { asm!("fxrstor64 [{}]", in(reg) self.0.as_ptr(), options(nostack, readonly)) };
    }
}

/// Runs what storport.sys runs after interrupts return: queued DPCs at DISPATCH_LEVEL, in the
/// order they were queued, then HwTimer if its time has come (under the StartIo lock).
pub fn service() {
    loop {
        let next = with(|host| {
            let index = host
                .dpcs
                .iter()
                .enumerate()
                .filter_map(|(index, dpc)| dpc.filter(|dpc| dpc.queued).map(|dpc| (index, dpc)))
                .min_by_key(|(_, dpc)| dpc.order)?;
            let (index, dpc) = index;
            if let Some(Some(entry)) = host.dpcs.get_mut(index) {
                entry.queued = false;
            }
            host.counters.dpcs += 1;
            Some((dpc, host.extension))
        });
        let Some((dpc, extension)) = next else {
            break;
        };
        let previous = enter(DISPATCH_LEVEL, Context::Dpc);
        image_call!(
            dpc.routine,
            fn(*mut c_void, *mut c_void, *mut c_void, *mut c_void),
            ptr(dpc.address),
            ptr(extension),
            ptr(dpc.arguments.0),
            ptr(dpc.arguments.1)
        );
        leave(previous);
    }
    let now = interrupts::ticks();
    let due = with(|host| match host.timer {
        Some((routine, deadline)) if now >= deadline && !host.start_io_held => {
            host.timer = None;
            host.start_io_held = true;
            host.counters.timer_calls += 1;
            Some((routine, host.extension))
        }
        _ => None,
    });
    if let Some((routine, extension)) = due {
        let previous = enter(DISPATCH_LEVEL, Context::Timer);
        image_call!(routine, fn(*mut c_void), ptr(extension));
        leave(previous);
        with(|host| host.start_io_held = false);
    }
}

/// The data direction of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// No data.
    None,
    /// Device to memory.
    In,
    /// Memory to device.
    Out,
}

/// The SRB function of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// SRB_FUNCTION_EXECUTE_SCSI with the request's CDB.
    ExecuteScsi,
    /// SRB_FUNCTION_IO_CONTROL (IOCTL_SCSI_MINIPORT): the data buffer holds SRB_IO_CONTROL and
    /// its payload; addressed to the adapter.
    IoControl,
    /// SRB_FUNCTION_RESET_LOGICAL_UNIT.
    ResetLogicalUnit,
    /// SRB_FUNCTION_ABORT_COMMAND of the request with this ticket (its SRB in NextSrb).
    Abort(Ticket),
    /// SRB_FUNCTION_WMI for the adapter: the IRP_MN_* minor function and the GUID DataPath
    /// names; the data buffer holds the request WNODE.
    Wmi {
        /// WMISubFunction.
        sub_function: u8,
        /// The data block's GUID, as WMI lays it out.
        guid: [u8; 16],
    },
}

impl Function {
    /// The SRB_FUNCTION_* code.
    fn code(self) -> u8 {
        match self {
            Self::ExecuteScsi => abi::SRB_FUNCTION_EXECUTE_SCSI,
            Self::IoControl => abi::SRB_FUNCTION_IO_CONTROL,
            Self::ResetLogicalUnit => abi::SRB_FUNCTION_RESET_LOGICAL_UNIT,
            Self::Abort(_) => abi::SRB_FUNCTION_ABORT_COMMAND,
            Self::Wmi { .. } => abi::SRB_FUNCTION_WMI,
        }
    }
}

/// One SCSI request for the image.
pub struct Request<'a> {
    /// What the SRB asks.
    pub function: Function,
    /// Target ID.
    pub target: u8,
    /// LUN.
    pub lun: u8,
    /// The CDB (up to 16 bytes).
    pub cdb: &'a [u8],
    /// Data direction.
    pub direction: Direction,
    /// The data buffer and how many bytes of it to transfer.
    pub data: Option<(&'a DmaMemory, u32)>,
    /// The logical processor it is submitted from.
    pub processor: u32,
}

/// How a request ended, read back from the SRB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// SrbStatus (without the AUTOSENSE_VALID and QUEUE_FROZEN bits).
    pub srb_status: u8,
    /// Whether sense data was returned.
    pub sense_valid: bool,
    /// ScsiStatus.
    pub scsi_status: u8,
    /// DataTransferLength as the image left it.
    pub transferred: u32,
    /// Sense key, ASC, ASCQ (when sense is valid).
    pub sense: [u8; 3],
}

/// Why a request could not be submitted or waited for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Every slot is in use.
    NoSlot,
    /// The CDB is empty or longer than 16 bytes.
    BadCdb,
    /// The data buffer is longer than the SRB can describe.
    TooLong,
    /// The SRB did not complete within the limit: it was not completed by the image (or the
    /// host dropped its RequestComplete).
    NeverCompleted {
        /// The SRB's address.
        srb: usize,
        /// Its slot.
        slot: usize,
    },
    /// BuildIo returned FALSE without completing it.
    Lost,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSlot => write!(f, "no free SRB slot"),
            Self::BadCdb => write!(f, "bad CDB length"),
            Self::TooLong => write!(f, "transfer too long"),
            Self::NeverCompleted { srb, slot } => write!(
                f,
                "SRB {srb:#x} (slot {slot}) never completed: no RequestComplete reached StorPort"
            ),
            Self::Lost => write!(f, "HwBuildIo returned FALSE without completing the SRB"),
        }
    }
}

/// A submitted request's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(usize);

impl Ticket {
    /// The error that names this request's SRB as never completed.
    #[must_use]
    pub fn describe(self) -> RequestError {
        let srb = with(|host| host.slots.get(self.0).map_or(0, |slot| slot.srb));
        RequestError::NeverCompleted { srb, slot: self.0 }
    }

    /// Whether the request has completed.
    #[must_use]
    pub fn is_complete(self) -> bool {
        with(|host| {
            host.slots
                .get(self.0)
                .is_some_and(|slot| slot.state == SlotState::Completed)
        })
    }
}

impl Adapter {
    /// What the image configured.
    #[must_use]
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Builds the SRB for `request` in a free slot and hands it to HwBuildIo, then HwStartIo.
    ///
    /// # Errors
    /// [`RequestError`]: no slot, a bad CDB, or BuildIo's FALSE without a completion.
    pub fn submit(&mut self, request: &Request<'_>) -> Result<Ticket, RequestError> {
        let needs_cdb = request.function == Function::ExecuteScsi;
        if request.cdb.len() > 16 || needs_cdb == request.cdb.is_empty() {
            return Err(RequestError::BadCdb);
        }
        let index = with(|host| {
            host.slots
                .iter()
                .position(|slot| slot.state == SlotState::Free)
        })
        .ok_or(RequestError::NoSlot)?;
        let memory = self
            .slots
            .get(index)
            .and_then(Option::as_ref)
            .ok_or(RequestError::NoSlot)?;
        let srb = memory.srb.cpu_address();
        let extension = memory.extension.as_ref().map_or(0, DmaMemory::cpu_address);
        let sense = memory.sense.cpu_address();
        let (data, len) = request
            .data
            .map_or((0, 0), |(buffer, len)| (buffer.cpu_address(), len));
        if request
            .data
            .is_some_and(|(buffer, len)| len as usize > buffer.len())
        {
            return Err(RequestError::TooLong);
        }
        write_srb(
            memory,
            request,
            self.extended,
            (data, len),
            (extension, sense),
        );
        let host_extension = with(|host| {
            host.processor = request.processor % LOGICAL_PROCESSORS;
            if let Some(slot) = host.slots.get_mut(index) {
                *slot = Slot {
                    state: SlotState::Outstanding,
                    srb,
                    regions: [
                        (extension, self.hw.srb_extension_size as usize),
                        (data, len as usize),
                        (sense, 32),
                    ],
                    sg: srb + 256,
                    completed_in: Context::Host,
                };
            }
            host.extension
        });
        if let Some(early) = self.build_io(index, srb, host_extension)? {
            return Ok(early);
        }
        let concurrent = with(|host| {
            let concurrent = host.perf_flags & abi::STOR_PERF_CONCURRENT_CHANNELS != 0;
            if !concurrent {
                host.start_io_held = true;
            }
            concurrent
        });
        let previous = enter(DISPATCH_LEVEL, Context::StartIo);
        let _ = image_call!(
            self.hw.hw_start_io as usize,
            fn(*mut c_void, *mut c_void) -> u8,
            ptr(host_extension),
            ptr(srb)
        );
        leave(previous);
        if !concurrent {
            with(|host| host.start_io_held = false);
        }
        Ok(Ticket(index))
    }

    /// The features the image negotiated with the device, read from the common configuration
    /// (virtio 1.x section 4.1.4.3). Writing `driver_feature_select` after DRIVER_OK changes
    /// nothing on the device, and the image no longer uses it once initialised.
    pub fn negotiated_features(&self) -> Option<u64> {
        use virtio_core::hal::RegisterIo as _;
        use virtio_core::pci::{PciTransport, VirtioPciCommonCfg};
        let config = pci_scan::Function::new(&pci::Mechanism1, self.bdf);
        let common = PciTransport::probe(&config, self.registers)
            .ok()?
            .layout()
            .common;
        let at = |register: u64| u64::from(common.offset) + register;
        let mut features = 0;
        for half in 0..2_u32 {
            self.registers.write32(
                common.bar,
                at(VirtioPciCommonCfg::DRIVER_FEATURE_SELECT),
                half,
            );
            let bits = self
                .registers
                .read32(common.bar, at(VirtioPciCommonCfg::DRIVER_FEATURE));
            features |= u64::from(bits) << (32 * half);
        }
        Some(features)
    }

    /// HwBuildIo at DISPATCH_LEVEL without locks, and the checks of its answer: FALSE means it
    /// completed the SRB (the ticket is returned at once), TRUE that HwStartIo follows (`None`).
    fn build_io(
        &self,
        index: usize,
        srb: usize,
        host_extension: usize,
    ) -> Result<Option<Ticket>, RequestError> {
        let build_io = self.hw.hw_build_io as usize;
        if build_io != 0 {
            if !with(|host| host.is_code(build_io)) {
                with(|host| host.violate(format_args!("HwBuildIo outside the image")));
                return Err(RequestError::Lost);
            }
            let previous = enter(DISPATCH_LEVEL, Context::BuildIo);
            let proceed = image_call!(
                build_io,
                fn(*mut c_void, *mut c_void) -> u8,
                ptr(host_extension),
                ptr(srb)
            );
            leave(previous);
            let state = with(|host| host.slots.get(index).map(|slot| slot.state));
            match (proceed, state) {
                (0, Some(SlotState::Completed)) => return Ok(Some(Ticket(index))),
                (0, _) => {
                    with(|host| {
                        host.violate(format_args!(
                            "HwBuildIo returned FALSE without completing SRB {srb:#x}"
                        ));
                    });
                    return Err(RequestError::Lost);
                }
                (_, Some(SlotState::Completed)) => {
                    with(|host| {
                        host.violate(format_args!(
                            "HwBuildIo completed SRB {srb:#x} but returned TRUE"
                        ));
                    });
                    return Ok(Some(Ticket(index)));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// HwResetBus for path 0, as storport.sys calls it when a request times out: at
    /// DISPATCH_LEVEL under the StartIo lock. Returns its answer.
    ///
    /// # Errors
    /// [`RequestError::Lost`] if the image has no HwResetBus inside its code.
    pub fn reset_bus(&mut self) -> Result<bool, RequestError> {
        let routine = self.hw.hw_reset_bus as usize;
        let extension = with(|host| {
            if routine == 0 || !host.is_code(routine) || host.start_io_held {
                return None;
            }
            host.start_io_held = true;
            Some(host.extension)
        })
        .ok_or(RequestError::Lost)?;
        let previous = enter(DISPATCH_LEVEL, Context::ResetBus);
        let answer = image_call!(routine, fn(*mut c_void, u32) -> u8, ptr(extension), 0);
        leave(previous);
        with(|host| host.start_io_held = false);
        Ok(answer != 0)
    }

    /// Reads the outcome of a completed `ticket` and frees its slot.
    pub fn finish(&mut self, ticket: Ticket) -> Option<Completion> {
        if !ticket.is_complete() {
            return None;
        }
        let memory = self.slots.get(ticket.0)?.as_ref()?;
        let status = memory.srb.load_u8(3);
        let (scsi_status, transferred) = if self.extended {
            let cdb_block = size_of::<abi::StorageRequestBlock>() + size_of::<abi::StorAddrBtl8>();
            (
                memory.srb.load_u8(cdb_block + 8),
                memory.srb.load_u32(60, Ordering::Relaxed),
            )
        } else {
            (
                memory.srb.load_u8(4),
                memory.srb.load_u32(16, Ordering::Relaxed),
            )
        };
        let sense = [
            memory.sense.load_u8(2) & 0x0f,
            memory.sense.load_u8(12),
            memory.sense.load_u8(13),
        ];
        with(|host| {
            if let Some(slot) = host.slots.get_mut(ticket.0) {
                *slot = Slot::FREE;
            }
        });
        Some(Completion {
            srb_status: status & 0x3f,
            sense_valid: status & abi::SRB_STATUS_AUTOSENSE_VALID != 0,
            scsi_status,
            transferred,
            sense,
        })
    }

    /// Sleeps until `ticket` completes (running DPCs and the timer as interrupts arrive), for
    /// at most `limit_ticks` APIC timer ticks.
    ///
    /// # Errors
    /// [`RequestError::NeverCompleted`] naming the SRB.
    pub fn wait(&mut self, ticket: Ticket, limit_ticks: u64) -> Result<Completion, RequestError> {
        let start = interrupts::ticks();
        loop {
            service();
            if let Some(completion) = self.finish(ticket) {
                return Ok(completion);
            }
            if interrupts::ticks().wrapping_sub(start) > limit_ticks {
                let srb = with(|host| host.slots.get(ticket.0).map_or(0, |slot| slot.srb));
                return Err(RequestError::NeverCompleted {
                    srb,
                    slot: ticket.0,
                });
            }
            sleep_unless_pending();
        }
    }
}

/// Writes `request`'s SRB (SRB_EX with a BTL8 address and a CDB16 block, or a classic SRB) into
/// its slot's memory, pointing at `data` and the slot's extension and sense buffer.
fn write_srb(
    memory: &SlotMemory,
    request: &Request<'_>,
    extended: bool,
    (data, len): (usize, u32),
    (extension, sense): (usize, usize),
) {
    let flags = match request.direction {
        Direction::None => 0,
        Direction::In => abi::SRB_FLAGS_DATA_IN,
        Direction::Out => abi::SRB_FLAGS_DATA_OUT,
    } | abi::SRB_FLAGS_QUEUE_ACTION_ENABLE;
    let mut cdb = [0; 16];
    cdb[..request.cdb.len()].copy_from_slice(request.cdb);
    memory.srb.zero();
    memory.sense.zero();
    if let Some(extension) = &memory.extension {
        extension.zero();
    }
    if request.function != Function::ExecuteScsi {
        write_control_srb(memory, request, extended, (data, len), extension);
        return;
    }
    if extended {
        let header_len = size_of::<abi::StorageRequestBlock>();
        let cdb_block = header_len + size_of::<abi::StorAddrBtl8>();
        let srb_len = cdb_block + size_of::<abi::SrbExDataScsiCdb16>();
        let header = abi::StorageRequestBlock {
            srb_flags: flags,
            request_attribute: u16::from(abi::SRB_SIMPLE_TAG_REQUEST),
            time_out_value: 10,
            address_offset: header_len as u32,
            num_srb_ex_data: 1,
            data_transfer_length: len,
            data_buffer: data as u64,
            miniport_context: extension as u64,
            srb_ex_data_offset: [cdb_block as u32],
            ..abi::StorageRequestBlock::new(srb_len, abi::SRB_FUNCTION_EXECUTE_SCSI)
        };
        let address = abi::StorAddrBtl8::new(0, request.target, request.lun);
        let block = abi::SrbExDataScsiCdb16 {
            data_type: abi::SRBEX_DATA_TYPE_SCSI_CDB16,
            length: abi::SRBEX_DATA_SCSI_CDB16_LENGTH,
            scsi_status: 0,
            sense_info_buffer_length: 32,
            cdb_length: request.cdb.len() as u8,
            reserved: 0,
            reserved1: 0,
            sense_info_buffer: sense as u64,
            cdb,
        };
        let _ = memory.srb.write_bytes(0, header.as_bytes());
        let _ = memory.srb.write_bytes(header_len, address.as_bytes());
        let _ = memory.srb.write_bytes(cdb_block, block.as_bytes());
    } else {
        let block = abi::ScsiRequestBlock {
            length: size_of::<abi::ScsiRequestBlock>() as u16,
            function: abi::SRB_FUNCTION_EXECUTE_SCSI,
            target_id: request.target,
            lun: request.lun,
            queue_action: abi::SRB_SIMPLE_TAG_REQUEST,
            cdb_length: request.cdb.len() as u8,
            sense_info_buffer_length: 32,
            srb_flags: flags,
            data_transfer_length: len,
            time_out_value: 10,
            data_buffer: data as u64,
            sense_info_buffer: sense as u64,
            srb_extension: extension as u64,
            cdb,
            ..abi::ScsiRequestBlock::default()
        };
        let _ = memory.srb.write_bytes(0, block.as_bytes());
    }
}

/// Writes a request without a CDB (IOCTL, LUN reset, abort): an SRB_EX of a header and its
/// address block and no extended data, or a classic SRB; an abort names its victim's SRB in
/// NextSrb, as storport.sys does.
fn write_control_srb(
    memory: &SlotMemory,
    request: &Request<'_>,
    extended: bool,
    (data, len): (usize, u32),
    extension: usize,
) {
    let next_srb = match request.function {
        Function::Abort(victim) => with(|host| host.slots.get(victim.0).map_or(0, |slot| slot.srb)),
        _ => 0,
    } as u64;
    let flags = if request.function == Function::IoControl {
        abi::SRB_FLAGS_DATA_IN | abi::SRB_FLAGS_NO_QUEUE_FREEZE
    } else {
        0
    };
    let function = request.function.code();
    if let Function::Wmi { sub_function, guid } = request.function {
        write_wmi_srb(
            memory,
            extended,
            (data, len),
            extension,
            (sub_function, guid),
        );
        return;
    }
    if extended {
        let header_len = size_of::<abi::StorageRequestBlock>();
        let srb_len = header_len + size_of::<abi::StorAddrBtl8>();
        let header = abi::StorageRequestBlock {
            srb_flags: flags,
            time_out_value: 10,
            address_offset: header_len as u32,
            num_srb_ex_data: 0,
            data_transfer_length: len,
            data_buffer: data as u64,
            miniport_context: extension as u64,
            next_srb,
            ..abi::StorageRequestBlock::new(srb_len, function)
        };
        let address = abi::StorAddrBtl8::new(0, request.target, request.lun);
        let _ = memory.srb.write_bytes(0, header.as_bytes());
        let _ = memory.srb.write_bytes(header_len, address.as_bytes());
    } else {
        let block = abi::ScsiRequestBlock {
            length: size_of::<abi::ScsiRequestBlock>() as u16,
            function,
            target_id: request.target,
            lun: request.lun,
            srb_flags: flags,
            data_transfer_length: len,
            time_out_value: 10,
            data_buffer: data as u64,
            next_srb,
            srb_extension: extension as u64,
            ..abi::ScsiRequestBlock::default()
        };
        let _ = memory.srb.write_bytes(0, block.as_bytes());
    }
}

/// Where in a slot's SRB memory a WMI request's GUID is kept (after the largest SRB, before
/// the scatter/gather list at 256).
const WMI_GUID_OFFSET: usize = 232;

/// Writes an adapter WMI request: SRB_EX with an SRBEX_DATA_WMI block, or a classic
/// SCSI_WMI_REQUEST_BLOCK; DataPath points to the GUID, kept in the slot's memory.
fn write_wmi_srb(
    memory: &SlotMemory,
    extended: bool,
    (data, len): (usize, u32),
    extension: usize,
    (sub_function, guid): (u8, [u8; 16]),
) {
    let _ = memory.srb.write_bytes(WMI_GUID_OFFSET, &guid);
    let data_path = (memory.srb.cpu_address() + WMI_GUID_OFFSET) as u64;
    if extended {
        let header_len = size_of::<abi::StorageRequestBlock>();
        let wmi_block = header_len + size_of::<abi::StorAddrBtl8>();
        let srb_len = wmi_block + size_of::<abi::SrbExDataWmi>();
        let header = abi::StorageRequestBlock {
            time_out_value: 10,
            address_offset: header_len as u32,
            num_srb_ex_data: 1,
            data_transfer_length: len,
            data_buffer: data as u64,
            miniport_context: extension as u64,
            srb_ex_data_offset: [wmi_block as u32],
            ..abi::StorageRequestBlock::new(srb_len, abi::SRB_FUNCTION_WMI)
        };
        let block = abi::SrbExDataWmi {
            data_type: abi::SRBEX_DATA_TYPE_WMI,
            length: abi::SRBEX_DATA_WMI_LENGTH,
            wmi_sub_function: sub_function,
            wmi_flags: abi::SRB_WMI_FLAGS_ADAPTER_REQUEST,
            data_path,
            ..abi::SrbExDataWmi::default()
        };
        let _ = memory.srb.write_bytes(0, header.as_bytes());
        let address = abi::StorAddrBtl8::new(0, 0, 0);
        let _ = memory.srb.write_bytes(header_len, address.as_bytes());
        let _ = memory.srb.write_bytes(wmi_block, block.as_bytes());
    } else {
        let block = abi::ScsiWmiRequestBlock {
            length: size_of::<abi::ScsiWmiRequestBlock>() as u16,
            function: abi::SRB_FUNCTION_WMI,
            wmi_sub_function: sub_function,
            wmi_flags: abi::SRB_WMI_FLAGS_ADAPTER_REQUEST,
            data_transfer_length: len,
            time_out_value: 10,
            data_buffer: data as u64,
            data_path,
            srb_extension: extension as u64,
            ..abi::ScsiWmiRequestBlock::default()
        };
        let _ = memory.srb.write_bytes(0, block.as_bytes());
    }
}

/// Sleeps until the next interrupt unless a DPC is already queued. Interrupts stay masked
/// between the check and the `hlt`, so one arriving in between ends the sleep.
pub fn sleep_unless_pending() {
    let _ = interrupts_off();
    // `with` restores the masked state it found, so nothing arrives between this check and
    // the `hlt`.
    let pending = with(|host| host.dpcs.iter().flatten().any(|dpc| dpc.queued));
    if pending {
        interrupts_restore(true);
    } else {
        // SAFETY: `sti` takes effect after the next instruction, so an interrupt pending since
        // the check wakes the `hlt`; the APIC timer wakes it at the latest.
        unsafe { asm!("sti", "hlt", options(nomem, nostack)) };
    }
}

/// The context of the first RequestComplete after the planted lost interrupt, if it came.
#[must_use]
pub fn recovered_in() -> Option<Context> {
    with(|host| match host.recovery {
        Recovery::Completed(context) => Some(context),
        Recovery::NotPlanted | Recovery::Awaiting => None,
    })
}

/// What the host counted so far.
#[must_use]
pub fn counters() -> Counters {
    with(|host| host.counters)
}

/// RequestCompletes seen so far, including any dropped: the number the planted fault counts.
static COMPLETIONS_SEEN: AtomicU32 = AtomicU32::new(0);

/// Checks at the end of a run: nothing outstanding, no lock held, no queued DPC.
pub fn final_check() {
    with(|host| {
        let outstanding = host
            .slots
            .iter()
            .filter(|slot| slot.state == SlotState::Outstanding)
            .count();
        if outstanding > 0 {
            host.violate(format_args!("{outstanding} SRBs outstanding at the end"));
        }
        if host.start_io_held || host.interrupt_held || host.messages_held != 0 {
            host.violate(format_args!("a lock is still held at the end"));
        }
    });
}

/// Reads a 32-bit configuration register of the adapter's function.
fn config_read(bdf: Bdf, offset: u8) -> u32 {
    pci::Mechanism1.read32(bdf, offset)
}
