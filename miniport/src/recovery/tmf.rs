//! Task management on the controlq (virtio 1.x section 5.6.6.2): StorPort's abort and reset
//! requests become ABORT TASK, LOGICAL UNIT RESET and I_T NEXUS RESET functions, each bounded
//! by a deadline, with the full device reset as the escalation.
//!
//! # What each request becomes
//! - `SRB_FUNCTION_ABORT_COMMAND`: ABORT TASK on the aborted SRB's own LUN, with the tag the
//!   miniport put in its request header (the request's address). An SRB not in flight any more
//!   is answered `SRB_STATUS_ABORT_FAILED` at once: there is nothing left to abort. The tag is
//!   only unique while the request is in flight: if it completes and a new request reuses its
//!   SRB extension before the device acts on the function, the new request is the one aborted
//!   (it completes with `SRB_STATUS_ABORTED`, which the class driver retries).
//! - `SRB_FUNCTION_RESET_LOGICAL_UNIT`: LOGICAL UNIT RESET on the SRB's own target and LUN
//!   (vioscsi resets 0/0 whatever the SRB names).
//! - `SRB_FUNCTION_RESET_DEVICE`: I_T NEXUS RESET on the SRB's target.
//! - HwResetBus (StorPort's timeout recovery) and `SRB_FUNCTION_RESET_BUS`: first every queue is
//!   polled, so a request whose interrupt was lost completes with its real status; then one
//!   I_T NEXUS RESET goes to each target that still holds requests. One function per target
//!   covers every LUN behind it, known to the LUN table or not, and targets with nothing
//!   outstanding are left alone (no needless UNIT ATTENTION on idle disks). When there are more
//!   such targets than free slots, the full reset is done instead.
//!
//! # How each ends
//! A function covers the requests of its nexus that were on a ring when it was sent (each
//! request carries its queue's submission count; the function snapshots every queue's count
//! before it goes out). The device completes the covered requests it takes back before it
//! answers (section 5.6.6.2), with `VIRTIO_SCSI_S_ABORTED` or `_RESET`, which complete the SRBs
//! with `SRB_STATUS_ABORTED` or `SRB_STATUS_BUS_RESET` through the normal completion path.
//! - Answered FUNCTION COMPLETE / SUCCEEDED: the request queues are drained, then the covered
//!   requests still in flight are counted. None: the function's SRB completes with SUCCESS. Some
//!   (the device need not return a request it had already finished, or had not seen): the
//!   miniport waits for them until the deadline, because they may still come back with their
//!   real status; if they have not by then, it escalates. It never completes a covered SRB
//!   itself while the device may still execute it: only a device reset makes that safe.
//! - Answered BAD_TARGET or INCORRECT_LUN with nothing covered outstanding: the nexus does not
//!   exist and holds nothing, so the SRB completes with SUCCESS and the device is left alone.
//! - Any other answer (FUNCTION REJECTED, a failure, an undefined value), or no answer by the
//!   deadline ([`DEADLINE`] after sending): the full device reset, which completes everything in
//!   flight with `SRB_STATUS_BUS_RESET` and sets the queues up again.
//!
//! Every function that a full reset ends (its own escalation, another reset, ScsiStopAdapter)
//! completes its SRB with SUCCESS if the device came back (the reset did what was asked, and
//! more), `SRB_STATUS_ERROR` if it did not. Each SRB is completed exactly once: the slot's state
//! word moves to `Completing` by compare-exchange, and only the context that won that exchange
//! completes the SRB.
//!
//! # Who drives a slot
//! The poster (StartIo, HwResetBus) claims a free slot, writes the request and adds it to the
//! controlq under the controlq's lock. The controlq interrupt (under the same lock) records the
//! answer and kicks the adapter's timer. The timer (`Adapter::on_timer`) decides with
//! [`decide`] and completes or escalates; the full reset, holding every queue lock, resolves
//! every slot still active. Slots carry a generation in their state word, so a context holding
//! a stale view of a slot that was resolved and reused meanwhile loses its compare-exchange.
//!
//! # The trace, and the dump stack
//! Each function sent is a [`crate::trace::TraceEvent::TmfSent`] record and each one ended a
//! `TmfDone` (its response, or `u32::MAX` unanswered); an escalation is a `DeviceReset` with
//! [`ResetCause::TmfEscalation`](crate::trace::ResetCause::TmfEscalation). The crash-dump stack has no timer to bound a function with and
//! no slots are carved there: its abort and reset requests, like its HwResetBus, reset the
//! whole device inline when something is in flight ([`Adapter::reset_bus`](crate::adapter::Adapter::reset_bus)).
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use virtio_core::scsi::{ControlFailure, Lun, TmfOutcome, TmfReq, TmfSubtype};

