//! A StorPort simulator: plays storport.sys for a miniport at the C ABI (DriverEntry,
//! HwFindAdapter, HwInitialize, passive initialisation, BuildIo/StartIo on simulated processors,
//! MSI-X interrupts, DPCs, locks, timeouts and bus resets, adapter control, bus scans) and records
//! every breach of the StorPort contract it can see.
//!
//! The exports (`StorPortXxx` with their C names) live in `exports` and `variadic.c`; they find
//! their adapter through the calling thread, which the simulator always attaches first.

pub mod abi;
pub mod clock;
mod dump;
mod exports;
pub mod locks;
mod machine;
mod pnp;
pub mod routine;
mod win64;
mod wmi_registration;

use std::ffi::c_void;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use zerocopy::FromZeros;

use locks::{Attach, CallContext, LockId, PASSIVE_LEVEL};
use machine::{InterruptWiring, Machine, Work, callback};

pub use dump::DumpPort;
pub use locks::CallContext as Context;
pub use locks::LockId as Lock;
pub use machine::LockReleaseHook;
pub use pnp::{PnpEvent, PnpView};
pub use win64::win64_export;
pub use wmi_registration::{
    FIRST_REGINFO_BUFFER, IRP_MN_REGINFO_EX, RegisteredGuid, RegistrationError, WmiRegistration,
};

/// The miniport's entry point: `NTSTATUS DriverEntry(PDRIVER_OBJECT, PUNICODE_STRING)`.
pub type DriverEntryFn = unsafe extern "system" fn(*mut c_void, *mut c_void) -> i32;

/// How StorPortGetPhysicalAddress reports contiguity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contiguity {
    /// Up to the end of the allocation (the uncached extension or SRB buffer).
    Allocation,
    /// Only up to the next 4 KiB boundary, as fragmented physical memory would be; catches a
    /// miniport that assumes more.
    PageBoundary,
}

/// Simulator settings.
#[derive(Clone, Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent switches of the simulated platform, each a yes-or-no property of it"
)]
pub struct SimOptions {
    /// Number of simulated processors (threads).
    pub processors: u32,
    /// Build SCSI_REQUEST_BLOCKs even if the miniport advertises STORAGE_REQUEST_BLOCK support.
    pub force_scsi_request_block: bool,
    /// StorPortGetPhysicalAddress contiguity.
    pub contiguity: Contiguity,
    /// Merge physically adjacent pages of a data buffer into one SG element at random.
    pub merge_adjacent_pages: bool,
    /// Real time per second of an SRB's TimeOutValue. The default makes a 10-second SRB
    /// time out after one real second: short enough for timeout scenarios (which set 1–2
    /// seconds), long enough that a loaded 2-core CI machine does not time out healthy I/O.
    pub timeout_scale: Duration,
    /// How many times faster than real time the machine's clocks run ([`clock::SimClock`]):
    /// StorPortQuerySystemTime, the tick count, StorPortStallExecution, RequestTimerCall and the
    /// port driver's busy hold-offs. 1 (the default) is real time. SRB timeouts keep their own
    /// [`SimOptions::timeout_scale`] and the port driver's timer its `watchdog_period`.
    pub clock_rate: u32,
    /// How often the port driver's timer runs.
    pub watchdog_period: Duration,
    /// MSI-X messages to offer; `None` reads the device's MSI-X table size.
    pub messages: Option<u32>,
    /// Targets the bus scan probes (from 0), at most the `MaximumNumberOfTargets` the miniport
    /// reported.
    pub scan_targets: u8,
    /// The adapter's PCI location as ConfigInfo reports it: `SystemIoBusNumber` and
    /// `SlotNumber` (a PCI_SLOT_NUMBER: device in bits 0-4, function in bits 5-7).
    pub pci_location: (u32, u32),
    /// Whether StorPortEnablePassiveInitialization succeeds. `false` plays a StorPort that
    /// offers no DPCs to the miniport (as the crash-dump stack does): the miniport must then
    /// complete requests from its ISR.
    pub passive_initialization: bool,
    /// How long the port driver waits, after calling HwResetBus for a timed-out request, for
    /// the miniport to complete every request of the bus before it records
    /// [`Violation::NotCompletedAfterReset`]. `None`: two SRB timeout seconds
    /// (`2 * timeout_scale`). A miniport whose reset ends asynchronously (task management with
    /// a deadline) needs at least its deadline here.
    pub reset_grace: Option<Duration>,
    /// REG_DWORD values under the service's `Parameters\\Device` key, by name.
    pub registry: Vec<(String, u32)>,
    /// The device's hardware key (`Enum\<instance>\Device Parameters`), which the miniport
    /// reads and writes with StorPortRegistryRead/WriteAdapterKey. A handle: clones of the
    /// options share the key, so booting twice with clones of one `SimOptions` is one machine
    /// rebooting, and a fresh [`AdapterKey`] is another machine (or one whose device instance
    /// was reset, as sysprep's generalize pass does).
    pub adapter_key: AdapterKey,
    /// Play the crash-dump stack's port driver instead of StorPort ([`DumpPort`]): NULL
    /// DriverEntry arguments, every routine at HIGH_LEVEL on one processor, no interrupts
    /// (HwInterrupt polled), no MSI-X, DPCs, timers, passive initialisation or registry, a
    /// small uncached extension, one SRB at a time.
    pub dump: Option<DumpPort>,
    /// Play DMA remapping (an IOMMU between the device and memory, as Kernel DMA Protection
    /// and virtual-IOMMU guests have): bus addresses are I/O virtual addresses, not physical
    /// ones, and only what StorPort maps translates: the uncached extension for the adapter's
    /// life, and each SRB's SRB extension, data buffer and sense buffer while StorPort has
    /// the SRB. StorPortGetPhysicalAddress then answers as StorPort does under remapping: the
    /// SRB extension, data and sense buffers translate only with their SRB (NULL gets 0).
    /// Needs an arena with an IOMMU ([`DmaArena::iommu`]).
    pub iommu: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            processors: 2,
            force_scsi_request_block: false,
            contiguity: Contiguity::Allocation,
            merge_adjacent_pages: false,
            timeout_scale: Duration::from_millis(100),
            clock_rate: 1,
            watchdog_period: Duration::from_millis(2),
            messages: None,
            scan_targets: 4,
            pci_location: (0, 3),
            passive_initialization: true,
            reset_grace: None,
            registry: Vec::new(),
            adapter_key: AdapterKey::default(),
            dump: None,
            iommu: false,
        }
    }
}

/// The values of one registry key by name: `(REG_* type, data)`.
type RegistryValues = std::collections::BTreeMap<String, (u32, Vec<u8>)>;

/// Registry values of a device's hardware key, by name. Cloning the handle shares the key (see
/// [`SimOptions::adapter_key`]).
#[derive(Clone, Debug, Default)]
pub struct AdapterKey(Arc<std::sync::Mutex<RegistryValues>>);

impl AdapterKey {
    /// The value `name`, if written.
    #[must_use]
    pub fn value(&self, name: &str) -> Option<(u32, Vec<u8>)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Writes the value `name` (as an administrator, or a template's copy, would).
    pub fn set(&self, name: &str, value_type: u32, data: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), (value_type, data.to_vec()));
    }

    /// A separate key with the same values: what cloning a machine's disk copies.
    #[must_use]
    pub fn copied(&self) -> Self {
        let values = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Self(Arc::new(std::sync::Mutex::new(values)))
    }
}

/// The PCI function the miniport drives (the virtio-scsi device model, or a test double).
pub trait PciFunction: Send + Sync {
    /// Reads configuration space from `offset` into `out`.
    fn config_read(&self, offset: u16, out: &mut [u8]);
    /// Writes configuration space.
    fn config_write(&self, offset: u16, data: &[u8]);
    /// Length of BAR `bar`, `None` if not implemented.
    fn bar_len(&self, bar: u8) -> Option<u64>;
    /// Reads `width` bytes (1, 2, 4 or 8) at `offset` in BAR `bar`.
    fn mmio_read(&self, bar: u8, offset: u64, width: u8) -> u64;
    /// Writes `width` bytes at `offset` in BAR `bar`.
    fn mmio_write(&self, bar: u8, offset: u64, width: u8, value: u64);
}

/// The simulated machine's DMA memory: process addresses are physical addresses.
pub trait DmaArena: Send + Sync {
    /// Allocates `len` zeroed bytes aligned to `align`.
    fn alloc(&self, len: usize, align: usize) -> Option<usize>;
    /// Frees an allocation.
    fn free(&self, address: usize, len: usize);
    /// Copies bytes in; `false` outside the arena.
    fn write(&self, address: usize, bytes: &[u8]) -> bool;
    /// Copies bytes out; `false` outside the arena.
    fn read(&self, address: usize, out: &mut [u8]) -> bool;
    /// Whether the device reaches this memory through an IOMMU that [`DmaArena::map`] programs
    /// (what [`SimOptions::iommu`] needs).
    fn iommu(&self) -> bool {
        false
    }
    /// Maps `len` bytes at `address` for the device's DMA; returns their bus address. Without
    /// an IOMMU there is nothing to map: `None`.
    fn map(&self, address: usize, len: usize) -> Option<u64> {
        let _ = (address, len);
        None
    }
    /// Removes a mapping [`DmaArena::map`] made.
    fn unmap(&self, bus: u64, len: usize) {
        let _ = (bus, len);
    }
}

