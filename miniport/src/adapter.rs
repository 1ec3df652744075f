//! The adapter: virtio transport, rings, limits and per-queue locks, living in StorPort's
//! device extension, plus the routines that bring it up (find-adapter, initialize, passive
//! initialize), reset it, and route interrupts to queues.
//!
//! Concurrency follows StorPort's rules. HwBuildIo runs with no lock; HwStartIo runs on many
//! processors at once (concurrent channels), so each request queue is guarded by the spin lock
//! of its MSI-X message, the lock StorPort itself holds while running that message's ISR. The
//! per-queue state sits in an `UnsafeCell` reached only through a [`QueueGuard`], which exists
//! only while that lock is held. A device reset takes every queue lock in ascending order; only
//! the one context that wins the `resetting` flag ever holds more than one lock, so the order
//! cannot invert.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering, fence};

use virtio_core::features::{Features, SCSI_DRIVER_FEATURES};
use virtio_core::hal::{Hal, RegisterIo};
use virtio_core::pci::{PciTransport, TransportError, VIRTIO_DEVICE_TYPE_SCSI};
use virtio_core::queue::packed::PackedQueue;
use virtio_core::queue::split::SplitQueue;
use virtio_core::queue::{QueueFeatures, Slot, Virtqueue};
use virtio_core::scsi::{Limits, queue_index};

use crate::dump::{DumpMode, Sizing};
use crate::events::EventQueue;
use crate::limits::StorLimits;
use crate::luns::{LunSlot, LunTable};
use crate::platform::{Carved, PciSnapshot, StorPortRegisters, UncachedArena};
use crate::port::{DeviceExtension, StorPortRegistry};
use crate::registry::{Parameters, Report, ValueOutcome};
use crate::storport::{
    AccessRange, InterruptLock, InterruptSynchronizePerMessage, PortConfigurationInformation,
    SCSI_DMA64_MINIPORT_FULL64BIT_SUPPORTED, SP_RETURN_ERROR, SP_RETURN_FOUND, SP_RETURN_NOT_FOUND,
    SRB_TYPE_STORAGE_REQUEST_BLOCK, STOR_MAP_NON_READ_WRITE_BUFFERS, STORAGE_ADDRESS_TYPE_BTL8,
    StorDpc, StorLockHandle, StorSynchronizeFullDuplex, TRUE,
};
use crate::trace::{ADAPTER_WIDE, ResetCause, TraceEntry, TraceEvent, TraceRing};
use crate::vpd::LunLocation;

/// Most request queues the adapter drives (one per processor on a 64-processor guest).
pub const MAX_REQUEST_QUEUES: u16 = 64;
/// Largest ring we set up, whatever the device offers: 1024 requests per queue is more than
/// StorPort keeps outstanding per adapter, and bounds the uncached extension.
pub const MAX_QUEUE_SIZE: u16 = 1024;
/// Delay before the timer that resets the device on behalf of an ISR (the shortest StorPort
/// honours; the timer only needs to run outside the ISR).
const RESET_TIMER_MICROSECONDS: u32 = 1;
/// Marks a device extension holding a constructed [`Adapter`] (the first field).
pub const ADAPTER_MAGIC: u64 = u64::from_le_bytes(*b"rvscsi\x01\x00");

/// Alignment of ring memory: a page, so no ring straddles pages needlessly (dump mode packs
/// them tighter: [`Sizing::ring_align`]).
pub(crate) const RING_MEMORY_ALIGN: usize = 4096;

mod polling;

/// Why bringing the adapter up failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterError {
    /// PCI configuration space could not be read.
    NoConfigSpace,
    /// A virtio device, but not SCSI (virtio device type).
    WrongDeviceType(u16),
    /// The function is not virtio-scsi or its capabilities are unusable.
    Transport(TransportError),
    /// The device configuration is unusable.
    Config(virtio_core::scsi::ConfigError),
    /// The limits derived from the device are unusable.
    Limits(crate::limits::LimitsError),
    /// StorPort could not give the uncached extension we need.
    NoUncachedExtension {
        /// Bytes asked for.
        len: usize,
    },
    /// A ring could not be created over the carved memory.
    Queue(virtio_core::queue::QueueError),
    /// Carving DMA memory or a table failed (a sizing bug: it was sized first).
    OutOfMemory,
    /// In dump mode, the uncached extension would exceed what the dump port can give.
    OverDumpBudget {
        /// Bytes needed.
        len: usize,
        /// [`crate::dump::DUMP_UNCACHED_BUDGET`].
        budget: usize,
    },
}

impl From<TransportError> for AdapterError {
    fn from(error: TransportError) -> Self {
        Self::Transport(error)
    }
}

/// A ring of either layout, driven through the common trait.
#[derive(Debug)]
pub enum Ring {
    /// Split virtqueue (virtio 1.x section 2.7).
    Split(SplitQueue<Carved<Slot>>),
    /// Packed virtqueue (virtio 1.x section 2.8).
    Packed(PackedQueue<Carved<Slot>>),
}

impl Ring {
    /// The ring as the common trait.
    pub fn queue(&mut self) -> &mut dyn Virtqueue {
        match self {
            Self::Split(queue) => queue,
            Self::Packed(queue) => queue,
        }
    }
}

/// One virtqueue and the requests in flight on it.
#[derive(Debug)]
pub struct QueueState {
    /// The ring.
    pub ring: Ring,
    /// SRB extension address of the request in flight for each token (0 when none).
    pub requests: Carved<usize>,
    /// Offset of the queue's notification address in the notify BAR.
    pub notify_offset: u64,
    /// The virtqueue index.
    pub index: u16,
}

/// How interrupts reach the queues, decided in HwInitialize from the messages granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum InterruptMode {
    /// One MSI-X message per virtqueue (message 0 for configuration changes): the normal case.
    PerQueue = 1,
    /// One MSI/MSI-X message for everything.
    Shared = 2,
    /// Line-based (INTx): the ISR reads the ISR status register.
    Line = 3,
}

/// Per-queue counters, readable from a crash dump and (later) through WMI.
#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Requests submitted.
    pub requests: AtomicU64,
    /// Device notifications (kicks).
    pub kicks: AtomicU64,
    /// Interrupts taken for the queue.
    pub interrupts: AtomicU64,
    /// Requests completed with SRB_STATUS_BUSY because the ring was full.
    pub queue_full: AtomicU64,
    /// Requests completed.
    pub completions: AtomicU64,
    /// Completed requests that read data from the device.
    pub reads: AtomicU64,
    /// Completed requests that wrote data to the device.
    pub writes: AtomicU64,
    /// Bytes read (as completed: the device's residual taken off).
    pub bytes_read: AtomicU64,
    /// Bytes written.
    pub bytes_written: AtomicU64,
}

