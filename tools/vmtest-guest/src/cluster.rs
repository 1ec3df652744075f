//! Two nodes, one LUN: the persistent-reservation sequence two guests run against each other on
//! a LUN that tgtd exports over iSCSI and QEMU passes through (`scsi-block`), so every
//! PERSISTENT RESERVE command and every conflict comes from a real SPC-3 target.
//!
//! [`PLAN`] is the whole sequence, shared by both guests and the host: each step names the node
//! that runs it, what it sends and what must come back. The host orders the steps: a node prints
//! `PR-STEP-READY <n> <name>` before its step `n` and waits for the byte `n` on its serial input;
//! it then runs the command, prints `RESULT pr-<name> PASS|FAIL <details>` and
//! `PR-STEP-DONE <n>`, and the host releases step `n + 1`, on whichever node owns it.
//!
//! The expectations follow SPC-4 5.13 where tgtd (1.0.85, the version Debian 12 ships) does;
//! where it does not, the plan asserts what tgtd does, through [`TGT_PREEMPT_ATTENTION`] and
//! [`TGT_RELEASE_ATTENTION`], whose documentation names the deviation.
#![expect(
    clippy::result_large_err,
    reason = "a step's error is its 200-byte result line, returned once per step and never on \
              an I/O path; boxing needs an allocator the guest does not have"
)]

use core::fmt::Write;

use virtio_core::dma::DmaMemory;
use virtio_core::features::{Features, SCSI_DRIVER_FEATURES};
use virtio_core::hal::{Hal, RegisterIo};
use virtio_core::pci::PciTransport;
use virtio_core::scsi::{CommandOutcome, Disposition, Lun, scsi_status};
use zerocopy::IntoBytes;

use crate::driver::{Data, Device, DriverError, Interrupts};
use crate::pattern::{self, VerifyError};
use crate::reservation::{
    self, InAction, Keys, OutAction, PrOutParameters, ReservationData, ReservationType,
};
use crate::scsi_cmd::{self, ParseError, Sense};
use crate::text::{Text, text};

/// One of the two guests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// The node that reserves first and is preempted.
    A,
    /// The node that preempts.
    B,
}

impl Node {
    /// The node's name on the command line and in the logs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }
}

/// What a step sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// TEST UNIT READY: the cheapest command that reports a pending unit attention.
    TestUnitReady,
    /// PR OUT REGISTER of `key` by a nexus that has no key yet.
    Register {
        /// The service action key, the new registration.
        key: u64,
    },
    /// PR OUT RESERVE.
    Reserve {
        /// The node's registered key.
        key: u64,
        /// The reservation type.
        kind: ReservationType,
    },
    /// PR OUT RELEASE.
    Release {
        /// The node's registered key.
        key: u64,
        /// The type of the reservation held.
        kind: ReservationType,
    },
    /// PR OUT CLEAR.
    Clear {
        /// The node's registered key.
        key: u64,
    },
    /// PR OUT PREEMPT of the registrations holding `victim`, reserving with `kind`.
    Preempt {
        /// The node's registered key.
        key: u64,
        /// The key to preempt.
        victim: u64,
        /// The type of the reservation taken over.
        kind: ReservationType,
    },
    /// PR IN READ KEYS.
    ReadKeys,
    /// PR IN READ RESERVATION.
    ReadReservation,
    /// WRITE(16) of region `region` with the pattern of `seed`.
    Write {
        /// The region ([`REGION_BYTES`] each, from LBA 0).
        region: u64,
        /// The pattern's seed.
        seed: u64,
    },
    /// READ(16) of region `region`.
    Read {
        /// The region.
        region: u64,
    },
}

/// What must come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Status GOOD.
    Good,
    /// Status RESERVATION CONFLICT (0x18).
    Conflict,
    /// CHECK CONDITION, sense key UNIT ATTENTION, with this (ASC, ASCQ).
    UnitAttention((u8, u8)),
    /// GOOD, and READ KEYS lists exactly these keys.
    Keys(&'static [u64]),
    /// GOOD, and READ RESERVATION reports this holder's key and type on the LU scope, or no
    /// reservation.
    Holder(Option<(u64, ReservationType)>),
    /// GOOD, and the region holds the pattern of this seed.
    Data(u64),
}

/// One step of the sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The name, reported as `RESULT pr-<name>`; it starts with the node's name.
    pub name: &'static str,
    /// The node that runs it.
    pub node: Node,
    /// What it sends.
    pub action: Action,
    /// What must come back.
    pub expect: Expect,
}

/// Node A's keys: the first registration, and the one it makes after being preempted.
pub const KEY_A: u64 = 0xaaaa_0000_0000_0001;
/// Node A's second key.
pub const KEY_A2: u64 = 0xaaaa_0000_0000_0002;
/// Node B's key.
pub const KEY_B: u64 = 0xbbbb_0000_0000_0001;

/// Bytes of one data region.
pub const REGION_BYTES: u64 = 4096;
/// Regions the plan uses, from LBA 0.
pub const REGIONS: u64 = 5;

