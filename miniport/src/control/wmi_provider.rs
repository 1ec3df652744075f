//! `SRB_FUNCTION_WMI`: adapter WMI requests answered by the `rvscsi_wmi` dispatcher from an
//! [`HbaInfo`] built on the stack from this adapter's identity, counters and limits.
//!
//! **Where.** WMI SRBs are handled completely in HwBuildIo and completed there (BuildIo then
//! returns FALSE, so StartIo never sees them). BuildIo runs at DISPATCH_LEVEL with no lock,
//! which is all this needs: the answer reads the adapter's immutable state (identity, limits,
//! negotiated features), its counters, which are atomics, and the LUN table
//! ([`crate::luns`]), which has its own lock; nothing is queued to the device. Answering in
//! BuildIo also keeps WMI off the queue locks; the [`WmiScratch`] it answers from is held
//! under StorPort's StartIo lock, for one answer at a time.
//!
//! **Targets.** The target mapping, discovered ports and SCSI pass-through methods answer from
//! the LUN table, which the completion path fills from the bus scan's INQUIRY, VPD and READ
//! CAPACITY answers. Each request copies the table slot by slot (each slot consistent) into
//! the [`WmiScratch`] and encodes from those copies, so a LUN appearing or leaving during the
//! request changes nothing in its reply. Per-LUN protocol statistics are not counted (the
//! counters are per queue), so `SM_GetLUNStatistics` reports zeros.
//!
//! **Which requests.** Only adapter requests (`WMIFlags` has `SRB_WMI_FLAGS_ADAPTER_REQUEST`)
//! reach the dispatcher. The miniport registers no per-LUN data blocks, so a request for a
//! logical unit has nothing to answer: it completes with `SRB_STATUS_SUCCESS` and no data
//! (`DataTransferLength` 0, the buffer untouched), as the WDK's SCSIWMI samples and vioscsi
//! answer it. StorPort sends such requests for its own unit-level registration; failing them
//! would make WMI report an error for a unit that merely has no miniport data.
//!
//! **The buffer.** `DataBuffer` is the WMI IRP's buffer, `DataTransferLength` bytes, whose
//! contents come from user mode. The miniport touches exactly those bytes through one slice;
//! every length and offset inside (the WNODE's own `BufferSize`, data offsets, instance names)
//! is checked against that slice by [`rvscsi_wmi::dispatch::dispatch`], so a WNODE that claims
//! more than `DataTransferLength` fails with `SRB_STATUS_INVALID_REQUEST` and nothing past the
//! buffer is read or written.
//!
//! **The reply** maps to the SRB as `ScsiPortWmiPostProcess` leaves it for
//! `ScsiPortWmiGetReturnStatus`/`ScsiPortWmiGetReturnSize` ([`srb_completion`]):
//! - `STATUS_SUCCESS` (data, or a `WNODE_TOO_SMALL` carrying the size needed, which WMI answers
//!   by retrying with that size): `SRB_STATUS_SUCCESS`, `DataTransferLength` = bytes returned;
//! - `STATUS_BUFFER_TOO_SMALL` (not even the size-only reply fits; for `IRP_MN_REGINFO` the
//!   needed size is written as a `ULONG` if 4 bytes fit): `SRB_STATUS_DATA_OVERRUN`,
//!   `DataTransferLength` = the bytes written (4 or 0), as a miniport passes
//!   `SRB_STATUS_DATA_OVERRUN` to `ScsiPortWmiPostProcess` for a buffer that is too small;
//! - a malformed request or an operation the provider does not implement
//!   (`STATUS_INVALID_PARAMETER`, `STATUS_INVALID_DEVICE_REQUEST`): `SRB_STATUS_INVALID_REQUEST`;
//! - unknown GUID, instance or item, read-only block, encoding failure: `SRB_STATUS_ERROR`.
//!
//! Errors return no data (`DataTransferLength` 0). An SRB status cannot carry the finer
//! NTSTATUS; the [`rvscsi_wmi::status::WmiError`] is available to tracing.
//!
//! **Identity.** `UniqueAdapterId` is the identifier [`crate::identity`] keeps in the device's
//! hardware key (created at random on the first start, so VMs cloned from one generalized
//! template differ, and read back on every later start, so it is stable across boots and BAR
//! moves). `SerialNumber` and the port's SAS address ([`SasAddress::for_adapter`]) derive from
//! it (no virtio-scsi HBA has a VPD 0x83 of its own). The topology the port methods report is
//! consistent
//! ([`rvscsi_wmi::hba`]): one target attaches to the port directly; several attach through a
//! virtual expander whose address is synthesised from the same seed
//! ([`ATTACHED_ADDRESS_INDEX`]) and which is listed as a discovered port after the targets.

