//! A virtio-scsi PCI device for the StorPort simulator: QEMU's register layout, rust-vmm
//! `virtio-queue` rings on the device side, a SCSI target, and fault injection.
//!
//! The register file is virtio-core's [`FakeVirtioPci`] (QEMU's capability layout and common
//! configuration semantics); this module adds what a real device does behind it: a write to
//! the notification region runs that queue, a status write of 0 drops every queue and pending
//! completion, requests are executed by the [`target`] and completed on the used ring, and the
//! queue's MSI-X vector is raised through an [`InterruptSink`] when EVENT_IDX says so.
//!
//! Everything the driver put in memory is untrusted: the device reaches it only through
//! vm-memory, and a chain that breaks the protocol makes the device report
//! `DEVICE_NEEDS_RESET` (as QEMU's `virtio_error` does) instead of panicking. The device also
//! holds the driver to the limits it advertises ([`DeviceOptions`]); every breach is recorded as
//! a [`DeviceViolation`] for the tests to assert on ([`VirtioScsiDevice::violations`]).
//!
//! Locks: one per queue, one for the pending (delayed) completions, taken one at a time except
//! queue -> pending when a delayed request is filed. Interrupts are raised with no lock held,
//! because the simulator runs the miniport's ISR inside [`InterruptSink::raise`] and the ISR
//! reads device registers.
// `deny`, not `forbid`: the device itself has no unsafe code, but its tests play the driver
// and describe DMA memory with `DmaMemory::new`, one expected exception in `tests.rs`.
#![deny(unsafe_code)]

pub mod hostile;
mod iothread;
pub mod memory;
pub mod reservations;
mod ring;
pub mod target;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::mem::offset_of;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use virtio_core::fake::pci::{FakeRegions, FakeVirtioPci};
use virtio_core::features::Features;
use virtio_core::hal::RegisterIo;
use virtio_core::pci::{DeviceStatus, Isr, VIRTIO_MSI_NO_VECTOR, VirtioPciCommonCfg as Common};
use virtio_core::scsi::Config as ScsiConfig;
use virtio_core::scsi::{
    AnResp, CmdResp, ControlType, Event, EventType, Lun as WireLun, ResetReason, Response,
    TmfSubtype, queue_index,
};
use zerocopy::IntoBytes;

pub use memory::{DeviceMemory, IommuFault, PhysicalMemory};
pub use reservations::{Nexus, PrStatus, ReservationType};
pub use ring::Guest as PackedGuest;
use ring::{Buffer, Chain, DeviceRing, QueueSetup};
pub use target::Lun;

/// What completing one job put on the used ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Published {
    /// Nothing (a job of an earlier epoch, or memory the device could not write).
    Nothing,
    /// A used element for the job's chain.
    Element,
    /// A bogus used element (the `CorruptUsedId` fault), which always interrupts.
    Bogus,
}

/// What draining a request queue's available ring did.
#[derive(Clone, Copy, Debug, Default)]
struct Batch {
    /// Chains popped.
    popped: u32,
    /// Used elements published.
    completed: u32,
    /// One of them was a bogus element (which always interrupts).
    bogus: bool,
    /// The protocol break that stopped the drain.
    error: Option<ChainError>,
}

impl Batch {
    /// Adds what a later drain of the same batch did.
    fn absorb(&mut self, later: Self) {
        self.popped += later.popped;
        self.completed += later.completed;
        self.bogus |= later.bogus;
        self.error = self.error.or(later.error);
    }
}

/// Where the simulator delivers the device's interrupts (to the miniport's message ISR).
pub trait InterruptSink: Send + Sync {
    /// Signals MSI-X message `msix_vector`, or the line interrupt (INTx) when it is
    /// `VIRTIO_MSI_NO_VECTOR`. Called with no device lock held; the callee may read and write
    /// device registers.
    fn raise(&self, msix_vector: u16);
}

/// When requests complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionMode {
    /// In the notifying thread, before its register write returns.
    Inline,
    /// On a worker thread. With `shuffle`, each request waits a random time up to `max_delay`
    /// and requests due together complete in random order; without, each waits exactly
    /// `max_delay`, so completion order is submission order.
    Delayed {
        /// The longest (or, without `shuffle`, the exact) delay.
        max_delay: Duration,
        /// Randomise delays and completion order.
        shuffle: bool,
    },
    /// As QEMU with an iothread serving the queue (see the `iothread` module): a kick only wakes the
    /// queue's thread and returns; the thread drains the available ring in batches with
    /// notifications off, completes each batch with at most one interrupt (as EVENT_IDX's
    /// `used_event` allows), and keeps polling the ring for `poll_rounds` turns of the
    /// processor after the last batch before it turns notifications back on and sleeps.
    IoThread {
        /// Empty polls (each yielding the processor once) before the thread sleeps again.
        poll_rounds: u32,
    },
}

impl CompletionMode {
    /// QEMU with an iothread as it ships: `poll_rounds` is chosen so that the poll window
    /// outlasts one completion round trip of the simulated driver (interrupt, DPC, the
    /// harness refilling the queue), as QEMU's adaptive `poll-max-ns` grows to do for a busy
    /// queue.
    pub const QEMU_IOTHREAD: Self = Self::IoThread { poll_rounds: 64 };
}

/// How many queues [`QueueSizeOverrides`] can size apart from [`DeviceOptions::queue_size`].
pub const MAX_QUEUE_SIZE_OVERRIDES: usize = 8;

/// Queues whose maximum size differs from [`DeviceOptions::queue_size`]: up to
/// [`MAX_QUEUE_SIZE_OVERRIDES`] `(queue index, size)` pairs, in a fixed array so that
/// [`DeviceOptions`] stays `Copy`.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueSizeOverrides {
    entries: [(u16, u16); MAX_QUEUE_SIZE_OVERRIDES],
    len: usize,
}

impl std::fmt::Debug for QueueSizeOverrides {
    /// The overrides as `{queue: size, ...}`, without the unused entries.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.entries
                    .get(..self.len)
                    .unwrap_or_default()
                    .iter()
                    .map(|(queue, size)| (queue, size)),
            )
            .finish()
    }
}

impl QueueSizeOverrides {
    /// No queue sized apart.
    pub const NONE: Self = Self {
        entries: [(0, 0); MAX_QUEUE_SIZE_OVERRIDES],
        len: 0,
    };

    /// These overrides with queue `index` (0 controlq, 1 eventq, 2 and up request queues)
    /// offering `size` entries at most (0: the queue is unavailable, as `queue_size` 0 says).
    /// A later call for the same index replaces the earlier one.
    ///
    /// # Panics
    /// When more than [`MAX_QUEUE_SIZE_OVERRIDES`] distinct queues are sized apart: test
    /// support, so a scenario that asks for more fails loudly instead of losing a size.
    #[must_use]
    pub const fn with(mut self, index: u16, size: u16) -> Self {
        let mut at = 0;
        while at < self.len {
            if self.entries[at].0 == index {
                self.entries[at].1 = size;
                return self;
            }
            at += 1;
        }
        assert!(
            self.len < MAX_QUEUE_SIZE_OVERRIDES,
            "more queues sized apart than QueueSizeOverrides holds"
        );
        self.entries[self.len] = (index, size);
        self.len += 1;
        self
    }

    /// The size queue `index` was given, if it was sized apart.
    #[must_use]
    pub fn get(&self, index: u16) -> Option<u16> {
        self.entries
            .get(..self.len)
            .unwrap_or_default()
            .iter()
            .find(|(queue, _)| *queue == index)
            .map(|(_, size)| *size)
    }
}

/// The device's shape and behaviour.
///
/// Features: the device always offers `VIRTIO_F_VERSION_1` (it is a modern device only) and
/// offers each optional feature it implements as its field says. It never offers what it cannot
/// do: `VIRTIO_F_RING_PACKED` (the rings are rust-vmm's split virtqueues; a packed-ring device
/// is issue 17's), `VIRTIO_SCSI_F_INOUT` (bidirectional commands are answered `FAILURE`),
/// `VIRTIO_SCSI_F_T10_PI` (no protection information), `VIRTIO_F_ACCESS_PLATFORM` (no IOMMU:
/// bus addresses are physical addresses), `VIRTIO_F_IN_ORDER`, `VIRTIO_F_NOTIFICATION_DATA`,
/// `VIRTIO_F_RING_RESET` and `VIRTIO_F_SR_IOV`. [`Self::offered_features`] is the set.
///
/// Limits: the device enforces what its configuration says at the time of each request
/// (`seg_max`, `max_sectors`, and with [`Self::enforce_cmd_per_lun`] `cmd_per_lun`, which start
/// as these fields), plus the queue size and the negotiated `VIRTIO_F_INDIRECT_DESC`; a driver that breaks one is recorded as a
/// [`DeviceViolation`] (see there for how each is counted and what the device then does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "each bool is an independent switch of the simulated host (a feature it offers, a \
              rule it enforces), set by name in scenarios; no combination is a hidden state"
)]
pub struct DeviceOptions {
    /// Request queues (`num_queues`); the device has this many plus controlq and eventq.
    pub request_queues: u16,
    /// Maximum size of every queue not in [`Self::queue_size_overrides`] (a power of two).
    pub queue_size: u16,
    /// Queues whose maximum size differs from [`Self::queue_size`].
    pub queue_size_overrides: QueueSizeOverrides,
    /// `seg_max`.
    pub seg_max: u32,
    /// `max_sectors` (0: no limit is advertised or enforced).
    pub max_sectors: u32,
    /// `cmd_per_lun`.
    pub cmd_per_lun: u32,
    /// Enforce `cmd_per_lun` ([`DeviceViolation::CommandsOverCmdPerLun`]). On by default: the
    /// miniport reports `cmd_per_lun` as `MaxIOsPerLun` and StorPort (the simulator's port
    /// queue) never gives it more for one unit; off only for device unit tests that play a
    /// driver which does not throttle.
    pub enforce_cmd_per_lun: bool,
    /// `max_target`; targets above it are answered BAD_TARGET.
    pub max_target: u16,
    /// `max_lun`.
    pub max_lun: u32,
    /// `sense_size` after every reset (QEMU's default: 96). The driver may write another; the
    /// device always uses the current value.
    pub sense_size: u32,
    /// `cdb_size` after every reset (QEMU's default: 32). The driver may write another; the
    /// device always uses the current value.
    pub cdb_size: u32,
    /// When requests complete.
    pub completion: CompletionMode,
    /// Seed of the delay and shuffle generator, so a failing run can be replayed.
    pub seed: u64,
    /// Offer `VIRTIO_F_INDIRECT_DESC` (on by default, as QEMU does). Without it an indirect
    /// descriptor is a [`DeviceViolation::IndirectWithoutFeature`].
    pub indirect_desc: bool,
    /// Offer `VIRTIO_F_EVENT_IDX` (on by default, as QEMU does).
    pub event_idx: bool,
    /// Offer `VIRTIO_F_RING_PACKED` (off by default, as QEMU's `packed=off`). A driver that
    /// accepts it gets packed rings, served by virtio-core's spec-written packed device
    /// ([`virtio_core::fake::packed_device`]) instead of rust-vmm's split queue.
    pub packed: bool,
    /// Offer `VIRTIO_F_ANY_LAYOUT` (a legacy bit that `VERSION_1` implies; off by default, as
    /// before). The device accepts any framing either way: it reads requests as byte streams.
    pub any_layout: bool,
    /// Offer `VIRTIO_SCSI_F_HOTPLUG` (events are posted with [`VirtioScsiDevice::post_event`]).
    pub hotplug: bool,
    /// Offer `VIRTIO_SCSI_F_CHANGE`: [`VirtioScsiDevice::resize_lun`] posts a
    /// `VIRTIO_SCSI_T_PARAM_CHANGE` event.
    pub change: bool,
    /// The I_T nexus this device's commands come from: the simulated node's initiator port,
    /// which owns its registrations, reservations and unit attentions on every LUN. `None`
    /// takes a fresh one ([`Nexus::fresh`]), so every device is a distinct initiator.
    pub nexus: Option<Nexus>,
    /// MSI-X table entries (QEMU's `vectors`); `None` is QEMU's default, one per virtqueue
    /// plus one for configuration changes (`request_queues + 3`).
    pub msix_vectors: Option<u16>,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        Self {
            request_queues: 4,
            queue_size: 256,
            queue_size_overrides: QueueSizeOverrides::NONE,
            seg_max: 254,
            max_sectors: 0xFFFF,
            cmd_per_lun: 128,
            enforce_cmd_per_lun: true,
            max_target: 255,
            max_lun: 16_383,
            sense_size: virtio_core::scsi::SENSE_SIZE as u32,
            cdb_size: virtio_core::scsi::CDB_SIZE as u32,
            completion: CompletionMode::Inline,
            seed: 0x5eed,
            indirect_desc: true,
            event_idx: true,
            packed: false,
            any_layout: false,
            hotplug: false,
            change: false,
            nexus: None,
            msix_vectors: None,
        }
    }
}