/// The adapter's interrupt line, handed to the device before boot; interrupts raised before
/// the miniport connected its routine are counted as lost.
#[derive(Clone, Default)]
pub struct InterruptLine {
    machine: Arc<OnceLock<Weak<Machine>>>,
}

impl InterruptLine {
    /// An unconnected line.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises MSI-X message `message` (INTx when the miniport has no message routine).
    pub fn raise(&self, message: u16) {
        if let Some(machine) = self.machine.get().and_then(Weak::upgrade) {
            machine.raise(u32::from(message));
        }
    }
}

/// What the simulator plugs together.
pub struct Platform {
    /// The miniport's DriverEntry.
    pub entry: DriverEntryFn,
    /// The device.
    pub pci: Arc<dyn PciFunction>,
    /// DMA memory.
    pub memory: Arc<dyn DmaArena>,
    /// The line the device raises interrupts on.
    pub interrupts: InterruptLine,
}

/// Data direction of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDirection {
    /// No data.
    None,
    /// Device to host.
    In,
    /// Host to device.
    Out,
    /// `SRB_FLAGS_UNSPECIFIED_DIRECTION` (both flags), as StorPort passes on a pass-through
    /// request with `SCSI_IOCTL_DATA_UNSPECIFIED`: the buffer holds `data_out` followed by
    /// zeros up to `data_in_len` (whichever is longer), and the completion's data is the
    /// buffer read back up to `DataTransferLength`.
    Unspecified,
}

/// A SCSI command as the class driver would send it.
#[derive(Clone, Debug)]
pub struct Request {
    /// PathId.
    pub path: u8,
    /// TargetId.
    pub target: u8,
    /// Lun.
    pub lun: u8,
    /// The CDB (1..=16 bytes; up to 32 with STORAGE_REQUEST_BLOCKs).
    pub cdb: Vec<u8>,
    /// Direction.
    pub direction: DataDirection,
    /// Bytes to write (direction Out).
    pub data_out: Vec<u8>,
    /// Bytes to read (direction In).
    pub data_in_len: u32,
    /// Offset of the data buffer from a page boundary.
    pub data_offset: u16,
    /// Sense buffer size (0: autosense disabled).
    pub sense_len: u8,
    /// TimeOutValue in seconds.
    pub timeout_seconds: u32,
    /// QueueTag / RequestTag.
    pub queue_tag: u8,
    /// QueueAction / RequestAttribute (e.g. SRB_SIMPLE_TAG_REQUEST); `None` for untagged.
    pub queue_action: Option<u8>,
    /// The SRB function: `SRB_FUNCTION_EXECUTE_SCSI`, or an abort or reset function (which
    /// has no CDB: `cdb` is ignored).
    pub function: u8,
    /// NextSrb: for `SRB_FUNCTION_ABORT_COMMAND`, the outstanding request to abort.
    pub next_srb: Option<Ticket>,
    /// Play a port driver that breaks its own rules: the request reaches the miniport even if
    /// it exceeds the transfer limits the miniport reported (`MaximumTransferLength`,
    /// `NumberOfPhysicalBreaks`) or its queue depths, so a scenario can check the miniport's
    /// answer. A request beyond the transfer limits that the miniport completes with SUCCESS
    /// is [`Violation::AcceptedBeyondTransferLimits`].
    pub ignore_port_limits: bool,
}

impl Request {
    /// A command with no data to `target`/`lun` on path 0, 18 bytes of sense, 10 s timeout.
    #[must_use]
    pub fn new(target: u8, lun: u8, cdb: &[u8]) -> Self {
        Self {
            path: 0,
            target,
            lun,
            cdb: cdb.to_vec(),
            direction: DataDirection::None,
            data_out: Vec::new(),
            data_in_len: 0,
            data_offset: 0,
            sense_len: 18,
            timeout_seconds: 10,
            queue_tag: 0,
            queue_action: Some(abi::SRB_SIMPLE_TAG_REQUEST),
            function: abi::SRB_FUNCTION_EXECUTE_SCSI,
            next_srb: None,
            ignore_port_limits: false,
        }
    }

    /// A request of `function` (an abort or reset: no CDB, no data) for `target`/`lun`, with
    /// a 30 s timeout, as StorPort sends them.
    #[must_use]
    pub fn control(function: u8, target: u8, lun: u8) -> Self {
        Self {
            function,
            cdb: Vec::new(),
            sense_len: 0,
            timeout_seconds: 30,
            queue_action: None,
            ..Self::new(target, lun, &[0])
        }
    }

    /// `SRB_FUNCTION_ABORT_COMMAND` for the outstanding request `victim` (on its unit).
    #[must_use]
    pub fn abort(target: u8, lun: u8, victim: Ticket) -> Self {
        Self {
            next_srb: Some(victim),
            ..Self::control(abi::SRB_FUNCTION_ABORT_COMMAND, target, lun)
        }
    }

    /// The same command reading `len` bytes.
    #[must_use]
    pub fn reading(mut self, len: u32) -> Self {
        self.direction = DataDirection::In;
        self.data_in_len = len;
        self
    }

    /// The same command with an unspecified direction over a buffer of
    /// `max(initial.len(), len)` bytes that starts with `initial` (see
    /// [`DataDirection::Unspecified`]).
    #[must_use]
    pub fn unspecified(mut self, initial: &[u8], len: u32) -> Self {
        self.direction = DataDirection::Unspecified;
        self.data_out = initial.to_vec();
        self.data_in_len = len;
        self
    }

    /// The same command writing `data`.
    #[must_use]
    pub fn writing(mut self, data: &[u8]) -> Self {
        self.direction = DataDirection::Out;
        self.data_out = data.to_vec();
        self
    }
}

/// A completed SRB as read back from its memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// SrbStatus, flags included.
    pub srb_status: u8,
    /// ScsiStatus.
    pub scsi_status: u8,
    /// Sense bytes, only when SRB_STATUS_AUTOSENSE_VALID was set.
    pub sense: Vec<u8>,
    /// DataTransferLength as the miniport left it.
    pub data_transfer_length: u32,
    /// The bytes read (direction In), up to DataTransferLength.
    pub data: Vec<u8>,
}

impl Completion {
    /// SRB_STATUS() of the status: without the autosense and queue-frozen flags.
    #[must_use]
    pub fn status(&self) -> u8 {
        self.srb_status & !(abi::SRB_STATUS_AUTOSENSE_VALID | abi::SRB_STATUS_QUEUE_FROZEN)
    }
}

/// Identifies a submitted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(pub u64);