impl QueueCounters {
    /// Counts a completed request that moved `bytes` in `direction`.
    pub fn record_transfer(&self, direction: virtio_core::scsi::DataDirection, bytes: u32) {
        use virtio_core::scsi::DataDirection;
        let (requests, total) = match direction {
            DataDirection::FromDevice => (&self.reads, &self.bytes_read),
            DataDirection::ToDevice => (&self.writes, &self.bytes_written),
            DataDirection::None | DataDirection::Bidirectional => return,
        };
        requests.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(u64::from(bytes), Ordering::Relaxed);
    }
}

/// The miniport's state for one adapter, constructed in the device extension by find-adapter.
#[repr(C)]
#[derive(Debug)]
pub struct Adapter {
    /// [`ADAPTER_MAGIC`] once constructed (read before any reference is formed).
    magic: u64,
    extension: DeviceExtension,
    registers: StorPortRegisters,
    /// The transport; mutated only in HwInitialize/restart (no I/O possible) or by the reset
    /// winner holding every queue lock.
    transport: UnsafeCell<PciTransport<StorPortRegisters>>,
    arena: UncachedArena,
    notify_bar: u8,
    features: Features,
    device_limits: Limits,
    limits: StorLimits,
    /// PCI bus and slot, for synthesised identifiers.
    bus: u8,
    slot: u8,
    /// Identity and sizes the WMI classes report.
    wmi_facts: crate::wmi::AdapterFacts,
    /// Virtqueues prepared (controlq, eventq, then request queues).
    prepared_queues: u16,
    /// Request queues in use (set in HwInitialize).
    request_queues: AtomicU16,
    /// [`InterruptMode`] as a byte (set in HwInitialize).
    mode: AtomicU8,
    queues: Carved<UnsafeCell<Option<QueueState>>>,
    dpcs: Carved<StorDpc>,
    counters: Carved<QueueCounters>,
    /// What the bus scan told Windows about each logical unit ([`crate::luns`]).
    luns: LunTable<Carved<LunSlot>>,
    /// Where WMI copies the LUN table to answer from it ([`crate::wmi::WmiScratch`]).
    wmi_scratch: crate::wmi::WmiScratch,
    /// The eventq's buffers, the units the device reported removed, and the configuration
    /// watch ([`crate::events`]).
    events: EventQueue,
    /// Lock handle for the line-interrupt lock; only its holder touches it.
    line_lock: UnsafeCell<StorLockHandle>,
    dpc_ready: AtomicBool,
    resetting: AtomicBool,
    /// The [`ResetCause`] of the reset [`Self::reset_later`] asked StorPort's timer for.
    timer_reset_cause: AtomicU32,
    /// Resets performed.
    pub resets: AtomicU64,
    /// The most verbose StorPortDebugPrint level emitted (registry `RvscsiDebugPrintLevel`).
    debug_print_level: u32,
    /// Set when the crash-dump or hibernation stack loaded this instance ([`crate::dump`]):
    /// one polled queue, no DPCs, timers or MSI-X.
    dump: Option<DumpMode>,
    /// The last notable events ([`crate::trace`]); last in the extension so the hot fields
    /// above share cache lines.
    trace: TraceRing,
}

/// Everything find-adapter learns before the memory is carved.
struct Discovery {
    transport: PciTransport<StorPortRegisters>,
    registers: StorPortRegisters,
    features: Features,
    device_limits: Limits,
    sizes: [u16; MAX_REQUEST_QUEUES as usize + 2],
    queue_count: u16,
    /// The WMI identity.
    wmi_facts: crate::wmi::AdapterFacts,
    /// The registry parameters, validated (fixed ones in dump mode).
    parameters: Parameters,
    /// Whether the dump stack loaded us.
    dump: Option<DumpMode>,
}

impl Adapter {
    /// The adapter in `extension`, if find-adapter constructed one there.
    ///
    /// # Safety
    /// `extension` is the device extension StorPort passed to a HW routine (at least
    /// `size_of::<Adapter>()` bytes, 8-aligned, zeroed before find-adapter).
    #[must_use]
    pub unsafe fn from_extension<'a>(extension: *mut core::ffi::c_void) -> Option<&'a Self> {
        let pointer = NonNull::new(extension.cast::<Self>())?;
        // SAFETY: the extension is at least 8 bytes, 8-aligned and initialised (zeroed by
        // StorPort or constructed by us); `magic` is the first field of a repr(C) struct.
        let magic = unsafe { pointer.cast::<u64>().read() };
        if magic != ADAPTER_MAGIC {
            return None;
        }
        // SAFETY: the magic is written only with the whole Adapter, constructed in place by
        // find-adapter, and the adapter is only mutated through interior mutability afterwards.
        Some(unsafe { pointer.as_ref() })
    }

    /// HwFindAdapter: identifies the device, negotiates features, derives the limits, fills
    /// `config` and carves the uncached extension, sized down when `dump` says the dump stack
    /// loaded us. Returns an `SP_RETURN_*` code.
    ///
    /// # Safety
    /// `extension` is the zeroed device extension of `size_of::<Adapter>()` bytes, 8-aligned,
    /// exclusively ours for the call; `config` is StorPort's ConfigInfo for this adapter.
    pub unsafe fn find(
        extension: DeviceExtension,
        config: &mut PortConfigurationInformation,
        dump: Option<DumpMode>,
    ) -> u32 {
        let pointer = extension.raw().cast::<Self>();
        if !pointer.is_aligned() {
            return SP_RETURN_ERROR;
        }
        // The registry is readable only at PASSIVE_LEVEL, so here; the reader frees StorPort's
        // registry buffer when it goes out of scope. The dump port calls find-adapter above
        // PASSIVE_LEVEL, so dump mode runs with its own fixed parameters instead.
        let (parameters, registry_report) = if dump.is_some() {
            (
                crate::dump::parameters(),
                Report {
                    outcomes: [ValueOutcome::Absent; 4],
                },
            )
        } else {
            let mut registry = StorPortRegistry::new(extension);
            crate::registry::read(&mut registry, MAX_REQUEST_QUEUES)
        };
        let discovery = match Self::discover(extension, config, parameters, dump) {
            Ok(discovery) => discovery,
            Err(
                AdapterError::NoConfigSpace
                | AdapterError::WrongDeviceType(_)
                | AdapterError::Transport(_),
            ) => {
                return SP_RETURN_NOT_FOUND;
            }
            Err(_) => return SP_RETURN_ERROR,
        };
        match Self::construct(extension, config, discovery) {
            // SAFETY: the caller guarantees the extension is ours, sized and aligned (checked
            // above) for an Adapter; it is written once, before any reference exists.
            Ok(adapter) => unsafe { pointer.write(adapter) },
            Err(_) => return SP_RETURN_ERROR,
        }
        // SAFETY: written just above, with the magic.
        if let Some(adapter) = unsafe { Self::from_extension(extension.raw()) } {
            adapter.trace_found(&registry_report);
        }
        SP_RETURN_FOUND
    }