/// Pattern seeds, one per write of the plan (each names the writer).
const SEED_A1: u64 = 0xa1;
const SEED_A2: u64 = 0xa2;
const SEED_A3: u64 = 0xa3;
const SEED_A4: u64 = 0xa4;
const SEED_B1: u64 = 0xb1;
const SEED_B2: u64 = 0xb2;
const SEED_B3: u64 = 0xb3;

/// The unit attention tgtd raises for a nexus whose registration another nexus preempted:
/// RESERVATIONS PREEMPTED (2A/03). SPC-4 5.13.11.2.4 asks for REGISTRATIONS PREEMPTED
/// (2A/05, [`reservation::asc::REGISTRATIONS_PREEMPTED`]); tgtd's `spc_pr_preempt` raises
/// 2A/03 and has no 2A/05 at all.
pub const TGT_PREEMPT_ATTENTION: (u8, u8) = reservation::asc::RESERVATIONS_PREEMPTED;

/// What tgtd raises for the other registrants when the holder releases a registrants-only
/// reservation: nothing, so the next command is GOOD. SPC-4 5.13.11.2.2 asks for a unit
/// attention with RESERVATIONS RELEASED (2A/04) for every other registered nexus; tgtd's
/// `spc_pr_release` returns before raising it for registrants-only and all-registrants types
/// (and raises it for the other types, where SPC-4 says not to).
pub const TGT_RELEASE_ATTENTION: Expect = Expect::Good;

const WE_RO: ReservationType = ReservationType::WriteExclusiveRegistrantsOnly;
const EA_RO: ReservationType = ReservationType::ExclusiveAccessRegistrantsOnly;

const fn step(name: &'static str, node: Node, action: Action, expect: Expect) -> Step {
    Step {
        name,
        node,
        action,
        expect,
    }
}

/// A step writing the pattern of `seed` to `region`.
const fn write(name: &'static str, node: Node, region: u64, seed: u64, expect: Expect) -> Step {
    step(name, node, Action::Write { region, seed }, expect)
}

/// A step reading `region`.
const fn read(name: &'static str, node: Node, region: u64, expect: Expect) -> Step {
    step(name, node, Action::Read { region }, expect)
}

/// The sequence, in the order the host runs it: the Failover Cluster validation's
/// persistent-reservation test between two nodes (register, reserve, conflict from the other
/// node, preempt, release, clear), with the data checks that show which writes landed.
///
/// Access rules used (SPC-4 5.13.1, table 58): under Write Exclusive - Registrants Only a
/// nexus without a registration may read but not write, and a registered one may do both;
/// under Exclusive Access - Registrants Only a nexus without a registration may do neither.
/// PERSISTENT RESERVE IN and TEST UNIT READY are allowed for every nexus.
pub const PLAN: &[Step] = &[
    step("a-keys-none", Node::A, Action::ReadKeys, Expect::Keys(&[])),
    step(
        "a-register",
        Node::A,
        Action::Register { key: KEY_A },
        Expect::Good,
    ),
    step(
        "a-reserve",
        Node::A,
        Action::Reserve {
            key: KEY_A,
            kind: WE_RO,
        },
        Expect::Good,
    ),
    write("a-write-holder", Node::A, 0, SEED_A1, Expect::Good),
    write(
        "b-write-unregistered",
        Node::B,
        0,
        SEED_B1,
        Expect::Conflict,
    ),
    // Write Exclusive lets everyone read, and B's refused write did not land.
    read("b-read-unregistered", Node::B, 0, Expect::Data(SEED_A1)),
    step(
        "b-reserve-unregistered",
        Node::B,
        Action::Reserve {
            key: KEY_B,
            kind: WE_RO,
        },
        Expect::Conflict,
    ),
    step(
        "b-register",
        Node::B,
        Action::Register { key: KEY_B },
        Expect::Good,
    ),
    step(
        "b-keys-both",
        Node::B,
        Action::ReadKeys,
        Expect::Keys(&[KEY_A, KEY_B]),
    ),
    step(
        "b-reservation-a",
        Node::B,
        Action::ReadReservation,
        Expect::Holder(Some((KEY_A, WE_RO))),
    ),
    // SPC-4 5.13.6: a RESERVE from a nexus that is not the holder conflicts.
    step(
        "b-reserve-held",
        Node::B,
        Action::Reserve {
            key: KEY_B,
            kind: WE_RO,
        },
        Expect::Conflict,
    ),
    write("b-write-registrant", Node::B, 1, SEED_B2, Expect::Good),
    // B removes A's registration and takes the reservation over as Exclusive Access.
    step(
        "b-preempt",
        Node::B,
        Action::Preempt {
            key: KEY_B,
            victim: KEY_A,
            kind: EA_RO,
        },
        Expect::Good,
    ),
    step(
        "a-attention-preempted",
        Node::A,
        Action::TestUnitReady,
        Expect::UnitAttention(TGT_PREEMPT_ATTENTION),
    ),
    write("a-write-preempted", Node::A, 0, SEED_A2, Expect::Conflict),
    read("a-read-preempted", Node::A, 0, Expect::Conflict),
    step(
        "a-reservation-b",
        Node::A,
        Action::ReadReservation,
        Expect::Holder(Some((KEY_B, EA_RO))),
    ),
    step(
        "a-keys-b",
        Node::A,
        Action::ReadKeys,
        Expect::Keys(&[KEY_B]),
    ),
    // A's old key no longer registers it: it cannot preempt back.
    step(
        "a-preempt-stale",
        Node::A,
        Action::Preempt {
            key: KEY_A,
            victim: KEY_B,
            kind: EA_RO,
        },
        Expect::Conflict,
    ),
    step(
        "a-register-again",
        Node::A,
        Action::Register { key: KEY_A2 },
        Expect::Good,
    ),
    write("a-write-registrant", Node::A, 2, SEED_A3, Expect::Good),
    step(
        "b-release",
        Node::B,
        Action::Release {
            key: KEY_B,
            kind: EA_RO,
        },
        Expect::Good,
    ),
    step(
        "a-attention-released",
        Node::A,
        Action::TestUnitReady,
        TGT_RELEASE_ATTENTION,
    ),
    step(
        "b-reservation-none",
        Node::B,
        Action::ReadReservation,
        Expect::Holder(None),
    ),
    step(
        "b-keys-a2-b",
        Node::B,
        Action::ReadKeys,
        Expect::Keys(&[KEY_A2, KEY_B]),
    ),
    step(
        "b-clear",
        Node::B,
        Action::Clear { key: KEY_B },
        Expect::Good,
    ),
    // SPC-4 5.13.11.2.3: CLEAR raises RESERVATIONS PREEMPTED for the other registrants.
    step(
        "a-attention-cleared",
        Node::A,
        Action::TestUnitReady,
        Expect::UnitAttention(reservation::asc::RESERVATIONS_PREEMPTED),
    ),
    step(
        "a-keys-cleared",
        Node::A,
        Action::ReadKeys,
        Expect::Keys(&[]),
    ),
    write("a-write-free", Node::A, 3, SEED_A4, Expect::Good),
    write("b-write-free", Node::B, 4, SEED_B3, Expect::Good),
    // Every allowed write landed, and neither refused one (B's at step 5, A's at step 15)
    // overwrote region 0.
    read("b-read-region-0", Node::B, 0, Expect::Data(SEED_A1)),
    read("b-read-region-2", Node::B, 2, Expect::Data(SEED_A3)),
    read("b-read-region-3", Node::B, 3, Expect::Data(SEED_A4)),
    read("a-read-region-1", Node::A, 1, Expect::Data(SEED_B2)),
    read("a-read-region-4", Node::A, 4, Expect::Data(SEED_B3)),
];