/// A breach of the StorPort contract by the miniport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// HwFindAdapter wrote through its last parameter, `Reserved3` (an `_In_ PBOOLEAN` in
    /// storport.h; SCSIport's `Again`, which StorPort does not give the miniport to write).
    FindAdapterWroteReserved3 {
        /// The byte found there afterwards.
        value: u8,
    },
    /// An SRB completed twice.
    DoubleCompletion {
        /// SRB address.
        srb: usize,
    },
    /// RequestComplete for an address that is not an outstanding SRB.
    CompletionOfUnknownSrb {
        /// The address given.
        srb: usize,
    },
    /// An SRB still outstanding when the adapter was shut down.
    OutstandingAtShutdown {
        /// Its ticket.
        ticket: u64,
    },
    /// An SRB not completed within the grace period after HwResetBus.
    NotCompletedAfterReset {
        /// Its ticket.
        ticket: u64,
    },
    /// HwBuildIo returned FALSE without completing the SRB.
    BuildIoFalseWithoutCompletion {
        /// SRB address.
        srb: usize,
    },
    /// HwBuildIo completed the SRB but returned TRUE (StorPort would call HwStartIo on it).
    CompletedInBuildIoButReturnedTrue {
        /// SRB address.
        srb: usize,
    },
    /// A routine called from a context that may not call it.
    WrongContext {
        /// The StorPort routine.
        routine: &'static str,
        /// Where it was called.
        context: CallContext,
    },
    /// A routine called above its maximum IRQL.
    WrongIrql {
        /// The StorPort routine.
        routine: &'static str,
        /// The IRQL at the call.
        irql: u8,
    },
    /// A lock acquired at an IRQL above its own (e.g. the StartIo lock in an ISR).
    LockAboveItsIrql {
        /// The lock.
        lock: LockId,
        /// The IRQL at the call.
        irql: u8,
    },
    /// A lock acquired by the thread already holding it.
    RecursiveAcquire {
        /// The lock.
        lock: LockId,
    },
    /// A lock released that this thread does not hold.
    ReleaseNotHeld {
        /// The lock.
        lock: LockId,
    },
    /// A miniport routine returned with a lock it took still held.
    LockHeldOnReturn {
        /// The lock.
        lock: LockId,
        /// The routine.
        context: CallContext,
    },
    /// A miniport routine returned at a different IRQL than it was called at.
    IrqlChangedOnReturn {
        /// The routine.
        context: CallContext,
        /// The IRQL it left.
        irql: u8,
    },
    /// An MSI-X message number beyond the granted count.
    NoSuchMessage {
        /// The number.
        message: u32,
    },
    /// IssueDpc on a STOR_DPC never initialised.
    DpcNotInitialized {
        /// The STOR_DPC address.
        dpc: usize,
    },
    /// An export given a device extension that is not this adapter's.
    WrongDeviceExtension {
        /// The StorPort routine.
        routine: &'static str,
        /// The pointer given.
        address: usize,
    },
    /// A register routine given an address outside every mapped BAR.
    RegisterOutsideBars {
        /// The address.
        address: usize,
    },
    /// StorPortGetPhysicalAddress on memory that is not DMA memory StorPort gave out.
    PhysicalAddressOfUnknownMemory {
        /// The address.
        address: usize,
    },
    /// StorPortGetPhysicalAddress on an SRB extension with a NULL SRB: "the SRB parameter
    /// must not be NULL when passing the SrbExtension", since under DMA remapping StorPort
    /// finds its logical address through the SRB and answers 0 without it
    /// (MicrosoftDocs/windows-driver-docs-ddi pull request 1640).
    SrbExtensionTranslatedWithoutSrb {
        /// The address.
        address: usize,
    },
    /// StorPortGetUncachedExtension called twice.
    UncachedExtensionTwice,
    /// StorPortAllocateRegistryBuffer while the adapter already holds its registry buffer.
    RegistryBufferTwice,
    /// StorPortRegistryRead or StorPortFreeRegistryBuffer with a buffer that is not the
    /// adapter's registry buffer.
    ForeignRegistryBuffer {
        /// The routine.
        routine: &'static str,
    },
    /// StorPortGetScatterGatherList for an SRB that is not outstanding.
    ScatterGatherOfUnknownSrb {
        /// The address.
        srb: usize,
    },
    /// A StorPortNotification type the simulator does not know.
    UnknownNotification {
        /// The type.
        notification: u32,
    },
    /// A StorPortExtendedFunction code the simulator does not implement.
    UnknownExtendedFunction {
        /// The code.
        function: u32,
    },
    /// StorPortGetDeviceBase for a range that is not inside one BAR.
    DeviceBaseOutsideBars {
        /// The physical address.
        physical: u64,
    },
    /// The STOR_ADDRESS of a StorPortStateChangeDetected notification changed (or became
    /// unreadable) before StorPort called back, which the routine's contract forbids.
    StateChangeAddressChanged {
        /// The address given.
        address: usize,
    },
    /// StorPortStateChangeDetected with an entity, address type or address length StorPort
    /// refuses (it answers STOR_STATUS_INVALID_PARAMETER).
    StateChangeInvalid {
        /// ChangedEntity.
        entity: u32,
    },
    /// A routine the crash-dump stack does not offer (DPCs, timers, passive initialisation,
    /// the registry, performance options, the system time), called in dump mode.
    ForbiddenInDumpMode {
        /// The StorPort routine.
        routine: &'static str,
    },
    /// HwStorUnitControl's query wrote past `SupportedTypeList[MaxControlType - 1]`, which
    /// the caller did not allocate.
    UnitControlListOverrun {
        /// The `MaxControlType` given.
        max: u32,
    },
    /// The miniport completed with SUCCESS a request beyond the transfer limits it reported
    /// (sent with [`Request::ignore_port_limits`]): it claims a transfer its own limits say it
    /// cannot carry, so it either reported them wrong or did not check them.
    AcceptedBeyondTransferLimits {
        /// The request's ticket.
        ticket: u64,
    },
    /// The miniport wrote past the end of a SCSI request's data or sense buffer (into the
    /// simulator's guard after it), as one that trusts a device's length would.
    WroteBeyondBuffer {
        /// The request's ticket.
        ticket: u64,
        /// Which buffer.
        buffer: SrbBuffer,
    },
    /// The miniport completed a SCSI request with a DataTransferLength above the one StorPort
    /// sent: it claims bytes the buffer cannot hold.
    TransferLengthGrew {
        /// The request's ticket.
        ticket: u64,
        /// DataTransferLength as sent.
        sent: u32,
        /// As completed.
        completed: u32,
    },
    /// HwStorUnitControl answered Success for a control type its query did not report:
    /// StorPort would never have called it, so the miniport claims work it does not do.
    UnsupportedUnitControlSucceeded {
        /// The control type.
        control: u32,
    },
}

/// Bytes of guard after every SCSI request's data and sense buffer, filled with
/// [`BUFFER_GUARD_BYTE`]: a miniport that writes past either changes them
/// ([`Violation::WroteBeyondBuffer`]).
pub const BUFFER_GUARD_LEN: usize = 16;
/// The fill of those guards.
pub const BUFFER_GUARD_BYTE: u8 = 0x5C;

/// Which buffer of an SRB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrbBuffer {
    /// DataBuffer (DataTransferLength bytes).
    Data,
    /// SenseInfoBuffer (SenseInfoBufferLength bytes).
    Sense,
}

/// A notification the miniport sent (other than RequestComplete), or a port-driver action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notification {
    /// NextRequest.
    NextRequest,
    /// NextLuRequest.
    NextLuRequest {
        /// PathId.
        path: u8,
        /// TargetId.
        target: u8,
        /// Lun.
        lun: u8,
    },
    /// ResetDetected.
    ResetDetected,
    /// BusChangeDetected.
    BusChangeDetected {
        /// PathId.
        path: u8,
    },
    /// StorPortStateChangeDetected (StorPortNotification(StateChangeDetectedCall)).
    StateChangeDetected {
        /// ChangedEntity (`STATE_CHANGE_*`).
        entity: u32,
        /// TargetId of the address.
        target: u8,
        /// Lun of the address.
        lun: u8,
        /// The STOR_STATUS StorPort answered (BUSY while one is being processed).
        status: u32,
    },
    /// StorPortSetDeviceQueueDepth.
    QueueDepth {
        /// TargetId.
        target: u8,
        /// Lun.
        lun: u8,
        /// Depth.
        depth: u32,
    },
    /// StorPortCompleteRequest.
    CompleteRequest {
        /// PathId.
        path: u8,
        /// TargetId (0xFF: all).
        target: u8,
        /// Lun (0xFF: all).
        lun: u8,
        /// The status.
        status: u8,
    },
    /// The port driver called HwResetBus because a request timed out.
    TimeoutReset {
        /// PathId.
        path: u8,
        /// The request that timed out.
        ticket: u64,
    },
    /// StorPortLogError.
    LogError {
        /// ErrorCode.
        code: u32,
        /// UniqueId.
        unique: u32,
    },
}

/// An SRB_FUNCTION_WMI request, built as SCSI_WMI_REQUEST_BLOCK or as a STORAGE_REQUEST_BLOCK
/// with an SRBEX_DATA_WMI block, whichever SRB type the adapter uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WmiRequest {
    /// WMISubFunction: the IRP_MN_* WMI minor function.
    pub sub_function: u8,
    /// WMIFlags (SRB_WMI_FLAGS_ADAPTER_REQUEST for the adapter).
    pub flags: u8,
    /// The SRB's address (PathId, TargetId, Lun): 0, 0, 0 for the adapter, the logical unit's
    /// for a request about one.
    pub address: (u8, u8, u8),
    /// What DataPath points to: the GUID the request addresses (for IRP_MN_REGINFO, `None`:
    /// DataPath then carries the WMIREGISTER action, 0).
    pub data_path: Option<[u8; 16]>,
    /// The buffer's contents as WMI hands them over (the request WNODE).
    pub buffer: Vec<u8>,
    /// DataTransferLength; the simulator refuses one beyond `buffer` (StorPort never sends
    /// more than the buffer holds).
    pub data_transfer_length: u32,
}

/// Bytes of guard, filled with [`WMI_GUARD_BYTE`], after every WMI and IOCTL buffer: a miniport that
/// writes past DataTransferLength changes them.
pub const WMI_GUARD_LEN: usize = 64;
/// The guard's fill.
pub const WMI_GUARD_BYTE: u8 = 0xA5;