    fn discover(
        extension: DeviceExtension,
        config: &PortConfigurationInformation,
        parameters: Parameters,
        dump: Option<DumpMode>,
    ) -> Result<Discovery, AdapterError> {
        let pci = PciSnapshot::read(extension, config.system_io_bus_number, config.slot_number);
        if pci.len() < 64 {
            return Err(AdapterError::NoConfigSpace);
        }
        let mut registers = StorPortRegisters::new(extension);
        let ranges: &[AccessRange] = if config.access_ranges.is_null() {
            &[]
        } else {
            // SAFETY: StorPort passes `NumberOfAccessRanges` ranges at `AccessRanges`, valid
            // for the duration of HwFindAdapter.
            unsafe {
                core::slice::from_raw_parts(
                    config.access_ranges,
                    config.number_of_access_ranges as usize,
                )
            }
        };
        for bar in 0..6u8 {
            let Some((address, io_space)) = pci.bar_address(bar) else {
                continue;
            };
            let Some(range) = ranges.iter().find(|range| {
                range.range_start.as_u64() == address && (range.range_in_memory == TRUE) != io_space
            }) else {
                continue;
            };
            if let Some(base) = extension.map_device_base(
                config.system_io_bus_number,
                address,
                range.range_length,
                io_space,
            ) {
                registers.map(bar, base, u64::from(range.range_length));
            }
        }
        let mut transport = PciTransport::probe(&pci, registers)?;
        if transport.device_type() != VIRTIO_DEVICE_TYPE_SCSI {
            return Err(AdapterError::WrongDeviceType(transport.device_type()));
        }
        transport.reset()?;
        let features = transport.begin_init(SCSI_DRIVER_FEATURES)?;
        let device_limits = Self::configure_device(&mut transport)?;
        let request_queues = device_limits
            .num_queues
            .min(MAX_REQUEST_QUEUES)
            .min(parameters.max_request_queues.unwrap_or(MAX_REQUEST_QUEUES));
        let queue_count = request_queues + queue_index::REQUEST_BASE;
        let packed = features.contains(Features::RING_PACKED);
        let mut sizes = [0u16; MAX_REQUEST_QUEUES as usize + 2];
        for (index, size) in sizes.iter_mut().enumerate().take(usize::from(queue_count)) {
            let max = transport
                .queue_max_size(index as u16)?
                .min(Sizing::of(dump).queue_size_cap(index as u16));
            // Split rings need a power of two; packed rings take any size.
            *size = if packed {
                max
            } else {
                max.checked_ilog2().map_or(0, |log| 1 << log)
            };
        }
        let smallest_request_queue = sizes
            .iter()
            .take(usize::from(queue_count))
            .skip(usize::from(queue_index::REQUEST_BASE))
            .copied()
            .min()
            .unwrap_or(0);
        Ok(Discovery {
            transport,
            registers,
            features,
            device_limits,
            sizes,
            queue_count,
            wmi_facts: crate::wmi::AdapterFacts::from_pci(
                &pci,
                config.system_io_bus_number,
                config.slot_number,
                smallest_request_queue,
            ),
            parameters,
            dump,
        })
    }

    /// Writes the sense and CDB sizes we use and reads the device limits back.
    fn configure_device(
        transport: &mut PciTransport<StorPortRegisters>,
    ) -> Result<Limits, AdapterError> {
        match virtio_core::scsi::configure(transport) {
            Ok((_, limits)) => Ok(limits),
            Err(virtio_core::scsi::ConfigureError::Transport(error)) => {
                Err(AdapterError::Transport(error))
            }
            Err(virtio_core::scsi::ConfigureError::Config(error)) => {
                Err(AdapterError::Config(error))
            }
        }
    }

    fn ring_len(packed: bool, size: u16) -> usize {
        if packed {
            PackedQueue::<Carved<Slot>>::ring_len(size)
        } else {
            SplitQueue::<Carved<Slot>>::ring_len(size)
        }
    }

    /// Bytes of uncached extension needed, padding included.
    fn uncached_len(discovery: &Discovery) -> usize {
        let sizing = Sizing::of(discovery.dump);
        let packed = discovery.features.contains(Features::RING_PACKED);
        let request_queues = usize::from(discovery.queue_count - queue_index::REQUEST_BASE);
        let tables = usize::from(discovery.queue_count)
            * (size_of::<UnsafeCell<Option<QueueState>>>() + 16)
            + request_queues * (size_of::<StorDpc>() + size_of::<QueueCounters>() + 16);
        let rings: usize = discovery
            .sizes
            .iter()
            .take(usize::from(discovery.queue_count))
            .map(|&size| {
                Self::ring_len(packed, size)
                    + sizing.ring_align()
                    + usize::from(size) * (size_of::<Slot>() + size_of::<usize>())
                    + 32
            })
            .sum();
        let lun_slots = sizing.lun_slots();
        tables
            + rings
            + Self::lun_table_len(lun_slots)
            + crate::wmi::WmiScratch::uncached_len_for(lun_slots)
            + EventQueue::uncached_len(sizing)
    }

    /// The limits reported to StorPort, from the device's and the smallest request queue.
    fn derive_limits(discovery: &Discovery) -> Result<StorLimits, AdapterError> {
        let request_queues = discovery.queue_count - queue_index::REQUEST_BASE;
        let smallest = discovery
            .sizes
            .iter()
            .skip(usize::from(queue_index::REQUEST_BASE))
            .take(usize::from(request_queues))
            .copied()
            .min()
            .unwrap_or(0);
        // The registry's PhysicalBreaks caps the segments as vioscsi's does: as if the device's
        // seg_max were that low (max_sectors and the ring still cap it further).
        let mut device_limits = discovery.device_limits;
        if let Some(breaks) = discovery.parameters.physical_breaks {
            device_limits.seg_max = device_limits.seg_max.min(breaks.saturating_add(1));
        }
        StorLimits::derive(
            &device_limits,
            smallest,
            request_queues,
            discovery.features.contains(Features::INDIRECT_DESC),
        )
        .map_err(AdapterError::Limits)
    }

    /// Carves the LUN table of `slots` slots and the WMI scratch that copies it.
    fn carve_lun_state(
        arena: &UncachedArena,
        slots: usize,
    ) -> Result<(LunTable<Carved<LunSlot>>, crate::wmi::WmiScratch), AdapterError> {
        let table = arena
            .carve_table_with(slots, LunSlot::new)
            .ok_or(AdapterError::OutOfMemory)?;
        let scratch =
            crate::wmi::WmiScratch::carve_for(arena, slots).ok_or(AdapterError::OutOfMemory)?;
        Ok((LunTable::new(table), scratch))
    }

    /// Bytes of uncached extension a LUN table of `slots` slots takes, padding included.
    const fn lun_table_len(slots: usize) -> usize {
        slots * size_of::<LunSlot>() + align_of::<LunSlot>()
    }

