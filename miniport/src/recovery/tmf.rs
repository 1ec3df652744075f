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
//! [`ResetCause::TmfEscalation`]. The crash-dump stack has no timer to bound a function with and
//! no slots are carved there: its abort and reset requests, like its HwResetBus, reset the
//! whole device inline when something is in flight ([`Adapter::reset_bus`]).
#![forbid(unsafe_code)]

use core::borrow::Borrow;
use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use virtio_core::dma::DmaMemory;
use virtio_core::hal::Segment;
use virtio_core::scsi::{
    ControlFailure, Lun, TmfOutcome, TmfReq, TmfResp, TmfSubtype, complete_tmf,
};
use zerocopy::IntoBytes;

use crate::adapter::Adapter;
use crate::io::{self, InFlight};
use crate::sizing::MAX_REQUEST_QUEUES;
use crate::storport::srb::Srb;
use crate::storport::{
    SRB_FUNCTION_ABORT_COMMAND, SRB_FUNCTION_RESET_BUS, SRB_FUNCTION_RESET_DEVICE,
    SRB_FUNCTION_RESET_LOGICAL_UNIT, SRB_STATUS_ABORT_FAILED, SRB_STATUS_ERROR,
    SRB_STATUS_INVALID_LUN, SRB_STATUS_INVALID_PATH_ID, SRB_STATUS_INVALID_REQUEST,
    SRB_STATUS_INVALID_TARGET_ID, SRB_STATUS_SUCCESS,
};
use crate::trace::ResetCause;

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

/// The SRB a function completes when it ends (none for HwResetBus's functions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The SRB's address.
    pub srb: usize,
    /// Whether it is an SRB_EX.
    pub extended: bool,
}

impl Owner {
    /// Packs the owner into a word: the address (SRBs are at least 8-aligned) with the
    /// extended flag in bit 0; 0 for none.
    const fn pack(owner: Option<Self>) -> u64 {
        match owner {
            Some(owner) => owner.srb as u64 | owner.extended as u64,
            None => 0,
        }
    }

    const fn unpack(word: u64) -> Option<Self> {
        if word & !1 == 0 {
            return None;
        }
        Some(Self {
            srb: (word & !1) as usize,
            extended: word & 1 == 1,
        })
    }
}

/// One task management function's slot: its bookkeeping (atomics, so no lock is needed to read
/// it; the poster writes it while the slot is `Claimed` and publishes it with the release store
/// of `Posted`) and, in [`TmfTable`]'s DMA memory, its request and response.
#[derive(Debug)]
pub struct TmfSlot {
    state: AtomicU64,
    nexus: AtomicU64,
    tag: AtomicU64,
    owner: AtomicU64,
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
            owner: AtomicU64::new(0),
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// The slots and their DMA memory.
#[derive(Debug)]
pub struct TmfTable<S> {
    slots: S,
    memory: DmaMemory,
    /// What happened to the functions.
    pub counters: TmfCounters,
}

impl<S: Borrow<[TmfSlot]>> TmfTable<S> {
    /// Bytes of DMA memory [`TmfTable::new`] needs for `slots` slots (16-aligned).
    #[must_use]
    pub const fn memory_len(slots: usize) -> usize {
        slots * SLOT_STRIDE
    }

    /// A table over `slots` (all free) and `memory` (at least [`TmfTable::memory_len`] bytes,
    /// 16-aligned, device-reachable). Slots without memory behind them are never claimed.
    #[must_use]
    pub fn new(slots: S, memory: DmaMemory) -> Self {
        Self {
            slots,
            memory,
            counters: TmfCounters::default(),
        }
    }

    fn slots(&self) -> &[TmfSlot] {
        self.slots.borrow()
    }

    fn usable(&self) -> usize {
        self.slots().len().min(self.memory.len() / SLOT_STRIDE)
    }

