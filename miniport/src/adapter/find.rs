//! Find-adapter: identifies the device, negotiates features, derives the limits, sizes and
//! carves the uncached extension and constructs the adapter in the device extension.
#![forbid(unsafe_code)]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64};

use virtio_core::features::{Features, SCSI_DRIVER_FEATURES};
use virtio_core::hal::Hal;
use virtio_core::pci::{PciTransport, VIRTIO_DEVICE_TYPE_SCSI, VirtioPciCommonCfg};
use virtio_core::queue::packed::PackedQueue;
use virtio_core::queue::split::SplitQueue;
use virtio_core::queue::{QueueFeatures, Slot};
use virtio_core::scsi::{Limits, queue_index};

use super::{
    ADAPTER_MAGIC, Adapter, AdapterError, CACHE_LINE, QueueCounters, QueueDpc, RecoveryCounters,
};
use crate::dump::{DumpMode, Sizing};
use crate::events::EventQueue;
use crate::limits::StorLimits;
use crate::luns::{LunSlot, LunTable};
use crate::queue_state::{QueueState, Ring};
use crate::recovery::tmf::{TmfSlot, TmfTable};
use crate::registry::{Parameters, Report, ValueOutcome};
use crate::sizing::MAX_REQUEST_QUEUES;
use crate::storport::dma::{Carved, PciSnapshot, StorPortRegisters, UncachedArena};
use crate::storport::extension::FreshExtension;
use crate::storport::port::Callbacks;
use crate::storport::port::{DeviceExtension, StorPortRegistry};
use crate::storport::queue_locks::QueueLocks;
use crate::storport::request::InFlightRequest;
use crate::storport::{
    AccessRange, InterruptSynchronizePerMessage, PortConfigurationInformation,
    SCSI_DMA64_MINIPORT_FULL64BIT_SUPPORTED, SP_RETURN_ERROR, SP_RETURN_FOUND, SP_RETURN_NOT_FOUND,
    SRB_TYPE_STORAGE_REQUEST_BLOCK, STOR_MAP_NON_READ_WRITE_BUFFERS, STORAGE_ADDRESS_TYPE_BTL8,
    StorDpc, StorSynchronizeFullDuplex, TRUE,
};
use crate::trace::{ADAPTER_WIDE, TraceEvent, TraceRing};

/// Everything find-adapter learns before the memory is carved.
pub(crate) struct Discovery {
    transport: PciTransport<StorPortRegisters>,
    registers: StorPortRegisters,
    features: Features,
    device_limits: Limits,
    sizes: [u16; MAX_REQUEST_QUEUES as usize + 2],
    queue_count: u16,
    /// Where `device_status` is (BAR, offset).
    status_register: (u8, u64),
    /// The WMI identity.
    wmi_facts: crate::control::wmi_provider::AdapterFacts,
    /// The registry parameters, validated (fixed ones in dump mode).
    parameters: Parameters,
    /// Whether the dump stack loaded us.
    dump: Option<DumpMode>,
}