impl WmiRequest {
    /// An adapter request of `sub_function` over `buffer`, DataTransferLength its length.
    #[must_use]
    pub fn adapter(sub_function: u8, data_path: Option<[u8; 16]>, buffer: Vec<u8>) -> Self {
        Self {
            sub_function,
            flags: abi::SRB_WMI_FLAGS_ADAPTER_REQUEST,
            address: (0, 0, 0),
            data_path,
            data_transfer_length: u32::try_from(buffer.len()).unwrap_or(u32::MAX),
            buffer,
        }
    }

    /// A request of `sub_function` about the logical unit at `target`/`lun` (WMIFlags 0, the
    /// SRB addressed to the unit), as StorPort sends one for WMI blocks registered on the
    /// unit's PDO.
    #[must_use]
    pub fn logical_unit(
        target: u8,
        lun: u8,
        sub_function: u8,
        data_path: Option<[u8; 16]>,
        buffer: Vec<u8>,
    ) -> Self {
        Self {
            flags: 0,
            address: (0, target, lun),
            ..Self::adapter(sub_function, data_path, buffer)
        }
    }
}

/// An `IOCTL_SCSI_MINIPORT` request as StorPort hands it to the miniport: an
/// `SRB_FUNCTION_IO_CONTROL` SRB (SCSI_REQUEST_BLOCK, or STORAGE_REQUEST_BLOCK with a BTL8
/// address and no SRBEX_DATA blocks, whichever SRB type the adapter uses) whose `DataBuffer` is
/// the IOCTL's system buffer: the `SRB_IO_CONTROL` header, then the payload, followed here by
/// [`WMI_GUARD_LEN`] guard bytes of [`WMI_GUARD_BYTE`] so a write past `DataTransferLength`
/// shows. `SrbFlags` are DATA_IN | NO_QUEUE_FREEZE and `TimeOutValue` the header's `Timeout`.
///
/// The buffer is sent as given: the simulator does not check the header the way storport.sys
/// checks a user-mode caller's, so a scenario can play a kernel component that builds the SRB
/// itself, with any header and any `DataTransferLength` up to the buffer's size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoctlRequest {
    /// The system buffer's contents: `SRB_IO_CONTROL` and payload, as the caller wrote them.
    pub buffer: Vec<u8>,
    /// DataTransferLength; the simulator refuses one beyond `buffer` (StorPort never sends
    /// more than the buffer holds).
    pub data_transfer_length: u32,
}

impl IoctlRequest {
    /// A well-formed request: `HeaderLength` 28, `Length` the payload's, `ReturnCode` 0, and
    /// `DataTransferLength` `HeaderLength + Length`, as StorPort computes it.
    #[must_use]
    pub fn new(signature: [u8; 8], control_code: u32, timeout: u32, payload: &[u8]) -> Self {
        use zerocopy::IntoBytes;
        let header = abi::SrbIoControl {
            header_length: u32::try_from(size_of::<abi::SrbIoControl>()).unwrap_or(0),
            signature,
            timeout,
            control_code,
            return_code: 0,
            length: u32::try_from(payload.len()).unwrap_or(u32::MAX),
        };
        let mut buffer = header.as_bytes().to_vec();
        buffer.extend_from_slice(payload);
        Self {
            data_transfer_length: u32::try_from(buffer.len()).unwrap_or(u32::MAX),
            buffer,
        }
    }

    /// The header at the start of `bytes` (a request's buffer, or a completion's data), if
    /// `bytes` holds one.
    #[must_use]
    pub fn header(bytes: &[u8]) -> Option<abi::SrbIoControl> {
        use zerocopy::FromBytes;
        abi::SrbIoControl::read_from_prefix(bytes)
            .ok()
            .map(|(header, _)| header)
    }

    /// The same request with `f` applied to its header (for malformed requests); the buffer and
    /// `DataTransferLength` stay as they were.
    #[must_use]
    pub fn with_header(mut self, f: impl FnOnce(&mut abi::SrbIoControl)) -> Self {
        use zerocopy::IntoBytes;
        if let Some(mut header) = Self::header(&self.buffer) {
            f(&mut header);
            if let Some(prefix) = self.buffer.get_mut(..size_of::<abi::SrbIoControl>()) {
                prefix.copy_from_slice(header.as_bytes());
            }
        }
        self
    }
}

/// The byte HwFindAdapter's `Reserved3` points to: neither TRUE nor FALSE, so that a miniport
/// writing either is seen.
const RESERVED3_SENTINEL: u8 = 0x5A;

/// Why the simulator could not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimError {
    /// DriverEntry returned a failure status.
    DriverEntry(i32),
    /// DriverEntry returned success without calling StorPortInitialize.
    NotInitialized,
    /// HwFindAdapter returned something else than SP_RETURN_FOUND.
    FindAdapter(u32),
    /// HwInitialize returned FALSE.
    Initialize,
    /// The passive-initialization routine returned FALSE.
    PassiveInitialize,
    /// The adapter is not started.
    NotStarted,
    /// No simulated processor with this number.
    NoProcessor(u32),
    /// DMA memory exhausted.
    OutOfMemory {
        /// Bytes asked for.
        len: usize,
    },
    /// The CDB length is not supported by the SRB type in use.
    BadCdbLength(usize),
    /// The request did not complete in time.
    WaitTimedOut {
        /// Its ticket.
        ticket: u64,
    },
    /// Requests are outstanding.
    Busy {
        /// How many.
        outstanding: usize,
    },
    /// HwAdapterControl failed or is not supported for this control type.
    AdapterControl(u32),
    /// The host could not provide a resource (threads, address space).
    Resources,
    /// An IOCTL request whose DataTransferLength exceeds its buffer.
    IoctlLength {
        /// DataTransferLength asked for.
        length: u32,
        /// The buffer's size.
        buffer: usize,
    },
    /// The port driver's rescans and state changes did not settle in time.
    PnpTimedOut,
    /// The miniport has no HwStorUnitControl, or did not report this control type supported
    /// (StorPort would not call it).
    UnitControl(u32),
    /// A request StorPort would never build: its transfer exceeds the `MaximumTransferLength`
    /// the miniport reported, or its buffer spans more pages than `NumberOfPhysicalBreaks + 1`
    /// (the class driver splits such transfers; see [`Request::ignore_port_limits`]).
    BeyondTransferLimits {
        /// The transfer's length.
        length: u32,
        /// Pages its buffer spans.
        pages: u32,
        /// The reported `MaximumTransferLength`.
        max_transfer_length: u32,
        /// The reported `NumberOfPhysicalBreaks`.
        physical_breaks: u32,
    },
    /// A WMI request whose DataTransferLength exceeds its buffer.
    WmiLength {
        /// DataTransferLength asked for.
        length: u32,
        /// The buffer's size.
        buffer: usize,
    },
    /// The miniport's WMI registration (`IRP_MN_REGINFO_EX`) failed.
    WmiRegistration(RegistrationError),
    /// [`SimOptions::iommu`] on an arena without an IOMMU.
    NoIommu,
}

/// What StorPort's queues in front of the miniport did ([`Adapter::port_queue_figures`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortQueueFigures {
    /// Requests the miniport answered BUSY, each sent again after a hold-off.
    pub busy_retries: u64,
    /// StorPortBusy calls.
    pub busy_calls: u64,
    /// The most SCSI requests the miniport held at once.
    pub peak_in_miniport: u32,
    /// SCSI requests completed (RequestComplete) on the processor that submitted them.
    pub completed_on_submitter: u64,
    /// SCSI requests completed on another processor.
    pub completed_elsewhere: u64,
}

/// What HwFindAdapter set in PORT_CONFIGURATION_INFORMATION, read back.
#[derive(Clone, Copy, Debug)]
pub struct FoundAdapter {
    /// The structure as the miniport left it.
    pub config: abi::PortConfigurationInformation,
    /// Whether SRBs are STORAGE_REQUEST_BLOCKs.
    pub extended_srbs: bool,
    /// MSI-X messages granted.
    pub messages: u32,
    /// Whether the passive-initialization routine ran.
    pub passive_initialized: bool,
    /// STOR_PERF flags the miniport enabled.
    pub perf_flags: u32,
    /// Bytes of uncached extension the miniport got (0 if it asked for none).
    pub uncached_len: usize,
}

/// A disk found by the bus scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// TargetId.
    pub target: u8,
    /// Lun.
    pub lun: u8,
    /// Standard INQUIRY data.
    pub inquiry: Vec<u8>,
    /// Last LBA + 1.
    pub blocks: u64,
    /// Block size.
    pub block_size: u32,
}

/// The simulator's entry point.
pub struct Simulator;