impl DeviceOptions {
    /// The feature bits the device offers.
    #[must_use]
    pub fn offered_features(&self) -> Features {
        let mut features = Features::VERSION_1;
        for (on, feature) in [
            (self.indirect_desc, Features::INDIRECT_DESC),
            (self.event_idx, Features::EVENT_IDX),
            (self.packed, Features::RING_PACKED),
            (self.any_layout, Features::ANY_LAYOUT),
            (self.hotplug, Features::SCSI_HOTPLUG),
            (self.change, Features::SCSI_CHANGE),
        ] {
            if on {
                features |= feature;
            }
        }
        features
    }

    /// The maximum size of queue `index` (0 controlq, 1 eventq, 2 and up request queues).
    #[must_use]
    pub fn queue_max_size(&self, index: u16) -> u16 {
        self.queue_size_overrides
            .get(index)
            .unwrap_or(self.queue_size)
    }
}

/// A driver's breach of the protocol or of a limit the device advertised, recorded by the
/// device ([`VirtioScsiDevice::violations`]) instead of being served silently.
///
/// Request-queue limits are counted per command, after the request header
/// (`19 + cdb_size` bytes) and the response header (`12 + sense_size` bytes), with the values in
/// the device configuration when the command is popped:
/// - segments: a descriptor is a data segment if any of its bytes lie past the request header
///   (device-readable part) or past the response header (device-writable part), counting the
///   descriptors of an indirect table and never the descriptor that points to the table. So a
///   descriptor that carries both the header and the first data bytes (allowed with
///   `VERSION_1`) counts once, as a data segment, and a header-only descriptor never counts.
///   QEMU does not check `seg_max` itself; it advertises `queue size - 2` so that header,
///   response and `seg_max` data segments fill exactly one queue-size chain, which is the
///   separate [`Self::ChainLongerThanQueue`] rule here.
/// - sectors: the larger data area of the chain (data-out bytes, or data-in bytes), rounded
///   up to 512-byte sectors, against `max_sectors` (0: unlimited). The buffers, not the CDB:
///   they are what the driver asks the device to move.
/// - commands per LUN: commands the device holds for one (target, LUN) at once, the new one
///   included: counted when popped, released just before the device publishes its used
///   element (and forgotten on a reset), so a driver that counts a command until it sees the
///   completion never sees more than the device does.
///
/// What the device does with the offender: a command over `seg_max` or `max_sectors` is not
/// executed and completes with `VIRTIO_SCSI_S_FAILURE`; one over `cmd_per_lun` is not executed
/// and completes with response OK and SCSI status TASK SET FULL, as a logical unit whose task
/// set is full answers (SAM-5 5.3.1). The protocol breaks (an indirect descriptor without the
/// feature, a chain longer than the queue, a malformed chain) make the device set
/// `DEVICE_NEEDS_RESET` and stop processing queues until reset, as QEMU's `virtio_error` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceViolation {
    /// A command with more data segments than `seg_max` (virtio 1.x section 5.6.4).
    SegmentsOverSegMax {
        /// The virtqueue.
        queue: u16,
        /// Data segments in the chain.
        segments: u32,
        /// `seg_max` in the configuration.
        seg_max: u32,
    },
    /// A command moving more than `max_sectors` 512-byte sectors.
    TransferOverMaxSectors {
        /// The virtqueue.
        queue: u16,
        /// Sectors of the larger data area of the chain (rounded up).
        sectors: u64,
        /// `max_sectors` in the configuration.
        max_sectors: u32,
    },
    /// More commands held by the device for one LUN than `cmd_per_lun`.
    CommandsOverCmdPerLun {
        /// The virtqueue of the command that went over.
        queue: u16,
        /// Its target.
        target: u8,
        /// Its LUN.
        lun: u16,
        /// Commands held for the LUN with it.
        outstanding: u32,
        /// `cmd_per_lun` in the configuration.
        cmd_per_lun: u32,
    },
    /// A descriptor chain (the descriptors of an indirect table included) longer than the
    /// queue size the driver set (virtio 1.x section 2.7.5.3.1, 2.7.13.1).
    ChainLongerThanQueue {
        /// The virtqueue.
        queue: u16,
        /// Buffer descriptors in the chain.
        descriptors: u32,
        /// The queue's size.
        queue_size: u16,
    },
    /// An indirect descriptor although `VIRTIO_F_INDIRECT_DESC` was not negotiated (virtio 1.x
    /// section 2.7.5.3.1).
    IndirectWithoutFeature {
        /// The virtqueue.
        queue: u16,
        /// The head of the chain carrying it.
        head: u16,
    },
    /// Any other break of the virtqueue protocol in a chain or a queue's addresses.
    MalformedChain {
        /// The virtqueue.
        queue: u16,
        /// What is wrong.
        error: ChainError,
    },
}

/// What the fault hook is told about one command, before it executes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    /// Virtqueue index (2 and up).
    pub queue: u16,
    /// Target addressed.
    pub target: u8,
    /// LUN addressed.
    pub lun: u16,
    /// The request's tag (`id`).
    pub tag: u64,
    /// The CDB (`cdb_size` bytes).
    pub cdb: Vec<u8>,
}

/// What the device does with a command, as the fault hook decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Execute and complete it as usual.
    Normal,
    /// Execute it after this delay (on the worker thread).
    Delay(Duration),
    /// Complete it without executing, with this virtio-scsi response.
    Respond(Response),
    /// Complete it without executing, with response OK and this SCSI status and sense.
    ScsiStatus {
        /// SCSI status byte (RESERVATION CONFLICT 0x18, CHECK CONDITION 0x02, ...).
        status: u8,
        /// Sense bytes (truncated to `sense_size`).
        sense: Vec<u8>,
    },
    /// Never complete it (until a TMF or a device reset takes it back): a timeout.
    Drop,
    /// Execute it, but report this used length.
    CorruptUsedLen(u32),
    /// Do not complete it; publish a used element with this id instead.
    CorruptUsedId(u16),
}

/// The fault hook: called for every command on a request queue. It must not access the
/// device's registers (it runs under the queue's lock).
pub type FaultHook = Arc<dyn Fn(&RequestInfo) -> FaultAction + Send + Sync>;

/// What the TMF hook is told about one task management function, before it is performed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmfInfo {
    /// The raw `subtype` (a [`TmfSubtype`] value, or not).
    pub subtype: u32,
    /// Target addressed.
    pub target: u8,
    /// LUN addressed.
    pub lun: u16,
    /// The `tag` field.
    pub tag: u64,
}

/// What the device does with a task management function, as the TMF hook decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TmfAction {
    /// Perform it and answer.
    Normal,
    /// Answer with this response without performing it (FUNCTION REJECTED, FAILURE, ...).
    Respond(Response),
    /// Never answer it (the chain stays with the device until a reset).
    Ignore,
    /// Answer FUNCTION COMPLETE without taking back any command: the commands it covers go on
    /// as if it had not come (a device is not obliged to return commands it no longer holds).
    AnswerWithoutCancelling,
}

/// The TMF hook: called for every task management function on the controlq.
pub type TmfHook = Arc<dyn Fn(&TmfInfo) -> TmfAction + Send + Sync>;

/// One task management function the device received, and its answer (`None`: not answered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmfRecord {
    /// The function.
    pub info: TmfInfo,
    /// The response written, if any.
    pub response: Option<Response>,
}

/// One write the device executed (with the journal on, [`VirtioScsiDevice::journal_writes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteRecord {
    /// Target written.
    pub target: u8,
    /// LUN written.
    pub lun: u16,
    /// The request's tag.
    pub tag: u64,
    /// The first 8 bytes of the data written (scenarios put a stamp there).
    pub stamp: [u8; 8],
    /// When the data reached the LUN.
    pub at: Instant,
    /// It executed on a queue where the hostile mode had lied about an id it did not hold
    /// (since the last reset): the driver may have taken that lie for this command's
    /// completion and failed its SRB before the device executed it, which no driver can tell
    /// from a real completion.
    pub after_a_lie: bool,
}

/// What [`VirtioScsiDevice::hot_unplug`] did.
#[derive(Debug)]
pub struct Unplugged {
    /// The unit removed (its medium, for checks).
    pub unit: Lun,
    /// The `REMOVED` event reached an eventq buffer.
    pub event_posted: bool,
    /// Commands the device still held for the unit, completed with `ABORTED`.
    pub cancelled: usize,
}

/// Counters of one virtqueue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Chains popped from the available ring.
    pub requests: u64,
    /// Notifications (kicks) received.
    pub notifications: u64,
    /// Interrupts raised.
    pub interrupts: u64,
    /// Task management functions handled (controlq only).
    pub tmfs: u64,
}