use core::borrow::{Borrow, BorrowMut};
use core::sync::atomic::{AtomicU64, Ordering};

use rvscsi_wmi::dispatch::{
    Control, GuidRegistration, MethodIo, Provider, RegInfo, Reply, dispatch, stamp_reply_time,
};
use rvscsi_wmi::encode::Encoder;
use rvscsi_wmi::hba::sm::{PortState, sas_speed};
use rvscsi_wmi::hba::{
    AdapterLimits, GUID_COUNT, HbaInfo, HbaProvider, LunInfo, PhyInfo, PhyStatistics, PortInfo,
    ProtocolStatistics, QUEUE_STATISTICS_INDEX, QueueStatistics, TargetPort, TargetSource,
};
use rvscsi_wmi::sas::{PciLocation, SasAddress};
use rvscsi_wmi::status::{WmiError, WmiStatus};
use virtio_core::features::Features;
use virtio_core::scsi::Limits;

use crate::counters::QueueCounters;
use crate::limits::StorLimits;
use crate::luns::{Answer, LunCopy, LunSlot, LunTable};
use crate::sizing::LUN_SLOTS;
use crate::storport::dma::{Carved, PciSnapshot, UncachedArena};
use crate::storport::port::DeviceExtension;
use crate::storport::srb::Srb;
use crate::storport::start_io_lock::StartIoLocked;
use crate::storport::{
    SRB_STATUS_DATA_OVERRUN, SRB_STATUS_ERROR, SRB_STATUS_INVALID_REQUEST, SRB_STATUS_SUCCESS,
    SRB_WMI_FLAGS_ADAPTER_REQUEST,
};

/// `Manufacturer`: the owner of PCI vendor ID 0x1AF4, which every virtio PCI function carries.
pub const MANUFACTURER: &str = "Red Hat, Inc.";
/// `MfgDomain` of that manufacturer.
pub const MFG_DOMAIN: &str = "com.redhat";
/// `Model`.
pub const MODEL: &str = "virtio-scsi";
/// `ModelDescription`.
pub const MODEL_DESCRIPTION: &str = "virtio SCSI host bus adapter";
/// `DriverVersion`: the crate version, the same string the INF stamps.
pub const DRIVER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// `DriverName`.
pub const DRIVER_NAME: &str = "rvscsi.sys";
/// `HBASymbolicName`.
pub const HBA_SYMBOLIC_NAME: &str = "rvscsi virtio-scsi HBA";
/// Index under the adapter's seed of the synthesised address of the virtual expander its port
/// attaches through when it has several targets: the first index past the adapter's own port
/// (0) and its targets (1 + 0..=255).
pub const ATTACHED_ADDRESS_INDEX: u64 = 257;

/// What find-adapter learned that the WMI classes report and that cannot change afterwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdapterFacts {
    /// `UniqueAdapterId` ([`unique_adapter_id`]), also the seed of the SAS addresses.
    pub unique_adapter_id: u64,
    /// `(device id << 16) | vendor id` of the PCI function.
    pub vendor_specific_id: u32,
    /// PCI revision ID (`HardwareVersion`).
    pub revision: u8,
    /// Size of each request virtqueue (the smallest, if they differ).
    pub queue_size: u16,
}

impl AdapterFacts {
    /// The facts of the function whose configuration space is `pci`, with request queues of
    /// `queue_size` and the identifier `unique_adapter_id` ([`crate::identity`]).
    #[must_use]
    pub fn from_pci(pci: &PciSnapshot, queue_size: u16, unique_adapter_id: u64) -> Self {
        use virtio_core::hal::PciConfig;
        Self {
            unique_adapter_id,
            vendor_specific_id: pci.read32(0),
            revision: pci.read8(8),
            queue_size,
        }
    }
}

