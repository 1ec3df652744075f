//! The port driver's Plug and Play side: the bus scan, the rescan a `BusChangeDetected`
//! notification asks for, the re-enumeration a `StorPortStateChangeDetected` notification asks
//! for (then the miniport's HwStorStateChange callback), and the units Windows knows.
//!
//! storport.sys does not scan inside the notification: it queues the work
//! (`IoInvalidateDeviceRelations`, then PnP's QUERY_DEVICE_RELATIONS), so several
//! notifications before the scan runs make one scan, and one arriving during a scan makes
//! another after it. The simulator does the same on a worker thread of its own, which submits
//! the scan's commands like any other requests (processor 0). Only one state-change
//! notification is active at a time (Microsoft: "Only one state change request can be active at
//! any time"): a second one before the callback of the first is answered `STOR_STATUS_BUSY`.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::abi;
use super::locks::{Attach, CallContext, LockId};
use super::machine::{Machine, callback};
use super::routine::HwStateChangeFn;
use super::{Completion, Disk, Request, SimError, Violation};

/// What happened to a unit Windows knows, as a rescan or a state change found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PnpEvent {
    /// A disk appeared (PnP would create its PDO).
    Arrived {
        /// TargetId.
        target: u8,
        /// Lun.
        lun: u8,
    },
    /// A disk no longer answers (PnP would surprise-remove its PDO).
    Removed {
        /// TargetId.
        target: u8,
        /// Lun.
        lun: u8,
    },
    /// A disk's capacity or block size changed.
    Changed {
        /// TargetId.
        target: u8,
        /// Lun.
        lun: u8,
        /// Its capacity now, in blocks.
        blocks: u64,
    },
    /// A state-change notification was processed and its callback returned.
    StateChangeProcessed {
        /// The `STATE_CHANGE_*` entity.
        entity: u32,
        /// TargetId from the notification's address.
        target: u8,
        /// Lun from the notification's address.
        lun: u8,
    },
}

/// The port driver's view of the bus, for the scenarios.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PnpView {
    /// The disks Windows knows, by target and LUN.
    pub disks: Vec<Disk>,
    /// Every arrival, removal, change and processed state change, in order.
    pub history: Vec<PnpEvent>,
    /// Rescans done because of `BusChangeDetected`.
    pub rescans: u64,
    /// State-change notifications processed (their callbacks returned).
    pub state_changes: u64,
    /// No rescan or state change is asked for or running.
    pub idle: bool,
    /// Scans that failed (a command that never completed).
    pub errors: Vec<SimError>,
}

/// A `StorPortStateChangeDetected` notification StorPort accepted.
#[derive(Clone, Copy, Debug)]
struct StateChange {
    entity: u32,
    address: usize,
    snapshot: abi::StorAddrBtl8,
    callback: usize,
    context: usize,
    /// The worker took it (it stays active until its callback returned).
    started: bool,
}

/// Whether the worker takes jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Mode {
    /// It takes them as they come.
    #[default]
    Run,
    /// Jobs wait (a scenario holds the port driver's PnP work back).
    Pause,
    /// It ends after its current job.
    Stop,
}

#[derive(Default)]
struct PnpState {
    rescan_requested: bool,
    state_change: Option<StateChange>,
    /// A job is running.
    working: bool,
    mode: Mode,
    disks: BTreeMap<(u8, u8), Disk>,
    history: Vec<PnpEvent>,
    rescans: u64,
    state_changes: u64,
    errors: Vec<SimError>,
}

/// The PnP state of one adapter, shared between the notification exports and the worker.
#[derive(Default)]
pub struct Pnp {
    state: Mutex<PnpState>,
    changed: Condvar,
}

/// What the worker does next.
enum Job {
    Rescan,
    StateChange(StateChange),
}

impl Pnp {
    fn lock(&self) -> MutexGuard<'_, PnpState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `BusChangeDetected`: a rescan is due (one, however many notifications arrive first).
    pub(crate) fn request_rescan(&self) {
        self.lock().rescan_requested = true;
        self.changed.notify_all();
    }

    /// `StorPortStateChangeDetected` with a valid address (read as `snapshot`): accepted unless
    /// another one is active. Returns the STOR_STATUS the miniport gets.
    pub(crate) fn state_change_detected(
        &self,
        entity: u32,
        address: usize,
        snapshot: abi::StorAddrBtl8,
        callback: usize,
        context: usize,
    ) -> u32 {
        let mut state = self.lock();
        if state.state_change.is_some() {
            return abi::STOR_STATUS_BUSY;
        }
        state.state_change = Some(StateChange {
            entity,
            address,
            snapshot,
            callback,
            context,
            started: false,
        });
        drop(state);
        self.changed.notify_all();
        abi::STOR_STATUS_SUCCESS
    }