impl Adapter {
    /// HwFindAdapter: identifies the device, negotiates features, derives the limits, fills
    /// `config` and carves the uncached extension, sized down when `dump` says the dump stack
    /// loaded us. Returns an `SP_RETURN_*` code.
    pub fn find(
        home: FreshExtension<'_, Self>,
        config: &mut PortConfigurationInformation,
        ranges: &[AccessRange],
        dump: Option<DumpMode>,
        callbacks: Callbacks,
    ) -> u32 {
        let extension = home.port();
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
        let discovery = match Self::discover(extension, config, ranges, parameters, dump) {
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
        match Self::construct(home, config, discovery, callbacks) {
            Ok(adapter) => adapter.trace_found(&registry_report),
            Err(_) => return SP_RETURN_ERROR,
        }
        SP_RETURN_FOUND
    }

    pub(crate) fn discover(
        extension: DeviceExtension,
        config: &PortConfigurationInformation,
        ranges: &[AccessRange],
        parameters: Parameters,
        dump: Option<DumpMode>,
    ) -> Result<Discovery, AdapterError> {
        let pci = PciSnapshot::read(extension, config.system_io_bus_number, config.slot_number);
        if pci.len() < 64 {
            return Err(AdapterError::NoConfigSpace);
        }
        let mut registers = StorPortRegisters::new(extension);
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
        // One MSI-X message per request queue, after configuration, controlq and eventq: a
        // device with fewer table entries than that (QEMU's `vectors`) gets no more request
        // queues than it can interrupt for, so that MaxNumberOfIO, reported now, stays true
        // after HwInitialize. (StorPort may still grant fewer messages than the table has; then
        // HwInitialize uses fewer queues and StorPort's BUSY handling absorbs the difference:
        // MaxNumberOfIO cannot change after find-adapter.) Fewer than four entries mean one
        // shared message for every queue.
        let interruptible = match transport.layout().msix_table_size {
            Some(entries) if entries >= 4 => entries - 3,
            _ => MAX_REQUEST_QUEUES,
        };
        let request_queues = device_limits
            .num_queues
            .min(MAX_REQUEST_QUEUES)
            .min(interruptible)
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
        let common = transport.layout().common;
        Ok(Discovery {
            status_register: (
                common.bar,
                u64::from(common.offset) + VirtioPciCommonCfg::DEVICE_STATUS,
            ),
            transport,
            registers,
            features,
            device_limits,
            sizes,
            queue_count,
            wmi_facts: crate::control::wmi_provider::AdapterFacts::from_pci(
                &pci,
                smallest_request_queue,
                Self::identity(extension, &pci, config, dump),
            ),
            parameters,
            dump,
        })
    }

    /// This adapter's `UniqueAdapterId` ([`crate::identity`]): kept in the device's hardware
    /// key, created on the first start; in dump mode (no registry, no WMI) the PCI-derived
    /// fallback.
    pub(crate) fn identity(
        extension: DeviceExtension,
        pci: &PciSnapshot,
        config: &PortConfigurationInformation,
        dump: Option<DumpMode>,
    ) -> u64 {
        let memory_bar = crate::control::wmi_provider::first_memory_bar(pci);
        if dump.is_some() {
            return crate::control::wmi_provider::unique_adapter_id(
                config.system_io_bus_number,
                config.slot_number,
                memory_bar,
            );
        }
        let entropy = crate::identity::Entropy {
            system_time: extension.system_time(),
            extension_address: extension.raw() as u64,
            pci_location: (u64::from(config.system_io_bus_number) << 16)
                | u64::from(config.slot_number),
            memory_bar: memory_bar.unwrap_or(0),
        };
        let mut key = crate::storport::port::StorPortAdapterKey::new(extension);
        crate::identity::adapter_identity(&mut key, entropy).0
    }

    /// Writes the sense and CDB sizes we use and reads the device limits back.
    pub(crate) fn configure_device(
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

    pub(crate) fn ring_len(packed: bool, size: u16) -> usize {
        if packed {
            PackedQueue::<Carved<Slot>>::ring_len(size)
        } else {
            SplitQueue::<Carved<Slot>>::ring_len(size)
        }
    }

    /// Bytes of uncached extension needed, padding included.
    pub(crate) fn uncached_len(discovery: &Discovery) -> usize {
        let sizes = discovery
            .sizes
            .get(..usize::from(discovery.queue_count))
            .unwrap_or(&discovery.sizes);
        Self::uncached_len_for(
            Sizing::of(discovery.dump),
            discovery.features.contains(Features::RING_PACKED),
            sizes,
        )
    }

    /// Bytes of uncached extension needed for `sizing`, rings of the packed layout or not and
    /// the virtqueues of `sizes` (controlq, eventq, then the request queues), padding included.
    pub(crate) fn uncached_len_for(sizing: Sizing, packed: bool, sizes: &[u16]) -> usize {
        let queue_count = sizes.len();
        let request_queues = queue_count.saturating_sub(usize::from(queue_index::REQUEST_BASE));
        // Each table starts on a cache line: up to a line of padding before each of the three.
        let tables = queue_count * (size_of::<UnsafeCell<Option<QueueState>>>() + 16)
            + request_queues * (size_of::<QueueDpc>() + size_of::<QueueCounters>() + 16)
            + 3 * CACHE_LINE;
        let rings: usize = sizes
            .iter()
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
            + crate::control::wmi_provider::WmiScratch::uncached_len_for(lun_slots)
            + EventQueue::uncached_len(sizing)
            + Self::tmf_len(sizing.tmf_slots())
    }

    /// Bytes of uncached extension `slots` task management slots take, padding included.
    pub(crate) const fn tmf_len(slots: usize) -> usize {
        slots * size_of::<TmfSlot>()
            + align_of::<TmfSlot>()
            + TmfTable::<Carved<TmfSlot>>::memory_len(slots)
            + 16
    }

    /// Carves `slots` task management slots and their DMA memory.
    pub(crate) fn carve_tmfs(
        arena: &UncachedArena,
        slots: usize,
    ) -> Result<TmfTable<Carved<TmfSlot>>, AdapterError> {
        let table = arena
            .carve_table_with(slots, TmfSlot::new)
            .ok_or(AdapterError::OutOfMemory)?;
        let memory = arena
            .dma_alloc(TmfTable::<Carved<TmfSlot>>::memory_len(slots), 16)
            .map_err(|_| AdapterError::OutOfMemory)?;
        Ok(TmfTable::new(table, memory))
    }

    /// The limits reported to StorPort, from the device's and the smallest request queue.
    pub(crate) fn derive_limits(discovery: &Discovery) -> Result<StorLimits, AdapterError> {
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
    pub(crate) fn carve_lun_state(
        arena: &UncachedArena,
        slots: usize,
    ) -> Result<
        (
            LunTable<Carved<LunSlot>>,
            crate::control::wmi_provider::WmiScratch,
        ),
        AdapterError,
    > {
        let table = arena
            .carve_table_with(slots, LunSlot::new)
            .ok_or(AdapterError::OutOfMemory)?;
        let scratch = crate::control::wmi_provider::WmiScratch::carve_for(arena, slots)
            .ok_or(AdapterError::OutOfMemory)?;
        Ok((LunTable::new(table), scratch))
    }

    /// Bytes of uncached extension a LUN table of `slots` slots takes, padding included.
    pub(crate) const fn lun_table_len(slots: usize) -> usize {
        slots * size_of::<LunSlot>() + align_of::<LunSlot>()
    }

    /// Asks StorPort for the uncached extension `discovery` needs (within the dump budget in
    /// dump mode) and checks it is contiguous.
    pub(crate) fn claim_uncached(
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
        UncachedArena::claim(extension, config, len)
            .ok_or(AdapterError::NoUncachedExtension { len })
    }

    /// The token tables of virtqueue `index`, of `size` tokens: a request queue's tokens stand
    /// for SRBs in flight, the others' for buffers or task management slots. Each queue carves
    /// both, one of them empty, so every queue takes a word per token, as before there were two.
    fn carve_token_tables(
        arena: &UncachedArena,
        index: u16,
        size: u16,
    ) -> Result<(Carved<usize>, Carved<Option<InFlightRequest>>), AdapterError> {
        let (tokens, srbs) = if index >= queue_index::REQUEST_BASE {
            (0, usize::from(size))
        } else {
            (usize::from(size), 0)
        };
        let requests = arena
            .carve_table(tokens, 0usize)
            .ok_or(AdapterError::OutOfMemory)?;
        let in_flight = arena
            .carve_table_with(srbs, || None)
            .ok_or(AdapterError::OutOfMemory)?;
        Ok((requests, in_flight))
    }

    /// Builds the adapter in `home` (its fields written straight into the device extension:
    /// the adapter is over two pages, more than a kernel stack frame may hold).
    pub(crate) fn construct<'a>(
        home: FreshExtension<'a, Self>,
        config: &mut PortConfigurationInformation,
        discovery: Discovery,
        callbacks: Callbacks,
    ) -> Result<&'a Self, AdapterError> {
        let extension = home.port();
        let request_queues = discovery.queue_count - queue_index::REQUEST_BASE;
        let sizing = Sizing::of(discovery.dump);
        let limits = Self::derive_limits(&discovery)?;
        Self::fill_config(config, &discovery.device_limits, &limits, callbacks);
        if discovery.dump.is_some() {
            crate::dump::restrict_config(config);
        }

        let arena = Self::claim_uncached(extension, config, &discovery, sizing)?;
        let cells = arena
            .carve_table_with(usize::from(discovery.queue_count), || UnsafeCell::new(None))
            .ok_or(AdapterError::OutOfMemory)?;
        let notify_bar = discovery.transport.layout().notify.bar;
        let mut queues = QueueLocks::new(extension, cells, discovery.transport);
        let dpcs = arena
            .carve_table_with(usize::from(request_queues), || QueueDpc(StorDpc::zeroed()))
            .ok_or(AdapterError::OutOfMemory)?;
        let counters = arena
            .carve_table_with(usize::from(request_queues), QueueCounters::default)
            .ok_or(AdapterError::OutOfMemory)?;
        let (luns, wmi_scratch) = Self::carve_lun_state(&arena, sizing.lun_slots())?;
        let events = EventQueue::carve(&arena, sizing).ok_or(AdapterError::OutOfMemory)?;
        let tmfs = Self::carve_tmfs(&arena, sizing.tmf_slots())?;

        let packed = discovery.features.contains(Features::RING_PACKED);
        let queue_features = QueueFeatures {
            event_idx: discovery.features.contains(Features::EVENT_IDX),
            indirect: discovery.features.contains(Features::INDIRECT_DESC),
        };
        let (cells, _) = queues.parts_mut();
        for (index, cell) in cells.iter_mut().enumerate() {
            let size = discovery.sizes.get(index).copied().unwrap_or(0);
            let index = index as u16;
            let ring_memory = arena
                .dma_alloc(Self::ring_len(packed, size), sizing.ring_align())
                .map_err(|_| AdapterError::OutOfMemory)?;
            let slots = arena
                .carve_table(usize::from(size), Slot::EMPTY)
                .ok_or(AdapterError::OutOfMemory)?;
            let (requests, in_flight) = Self::carve_token_tables(&arena, index, size)?;
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
            *cell.get_mut() = Some(QueueState {
                ring,
                requests,
                in_flight,
                notify_offset: 0,
                index,
                reservation: crate::queue_state::Reservation::default(),
                held_for_reset: None,
            });
        }
        Ok(home.place(Self {
            magic: ADAPTER_MAGIC,
            callbacks,
            extension,
            registers: discovery.registers,
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
            queues,
            dpcs,
            counters,
            luns,
            wmi_scratch,
            events,
            dpc_ready: AtomicBool::new(false),
            message_ranges: AtomicBool::new(false),
            resetting: AtomicBool::new(false),
            resets: AtomicU64::new(0),
            tmfs,
            recovery: RecoveryCounters::default(),
            stopped: AtomicBool::new(false),
            reset_requested: AtomicU32::new(0),
            timer_kick: AtomicBool::new(false),
            status_register: discovery.status_register,
            last_health: AtomicU64::new(0),
            used_seen: AtomicU64::new(0),
            debug_print_level: discovery.parameters.debug_print_level,
            dump: discovery.dump,
            trace: TraceRing::new(),
        }))
    }

    /// Fills ConfigInfo as StorPort expects from a bus-master, scatter/gather, 64-bit DMA,
    /// MSI-X HBA with one bus.
    pub(crate) fn fill_config(
        config: &mut PortConfigurationInformation,
        device: &Limits,
        limits: &StorLimits,
        callbacks: Callbacks,
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
        config.hw_ms_interrupt_routine = callbacks.message_interrupt;
        config.interrupt_synchronization_mode = InterruptSynchronizePerMessage;
        config.max_number_of_io = limits.max_ios;
        config.max_ios_per_lun = limits.ios_per_lun;
        config.initial_lun_queue_depth = limits.ios_per_lun;
        // SRB_FUNCTION_WMI is answered by `crate::control::wmi_provider`.
        config.wmi_data_provider = TRUE;
    }

    /// Records what find-adapter decided, and every registry value it had to adjust.
    pub(crate) fn trace_found(&self, report: &Report) {
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