/// The address of the function's first memory BAR, if it has one.
#[must_use]
pub fn first_memory_bar(pci: &PciSnapshot) -> Option<u64> {
    (0..6u8)
        .filter_map(|bar| pci.bar_address(bar))
        .find_map(|(address, io_space)| (!io_space).then_some(address))
}

/// The dump-mode fallback identifier of the function at `bus`/`slot` (a `PCI_SLOT_NUMBER`:
/// device in bits 0-4, function in bits 5-7) whose first memory BAR decodes `memory_bar`: the
/// wmi crate's location identifier with, in the segment's place, the BAR address folded to
/// 16 bits by XOR. Unique within a machine while it runs, but not across cloned machines,
/// hence [`crate::identity`] everywhere else.
#[must_use]
pub const fn unique_adapter_id(bus: u32, slot: u32, memory_bar: Option<u64>) -> u64 {
    let bar = match memory_bar {
        Some(address) => address,
        None => 0,
    };
    let fold = bar ^ (bar >> 16) ^ (bar >> 32) ^ (bar >> 48);
    rvscsi_wmi::sas::unique_adapter_id(PciLocation {
        segment: fold as u16,
        bus: bus as u8,
        device: (slot & 0x1F) as u8,
        function: ((slot >> 5) & 0x7) as u8,
    })
}

/// The SRB status and `DataTransferLength` for the dispatcher's `reply` to a request whose
/// buffer holds `buffer_len` bytes (see the module documentation for the mapping).
#[must_use]
pub const fn srb_completion(reply: &Reply, buffer_len: u32) -> (u8, u32) {
    let returned = if reply.bytes_returned < buffer_len {
        reply.bytes_returned
    } else {
        buffer_len
    };
    match reply.status {
        WmiStatus::Success => (SRB_STATUS_SUCCESS, returned),
        WmiStatus::BufferTooSmall => (SRB_STATUS_DATA_OVERRUN, returned),
        WmiStatus::InvalidDeviceRequest | WmiStatus::InvalidParameter => {
            (SRB_STATUS_INVALID_REQUEST, 0)
        }
        WmiStatus::GuidNotFound
        | WmiStatus::InstanceNotFound
        | WmiStatus::ItemIdNotFound
        | WmiStatus::ReadOnly
        | WmiStatus::Unsuccessful => (SRB_STATUS_ERROR, 0),
    }
}

/// What a WMI answer reads of the adapter, built by the adapter for each request.
#[derive(Clone, Copy, Debug)]
pub struct WmiContext<'a> {
    /// Identity and sizes found at find-adapter.
    pub facts: AdapterFacts,
    /// Where the LUN table is copied to answer from it.
    pub scratch: &'a WmiScratch,
    /// What the bus scan told Windows about each logical unit.
    pub luns: &'a LunTable<Carved<LunSlot>>,
    /// Request queues in use.
    pub request_queues: u16,
    /// The request queues' counters, by queue.
    pub counters: &'a [QueueCounters],
    /// Device resets performed (every queue's `Resets`).
    pub resets: &'a AtomicU64,
    /// The device's limits.
    pub device_limits: &'a Limits,
    /// The limits reported to StorPort.
    pub limits: &'a StorLimits,
    /// Features negotiated with the device.
    pub features: Features,
    /// The adapter in StorPort's calls (the reply's time stamp).
    pub extension: DeviceExtension,
}

impl WmiContext<'_> {
    fn counters(&self, queue: u16) -> Option<&QueueCounters> {
        self.counters.get(usize::from(queue))
    }
}

/// What answers WMI requests: the adapter, which builds a [`WmiContext`] for each.
pub trait WmiHost {
    /// The adapter's state a WMI answer reads.
    fn wmi_context(&self) -> WmiContext<'_>;
}

