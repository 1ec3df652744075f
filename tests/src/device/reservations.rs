//! Reservations of one logical unit shared by several I_T nexuses: SPC-4 persistent
//! reservations (PERSISTENT RESERVE IN/OUT), SPC-2 RESERVE/RELEASE, and the unit attentions
//! they raise.
//!
//! Everything here is pure state behind the logical unit's lock: `Reservations::admit` decides
//! whether a command from a nexus may run at all (a pending unit attention, a reservation
//! conflict), and the PR and RESERVE/RELEASE commands are executed here.
//!
//! Choices where SPC-4 leaves room, and where this target is simpler than the standard:
//! - One target port, relative port identifier 1; ALL_TG_PT is accepted and only recorded.
//!   A nexus's TransportID is the SAS form with an NAA-5 SAS address ([`Nexus::transport_id`]).
//! - SPEC_I_PT is not supported (SIP_C 0): REGISTER with it set fails with INVALID FIELD IN
//!   PARAMETER LIST. REGISTER AND MOVE and REPLACE LOST RESERVATION fail with INVALID FIELD IN
//!   CDB.
//! - APTPL is supported (PTPL_C 1): the last REGISTER's APTPL bit decides whether the state
//!   survives a simulated power loss ([`Lun::power_cycle`](super::Lun::power_cycle)).
//! - Under the Write Exclusive types every nexus may read and send MODE SENSE; under the
//!   Exclusive Access types neither, unless holder (or registrant, for the registrants-only
//!   and all-registrants types). TEST UNIT READY, INQUIRY, REPORT LUNS, REQUEST SENSE, READ
//!   CAPACITY and PERSISTENT RESERVE IN pass every persistent reservation (REPORT
//!   CAPABILITIES: ALLOW COMMANDS 011b).
//! - PREEMPT never removes the preempting nexus's own registration, even when it was
//!   registered with the key being preempted, so a holder can change the type by preempting
//!   its own key.
//! - PREEMPT AND ABORT aborts the victims' tasks received before it: a task still held by its
//!   device completes with virtio-scsi response ABORTED when it falls due, without executing.
//!   No COMMANDS CLEARED BY ANOTHER INITIATOR unit attention is raised (the victims get
//!   REGISTRATIONS PREEMPTED).
//! - SPC-2 RESERVE/RELEASE follow SPC-4 section 5.14.3 (CRH 1): while any nexus is registered
//!   they complete without effect from a holder (or a registrant under a registrants-only or
//!   all-registrants reservation) and conflict from anyone else; while an SPC-2 reservation
//!   exists, PERSISTENT RESERVE IN/OUT conflict from every nexus, the holder included.
//! - Under an SPC-2 reservation, other nexuses may still send INQUIRY, REPORT LUNS, REQUEST
//!   SENSE and RELEASE (which then has no effect); everything else conflicts. A LOGICAL UNIT
//!   RESET ends it, and so does an I_T NEXUS RESET from the holder's device.
//! - Unit attentions are kept per nexus in order, at most eight, duplicates coalesced;
//!   INQUIRY and REPORT LUNS neither report nor clear them, REQUEST SENSE returns and clears
//!   one, every other command is answered with the oldest and clears it.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use super::target::{Outcome, asc, opcode, sense_key};

/// One I_T nexus: a simulated node's initiator port (one [`VirtioScsiDevice`]) paired with the
/// target's single port. Reservations, registrations and unit attentions belong to a nexus.
///
/// Ids are opaque; choose small distinct ones for the nodes of a scenario
/// ([`DeviceOptions::nexus`]), or let each device take a fresh one ([`Nexus::fresh`]).
///
/// [`VirtioScsiDevice`]: super::VirtioScsiDevice
/// [`DeviceOptions::nexus`]: super::DeviceOptions::nexus
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nexus(u64);

/// Where [`Nexus::fresh`] ids start, far above the small ids scenarios choose by hand.
const FRESH_BASE: u64 = 1 << 32;

/// The next id [`Nexus::fresh`] hands out.
static NEXT_FRESH: AtomicU64 = AtomicU64::new(FRESH_BASE);

/// The IEEE OUI in the nexuses' SAS addresses (the one Linux LIO uses for software ports).
const SAS_OUI: u64 = 0x00_1405;

impl Nexus {
    /// The nexus with id `id`.
    #[must_use]
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// A nexus no other call of `fresh` returns (ids from 2^32 up), so devices made without an
    /// explicit nexus are distinct initiators.
    #[must_use]
    pub fn fresh() -> Self {
        // ORDERING: Relaxed suffices: the counter only has to hand out distinct values, and
        // fetch_add is atomic whatever the ordering; nothing else is published through it.
        Self(NEXT_FRESH.fetch_add(1, Ordering::Relaxed))
    }

    /// The id.
    #[must_use]
    pub const fn id(self) -> u64 {
        self.0
    }