/// The step number of `PLAN[index]`, as printed and as the host's go byte (from 1, so a
/// stray NUL on the serial line is never taken for a step).
#[must_use]
pub fn step_number(index: usize) -> Option<u8> {
    u8::try_from(index.checked_add(1)?).ok()
}

/// How a command ended, as far as the sequence cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// GOOD with data moved as posted (or less, for parameter data shorter than allocated).
    Good,
    /// RESERVATION CONFLICT.
    Conflict,
    /// CHECK CONDITION, with the sense data if it parsed.
    CheckCondition(Result<Sense, ParseError>),
    /// A request the image (under the guest's StorPort) failed otherwise: its SRB status and
    /// the SCSI status.
    Srb {
        /// SrbStatus, without the AUTOSENSE_VALID and QUEUE_FROZEN bits.
        srb_status: u8,
        /// ScsiStatus.
        status: u8,
    },
    /// Anything else: the transport failed, or another status.
    Other {
        /// virtio-core's mapping of the response.
        disposition: Disposition,
        /// The SCSI status byte.
        status: u8,
    },
}

impl Status {
    /// Classifies a completion (`sense`: the valid sense bytes).
    #[must_use]
    pub fn of(outcome: &CommandOutcome, sense: &[u8]) -> Self {
        match (outcome.disposition, outcome.scsi_status) {
            (Disposition::Success, scsi_status::GOOD) => Self::Good,
            // Short parameter data is an underrun, still GOOD; the OVERRUN response moves
            // nothing and is a failure.
            (Disposition::DataOverrun, scsi_status::GOOD) if outcome.transferred > 0 => Self::Good,
            (Disposition::Error, scsi_status::RESERVATION_CONFLICT) => Self::Conflict,
            (Disposition::Error, scsi_status::CHECK_CONDITION) => {
                Self::CheckCondition(scsi_cmd::parse_sense(sense))
            }
            (disposition, status) => Self::Other {
                disposition,
                status,
            },
        }
    }
}

/// What a step's data said, parsed or verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// No data, or the command failed before any could be read.
    None,
    /// READ KEYS parameter data.
    Keys(Result<Keys, ParseError>),
    /// READ RESERVATION parameter data.
    Reservation(Result<ReservationData, ParseError>),
    /// A region read back and checked against the expected pattern.
    Pattern(Result<(), VerifyError>),
}