/// Counters of the whole device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Per virtqueue, by index.
    pub queues: Vec<QueueStats>,
    /// Times the device set `DEVICE_NEEDS_RESET`.
    pub device_errors: u64,
    /// Device resets (status writes of 0).
    pub resets: u64,
    /// Requests currently held back (delayed or dropped).
    pub pending: usize,
    /// Interrupts not raised because [`VirtioScsiDevice::suppress_interrupts`] was on.
    pub suppressed_interrupts: u64,
}

#[derive(Debug, Default)]
struct QueueCounters {
    requests: AtomicU64,
    notifications: AtomicU64,
    interrupts: AtomicU64,
    tmfs: AtomicU64,
}

/// The device side of one virtqueue.
#[derive(Default)]
struct QueueState {
    /// The ring (rust-vmm's split queue or virtio-core's packed device), once the driver
    /// enabled it and set DRIVER_OK.
    queue: Option<DeviceRing>,
    /// The eventq had no buffer for an event: the next one carries EVENTS_MISSED.
    events_missed: bool,
}

/// How a command ends, before it is written to the driver's buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reply {
    response: Response,
    status: u8,
    sense: Vec<u8>,
    data_in: Vec<u8>,
    resid: u32,
}

impl Reply {
    fn response(response: Response, resid: u32) -> Self {
        Self {
            response,
            status: 0,
            sense: Vec::new(),
            data_in: Vec::new(),
            resid,
        }
    }
}

/// A command popped from a request queue, parsed, waiting to execute and complete.
struct Job {
    epoch: u64,
    queue: u16,
    chain: Chain,
    /// Bytes of response header the chain's writable part starts with (`12 + sense_size`).
    resp_size: usize,
    work: Work,
    used_len: Option<u32>,
    corrupt_id: Option<u16>,
    /// Who it is for, for TMFs and the write journal: (target, lun, tag).
    nexus: (u8, u16, u64),
    /// Its count against its LUN's `cmd_per_lun` (`None`: no valid LUN address).
    slot: Option<LunSlot>,
    /// When it completes.
    when: When,
}

/// When a job completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    /// While the queue is drained.
    Now,
    /// On the worker thread, at this instant.
    At(Instant),
    /// Only when a TMF or a reset takes it back.
    Never,
}

/// What completing a [`Job`] involves.
enum Work {
    /// Run the CDB on a LUN.
    Execute {
        lun: Lun,
        /// The command as the LUN received it (for PREEMPT AND ABORT).
        task: reservations::Task,
        cdb: Vec<u8>,
        data_out: Vec<u8>,
        luns: Vec<u16>,
        data_in_capacity: u32,
        data_out_len: u32,
    },
    /// The answer is already known.
    Reply(Reply),
}

impl Work {
    fn run(self) -> Reply {
        match self {
            Self::Reply(reply) => reply,
            Self::Execute {
                lun,
                task,
                cdb,
                data_out,
                luns,
                data_in_capacity,
                data_out_len,
            } => {
                let Some(outcome) = lun.execute_task(task, &cdb, &data_out, &luns) else {
                    // Another nexus's PREEMPT AND ABORT aborted it while it was held: it
                    // completes as a TMF abort would, without touching the medium.
                    return Reply::response(Response::Aborted, data_in_capacity.max(data_out_len));
                };
                let transferred_in = outcome.data_in.len().min(data_in_capacity as usize) as u32;
                let resid = if data_out_len > 0 {
                    let consumed = if outcome.status == target::GOOD {
                        data_out.len() as u32
                    } else {
                        0
                    };
                    data_out_len - consumed.min(data_out_len)
                } else {
                    data_in_capacity - transferred_in
                };
                Reply {
                    response: Response::Ok,
                    status: outcome.status,
                    sense: outcome.sense,
                    data_in: outcome.data_in,
                    resid,
                }
            }
        }
    }
}

/// A job held back, and when it is due (`None`: dropped until a TMF or reset).
struct Held {
    due: Option<Instant>,
    job: Job,
}

/// Delayed and dropped jobs, shared with the worker thread.
struct PendingSet {
    state: Mutex<PendingState>,
    changed: Condvar,
}

struct PendingState {
    jobs: Vec<Held>,
    /// Jobs the worker took and has not finished yet (for `quiesce`).
    in_progress: usize,
    /// Shuffle jobs that fall due together.
    shuffle: bool,
    shutdown: bool,
    rng: SplitMix64,
}

/// SplitMix64: a tiny deterministic generator for delays and shuffles.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

impl PendingSet {
    fn lock(&self) -> MutexGuard<'_, PendingState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Shared {
    options: DeviceOptions,
    /// The I_T nexus of this device's commands.
    nexus: Nexus,
    memory: PhysicalMemory,
    /// Memory at bus addresses: through the IOMMU when the memory has one.
    guest: Arc<DeviceMemory>,
    regs: FakeVirtioPci,
    regions: FakeRegions,
    sink: Arc<dyn InterruptSink>,
    queues: Vec<Mutex<QueueState>>,
    counters: Vec<QueueCounters>,
    luns: RwLock<BTreeMap<u8, BTreeMap<u16, Lun>>>,
    fault: RwLock<Option<FaultHook>>,
    tmf_hook: RwLock<Option<TmfHook>>,
    tmf_log: Mutex<Vec<TmfRecord>>,
    /// Executed writes, while `journaling`.
    journal: Mutex<Vec<WriteRecord>>,
    journaling: AtomicBool,
    /// Queue interrupts are not raised (lost interrupts).
    suppressed: AtomicBool,
    suppressed_interrupts: AtomicU64,
    pending: Arc<PendingSet>,
    /// Incremented by every reset; jobs of an older epoch are discarded, never completed.
    epoch: AtomicU64,
    /// Set with DEVICE_NEEDS_RESET: no queue is processed until the driver resets.
    broken: AtomicBool,
    device_errors: AtomicU64,
    resets: AtomicU64,
    /// Event interrupts are held back (see [`VirtioScsiDevice::hold_event_interrupts`]).
    event_interrupts_held: AtomicBool,
    /// Commands held per LUN, for `cmd_per_lun`.
    outstanding: Arc<Mutex<Outstanding>>,
    /// The driver's breaches, in the order found.
    violations: Mutex<Vec<DeviceViolation>>,
    /// Queues on which the hostile mode's own lies may have spoiled chains the device had not
    /// read yet, until the next reset: lies that moved the used position past the available one
    /// (packed ring: the device's next honest used descriptor lands on a slot the driver made
    /// available and the device has not read), and lies about ids the device did not hold (one
    /// may name a chain made available after the lie's own take, which the driver then
    /// completes and gives back). A malformed chain found on such a queue is the lie's
    /// consequence, not the driver's violation.
    lied_ahead: Mutex<std::collections::BTreeSet<u16>>,
    /// An event interrupt was held back and is due when they are released.
    event_interrupt_pending: AtomicBool,
    /// The hostile mode ([`hostile`]): request and control chains wait for the caller to
    /// answer them, with whatever values it chooses.
    hostile: AtomicBool,
    /// Control chains taken in the hostile mode, with the epoch they were taken in.
    hostile_control: Mutex<Vec<(u64, Chain)>>,
    /// The completion worker, joined when the device is dropped.
    worker: Mutex<Option<thread::JoinHandle<()>>>,
    /// The request queues' iothreads ([`CompletionMode::IoThread`]); empty otherwise.
    iothreads: iothread::Doorbells,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.pending.lock().shutdown = true;
        self.pending.changed.notify_all();
        self.iothreads.shut_down();
        // The worker ends at once; waiting for it leaves no thread of a dropped device running
        // (LeakSanitizer, in the fuzz targets, reports a live thread's registrations). The
        // worker may hold the last handle itself, briefly, and must not wait for itself.
        let worker = self
            .worker
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(worker) = worker
            && worker.thread().id() != thread::current().id()
        {
            let _ = worker.join();
        }
    }
}

/// The virtio-scsi PCI device. A cheap handle: clones share the device.
#[derive(Clone)]
pub struct VirtioScsiDevice {
    shared: Arc<Shared>,
}

/// Bytes of `virtio_scsi_cmd_req` before the CDB (lun, tag, task_attr, prio, crn).
const CMD_REQ_HEADER: usize = 19;
/// Bytes of `virtio_scsi_cmd_resp` before the sense data.
const CMD_RESP_HEADER: usize = 12;
/// Bytes of the device-readable part of a TMF request.
const TMF_REQ_SIZE: usize = 24;
/// Bytes of the device-readable part of an AN request.
const AN_REQ_SIZE: usize = 16;

/// Why a chain (or a queue) breaks the protocol (the device then needs a reset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// A readable descriptor after a writable one (virtio 1.x section 2.7.4.2).
    ReadableAfterWritable,
    /// A descriptor, a descriptor table or a ring outside guest memory.
    Unmapped,
    /// The request or response header does not fit the chain.
    TooShort,
    /// A `next` index outside its descriptor table (virtio 1.x section 2.7.5).
    NextOutOfRange {
        /// The index.
        next: u16,
        /// Entries in the table (the queue size, or the indirect table's length).
        table_len: u16,
    },
    /// A chain that comes back to a descriptor it already went through.
    Loop,
    /// An indirect descriptor inside an indirect table (virtio 1.x section 2.7.5.3.1).
    IndirectInIndirect,
    /// An indirect descriptor with `VIRTQ_DESC_F_NEXT` too (virtio 1.x section 2.7.5.3.1).
    IndirectWithNext,
    /// An indirect table length that is 0, not a multiple of 16, or over 65535 entries.
    IndirectTableLength {
        /// The descriptor's `len`.
        len: u32,
    },
    /// An indirect descriptor without `VIRTIO_F_INDIRECT_DESC` negotiated.
    IndirectNotNegotiated {
        /// The head of the chain.
        head: u16,
    },
    /// More buffer descriptors than the queue size.
    LongerThanQueue {
        /// Buffer descriptors in the chain.
        descriptors: u32,
        /// The queue's size.
        queue_size: u16,
    },
    /// A packed chain continues (NEXT) into a descriptor that is not available (virtio 1.x
    /// section 2.8.6).
    NextNotAvailable {
        /// The ring position.
        position: u16,
        /// Its flags.
        flags: u16,
    },
    /// Packed driver event suppression flags that are reserved (3), or DESC without
    /// `VIRTIO_F_EVENT_IDX` (virtio 1.x section 2.8.10).
    EventFlags {
        /// The flags.
        flags: u16,
    },
    /// Not the driver's doing: a fault raised by the test ([`VirtioScsiDevice::raise_needs_reset`]).
    Internal,
}

impl ChainError {
    /// The violation this is on `queue`; `None` for a fault that is not the driver's.
    fn violation(self, queue: u16) -> Option<DeviceViolation> {
        Some(match self {
            Self::Internal => return None,
            Self::IndirectNotNegotiated { head } => {
                DeviceViolation::IndirectWithoutFeature { queue, head }
            }
            Self::LongerThanQueue {
                descriptors,
                queue_size,
            } => DeviceViolation::ChainLongerThanQueue {
                queue,
                descriptors,
                queue_size,
            },
            error => DeviceViolation::MalformedChain { queue, error },
        })
    }
}