    /// The initiator port's SAS address: NAA 5 (IEEE Registered), the OUI 00-14-05, and the
    /// low 36 bits of the id as the vendor-specific identifier (SPC-4 section 7.8.6.6.3).
    #[must_use]
    pub const fn sas_address(self) -> u64 {
        (0x5 << 60) | (SAS_OUI << 36) | (self.0 & 0xF_FFFF_FFFF)
    }

    /// The initiator port's TransportID as READ FULL STATUS reports it: the SAS form (SPC-4
    /// section 7.6.4.7): format code 00b and protocol identifier 6h (SAS) in byte 0, the SAS
    /// address in bytes 4-11, the rest reserved. The miniport presents itself as a SAS adapter
    /// (BusType SAS), so SAS is the transport a Windows host expects to see here.
    #[must_use]
    pub fn transport_id(self) -> [u8; TRANSPORT_ID_LEN] {
        let mut id = [0u8; TRANSPORT_ID_LEN];
        id[0] = PROTOCOL_SAS;
        id[4..12].copy_from_slice(&self.sas_address().to_be_bytes());
        id
    }
}

/// Bytes of a SAS TransportID.
pub const TRANSPORT_ID_LEN: usize = 24;
/// The SAS protocol identifier (SPC-4 section 7.6.1).
const PROTOCOL_SAS: u8 = 0x06;
/// The relative port identifier of the target's only port (SPC-4 section 3.1.120).
const RELATIVE_TARGET_PORT: u16 = 1;

/// SCSI status RESERVATION CONFLICT (SAM-5 section 5.3.1).
pub const RESERVATION_CONFLICT: u8 = 0x18;

/// PERSISTENT RESERVE IN service actions (SPC-4 section 6.15.1).
pub mod pr_in {
    /// READ KEYS.
    pub const READ_KEYS: u8 = 0x00;
    /// READ RESERVATION.
    pub const READ_RESERVATION: u8 = 0x01;
    /// REPORT CAPABILITIES.
    pub const REPORT_CAPABILITIES: u8 = 0x02;
    /// READ FULL STATUS.
    pub const READ_FULL_STATUS: u8 = 0x03;
}

/// PERSISTENT RESERVE OUT service actions (SPC-4 section 6.16.2).
pub mod pr_out {
    /// REGISTER.
    pub const REGISTER: u8 = 0x00;
    /// RESERVE.
    pub const RESERVE: u8 = 0x01;
    /// RELEASE.
    pub const RELEASE: u8 = 0x02;
    /// CLEAR.
    pub const CLEAR: u8 = 0x03;
    /// PREEMPT.
    pub const PREEMPT: u8 = 0x04;
    /// PREEMPT AND ABORT.
    pub const PREEMPT_AND_ABORT: u8 = 0x05;
    /// REGISTER AND IGNORE EXISTING KEY.
    pub const REGISTER_AND_IGNORE_EXISTING_KEY: u8 = 0x06;
}

/// Bytes of the basic PERSISTENT RESERVE OUT parameter list (SPC-4 section 6.16.3).
pub const PR_OUT_PARAMETER_LIST_LEN: usize = 24;

/// Flags in byte 20 of the basic parameter list.
const SPEC_I_PT: u8 = 0x08;
const ALL_TG_PT: u8 = 0x04;
const APTPL: u8 = 0x01;

/// Additional sense codes of the reservation model, as `(asc, ascq)` (SPC-4 annex D).
pub mod pr_asc {
    /// PARAMETER LIST LENGTH ERROR.
    pub const PARAMETER_LIST_LENGTH_ERROR: (u8, u8) = (0x1A, 0x00);
    /// INVALID FIELD IN PARAMETER LIST.
    pub const INVALID_FIELD_IN_PARAMETER_LIST: (u8, u8) = (0x26, 0x00);
    /// INVALID RELEASE OF PERSISTENT RESERVATION.
    pub const INVALID_RELEASE: (u8, u8) = (0x26, 0x04);
    /// RESERVATIONS PREEMPTED.
    pub const RESERVATIONS_PREEMPTED: (u8, u8) = (0x2A, 0x03);
    /// RESERVATIONS RELEASED.
    pub const RESERVATIONS_RELEASED: (u8, u8) = (0x2A, 0x04);
    /// REGISTRATIONS PREEMPTED.
    pub const REGISTRATIONS_PREEMPTED: (u8, u8) = (0x2A, 0x05);
}

/// The persistent reservation types (SPC-4 section 6.15.3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReservationType {
    /// Write Exclusive (1h): only the holder writes; everyone reads.
    WriteExclusive,
    /// Exclusive Access (3h): only the holder reads or writes.
    ExclusiveAccess,
    /// Write Exclusive - Registrants Only (5h): registrants write; everyone reads.
    WriteExclusiveRegistrantsOnly,
    /// Exclusive Access - Registrants Only (6h): only registrants read or write.
    ExclusiveAccessRegistrantsOnly,
    /// Write Exclusive - All Registrants (7h): every registrant is a holder.
    WriteExclusiveAllRegistrants,
    /// Exclusive Access - All Registrants (8h): every registrant is a holder.
    ExclusiveAccessAllRegistrants,
}