/// Answers the `SRB_FUNCTION_WMI` request `srb`: sets its `DataTransferLength` and returns the
/// SRB status to complete it with.
pub fn handle<H: WmiHost + ?Sized>(host: &H, srb: &mut Srb) -> u8 {
    let context = host.wmi_context();
    let Some(parameters) = srb.wmi_parameters() else {
        srb.set_data_transfer_length(0);
        return SRB_STATUS_INVALID_REQUEST;
    };
    if parameters.flags & SRB_WMI_FLAGS_ADAPTER_REQUEST == 0 {
        // A logical unit's request: no unit-level blocks are registered, so there is no data
        // (see the module documentation).
        srb.set_data_transfer_length(0);
        return SRB_STATUS_SUCCESS;
    }
    let length = srb.data_transfer_length();
    let reply = if length == 0 {
        answer(&context, parameters.sub_function, &mut [])
    } else {
        let Some(bytes) = srb.wmi_buffer() else {
            srb.set_data_transfer_length(0);
            return SRB_STATUS_INVALID_REQUEST;
        };
        answer(&context, parameters.sub_function, bytes)
    };
    let (status, returned) = srb_completion(&reply, length);
    srb.set_data_transfer_length(returned);
    status
}

/// Runs the dispatcher over `buffer` with this adapter's provider.
fn answer(context: &WmiContext<'_>, minor_function: u8, buffer: &mut [u8]) -> Reply {
    let texts = Texts::new(&context.facts);
    let seed = context.facts.unique_adapter_id;
    context.scratch.with_targets(context.luns, seed, |targets| {
        let info = hba_info(context, &texts);
        let mut provider = AdapterProvider::new(context, &info, targets);
        let reply = dispatch(minor_function, buffer, &mut provider);
        // The reply carries the time it was made, as WMILIB stamps it.
        let now = context.extension.system_time();
        stamp_reply_time(minor_function, buffer, &reply, now);
        reply
    })
}

/// Where a WMI request copies the LUN table, carved from the uncached extension:
/// [`LUN_SLOTS`] copies take about 33 KiB, far more than a kernel stack frame may. The
/// provider reads the targets and logical units from the copies through [`CopiedTargets`],
/// which builds each view when asked, so no table of views is kept.
///
/// WMI requests on different processors take turns through StorPort's StartIo lock
/// ([`Self::with_targets`]), held while one request is answered (copying at most
/// [`LUN_SLOTS`] slots and encoding the reply: bounded work, at DISPATCH_LEVEL, and WMI
/// requests are rare). I/O completions never take it: they write the LUN table, which has
/// its own lock.
#[derive(Debug)]
pub struct WmiScratch {
    tables: StartIoLocked<ScratchTables>,
}

/// What [`WmiScratch`] guards: plain data, rebuilt by every request.
#[derive(Debug)]
struct ScratchTables {
    /// The LUN table's present slots, in table order.
    copies: Carved<LunCopy>,
    /// Indices into `copies`, sorted by (target, LUN).
    order: Carved<u16>,
    /// Where each target's run of logical units starts in `order`, then where the last ends:
    /// one more entry than there are targets.
    starts: Carved<u16>,
}

impl WmiScratch {
    /// Bytes of uncached extension [`Self::carve`] takes, padding included.
    #[must_use]
    pub const fn uncached_len() -> usize {
        Self::uncached_len_for(LUN_SLOTS)
    }

    /// Bytes of uncached extension [`Self::carve_for`] takes for `slots`, padding included.
    #[must_use]
    pub const fn uncached_len_for(slots: usize) -> usize {
        slots * size_of::<LunCopy>()
            + align_of::<LunCopy>()
            + (2 * slots + 1) * size_of::<u16>()
            + 2 * align_of::<u16>()
    }

    /// Carves the scratch from `arena`.
    #[must_use]
    pub fn carve(arena: &UncachedArena) -> Option<Self> {
        Self::carve_for(arena, LUN_SLOTS)
    }