    /// Asks StorPort for the uncached extension `discovery` needs (within the dump budget in
    /// dump mode) and checks it is contiguous.
    fn claim_uncached(
        extension: DeviceExtension,
        config: &mut PortConfigurationInformation,
        discovery: &Discovery,
        sizing: Sizing,
    ) -> Result<UncachedArena, AdapterError> {
        let len = Self::uncached_len(discovery);
        if let Some(budget) = sizing.uncached_budget()
            && len > budget
        {
            return Err(AdapterError::OverDumpBudget { len, budget });
        }
        let len32 = u32::try_from(len).map_err(|_| AdapterError::NoUncachedExtension { len })?;
        let memory = extension
            .uncached_extension(config, len32)
            .ok_or(AdapterError::NoUncachedExtension { len })?;
        let (bus, contiguous) = extension.physical_address(None, memory.as_ptr() as usize);
        if (contiguous as usize) < len {
            return Err(AdapterError::NoUncachedExtension { len });
        }
        // SAFETY: StorPort just gave us `len` bytes of uncached extension at `memory`,
        // contiguous at `bus` (checked), for the adapter's life.
        Ok(unsafe { UncachedArena::new(extension, memory, bus, len) })
    }

    fn construct(
        extension: DeviceExtension,
        config: &mut PortConfigurationInformation,
        discovery: Discovery,
    ) -> Result<Self, AdapterError> {
        let request_queues = discovery.queue_count - queue_index::REQUEST_BASE;
        let sizing = Sizing::of(discovery.dump);
        let limits = Self::derive_limits(&discovery)?;
        Self::fill_config(config, &discovery.device_limits, &limits);
        if discovery.dump.is_some() {
            crate::dump::restrict_config(config);
        }

        let arena = Self::claim_uncached(extension, config, &discovery, sizing)?;
        let queues = arena
            .carve_table_with(usize::from(discovery.queue_count), || UnsafeCell::new(None))
            .ok_or(AdapterError::OutOfMemory)?;
        let dpcs = arena
            .carve_table_with(usize::from(request_queues), StorDpc::zeroed)
            .ok_or(AdapterError::OutOfMemory)?;
        let counters = arena
            .carve_table_with(usize::from(request_queues), QueueCounters::default)
            .ok_or(AdapterError::OutOfMemory)?;
        let (luns, wmi_scratch) = Self::carve_lun_state(&arena, sizing.lun_slots())?;
        let events = EventQueue::carve(&arena, sizing).ok_or(AdapterError::OutOfMemory)?;

        let packed = discovery.features.contains(Features::RING_PACKED);
        let queue_features = QueueFeatures {
            event_idx: discovery.features.contains(Features::EVENT_IDX),
            indirect: discovery.features.contains(Features::INDIRECT_DESC),
        };
        let cells: &[UnsafeCell<Option<QueueState>>] = core::borrow::Borrow::borrow(&queues);
        for (index, cell) in cells.iter().enumerate() {
            let size = discovery.sizes.get(index).copied().unwrap_or(0);
            let index = index as u16;
            let ring_memory = arena
                .dma_alloc(Self::ring_len(packed, size), sizing.ring_align())
                .map_err(|_| AdapterError::OutOfMemory)?;
            let slots = arena
                .carve_table(usize::from(size), Slot::EMPTY)
                .ok_or(AdapterError::OutOfMemory)?;
            let requests = arena
                .carve_table(usize::from(size), 0usize)
                .ok_or(AdapterError::OutOfMemory)?;
            let ring = if packed {
                Ring::Packed(
                    PackedQueue::new(index, size, ring_memory, slots, queue_features)
                        .map_err(AdapterError::Queue)?,
                )
            } else {
                Ring::Split(
                    SplitQueue::new(index, size, ring_memory, slots, queue_features)
                        .map_err(AdapterError::Queue)?,
                )
            };
            // SAFETY: the table was carved just now; nothing else references this cell.
            unsafe {
                *cell.get() = Some(QueueState {
                    ring,
                    requests,
                    notify_offset: 0,
                    index,
                });
            }
        }
        let notify_bar = discovery.transport.layout().notify.bar;
        Ok(Self {
            magic: ADAPTER_MAGIC,
            extension,
            registers: discovery.registers,
            transport: UnsafeCell::new(discovery.transport),
            arena,
            notify_bar,
            features: discovery.features,
            device_limits: discovery.device_limits,
            limits,
            bus: config.system_io_bus_number as u8,
            slot: config.slot_number as u8,
            wmi_facts: discovery.wmi_facts,
            prepared_queues: discovery.queue_count,
            request_queues: AtomicU16::new(request_queues),
            mode: AtomicU8::new(InterruptMode::PerQueue as u8),
            queues,
            dpcs,
            counters,
            luns,
            wmi_scratch,
            events,
            line_lock: UnsafeCell::new(StorLockHandle::zeroed()),
            dpc_ready: AtomicBool::new(false),
            resetting: AtomicBool::new(false),
            timer_reset_cause: AtomicU32::new(ResetCause::ProtocolViolation as u32),
            resets: AtomicU64::new(0),
            debug_print_level: discovery.parameters.debug_print_level,
            dump: discovery.dump,
            trace: TraceRing::new(),
        })
    }

    /// Fills ConfigInfo as StorPort expects from a bus-master, scatter/gather, 64-bit DMA,
    /// MSI-X HBA with one bus.
    fn fill_config(
        config: &mut PortConfigurationInformation,
        device: &Limits,
        limits: &StorLimits,
    ) {
        config.maximum_transfer_length = limits.max_transfer_length;
        config.number_of_physical_breaks = limits.physical_breaks;
        // virtio places no alignment requirement on data buffers.
        config.alignment_mask = 0;
        config.scatter_gather = TRUE;
        config.master = TRUE;
        config.caches_data = TRUE;
        config.dma32_bit_addresses = TRUE;
        config.dma64_bit_addresses = SCSI_DMA64_MINIPORT_FULL64BIT_SUPPORTED;
        config.map_buffers = STOR_MAP_NON_READ_WRITE_BUFFERS;
        config.need_physical_addresses = TRUE;
        config.tagged_queuing = TRUE;
        config.auto_request_sense = TRUE;
        config.multiple_request_per_lu = TRUE;
        config.number_of_buses = 1;
        config.maximum_number_of_targets = device.max_target.min(254) + 1;
        config.maximum_number_of_logical_units =
            u8::try_from(device.max_lun.saturating_add(1)).unwrap_or(u8::MAX);
        config.srb_type = SRB_TYPE_STORAGE_REQUEST_BLOCK;
        config.address_type = STORAGE_ADDRESS_TYPE_BTL8;
        config.srb_extension_size = limits.request.extension_size() as u32;
        config.synchronization_model = StorSynchronizeFullDuplex;
        config.hw_ms_interrupt_routine = Some(crate::hw::hw_message_interrupt);
        config.interrupt_synchronization_mode = InterruptSynchronizePerMessage;
        config.max_number_of_io = limits.max_ios;
        config.max_ios_per_lun = limits.ios_per_lun;
        config.initial_lun_queue_depth = limits.ios_per_lun;
        // SRB_FUNCTION_WMI is answered by `crate::wmi`.
        config.wmi_data_provider = TRUE;
    }