/// Decides whether a step got what it expects; the details name what came back either way.
///
/// # Errors
/// The details of a step that did not get what it expects.
pub fn judge(expect: Expect, status: Status, payload: Payload) -> Result<Text, Text> {
    match (expect, status) {
        (Expect::Conflict, Status::Conflict) => Ok(text!("RESERVATION CONFLICT (0x18)")),
        (Expect::UnitAttention(wanted), Status::CheckCondition(Ok(sense)))
            if sense.key == scsi_cmd::UNIT_ATTENTION && (sense.asc, sense.ascq) == wanted =>
        {
            Ok(text!("UNIT ATTENTION {:02X}/{:02X}", sense.asc, sense.ascq))
        }
        (Expect::Good, Status::Good) => Ok(text!("GOOD")),
        (Expect::Keys(wanted), Status::Good) => match payload {
            Payload::Keys(Ok(keys)) if keys.is_exactly(wanted) => Ok(text!(
                "GOOD, keys {:x?} (generation {})",
                keys.keys(),
                keys.generation
            )),
            other => Err(text!("GOOD, but keys {other:x?}, expected {wanted:x?}")),
        },
        (Expect::Holder(wanted), Status::Good) => match payload {
            Payload::Reservation(Ok(data)) if holds(data, wanted) => Ok(text!(
                "GOOD, reservation {:x?} (generation {})",
                data.holder,
                data.generation
            )),
            other => Err(text!("GOOD, but {other:x?}, expected {wanted:x?}")),
        },
        (Expect::Data(seed), Status::Good) => match payload {
            Payload::Pattern(Ok(())) => Ok(text!("GOOD, the data of writer {seed:#x}")),
            other => Err(text!(
                "GOOD, but not the data of writer {seed:#x}: {other:x?}"
            )),
        },
        (expect, status) => Err(text!("expected {expect:x?}, got {status:x?}")),
    }
}

/// Whether READ RESERVATION data shows `wanted` (key and type on the LU scope), or no
/// reservation for `None`.
fn holds(data: ReservationData, wanted: Option<(u64, ReservationType)>) -> bool {
    match (data.holder, wanted) {
        (None, None) => true,
        (Some(holder), Some((key, kind))) => {
            holder.key == key && holder.scope == 0 && holder.kind == kind as u8
        }
        _ => false,
    }
}

/// Where a node learns that its next step may run.
pub trait Conductor {
    /// Waits for the host's next byte; `None` after the implementation's time limit.
    fn go(&mut self) -> Option<u8>;
}

/// What a node sends its commands through: the guest's own virtio-scsi driver
/// ([`DriverPort`]), or the shipped image under the guest's StorPort (`mode=image-pr`).
pub trait Port {
    /// Runs `cdb` with `data` on the shared LUN and classifies the outcome.
    ///
    /// # Errors
    /// A transport failure, as a result line's details.
    fn command(&mut self, cdb: &[u8], data: Data) -> Result<Status, Text>;
}

/// The guest's own driver as a node's [`Port`]: one request queue, the LUN QEMU presents.
pub struct DriverPort<'a, H: Hal, R: RegisterIo> {
    hal: &'a H,
    device: Device<R>,
    tag: u64,
    lun: Lun,
    interrupts: &'a dyn Interrupts,
}

impl<H: Hal, R: RegisterIo> Port for DriverPort<'_, H, R> {
    fn command(&mut self, cdb: &[u8], data: Data) -> Result<Status, Text> {
        self.tag += 1;
        let completion = self
            .device
            .command(
                self.hal,
                REQUEST_QUEUE,
                (self.lun, self.tag),
                cdb,
                data,
                self.interrupts,
            )
            .map_err(|e: DriverError| text!("{e}"))?;
        Ok(Status::of(&completion.outcome, completion.sense()))
    }
}

/// The request queue the sequence uses (the first).
const REQUEST_QUEUE: usize = 2;
/// The LUN QEMU presents the iSCSI disk at.
const LUN: (u8, u16) = (0, 0);
/// Offsets in the DMA buffer: PR OUT parameters, PR IN data, region data.
const PARAMETERS_AT: usize = 0;
const PR_IN_AT: usize = 64;
const PR_IN_LEN: u16 = 8 + 8 * reservation::MAX_KEYS as u16;
const REGION_AT: usize = 4096;
/// Bytes of DMA memory the node uses.
pub const BUFFER_LEN: usize = REGION_AT + REGION_BYTES as usize;
/// Unit attentions the first TEST UNIT READY may report (power on, the target's and QEMU's
/// resets) before the LUN must be ready.
const READY_ATTEMPTS: usize = 8;

/// One node's state.
struct Initiator<P: Port, W: Write> {
    port: P,
    out: W,
    buffer: DmaMemory,
    block_length: u32,
}