impl ReservationType {
    /// Every type, in code order.
    pub const ALL: [Self; 6] = [
        Self::WriteExclusive,
        Self::ExclusiveAccess,
        Self::WriteExclusiveRegistrantsOnly,
        Self::ExclusiveAccessRegistrantsOnly,
        Self::WriteExclusiveAllRegistrants,
        Self::ExclusiveAccessAllRegistrants,
    ];

    /// The type with TYPE code `code`, `None` for reserved and obsolete codes.
    #[must_use]
    pub const fn from_raw(code: u8) -> Option<Self> {
        Some(match code {
            0x1 => Self::WriteExclusive,
            0x3 => Self::ExclusiveAccess,
            0x5 => Self::WriteExclusiveRegistrantsOnly,
            0x6 => Self::ExclusiveAccessRegistrantsOnly,
            0x7 => Self::WriteExclusiveAllRegistrants,
            0x8 => Self::ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    /// The TYPE code.
    #[must_use]
    pub const fn raw(self) -> u8 {
        match self {
            Self::WriteExclusive => 0x1,
            Self::ExclusiveAccess => 0x3,
            Self::WriteExclusiveRegistrantsOnly => 0x5,
            Self::ExclusiveAccessRegistrantsOnly => 0x6,
            Self::WriteExclusiveAllRegistrants => 0x7,
            Self::ExclusiveAccessAllRegistrants => 0x8,
        }
    }

    /// Every registrant holds the reservation (SPC-4 section 5.14.10).
    #[must_use]
    pub const fn all_registrants(self) -> bool {
        matches!(
            self,
            Self::WriteExclusiveAllRegistrants | Self::ExclusiveAccessAllRegistrants
        )
    }

    /// A registrants-only or all-registrants type: access follows registration, not holding.
    #[must_use]
    pub const fn for_registrants(self) -> bool {
        !matches!(self, Self::WriteExclusive | Self::ExclusiveAccess)
    }

    /// An Exclusive Access type: reads are exclusive too.
    #[must_use]
    pub const fn exclusive_access(self) -> bool {
        matches!(
            self,
            Self::ExclusiveAccess
                | Self::ExclusiveAccessRegistrantsOnly
                | Self::ExclusiveAccessAllRegistrants
        )
    }
}

/// The persistent reservation of a logical unit, as [`PrStatus`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PersistentReservation {
    /// Its type (the scope is always LU_SCOPE).
    pub kind: ReservationType,
    /// Its holder; `None` for the all-registrants types, where every registrant holds it.
    pub holder: Option<Nexus>,
}

/// One registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The registered I_T nexus.
    pub nexus: Nexus,
    /// Its reservation key (never zero).
    pub key: u64,
    /// It was made with ALL_TG_PT set (the target has one port, so this changes nothing but
    /// READ FULL STATUS).
    pub all_target_ports: bool,
}

/// A snapshot of a logical unit's reservation state, for test assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrStatus {
    /// PRgeneration (SPC-4 section 6.15.2).
    pub generation: u32,
    /// Registrations, in the order they were made.
    pub registrations: Vec<Registration>,
    /// The persistent reservation, if any.
    pub reservation: Option<PersistentReservation>,
    /// The nexus holding an SPC-2 RESERVE reservation, if any.
    pub scsi2_holder: Option<Nexus>,
    /// The APTPL bit of the last successful REGISTER (registrations survive
    /// [`Lun::power_cycle`](super::Lun::power_cycle) only if set).
    pub persist_through_power_loss: bool,
}

impl PrStatus {
    /// The reservation key `nexus` is registered with.
    #[must_use]
    pub fn key_of(&self, nexus: Nexus) -> Option<u64> {
        self.registrations
            .iter()
            .find(|r| r.nexus == nexus)
            .map(|r| r.key)
    }
}

/// A command as the logical unit received it: from which nexus, and (for PREEMPT AND ABORT)
/// how many times that nexus's tasks had been aborted by then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Task {
    /// The nexus it came from.
    pub(crate) nexus: Nexus,
    /// The nexus's abort count when the task was received.
    abort_epoch: u64,
}

/// How a command relates to reservations: which row of SPC-4's table "SPC commands that are
/// allowed in the presence of various reservations" (and SBC-3's table for SBC commands) it
/// falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Allowed through every reservation (INQUIRY, REPORT LUNS, REQUEST SENSE, READ
    /// CAPACITY, TEST UNIT READY): they neither read nor change the medium.
    Unrestricted,
    /// MODE SENSE: not medium data, but SPC-4 lets it conflict. This target allows it through
    /// the Write Exclusive types (REPORT CAPABILITIES says so: ALLOW COMMANDS 011b) and
    /// conflicts under the Exclusive Access types, like a read.
    ReadParameters,
    /// Reads the medium (READ): conflicts only under the Exclusive Access types.
    ReadMedium,
    /// Changes (or flushes) the medium (WRITE, SYNCHRONIZE CACHE).
    WriteMedium,
    /// PERSISTENT RESERVE IN/OUT: never gated by the persistent reservation's type (PR OUT
    /// checks the reservation key itself), but conflicting with an SPC-2 reservation.
    PersistentReserve,
    /// RESERVE/RELEASE(6)/(10): decided in [`Reservations::reserve_scsi2`] and
    /// [`Reservations::release_scsi2`].
    Scsi2,
}