    /// The device extension this adapter lives in.
    #[must_use]
    pub const fn extension(&self) -> DeviceExtension {
        self.extension
    }

    /// The limits reported to StorPort.
    #[must_use]
    pub const fn limits(&self) -> &StorLimits {
        &self.limits
    }

    /// The device's limits.
    #[must_use]
    pub const fn device_limits(&self) -> &Limits {
        &self.device_limits
    }

    /// Features negotiated with the device.
    #[must_use]
    pub const fn features(&self) -> Features {
        self.features
    }

    /// Request queues in use.
    #[must_use]
    pub fn request_queues(&self) -> u16 {
        self.request_queues.load(Ordering::Relaxed)
    }

    /// How interrupts are delivered.
    #[must_use]
    pub fn mode(&self) -> InterruptMode {
        match self.mode.load(Ordering::Relaxed) {
            2 => InterruptMode::Shared,
            3 => InterruptMode::Line,
            _ => InterruptMode::PerQueue,
        }
    }

    /// Where synthesised identifiers for `target`/`lun` come from.
    #[must_use]
    pub const fn location(&self, target: u8, lun: u16) -> LunLocation {
        LunLocation {
            bus: self.bus,
            slot: self.slot,
            target,
            lun,
        }
    }

    /// Identity and sizes the WMI classes report.
    #[must_use]
    pub const fn wmi_facts(&self) -> crate::wmi::AdapterFacts {
        self.wmi_facts
    }

    /// The LUN table.
    #[must_use]
    pub const fn luns(&self) -> &LunTable<Carved<LunSlot>> {
        &self.luns
    }

    /// The WMI scratch area.
    #[must_use]
    pub const fn wmi_scratch(&self) -> &crate::wmi::WmiScratch {
        &self.wmi_scratch
    }

    /// The event queue's state: removed units, counters ([`crate::events`]).
    #[must_use]
    pub const fn events(&self) -> &EventQueue {
        &self.events
    }

    /// Counters of request queue `queue`.
    #[must_use]
    pub fn counters(&self, queue: u16) -> Option<&QueueCounters> {
        let table: &[QueueCounters] = core::borrow::Borrow::borrow(&self.counters);
        table.get(usize::from(queue))
    }

    /// The MSI-X message of virtqueue `index` in per-queue mode (message 0 is configuration).
    #[must_use]
    pub const fn vector_of_queue(index: u16) -> u16 {
        index + 1
    }

    /// HwInitialize: decides the interrupt mode from the messages StorPort connected, sets up
    /// every queue with its vector and sets DRIVER_OK. Runs before any I/O, with StorPort's
    /// interrupt lock held.
    pub fn initialize(&self) -> bool {
        let mut messages = 0u16;
        // The dump port connects no interrupt at all (it polls HwInterrupt): line mode, which
        // programs no MSI-X vector, whatever messages the function has.
        while self.dump.is_none()
            && messages < MAX_REQUEST_QUEUES + 3
            && self.extension.msi_info(u32::from(messages)).is_some()
        {
            messages += 1;
        }
        let prepared_requests = self.prepared_queues - queue_index::REQUEST_BASE;
        let (mode, request_queues) = if messages >= 4 {
            (InterruptMode::PerQueue, prepared_requests.min(messages - 3))
        } else if messages >= 1 {
            (InterruptMode::Shared, prepared_requests)
        } else {
            (InterruptMode::Line, prepared_requests)
        };
        self.mode.store(mode as u8, Ordering::Relaxed);
        self.request_queues.store(request_queues, Ordering::Relaxed);
        self.trace(
            TraceEvent::Initialized,
            ADAPTER_WIDE,
            (mode as u32, u64::from(messages), u64::from(request_queues)),
        );
        if self.start_queues().is_err() {
            return false;
        }
        // Without passive initialisation (a StorPort that offers the miniport no DPCs) there
        // are no queue DPCs: the ISR completes requests itself. The dump stack must not even be
        // asked (see `crate::dump`).
        if self.dump.is_none() {
            let _dpcs_offered = self
                .extension
                .enable_passive_initialization(Some(crate::hw::hw_passive_initialize));
        }
        true
    }

    /// Virtqueues in use: controlq, eventq and the request queues.
    fn active_queues(&self) -> u16 {
        self.request_queues() + queue_index::REQUEST_BASE
    }

    /// Sets every active queue up on the device and sets DRIVER_OK. Called with no I/O possible
    /// (initialize, restart) or by the reset winner holding every queue lock.
    fn start_queues(&self) -> Result<(), AdapterError> {
        // SAFETY: callers guarantee exclusive access to the transport (see the field's doc).
        let transport = unsafe { &mut *self.transport.get() };
        let mode = self.mode();
        let msix = mode != InterruptMode::Line;
        if msix {
            transport.set_config_msix_vector(Some(0))?;
        }
        for index in 0..self.active_queues() {
            // SAFETY: as above: no other context touches queue state during setup.
            let Some(queue) = (unsafe { self.queue_cell(index) }) else {
                return Err(AdapterError::OutOfMemory);
            };
            let vector = match mode {
                InterruptMode::PerQueue => Some(Self::vector_of_queue(index)),
                InterruptMode::Shared => Some(0),
                InterruptMode::Line => None,
            };
            let ring = queue.ring.queue();
            let notifier = transport.setup_queue(index, ring.size(), ring.addresses(), vector)?;
            queue.notify_offset = notifier.offset();
        }
        transport.driver_ok()?;
        self.events.started(transport);
        // The eventq is stocked from DRIVER_OK on (the device must not be notified before).
        // SAFETY: as above: the callers' exclusive access covers the eventq too.
        if let Some(eventq) = unsafe { self.queue_cell(queue_index::EVENT) }
            && let Some(offset) = self.events.stock(eventq)
        {
            self.notify_virtqueue(queue_index::EVENT, offset);
        }
        Ok(())
    }