    /// Carves a scratch for a LUN table of `slots` slots (none in dump mode, where no WMI
    /// request arrives: every answer then lists no logical unit).
    #[must_use]
    pub fn carve_for(arena: &UncachedArena, slots: usize) -> Option<Self> {
        Some(Self {
            tables: StartIoLocked::new(
                arena.extension(),
                ScratchTables {
                    copies: arena.carve_table_with(slots, || LunCopy::EMPTY)?,
                    order: arena.carve_table(slots, 0)?,
                    starts: arena.carve_table(slots.checked_add(1)?, 0)?,
                },
            ),
        })
    }

    /// Copies `table` into the scratch and runs `f` with the targets of the copies (the
    /// adapter's SAS addresses derived from `seed`), the scratch held for as long as `f` runs.
    pub fn with_targets<R>(
        &self,
        table: &LunTable<Carved<LunSlot>>,
        seed: u64,
        f: impl FnOnce(&CopiedTargets<'_>) -> R,
    ) -> R {
        self.tables.with(|tables| {
            let ScratchTables {
                copies,
                order,
                starts,
            } = tables;
            let targets = CopiedTargets::copy(
                table,
                seed,
                BorrowMut::borrow_mut(copies),
                BorrowMut::borrow_mut(order),
                BorrowMut::borrow_mut(starts),
            );
            f(&targets)
        })
    }
}

/// The targets of the adapter with present logical units, in target order, each with its
/// logical units in LUN order: the LUN table as one WMI request copied it. Each
/// [`TargetPort`] and [`LunInfo`] is built from the copies when the provider asks for it.
#[derive(Debug)]
pub struct CopiedTargets<'s> {
    copies: &'s [LunCopy],
    /// Indices into `copies`, sorted by (target, LUN).
    order: &'s [u16],
    /// Where each target's run starts in `order`, then the end of the last run.
    starts: &'s [u16],
    /// The adapter's seed, for the targets' synthesised SAS addresses.
    seed: u64,
}

impl<'s> CopiedTargets<'s> {
    /// Copies `table` slot by slot (each slot consistent) into `copies`, sorts the copies by
    /// (target, LUN) into `order` and marks each target's run in `starts`.
    fn copy<S: Borrow<[LunSlot]>>(
        table: &LunTable<S>,
        seed: u64,
        copies: &'s mut [LunCopy],
        order: &'s mut [u16],
        starts: &'s mut [u16],
    ) -> Self {
        let mut count = 0usize;
        for index in 0..table.capacity() {
            let Some(copy) = copies.get_mut(count) else {
                break;
            };
            if table.copy_slot(index, copy) {
                count += 1;
            }
        }
        let count = count.min(order.len()).min(usize::from(u16::MAX));
        let copies: &'s [LunCopy] = copies.get(..count).unwrap_or(&[]);
        // Copy indices sorted by (target, LUN): an insertion sort of at most LUN_SLOTS entries.
        let key = |index: u16| copies.get(usize::from(index)).map_or(0, LunCopy::key);
        for next in 0..count {
            let new = next as u16;
            let mut at = next;
            while at > 0 {
                let Some(&before) = order.get(at - 1) else {
                    break;
                };
                if key(before) <= key(new) {
                    break;
                }
                if let Some(slot) = order.get_mut(at) {
                    *slot = before;
                }
                at -= 1;
            }
            if let Some(slot) = order.get_mut(at) {
                *slot = new;
            }
        }
        let order: &'s [u16] = order.get(..count).unwrap_or(&[]);
        // Each target's run: where the target differs from the one before.
        let mut targets = 0usize;
        let mut previous = None;
        for (position, &index) in order.iter().enumerate() {
            let target = copies.get(usize::from(index)).map(|copy| copy.target);
            if target == previous {
                continue;
            }
            previous = target;
            let Some(start) = starts.get_mut(targets) else {
                break;
            };
            *start = position as u16;
            targets += 1;
        }
        if let Some(end) = starts.get_mut(targets) {
            *end = count as u16;
        }
        let starts: &'s [u16] = starts.get(..=targets).unwrap_or(&[]);
        Self {
            copies,
            order,
            starts,
            seed,
        }
    }