/// Commands the device holds per LUN (for `cmd_per_lun`), in the current epoch.
#[derive(Debug, Default)]
struct Outstanding {
    epoch: u64,
    per_lun: BTreeMap<(u8, u16), u32>,
}

/// One command counted against its LUN until it is dropped: just before its used element is
/// published, or when the device forgets it.
struct LunSlot {
    table: Arc<Mutex<Outstanding>>,
    epoch: u64,
    key: (u8, u16),
}

impl Drop for LunSlot {
    fn drop(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        // A slot of an earlier epoch was forgotten by the reset that ended it.
        if table.epoch != self.epoch {
            return;
        }
        if let Some(count) = table.per_lun.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                table.per_lun.remove(&self.key);
            }
        }
    }
}

impl VirtioScsiDevice {
    /// A device over `memory`, interrupting through `sink`. Starts a worker thread for delayed
    /// completions; it ends when the last handle is dropped.
    #[must_use]
    pub fn new(
        options: DeviceOptions,
        memory: PhysicalMemory,
        sink: Arc<dyn InterruptSink>,
    ) -> Self {
        let mut config = Vec::new();
        for value in [
            u32::from(options.request_queues),
            options.seg_max,
            options.max_sectors,
            options.cmd_per_lun,
            size_of::<Event>() as u32, // event_info_size
            options.sense_size,
            options.cdb_size,
        ] {
            config.extend_from_slice(&value.to_le_bytes());
        }
        config.extend_from_slice(&0u16.to_le_bytes()); // max_channel
        config.extend_from_slice(&options.max_target.to_le_bytes());
        config.extend_from_slice(&options.max_lun.to_le_bytes());
        let queue_count = options.request_queues + 2;
        let max_sizes: Vec<u16> = (0..queue_count)
            .map(|index| options.queue_max_size(index))
            .collect();
        let queue_count = usize::from(queue_count);
        let regs = FakeVirtioPci::scsi(options.request_queues)
            .msix_table_size(Some(
                options.msix_vectors.unwrap_or(options.request_queues + 3),
            ))
            .device_features(options.offered_features())
            .queues(&max_sizes)
            .device_config(&config, &[20..24, 24..28])
            .build();
        let pending = Arc::new(PendingSet {
            state: Mutex::new(PendingState {
                jobs: Vec::new(),
                in_progress: 0,
                shuffle: matches!(
                    options.completion,
                    CompletionMode::Delayed { shuffle: true, .. }
                ),
                shutdown: false,
                rng: SplitMix64(options.seed),
            }),
            changed: Condvar::new(),
        });
        let shared = Arc::new(Shared {
            options,
            nexus: options.nexus.unwrap_or_else(Nexus::fresh),
            guest: Arc::new(memory.device_memory().clone()),
            memory,
            regs,
            regions: FakeRegions::qemu(),
            sink,
            queues: (0..queue_count).map(|_| Mutex::default()).collect(),
            counters: (0..queue_count).map(|_| QueueCounters::default()).collect(),
            luns: RwLock::new(BTreeMap::new()),
            fault: RwLock::new(None),
            tmf_hook: RwLock::new(None),
            tmf_log: Mutex::new(Vec::new()),
            journal: Mutex::new(Vec::new()),
            journaling: AtomicBool::new(false),
            suppressed: AtomicBool::new(false),
            suppressed_interrupts: AtomicU64::new(0),
            pending: Arc::clone(&pending),
            epoch: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            device_errors: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            event_interrupts_held: AtomicBool::new(false),
            event_interrupt_pending: AtomicBool::new(false),
            outstanding: Arc::default(),
            violations: Mutex::new(Vec::new()),
            lied_ahead: Mutex::new(std::collections::BTreeSet::new()),
            hostile: AtomicBool::new(false),
            hostile_control: Mutex::new(Vec::new()),
            worker: Mutex::new(None),
            iothreads: iothread::Doorbells::new(&options, queue_count),
        });
        iothread::start(&shared);
        let weak = Arc::downgrade(&shared);
        // A worker that cannot start leaves delayed requests pending; `quiesce` would then wait
        // forever, so report it loudly in the test log instead.
        match thread::Builder::new()
            .name("virtio-scsi-completions".into())
            .spawn(move || completion_worker(&pending, &weak))
        {
            Ok(worker) => {
                *shared.worker.lock().unwrap_or_else(PoisonError::into_inner) = Some(worker);
            }
            Err(error) => {
                eprintln!("virtio-scsi device: completion worker did not start: {error}");
            }
        }
        Self { shared }
    }

    /// The I_T nexus this device's commands come from.
    #[must_use]
    pub fn nexus(&self) -> Nexus {
        self.shared.nexus
    }

    /// PCI configuration space (header and capability list).
    #[must_use]
    pub fn pci_config(&self) -> &FakeVirtioPci {
        &self.shared.regs
    }

    /// The register file, for tests that inspect what the driver did (violations, status
    /// writes).
    #[must_use]
    pub fn registers(&self) -> &FakeVirtioPci {
        &self.shared.regs
    }

    /// The memory the device reaches.
    #[must_use]
    pub fn memory(&self) -> &PhysicalMemory {
        &self.shared.memory
    }

    /// Length of BAR `bar`, `None` if unmapped.
    #[must_use]
    pub fn bar_len(&self, bar: u8) -> Option<u64> {
        self.shared.regs.bar_len(bar)
    }

    /// Reads `width` (1, 2, 4 or 8) bytes of BAR `bar` at `offset`; all ones for other widths.
    #[must_use]
    pub fn mmio_read(&self, bar: u8, offset: u64, width: u8) -> u64 {
        let regs = &self.shared.regs;
        match width {
            1 => regs.read8(bar, offset).into(),
            2 => regs.read16(bar, offset).into(),
            4 => regs.read32(bar, offset).into(),
            8 => regs.read64(bar, offset),
            _ => u64::MAX,
        }
    }

    /// Writes `width` bytes of `value` to BAR `bar` at `offset`: registers are updated, a
    /// notification runs its queue (completing inline requests before returning), and a status
    /// write of 0 resets the device.
    pub fn mmio_write(&self, bar: u8, offset: u64, width: u8, value: u64) {
        let shared = &self.shared;
        let notify = shared.regions.notify;
        if bar == notify.bar
            && let Some(relative) = offset.checked_sub(u64::from(notify.offset))
            && relative < u64::from(notify.length)
        {
            // QEMU takes the queue from the address, not the value written.
            let queue = relative / u64::from(shared.regions.notify_off_multiplier.max(1));
            if let Ok(queue) = u16::try_from(queue)
                && usize::from(queue) < shared.queues.len()
            {
                shared.notified(queue);
            }
            return;
        }
        let regs = &shared.regs;
        match width {
            1 => regs.write8(bar, offset, value as u8),
            2 => regs.write16(bar, offset, value as u16),
            4 => regs.write32(bar, offset, value as u32),
            8 => regs.write64(bar, offset, value),
            _ => {}
        }
        let status = u64::from(shared.regions.common.offset) + Common::DEVICE_STATUS;
        if bar == shared.regions.common.bar && offset == status && width == 1 && value == 0 {
            shared.reset();
        }
    }

    /// Adds (or replaces) LUN `lun` of target `target`.
    ///
    /// # Errors
    /// The LUN number is above the virtio-scsi maximum (16383).
    pub fn add_lun(
        &self,
        target: u8,
        lun: u16,
        unit: Lun,
    ) -> Result<(), virtio_core::scsi::LunError> {
        WireLun::new(target, lun)?;
        self.shared
            .luns
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(target)
            .or_default()
            .insert(lun, unit);
        Ok(())
    }

    /// Removes a LUN, returning it. Commands already parsed still complete on it.
    pub fn remove_lun(&self, target: u8, lun: u16) -> Option<Lun> {
        let mut luns = self
            .shared
            .luns
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let units = luns.get_mut(&target)?;
        let removed = units.remove(&lun);
        if units.is_empty() {
            luns.remove(&target);
        }
        removed
    }

    /// Installs (or with `None` removes) the fault hook.
    pub fn set_fault_hook(&self, hook: Option<FaultHook>) {
        *self
            .shared
            .fault
            .write()
            .unwrap_or_else(PoisonError::into_inner) = hook;
    }

    /// Installs (or with `None` removes) the TMF hook.
    pub fn set_tmf_hook(&self, hook: Option<TmfHook>) {
        *self
            .shared
            .tmf_hook
            .write()
            .unwrap_or_else(PoisonError::into_inner) = hook;
    }