fn access(op: u8) -> Access {
    match op {
        opcode::PERSISTENT_RESERVE_IN | opcode::PERSISTENT_RESERVE_OUT => Access::PersistentReserve,
        opcode::RESERVE_6 | opcode::RESERVE_10 | opcode::RELEASE_6 | opcode::RELEASE_10 => {
            Access::Scsi2
        }
        opcode::MODE_SENSE_6 | opcode::MODE_SENSE_10 => Access::ReadParameters,
        opcode::READ_10 | opcode::READ_16 => Access::ReadMedium,
        opcode::WRITE_10
        | opcode::WRITE_16
        | opcode::SYNCHRONIZE_CACHE_10
        | opcode::SYNCHRONIZE_CACHE_16 => Access::WriteMedium,
        // INQUIRY, REPORT LUNS, REQUEST SENSE, READ CAPACITY, TEST UNIT READY, and opcodes the
        // target does not implement (they fail with INVALID COMMAND OPERATION CODE whatever
        // the reservations).
        _ => Access::Unrestricted,
    }
}

/// The most unit attentions kept per nexus; more are dropped (SAM-5 section 5.14 allows a
/// device server to report only some of several pending conditions).
const MAX_UNIT_ATTENTIONS: usize = 8;

/// The reservation state of one logical unit (the choices it makes are listed in the module
/// documentation).
#[derive(Debug, Default)]
pub(crate) struct Reservations {
    registrations: Vec<Registration>,
    /// The persistent reservation; for all-registrants types the holder field is unused.
    reservation: Option<PersistentReservation>,
    generation: u32,
    aptpl: bool,
    unit_attentions: BTreeMap<Nexus, VecDeque<(u8, u8)>>,
    scsi2_holder: Option<Nexus>,
    /// Per nexus, how many PREEMPT AND ABORTs removed its registration: its tasks received
    /// before the latest one are aborted.
    aborts: BTreeMap<Nexus, u64>,
}

/// The basic PERSISTENT RESERVE OUT parameter list (SPC-4 section 6.16.3).
#[derive(Clone, Copy, Debug)]
struct Parameters {
    key: u64,
    service_action_key: u64,
    flags: u8,
}

impl Parameters {
    fn parse(data: &[u8]) -> Option<Self> {
        let be64 = |at: usize| {
            data.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
        };
        Some(Self {
            key: be64(0)?,
            service_action_key: be64(8)?,
            flags: *data.get(20)?,
        })
    }
}

fn conflict() -> Outcome {
    Outcome::status_only(RESERVATION_CONFLICT)
}

fn illegal(code: (u8, u8)) -> Outcome {
    Outcome::check(sense_key::ILLEGAL_REQUEST, code)
}

fn good() -> Outcome {
    Outcome::status_only(super::target::GOOD)
}

impl Reservations {
    /// A snapshot for assertions.
    #[must_use]
    pub fn status(&self) -> PrStatus {
        PrStatus {
            generation: self.generation,
            registrations: self.registrations.clone(),
            reservation: self.reservation,
            scsi2_holder: self.scsi2_holder,
            persist_through_power_loss: self.aptpl,
        }
    }

    /// The unit attentions pending for `nexus`, oldest first.
    #[must_use]
    pub fn unit_attentions(&self, nexus: Nexus) -> Vec<(u8, u8)> {
        self.unit_attentions
            .get(&nexus)
            .map(|queue| queue.iter().copied().collect())
            .unwrap_or_default()
    }

    /// A task received now from `nexus`.
    #[must_use]
    pub fn receive(&self, nexus: Nexus) -> Task {
        Task {
            nexus,
            abort_epoch: self.aborts.get(&nexus).copied().unwrap_or(0),
        }
    }

    /// Whether a PREEMPT AND ABORT aborted `task` after it was received.
    #[must_use]
    pub fn aborted(&self, task: Task) -> bool {
        self.receive(task.nexus).abort_epoch != task.abort_epoch
    }

    fn registration(&self, nexus: Nexus) -> Option<&Registration> {
        self.registrations.iter().find(|r| r.nexus == nexus)
    }

    fn registered(&self, nexus: Nexus) -> bool {
        self.registration(nexus).is_some()
    }

    /// Whether `nexus` holds the persistent reservation (SPC-4 section 5.14.10).
    fn holds(&self, nexus: Nexus) -> bool {
        match self.reservation {
            None => false,
            Some(r) if r.kind.all_registrants() => self.registered(nexus),
            Some(r) => r.holder == Some(nexus),
        }
    }

    fn raise(&mut self, nexus: Nexus, code: (u8, u8)) {
        let queue = self.unit_attentions.entry(nexus).or_default();
        if !queue.contains(&code) && queue.len() < MAX_UNIT_ATTENTIONS {
            queue.push_back(code);
        }
    }