/// Runs `node`'s part of [`PLAN`] on the device behind `transport` and returns whether every
/// step passed. Results go to `out`; each step waits for `conductor`.
pub fn run<H: Hal, R: RegisterIo, W: Write>(
    hal: &H,
    transport: PciTransport<R>,
    node: Node,
    mut out: W,
    interrupts: &dyn Interrupts,
    conductor: &mut dyn Conductor,
) -> bool {
    let wanted = SCSI_DRIVER_FEATURES - Features::RING_PACKED;
    let device = match Device::bring_up(hal, transport, wanted) {
        Ok(device) => device,
        Err(error) => {
            let _ = writeln!(out, "RESULT pr-ready FAIL bring-up: {error}");
            return false;
        }
    };
    let (buffer, lun) = match (hal.dma_alloc(BUFFER_LEN, 4096), Lun::new(LUN.0, LUN.1)) {
        (Ok(buffer), Ok(lun)) => (buffer, lun),
        (buffer, lun) => {
            let _ = writeln!(
                out,
                "RESULT pr-ready FAIL {:?} {:?}",
                buffer.err(),
                lun.err()
            );
            return false;
        }
    };
    let port = DriverPort {
        hal,
        device,
        tag: 0,
        lun,
        interrupts,
    };
    run_plan(port, buffer, node, out, conductor)
}

/// Runs `node`'s part of [`PLAN`] through `port`, with `buffer` (at least [`BUFFER_LEN`]
/// bytes of DMA memory) for its data; returns whether every step passed.
pub fn run_plan<P: Port, W: Write>(
    port: P,
    buffer: DmaMemory,
    node: Node,
    out: W,
    conductor: &mut dyn Conductor,
) -> bool {
    let mut initiator = Initiator {
        port,
        out,
        buffer,
        block_length: 0,
    };
    let ready = initiator.ready();
    if !initiator.report("pr-ready", &ready) {
        // The host sees the guest leave and stops the sequence.
        return initiator.report("pr-done", &Err(text!("node {} not ready", node.name())));
    }
    let mut failures = 0u32;
    for (index, step) in PLAN.iter().enumerate() {
        if step.node != node {
            continue;
        }
        let Some(number) = step_number(index) else {
            break;
        };
        let _ = writeln!(initiator.out, "PR-STEP-READY {number} {}", step.name);
        match conductor.go() {
            Some(byte) if byte == number => {}
            other => {
                let _ = writeln!(
                    initiator.out,
                    "RESULT pr-{} FAIL the host sent {other:?}, not go for step {number}",
                    step.name
                );
                failures += 1;
                break;
            }
        }
        let check = initiator.step(step);
        let mut name = Text::new();
        let _ = write!(name, "pr-{}", step.name);
        if !initiator.report(name.as_str(), &check) {
            failures += 1;
        }
        let _ = writeln!(initiator.out, "PR-STEP-DONE {number}");
    }
    let done = if failures == 0 {
        Ok(text!("node {} ran its steps as expected", node.name()))
    } else {
        Err(text!("node {}: {failures} failures", node.name()))
    };
    initiator.report("pr-done", &done)
}

impl<P: Port, W: Write> Initiator<P, W> {
    fn report(&mut self, name: &str, check: &Result<Text, Text>) -> bool {
        let (verdict, details) = match check {
            Ok(details) => ("PASS", details),
            Err(details) => ("FAIL", details),
        };
        let _ = writeln!(self.out, "RESULT {name} {verdict} {}", details.as_str());
        check.is_ok()
    }

    /// Runs `cdb` with `data` through the node's port.
    fn command(&mut self, cdb: &[u8], data: Data) -> Result<Status, Text> {
        self.port.command(cdb, data)
    }

    /// Clears the unit attentions a fresh nexus has, checks that the LUN is tgtd's and reads
    /// its block length.
    fn ready(&mut self) -> Result<Text, Text> {
        let mut attentions = 0;
        loop {
            match self.command(&scsi_cmd::test_unit_ready(), Data::None)? {
                Status::Good => break,
                Status::CheckCondition(Ok(sense))
                    if sense.key == scsi_cmd::UNIT_ATTENTION && attentions < READY_ATTEMPTS =>
                {
                    attentions += 1;
                }
                other => return Err(text!("TEST UNIT READY: {other:x?}")),
            }
        }
        let inquiry = self.data_in::<36>(&scsi_cmd::inquiry(36), 36)?;
        let inquiry = scsi_cmd::parse_inquiry(&inquiry).map_err(|e| text!("INQUIRY: {e:?}"))?;
        let capacity = self.data_in::<32>(&scsi_cmd::read_capacity_16(32), 32)?;
        let capacity = scsi_cmd::parse_read_capacity_16(&capacity)
            .map_err(|e| text!("READ CAPACITY: {e:?}"))?;
        let vendor = crate::exercise::ascii(&inquiry.vendor);
        let details = text!(
            "{vendor} {} after {attentions} unit attentions, {} blocks of {}",
            crate::exercise::ascii(&inquiry.product),
            capacity.blocks(),
            capacity.block_length
        );
        let region_blocks = REGION_BYTES / u64::from(capacity.block_length);
        // tgtd's T10 vendor is "IET": anything else is not the iSCSI LUN.
        if vendor != "IET"
            || !REGION_BYTES.is_multiple_of(u64::from(capacity.block_length))
            || capacity.blocks() < REGIONS * region_blocks
        {
            return Err(details);
        }
        self.block_length = capacity.block_length;
        Ok(details)
    }