    /// The state of virtqueue `index`.
    ///
    /// # Safety
    /// The caller holds the queue's lock (or otherwise has exclusive access: setup with no
    /// I/O possible), and does not keep the reference past it.
    #[expect(
        clippy::mut_from_ref,
        reason = "interior mutability guarded by the queue lock"
    )]
    unsafe fn queue_cell(&self, index: u16) -> Option<&mut QueueState> {
        let table: &[UnsafeCell<Option<QueueState>>] = core::borrow::Borrow::borrow(&self.queues);
        let cell = table.get(usize::from(index))?;
        // SAFETY: the caller's lock makes this the only access to the cell.
        unsafe { (*cell.get()).as_mut() }
    }

    /// PassiveInitialize: per-queue DPCs and StorPort's performance options (concurrent
    /// StartIo channels, completion DPCs redirected to the submitting processor).
    pub fn passive_initialize(&self) -> bool {
        for queue in 0..self.request_queues() {
            if let Some(dpc) = self.dpc(queue) {
                self.extension
                    .initialize_dpc(dpc, Some(crate::hw::hw_queue_dpc));
            }
        }
        // ORDERING: the DPC objects must be initialised before an ISR on another processor
        // sees `dpc_ready` and issues one; pairs with the acquire load in `on_queue_interrupt`.
        self.dpc_ready.store(true, Ordering::Release);
        let mut perf = crate::storport::PerfConfigurationData::zeroed();
        perf.version = crate::storport::STOR_PERF_VERSION_2;
        perf.size = size_of::<crate::storport::PerfConfigurationData>() as u32;
        if self.extension.perf_opts(true, &mut perf) {
            let supported = perf.flags;
            let mut wanted = crate::storport::STOR_PERF_CONCURRENT_CHANNELS;
            if self.mode() == InterruptMode::PerQueue {
                wanted |= crate::storport::STOR_PERF_DPC_REDIRECTION;
                perf.first_redirection_message_number =
                    u32::from(Self::vector_of_queue(queue_index::REQUEST_BASE));
                perf.last_redirection_message_number = u32::from(Self::vector_of_queue(
                    queue_index::REQUEST_BASE + self.request_queues() - 1,
                ));
            }
            perf.flags = supported & wanted;
            perf.concurrent_channels = u32::from(self.request_queues());
            // A refusal leaves StorPort's defaults (StartIo serialised), which our per-queue
            // locks handle as well.
            let _ = self.extension.perf_opts(false, &mut perf);
        }
        true
    }

    /// The DPC object of request queue `queue`.
    fn dpc(&self, queue: u16) -> Option<NonNull<StorDpc>> {
        let table: &[StorDpc] = core::borrow::Borrow::borrow(&self.dpcs);
        table.get(usize::from(queue)).map(NonNull::from)
    }

    /// The request queue a request submitted on the current processor goes to.
    #[must_use]
    pub fn queue_for_current_processor(&self) -> u16 {
        let queues = u32::from(self.request_queues().max(1));
        // One queue (always so in dump mode): no need to ask StorPort where we run.
        if queues == 1 {
            return 0;
        }
        (self.extension.current_processor() % queues) as u16
    }

    /// Locks request queue `queue` (its MSI-X message lock, or the interrupt lock).
    #[must_use]
    pub fn lock(&self, queue: u16) -> QueueGuard<'_> {
        let how = self.acquire(Self::vector_of_queue(queue + queue_index::REQUEST_BASE));
        QueueGuard {
            adapter: self,
            queue,
            how,
        }
    }

    /// Acquires the lock of MSI-X message `message` in per-queue mode; in shared mode the one
    /// message's lock, in line mode the interrupt lock, whatever `message` is.
    fn acquire(&self, message: u16) -> Held {
        match self.mode() {
            InterruptMode::PerQueue => {
                let message = u32::from(message);
                let old_irql = self.extension.acquire_msi_lock(message);
                Held::Msi { message, old_irql }
            }
            InterruptMode::Shared => {
                let old_irql = self.extension.acquire_msi_lock(0);
                Held::Msi {
                    message: 0,
                    old_irql,
                }
            }
            InterruptMode::Line => {
                // SAFETY: the handle lives in the adapter (fixed address) and is touched only by
                // the lock holder, which we are about to become.
                unsafe { self.extension.acquire_interrupt_lock(self.line_lock.get()) };
                Held::Line
            }
        }
    }

    /// Releases a lock taken by [`Self::acquire`].
    fn release(&self, how: Held) {
        match how {
            Held::Msi { message, old_irql } => {
                self.extension.release_msi_lock(message, old_irql);
            }
            // SAFETY: `how` says this context acquired the interrupt lock with this handle.
            Held::Line => unsafe {
                self.extension.release_interrupt_lock(self.line_lock.get());
            },
            Held::ByCaller => {}
        }
    }

    /// A guard for virtqueue `index` (the controlq or the eventq) whose lock StorPort already
    /// holds (inside the ISR for its message).
    ///
    /// # Safety
    /// The caller runs in the ISR whose lock guards virtqueue `index` (per-queue: its message;
    /// shared: message 0; line: the interrupt lock).
    #[must_use]
    pub unsafe fn assume_virtqueue_locked(&self, index: u16) -> VirtqueueGuard<'_> {
        VirtqueueGuard {
            adapter: self,
            index,
            how: Held::ByCaller,
        }
    }

    /// A guard for `queue` whose lock StorPort already holds (inside the ISR for its message).
    ///
    /// # Safety
    /// The caller runs in the ISR whose lock guards `queue` (per-queue: that queue's message;
    /// shared: message 0; line: the interrupt lock).
    #[must_use]
    pub unsafe fn assume_locked(&self, queue: u16) -> QueueGuard<'_> {
        QueueGuard {
            adapter: self,
            queue,
            how: Held::ByCaller,
        }
    }

    /// Notifies the device of new requests on request queue `queue` (after unlocking).
    pub fn notify(&self, queue: u16, offset: u64) {
        // Counted before the write: the device may complete the request inside it.
        if let Some(counters) = self.counters(queue) {
            counters.kicks.fetch_add(1, Ordering::Relaxed);
        }
        self.notify_virtqueue(queue + queue_index::REQUEST_BASE, offset);
    }

    /// Notifies the device of new buffers on virtqueue `index`, whose notification address is
    /// at `offset` in the notify BAR.
    pub fn notify_virtqueue(&self, index: u16, offset: u64) {
        // ORDERING: the ring updates (descriptors, then the available index published with
        // release by the queue) must be visible before the device reacts to the notification
        // (virtio 1.x section 2.7.13 step 4 / 2.8.21). Pairs with the device's read of the
        // available index after the notification; the register routine orders the MMIO store.
        fence(Ordering::SeqCst);
        self.registers.write16(self.notify_bar, offset, index);
    }

    /// Handles MSI message `message`; true if it was ours.
    pub fn on_message(&self, message: u32) -> bool {
        match self.mode() {
            InterruptMode::PerQueue => {
                let Some(index) = message.checked_sub(1) else {
                    self.on_config_interrupt();
                    return true;
                };
                let Ok(index) = u16::try_from(index) else {
                    return false;
                };
                if index == queue_index::EVENT {
                    self.on_event_interrupt();
                    return true;
                }
                let Some(queue) = index.checked_sub(queue_index::REQUEST_BASE) else {
                    // The controlq: nothing of ours is posted on it yet.
                    return true;
                };
                if queue >= self.request_queues() {
                    return false;
                }
                self.on_queue_interrupt(queue);
                true
            }
            InterruptMode::Shared => {
                // One message for everything: the configuration is checked on each (its
                // interrupt carries no ISR bit a driver may rely on with MSI-X, virtio 1.x
                // section 4.1.5.3).
                self.on_config_interrupt();
                self.on_event_interrupt();
                for queue in 0..self.request_queues() {
                    self.on_queue_interrupt(queue);
                }
                true
            }
            InterruptMode::Line => self.on_line_interrupt(),
        }
    }

    /// HwInterrupt (line-based): reads and clears the ISR status; true if the device
    /// interrupted.
    pub fn on_line_interrupt(&self) -> bool {
        if self.dump.is_some() {
            // The dump port's poll, not an interrupt.
            return self.poll();
        }
        // SAFETY: in line mode the ISR holds the interrupt lock, which the reset path also
        // takes, so the transport is not being mutated.
        let isr = unsafe { &*self.transport.get() }.read_isr();
        if isr.is_empty() {
            return false;
        }
        if isr.contains(virtio_core::pci::Isr::CONFIG) {
            self.on_config_interrupt();
        }
        self.on_event_interrupt();
        for queue in 0..self.request_queues() {
            self.on_queue_interrupt(queue);
        }
        true
    }

    /// The configuration-change interrupt, in the ISR that owns it (message 0, the shared
    /// message, or the line ISR): see [`EventQueue::on_config_change`].
    fn on_config_interrupt(&self) {
        // SAFETY: the ISR for message 0 (or the shared/line ISR) holds a lock the reset path
        // takes too (`lock_all`), so the transport is not being mutated; it is only read here.
        let transport = unsafe { &*self.transport.get() };
        if self.events.on_config_change(self, transport) {
            self.reset_later(ResetCause::DeviceNeedsReset);
        }
    }

    /// The eventq's interrupt, in the ISR that owns it (message 2, the shared message, or the
    /// line ISR): see [`EventQueue::drain`].
    fn on_event_interrupt(&self) {
        // SAFETY: we run in the ISR whose lock guards the eventq (see the callers).
        let mut guard = unsafe { self.assume_virtqueue_locked(queue_index::EVENT) };
        if self.events.drain(self, &mut guard) {
            self.reset_later(ResetCause::ProtocolViolation);
        }
    }

    /// Resets the device from StorPort's timer, right after this ISR, for `cause`: the reset
    /// takes every lock, which an ISR holding one of them cannot do.
    fn reset_later(&self, cause: ResetCause) {
        // ORDERING: relaxed; the timer request below is StorPort's, which orders it before the
        // timer routine on any processor (a lock hand-over inside StorPort).
        self.timer_reset_cause
            .store(cause as u32, Ordering::Relaxed);
        self.extension
            .request_timer(Some(crate::hw::hw_reset_timer), RESET_TIMER_MICROSECONDS);
    }

    /// HwStorTimer: the reset an ISR asked StorPort's timer for, with the cause it gave.
    pub fn reset_from_timer(&self) {
        // ORDERING: relaxed; see `reset_later`.
        let cause = match self.timer_reset_cause.load(Ordering::Relaxed) {
            raw if raw == ResetCause::DeviceNeedsReset as u32 => ResetCause::DeviceNeedsReset,
            _ => ResetCause::ProtocolViolation,
        };
        self.reset_device(cause);
    }

    fn on_queue_interrupt(&self, queue: u16) {
        if let Some(counters) = self.counters(queue) {
            counters.interrupts.fetch_add(1, Ordering::Relaxed);
        }
        // ORDERING: pairs with the release store in `passive_initialize`.
        if self.dpc_ready.load(Ordering::Acquire)
            && let Some(dpc) = self.dpc(queue)
        {
            let _already_queued = !self.extension.issue_dpc(dpc, usize::from(queue));
        } else {
            // SAFETY: we are in the ISR for this queue's message, whose lock StorPort holds.
            let mut guard = unsafe { self.assume_locked(queue) };
            if crate::io::drain(&mut guard) {
                // The device broke the protocol. The reset takes every queue lock, which an ISR
                // holding one of them cannot do: StorPort's timer runs it right after, with no
                // queue lock held.
                self.reset_later(ResetCause::ProtocolViolation);
            }
        }
    }

    /// The queue DPC: drains request queue `queue` under its lock.
    pub fn on_dpc(&self, queue: u16) {
        if queue >= self.request_queues() {
            return;
        }
        let reset = {
            let mut guard = self.lock(queue);
            crate::io::drain(&mut guard)
        };
        if reset {
            self.reset_device(ResetCause::ProtocolViolation);
        }
    }

    /// Resets the device and completes every request in flight with SRB_STATUS_BUS_RESET,
    /// then brings the queues back. Only one context resets at a time; a second caller
    /// returns at once (the reset it would do is already under way). Call with no queue lock
    /// held.
    pub fn reset_device(&self, cause: ResetCause) {
        self.reset_device_with(cause, false);
    }

    /// [`Self::reset_device`], from a context that holds StorPort's interrupt lock when
    /// `line_lock_held` (which in line mode is every queue's lock already).
    fn reset_device_with(&self, cause: ResetCause, line_lock_held: bool) {
        // ORDERING: the flag only elects one resetter; the queue locks order everything the
        // reset touches. Acquire pairs with the Release below of the previous reset, so a new
        // winner starts after the last one finished.
        if self
            .resetting
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let resets = self.resets.fetch_add(1, Ordering::Relaxed) + 1;
        self.trace(
            TraceEvent::DeviceReset,
            ADAPTER_WIDE,
            (cause as u32, resets, 0),
        );
        {
            let locks = self.lock_all(line_lock_held);
            let transport = self.take_everything_back(&locks);
            let restarted = transport.begin_init(self.features).is_ok()
                && Self::configure_device(transport).is_ok()
                && self.start_queues().is_ok();
            if !restarted {
                transport.fail();
            }
        }
        // ORDERING: pairs with the Acquire of the next winner's compare-exchange above.
        self.resetting.store(false, Ordering::Release);
        self.extension.reset_detected();
        self.events.restarted(self);
    }

    /// ScsiStopAdapter: resets the device (it stops using every buffer); requests in flight
    /// are completed with SRB_STATUS_BUS_RESET.
    pub fn stop(&self) {
        self.trace(TraceEvent::Stopped, ADAPTER_WIDE, (0, 0, 0));
        // StorPort calls ScsiStopAdapter holding the interrupt lock, which in line mode is the
        // queues' lock already.
        let locks = self.lock_all(true);
        let _ = self.take_everything_back(&locks);
    }

    /// Takes every queue's lock, in ascending message order: with per-queue messages those of
    /// the configuration, the controlq and the eventq (messages 0 to 2, whose ISRs read the
    /// transport and the eventq's ring) and then every request queue's; the one shared lock
    /// otherwise (none in line mode when `line_lock_held`, as the caller runs under StorPort's
    /// interrupt lock). Released in reverse by the guard.
    fn lock_all(&self, line_lock_held: bool) -> AllQueuesLocked<'_> {
        let mut locks = AllQueuesLocked {
            adapter: self,
            messages: [None; QUEUES_BEFORE_REQUESTS],
            guards: [const { None }; MAX_REQUEST_QUEUES as usize],
        };
        let mode = self.mode();
        if mode == InterruptMode::PerQueue {
            for (message, slot) in (0u16..).zip(locks.messages.iter_mut()) {
                *slot = Some(self.acquire(message));
            }
        }
        let queues = usize::from(self.request_queues());
        for (queue, slot) in locks.guards.iter_mut().enumerate().take(queues) {
            let take = match mode {
                InterruptMode::PerQueue => true,
                InterruptMode::Shared => queue == 0,
                InterruptMode::Line => queue == 0 && !line_lock_held,
            };
            if take {
                *slot = Some(self.lock(queue as u16));
            }
        }
        locks
    }

    /// With every queue lock held: resets the device, then completes every request in flight
    /// with SRB_STATUS_BUS_RESET and returns every ring to its initial state. Returns the
    /// transport for the caller to bring the device back (or not).
    fn take_everything_back<'a>(
        &'a self,
        _locks: &'a AllQueuesLocked<'a>,
    ) -> &'a mut PciTransport<StorPortRegisters> {
        // SAFETY: every queue lock is held (or the one shared or interrupt lock), so no
        // StartIo, ISR or DPC touches the transport or the queues; the returned reference
        // borrows `_locks`, so it cannot outlive them.
        let transport = unsafe { &mut *self.transport.get() };
        // Once the device reads back status 0 it no longer touches any buffer (virtio 1.x
        // section 2.4), so the requests in flight can be handed back.
        let _ = transport.reset();
        for queue in 0..self.request_queues() {
            crate::io::fail_in_flight(self, queue);
        }
        for index in 0..self.active_queues() {
            // SAFETY: all locks held, as above.
            if let Some(state) = unsafe { self.queue_cell(index) } {
                state.ring.queue().reset();
            }
        }
        transport
    }

    /// ScsiRestartAdapter: renegotiates and sets the queues up again, as after power-up.
    pub fn restart(&self) -> bool {
        // SAFETY: StorPort calls restart with no I/O outstanding and interrupts synchronised.
        let transport = unsafe { &mut *self.transport.get() };
        let ok = transport.reset().is_ok()
            && transport.begin_init(self.features).is_ok()
            && Self::configure_device(transport).is_ok()
            && self.start_queues().is_ok();
        if ok {
            self.events.restarted(self);
        } else {
            transport.fail();
        }
        self.trace(TraceEvent::Restarted, ADAPTER_WIDE, (u32::from(ok), 0, 0));
        ok
    }

    /// Records `event` in the trace ring and prints it if the registry's level allows.
    pub fn trace(&self, event: TraceEvent, queue: u16, args: (u32, u64, u64)) {
        self.trace.record(event, queue, args);
        if event.print_level() <= self.debug_print_level {
            crate::port::debug_print(
                event.print_level(),
                event.name(),
                [u64::from(args.0), args.1, args.2],
            );
        }
    }

    /// The trace ring's records, oldest first (tests and diagnostics).
    pub fn trace_entries(&self) -> impl Iterator<Item = TraceEntry> + '_ {
        self.trace.entries()
    }

    /// Records what find-adapter decided, and every registry value it had to adjust.
    fn trace_found(&self, report: &Report) {
        for (index, outcome) in report.outcomes.iter().enumerate() {
            let (read, used) = match *outcome {
                ValueOutcome::Clamped(read, used) => (read, u64::from(used)),
                ValueOutcome::Refused(read) => (read, u64::MAX),
                ValueOutcome::Absent | ValueOutcome::Used(_) => continue,
            };
            self.trace(
                TraceEvent::RegistryAdjusted,
                ADAPTER_WIDE,
                (index as u32, u64::from(read), used),
            );
        }
        self.trace(
            TraceEvent::AdapterFound,
            ADAPTER_WIDE,
            (
                u32::from(self.prepared_queues - queue_index::REQUEST_BASE),
                self.features.bits(),
                u64::from(self.limits.physical_breaks),
            ),
        );
    }
}