use crate::in_flight::InFlight;
use crate::sizing::MAX_REQUEST_QUEUES;
use crate::storport::request::KeptSrbCell;

/// How long a function may take, from sending it to the device's answer and the return of
/// every request it covers, in 100 ns units: 2 s. StorPort's own request timeouts are tens of
/// seconds, so this escalates well before StorPort gives up on the unit.
pub const DEADLINE: u64 = 20_000_000;

/// Bytes of DMA memory per slot: the 24-byte request, then the 1-byte response, padded to keep
/// each slot's pair 16-aligned.
const SLOT_STRIDE: usize = 32;
/// Offset of the response in a slot's DMA memory.
const RESPONSE_OFFSET: usize = size_of::<TmfReq>();

/// Marks an answered slot's response word; the low byte is the response the device wrote.
const ANSWERED: u16 = 0x100;
/// Marks a slot whose chain came back with no response byte written.
const UNWRITTEN: u16 = 0x200;

/// What a function is aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nexus {
    /// One command: ABORT TASK.
    Task {
        /// Its target.
        target: u8,
        /// Its LUN.
        lun: u16,
        /// The tag in its request header.
        tag: u64,
    },
    /// One logical unit: LOGICAL UNIT RESET.
    LogicalUnit {
        /// The target.
        target: u8,
        /// The LUN.
        lun: u16,
    },
    /// Every logical unit of a target: I_T NEXUS RESET.
    Target {
        /// The target.
        target: u8,
    },
}

impl Nexus {
    /// The function that acts on this nexus.
    #[must_use]
    pub const fn subtype(self) -> TmfSubtype {
        match self {
            Self::Task { .. } => TmfSubtype::AbortTask,
            Self::LogicalUnit { .. } => TmfSubtype::LogicalUnitReset,
            Self::Target { .. } => TmfSubtype::ITNexusReset,
        }
    }

    /// The LUN field of the request (LUN 0 of the target for I_T NEXUS RESET, whose LUN bytes
    /// 2 and 3 the device ignores).
    ///
    /// # Errors
    /// The LUN is above the virtio-scsi maximum.
    pub fn lun(self) -> Result<Lun, virtio_core::scsi::LunError> {
        match self {
            Self::Task { target, lun, .. } | Self::LogicalUnit { target, lun } => {
                Lun::new(target, lun)
            }
            Self::Target { target } => Lun::new(target, 0),
        }
    }

    /// The tag field (the task's for ABORT TASK, 0 for the resets).
    #[must_use]
    pub const fn tag(self) -> u64 {
        match self {
            Self::Task { tag, .. } => tag,
            Self::LogicalUnit { .. } | Self::Target { .. } => 0,
        }
    }

    /// Whether `request` belongs to this nexus (whatever its age).
    #[must_use]
    pub const fn contains(self, request: &InFlight) -> bool {
        match self {
            Self::Task { tag, .. } => request.tag == tag,
            Self::LogicalUnit { target, lun } => request.target == target && request.lun == lun,
            Self::Target { target } => request.target == target,
        }
    }

    /// The arguments of its [`crate::trace::TraceEvent::TmfSent`] record: the subtype,
    /// target << 16 | LUN, and the tag.
    #[must_use]
    pub fn trace_args(self) -> (u32, u64, u64) {
        (self.subtype().raw(), self.address_word(), self.tag())
    }

    /// Target << 16 | LUN (LUN 0 for a target), as the trace records it.
    #[must_use]
    pub const fn address_word(self) -> u64 {
        match self {
            Self::Task { target, lun, .. } | Self::LogicalUnit { target, lun } => {
                (target as u64) << 16 | lun as u64
            }
            Self::Target { target } => (target as u64) << 16,
        }
    }

    /// Packs the nexus into a word (kind, target, LUN) and the tag.
    const fn pack(self) -> (u64, u64) {
        match self {
            Self::Task { target, lun, tag } => (1 << 32 | (target as u64) << 16 | lun as u64, tag),
            Self::LogicalUnit { target, lun } => (2 << 32 | (target as u64) << 16 | lun as u64, 0),
            Self::Target { target } => (3 << 32 | (target as u64) << 16, 0),
        }
    }