    /// The copies of target `target`'s logical units, in LUN order.
    fn run(&self, target: usize) -> impl Iterator<Item = &'s LunCopy> + use<'s> {
        let start = self.starts.get(target).copied();
        let end = self.starts.get(target + 1).copied();
        let indices = match (start, end) {
            (Some(start), Some(end)) => self
                .order
                .get(usize::from(start)..usize::from(end))
                .unwrap_or(&[]),
            _ => &[],
        };
        let copies = self.copies;
        indices
            .iter()
            .filter_map(move |&index| copies.get(usize::from(index)))
    }
}

impl TargetSource for CopiedTargets<'_> {
    fn target_count(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    fn target(&self, index: usize) -> Option<TargetPort> {
        let first = self.run(index).next()?;
        let vpd83 = self
            .run(index)
            .find(|copy| copy.lun == 0)
            .and_then(|copy| copy.answer(Answer::DeviceIdentification));
        Some(TargetPort {
            sas_address: SasAddress::for_target(vpd83, self.seed, first.target),
            // virtio-scsi has one bus: StorPort path id 0.
            bus: 0,
            target: first.target,
        })
    }

    fn lun_count(&self, target: usize) -> usize {
        self.run(target).count()
    }

    fn lun(&self, target: usize, index: usize) -> Option<LunInfo<'_>> {
        let copy = self.run(target).nth(index)?;
        Some(LunInfo {
            lun: copy.lun,
            // The name of the disk belongs to the class driver, which does not tell us.
            os_device_name: "",
            // Not counted per logical unit: the counters are per queue.
            statistics: ProtocolStatistics::default(),
            inquiry: copy.answer(Answer::Inquiry),
            unit_serial_number: copy.answer(Answer::UnitSerialNumber),
            device_identification: copy.answer(Answer::DeviceIdentification),
            read_capacity_10: copy.answer(Answer::ReadCapacity10),
            read_capacity_16: copy.answer(Answer::ReadCapacity16),
        })
    }
}

/// [`HbaProvider`] with the `Rvscsi_QueueStatistics` instances read from the counters one at
/// a time, when asked for, instead of from a snapshot of every queue: a snapshot of
/// [`crate::sizing::MAX_REQUEST_QUEUES`] queues would take 3 KiB of the kernel stack.
struct AdapterProvider<'a> {
    context: &'a WmiContext<'a>,
    inner: HbaProvider<'a>,
    guids: [GuidRegistration; GUID_COUNT],
}

impl<'a> AdapterProvider<'a> {
    fn new(
        context: &'a WmiContext<'a>,
        info: &'a HbaInfo<'a>,
        targets: &'a dyn TargetSource,
    ) -> Self {
        let inner = HbaProvider::with_targets(info, targets);
        let mut guids = [GuidRegistration {
            guid: rvscsi_wmi::guid::Guid::NULL,
            instance_count: 0,
            flags: 0,
            instance_names: rvscsi_wmi::dispatch::InstanceNames::Static,
        }; GUID_COUNT];
        for (slot, row) in guids.iter_mut().zip(inner.guids()) {
            *slot = *row;
        }
        if let Some(row) = guids.get_mut(QUEUE_STATISTICS_INDEX) {
            row.instance_count = u32::from(context.request_queues);
        }
        Self {
            context,
            inner,
            guids,
        }
    }
}