    /// Runs a data-in command into the PR IN area and copies out what came.
    fn data_in<const N: usize>(&mut self, cdb: &[u8], len: u16) -> Result<[u8; N], Text> {
        let area = self
            .buffer
            .sub(PR_IN_AT, usize::from(len))
            .ok_or(text!("buffer"))?;
        area.zero();
        match self.command(cdb, Data::In(area))? {
            Status::Good => {}
            other => {
                let opcode = cdb.first().copied().unwrap_or(0);
                return Err(text!("opcode {opcode:#04x}: {other:x?}"));
            }
        }
        let mut out = [0u8; N];
        let got = out.len().min(area.len());
        let target = out.get_mut(..got).ok_or(text!("buffer"))?;
        if area.read_bytes(0, target) {
            Ok(out)
        } else {
            Err(text!("cannot read the data back"))
        }
    }

    /// Sends a PR OUT with the basic parameter list.
    fn pr_out(
        &mut self,
        action: OutAction,
        kind: Option<ReservationType>,
        keys: (u64, u64),
    ) -> Result<Status, Text> {
        let parameters = PrOutParameters::new(keys.0, keys.1);
        let area = self
            .buffer
            .sub(PARAMETERS_AT, size_of::<PrOutParameters>())
            .ok_or(text!("buffer"))?;
        if !area.write_bytes(0, parameters.as_bytes()) {
            return Err(text!("cannot write the parameter list"));
        }
        let cdb = reservation::persistent_reserve_out(action, kind);
        self.command(&cdb, Data::Out(area))
    }

    /// Sends a PR IN into the PR IN area and returns the status and the bytes that came.
    fn pr_in(&mut self, action: InAction) -> Result<(Status, [u8; 256]), Text> {
        let area = self
            .buffer
            .sub(PR_IN_AT, usize::from(PR_IN_LEN))
            .ok_or(text!("buffer"))?;
        area.zero();
        let status = self.command(
            &reservation::persistent_reserve_in(action, PR_IN_LEN),
            Data::In(area),
        )?;
        let mut data = [0u8; 256];
        let target = data
            .get_mut(..usize::from(PR_IN_LEN))
            .ok_or(text!("buffer"))?;
        if !area.read_bytes(0, target) {
            return Err(text!("cannot read the data back"));
        }
        Ok((status, data))
    }

    /// The region's buffer and its first LBA and block count.
    fn region(&self, region: u64) -> Result<(DmaMemory, u64, u32), Text> {
        let memory = self
            .buffer
            .sub(REGION_AT, REGION_BYTES as usize)
            .ok_or(text!("buffer"))?;
        let blocks = REGION_BYTES / u64::from(self.block_length.max(1));
        Ok((memory, region * blocks, blocks as u32))
    }