    /// The nexus [`Nexus::pack`] packed.
    const fn unpack(word: u64, tag: u64) -> Option<Self> {
        let target = (word >> 16) as u8;
        let lun = word as u16;
        match word >> 32 {
            1 => Some(Self::Task { target, lun, tag }),
            2 => Some(Self::LogicalUnit { target, lun }),
            3 => Some(Self::Target { target }),
            _ => None,
        }
    }
}

/// Where a slot is in its life. Stored in the low byte of the slot's state word, under a
/// generation that grows each time the slot is claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Unused.
    Free = 0,
    /// A poster is writing the request; nobody else touches the slot.
    Claimed = 1,
    /// On the controlq, not answered yet.
    Posted = 2,
    /// The device answered; the timer has not decided yet.
    Answered = 3,
    /// Answered with success; covered requests are still out and the timer waits for them.
    Waiting = 4,
    /// One context is completing the slot's SRB.
    Completing = 5,
}

impl Phase {
    const fn of(word: u64) -> Option<Self> {
        Some(match word as u8 {
            0 => Self::Free,
            1 => Self::Claimed,
            2 => Self::Posted,
            3 => Self::Answered,
            4 => Self::Waiting,
            5 => Self::Completing,
            _ => return None,
        })
    }

    /// Whether a slot in this phase is on (or came back from) the device and must be resolved
    /// by a reset.
    const fn is_active(self) -> bool {
        matches!(self, Self::Posted | Self::Answered | Self::Waiting)
    }
}

/// The state word for `phase` in incarnation `generation`.
const fn word(generation: u64, phase: Phase) -> u64 {
    generation << 8 | phase as u64
}

const fn generation(word: u64) -> u64 {
    word >> 8
}

/// The SRB a function completes when it ends (none for HwResetBus's functions): the abort or
/// reset SRB, kept by the FFI floor's token until then.
pub type Owner = crate::storport::request::KeptSrb;

/// One task management function's slot: its bookkeeping (atomics, so no lock is needed to read
/// it; the poster writes it while the slot is `Claimed` and publishes it with the release store
/// of `Posted`) and, in [`TmfTable`]'s DMA memory, its request and response.
#[derive(Debug)]
pub struct TmfSlot {
    state: AtomicU64,
    nexus: AtomicU64,
    tag: AtomicU64,
    owner: KeptSrbCell,
    posted_at: AtomicU64,
    response: AtomicU16,
    /// Each request queue's submission count when the function was sent.
    snapshot: [AtomicU64; MAX_REQUEST_QUEUES as usize],
}

impl TmfSlot {
    /// A free slot.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            state: AtomicU64::new(0),
            nexus: AtomicU64::new(0),
            tag: AtomicU64::new(0),
            owner: KeptSrbCell::new(),
            posted_at: AtomicU64::new(0),
            response: AtomicU16::new(0),
            snapshot: [const { AtomicU64::new(0) }; MAX_REQUEST_QUEUES as usize],
        }
    }
}

impl Default for TmfSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// A claimed slot, between [`TmfTable::claim`] and [`TmfTable::posted`] or
/// [`TmfTable::release`]. Not `Copy`: one of the two ends it.
#[derive(Debug, PartialEq, Eq)]
pub struct Claim {
    index: usize,
    generation: u64,
}

impl Claim {
    /// The slot index, which the controlq's token table records.
    #[must_use]
    pub const fn index(&self) -> usize {
        self.index
    }
}

/// A function this context ended: the SRB to complete, if it has one.
#[derive(Debug, PartialEq, Eq)]
pub struct Ended {
    /// The function's SRB.
    pub owner: Option<Owner>,
}

/// How the device answered, as [`decide`] needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// No answer yet.
    Pending,
    /// A defined TMF response.
    Outcome(TmfOutcome),
    /// A response the spec does not define for a TMF, or none written.
    Broken,
}

/// A function on the device or back from it, as one look at its slot saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Active {
    index: usize,
    word: u64,
    /// The slot's response word ([`ANSWERED`] or [`UNWRITTEN`] with the byte), 0 if none.
    response: u16,
    /// The nexus.
    pub nexus: Nexus,
    /// The answer, if any.
    pub answer: Answer,
    /// When it was sent (100 ns units).
    pub posted_at: u64,
}

impl Active {
    /// Whether the function was waiting for covered requests when this view was taken.
    #[must_use]
    pub fn was_waiting(&self) -> bool {
        Phase::of(self.word) == Some(Phase::Waiting)
    }