impl Provider for AdapterProvider<'_> {
    fn guids(&self) -> &[GuidRegistration] {
        &self.guids
    }

    fn query_reginfo(&self) -> RegInfo<'_> {
        self.inner.query_reginfo()
    }

    fn query_data_block(
        &mut self,
        guid_index: usize,
        instance_index: u32,
        out: &mut Encoder<'_>,
    ) -> Result<(), WmiError> {
        if guid_index != QUEUE_STATISTICS_INDEX {
            return self.inner.query_data_block(guid_index, instance_index, out);
        }
        let queue = u16::try_from(instance_index)
            .ok()
            .and_then(|index| queue_statistics(self.context, index))
            .ok_or(WmiError::InstanceNotFound {
                guid_index: guid_index as u32,
                instance_index,
            })?;
        queue.encode(out);
        Ok(())
    }

    fn instance_name(
        &self,
        guid_index: usize,
        instance_index: u32,
        out: &mut Encoder<'_>,
    ) -> Result<(), WmiError> {
        self.inner.instance_name(guid_index, instance_index, out)
    }

    fn set_data_block(
        &mut self,
        guid_index: usize,
        instance_index: u32,
        data: &[u8],
    ) -> Result<(), WmiError> {
        self.inner.set_data_block(guid_index, instance_index, data)
    }

    fn set_data_item(
        &mut self,
        guid_index: usize,
        instance_index: u32,
        item_id: u32,
        data: &[u8],
    ) -> Result<(), WmiError> {
        self.inner
            .set_data_item(guid_index, instance_index, item_id, data)
    }

    fn execute_method(
        &mut self,
        guid_index: usize,
        instance_index: u32,
        io: &mut MethodIo<'_>,
    ) -> Result<(), WmiError> {
        self.inner.execute_method(guid_index, instance_index, io)
    }

    fn function_control(
        &mut self,
        guid_index: usize,
        control: Control,
        enable: bool,
    ) -> Result<(), WmiError> {
        self.inner.function_control(guid_index, control, enable)
    }
}

/// The `Rvscsi_QueueStatistics` instance of request queue `queue` now (each counter read
/// once, relaxed: WMI reports statistics, not a consistent cut).
#[must_use]
pub fn queue_statistics(context: &WmiContext<'_>, queue: u16) -> Option<QueueStatistics> {
    if queue >= context.request_queues {
        return None;
    }
    let counters = context.counters(queue)?;
    Some(QueueStatistics {
        queue_index: u32::from(queue),
        queue_size: u32::from(context.facts.queue_size),
        requests: counters.requests.load(Ordering::Relaxed),
        kicks: counters.kicks.load(Ordering::Relaxed),
        interrupts: counters.interrupts.load(Ordering::Relaxed),
        queue_full: counters.queue_full.load(Ordering::Relaxed),
        // A device reset affects every queue.
        resets: context.resets.load(Ordering::Relaxed),
    })
}

/// The strings of an [`HbaInfo`] that are formatted per adapter, in stack buffers.
#[derive(Clone, Copy, Debug)]
pub struct Texts {
    serial_number: [u8; 16],
    hardware_version: [u8; 6],
}

impl Texts {
    /// The serial number (the port's SAS address in 16 hex digits) and the hardware version
    /// (`rev` and the PCI revision ID in two hex digits) of the adapter with `facts`.
    #[must_use]
    pub fn new(facts: &AdapterFacts) -> Self {
        let mut serial_number = [0u8; 16];
        hex(
            SasAddress::for_adapter(facts.unique_adapter_id).to_u64(),
            &mut serial_number,
        );
        let mut hardware_version = *b"rev 00";
        if let Some(digits) = hardware_version.last_chunk_mut::<2>() {
            hex(u64::from(facts.revision), digits);
        }
        Self {
            serial_number,
            hardware_version,
        }
    }

    /// `SerialNumber`.
    #[must_use]
    pub fn serial_number(&self) -> &str {
        core::str::from_utf8(&self.serial_number).unwrap_or("")
    }

    /// `HardwareVersion`.
    #[must_use]
    pub fn hardware_version(&self) -> &str {
        core::str::from_utf8(&self.hardware_version).unwrap_or("")
    }
}

/// Writes the low `out.len()` hex digits of `value`, most significant first, upper case.
fn hex(value: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut rest = value;
    for byte in out.iter_mut().rev() {
        *byte = DIGITS.get((rest & 0xF) as usize).copied().unwrap_or(b'0');
        rest >>= 4;
    }
}