/// How a [`QueueGuard`]'s lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    /// We acquired this MSI message's lock.
    Msi { message: u32, old_irql: u32 },
    /// We acquired the interrupt lock (line mode).
    Line,
    /// StorPort holds it for us (inside the ISR).
    ByCaller,
}

/// Proof that a request queue's lock is held; gives access to the queue's state.
#[derive(Debug)]
pub struct QueueGuard<'a> {
    adapter: &'a Adapter,
    queue: u16,
    how: Held,
}

impl<'a> QueueGuard<'a> {
    /// The adapter.
    #[must_use]
    pub const fn adapter(&self) -> &'a Adapter {
        self.adapter
    }

    /// The request queue number.
    #[must_use]
    pub const fn queue(&self) -> u16 {
        self.queue
    }

    /// The queue's state.
    pub fn state(&mut self) -> Option<&mut QueueState> {
        // SAFETY: this guard proves the queue's lock is held, and `&mut self` makes the
        // returned reference the only one derived from it.
        unsafe {
            self.adapter
                .queue_cell(self.queue + queue_index::REQUEST_BASE)
        }
    }
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        self.adapter.release(self.how);
    }
}

/// Proof that the lock of a virtqueue other than a request queue (the eventq) is held; gives
/// access to its state.
#[derive(Debug)]
pub struct VirtqueueGuard<'a> {
    adapter: &'a Adapter,
    index: u16,
    how: Held,
}