    /// The response byte the device wrote, or `u32::MAX` if it has not answered (or answered
    /// without writing one).
    #[must_use]
    pub const fn raw_response(&self) -> u32 {
        if self.response & ANSWERED != 0 {
            (self.response & 0xFF) as u32
        } else {
            u32::MAX
        }
    }

    /// The arguments of its [`crate::trace::TraceEvent::TmfDone`] record: the response (or
    /// `u32::MAX` when it ends unanswered: the deadline passed, or a reset came first),
    /// target << 16 | LUN, and the tag.
    #[must_use]
    pub const fn trace_args(&self) -> (u32, u64, u64) {
        (
            self.raw_response(),
            self.nexus.address_word(),
            self.nexus.tag(),
        )
    }
}

/// Why a function escalated to the full device reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escalation {
    /// The device rejected or failed it, or answered outside the spec.
    Failed,
    /// No answer by the deadline.
    TimedOut,
    /// Answered with success, but covered requests were still out at the deadline.
    Stranded,
}

/// How a function ends without a reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Carried out; nothing it covered is outstanding.
    Done,
    /// The nexus does not exist and holds nothing.
    AbsentNexus,
}

/// What the timer does with a function now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing yet: look again at the next tick.
    Wait,
    /// Complete its SRB with SUCCESS.
    Complete(Ending),
    /// Reset the device.
    Escalate(Escalation),
}

/// The policy of the module documentation, as one pure function: what to do with a function
/// given its answer, the covered requests still in flight (counted after draining the queues;
/// only meaningful once answered) and the time since it was sent.
#[must_use]
pub const fn decide(answer: Answer, covered: u32, elapsed: u64) -> Decision {
    let late = elapsed >= DEADLINE;
    match answer {
        Answer::Pending if late => Decision::Escalate(Escalation::TimedOut),
        Answer::Pending => Decision::Wait,
        Answer::Outcome(TmfOutcome::Complete | TmfOutcome::Succeeded) => {
            if covered == 0 {
                Decision::Complete(Ending::Done)
            } else if late {
                Decision::Escalate(Escalation::Stranded)
            } else {
                Decision::Wait
            }
        }
        Answer::Outcome(TmfOutcome::Failed(
            ControlFailure::BadTarget | ControlFailure::IncorrectLun,
        )) if covered == 0 => Decision::Complete(Ending::AbsentNexus),
        Answer::Outcome(TmfOutcome::Rejected | TmfOutcome::Failed(_)) | Answer::Broken => {
            Decision::Escalate(Escalation::Failed)
        }
    }
}

/// What happened to task management functions, for troubleshooting (crash dump, WMI later).
#[derive(Debug, Default)]
pub struct TmfCounters {
    /// ABORT TASK functions sent.
    pub aborts: AtomicU64,
    /// LOGICAL UNIT RESET functions sent.
    pub lun_resets: AtomicU64,
    /// I_T NEXUS RESET functions sent.
    pub target_resets: AtomicU64,
    /// Ended with success, nothing covered left out.
    pub completed: AtomicU64,
    /// Of `completed`: covered requests were still out at the answer and came back later.
    pub waited: AtomicU64,
    /// Ended with success because the nexus does not exist and holds nothing.
    pub absent_nexus: AtomicU64,
    /// Escalated: the device failed or rejected the function.
    pub failed: AtomicU64,
    /// Escalated: no answer by the deadline.
    pub timed_out: AtomicU64,
    /// Escalated: covered requests still out at the deadline.
    pub stranded: AtomicU64,
    /// Ended by a full reset (their own escalation, another reset, or ScsiStopAdapter).
    pub superseded: AtomicU64,
    /// Could not be sent (no free slot, controlq full): the full reset was done instead.
    pub not_sent: AtomicU64,
}

impl TmfCounters {
    /// Counts a function sent on `nexus`.
    pub fn count_sent(&self, nexus: Nexus) {
        let counter = match nexus {
            Nexus::Task { .. } => &self.aborts,
            Nexus::LogicalUnit { .. } => &self.lun_resets,
            Nexus::Target { .. } => &self.target_resets,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an escalation.
    pub fn count_escalation(&self, why: Escalation) {
        let counter = match why {
            Escalation::Failed => &self.failed,
            Escalation::TimedOut => &self.timed_out,
            Escalation::Stranded => &self.stranded,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

mod requests;
mod table;

pub use requests::{reset_bus, start};
pub use table::TmfTable;

mod service;

pub use service::{
    PostError, covered_in_flight, drain_control, end_every_tmf, post_tmf, service_tmfs,
};

#[cfg(test)]
mod tests;