/// The `HbaInfo` of the adapter of `context` now: its facts, `texts`, and its counters summed over the
/// queues (each read once, relaxed: WMI reports statistics, not a consistent cut). Its
/// `queues` is empty: the WMI provider reads each queue's instance when asked. Its `targets`
/// is empty too: the provider reads the targets from the LUN table's copies in the WMI
/// scratch ([`CopiedTargets`]).
#[must_use]
pub fn hba_info<'a>(context: &WmiContext<'_>, texts: &'a Texts) -> HbaInfo<'a> {
    let facts = context.facts;
    let mut protocol = ProtocolStatistics::default();
    let (mut requests, mut completions, mut bytes_read, mut bytes_written) = (0u64, 0u64, 0, 0);
    for queue in 0..context.request_queues {
        let Some(counters) = context.counters(queue) else {
            continue;
        };
        let load = |counter: &core::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        requests = requests.wrapping_add(load(&counters.requests));
        completions = completions.wrapping_add(load(&counters.completions));
        protocol.input_requests = protocol
            .input_requests
            .wrapping_add(load(&counters.reads).cast_signed());
        protocol.output_requests = protocol
            .output_requests
            .wrapping_add(load(&counters.writes).cast_signed());
        bytes_read = load(&counters.bytes_read).wrapping_add(bytes_read);
        bytes_written = load(&counters.bytes_written).wrapping_add(bytes_written);
    }
    // Requests without data are the completed ones that were neither reads nor writes.
    protocol.control_requests = completions
        .cast_signed()
        .wrapping_sub(protocol.input_requests)
        .wrapping_sub(protocol.output_requests)
        .max(0);
    protocol.input_megabytes = (bytes_read >> 20).cast_signed();
    protocol.output_megabytes = (bytes_written >> 20).cast_signed();
    let seed = facts.unique_adapter_id;
    let device = context.device_limits;
    let limits = context.limits;
    let features = context.features;
    HbaInfo {
        unique_adapter_id: seed,
        vendor_specific_id: facts.vendor_specific_id,
        manufacturer: MANUFACTURER,
        serial_number: texts.serial_number(),
        model: MODEL,
        model_description: MODEL_DESCRIPTION,
        hardware_version: texts.hardware_version(),
        driver_version: DRIVER_VERSION,
        // A virtual function has no option ROM and no firmware of its own.
        option_rom_version: "",
        firmware_version: "",
        driver_name: DRIVER_NAME,
        hba_symbolic_name: HBA_SYMBOLIC_NAME,
        redundant_option_rom_version: "",
        redundant_firmware_version: "",
        mfg_domain: MFG_DOMAIN,
        port: PortInfo {
            // The \\.\ScsiN: name belongs to the port driver, which does not tell the miniport.
            os_device_name: "",
            state: PortState::Online,
            local_sas_address: SasAddress::for_adapter(seed),
            attached_sas_address: SasAddress::synthesize(seed, ATTACHED_ADDRESS_INDEX),
            // A virtqueue has no link rate.
            phy: PhyInfo {
                negotiated_link_rate: sas_speed::UNKNOWN,
                programmed_min_link_rate: sas_speed::UNKNOWN,
                hardware_min_link_rate: sas_speed::UNKNOWN,
                programmed_max_link_rate: sas_speed::UNKNOWN,
                hardware_max_link_rate: sas_speed::UNKNOWN,
            },
            protocol_statistics: protocol,
            // Frames are requests sent and responses received; a virtual phy has no link
            // errors, so its error counters are truly zero.
            phy_statistics: PhyStatistics {
                tx_frames: requests.cast_signed(),
                rx_frames: completions.cast_signed(),
                ..PhyStatistics::default()
            },
        },
        // Read by the provider from the LUN table's copies instead ([`CopiedTargets`]).
        targets: &[],
        queues: &[],
        limits: AdapterLimits {
            request_queues: u32::from(context.request_queues),
            queue_size: u32::from(facts.queue_size),
            seg_max: device.seg_max,
            // 0: the device did not report max_sectors.
            max_sectors: device.max_sectors.unwrap_or(0),
            cmd_per_lun: device.cmd_per_lun,
            // virtio-scsi devices have one channel (max_channel is 0 by the specification).
            max_channel: 0,
            max_target: u32::from(device.max_target),
            max_lun: u32::from(device.max_lun),
            max_transfer_length: limits.max_transfer_length,
            physical_breaks: limits.physical_breaks,
            features: features.bits(),
            packed_ring: features.contains(Features::RING_PACKED),
            indirect_descriptors: features.contains(Features::INDIRECT_DESC),
            event_index: features.contains(Features::EVENT_IDX),
        },
    }
}

#[cfg(test)]
mod tests;