    /// Raises `code` on every registered nexus except `except`.
    fn raise_on_registrants(&mut self, except: Nexus, code: (u8, u8)) {
        let others: Vec<Nexus> = self
            .registrations
            .iter()
            .map(|r| r.nexus)
            .filter(|&n| n != except)
            .collect();
        for nexus in others {
            self.raise(nexus, code);
        }
    }

    /// Decides whether `cdb` from `nexus` runs: `Some` is the answer instead (a unit attention,
    /// or RESERVATION CONFLICT). Commands that pass are then executed by the logical unit (or,
    /// for the reservation commands, by this state).
    pub fn admit(&mut self, nexus: Nexus, cdb: &[u8]) -> Option<Outcome> {
        let op = cdb.first().copied().unwrap_or(0);
        if let Some(answer) = self.report_unit_attention(nexus, op, cdb) {
            return Some(answer);
        }
        let access = access(op);
        if let Some(holder) = self.scsi2_holder {
            let allowed = match access {
                // SPC-4 section 5.14.3: reservation commands conflict from every nexus.
                Access::PersistentReserve => false,
                _ if holder == nexus => true,
                Access::Scsi2 => matches!(op, opcode::RELEASE_6 | opcode::RELEASE_10),
                _ => matches!(
                    op,
                    opcode::INQUIRY | opcode::REPORT_LUNS | opcode::REQUEST_SENSE
                ),
            };
            if !allowed {
                return Some(conflict());
            }
        }
        self.persistent_conflict(nexus, access).then(conflict)
    }

    /// A pending unit attention for `nexus`, reported as SAM-5 section 5.14 and SPC-4 section
    /// 6.37 say: INQUIRY and REPORT LUNS run as usual and leave it pending; REQUEST SENSE
    /// returns it as its data; anything else fails with it. Reporting clears it.
    fn report_unit_attention(&mut self, nexus: Nexus, op: u8, cdb: &[u8]) -> Option<Outcome> {
        if matches!(op, opcode::INQUIRY | opcode::REPORT_LUNS) {
            return None;
        }
        let queue = self.unit_attentions.get_mut(&nexus)?;
        let code = queue.pop_front()?;
        if queue.is_empty() {
            self.unit_attentions.remove(&nexus);
        }
        if op == opcode::REQUEST_SENSE {
            let allocation = usize::from(cdb.get(4).copied().unwrap_or(0));
            let mut sense = super::target::fixed_sense(sense_key::UNIT_ATTENTION, code);
            sense.truncate(allocation);
            return Some(Outcome::good_data(sense));
        }
        Some(Outcome::check(sense_key::UNIT_ATTENTION, code))
    }

    /// Whether the persistent reservation makes a command of `access` from `nexus` conflict
    /// (the SPC-4 and SBC-3 tables of commands allowed in the presence of reservations).
    fn persistent_conflict(&self, nexus: Nexus, access: Access) -> bool {
        let Some(reservation) = self.reservation else {
            return false;
        };
        if self.holds(nexus) {
            return false;
        }
        let kind = reservation.kind;
        // Under the registrants-only and all-registrants types a registrant has full access.
        if kind.for_registrants() && self.registered(nexus) {
            return false;
        }
        match access {
            Access::Unrestricted | Access::PersistentReserve | Access::Scsi2 => false,
            Access::ReadParameters | Access::ReadMedium => kind.exclusive_access(),
            Access::WriteMedium => true,
        }
    }

    /// PERSISTENT RESERVE IN (SPC-4 section 6.15), answered with at most `allocation` bytes
    /// (the headers still give the full length).
    #[must_use]
    pub fn persistent_reserve_in(&self, cdb: &[u8]) -> Outcome {
        let action = cdb.get(1).copied().unwrap_or(0) & 0x1F;
        let allocation = usize::from(u16::from_be_bytes([
            cdb.get(7).copied().unwrap_or(0),
            cdb.get(8).copied().unwrap_or(0),
        ]));
        let data = match action {
            pr_in::READ_KEYS => self.read_keys(),
            pr_in::READ_RESERVATION => self.read_reservation(),
            pr_in::REPORT_CAPABILITIES => self.report_capabilities(),
            pr_in::READ_FULL_STATUS => self.read_full_status(),
            _ => return illegal(asc::INVALID_FIELD_IN_CDB),
        };
        let mut data = data;
        data.truncate(allocation);
        Outcome::good_data(data)
    }

    /// PRgeneration and ADDITIONAL LENGTH, then `body`.
    fn with_header(&self, body: &[u8]) -> Vec<u8> {
        let mut data = self.generation.to_be_bytes().to_vec();
        data.extend_from_slice(&(body.len() as u32).to_be_bytes());
        data.extend_from_slice(body);
        data
    }