impl<'a> VirtqueueGuard<'a> {
    /// The adapter.
    #[must_use]
    pub const fn adapter(&self) -> &'a Adapter {
        self.adapter
    }

    /// The virtqueue's state.
    pub fn state(&mut self) -> Option<&mut QueueState> {
        // SAFETY: this guard proves the virtqueue's lock is held, and `&mut self` makes the
        // returned reference the only one derived from it.
        unsafe { self.adapter.queue_cell(self.index) }
    }
}

impl Drop for VirtqueueGuard<'_> {
    fn drop(&mut self) {
        self.adapter.release(self.how);
    }
}

/// Messages below the first request queue's in per-queue mode: the configuration's, the
/// controlq's and the eventq's.
const QUEUES_BEFORE_REQUESTS: usize = Adapter::vector_of_queue(queue_index::REQUEST_BASE) as usize;

/// Every queue's lock, from [`Adapter::lock_all`]; dropping it releases them in the reverse
/// order of acquisition (each release restores the IRQL its acquire saved, so the first lock
/// taken must be the last released).
struct AllQueuesLocked<'a> {
    adapter: &'a Adapter,
    /// Messages 0 to 2 in per-queue mode, taken first.
    messages: [Option<Held>; QUEUES_BEFORE_REQUESTS],
    guards: [Option<QueueGuard<'a>>; MAX_REQUEST_QUEUES as usize],
}

impl Drop for AllQueuesLocked<'_> {
    fn drop(&mut self) {
        for guard in self.guards.iter_mut().rev() {
            drop(guard.take());
        }
        for held in self.messages.iter_mut().rev() {
            if let Some(how) = held.take() {
                self.adapter.release(how);
            }
        }
    }
}

/// The StorPort interrupt-lock kind (for the line-mode wrappers in `port`).
pub const LINE_LOCK: u32 = InterruptLock;