    /// Claims a free slot for `nexus`, writes its request, and records `owner`, the time `now`
    /// and each request queue's submission count (`snapshot(queue)` for `0..queues`). Returns
    /// the claim and the request's device-readable and device-writable segments, or `None`
    /// when every slot is busy (or the LUN cannot be encoded).
    pub fn claim(
        &self,
        nexus: Nexus,
        owner: Option<Owner>,
        now: u64,
        queues: u16,
        mut snapshot: impl FnMut(u16) -> u64,
    ) -> Option<(Claim, Segment, Segment)> {
        let lun = nexus.lun().ok()?;
        let request = TmfReq::new(nexus.subtype(), lun, nexus.tag());
        for (index, slot) in self.slots().iter().enumerate().take(self.usable()) {
            let current = slot.state.load(Ordering::Relaxed);
            if Phase::of(current) != Some(Phase::Free) {
                continue;
            }
            let next = generation(current).wrapping_add(1);
            // ORDERING: Acquire pairs with the Release store that freed the slot, so the
            // previous owner's last use of the slot happens before this claim's writes.
            if slot
                .state
                .compare_exchange(
                    current,
                    word(next, Phase::Claimed),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                continue;
            }
            let at = index * SLOT_STRIDE;
            let written = self.memory.write_bytes(at, request.as_bytes())
                && self.memory.write_bytes(at + RESPONSE_OFFSET, &[0xFF]);
            if !written {
                slot.state.store(word(next, Phase::Free), Ordering::Release);
                return None;
            }
            let (packed, tag) = nexus.pack();
            slot.nexus.store(packed, Ordering::Relaxed);
            slot.tag.store(tag, Ordering::Relaxed);
            slot.owner.store(Owner::pack(owner), Ordering::Relaxed);
            slot.posted_at.store(now, Ordering::Relaxed);
            slot.response.store(0, Ordering::Relaxed);
            for (queue, count) in slot.snapshot.iter().enumerate() {
                let value = if queue < usize::from(queues) {
                    snapshot(queue as u16)
                } else {
                    0
                };
                count.store(value, Ordering::Relaxed);
            }
            let bus = self.memory.bus_address() + at as u64;
            return Some((
                Claim {
                    index,
                    generation: next,
                },
                Segment::new(bus, size_of::<TmfReq>() as u32),
                Segment::new(bus + RESPONSE_OFFSET as u64, size_of::<TmfResp>() as u32),
            ));
        }
        None
    }