impl Simulator {
    /// DriverEntry, PnP start (HwFindAdapter), interrupt connection, HwInitialize under the
    /// interrupt lock, and the passive-initialization routine if the miniport enabled one.
    ///
    /// With [`SimOptions::dump`], the crash-dump stack's version of all that ([`DumpPort`]):
    /// DriverEntry with NULL arguments and every routine at HIGH_LEVEL, no MSI-X, no processor
    /// or timer threads (requests run on the caller's thread, one at a time, completed by
    /// polling HwInterrupt), and no passive initialisation.
    ///
    /// # Errors
    /// [`SimError`] naming the step that failed.
    pub fn boot(options: SimOptions, platform: Platform) -> Result<Adapter, SimError> {
        let Platform {
            entry,
            pci,
            memory,
            interrupts,
        } = platform;
        Self::boot_entry(
            options,
            routine::DriverEntryRoutine::at(entry as usize),
            pci,
            memory,
            &interrupts,
        )
    }

    /// [`Simulator::boot`] of a loaded Windows image ([`crate::image::Image`]): its entry point
    /// is DriverEntry, and every routine it registers is called in the Windows x64 convention.
    ///
    /// # Errors
    /// As [`Simulator::boot`].
    pub fn boot_image(
        options: SimOptions,
        image: &crate::image::Image,
        pci: Arc<dyn PciFunction>,
        memory: Arc<dyn DmaArena>,
        interrupts: &InterruptLine,
    ) -> Result<Adapter, SimError> {
        let entry = routine::DriverEntryRoutine::at(image.entry());
        Self::boot_entry(options, entry, pci, memory, interrupts)
    }

    fn boot_entry(
        mut options: SimOptions,
        entry: Option<routine::DriverEntryRoutine>,
        pci: Arc<dyn PciFunction>,
        memory: Arc<dyn DmaArena>,
        interrupts: &InterruptLine,
    ) -> Result<Adapter, SimError> {
        let entry = entry.ok_or(SimError::DriverEntry(abi::STATUS_INVALID_PARAMETER))?;
        if options.iommu && !memory.iommu() {
            return Err(SimError::NoIommu);
        }
        let dump = options.dump.is_some();
        if dump {
            // The dump port connects no interrupt, let alone MSI-X messages.
            options.messages = Some(0);
        }
        let machine = Arc::new(Machine::new(options, pci, memory)?);
        let _ = interrupts.machine.set(Arc::downgrade(&machine));
        let mut adapter = Adapter {
            machine: Arc::clone(&machine),
            threads: Vec::new(),
            pnp: None,
            dump_port: std::sync::Mutex::new(()),
        };
        if !dump {
            adapter.start_threads()?;
        }
        let _attach = Attach::new(&machine, 0);
        let (driver_object, registry_path, irql): (*mut c_void, *mut c_void, u8) = if dump {
            // "The operating system passes NULL arguments to the miniport driver's
            // DriverEntry routine" in dump mode (Microsoft, boot-drive restrictions).
            (
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                locks::HIGH_LEVEL,
            )
        } else {
            (
                machine.driver_object.as_ptr().cast_mut().cast(),
                machine.registry_path.as_ptr().cast_mut().cast(),
                PASSIVE_LEVEL,
            )
        };
        // SAFETY: DriverEntry gets a zeroed, live DRIVER_OBJECT-sized buffer and a registry
        // path buffer, as the I/O manager would pass them (NULL and NULL in dump mode).
        let status = machine.call(CallContext::DriverEntry, irql, || unsafe {
            entry.call(driver_object, registry_path)
        });
        if status != abi::STATUS_SUCCESS {
            return Err(SimError::DriverEntry(status));
        }
        let hw = *machine.hw.get().ok_or(SimError::NotInitialized)?;
        adapter.start_device(&hw)?;
        if !dump {
            // The crash-dump stack has no PnP.
            adapter.start_pnp()?;
        }
        Ok(adapter)
    }
}

/// A started adapter.
pub struct Adapter {
    machine: Arc<Machine>,
    threads: Vec<JoinHandle<()>>,
    /// The PnP worker (rescans, state changes), stopped before everything else: its scans need
    /// the processors.
    pnp: Option<JoinHandle<()>>,
    /// Held while the dump port runs a request: it has one outstanding at a time.
    dump_port: std::sync::Mutex<()>,
}

impl Adapter {
    fn start_threads(&mut self) -> Result<(), SimError> {
        let mut senders = Vec::new();
        for processor in 0..self.machine.options.processors.max(1) {
            let (sender, receiver) = std::sync::mpsc::channel();
            let machine = Arc::clone(&self.machine);
            let handle = std::thread::Builder::new()
                .name(format!("sim-cpu{processor}"))
                .spawn(move || machine.processor_loop(processor, &receiver))
                .map_err(|_| SimError::Resources)?;
            senders.push(sender);
            self.threads.push(handle);
        }
        let _ = self.machine.processors.set(senders);
        let machine = Arc::clone(&self.machine);
        let handle = std::thread::Builder::new()
            .name("sim-timer".into())
            .spawn(move || {
                let _attach = Attach::new(&machine, 0);
                while !machine.stopping.load(Ordering::SeqCst) {
                    std::thread::sleep(machine.options.watchdog_period);
                    machine.watchdog_tick();
                }
            })
            .map_err(|_| SimError::Resources)?;
        self.threads.push(handle);
        Ok(())
    }