    /// READ KEYS parameter data (SPC-4 section 6.15.2).
    fn read_keys(&self) -> Vec<u8> {
        let keys: Vec<u8> = self
            .registrations
            .iter()
            .flat_map(|r| r.key.to_be_bytes())
            .collect();
        self.with_header(&keys)
    }

    /// READ RESERVATION parameter data (SPC-4 section 6.15.3): the holder's key (zero for the
    /// all-registrants types), then SCOPE and TYPE.
    fn read_reservation(&self) -> Vec<u8> {
        let Some(reservation) = self.reservation else {
            return self.with_header(&[]);
        };
        let key = reservation
            .holder
            .filter(|_| !reservation.kind.all_registrants())
            .and_then(|holder| self.registration(holder))
            .map_or(0, |r| r.key);
        let mut body = [0u8; 16];
        body[..8].copy_from_slice(&key.to_be_bytes());
        body[13] = reservation.kind.raw(); // SCOPE 0h (LU_SCOPE) in the high nibble
        self.with_header(&body)
    }

    /// REPORT CAPABILITIES parameter data (SPC-4 section 6.15.4).
    fn report_capabilities(&self) -> Vec<u8> {
        let mut data = vec![0u8; 8];
        data[1] = 8; // LENGTH
        // CRH, ATP_C, PTPL_C; no SIP_C (SPEC_I_PT), no RLR_C.
        data[2] = 0x10 | 0x04 | 0x01;
        // TMV, ALLOW COMMANDS 011b (TEST UNIT READY through every type, MODE SENSE through
        // the Write Exclusive types), PTPL_A.
        data[3] = 0x80 | (0b011 << 4) | u8::from(self.aptpl);
        // PERSISTENT RESERVATION TYPE MASK: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX; then
        // EX_AC_AR.
        data[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02;
        data[5] = 0x01;
        data
    }

    /// READ FULL STATUS parameter data (SPC-4 section 6.15.5): one descriptor per
    /// registration, each with the nexus's SAS TransportID.
    fn read_full_status(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for registration in &self.registrations {
            let holder = self.holds(registration.nexus);
            let mut descriptor = [0u8; 24];
            descriptor[..8].copy_from_slice(&registration.key.to_be_bytes());
            descriptor[12] = (u8::from(registration.all_target_ports) << 1) | u8::from(holder);
            if let (true, Some(reservation)) = (holder, self.reservation) {
                descriptor[13] = reservation.kind.raw();
            }
            descriptor[18..20].copy_from_slice(&RELATIVE_TARGET_PORT.to_be_bytes());
            descriptor[20..24].copy_from_slice(&(TRANSPORT_ID_LEN as u32).to_be_bytes());
            body.extend_from_slice(&descriptor);
            body.extend_from_slice(&registration.nexus.transport_id());
        }
        self.with_header(&body)
    }

    /// PERSISTENT RESERVE OUT (SPC-4 section 6.16) from `nexus` with parameter list
    /// `parameters` (the data-out bytes).
    pub fn persistent_reserve_out(
        &mut self,
        nexus: Nexus,
        cdb: &[u8],
        parameters: &[u8],
    ) -> Outcome {
        let byte = |at: usize| cdb.get(at).copied().unwrap_or(0);
        let action = byte(1) & 0x1F;
        if action > pr_out::REGISTER_AND_IGNORE_EXISTING_KEY {
            // REGISTER AND MOVE, REPLACE LOST RESERVATION and reserved codes.
            return illegal(asc::INVALID_FIELD_IN_CDB);
        }
        let length = u32::from_be_bytes([byte(5), byte(6), byte(7), byte(8)]);
        if length as usize != PR_OUT_PARAMETER_LIST_LEN {
            return illegal(pr_asc::PARAMETER_LIST_LENGTH_ERROR);
        }
        let Some(p) = Parameters::parse(parameters) else {
            return illegal(pr_asc::PARAMETER_LIST_LENGTH_ERROR);
        };
        let scope = byte(2) >> 4;
        let kind = ReservationType::from_raw(byte(2) & 0x0F);
        if matches!(
            action,
            pr_out::REGISTER | pr_out::REGISTER_AND_IGNORE_EXISTING_KEY
        ) {
            return self.register(nexus, p, action == pr_out::REGISTER);
        }
        // Every other service action needs a registered nexus that names its own key (SPC-4
        // section 6.16.3); from an unregistered nexus they all conflict.
        match self.registration(nexus) {
            Some(r) if r.key == p.key => {}
            _ => return conflict(),
        }
        let scope_and_type = || match kind {
            Some(kind) if scope == 0 => Ok(kind),
            _ => Err(illegal(asc::INVALID_FIELD_IN_CDB)),
        };
        match action {
            pr_out::RESERVE => match scope_and_type() {
                Ok(kind) => self.reserve(nexus, kind),
                Err(outcome) => outcome,
            },
            pr_out::RELEASE => self.release(nexus, scope, byte(2) & 0x0F),
            pr_out::CLEAR => self.clear(nexus),
            _ => self.preempt(
                nexus,
                p.service_action_key,
                scope_and_type,
                action == pr_out::PREEMPT_AND_ABORT,
            ),
        }
    }

    /// REGISTER (`check_key`) and REGISTER AND IGNORE EXISTING KEY (SPC-4 section 5.14.7).
    fn register(&mut self, nexus: Nexus, p: Parameters, check_key: bool) -> Outcome {
        if p.flags & SPEC_I_PT != 0 {
            return illegal(pr_asc::INVALID_FIELD_IN_PARAMETER_LIST);
        }
        let existing = self.registrations.iter().position(|r| r.nexus == nexus);
        let current_key = existing
            .and_then(|at| self.registrations.get(at))
            .map(|r| r.key);
        if check_key && p.key != current_key.unwrap_or(0) {
            return conflict();
        }
        let new_key = p.service_action_key;
        match (existing, new_key) {
            // Unregistered and asking for no key: nothing to do, and nothing changed, so
            // PRgeneration stays (SPC-4 section 5.14.7.2).
            (None, 0) => return good(),
            (None, key) => self.registrations.push(Registration {
                nexus,
                key,
                all_target_ports: p.flags & ALL_TG_PT != 0,
            }),
            (Some(_), 0) => self.unregister(nexus),
            (Some(at), key) => {
                if let Some(registration) = self.registrations.get_mut(at) {
                    registration.key = key;
                }
            }
        }
        self.aptpl = p.flags & APTPL != 0;
        self.generation = self.generation.wrapping_add(1);
        good()
    }

    /// Removes `nexus`'s registration by its own REGISTER (SPC-4 section 5.14.11.3): a holder
    /// leaving releases its reservation, telling the remaining registrants if the type was
    /// registrants-only; the last registrant leaving ends an all-registrants reservation.
    fn unregister(&mut self, nexus: Nexus) {
        let held = self.holds(nexus);
        self.registrations.retain(|r| r.nexus != nexus);
        let Some(reservation) = self.reservation else {
            return;
        };
        if reservation.kind.all_registrants() {
            if self.registrations.is_empty() {
                self.reservation = None;
            }
        } else if held {
            self.reservation = None;
            if reservation.kind.for_registrants() {
                self.raise_on_registrants(nexus, pr_asc::RESERVATIONS_RELEASED);
            }
        }
    }

    /// RESERVE (SPC-4 section 5.14.9).
    fn reserve(&mut self, nexus: Nexus, kind: ReservationType) -> Outcome {
        match self.reservation {
            None => {
                self.reservation = Some(PersistentReservation {
                    kind,
                    holder: (!kind.all_registrants()).then_some(nexus),
                });
                good()
            }
            // The holder reserving again with the same type and scope: nothing changes.
            Some(current) if current.kind == kind && self.holds(nexus) => good(),
            Some(_) => conflict(),
        }
    }

    /// RELEASE (SPC-4 section 5.14.11.2). `scope` and `code` are the CDB's fields.
    fn release(&mut self, nexus: Nexus, scope: u8, code: u8) -> Outcome {
        let Some(reservation) = self.reservation else {
            return good();
        };
        if !self.holds(nexus) {
            return good();
        }
        if scope != 0 || code != reservation.kind.raw() {
            return illegal(pr_asc::INVALID_RELEASE);
        }
        self.reservation = None;
        if reservation.kind.for_registrants() {
            self.raise_on_registrants(nexus, pr_asc::RESERVATIONS_RELEASED);
        }
        good()
    }

    /// CLEAR (SPC-4 section 5.14.11.6).
    fn clear(&mut self, nexus: Nexus) -> Outcome {
        self.raise_on_registrants(nexus, pr_asc::RESERVATIONS_PREEMPTED);
        self.registrations.clear();
        self.reservation = None;
        self.generation = self.generation.wrapping_add(1);
        good()
    }

    /// PREEMPT and PREEMPT AND ABORT (SPC-4 sections 5.14.11.4 and 5.14.11.5).
    /// `scope_and_type` validates the CDB's SCOPE and TYPE, which only matter when a new
    /// reservation is established.
    fn preempt(
        &mut self,
        nexus: Nexus,
        victim_key: u64,
        scope_and_type: impl FnOnce() -> Result<ReservationType, Outcome>,
        abort: bool,
    ) -> Outcome {
        let reservation = self.reservation;
        let holder_key = reservation
            .and_then(|r| r.holder.filter(|_| !r.kind.all_registrants()))
            .and_then(|holder| self.registration(holder))
            .map(|r| r.key);
        let takes_reservation = match reservation {
            // An all-registrants reservation is taken over with a zero key.
            Some(r) if r.kind.all_registrants() => victim_key == 0,
            Some(_) => holder_key == Some(victim_key),
            None => false,
        };
        if takes_reservation {
            let kind = match scope_and_type() {
                Ok(kind) => kind,
                Err(outcome) => return outcome,
            };
            let victims: Vec<Nexus> = self
                .registrations
                .iter()
                .filter(|r| r.nexus != nexus && (victim_key == 0 || r.key == victim_key))
                .map(|r| r.nexus)
                .collect();
            self.remove_preempted(&victims, abort);
            let changed = reservation.is_some_and(|r| r.kind != kind);
            self.reservation = Some(PersistentReservation {
                kind,
                holder: (!kind.all_registrants()).then_some(nexus),
            });
            // Registrants that keep their registration lose the old reservation's access
            // terms if the type changed.
            if changed {
                self.raise_on_registrants(nexus, pr_asc::RESERVATIONS_RELEASED);
            }
        } else {
            if victim_key == 0 {
                return illegal(pr_asc::INVALID_FIELD_IN_PARAMETER_LIST);
            }
            if !self.registrations.iter().any(|r| r.key == victim_key) {
                return conflict();
            }
            let victims: Vec<Nexus> = self
                .registrations
                .iter()
                .filter(|r| r.nexus != nexus && r.key == victim_key)
                .map(|r| r.nexus)
                .collect();
            self.remove_preempted(&victims, abort);
        }
        self.generation = self.generation.wrapping_add(1);
        good()
    }

    /// Removes the registrations of `victims`, each told REGISTRATIONS PREEMPTED, and with
    /// `abort` aborts their tasks received so far.
    fn remove_preempted(&mut self, victims: &[Nexus], abort: bool) {
        self.registrations.retain(|r| !victims.contains(&r.nexus));
        for &victim in victims {
            self.raise(victim, pr_asc::REGISTRATIONS_PREEMPTED);
            if abort {
                let count = self.aborts.entry(victim).or_default();
                *count = count.wrapping_add(1);
            }
        }
        if self
            .reservation
            .is_some_and(|r| r.kind.all_registrants() && self.registrations.is_empty())
        {
            self.reservation = None;
        }
    }

    /// RESERVE(6) and RESERVE(10) (SPC-2 section 7.21; SPC-4 section 5.14.3 while persistent
    /// registrations exist). Third-party reservations are not supported.
    pub fn reserve_scsi2(&mut self, nexus: Nexus, cdb: &[u8]) -> Outcome {
        if let Some(answer) = Self::scsi2_fields(cdb) {
            return answer;
        }
        if !self.registrations.is_empty() {
            return self.scsi2_under_persistent(nexus);
        }
        match self.scsi2_holder {
            Some(holder) if holder != nexus => conflict(),
            _ => {
                self.scsi2_holder = Some(nexus);
                good()
            }
        }
    }

    /// RELEASE(6) and RELEASE(10): releases the holder's reservation; from another nexus it
    /// succeeds without effect (SPC-2 section 7.17).
    pub fn release_scsi2(&mut self, nexus: Nexus, cdb: &[u8]) -> Outcome {
        if let Some(answer) = Self::scsi2_fields(cdb) {
            return answer;
        }
        if !self.registrations.is_empty() {
            return self.scsi2_under_persistent(nexus);
        }
        if self.scsi2_holder == Some(nexus) {
            self.scsi2_holder = None;
        }
        good()
    }

    /// The RESERVE(10)/RELEASE(10) fields this target refuses: 3RDPTY, LONGID, and a
    /// parameter list.
    fn scsi2_fields(cdb: &[u8]) -> Option<Outcome> {
        let op = cdb.first().copied().unwrap_or(0);
        let ten = matches!(op, opcode::RESERVE_10 | opcode::RELEASE_10);
        let byte = |at: usize| cdb.get(at).copied().unwrap_or(0);
        (ten && (byte(1) & 0x12 != 0 || byte(7) != 0 || byte(8) != 0))
            .then(|| illegal(asc::INVALID_FIELD_IN_CDB))
    }

    /// RESERVE or RELEASE while persistent registrations exist (SPC-4 section 5.14.3): a
    /// no-op from a holder, or from a registrant under a registrants-only or all-registrants
    /// reservation; a conflict otherwise.
    fn scsi2_under_persistent(&self, nexus: Nexus) -> Outcome {
        let registrant_access = self
            .reservation
            .is_some_and(|r| r.kind.for_registrants() && self.registered(nexus));
        if self.holds(nexus) || registrant_access {
            good()
        } else {
            conflict()
        }
    }

    /// A logical unit reset (SAM-5 section 6.6): SPC-2 reservations end, persistent ones stay.
    pub fn logical_unit_reset(&mut self) {
        self.scsi2_holder = None;
    }

    /// `nexus` was lost (I_T NEXUS RESET, SAM-5 section 6.7): its SPC-2 reservation ends.
    pub fn nexus_loss(&mut self, nexus: Nexus) {
        if self.scsi2_holder == Some(nexus) {
            self.scsi2_holder = None;
        }
    }

    /// Power loss and power on: SPC-2 reservations and unit attentions are lost; the persistent
    /// state survives only if the last REGISTER set APTPL (SPC-4 section 5.14.5).
    pub fn power_cycle(&mut self) {
        self.scsi2_holder = None;
        self.unit_attentions.clear();
        if !self.aptpl {
            self.registrations.clear();
            self.reservation = None;
        }
    }
}

#[cfg(test)]
mod tests;