    /// The claimed function went on the controlq (call under the controlq's lock, after the
    /// ring accepted it).
    #[expect(
        clippy::needless_pass_by_value,
        reason = "consuming the claim is the point: a claimed slot is posted or released once"
    )]
    pub fn posted(&self, claim: Claim) {
        let Claim { index, generation } = claim;
        if let Some(slot) = self.slots().get(index) {
            // ORDERING: Release publishes the bookkeeping written while Claimed to whoever
            // loads this word with Acquire (the interrupt, the timer, a reset).
            slot.state
                .store(word(generation, Phase::Posted), Ordering::Release);
        }
    }

    /// Gives a claimed slot up (the controlq refused the request); returns its owner.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "consuming the claim is the point: a claimed slot is posted or released once"
    )]
    pub fn release(&self, claim: Claim) -> Option<Owner> {
        let Claim { index, generation } = claim;
        let slot = self.slots().get(index)?;
        let owner = Owner::unpack(slot.owner.load(Ordering::Relaxed));
        // ORDERING: Release pairs with the Acquire of the next claim.
        slot.state
            .store(word(generation, Phase::Free), Ordering::Release);
        owner
    }

    /// The device used slot `index`'s chain, writing `written` bytes: records the answer.
    /// Returns false if the slot was not waiting for one (a stale or forged token).
    pub fn answer(&self, index: usize, written: u32) -> bool {
        let Some(slot) = self.slots().get(index) else {
            return false;
        };
        let current = slot.state.load(Ordering::Acquire);
        if Phase::of(current) != Some(Phase::Posted) {
            return false;
        }
        let response = if written >= 1 {
            ANSWERED | u16::from(self.memory.load_u8(index * SLOT_STRIDE + RESPONSE_OFFSET))
        } else {
            UNWRITTEN
        };
        slot.response.store(response, Ordering::Relaxed);
        // ORDERING: Release publishes the response word with the phase; the timer loads the
        // state with Acquire before reading it.
        slot.state
            .compare_exchange(
                current,
                word(generation(current), Phase::Answered),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Views of every function on the device or back from it, one by one, as `visit` gets
    /// them.
    pub fn for_each_active(&self, mut visit: impl FnMut(Active)) {
        for (index, slot) in self.slots().iter().enumerate() {
            if let Some(active) = Self::view(index, slot) {
                visit(active);
            }
        }
    }

    /// A view of slot `index` if its function is on the device or back from it.
    fn view(index: usize, slot: &TmfSlot) -> Option<Active> {
        // ORDERING: Acquire pairs with the Release stores of `posted` and `answer`.
        let current = slot.state.load(Ordering::Acquire);
        let phase = Phase::of(current).filter(|phase| phase.is_active())?;
        let nexus = Nexus::unpack(
            slot.nexus.load(Ordering::Relaxed),
            slot.tag.load(Ordering::Relaxed),
        )?;
        let response = if phase == Phase::Posted {
            0
        } else {
            slot.response.load(Ordering::Relaxed)
        };
        let answer = if phase == Phase::Posted {
            Answer::Pending
        } else if response & ANSWERED != 0 {
            match complete_tmf(&TmfResp {
                response: response as u8,
            }) {
                Ok(outcome) => Answer::Outcome(outcome),
                Err(_) => Answer::Broken,
            }
        } else {
            Answer::Broken
        };
        Some(Active {
            index,
            word: current,
            response,
            nexus,
            answer,
            posted_at: slot.posted_at.load(Ordering::Relaxed),
        })
    }

    /// Whether any function is on the device or back from it.
    #[must_use]
    pub fn any_active(&self) -> bool {
        self.slots()
            .iter()
            .any(|slot| Phase::of(slot.state.load(Ordering::Relaxed)).is_some_and(Phase::is_active))
    }

    /// Whether `active` covers `request`: same nexus, and on its ring when the function was
    /// sent (its queue's submission count below the snapshot).
    #[must_use]
    pub fn covers(&self, active: &Active, request: &InFlight) -> bool {
        let Some(slot) = self.slots().get(active.index) else {
            return false;
        };
        let Some(count) = slot.snapshot.get(usize::from(request.queue)) else {
            return false;
        };
        active.nexus.contains(request) && request.sequence < count.load(Ordering::Relaxed)
    }

    /// Moves an answered function to `Waiting` (its covered requests are still out). Losing
    /// the exchange means a reset resolved it meanwhile.
    pub fn mark_waiting(&self, active: &Active) {
        if let Some(slot) = self.slots().get(active.index)
            && Phase::of(active.word) == Some(Phase::Answered)
        {
            let _ = slot.state.compare_exchange(
                active.word,
                word(generation(active.word), Phase::Waiting),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Ends the function `active` saw, if it is still in that state (`None`: someone else
    /// ended it first); the caller then completes the owner's SRB, if it has one.
    pub fn finish(&self, active: &Active) -> Option<Ended> {
        let slot = self.slots().get(active.index)?;
        Self::take(slot, active.word)
    }

    /// Moves `slot` from `current` to `Completing` and then `Free`, returning its owner, if no
    /// one else moved it first.
    fn take(slot: &TmfSlot, current: u64) -> Option<Ended> {
        let generation = generation(current);
        // ORDERING: Acquire pairs with the Release of `posted`/`answer`, so the owner word is
        // the one this incarnation wrote.
        slot.state
            .compare_exchange(
                current,
                word(generation, Phase::Completing),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()?;
        let owner = Owner::unpack(slot.owner.load(Ordering::Relaxed));
        // ORDERING: Release pairs with the Acquire of the next claim.
        slot.state
            .store(word(generation, Phase::Free), Ordering::Release);
        Some(Ended { owner })
    }

    /// Ends every function on the device or back from it (after a device reset, with the
    /// controlq's lock held), calling `complete` with the last view of each and its owner;
    /// returns how many ended.
    pub fn resolve_all(&self, mut complete: impl FnMut(&Active, Option<Owner>)) -> u64 {
        let mut resolved = 0;
        for (index, slot) in self.slots().iter().enumerate() {
            let Some(active) = Self::view(index, slot) else {
                continue;
            };
            if let Some(ended) = Self::take(slot, active.word) {
                // Counted before the SRB completes: whoever waits for it may read the counter
                // at once.
                self.counters.superseded.fetch_add(1, Ordering::Relaxed);
                complete(&active, ended.owner);
                resolved += 1;
            }
        }
        resolved
    }
}

/// StartIo for `SRB_FUNCTION_ABORT_COMMAND`, `_RESET_LOGICAL_UNIT`, `_RESET_DEVICE` and
/// `_RESET_BUS`: sends the function (see the module documentation); the SRB completes when it
/// ends.
pub fn start(adapter: &Adapter, srb: Srb) {
    let function = srb.function();
    if function == u32::from(SRB_FUNCTION_RESET_BUS) {
        adapter.reset_bus(ResetCause::ResetSrb);
        io::complete(adapter, srb, SRB_STATUS_SUCCESS);
        return;
    }
    let abort = function == u32::from(SRB_FUNCTION_ABORT_COMMAND);
    if adapter.is_stopped() {
        // Nothing is in flight on a stopped adapter: no command to abort, no unit to reset.
        let status = if abort {
            SRB_STATUS_ABORT_FAILED
        } else {
            SRB_STATUS_SUCCESS
        };
        io::complete(adapter, srb, status);
        return;
    }
    let address = srb.address();
    let device = adapter.device_limits();
    let refused = if address.path != 0 {
        Some(SRB_STATUS_INVALID_PATH_ID)
    } else if address.target > device.max_target {
        Some(SRB_STATUS_INVALID_TARGET_ID)
    } else if u16::from(address.lun) > device.max_lun {
        Some(SRB_STATUS_INVALID_LUN)
    } else {
        None
    };
    if let Some(status) = refused {
        io::complete(adapter, srb, status);
        return;
    }
    let nexus = if abort {
        let victim = srb.next_srb();
        let mut found = None;
        if victim != 0 {
            adapter.for_each_in_flight(|request| {
                if request.srb == victim {
                    found = Some(*request);
                }
            });
        }
        let Some(request) = found else {
            // Not (or no longer) on a ring: it completed, or never reached the device.
            io::complete(adapter, srb, SRB_STATUS_ABORT_FAILED);
            return;
        };
        Nexus::Task {
            target: request.target,
            lun: request.lun,
            tag: request.tag,
        }
    } else if function == u32::from(SRB_FUNCTION_RESET_LOGICAL_UNIT) {
        Nexus::LogicalUnit {
            target: address.target,
            lun: u16::from(address.lun),
        }
    } else if function == u32::from(SRB_FUNCTION_RESET_DEVICE) {
        Nexus::Target {
            target: address.target,
        }
    } else {
        io::complete(adapter, srb, SRB_STATUS_INVALID_REQUEST);
        return;
    };
    if adapter.dump_mode().is_some() {
        // No task management on the dump stack: no timer bounds a function there. The unit
        // (or the aborted command, which is in flight) is reset as HwResetBus resets in dump
        // mode, with the whole device, inline.
        adapter.reset_bus(ResetCause::ResetSrb);
        io::complete(adapter, srb, SRB_STATUS_SUCCESS);
        return;
    }
    let owner = Owner {
        srb: srb.raw().as_ptr() as usize,
        extended: srb.is_extended(),
    };
    // The slot owns the SRB from here; a function that is not sent hands it back.
    srb.hand_over();
    match adapter.post_tmf(nexus, Some(owner)) {
        Ok(()) => {}
        Err(PostError::Stopped(owner)) => {
            if let Some(owner) = owner {
                adapter.complete_owner(owner, SRB_STATUS_SUCCESS);
            }
        }
        Err(PostError::NotSent(owner)) => {
            adapter
                .tmfs()
                .counters
                .not_sent
                .fetch_add(1, Ordering::Relaxed);
            let restarted = adapter.reset_device(ResetCause::ResetSrb);
            if let Some(owner) = owner {
                let status = if restarted {
                    SRB_STATUS_SUCCESS
                } else {
                    SRB_STATUS_ERROR
                };
                adapter.complete_owner(owner, status);
            }
        }
    }
}

/// HwResetBus (and `SRB_FUNCTION_RESET_BUS`) in the normal stack: polls every queue, then
/// sends an I_T NEXUS RESET to each target still holding requests (the full reset, for
/// `cause`, when they do not all fit). The requests complete as the functions end; StorPort is
/// told a reset happened. The dump stack resets differently: [`Adapter::reset_bus`].
pub fn reset_bus(adapter: &Adapter, cause: ResetCause) {
    let recovery = adapter.recovery();
    recovery.bus_resets.fetch_add(1, Ordering::Relaxed);
    if adapter.is_stopped() {
        return;
    }
    if adapter.poll_all() {
        adapter.reset_device(ResetCause::ProtocolViolation);
        return;
    }
    let mut targets = [0u64; 4];
    adapter.for_each_in_flight(|request| {
        if let Some(word) = targets.get_mut(usize::from(request.target / 64)) {
            *word |= 1 << (request.target % 64);
        }
    });
    if targets == [0; 4] {
        recovery.bus_resets_polled.fetch_add(1, Ordering::Relaxed);
        adapter.extension().reset_detected();
        return;
    }
    for target in 0..=u8::MAX {
        let word = targets.get(usize::from(target / 64)).copied().unwrap_or(0);
        if word & (1 << (target % 64)) == 0 {
            continue;
        }
        if adapter.post_tmf(Nexus::Target { target }, None).is_err() {
            adapter
                .tmfs()
                .counters
                .not_sent
                .fetch_add(1, Ordering::Relaxed);
            adapter.reset_device(cause);
            return;
        }
    }
    adapter.extension().reset_detected();
}

mod service;

pub use service::PostError;

#[cfg(test)]
mod tests;