    #[expect(
        clippy::too_many_lines,
        reason = "PnP start in StorPort's order: configuration, HwFindAdapter, interrupts, HwInitialize, passive init"
    )]
    fn start_device(&self, hw: &abi::HwInitializationData) -> Result<(), SimError> {
        let machine = &self.machine;
        let extension_len = (hw.device_extension_size as usize).div_ceil(16).max(1);
        let _ = machine
            .extension
            .set(vec![0_u128; extension_len].into_boxed_slice());
        let extended = !machine.options.force_scsi_request_block
            && hw.srb_type_flags & abi::SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK != 0;
        machine.srb_extended.store(extended, Ordering::SeqCst);
        let ranges: Vec<abi::AccessRange> = machine
            .bars
            .iter()
            .map(|bar| abi::AccessRange {
                range_start: bar.physical,
                range_length: u32::try_from(bar.len).unwrap_or(u32::MAX),
                range_in_memory: u8::from(!bar.io_space),
                padding: [0; 3],
            })
            .collect();
        let mut ranges = ranges.into_boxed_slice();
        let mut config = abi::PortConfigurationInformation::new_zeroed();
        config.length = abi::PORT_CONFIGURATION_INFORMATION_SIZE;
        config.system_io_bus_number = machine.options.pci_location.0;
        config.adapter_interface_type = abi::PCI_BUS;
        config.interrupt_mode = abi::LATCHED;
        config.maximum_transfer_length = abi::SP_UNINITIALIZED_VALUE;
        config.number_of_physical_breaks = abi::SP_UNINITIALIZED_VALUE;
        config.dma_channel = abi::SP_UNINITIALIZED_VALUE;
        config.dma_port = abi::SP_UNINITIALIZED_VALUE;
        config.number_of_access_ranges = u32::try_from(ranges.len()).unwrap_or(0);
        config.access_ranges = ranges.as_mut_ptr().addr() as u64;
        config.number_of_buses = 1;
        config.initiator_bus_id = [0xFF; 8];
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
        config.slot_number = machine.options.pci_location.1;
        config.device_extension_size = hw.device_extension_size;
        config.specific_lu_extension_size = hw.specific_lu_extension_size;
        config.srb_extension_size = hw.srb_extension_size;
        config.dma64_bit_addresses = abi::SCSI_DMA64_SYSTEM_SUPPORTED;
        config.maximum_number_of_logical_units = 8;
        config.max_number_of_io = 1000;
        config.max_ios_per_lun = 1000;
        config.initial_lun_queue_depth = 20;
        config.bus_reset_hold_time = 4_000_000;
        let dump = machine.options.dump;
        if let Some(port) = dump {
            config.dump_mode = port.mode;
        }
        *lock(&machine.config) = config;
        let find_adapter = callback!(hw.hw_find_adapter as usize, machine::HwFindAdapterFn)
            .ok_or(SimError::FindAdapter(0))?;
        let extension = machine.extension_ptr();
        let mut config_c = Box::new(config);
        let config_ptr: *mut abi::PortConfigurationInformation = &raw mut *config_c;
        // Reserved3: a byte the miniport must leave as it is (see
        // `Violation::FindAdapterWroteReserved3`).
        let mut reserved3 = RESERVED3_SENTINEL;
        // The dump port passes "dump=1" (Microsoft, boot-drive restrictions) and calls every
        // routine above PASSIVE_LEVEL, find-adapter included.
        let (mut argument, irql) = if dump.is_some() {
            (*b"dump=1\0", locks::HIGH_LEVEL)
        } else {
            (*b"\0\0\0\0\0\0\0", PASSIVE_LEVEL)
        };
        // SAFETY: HwFindAdapter gets the zeroed device extension, a NUL-terminated argument
        // string and a PORT_CONFIGURATION_INFORMATION whose AccessRanges array outlives the call.
        let found = machine.call(CallContext::FindAdapter, irql, || unsafe {
            find_adapter.call(
                extension,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                argument.as_mut_ptr(),
                config_ptr.cast(),
                &raw mut reserved3,
            )
        });
        if reserved3 != RESERVED3_SENTINEL {
            machine.violate(Violation::FindAdapterWroteReserved3 { value: reserved3 });
        }
        *lock(&machine.config) = *config_c;
        drop(ranges);
        if found != abi::SP_RETURN_FOUND {
            return Err(SimError::FindAdapter(found));
        }
        let config = *config_c;
        // StorPort connects the message routine only when the function got MSI/MSI-X
        // messages; without them the line ISR (HwInterrupt) runs.
        let wiring = InterruptWiring {
            message_routine: if machine.message_count == 0 {
                0
            } else {
                config.hw_ms_interrupt_routine as usize
            },
            line_routine: hw.hw_interrupt as usize,
            per_message: config.interrupt_synchronization_mode
                == abi::INTERRUPT_SYNCHRONIZE_PER_MESSAGE,
        };
        if dump.is_some() {
            // Interrupts stay disconnected: the dump port polls HwInterrupt itself.
            return self.initialize_for_dump(hw);
        }
        let _ = machine.interrupts.set(wiring);
        if let Some(initialize) = callback!(hw.hw_initialize as usize, machine::HwBoolFn) {
            // SAFETY: HwInitialize gets the device extension, under the interrupt lock.
            let ok = machine
                .call_locked(LockId::Interrupt, CallContext::Initialize, || unsafe {
                    initialize.call(extension)
                })
                .unwrap_or(0);
            if ok == 0 {
                return Err(SimError::Initialize);
            }
        }
        machine.run_pending_dpcs();
        let passive = machine.state().passive_initialize;
        if let Some(routine) = passive.and_then(|routine| callback!(routine, machine::HwBoolFn)) {
            // SAFETY: the passive-initialization routine registered during HwFindAdapter gets
            // the device extension at PASSIVE_LEVEL.
            let ok = machine.call(CallContext::PassiveInitialize, PASSIVE_LEVEL, || unsafe {
                routine.call(extension)
            });
            if ok == 0 {
                return Err(SimError::PassiveInitialize);
            }
            machine.run_pending_dpcs();
        }
        // "After the HBA has been initialized but before the first I/O" (Microsoft,
        // HW_UNIT_CONTROL): the types StorPort will call HwStorUnitControl with.
        if hw.hw_unit_control != 0 {
            let supported = self.query_unit_control_types(abi::SCSI_UNIT_CONTROL_MAX)?;
            machine.state().unit_controls = Some(supported);
        }
        Ok(())
    }

    /// Sends `request` to the miniport on simulated processor `processor`.
    ///
    /// # Errors
    /// [`SimError::NoProcessor`], [`SimError::OutOfMemory`], [`SimError::BadCdbLength`].
    pub fn submit(&self, processor: u32, request: &Request) -> Result<Ticket, SimError> {
        if self.machine.options.dump.is_some() {
            // The dump port's I/O is synchronous: the request has completed (or failed) when
            // this returns, and `wait` picks its completion up.
            return self.run_dump_request(request);
        }
        self.machine.submit(processor, request).map(Ticket)
    }

    /// When `ticket` completed (the miniport's RequestComplete), if it has.
    #[must_use]
    pub fn completed_at(&self, ticket: Ticket) -> Option<std::time::Instant> {
        self.machine.state().completed_at.get(&ticket.0).copied()
    }

    /// Installs (or with `None` removes) a hook run on a simulated processor's thread each time
    /// that thread has released a spin lock, with the processor, the lock and the number of
    /// locks the thread still holds; the hook returns whether it stays installed. A scenario
    /// parks a thread there to act in the moment after a routine let go of a lock (before the
    /// routine's next statement).
    pub fn on_lock_released(&self, hook: Option<LockReleaseHook>) {
        *self
            .machine
            .lock_released
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = hook;
    }

    /// Where `ticket` is now, for a scenario's failure message: completed, waiting in the port
    /// queue, or held by the miniport (with its deadlines and whether it was answered BUSY).
    #[must_use]
    pub fn whereabouts(&self, ticket: Ticket) -> String {
        let now = std::time::Instant::now();
        let state = self.machine.state();
        if let Some(done) = state.completed.get(&ticket.0) {
            return format!("completed with SRB status {:#x}", done.srb_status);
        }
        if state.completed_at.contains_key(&ticket.0) {
            return "completed (its completion already collected)".to_owned();
        }
        if let Some(at) = state
            .port_queue
            .waiting
            .iter()
            .position(|waiting| waiting.record.ticket == ticket.0)
        {
            return format!(
                "waiting in the port queue at {at} of {} (StorPortBusy pending: {:?}, the \
                 miniport holds {} SCSI requests)",
                state.port_queue.waiting.len(),
                state.port_queue.busy,
                state.port_queue.total
            );
        }
        let held = state
            .outstanding
            .values()
            .find(|record| record.ticket == ticket.0);
        held.map_or_else(
            || "unknown to the port driver".to_owned(),
            |record| {
                format!(
                    "held by the miniport ({:?} to {:?}): deadline {:?} {}, reset deadline \
                     {:?}, answered BUSY before: {}; {} requests held in all",
                    record.kind,
                    record.address,
                    record.deadline.saturating_duration_since(now),
                    if record.deadline <= now {
                        "(passed)"
                    } else {
                        "ahead"
                    },
                    record
                        .reset_deadline
                        .map(|at| at.saturating_duration_since(now)),
                    record.retry_expiry.is_some(),
                    state.outstanding.len()
                )
            },
        )
    }

    /// Waits for a submitted request.
    ///
    /// # Errors
    /// [`SimError::WaitTimedOut`].
    pub fn wait(&self, ticket: Ticket, timeout: Duration) -> Result<Completion, SimError> {
        self.machine.wait(ticket.0, timeout)
    }

    /// Builds an SRB with `build` and hands it to simulated processor `processor` (HwBuildIo
    /// and HwStartIo run there), then waits for it (10 s).
    fn send_and_wait(
        &self,
        processor: u32,
        build: impl FnOnce(&Machine) -> Result<(usize, u64), SimError>,
    ) -> Result<Completion, SimError> {
        let sender = self.machine.processor(processor)?;
        let (srb, ticket) = build(&self.machine)?;
        sender
            .send(Work::Submit(srb))
            .map_err(|_| SimError::NotStarted)?;
        self.wait(Ticket(ticket), Duration::from_secs(10))
    }

    /// Sends an SRB_FUNCTION_WMI request on simulated processor `processor` and waits for it
    /// (10 s). The completion's `data` is the whole buffer followed by its
    /// [`WMI_GUARD_LEN`] guard bytes, whatever DataTransferLength the miniport set.
    ///
    /// # Errors
    /// [`SimError::WmiLength`], and as [`Adapter::execute`].
    pub fn wmi(&self, processor: u32, request: &WmiRequest) -> Result<Completion, SimError> {
        self.send_and_wait(processor, |machine| machine.build_wmi_srb(request))
    }

    /// Sends an `SRB_FUNCTION_IO_CONTROL` request (see [`IoctlRequest`]) on simulated
    /// processor `processor` and waits for it (10 s). The completion's `data` is the whole
    /// buffer followed by its [`WMI_GUARD_LEN`] guard bytes, whatever DataTransferLength the
    /// miniport set; [`IoctlRequest::header`] reads its `ReturnCode`.
    ///
    /// # Errors
    /// [`SimError::IoctlLength`], and as [`Adapter::execute`].
    pub fn ioctl(&self, processor: u32, request: &IoctlRequest) -> Result<Completion, SimError> {
        self.send_and_wait(processor, |machine| machine.build_ioctl_srb(request))
    }

    /// The BARs as the simulated platform assigned them: (BAR index, bus address, I/O space).
    #[must_use]
    pub fn bars(&self) -> Vec<(u8, u64, bool)> {
        self.machine
            .bars
            .iter()
            .map(|bar| (bar.bar, bar.physical, bar.io_space))
            .collect()
    }

    /// Submits and waits (10 s).
    ///
    /// # Errors
    /// As [`Adapter::submit`] and [`Adapter::wait`].
    pub fn execute(&self, processor: u32, request: &Request) -> Result<Completion, SimError> {
        let ticket = self.submit(processor, request)?;
        self.wait(ticket, Duration::from_secs(10))
    }

    /// The port driver's bus scan: INQUIRY LUN 0 of each target, REPORT LUNS, INQUIRY and READ
    /// CAPACITY(10) of each LUN reported. Returns the direct-access disks found, which become
    /// the disks Windows knows ([`Adapter::pnp`]).
    ///
    /// # Errors
    /// As [`Adapter::execute`].
    pub fn scan_bus(&self) -> Result<Vec<Disk>, SimError> {
        let disks = pnp::scan(
            &|request| self.execute(0, request),
            self.machine.scan_range(),
        )?;
        self.machine.pnp.record_scan(&disks);
        Ok(disks)
    }

    /// The port driver's view of the bus: the disks Windows knows and what the rescans that
    /// `BusChangeDetected` and `StorPortStateChangeDetected` asked for found.
    #[must_use]
    pub fn pnp(&self) -> PnpView {
        self.machine.pnp.view()
    }

    /// Waits until `until` holds for the PnP view.
    ///
    /// # Errors
    /// [`SimError::PnpTimedOut`] if it does not within `timeout`.
    pub fn wait_pnp(
        &self,
        timeout: Duration,
        until: impl Fn(&PnpView) -> bool,
    ) -> Result<PnpView, SimError> {
        self.machine.pnp.wait(timeout, until)
    }

    /// Holds the port driver's PnP work (rescans, state changes) back while `paused`, as a
    /// busy PnP manager would: notifications are still accepted and queued.
    pub fn pause_pnp(&self, paused: bool) {
        self.machine.pnp.pause(paused);
    }

    fn start_pnp(&mut self) -> Result<(), SimError> {
        let machine = Arc::clone(&self.machine);
        let handle = std::thread::Builder::new()
            .name("sim-pnp".into())
            .spawn(move || pnp::worker(&machine))
            .map_err(|_| SimError::Resources)?;
        self.pnp = Some(handle);
        Ok(())
    }

    /// Stops the PnP worker after its current rescan (whose commands then complete).
    fn stop_pnp(&mut self) {
        self.machine.pnp.stop();
        if let Some(handle) = self.pnp.take() {
            let _ = handle.join();
        }
    }

    /// HwAdapterControl(ScsiStopAdapter) then (ScsiRestartAdapter), each under the interrupt
    /// lock, after checking both are supported. No requests may be outstanding.
    ///
    /// # Errors
    /// [`SimError::Busy`], [`SimError::AdapterControl`].
    pub fn power_cycle(&self) -> Result<(), SimError> {
        let outstanding = self.machine.state().outstanding.len();
        if outstanding > 0 {
            return Err(SimError::Busy { outstanding });
        }
        let supported = self.supported_control_types()?;
        for control in [abi::SCSI_STOP_ADAPTER, abi::SCSI_RESTART_ADAPTER] {
            if !supported.get(control as usize).copied().unwrap_or(false) {
                return Err(SimError::AdapterControl(control));
            }
            let status = self.adapter_control(control, std::ptr::null_mut())?;
            if status != abi::SCSI_ADAPTER_CONTROL_SUCCESS {
                return Err(SimError::AdapterControl(control));
            }
        }
        Ok(())
    }

    /// HwAdapterControl(ScsiStopAdapter) under the interrupt lock, whatever is outstanding;
    /// returns the control status.
    ///
    /// # Errors
    /// [`SimError::AdapterControl`] if the miniport has no HwAdapterControl.
    pub fn stop_adapter(&self) -> Result<u32, SimError> {
        self.adapter_control(abi::SCSI_STOP_ADAPTER, std::ptr::null_mut())
    }

    /// HwAdapterControl(ScsiRestartAdapter) under the interrupt lock; returns the control
    /// status.
    ///
    /// # Errors
    /// [`SimError::AdapterControl`] if the miniport has no HwAdapterControl.
    pub fn restart_adapter(&self) -> Result<u32, SimError> {
        self.adapter_control(abi::SCSI_RESTART_ADAPTER, std::ptr::null_mut())
    }

    /// A power transition as StorPort makes it under load (S3 or S4 and back): new requests
    /// are held in the port driver, the outstanding ones are given `drain` to complete, then
    /// ScsiStopAdapter and ScsiRestartAdapter, then the held requests are sent. Returns how
    /// many requests were still outstanding when the adapter was stopped (the miniport must
    /// complete those itself).
    ///
    /// # Errors
    /// [`SimError::AdapterControl`] if either control fails.
    pub fn power_cycle_under_load(&self, drain: Duration) -> Result<usize, SimError> {
        let machine = &self.machine;
        *machine
            .paused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Vec::new());
        let deadline = std::time::Instant::now() + drain;
        let mut state = machine.state();
        let left = loop {
            let held = machine
                .paused
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .map_or(0, Vec::len);
            let left = state.outstanding.len().saturating_sub(held);
            let now = std::time::Instant::now();
            if left == 0 || now >= deadline {
                break left;
            }
            state = machine
                .completion
                .wait_timeout(state, (deadline - now).min(Duration::from_millis(5)))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        };
        drop(state);
        let stopped = self.stop_adapter();
        let restarted = self.restart_adapter();
        let held = machine
            .paused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_default();
        if let Some(processors) = machine.processors.get() {
            for (processor, srb) in held {
                if let Some(sender) = processors.get(processor as usize) {
                    let _ = sender.send(Work::Submit(srb));
                }
            }
        }
        for (control, status) in [
            (abi::SCSI_STOP_ADAPTER, stopped?),
            (abi::SCSI_RESTART_ADAPTER, restarted?),
        ] {
            if status != abi::SCSI_ADAPTER_CONTROL_SUCCESS {
                return Err(SimError::AdapterControl(control));
            }
        }
        Ok(left)
    }

    /// ScsiQuerySupportedControlTypes: which control types the miniport supports.
    ///
    /// # Errors
    /// [`SimError::AdapterControl`] if the miniport has no HwAdapterControl.
    pub fn supported_control_types(&self) -> Result<Vec<bool>, SimError> {
        // SCSI_SUPPORTED_CONTROL_TYPE_LIST: ULONG MaxControlType; BOOLEAN SupportedTypeList[].
        let mut list = [0_u32; 4];
        list[0] = abi::SCSI_ADAPTER_CONTROL_MAX;
        self.adapter_control(
            abi::SCSI_QUERY_SUPPORTED_CONTROL_TYPES,
            list.as_mut_ptr().cast(),
        )?;
        let bytes: Vec<u8> = list.iter().flat_map(|word| word.to_le_bytes()).collect();
        Ok(bytes[4..4 + abi::SCSI_ADAPTER_CONTROL_MAX as usize]
            .iter()
            .map(|&byte| byte != 0)
            .collect())
    }

    fn adapter_control(&self, control: u32, parameters: *mut c_void) -> Result<u32, SimError> {
        let machine = &self.machine;
        let hw = machine.hw.get().ok_or(SimError::NotStarted)?;
        let routine = callback!(hw.hw_adapter_control as usize, machine::HwAdapterControlFn)
            .ok_or(SimError::AdapterControl(control))?;
        let _attach = Attach::new(machine, 0);
        let extension = machine.extension_ptr();
        let run = || {
            // SAFETY: HwAdapterControl gets the device extension and a parameter block of the
            // type the control code defines (or none).
            unsafe { routine.call(extension, control, parameters) }
        };
        let status = if control == abi::SCSI_QUERY_SUPPORTED_CONTROL_TYPES {
            machine.call(CallContext::AdapterControl, PASSIVE_LEVEL, run)
        } else {
            machine
                .call_locked(LockId::Interrupt, CallContext::AdapterControl, run)
                .ok_or(SimError::AdapterControl(control))?
        };
        machine.run_pending_dpcs();
        Ok(status)
    }

    /// HwStorUnitControl(ScsiQuerySupportedUnitControlTypes) with a list of `max` entries, at
    /// PASSIVE_LEVEL with no lock, as StorPort calls it once after initialisation (with
    /// [`abi::SCSI_UNIT_CONTROL_MAX`]). Returns the entries the miniport set. A write past the
    /// list's last entry is a [`Violation::UnitControlListOverrun`].
    ///
    /// # Errors
    /// [`SimError::UnitControl`] if the miniport has no HwStorUnitControl or fails the query.
    pub fn query_unit_control_types(&self, max: u32) -> Result<Vec<bool>, SimError> {
        /// Bytes after the list that must stay untouched, and their pattern.
        const GUARD: usize = 64;
        const PATTERN: u8 = 0xA5;
        let entries = max as usize;
        // SCSI_SUPPORTED_CONTROL_TYPE_LIST: ULONG MaxControlType; BOOLEAN SupportedTypeList[],
        // every entry FALSE as the port driver initialises it, then the guard. u32 words keep
        // the header aligned.
        let mut bytes = vec![0_u8; (4 + entries + GUARD).next_multiple_of(4)];
        bytes[..4].copy_from_slice(&max.to_le_bytes());
        bytes[4 + entries..4 + entries + GUARD].fill(PATTERN);
        let mut words: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|chunk| u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect();
        let status = self.unit_control_raw(
            abi::SCSI_QUERY_SUPPORTED_UNIT_CONTROL_TYPES,
            words.as_mut_ptr().cast(),
        )?;
        let bytes: Vec<u8> = words.iter().flat_map(|word| word.to_le_bytes()).collect();
        if bytes[4 + entries..4 + entries + GUARD]
            .iter()
            .any(|&byte| byte != PATTERN)
        {
            self.machine
                .violate(Violation::UnitControlListOverrun { max });
        }
        if status != abi::SCSI_UNIT_CONTROL_SUCCESS {
            return Err(SimError::UnitControl(
                abi::SCSI_QUERY_SUPPORTED_UNIT_CONTROL_TYPES,
            ));
        }
        Ok(bytes[4..4 + entries]
            .iter()
            .map(|&byte| byte != 0)
            .collect())
    }

    /// The unit control types the miniport reported at start (empty without HwStorUnitControl).
    #[must_use]
    pub fn supported_unit_controls(&self) -> Vec<bool> {
        self.machine
            .state()
            .unit_controls
            .clone()
            .unwrap_or_default()
    }

    /// HwStorUnitControl(`control`) for `address`, at PASSIVE_LEVEL with no lock, whether or not
    /// the miniport reported the type (a contract probe: StorPort itself only calls reported
    /// types). Success for a type not reported is a
    /// [`Violation::UnsupportedUnitControlSucceeded`]. Returns the control status.
    ///
    /// # Errors
    /// [`SimError::UnitControl`] if the miniport has no HwStorUnitControl.
    pub fn unit_control(&self, control: u32, address: abi::StorAddrBtl8) -> Result<u32, SimError> {
        let mut address = address;
        let status = self.unit_control_raw(control, (&raw mut address).cast())?;
        let reported = self
            .supported_unit_controls()
            .get(control as usize)
            .copied()
            .unwrap_or(false);
        if status == abi::SCSI_UNIT_CONTROL_SUCCESS && !reported {
            self.machine
                .violate(Violation::UnsupportedUnitControlSucceeded { control });
        }
        Ok(status)
    }

    /// `control` for `target`/`lun` as StorPort sends it: only if the miniport reported the type.
    fn unit_control_reported(&self, control: u32, target: u8, lun: u8) -> Result<u32, SimError> {
        if !self
            .supported_unit_controls()
            .get(control as usize)
            .copied()
            .unwrap_or(false)
        {
            return Err(SimError::UnitControl(control));
        }
        self.unit_control(control, abi::StorAddrBtl8::new(0, target, lun))
    }

    /// PnP surprise-removes the disk at `target`/`lun` (its PDO goes, whatever the device still
    /// has): StorPort calls HwStorUnitControl(ScsiUnitSurpriseRemoval) with the unit's address.
    /// Requests already sent stay the miniport's to complete. Returns the control status.
    ///
    /// # Errors
    /// [`SimError::UnitControl`] if the miniport did not report ScsiUnitSurpriseRemoval.
    pub fn surprise_remove_unit(&self, target: u8, lun: u8) -> Result<u32, SimError> {
        self.machine.pnp.unit_removed(target, lun);
        self.unit_control_reported(abi::SCSI_UNIT_SURPRISE_REMOVAL, target, lun)
    }

    /// PnP removes the disk at `target`/`lun` (an orderly removal): ScsiUnitRemove.
    ///
    /// # Errors
    /// [`SimError::UnitControl`] if the miniport did not report ScsiUnitRemove.
    pub fn remove_unit(&self, target: u8, lun: u8) -> Result<u32, SimError> {
        self.machine.pnp.unit_removed(target, lun);
        self.unit_control_reported(abi::SCSI_UNIT_REMOVE, target, lun)
    }

    /// PnP starts the unit at `target`/`lun` (IRP_MN_START_DEVICE of its PDO): ScsiUnitStart.
    ///
    /// # Errors
    /// [`SimError::UnitControl`] if the miniport did not report ScsiUnitStart.
    pub fn start_unit(&self, target: u8, lun: u8) -> Result<u32, SimError> {
        self.unit_control_reported(abi::SCSI_UNIT_START, target, lun)
    }

    fn unit_control_raw(&self, control: u32, parameters: *mut c_void) -> Result<u32, SimError> {
        let machine = &self.machine;
        let hw = machine.hw.get().ok_or(SimError::NotStarted)?;
        let routine = callback!(hw.hw_unit_control as usize, machine::HwAdapterControlFn)
            .ok_or(SimError::UnitControl(control))?;
        let _attach = Attach::new(machine, 0);
        let extension = machine.extension_ptr();
        // SAFETY: HwStorUnitControl gets the device extension and the parameter block the
        // control type defines, live for the call; every type at PASSIVE_LEVEL with no
        // StorPort lock held (Microsoft, HW_UNIT_CONTROL).
        let status = machine.call(CallContext::UnitControl, PASSIVE_LEVEL, || unsafe {
            routine.call(extension, control, parameters)
        });
        machine.run_pending_dpcs();
        Ok(status)
    }

    /// The contract violations recorded so far.
    #[must_use]
    pub fn violations(&self) -> Vec<Violation> {
        self.machine.violations()
    }

    /// The notifications recorded so far.
    #[must_use]
    pub fn notifications(&self) -> Vec<Notification> {
        self.machine.notifications()
    }

    /// The port driver's log (StorPortDebugPrint output, resets, violations).
    #[must_use]
    pub fn log(&self) -> Vec<String> {
        self.machine.log_lines()
    }

    /// The miniport's HW_INITIALIZATION_DATA as StorPortInitialize received it.
    #[must_use]
    pub fn hw_initialization_data(&self) -> Option<abi::HwInitializationData> {
        self.machine.hw.get().copied()
    }

    /// The device's hardware key ([`SimOptions::adapter_key`]), shared with the options the
    /// adapter booted with.
    #[must_use]
    pub fn adapter_key(&self) -> AdapterKey {
        self.machine.options.adapter_key.clone()
    }

    /// What HwFindAdapter configured.
    #[must_use]
    pub fn found_adapter(&self) -> FoundAdapter {
        let state = self.machine.state();
        FoundAdapter {
            config: *lock(&self.machine.config),
            extended_srbs: self.machine.srb_extended.load(Ordering::SeqCst),
            messages: self.machine.message_count,
            passive_initialized: state.passive_initialize.is_some(),
            perf_flags: state.perf_flags,
            uncached_len: state.uncached.map_or(0, |(_, len)| len),
        }
    }

    /// Requests outstanding now.
    #[must_use]
    pub fn outstanding(&self) -> usize {
        let state = self.machine.state();
        state.outstanding.len() + state.port_queue.waiting.len()
    }

    /// The port queue's figures: requests the miniport answered BUSY (each sent again),
    /// StorPortBusy calls, and the most SCSI requests the miniport held at once.
    #[must_use]
    pub fn port_queue_figures(&self) -> PortQueueFigures {
        let state = self.machine.state();
        PortQueueFigures {
            busy_retries: state.port_queue.busy_retries,
            busy_calls: state.port_queue.busy_calls,
            peak_in_miniport: state.port_queue.peak_total,
            completed_on_submitter: state.completed_on_submitter,
            completed_elsewhere: state.completed_elsewhere,
        }
    }

    /// Interrupts raised while no routine was connected, or for a message the adapter was not
    /// granted (which no MSI-X table entry carries).
    #[must_use]
    pub fn lost_interrupts(&self) -> u64 {
        self.machine.lost_interrupts.load(Ordering::Relaxed)
    }

    /// The device extension's address (for checking what exports receive).
    #[must_use]
    pub fn device_extension(&self) -> usize {
        self.machine.extension_address()
    }

    /// The device extension as the pointer the miniport gets (null before PnP start).
    #[must_use]
    pub fn device_extension_ptr(&self) -> *mut c_void {
        self.machine.extension_ptr()
    }

    /// The base of the PROT_NONE range register cookies point into.
    #[must_use]
    pub fn register_cookie_base(&self) -> usize {
        self.machine.reservation_base()
    }

    /// Stops the adapter: every outstanding SRB becomes a violation, the processors stop, and
    /// all violations are returned.
    #[must_use]
    pub fn shutdown(mut self) -> Vec<Violation> {
        self.stop_pnp();
        let state = self.machine.state();
        let outstanding: Vec<u64> = state
            .outstanding
            .values()
            .chain(
                state
                    .port_queue
                    .waiting
                    .iter()
                    .map(|waiting| &waiting.record),
            )
            .map(|record| record.ticket)
            .collect();
        drop(state);
        for ticket in outstanding {
            self.machine
                .violate(Violation::OutstandingAtShutdown { ticket });
        }
        self.stop();
        self.machine.violations()
    }

    fn stop(&mut self) {
        self.stop_pnp();
        self.machine.stopping.store(true, Ordering::SeqCst);
        if let Some(processors) = self.machine.processors.get() {
            for sender in processors {
                let _ = sender.send(Work::Stop);
            }
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Adapter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