    /// Every task management function received so far, in order.
    #[must_use]
    pub fn tmf_log(&self) -> Vec<TmfRecord> {
        self.shared
            .tmf_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Starts (or stops) recording every write the device executes, with the time it did.
    pub fn journal_writes(&self, on: bool) {
        self.shared.journaling.store(on, Ordering::SeqCst);
    }

    /// The writes recorded since the journal was turned on.
    #[must_use]
    pub fn write_journal(&self) -> Vec<WriteRecord> {
        self.shared
            .journal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// With `on`, the device completes requests and answers functions without interrupting
    /// (used elements are published, EVENT_IDX is updated, no interrupt is raised): lost
    /// interrupts. Configuration interrupts are still raised.
    pub fn suppress_interrupts(&self, on: bool) {
        self.shared.suppressed.store(on, Ordering::SeqCst);
    }

    /// Sets `DEVICE_NEEDS_RESET` and raises the configuration interrupt, as a device that hit
    /// an internal error does (QEMU's `virtio_error`); queues are not processed until reset.
    pub fn raise_needs_reset(&self) {
        let vector = self.shared.device_error(None, ChainError::Internal);
        self.shared.raise([vector]);
    }

    /// Every breach of the protocol or of the device's limits by the driver, in the order
    /// found, since the device was created (resets do not forget them).
    #[must_use]
    pub fn violations(&self) -> Vec<DeviceViolation> {
        self.shared
            .violations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The device's counters.
    #[must_use]
    pub fn stats(&self) -> DeviceStats {
        let shared = &self.shared;
        DeviceStats {
            queues: shared
                .counters
                .iter()
                .map(|c| QueueStats {
                    requests: c.requests.load(Ordering::Relaxed),
                    notifications: c.notifications.load(Ordering::Relaxed),
                    interrupts: c.interrupts.load(Ordering::Relaxed),
                    tmfs: c.tmfs.load(Ordering::Relaxed),
                })
                .collect(),
            device_errors: shared.device_errors.load(Ordering::Relaxed),
            resets: shared.resets.load(Ordering::Relaxed),
            pending: shared.pending.lock().jobs.len(),
            suppressed_interrupts: shared.suppressed_interrupts.load(Ordering::Relaxed),
        }
    }

    /// Waits until every delayed completion has been delivered and every iothread is asleep
    /// (dropped requests stay pending: they wait for a TMF or a reset).
    pub fn quiesce(&self) {
        self.shared.iothreads.wait_idle();
        let pending = &self.shared.pending;
        let mut state = pending.lock();
        while state.in_progress > 0 || state.jobs.iter().any(|held| held.due.is_some()) {
            state = pending
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Writes `event` into the next eventq buffer and interrupts. Returns `false` if the driver
    /// posted no buffer (the next event then carries EVENTS_MISSED) or the eventq is not live.
    #[must_use]
    pub fn post_event(&self, event: Event) -> bool {
        self.shared.post_event(event)
    }

    /// Writes `bytes` (garbage, as a faulty device might) into the next eventq buffer and
    /// reports `used_len` for it, then interrupts. Returns `false` if no buffer was posted.
    #[must_use]
    pub fn post_raw_event(&self, bytes: &[u8], used_len: u32) -> bool {
        self.shared.post_to_eventq(bytes, Some(used_len))
    }

    /// Hot-plugs `unit` as `target`/`lun` (QEMU's `virtio_scsi_hotplug`): the LUN is added,
    /// then, if the driver accepted `VIRTIO_SCSI_F_HOTPLUG`, a `TRANSPORT_RESET` / `RESCAN`
    /// event is posted. Returns whether the event reached an eventq buffer.
    ///
    /// # Errors
    /// The LUN number is above the virtio-scsi maximum (16383).
    pub fn hot_plug(
        &self,
        target: u8,
        lun: u16,
        unit: Lun,
    ) -> Result<bool, virtio_core::scsi::LunError> {
        self.add_lun(target, lun, unit)?;
        Ok(self.shared.post_if_negotiated(
            Features::SCSI_HOTPLUG,
            EventType::TransportReset,
            WireLun::new(target, lun)?,
            ResetReason::Rescan.raw(),
        ))
    }

    /// Hot-unplugs `target`/`lun` (QEMU's `virtio_scsi_hotunplug`): with
    /// `VIRTIO_SCSI_F_HOTPLUG` accepted a `TRANSPORT_RESET` / `REMOVED` event is posted first;
    /// then the LUN is removed, and its commands still held by the device (delayed or dropped)
    /// are completed with `VIRTIO_SCSI_S_ABORTED`, as QEMU's request purge does
    /// (`virtio_scsi_request_cancelled` outside a reset). Commands already executing finish on
    /// the unit; commands that arrive afterwards are answered for an absent unit (LOGICAL UNIT
    /// NOT SUPPORTED, or `BAD_TARGET` once the target has no LUN left). `None` if there is no
    /// such LUN.
    #[must_use]
    pub fn hot_unplug(&self, target: u8, lun: u16) -> Option<Unplugged> {
        let address = WireLun::new(target, lun).ok()?;
        let event_posted = self.shared.post_if_negotiated(
            Features::SCSI_HOTPLUG,
            EventType::TransportReset,
            address,
            ResetReason::Removed.raw(),
        );
        let unit = self.remove_lun(target, lun)?;
        let cancelled = self.shared.cancel(Response::Aborted, |job| {
            job.nexus.0 == target && job.nexus.1 == lun
        });
        Some(Unplugged {
            unit,
            event_posted,
            cancelled,
        })
    }

    /// Changes the capacity of `target`/`lun` to `blocks` (QEMU's `block_resize`): with
    /// `VIRTIO_SCSI_F_CHANGE` accepted, a `PARAM_CHANGE` event with CAPACITY DATA HAS CHANGED
    /// (ASC 0x2A, ASCQ 0x09) is posted, as QEMU's `virtio_scsi_change` does. Returns whether
    /// the event reached an eventq buffer; `None` if there is no such LUN or it cannot be
    /// resized.
    #[must_use]
    pub fn resize_lun(&self, target: u8, lun: u16, blocks: u64) -> Option<bool> {
        let address = WireLun::new(target, lun).ok()?;
        let unit = self
            .shared
            .luns
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&target)
            .and_then(|units| units.get(&lun))
            .cloned()?;
        unit.resize(blocks).ok()?;
        Some(self.shared.post_if_negotiated(
            Features::SCSI_CHANGE,
            EventType::ParamChange,
            address,
            0x2A | (0x09 << 8),
        ))
    }

    /// Holds back (`true`) or releases (`false`) the eventq's interrupts: events still fill
    /// buffers but the driver is not told until release, so it cannot put buffers back and
    /// the eventq runs dry (the next event then carries `EVENTS_MISSED`).
    pub fn hold_event_interrupts(&self, hold: bool) {
        let shared = &self.shared;
        shared.event_interrupts_held.store(hold, Ordering::SeqCst);
        if !hold && shared.event_interrupt_pending.swap(false, Ordering::SeqCst) {
            let vector = shared.interrupt_vector(queue_index::EVENT);
            shared.raise(vector);
        }
    }

    /// Changes `bytes` of the device configuration at `offset` (and `config_generation`) and
    /// sends the configuration-change interrupt, as a device whose configuration changed does
    /// (virtio 1.x section 4.1.5.3).
    pub fn change_config(&self, offset: usize, bytes: &[u8]) {
        let shared = &self.shared;
        shared.regs.update_device_config(offset, bytes);
        shared.regs.raise_isr(Isr::CONFIG);
        shared.raise([shared.regs.config_msix_vector()]);
    }
}

impl Shared {
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn queue_lock(&self, index: u16) -> Option<MutexGuard<'_, QueueState>> {
        self.queues
            .get(usize::from(index))
            .map(|q| q.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn counters(&self, index: u16) -> Option<&QueueCounters> {
        self.counters.get(usize::from(index))
    }

    /// Resets the device side: forgets every queue and held request (their buffers belong to
    /// the driver again).
    fn reset(&self) {
        self.resets.fetch_add(1, Ordering::Relaxed);
        // ORDERING: the new epoch is published before the queues are cleared under their
        // locks, so a worker that completes a job afterwards (under the same lock) sees it and
        // discards the job instead of writing into rings the driver is taking back.
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        // Held commands are forgotten by the reset: nothing is outstanding on any LUN now.
        *self
            .outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Outstanding {
            epoch,
            per_lun: BTreeMap::new(),
        };
        for index in 0..self.queues.len() {
            if let Some(mut state) = self.queue_lock(index as u16) {
                *state = QueueState::default();
            }
        }
        self.pending.lock().jobs.clear();
        self.pending.changed.notify_all();
        self.lied_ahead
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.broken.store(false, Ordering::Release);
    }

    /// The driver broke the protocol: DEVICE_NEEDS_RESET and a configuration interrupt, as
    /// QEMU's `virtio_error` does. Returns the configuration vector to raise (NO_VECTOR: INTx).
    fn device_error(&self, queue: Option<u16>, why: ChainError) -> u16 {
        let lied_ahead = |queue: &u16| {
            self.lied_ahead
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(queue)
        };
        match queue {
            // The lie's consequence: the chain error is not the driver's, nor are the IOMMU
            // faults this thread's reads of that chain caused (a reused chain's memory is no
            // longer mapped once the driver completed it on the lie).
            Some(queue) if lied_ahead(&queue) => {
                self.memory.excuse_faults_of_this_thread();
            }
            _ => {
                if let Some(violation) = queue.and_then(|queue| why.violation(queue)) {
                    self.record(violation);
                }
            }
        }
        self.device_errors.fetch_add(1, Ordering::Relaxed);
        self.broken.store(true, Ordering::Release);
        self.regs.set_device_needs_reset();
        self.regs.raise_isr(Isr::CONFIG);
        self.regs.config_msix_vector()
    }

    fn record(&self, violation: DeviceViolation) {
        self.violations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(violation);
    }

    fn raise(&self, vectors: impl IntoIterator<Item = u16>) {
        for vector in vectors {
            self.sink.raise(vector);
        }
    }

    /// Sets up the device side of queue `index` from its registers if the driver enabled it
    /// and set DRIVER_OK. `Err` if its addresses are unusable.
    fn ready<'a>(
        &self,
        state: &'a mut QueueState,
        index: u16,
    ) -> Result<Option<&'a mut DeviceRing>, ChainError> {
        if self.broken.load(Ordering::Acquire) {
            return Ok(None);
        }
        if state.queue.is_none() {
            let Some(regs) = self.regs.queue(index) else {
                return Ok(None);
            };
            if !regs.enabled || !self.regs.status().contains(DeviceStatus::DRIVER_OK) {
                return Ok(None);
            }
            let features = self.regs.driver_features();
            let queue = DeviceRing::new(
                &self.guest,
                &QueueSetup {
                    max_size: regs.max_size,
                    size: regs.size,
                    desc: regs.desc,
                    driver: regs.driver,
                    device: regs.device,
                    packed: features.contains(Features::RING_PACKED),
                    indirect: features.contains(Features::INDIRECT_DESC),
                    event_idx: features.contains(Features::EVENT_IDX),
                },
            )?;
            state.queue = Some(queue);
        }
        Ok(state.queue.as_mut())
    }

    fn sense_size(&self) -> usize {
        self.config_u32(virtio_core::scsi::Config::SENSE_SIZE_OFFSET) as usize
    }

    fn cdb_size(&self) -> usize {
        self.config_u32(virtio_core::scsi::Config::CDB_SIZE_OFFSET) as usize
    }

    fn config_u32(&self, offset: usize) -> u32 {
        let bytes = self.regs.device_config_bytes();
        let mut value = [0u8; 4];
        for (i, slot) in value.iter_mut().enumerate() {
            *slot = bytes.get(offset + i).copied().unwrap_or(0);
        }
        u32::from_le_bytes(value)
    }

    fn notified(&self, queue: u16) {
        if let Some(counters) = self.counters(queue) {
            counters.notifications.fetch_add(1, Ordering::Relaxed);
        }
        // In the hostile mode the caller takes the chains when it decides to.
        if queue != queue_index::EVENT && self.hostile.load(Ordering::SeqCst) {
            return;
        }
        match queue {
            queue_index::CONTROL => self.process_control(),
            // Event buffers stay in the ring until an event is posted; if events were dropped
            // for lack of buffers, the first buffer reports it at once (QEMU's
            // `virtio_scsi_handle_event_vq` posts a NO_EVENT carrying EVENTS_MISSED).
            queue_index::EVENT => {
                let missed = self
                    .queue_lock(queue)
                    .is_some_and(|state| state.events_missed);
                if missed {
                    let _ = self.post_event(Event {
                        event: EventType::NoEvent.raw().into(),
                        lun: [0; 8],
                        reason: 0.into(),
                    });
                }
            }
            _ if self.iothreads.ring(queue) => {}
            _ => self.process_requests(queue),
        }
    }

    /// Drains request queue `index`: parses every available chain, completes inline requests
    /// and files the others, then interrupts if EVENT_IDX asks for it.
    fn process_requests(&self, index: u16) {
        let Some(mut state) = self.queue_lock(index) else {
            return;
        };
        let mut raise = Vec::new();
        let epoch = self.epoch();
        let queue = match self.ready(&mut state, index) {
            Ok(Some(queue)) => queue,
            Ok(None) => return,
            Err(error) => {
                drop(state);
                self.raise([self.device_error(Some(index), error)]);
                return;
            }
        };
        let mut batch = Batch::default();
        loop {
            if let Err(e) = queue.disable_notification(&self.guest) {
                batch.error = Some(e);
                break;
            }
            batch.absorb(self.drain_available(queue, index, epoch));
            if batch.error.is_some() {
                break;
            }
            match queue.enable_notification(&self.guest) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    batch.error = Some(e);
                    break;
                }
            }
        }
        let error = batch.error;
        if batch.completed > 0 && (batch.bogus || self.needs_interrupt(index, queue)) {
            raise.extend(self.interrupt_vector(index));
        }
        drop(state);
        if let Some(error) = error {
            raise.push(self.device_error(Some(index), error));
        }
        self.raise(raise);
    }

    /// Pops every chain available on request queue `index` now, parses it and completes or
    /// files it (one batch, with no interrupt decision: the caller makes one per batch).
    fn drain_available(&self, queue: &mut DeviceRing, index: u16, epoch: u64) -> Batch {
        let mut batch = Batch::default();
        loop {
            let chain = match queue.pop(&self.guest) {
                Ok(Some(chain)) => chain,
                Ok(None) => return batch,
                Err(e) => {
                    batch.error = Some(e);
                    return batch;
                }
            };
            batch.popped += 1;
            if let Some(counters) = self.counters(index) {
                counters.requests.fetch_add(1, Ordering::Relaxed);
            }
            let job = match self.parse_command(index, epoch, chain) {
                Ok(job) => job,
                Err(e) => {
                    batch.error = Some(e);
                    return batch;
                }
            };
            match job.when {
                When::Now => match self.complete(queue, job) {
                    Published::Nothing => {}
                    Published::Element => batch.completed += 1,
                    Published::Bogus => {
                        batch.completed += 1;
                        batch.bogus = true;
                    }
                },
                When::At(due) => self.hold(job, Some(due)),
                When::Never => self.hold(job, None),
            }
        }
    }

    fn hold(&self, job: Job, due: Option<Instant>) {
        self.pending.lock().jobs.push(Held { due, job });
        self.pending.changed.notify_all();
    }

    /// Parses one request-queue chain (walked and checked by its ring) into a job: the
    /// device's limits decide first, then the fault hook.
    fn parse_command(&self, queue: u16, epoch: u64, chain: Chain) -> Result<Job, ChainError> {
        let cdb_size = self.cdb_size();
        let resp_size = CMD_RESP_HEADER + self.sense_size();
        let req_size = CMD_REQ_HEADER + cdb_size;
        let (readable, writable) = (chain.readable_len(), chain.writable_len());
        if readable < req_size || writable < resp_size {
            return Err(ChainError::TooShort);
        }
        let header = chain.read(&self.guest, req_size)?;
        if header.len() != req_size {
            return Err(ChainError::Unmapped);
        }
        let data_out_len = u32::try_from(readable - req_size).unwrap_or(u32::MAX);
        let data_in_capacity = u32::try_from(writable - resp_size).unwrap_or(u32::MAX);
        let (lun_bytes, tag) = lun_and_tag(&header);
        let cdb = header.get(CMD_REQ_HEADER..).unwrap_or_default().to_vec();
        let whole = data_in_capacity.max(data_out_len);
        // A command over seg_max or max_sectors is answered FAILURE, whatever it addresses.
        let over_limits = self.check_limits(queue, &chain.buffers, req_size, resp_size, whole);
        let answer = if over_limits {
            Response::Failure
        } else {
            Response::BadTarget
        };
        let mut job = Job {
            epoch,
            queue,
            chain,
            resp_size,
            work: Work::Reply(Reply::response(answer, whole)),
            used_len: None,
            corrupt_id: None,
            nexus: (lun_bytes[1], 0, tag),
            slot: None,
            when: self.default_when(),
        };
        let Ok(address) = WireLun::decode(lun_bytes) else {
            return Ok(job);
        };
        job.nexus = (address.target(), address.lun(), tag);
        let (slot, task_set_full) = self.count_command(queue, epoch, address);
        job.slot = Some(slot);
        if over_limits {
            return Ok(job);
        }
        if task_set_full {
            job.work = Work::Reply(Reply {
                status: target::TASK_SET_FULL,
                ..Reply::response(Response::Ok, whole)
            });
            return Ok(job);
        }
        let Some((unit, luns)) = self.lookup(address) else {
            return Ok(job);
        };
        let block_size = unit.as_ref().map_or(512, Lun::block_size);
        if let Some(response) = framing_error(&cdb, block_size, data_out_len, data_in_capacity) {
            job.work = Work::Reply(Reply::response(response, whole));
            return Ok(job);
        }
        let Some(unit) = unit else {
            let outcome = target::execute_absent(&cdb, &luns);
            let transferred = outcome.data_in.len().min(data_in_capacity as usize) as u32;
            job.work = Work::Reply(Reply {
                response: Response::Ok,
                status: outcome.status,
                sense: outcome.sense,
                data_in: outcome.data_in,
                resid: whole - transferred.min(whole),
            });
            return Ok(job);
        };
        let needed = match target::data_phase(&cdb, block_size) {
            target::DataPhase::Out(n) => usize::try_from(n).unwrap_or(usize::MAX),
            _ => 0,
        };
        let data_out = job.chain.read_from(&self.guest, req_size, needed)?;
        if data_out.len() != needed {
            return Err(ChainError::Unmapped);
        }
        let info = RequestInfo {
            queue,
            target: address.target(),
            lun: address.lun(),
            tag,
            cdb: cdb.clone(),
        };
        job.work = Work::Execute {
            task: unit.receive(self.nexus),
            lun: unit,
            cdb,
            data_out,
            luns,
            data_in_capacity,
            data_out_len,
        };
        self.apply_fault(&mut job, &info, whole);
        Ok(job)
    }

    /// Checks a command's data segments and transfer length against `seg_max` and
    /// `max_sectors` (counted as [`DeviceViolation`] says), recording each breach; `true` if
    /// there was one.
    fn check_limits(
        &self,
        queue: u16,
        buffers: &[Buffer],
        req_size: usize,
        resp_size: usize,
        whole: u32,
    ) -> bool {
        let mut segments = 0u32;
        let (mut readable_at, mut writable_at) = (0u64, 0u64);
        for buffer in buffers {
            let (at, header) = if buffer.writable {
                (&mut writable_at, resp_size as u64)
            } else {
                (&mut readable_at, req_size as u64)
            };
            let end = *at + u64::from(buffer.len);
            if end > header && buffer.len > 0 {
                segments += 1;
            }
            *at = end;
        }
        let mut over = false;
        let seg_max = self.config_u32(offset_of!(ScsiConfig, seg_max));
        if segments > seg_max {
            self.record(DeviceViolation::SegmentsOverSegMax {
                queue,
                segments,
                seg_max,
            });
            over = true;
        }
        let max_sectors = self.config_u32(offset_of!(ScsiConfig, max_sectors));
        let sectors = u64::from(whole).div_ceil(512);
        if max_sectors != 0 && sectors > u64::from(max_sectors) {
            self.record(DeviceViolation::TransferOverMaxSectors {
                queue,
                sectors,
                max_sectors,
            });
            over = true;
        }
        over
    }

    /// Counts one more command of `epoch` held for `address`; returns its slot and whether it
    /// goes over an enforced `cmd_per_lun` (recorded). A command of an epoch a reset already
    /// ended is not counted.
    fn count_command(&self, queue: u16, epoch: u64, address: WireLun) -> (LunSlot, bool) {
        let key = (address.target(), address.lun());
        let mut table = self
            .outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let outstanding = if table.epoch == epoch {
            let count = table.per_lun.entry(key).or_insert(0);
            *count += 1;
            *count
        } else {
            0
        };
        drop(table);
        let slot = LunSlot {
            table: Arc::clone(&self.outstanding),
            epoch,
            key,
        };
        let cmd_per_lun = self.config_u32(offset_of!(ScsiConfig, cmd_per_lun));
        let over = self.options.enforce_cmd_per_lun && outstanding > cmd_per_lun;
        if over {
            self.record(DeviceViolation::CommandsOverCmdPerLun {
                queue,
                target: key.0,
                lun: key.1,
                outstanding,
                cmd_per_lun,
            });
        }
        (slot, over)
    }

    /// The unit at `address` (if present) and every LUN of its target, or `None` if the
    /// target does not exist (or is above `max_target`).
    fn lookup(&self, address: WireLun) -> Option<(Option<Lun>, Vec<u16>)> {
        if u16::from(address.target()) > self.options.max_target {
            return None;
        }
        let all = self.luns.read().unwrap_or_else(PoisonError::into_inner);
        let units = all.get(&address.target())?;
        Some((
            units.get(&address.lun()).cloned(),
            units.keys().copied().collect(),
        ))
    }

    /// LUN `lun` of `target` (every LUN of it with `None`), if present.
    fn units(&self, target: u8, lun: Option<u16>) -> Vec<Lun> {
        let all = self.luns.read().unwrap_or_else(PoisonError::into_inner);
        all.get(&target)
            .map(|units| {
                units
                    .iter()
                    .filter(|(number, _)| lun.is_none_or(|lun| lun == **number))
                    .map(|(_, unit)| unit.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asks the fault hook (if any) what to do with `job` and applies the answer.
    fn apply_fault(&self, job: &mut Job, info: &RequestInfo, whole: u32) {
        let hook = self
            .fault
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let action = hook.map_or(FaultAction::Normal, |hook| hook(info));
        match action {
            FaultAction::Normal => {}
            FaultAction::Delay(delay) => job.when = When::At(Instant::now() + delay),
            FaultAction::Respond(response) => {
                job.work = Work::Reply(Reply::response(response, whole));
            }
            FaultAction::ScsiStatus { status, sense } => {
                job.work = Work::Reply(Reply {
                    response: Response::Ok,
                    status,
                    sense,
                    data_in: Vec::new(),
                    resid: whole,
                });
            }
            FaultAction::Drop => job.when = When::Never,
            FaultAction::CorruptUsedLen(len) => job.used_len = Some(len),
            FaultAction::CorruptUsedId(id) => job.corrupt_id = Some(id),
        }
    }

    /// When a request completes without a fault: now, or after a (random) delay.
    fn default_when(&self) -> When {
        match self.options.completion {
            CompletionMode::Inline | CompletionMode::IoThread { .. } => When::Now,
            CompletionMode::Delayed { max_delay, shuffle } => {
                let delay = if shuffle {
                    let nanos = u64::try_from(max_delay.as_nanos()).unwrap_or(u64::MAX);
                    Duration::from_nanos(self.pending.lock().rng.below(nanos.saturating_add(1)))
                } else {
                    max_delay
                };
                When::At(Instant::now() + delay)
            }
        }
    }

    /// Executes `job` (if it still belongs to this epoch) and puts it on `queue`'s used ring.
    fn complete(&self, queue: &mut DeviceRing, mut job: Job) -> Published {
        if job.epoch != self.epoch() {
            return Published::Nothing;
        }
        // Released before the used element is published: once the driver can see the
        // completion, the device no longer counts the command against its LUN.
        let slot = job.slot.take();
        if let Some(id) = job.corrupt_id {
            drop(slot);
            // A bogus element bypasses virtio-queue's bookkeeping, which then cannot tell
            // whether the driver wants an interrupt; a real device would interrupt for it.
            return if queue.publish_bogus(&self.guest, id, 0) {
                Published::Bogus
            } else {
                Published::Nothing
            };
        }
        let reply = self.run_journaled(job.work, job.queue, job.nexus);
        let written = self.write_reply(&job.chain, job.resp_size, &reply);
        let len = job.used_len.unwrap_or(written);
        drop(slot);
        if queue.add_used(&self.guest, &job.chain, len).is_ok() {
            Published::Element
        } else {
            Published::Nothing
        }
    }

    /// Runs `work` for `nexus` ((target, lun, tag)) of request queue `queue`; a WRITE that
    /// executed GOOD goes into the write journal while it is on.
    fn run_journaled(&self, work: Work, queue: u16, nexus: (u8, u16, u64)) -> Reply {
        let journal = match &work {
            Work::Execute { cdb, data_out, .. }
                if self.journaling.load(Ordering::SeqCst)
                    && matches!(
                        cdb.first(),
                        Some(&(target::opcode::WRITE_10 | target::opcode::WRITE_16))
                    ) =>
            {
                let mut stamp = [0u8; 8];
                for (to, from) in stamp.iter_mut().zip(data_out) {
                    *to = *from;
                }
                Some(stamp)
            }
            _ => None,
        };
        let reply = work.run();
        if let Some(stamp) = journal
            && reply.status == target::GOOD
        {
            let (target, lun, tag) = nexus;
            self.journal
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(WriteRecord {
                    target,
                    lun,
                    tag,
                    stamp,
                    at: Instant::now(),
                    after_a_lie: self
                        .lied_ahead
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .contains(&queue),
                });
        }
        reply
    }

    /// Writes the response header, sense and data-in; returns the bytes written.
    fn write_reply(&self, chain: &Chain, resp_size: usize, reply: &Reply) -> u32 {
        let sense_size = resp_size.saturating_sub(CMD_RESP_HEADER);
        let sense = reply.sense.get(..sense_size).unwrap_or(&reply.sense);
        let header = CmdResp {
            sense_len: (sense.len() as u32).into(),
            resid: reply.resid.into(),
            status_qualifier: 0.into(),
            status: reply.status,
            response: reply.response.raw(),
            sense: [0; virtio_core::scsi::SENSE_SIZE],
        };
        let mut resp = header
            .as_bytes()
            .get(..CMD_RESP_HEADER)
            .unwrap_or_default()
            .to_vec();
        resp.extend_from_slice(sense);
        resp.resize(resp_size, 0);
        let mut data_in_written = 0;
        if !reply.data_in.is_empty()
            && let Ok(written) = chain.write_at(&self.guest, resp_size, &reply.data_in)
        {
            data_in_written = written;
        }
        if chain.write_at(&self.guest, 0, &resp) != Ok(resp.len()) {
            return 0;
        }
        (resp_size + data_in_written) as u32
    }

    /// Whether the driver asks for an interrupt on queue `index` for what was used since the
    /// last decision. Event suppression flags the spec reserves are a violation (recorded);
    /// the device interrupts then, as one that cannot tell would.
    fn needs_interrupt(&self, index: u16, queue: &mut DeviceRing) -> bool {
        queue
            .needs_notification(&self.guest)
            .unwrap_or_else(|error| {
                if let Some(violation) = error.violation(index) {
                    self.record(violation);
                }
                true
            })
    }

    /// The vector to raise for queue `index` (counted); without MSI-X it is NO_VECTOR, a line
    /// interrupt, and the ISR's queue bit is set. `None` while interrupts are suppressed.
    fn interrupt_vector(&self, index: u16) -> Option<u16> {
        if self.suppressed.load(Ordering::SeqCst) {
            self.suppressed_interrupts.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if let Some(counters) = self.counters(index) {
            counters.interrupts.fetch_add(1, Ordering::Relaxed);
        }
        let vector = self
            .regs
            .queue(index)
            .map_or(VIRTIO_MSI_NO_VECTOR, |q| q.msix_vector);
        if vector == VIRTIO_MSI_NO_VECTOR {
            // No MSI-X vector: a line interrupt (INTx), announced by the ISR queue bit, which
            // the driver's line ISR reads (and so clears). The sink gets NO_VECTOR for it.
            self.regs.raise_isr(Isr::QUEUE);
        }
        Some(vector)
    }

    /// Completes held jobs (from the worker or a TMF), queue by queue, and interrupts.
    fn finish(&self, jobs: Vec<Job>) {
        let mut by_queue: BTreeMap<u16, Vec<Job>> = BTreeMap::new();
        for job in jobs {
            by_queue.entry(job.queue).or_default().push(job);
        }
        let mut raise = Vec::new();
        for (index, jobs) in by_queue {
            let Some(mut state) = self.queue_lock(index) else {
                continue;
            };
            let Some(queue) = state.queue.as_mut() else {
                continue;
            };
            let mut completed = false;
            let mut bogus = false;
            for job in jobs {
                let published = self.complete(queue, job);
                completed |= published != Published::Nothing;
                bogus |= published == Published::Bogus;
            }
            if completed && (bogus || self.needs_interrupt(index, queue)) {
                raise.extend(self.interrupt_vector(index));
            }
        }
        self.raise(raise);
    }

    /// Takes back the held jobs `matches` selects and completes them with `response`.
    fn cancel(&self, response: Response, matches: impl Fn(&Job) -> bool) -> usize {
        let taken: Vec<Job> = {
            let mut state = self.pending.lock();
            let (taken, kept): (Vec<Held>, Vec<Held>) =
                state.jobs.drain(..).partition(|held| matches(&held.job));
            state.jobs = kept;
            taken.into_iter().map(|held| held.job).collect()
        };
        self.pending.changed.notify_all();
        let count = taken.len();
        let jobs = taken
            .into_iter()
            .map(|mut job| {
                let whole = match &job.work {
                    Work::Reply(reply) => reply.resid,
                    Work::Execute {
                        data_in_capacity,
                        data_out_len,
                        ..
                    } => (*data_in_capacity).max(*data_out_len),
                };
                job.work = Work::Reply(Reply::response(response, whole));
                job.corrupt_id = None;
                job.used_len = None;
                job
            })
            .collect();
        self.finish(jobs);
        count
    }

    /// Drains the controlq one request at a time, so the requests a TMF cancels complete (and
    /// interrupt) before the TMF is answered, with no lock held across either.
    fn process_control(&self) {
        let index = queue_index::CONTROL;
        loop {
            let epoch = self.epoch();
            let popped = {
                let Some(mut state) = self.queue_lock(index) else {
                    return;
                };
                let queue = match self.ready(&mut state, index) {
                    Ok(Some(queue)) => queue,
                    Ok(None) => return,
                    Err(error) => {
                        drop(state);
                        self.raise([self.device_error(Some(index), error)]);
                        return;
                    }
                };
                let mut popped = None;
                loop {
                    if queue.disable_notification(&self.guest).is_err() {
                        break;
                    }
                    match queue.pop(&self.guest) {
                        Ok(None) => {}
                        popped_chain => {
                            popped = popped_chain.transpose();
                            break;
                        }
                    }
                    if !queue.enable_notification(&self.guest).unwrap_or(false) {
                        break;
                    }
                }
                // The request is read under the lock it was popped under: a reset that comes
                // afterwards cannot have given the buffer back to the driver yet.
                popped.map(|popped| {
                    popped.map(|chain| {
                        let read = self.read_control(&chain);
                        (chain, read)
                    })
                })
            };
            let Some(popped) = popped else {
                return;
            };
            if let Some(counters) = self.counters(index) {
                counters.requests.fetch_add(1, Ordering::Relaxed);
            }
            let (chain, read) = match popped {
                Ok(popped) => popped,
                Err(error) => {
                    self.raise([self.device_error(Some(index), error)]);
                    return;
                }
            };
            let answer = match read.and_then(|read| self.control_request(&read)) {
                Ok(Some(answer)) => answer,
                // Ignored: the chain stays with the device until a reset.
                Ok(None) => continue,
                Err(error) => {
                    self.raise([self.device_error(Some(index), error)]);
                    return;
                }
            };
            let mut raise = None;
            if let Some(mut state) = self.queue_lock(index)
                && epoch == self.epoch()
                && let Some(queue) = state.queue.as_mut()
            {
                let written = match chain.write_at(&self.guest, 0, &answer) {
                    Ok(n) if n == answer.len() => n as u32,
                    _ => 0,
                };
                if queue.add_used(&self.guest, &chain, written).is_ok()
                    && self.needs_interrupt(index, queue)
                {
                    raise = self.interrupt_vector(index);
                }
            }
            self.raise(raise);
        }
    }

    /// Reads a controlq request from its chain (as much of it as a TMF request has).
    fn read_control(&self, chain: &Chain) -> Result<ControlRead, ChainError> {
        Ok(ControlRead {
            request: chain.read(&self.guest, TMF_REQ_SIZE)?,
            writable: chain.writable_len(),
        })
    }

    /// Reads a control chain the hostile mode has held since `epoch`, under the controlq's
    /// lock: a reset moves the epoch before it takes that lock and the driver takes its control
    /// buffers back only after the reset returned, so a chain of the current epoch still holds
    /// the driver's request. `None`: a reset forgot the chain (its buffer may hold another
    /// request by now, or nothing).
    fn read_held_control(
        &self,
        epoch: u64,
        chain: &Chain,
    ) -> Option<Result<ControlRead, ChainError>> {
        let _state = self.queue_lock(queue_index::CONTROL)?;
        (epoch == self.epoch()).then(|| self.read_control(chain))
    }

    /// Executes one controlq request; returns the bytes to write back (`None`: no answer).
    fn control_request(&self, read: &ControlRead) -> Result<Option<Vec<u8>>, ChainError> {
        let ControlRead { request, writable } = read;
        let writable = *writable;
        let field = |range: std::ops::Range<usize>| request.get(range).unwrap_or_default();
        let u32_at = |at: usize| u32::from_le_bytes(field(at..at + 4).try_into().unwrap_or([0; 4]));
        let control_type = ControlType::from_raw(u32_at(0));
        match control_type {
            Some(ControlType::Tmf) => {
                if request.len() < TMF_REQ_SIZE || writable < 1 {
                    return Err(ChainError::TooShort);
                }
                if let Some(counters) = self.counters(queue_index::CONTROL) {
                    counters.tmfs.fetch_add(1, Ordering::Relaxed);
                }
                let lun: [u8; 8] = field(8..16).try_into().unwrap_or([0; 8]);
                let tag = u64::from_le_bytes(field(16..24).try_into().unwrap_or([0; 8]));
                let (target, unit) = WireLun::decode(lun)
                    .map_or((lun[1], 0), |address| (address.target(), address.lun()));
                let info = TmfInfo {
                    subtype: u32_at(4),
                    target,
                    lun: unit,
                    tag,
                };
                let hook = self
                    .tmf_hook
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let action = hook.map_or(TmfAction::Normal, |hook| hook(&info));
                // Logged before it is performed (the commands it takes back complete, and the
                // driver sees them, before the answer), the answer filled in before it is
                // written.
                let entry = {
                    let mut log = self.tmf_log.lock().unwrap_or_else(PoisonError::into_inner);
                    log.push(TmfRecord {
                        info,
                        response: None,
                    });
                    log.len() - 1
                };
                let response = match action {
                    TmfAction::Normal => Some(self.tmf(info.subtype, lun, tag)),
                    TmfAction::Respond(response) => Some(response),
                    TmfAction::Ignore => None,
                    TmfAction::AnswerWithoutCancelling => Some(Response::FUNCTION_COMPLETE),
                };
                if let Some(record) = self
                    .tmf_log
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_mut(entry)
                {
                    record.response = response;
                }
                Ok(response.map(|response| vec![response.raw()]))
            }
            Some(ControlType::AnQuery | ControlType::AnSubscribe) => {
                if request.len() < AN_REQ_SIZE || writable < size_of::<AnResp>() {
                    return Err(ChainError::TooShort);
                }
                // No asynchronous events are supported: event_actual 0, response OK.
                let resp = AnResp {
                    event_actual: 0.into(),
                    response: Response::Ok.raw(),
                };
                Ok(Some(resp.as_bytes().to_vec()))
            }
            None => {
                if writable < 1 {
                    return Err(ChainError::TooShort);
                }
                Ok(Some(vec![Response::Failure.raw()]))
            }
        }
    }

    /// Performs task management function `subtype` on `lun`; returns the TMF response.
    fn tmf(&self, subtype: u32, lun: [u8; 8], tag: u64) -> Response {
        let Ok(address) = WireLun::decode(lun) else {
            return Response::BadTarget;
        };
        let (target, lun) = (address.target(), address.lun());
        let (target_exists, lun_exists) = {
            let all = self.luns.read().unwrap_or_else(PoisonError::into_inner);
            let units = all.get(&target);
            (units.is_some(), units.is_some_and(|u| u.contains_key(&lun)))
        };
        if !target_exists {
            return Response::BadTarget;
        }
        let on_lun = |job: &Job| job.nexus.0 == target && job.nexus.1 == lun;
        let Some(subtype) = TmfSubtype::from_raw(subtype) else {
            return Response::FunctionRejected;
        };
        if !lun_exists && subtype != TmfSubtype::ITNexusReset {
            return Response::IncorrectLun;
        }
        match subtype {
            TmfSubtype::AbortTask => {
                self.cancel(Response::Aborted, |job| on_lun(job) && job.nexus.2 == tag);
                Response::FUNCTION_COMPLETE
            }
            TmfSubtype::AbortTaskSet | TmfSubtype::ClearTaskSet => {
                self.cancel(Response::Aborted, on_lun);
                Response::FUNCTION_COMPLETE
            }
            TmfSubtype::LogicalUnitReset => {
                self.cancel(Response::Reset, on_lun);
                for unit in self.units(target, Some(lun)) {
                    unit.logical_unit_reset();
                }
                Response::FUNCTION_COMPLETE
            }
            TmfSubtype::ITNexusReset => {
                self.cancel(Response::Reset, |job| job.nexus.0 == target);
                for unit in self.units(target, None) {
                    unit.nexus_loss(self.nexus);
                }
                Response::FUNCTION_COMPLETE
            }
            TmfSubtype::QueryTask | TmfSubtype::QueryTaskSet => {
                let pending = self.pending.lock();
                let found = pending.jobs.iter().any(|held| {
                    on_lun(&held.job)
                        && (subtype == TmfSubtype::QueryTaskSet || held.job.nexus.2 == tag)
                });
                if found {
                    Response::FunctionSucceeded
                } else {
                    Response::FUNCTION_COMPLETE
                }
            }
            TmfSubtype::ClearAca => Response::FunctionRejected,
        }
    }

    /// Posts an event of `kind` for `lun` if the driver accepted `feature` (QEMU checks the
    /// negotiated feature before `virtio_scsi_push_event`).
    fn post_if_negotiated(
        &self,
        feature: Features,
        kind: EventType,
        lun: WireLun,
        reason: u32,
    ) -> bool {
        if !self.regs.driver_features().contains(feature) {
            return false;
        }
        self.post_event(Event {
            event: kind.raw().into(),
            lun: lun.encode(),
            reason: reason.into(),
        })
    }

    fn post_event(&self, event: Event) -> bool {
        self.post_to_eventq(event.as_bytes(), None)
    }

    /// Writes `bytes` into the next eventq buffer and reports `used_len` (default: the bytes
    /// written); an event in `bytes` (no `used_len`) gets EVENTS_MISSED if events were dropped
    /// since the last one. With no buffer the event is dropped and remembered as missed.
    fn post_to_eventq(&self, bytes: &[u8], used_len: Option<u32>) -> bool {
        let index = queue_index::EVENT;
        let Some(mut state) = self.queue_lock(index) else {
            return false;
        };
        let missed = state.events_missed;
        let queue = match self.ready(&mut state, index) {
            Ok(Some(queue)) => queue,
            Ok(None) => return false,
            Err(error) => {
                drop(state);
                self.raise([self.device_error(Some(index), error)]);
                return false;
            }
        };
        let popped = queue.pop(&self.guest);
        // Publish avail_event = the next buffer, as QEMU's pop does with EVENT_IDX: a driver
        // that puts a buffer back after the device used them all then notifies the device.
        let _ = queue.enable_notification(&self.guest);
        let chain = match popped {
            Ok(Some(chain)) => chain,
            Ok(None) => {
                state.events_missed = true;
                return false;
            }
            Err(error) => {
                drop(state);
                self.raise([self.device_error(Some(index), error)]);
                return false;
            }
        };
        if let Some(counters) = self.counters(index) {
            counters.requests.fetch_add(1, Ordering::Relaxed);
        }
        let mut payload = bytes.to_vec();
        if used_len.is_none()
            && missed
            && let Some(first) = payload.first_chunk_mut::<4>()
        {
            let flagged = u32::from_le_bytes(*first) | Event::EVENTS_MISSED;
            *first = flagged.to_le_bytes();
        }
        let written = if chain.writable_len() < payload.len() {
            Err(ChainError::TooShort)
        } else {
            chain.write_at(&self.guest, 0, &payload).and_then(|n| {
                (n == payload.len())
                    .then_some(())
                    .ok_or(ChainError::Unmapped)
            })
        };
        if let Err(error) = written {
            drop(state);
            self.raise([self.device_error(Some(index), error)]);
            return false;
        }
        let len = used_len.unwrap_or(payload.len() as u32);
        let mut raise = None;
        if queue.add_used(&self.guest, &chain, len).is_ok() && self.needs_interrupt(index, queue) {
            if self.event_interrupts_held.load(Ordering::SeqCst) {
                self.event_interrupt_pending.store(true, Ordering::SeqCst);
            } else {
                raise = self.interrupt_vector(index);
            }
        }
        if used_len.is_none() {
            state.events_missed = false;
        }
        drop(state);
        self.raise(raise);
        true
    }
}

/// A controlq request as the device read it from its chain.
struct ControlRead {
    /// The request's bytes, up to a TMF request's size.
    request: Vec<u8>,
    /// The chain's writable bytes.
    writable: usize,
}

/// The `lun` and `tag` fields of a request header.
fn lun_and_tag(header: &[u8]) -> ([u8; 8], u64) {
    let field = |range: std::ops::Range<usize>| {
        header
            .get(range)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 8])
    };
    (field(0..8), u64::from_le_bytes(field(8..16)))
}

/// The response for a command whose buffers do not suit its CDB: `FAILURE` for a bidirectional
/// one (it needs `VIRTIO_SCSI_F_INOUT`, which is not offered), `OVERRUN` for a data phase the
/// buffers cannot hold or that goes the other way; `None` if they suit it.
fn framing_error(
    cdb: &[u8],
    block_size: u32,
    data_out_len: u32,
    data_in_capacity: u32,
) -> Option<Response> {
    if data_out_len > 0 && data_in_capacity > 0 {
        return Some(Response::Failure);
    }
    let fits = match target::data_phase(cdb, block_size) {
        target::DataPhase::In(n) if n > 0 => data_out_len == 0 && n <= u64::from(data_in_capacity),
        target::DataPhase::Out(n) if n > 0 => data_in_capacity == 0 && n <= u64::from(data_out_len),
        _ => true,
    };
    (!fits).then_some(Response::Overrun)
}

/// The worker: completes held jobs when due (in random order among those due together when
/// shuffling), until the device is dropped.
fn completion_worker(pending: &PendingSet, device: &Weak<Shared>) {
    const IDLE: Duration = Duration::from_millis(20);
    loop {
        let batch = {
            let mut state = pending.lock();
            if state.shutdown {
                return;
            }
            let now = Instant::now();
            let (due, waiting): (Vec<Held>, Vec<Held>) = state
                .jobs
                .drain(..)
                .partition(|held| held.due.is_some_and(|due| due <= now));
            state.jobs = waiting;
            if due.is_empty() {
                let next = state.jobs.iter().filter_map(|held| held.due).min();
                let wait = next.map_or(IDLE, |next| next.saturating_duration_since(now).min(IDLE));
                drop(
                    pending
                        .changed
                        .wait_timeout(state, wait)
                        .unwrap_or_else(PoisonError::into_inner),
                );
                continue;
            }
            let mut due = due;
            // Due order is submission order when every delay is the same.
            due.sort_by_key(|held| held.due);
            if state.shuffle {
                // Fisher-Yates with the device's seeded generator.
                for i in (1..due.len()).rev() {
                    let j = state.rng.below(i as u64 + 1) as usize;
                    due.swap(i, j);
                }
            }
            state.in_progress += 1;
            due
        };
        let Some(device) = device.upgrade() else {
            return;
        };
        device.finish(batch.into_iter().map(|held| held.job).collect());
        drop(device);
        pending.lock().in_progress -= 1;
        pending.changed.notify_all();
    }
}