    fn step(&mut self, step: &Step) -> Result<Text, Text> {
        let (status, payload) = match step.action {
            Action::TestUnitReady => (
                self.command(&scsi_cmd::test_unit_ready(), Data::None)?,
                Payload::None,
            ),
            Action::Register { key } => (
                self.pr_out(OutAction::Register, None, (0, key))?,
                Payload::None,
            ),
            Action::Reserve { key, kind } => (
                self.pr_out(OutAction::Reserve, Some(kind), (key, 0))?,
                Payload::None,
            ),
            Action::Release { key, kind } => (
                self.pr_out(OutAction::Release, Some(kind), (key, 0))?,
                Payload::None,
            ),
            Action::Clear { key } => (
                self.pr_out(OutAction::Clear, None, (key, 0))?,
                Payload::None,
            ),
            Action::Preempt { key, victim, kind } => (
                self.pr_out(OutAction::Preempt, Some(kind), (key, victim))?,
                Payload::None,
            ),
            Action::ReadKeys => {
                let (status, data) = self.pr_in(InAction::ReadKeys)?;
                let keys =
                    reservation::parse_read_keys(data.get(..usize::from(PR_IN_LEN)).unwrap_or(&[]));
                (status, Payload::Keys(keys))
            }
            Action::ReadReservation => {
                let (status, data) = self.pr_in(InAction::ReadReservation)?;
                let parsed = reservation::parse_read_reservation(
                    data.get(..usize::from(PR_IN_LEN)).unwrap_or(&[]),
                );
                (status, Payload::Reservation(parsed))
            }
            Action::Write { region, seed } => {
                let (memory, lba, blocks) = self.region(region)?;
                if !pattern::fill(&memory, seed, lba, self.block_length, blocks) {
                    return Err(text!("cannot fill region {region}"));
                }
                let status = self.command(&scsi_cmd::write_16(lba, blocks), Data::Out(memory))?;
                (status, Payload::None)
            }
            Action::Read { region } => {
                let (memory, lba, blocks) = self.region(region)?;
                memory.zero();
                let status = self.command(&scsi_cmd::read_16(lba, blocks), Data::In(memory))?;
                let payload = match step.expect {
                    Expect::Data(seed) => Payload::Pattern(pattern::verify(
                        &memory,
                        seed,
                        lba,
                        self.block_length,
                        blocks,
                    )),
                    _ => Payload::None,
                };
                (status, payload)
            }
        };
        judge(step.expect, status, payload)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    fn outcome(disposition: Disposition, scsi_status: u8, transferred: u32) -> CommandOutcome {
        CommandOutcome {
            disposition,
            scsi_status,
            sense_len: 0,
            autosense_valid: false,
            transferred,
        }
    }

    const UA_2A03: [u8; 18] = [
        0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x2a, 0x03, 0, 0, 0, 0,
    ];

    #[test]
    fn completions_are_classified_by_disposition_and_status() {
        assert_eq!(
            Status::of(&outcome(Disposition::Success, 0, 24), &[]),
            Status::Good
        );
        // A short READ KEYS is an underrun and still GOOD; QEMU's OVERRUN response is not.
        assert_eq!(
            Status::of(&outcome(Disposition::DataOverrun, 0, 8), &[]),
            Status::Good
        );
        assert!(matches!(
            Status::of(&outcome(Disposition::DataOverrun, 0, 0), &[]),
            Status::Other { .. }
        ));
        assert_eq!(
            Status::of(&outcome(Disposition::Error, 0x18, 0), &[]),
            Status::Conflict
        );
        assert_eq!(
            Status::of(&outcome(Disposition::Error, 0x02, 0), &UA_2A03),
            Status::CheckCondition(Ok(Sense {
                key: 6,
                asc: 0x2a,
                ascq: 0x03
            }))
        );
        assert_eq!(
            Status::of(&outcome(Disposition::Error, 0x02, 0), &[]),
            Status::CheckCondition(Err(ParseError::Short {
                received: 0,
                needed: 1
            }))
        );
        // A transport failure keeps status GOOD but is no GOOD completion.
        assert_eq!(
            Status::of(&outcome(Disposition::Error, 0, 0), &[]),
            Status::Other {
                disposition: Disposition::Error,
                status: 0
            }
        );
        assert!(matches!(
            Status::of(&outcome(Disposition::BusReset, 0, 0), &[]),
            Status::Other { .. }
        ));
    }

    fn keys(list: &[u64]) -> Payload {
        let mut data = Vec::new();
        data.extend_from_slice(&1u32.to_be_bytes());
        data.extend_from_slice(&(8 * list.len() as u32).to_be_bytes());
        for key in list {
            data.extend_from_slice(&key.to_be_bytes());
        }
        Payload::Keys(reservation::parse_read_keys(&data))
    }

    fn holder(key: u64, kind: u8) -> Payload {
        Payload::Reservation(Ok(ReservationData {
            generation: 2,
            holder: Some(reservation::Holder {
                key,
                scope: 0,
                kind,
            }),
        }))
    }

    #[test]
    fn the_judge_checks_the_status_and_the_unit_attention_code() {
        let ua = |asc, ascq| {
            Status::CheckCondition(Ok(Sense {
                key: scsi_cmd::UNIT_ATTENTION,
                asc,
                ascq,
            }))
        };
        let table: &[(Expect, Status, Payload, bool)] = &[
            (Expect::Good, Status::Good, Payload::None, true),
            (Expect::Good, Status::Conflict, Payload::None, false),
            (Expect::Good, ua(0x2a, 0x03), Payload::None, false),
            (Expect::Conflict, Status::Conflict, Payload::None, true),
            (Expect::Conflict, Status::Good, Payload::None, false),
            (
                Expect::UnitAttention((0x2a, 0x03)),
                ua(0x2a, 0x03),
                Payload::None,
                true,
            ),
            // The SPC-4 code where tgtd sends another, and another sense key, both fail.
            (
                Expect::UnitAttention((0x2a, 0x05)),
                ua(0x2a, 0x03),
                Payload::None,
                false,
            ),
            (
                Expect::UnitAttention((0x2a, 0x03)),
                Status::CheckCondition(Ok(Sense {
                    key: 5,
                    asc: 0x2a,
                    ascq: 0x03,
                })),
                Payload::None,
                false,
            ),
            (
                Expect::UnitAttention((0x2a, 0x03)),
                Status::Good,
                Payload::None,
                false,
            ),
        ];
        check_verdicts(table);
    }

    /// Judges each (expected, status, payload) of `table` and checks it passes or fails as its
    /// last column says.
    fn check_verdicts(table: &[(Expect, Status, Payload, bool)]) {
        for (expect, status, payload, passes) in table {
            let verdict = judge(*expect, *status, *payload);
            assert_eq!(
                verdict.is_ok(),
                *passes,
                "{expect:?} {status:?} {payload:?}"
            );
        }
    }

    #[test]
    fn the_judge_checks_keys_holder_and_data() {
        let mismatch = Payload::Pattern(Err(VerifyError::Mismatch {
            lba: 0,
            offset: 0,
            expected: 1,
            found: 2,
        }));
        let table: &[(Expect, Status, Payload, bool)] = &[
            (
                Expect::Keys(&[KEY_A, KEY_B]),
                Status::Good,
                keys(&[KEY_B, KEY_A]),
                true,
            ),
            (
                Expect::Keys(&[KEY_A, KEY_B]),
                Status::Good,
                keys(&[KEY_B]),
                false,
            ),
            (Expect::Keys(&[]), Status::Good, keys(&[KEY_A]), false),
            (Expect::Keys(&[]), Status::Conflict, keys(&[]), false),
            (
                Expect::Holder(Some((KEY_B, EA_RO))),
                Status::Good,
                holder(KEY_B, 6),
                true,
            ),
            (
                Expect::Holder(Some((KEY_B, EA_RO))),
                Status::Good,
                holder(KEY_B, 5),
                false,
            ),
            (
                Expect::Holder(Some((KEY_B, EA_RO))),
                Status::Good,
                holder(KEY_A, 6),
                false,
            ),
            (Expect::Holder(None), Status::Good, holder(KEY_A, 6), false),
            (
                Expect::Holder(None),
                Status::Good,
                Payload::Reservation(Ok(ReservationData {
                    generation: 4,
                    holder: None,
                })),
                true,
            ),
            (
                Expect::Data(SEED_A1),
                Status::Good,
                Payload::Pattern(Ok(())),
                true,
            ),
            (Expect::Data(SEED_A1), Status::Good, mismatch, false),
            (
                Expect::Data(SEED_A1),
                Status::Conflict,
                Payload::Pattern(Ok(())),
                false,
            ),
        ];
        check_verdicts(table);
    }

    #[test]
    fn the_plan_is_a_well_formed_two_node_sequence() {
        assert!(step_number(PLAN.len() - 1).is_some());
        assert_eq!(step_number(0), Some(1));
        assert_eq!(step_number(255), None);
        let names: BTreeSet<&str> = PLAN.iter().map(|step| step.name).collect();
        assert_eq!(names.len(), PLAN.len(), "step names are unique");
        for step in PLAN {
            assert!(step.name.starts_with(step.node.name()), "{}", step.name);
            assert!(!step.name.contains(char::is_whitespace));
            if let Action::Write { region, .. } | Action::Read { region } = step.action {
                assert!(region < REGIONS);
            }
        }
        // Reads check the last write to their region, and a refused write changes nothing.
        let mut written = [None; REGIONS as usize];
        for step in PLAN {
            match (step.action, step.expect) {
                (Action::Write { region, seed }, Expect::Good) => {
                    written[region as usize] = Some(seed);
                }
                (Action::Read { region }, Expect::Data(seed)) => {
                    assert_eq!(written[region as usize], Some(seed), "{}", step.name);
                }
                _ => {}
            }
        }
        // The sequence covers what the issue names: register, reserve, conflict, preempt with
        // the victim's unit attention, release, clear.
        let has = |f: &dyn Fn(&Step) -> bool| PLAN.iter().any(f);
        assert!(has(&|s| matches!(s.action, Action::Register { .. })));
        assert!(has(
            &|s| matches!(s.action, Action::Reserve { .. }) && s.expect == Expect::Good
        ));
        assert!(has(
            &|s| s.expect == Expect::Conflict && matches!(s.action, Action::Write { .. })
        ));
        assert!(has(
            &|s| matches!(s.action, Action::Preempt { .. }) && s.expect == Expect::Good
        ));
        assert!(has(&|s| matches!(s.expect, Expect::UnitAttention(_))));
        assert!(has(&|s| matches!(s.action, Action::Release { .. })));
        assert!(has(&|s| matches!(s.action, Action::Clear { .. })));
        assert!(PLAN.iter().any(|s| s.node == Node::A) && PLAN.iter().any(|s| s.node == Node::B));
    }

    proptest! {
        /// Whatever came back, the judge passes a step only when the status matches its
        /// expectation.
        #[test]
        fn the_judge_never_passes_a_wrong_status(
            code in prop_oneof![Just(0u8), Just(0x02), Just(0x08), Just(0x18), Just(0x28)],
            key in 0u8..16, asc in any::<u8>(), ascq in any::<u8>(),
            expect_index in 0usize..4,
        ) {
            let status = match code {
                0 => Status::Good,
                0x18 => Status::Conflict,
                0x02 => Status::CheckCondition(Ok(Sense { key, asc, ascq })),
                other => Status::Other { disposition: Disposition::Error, status: other },
            };
            let expect = [
                Expect::Good,
                Expect::Conflict,
                Expect::UnitAttention(TGT_PREEMPT_ATTENTION),
                Expect::Keys(&[]),
            ][expect_index];
            let passed = judge(expect, status, keys(&[])).is_ok();
            let matches = match expect {
                Expect::Good | Expect::Keys(_) => status == Status::Good,
                Expect::Conflict => status == Status::Conflict,
                Expect::UnitAttention(wanted) => {
                    status == Status::CheckCondition(Ok(Sense { key: 6, asc: wanted.0, ascq: wanted.1 }))
                }
                _ => false,
            };
            prop_assert_eq!(passed, matches);
        }
    }
}