    /// Holds the worker's jobs back (`true`) or lets them run again.
    pub(crate) fn pause(&self, paused: bool) {
        let mut state = self.lock();
        if state.mode != Mode::Stop {
            state.mode = if paused { Mode::Pause } else { Mode::Run };
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Asks the worker to stop after its current job.
    pub(crate) fn stop(&self) {
        self.lock().mode = Mode::Stop;
        self.changed.notify_all();
    }

    /// The current view.
    pub(crate) fn view(&self) -> PnpView {
        Self::view_of(&self.lock())
    }

    fn view_of(state: &PnpState) -> PnpView {
        PnpView {
            disks: state.disks.values().cloned().collect(),
            history: state.history.clone(),
            rescans: state.rescans,
            state_changes: state.state_changes,
            idle: !state.rescan_requested && state.state_change.is_none() && !state.working,
            errors: state.errors.clone(),
        }
    }

    /// Waits until `until` holds for the view, or `timeout` passes.
    pub(crate) fn wait(
        &self,
        timeout: Duration,
        until: impl Fn(&PnpView) -> bool,
    ) -> Result<PnpView, SimError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            let view = Self::view_of(&state);
            if until(&view) {
                return Ok(view);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(SimError::PnpTimedOut);
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// PnP surprise-removed (or removed) the unit's PDO: Windows no longer knows the disk.
    pub(crate) fn unit_removed(&self, target: u8, lun: u8) {
        Self::record_unit(&mut self.lock(), target, lun, None);
        self.changed.notify_all();
    }

    /// Replaces the known disks with a whole scan's result, recording the differences.
    pub(crate) fn record_scan(&self, found: &[Disk]) {
        let mut state = self.lock();
        let found: BTreeMap<(u8, u8), Disk> = found
            .iter()
            .map(|disk| ((disk.target, disk.lun), disk.clone()))
            .collect();
        let gone: Vec<(u8, u8)> = state
            .disks
            .keys()
            .filter(|key| !found.contains_key(key))
            .copied()
            .collect();
        for (target, lun) in gone {
            state.disks.remove(&(target, lun));
            state.history.push(PnpEvent::Removed { target, lun });
        }
        for disk in found.into_values() {
            Self::record_unit(&mut state, disk.target, disk.lun, Some(disk));
        }
    }

    fn record_unit(state: &mut PnpState, target: u8, lun: u8, found: Option<Disk>) {
        let key = (target, lun);
        match (state.disks.get(&key), found) {
            (None, Some(disk)) => {
                state.history.push(PnpEvent::Arrived { target, lun });
                state.disks.insert(key, disk);
            }
            (Some(known), Some(disk)) => {
                if (known.blocks, known.block_size) != (disk.blocks, disk.block_size) {
                    state.history.push(PnpEvent::Changed {
                        target,
                        lun,
                        blocks: disk.blocks,
                    });
                }
                state.disks.insert(key, disk);
            }
            (Some(_), None) => {
                state.disks.remove(&key);
                state.history.push(PnpEvent::Removed { target, lun });
            }
            (None, None) => {}
        }
    }

    /// The next job, waiting for one; `None` once asked to stop.
    fn next_job(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if state.mode == Mode::Stop {
                return None;
            }
            if state.mode == Mode::Pause {
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            if let Some(change) = state.state_change.as_mut()
                && !change.started
            {
                change.started = true;
                let change = *change;
                state.working = true;
                return Some(Job::StateChange(change));
            }
            if state.rescan_requested {
                state.rescan_requested = false;
                state.working = true;
                return Some(Job::Rescan);
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn job_done(&self, update: impl FnOnce(&mut PnpState)) {
        let mut state = self.lock();
        update(&mut state);
        state.working = false;
        drop(state);
        self.changed.notify_all();
    }
}

/// The worker: rescans and state changes, one at a time, until the adapter stops.
pub(crate) fn worker(machine: &Arc<Machine>) {
    let _attach = Attach::new(machine, 0);
    let pnp = &machine.pnp;
    while let Some(job) = pnp.next_job() {
        match job {
            Job::Rescan => match scan(&|request| machine.execute(0, request), machine.scan_range())
            {
                Ok(disks) => {
                    pnp.record_scan(&disks);
                    pnp.job_done(|state| state.rescans += 1);
                }
                Err(error) => pnp.job_done(|state| {
                    state.errors.push(error);
                    state.rescans += 1;
                }),
            },
            Job::StateChange(change) => state_change(machine, change),
        }
    }
}

/// Re-enumerates what a state change names, checks that the miniport kept its address intact
/// until now, and calls its HwStorStateChange with the StartIo lock held.
fn state_change(machine: &Arc<Machine>, change: StateChange) {
    let pnp = &machine.pnp;
    let (target, lun) = (change.snapshot.target, change.snapshot.lun);
    let result = if change.entity & (abi::STATE_CHANGE_BUS | abi::STATE_CHANGE_TARGET) != 0 {
        scan(&|request| machine.execute(0, request), machine.scan_range())
            .map(|disks| pnp.record_scan(&disks))
    } else {
        probe_unit(&|request| machine.execute(0, request), target, lun)
            .map(|found| Pnp::record_unit(&mut pnp.lock(), target, lun, found))
    };
    let now = read_address(change.address);
    if now.is_none_or(|now| !same_address(&now, &change.snapshot)) {
        machine.violate(Violation::StateChangeAddressChanged {
            address: change.address,
        });
    }
    if let Some(routine) = callback!(change.callback, HwStateChangeFn) {
        let extension = machine.extension_ptr();
        let status = if result.is_ok() {
            abi::STOR_STATUS_SUCCESS
        } else {
            abi::STOR_STATUS_UNSUCCESSFUL
        };
        // SAFETY: HwStorStateChange was registered with this notification; it gets the device
        // extension, the context and the address the miniport passed (kept alive until this
        // call, checked above), with the StartIo lock held at DISPATCH_LEVEL as StorPort does.
        machine.call_locked(LockId::StartIo, CallContext::StateChange, || unsafe {
            routine.call(
                extension,
                std::ptr::with_exposed_provenance_mut(change.context),
                abi::STOR_ADDRESS_TYPE_BTL8.cast_signed(),
                std::ptr::with_exposed_provenance_mut(change.address),
                status,
            );
        });
        machine.run_pending_dpcs();
    }
    pnp.job_done(|state| {
        if let Err(error) = result {
            state.errors.push(error);
        }
        state.state_change = None;
        state.state_changes += 1;
        state.history.push(PnpEvent::StateChangeProcessed {
            entity: change.entity,
            target,
            lun,
        });
    });
}

fn same_address(a: &abi::StorAddrBtl8, b: &abi::StorAddrBtl8) -> bool {
    (a.address_type, a.address_length, a.path, a.target, a.lun)
        == (b.address_type, b.address_length, b.path, b.target, b.lun)
}

/// Reads the STOR_ADDR_BTL8 a state-change notification named.
fn read_address(address: usize) -> Option<abi::StorAddrBtl8> {
    if address == 0 {
        return None;
    }
    let pointer: *const abi::StorAddrBtl8 = std::ptr::with_exposed_provenance(address);
    // SAFETY: the miniport promised (StorPortStateChangeDetected's contract) that the address
    // stays valid and unchanged until its callback runs, which is after this read; an
    // unaligned read tolerates any placement.
    Some(unsafe { pointer.read_unaligned() })
}

/// Whether a command moved its data (SUCCESS, or DATA_OVERRUN: an underrun, valid up to
/// DataTransferLength).
fn transferred(completion: &Completion) -> bool {
    matches!(
        completion.status(),
        abi::SRB_STATUS_SUCCESS | abi::SRB_STATUS_DATA_OVERRUN
    )
}

/// Runs one command to completion (on the port driver's usual path: a simulated processor, or
/// the dump port's synchronous call).
type Execute<'a> = &'a dyn Fn(&Request) -> Result<Completion, SimError>;

/// Standard INQUIRY of `target`/`lun`.
fn inquiry(execute: Execute<'_>, target: u8, lun: u8) -> Result<Completion, SimError> {
    execute(&Request::new(target, lun, &[0x12, 0, 0, 0, 36, 0]).reading(36))
}

/// The disk at `target`/`lun`, if its INQUIRY (`answer`) says a direct-access unit is there
/// and READ CAPACITY (10) answers.
fn disk_of(
    execute: Execute<'_>,
    target: u8,
    lun: u8,
    answer: &Completion,
) -> Result<Option<Disk>, SimError> {
    if !transferred(answer)
        || answer
            .data
            .first()
            .is_none_or(|&byte| byte & 0x1F != 0 || byte >> 5 != 0)
    {
        return Ok(None);
    }
    let capacity =
        execute(&Request::new(target, lun, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]).reading(8))?;
    let Some(bytes) = capacity
        .data
        .first_chunk::<8>()
        .filter(|_| transferred(&capacity))
    else {
        return Ok(None);
    };
    let last = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let block_size = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    Ok(Some(Disk {
        target,
        lun,
        inquiry: answer.data.clone(),
        blocks: u64::from(last) + 1,
        block_size,
    }))
}

/// Re-enumerates one unit: INQUIRY, then READ CAPACITY if it is a disk.
fn probe_unit(execute: Execute<'_>, target: u8, lun: u8) -> Result<Option<Disk>, SimError> {
    let answer = inquiry(execute, target, lun)?;
    disk_of(execute, target, lun, &answer)
}

/// What a bus scan covers: targets `0..targets` (the scenario's choice, never more than the
/// `MaximumNumberOfTargets` the miniport reported) and LUNs below the
/// `MaximumNumberOfLogicalUnits` it reported (the LUNs StorPort can address).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScanRange {
    pub(crate) targets: u8,
    pub(crate) luns: u8,
}

/// REPORT LUNS' first allocation length; a longer list is read again whole.
const REPORT_LUNS_FIRST_ALLOCATION: u32 = 256;

/// The LUN an 8-byte REPORT LUNS entry names (SAM-5 4.7: peripheral device addressing,
/// bus 0, or flat space addressing), `None` for any other form, which StorPort's single-level
/// LUN numbers cannot address.
fn entry_lun(entry: &[u8]) -> Option<u16> {
    let (&first, &second) = (entry.first()?, entry.get(1)?);
    if entry
        .get(2..)
        .is_some_and(|rest| rest.iter().any(|&byte| byte != 0))
    {
        return None;
    }
    match first >> 6 {
        0 if first == 0 => Some(u16::from(second)),
        1 => Some(u16::from(first & 0x3F) << 8 | u16::from(second)),
        _ => None,
    }
}

/// REPORT LUNS of `target` as Windows reads it: with a first allocation length, then again
/// with the length the target reports if the list did not fit. `None` if the target did not
/// answer it.
fn report_luns(execute: Execute<'_>, target: u8) -> Result<Option<Vec<u16>>, SimError> {
    let mut allocation = REPORT_LUNS_FIRST_ALLOCATION;
    loop {
        let length = allocation.to_be_bytes();
        let cdb = [
            0xA0, 0, 0, 0, 0, 0, length[0], length[1], length[2], length[3], 0, 0,
        ];
        let report = execute(&Request::new(target, 0, &cdb).reading(allocation))?;
        let Some(header) = report
            .data
            .first_chunk::<4>()
            .filter(|_| transferred(&report))
        else {
            return Ok(None);
        };
        let listed = u32::from_be_bytes(*header);
        let needed = listed.saturating_add(8);
        if needed > allocation && allocation == REPORT_LUNS_FIRST_ALLOCATION {
            allocation = needed;
            continue;
        }
        let entries = report.data.get(8..).unwrap_or(&[]);
        let entries = entries
            .get(..(listed as usize).min(entries.len()))
            .unwrap_or(&[]);
        return Ok(Some(
            entries.chunks_exact(8).filter_map(entry_lun).collect(),
        ));
    }
}

/// The port driver's bus scan of `range`: INQUIRY LUN 0 of each target, REPORT LUNS (the whole
/// list), INQUIRY and READ CAPACITY (10) of each addressable LUN reported. Returns the
/// direct-access disks found.
pub(crate) fn scan(execute: Execute<'_>, range: ScanRange) -> Result<Vec<Disk>, SimError> {
    let mut disks = Vec::new();
    for target in 0..range.targets {
        let first = inquiry(execute, target, 0)?;
        if !transferred(&first) || first.data.len() < 5 {
            continue;
        }
        let luns = report_luns(execute, target)?.unwrap_or_else(|| vec![0]);
        for lun in luns {
            let Some(lun) = u8::try_from(lun).ok().filter(|&lun| lun < range.luns) else {
                continue;
            };
            let answer = if lun == 0 {
                first.clone()
            } else {
                inquiry(execute, target, lun)?
            };
            if let Some(disk) = disk_of(execute, target, lun, &answer)? {
                disks.push(disk);
            }
        }
    }
    Ok(disks)
}
