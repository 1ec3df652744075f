//! Fixtures the scenario tests share: READ(10)/WRITE(10) CDBs, the standard disks and bus, a
//! faulted read, a polling wait, a replayable random sequence, and the held-load checks of the
//! reset and unit control scenarios.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rvscsi::storport::SRB_STATUS_SUCCESS;

use crate::device::target::{Lun, LunConfigError, LunIdentity, opcode};
use crate::device::{DeviceOptions, FaultAction, RequestInfo, TmfAction, TmfInfo};
use crate::harness::{BootError, Machine, boot, fault_once};
use crate::sim::{Completion, Request, SimError, SimOptions, Ticket};

/// A READ(10) or WRITE(10) CDB (SBC-3 5.11 and 5.32): `opcode`, the big-endian LBA in bytes 2 to
/// 5, the big-endian block count in bytes 7 and 8.
#[must_use]
pub fn rw10(opcode: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let [l0, l1, l2, l3] = lba.to_be_bytes();
    let [b0, b1] = blocks.to_be_bytes();
    [opcode, 0, l0, l1, l2, l3, 0, b0, b1, 0]
}

/// READ(10) of `blocks` blocks from `lba`.
#[must_use]
pub fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    rw10(opcode::READ_10, lba, blocks)
}

/// WRITE(10) of `blocks` blocks to `lba`.
#[must_use]
pub fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    rw10(opcode::WRITE_10, lba, blocks)
}

/// A memory disk of `blocks` 512-byte blocks whose VPD page 0x83 has no designator, as QEMU's
/// scsi-hd without serial or wwn: the miniport must synthesise one.
///
/// # Errors
/// [`LunConfigError`] for zero blocks.
pub fn anonymous_disk(blocks: u64) -> Result<Lun, LunConfigError> {
    Ok(Lun::memory(blocks, 512)?.with_identity(LunIdentity {
        naa_id: None,
        ..LunIdentity::default()
    }))
}

/// The addresses of the standard bus: two LUNs of target 0 and one of target 1, so that a LUN,
/// a target and the whole bus each have something beside them.
pub const STANDARD_BUS: [(u8, u16); 3] = [(0, 0), (0, 1), (1, 0)];

/// Boots the real miniport on the [`STANDARD_BUS`], each LUN a new disk from `disk`.
///
/// # Errors
/// [`BootError`] as [`boot`] returns it.
pub fn boot_standard(
    sim: SimOptions,
    device: DeviceOptions,
    mut disk: impl FnMut() -> Lun,
) -> Result<Machine, BootError> {
    let luns = STANDARD_BUS
        .iter()
        .map(|&(target, lun)| (target, lun, disk()))
        .collect();
    boot(sim, device, luns)
}

/// A READ(10) of the first block of LUN 0:0.
#[must_use]
pub fn first_block_read() -> Request {
    Request::new(0, 0, &read10(0, 1)).reading(512)
}

/// Reads the first block of LUN 0:0 with an SRB timeout of `timeout_seconds`, the device doing
/// `fault` to that READ(10): what the miniport's recovery makes of it.
///
/// # Errors
/// [`SimError`] as [`crate::sim::Adapter::execute`] returns it.
pub fn faulted_read(
    machine: &Machine,
    fault: FaultAction,
    timeout_seconds: u32,
) -> Result<Completion, SimError> {
    machine.device.set_fault_hook(Some(fault_once(
        |info| info.cdb.first() == Some(&opcode::READ_10),
        fault,
    )));
    let mut request = first_block_read();
    request.timeout_seconds = timeout_seconds;
    machine.adapter.execute(0, &request)
}

/// Polls `condition` every millisecond until it holds or `timeout` has passed: for what the
/// miniport or the device does on their own threads after the event a test waits for. Whether
/// it held.
#[must_use]
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// xorshift64* (Marsaglia; Vigna's multiplier): a deterministic sequence, so that a failing
/// random scenario replays from its seed.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next number of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Blocks per request of a held load (each request has its own range).
pub const SPAN: u16 = 8;

/// SRB timeout of held requests (3,000 s, 30 s of simulated time): StorPort's own timeout must
/// not interfere unless a scenario wants it to.
pub const LONG_TIMEOUT: u32 = 3000;

/// Data whose first 8 bytes are `stamp` (the device's write journal records them) and the rest
/// derived from it.
#[must_use]
pub fn stamped(stamp: u64, len: usize) -> Vec<u8> {
    let mut data: Vec<u8> = (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(stamp) as u8)
        .collect();
    if let Some(head) = data.get_mut(..8) {
        head.copy_from_slice(&stamp.to_le_bytes());
    }
    data
}

/// One request of a load.
#[derive(Clone)]
pub struct Io {
    /// The simulator's handle of the request.
    pub ticket: Ticket,
    /// Its target.
    pub target: u8,
    /// Its LUN.
    pub lun: u8,
    /// The first of its [`SPAN`] blocks.
    pub lba: u32,
    /// What it writes (`None`: a read).
    pub data: Option<Vec<u8>>,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.data.is_some() { "write" } else { "read" };
        write!(
            f,
            "{kind} {:?} of {}:{} at LBA {}",
            self.ticket, self.target, self.lun, self.lba
        )
    }
}

/// Submits `count` requests of [`SPAN`] blocks to `target`/`lun` on disjoint ranges from
/// `first_lba`, writes (stamped with their address) and reads alternating, over four
/// processors, each with the [`LONG_TIMEOUT`].
///
/// # Panics
/// If the simulator refuses a request.
#[must_use]
pub fn submit_load(
    machine: &Machine,
    target: u8,
    lun: u8,
    count: usize,
    first_lba: u32,
) -> Vec<Io> {
    (0..count)
        .map(|i| {
            let index = u32::try_from(i).expect("a load of fewer than 2^32 requests");
            let lba = first_lba + index * u32::from(SPAN);
            let bytes = u32::from(SPAN) * 512;
            let (mut request, data) = if i % 2 == 0 {
                let stamp = (u64::from(target) << 56) | (u64::from(lun) << 48) | u64::from(lba);
                let data = stamped(stamp, bytes as usize);
                (
                    Request::new(target, lun, &write10(lba, SPAN)).writing(&data),
                    Some(data),
                )
            } else {
                (
                    Request::new(target, lun, &read10(lba, SPAN)).reading(bytes),
                    None,
                )
            };
            request.timeout_seconds = LONG_TIMEOUT;
            let ticket = machine.adapter.submit(index % 4, &request).unwrap();
            Io {
                ticket,
                target,
                lun,
                lba,
                data,
            }
        })
        .collect()
}

/// Waits (up to 10 s) until the device holds at least `count` requests.
///
/// # Panics
/// If it does not.
pub fn wait_held(machine: &Machine, count: usize) {
    assert!(
        wait_until(Duration::from_secs(10), || {
            machine.device.stats().pending >= count
        }),
        "{:?}",
        machine.device.stats()
    );
}

/// Waits (up to 15 s each) for every request of `load`.
///
/// # Panics
/// If one does not complete.
#[must_use]
pub fn complete_all(machine: &Machine, load: &[Io]) -> Vec<(Io, Completion)> {
    load.iter()
        .map(|io| {
            let done = machine
                .adapter
                .wait(io.ticket, Duration::from_secs(15))
                .unwrap_or_else(|error| panic!("{io:?}: {error:?}"));
            (io.clone(), done)
        })
        .collect()
}

/// How many of `done` completed with each SRB status.
#[must_use]
pub fn statuses(done: &[(Io, Completion)]) -> HashMap<u8, usize> {
    let mut counts = HashMap::new();
    for (_, completion) in done {
        *counts.entry(completion.status()).or_default() += 1;
    }
    counts
}

/// No write reached its LUN after its SRB completed with a failure, every successful write
/// did (once), and every region holds what the journal says: the write's data if it executed,
/// zeros (the disk's initial content) if not.
///
/// # Panics
/// If any of that does not hold.
pub fn check_writes(machine: &Machine, done: &[(Io, Completion)]) {
    // Delayed requests the device still holds execute now or never: wait for them.
    machine.device.quiesce();
    let journal = machine.device.write_journal();
    for (io, completion) in done {
        let Some(data) = &io.data else { continue };
        let stamp: [u8; 8] = data[..8].try_into().unwrap();
        let executed: Vec<_> = journal.iter().filter(|w| w.stamp == stamp).collect();
        assert!(executed.len() <= 1, "{io:?} executed twice");
        if completion.status() == SRB_STATUS_SUCCESS {
            assert_eq!(executed.len(), 1, "{io:?} succeeded but never executed");
        } else {
            let failed_at = machine.adapter.completed_at(io.ticket).unwrap();
            for write in &executed {
                assert!(
                    write.at <= failed_at,
                    "{io:?} ({:#x}) written {:?} after its SRB failed",
                    completion.srb_status,
                    write.at - failed_at
                );
            }
        }
        let read = machine
            .adapter
            .execute(
                0,
                &Request::new(io.target, io.lun, &read10(io.lba, SPAN))
                    .reading(u32::from(SPAN) * 512),
            )
            .unwrap();
        assert_eq!(read.status(), SRB_STATUS_SUCCESS, "{io:?}");
        if executed.is_empty() {
            assert!(
                read.data.iter().all(|&b| b == 0),
                "{io:?}: data without a write"
            );
        } else {
            assert!(read.data == *data, "{io:?}: not its data");
        }
    }
}

/// Where [`check_resumes`] writes and reads back.
#[derive(Clone, Copy, Debug)]
pub struct ResumeCheck {
    /// The LBA of the first request; each processor's is 16 blocks further.
    pub first_lba: u32,
    /// The processor and (target, LUN) of each request.
    pub placements: &'static [(u32, (u8, u8))],
}

/// I/O works again: a write and its read-back at each of `resume`'s placements.
///
/// # Panics
/// If a request fails or reads back other data.
pub fn check_resumes(machine: &Machine, resume: &ResumeCheck) {
    for &(processor, (target, lun)) in resume.placements {
        let lba = resume.first_lba + processor * 16;
        let data = stamped(0xD00D_0000 + u64::from(processor), 4096);
        let write = machine
            .adapter
            .execute(
                processor,
                &Request::new(target, lun, &write10(lba, 8)).writing(&data),
            )
            .unwrap();
        assert_eq!(write.status(), SRB_STATUS_SUCCESS, "{target}:{lun}");
        let read = machine
            .adapter
            .execute(
                processor,
                &Request::new(target, lun, &read10(lba, 8)).reading(4096),
            )
            .unwrap();
        assert_eq!(read.status(), SRB_STATUS_SUCCESS, "{target}:{lun}");
        assert!(read.data == data, "{target}:{lun}");
    }
}

/// The end of a held-load scenario: the hooks off, the writes of `loads` checked, I/O working
/// again ([`check_resumes`]) and the simulator's contract kept.
///
/// # Panics
/// If any check fails.
pub fn check_and_finish(machine: Machine, loads: &[&[(Io, Completion)]], resume: &ResumeCheck) {
    machine.device.set_fault_hook(None);
    machine.device.set_tmf_hook(None);
    for done in loads {
        check_writes(&machine, done);
    }
    check_resumes(&machine, resume);
    machine.finish();
}

/// The device does `action(target, lun)` to every READ(10)/WRITE(10), other commands normally.
pub fn fault_by_unit(
    machine: &Machine,
    action: impl Fn(u8, u16) -> FaultAction + Send + Sync + 'static,
) {
    machine
        .device
        .set_fault_hook(Some(Arc::new(move |info: &RequestInfo| {
            if info.cdb.first().is_some_and(|&op| op == 0x28 || op == 0x2A) {
                action(info.target, info.lun)
            } else {
                FaultAction::Normal
            }
        })));
}

/// The device does `action` to every task management function.
pub fn tmf_hook(machine: &Machine, action: TmfAction) {
    machine
        .device
        .set_tmf_hook(Some(Arc::new(move |_: &TmfInfo| action)));
}

/// How many full device resets the miniport has done.
///
/// # Panics
/// If the machine runs no miniport.
#[must_use]
pub fn full_resets(machine: &Machine) -> u64 {
    machine.miniport().unwrap().resets.load(Ordering::Relaxed)
}

/// The miniport's task management counter `$name` (a field of `rvscsi::recovery::tmf::TmfCounters`).
#[macro_export]
macro_rules! tmf_counter {
    ($machine:expr, $name:ident) => {
        $machine
            .miniport()
            .unwrap()
            .tmfs()
            .counters
            .$name
            .load(::std::sync::atomic::Ordering::Relaxed)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdbs_carry_the_lba_and_count_big_endian() {
        assert_eq!(
            read10(0x0102_0304, 0x0506),
            [0x28, 0, 1, 2, 3, 4, 0, 5, 6, 0]
        );
        assert_eq!(write10(7, 1), [0x2A, 0, 0, 0, 0, 7, 0, 0, 1, 0]);
    }

    #[test]
    fn an_anonymous_disk_has_no_designator_and_zero_blocks_are_refused() {
        let disk = anonymous_disk(8).unwrap();
        assert_eq!(disk.identity().naa_id, None);
        assert!(matches!(anonymous_disk(0), Err(LunConfigError::Empty)));
    }

    #[test]
    fn the_random_sequence_depends_on_its_seed_only() {
        let (mut a, mut b, mut c) = (Rng(1), Rng(1), Rng(2));
        let first: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(first, (0..4).map(|_| c.next_u64()).collect::<Vec<_>>());
        assert!(first.windows(2).all(|pair| pair[0] != pair[1]));
    }

    #[test]
    fn waiting_ends_when_the_condition_holds_or_the_time_is_up() {
        let mut polls = 0;
        assert!(wait_until(Duration::from_secs(5), || {
            polls += 1;
            polls == 3
        }));
        assert_eq!(polls, 3);
        let started = Instant::now();
        assert!(!wait_until(Duration::from_millis(20), || false));
        assert!(started.elapsed() >= Duration::from_millis(20));
    }
}

/// How [`verified_random_io`] loads the adapter.
#[derive(Clone, Copy, Debug)]
pub struct RandomLoad {
    /// Simulated processors submitting (each on its own thread), from 0.
    pub processors: u32,
    /// Requests each processor keeps in flight.
    pub depth: usize,
    /// Requests each processor completes.
    pub ios_per_processor: usize,
    /// Seed of the sequence (each processor derives its own).
    pub seed: u64,
}

/// What a [`verified_random_io`] run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadFigures {
    /// Requests completed with SUCCESS.
    pub ios: usize,
    /// Completions with SRB_STATUS_BUSY, each resubmitted as StorPort would.
    pub busy: usize,
    /// Bytes read and written.
    pub bytes: u64,
}

/// The shape of a [`verified_random_io`] load: the adapter's limits and each slot's size.
#[derive(Clone, Copy)]
struct Geometry {
    max_pages: u64,
    max_blocks: u64,
    slot_blocks: u64,
}

impl Geometry {
    /// A random read or write of one of `units` inside `slot` of the region starting at block
    /// `base`, within the adapter's limits; with the unit's index and the byte offset of the
    /// request in the region.
    fn random_request(
        self,
        rng: &mut Rng,
        units: &[(u8, u8)],
        base: u64,
        slot: usize,
    ) -> (Request, usize, usize) {
        let unit = (rng.next_u64() % units.len() as u64) as usize;
        let (target, lun) = units[unit];
        let data_offset = (rng.next_u64() % 8) as u16 * 512;
        let cap = match rng.next_u64() % 16 {
            0 => self.max_blocks,
            1..=4 => 256,
            _ => 16,
        }
        .min(self.max_blocks)
        .min(self.slot_blocks);
        let mut blocks = 1 + rng.next_u64() % cap;
        // The class driver's split: no more pages than the adapter takes.
        while (u64::from(data_offset) + blocks * 512).div_ceil(4096) > self.max_pages {
            blocks -= 1;
        }
        let start =
            slot as u64 * self.slot_blocks + rng.next_u64() % (self.slot_blocks - blocks + 1);
        let lba = u32::try_from(base + start).expect("a disk under 2 TiB");
        let count = u16::try_from(blocks).expect("a transfer under 32 MiB");
        let mut request = if rng.next_u64().is_multiple_of(2) {
            let data: Vec<u8> = (0..blocks * 512).map(|_| rng.next_u64() as u8).collect();
            Request::new(target, lun, &write10(lba, count)).writing(&data)
        } else {
            Request::new(target, lun, &read10(lba, count)).reading(u32::from(count) * 512)
        };
        request.data_offset = data_offset;
        request.timeout_seconds = LONG_TIMEOUT;
        (request, unit, (start * 512) as usize)
    }
}

/// One request a processor keeps in flight: which slot of its region it covers and what it
/// does there.
struct InFlight {
    ticket: Ticket,
    request: Request,
    unit: usize,
    /// Byte offset of its first block in the processor's region of the unit.
    offset: usize,
    slot: usize,
}

/// Random reads and writes from `load.processors` processors, each keeping `load.depth` in
/// flight, on `units` (each of `unit_blocks` 512-byte blocks), every byte read checked against a
/// shadow copy. Each processor owns a disjoint region of every unit, split into one slot per
/// request in flight, so the shadow is exact whatever order requests complete in. Transfers are
/// mostly small, some up to the adapter's `MaximumTransferLength`, at random buffer offsets,
/// and always within the limits the miniport reported, as the class driver splits them: at
/// most `MaximumTransferLength` bytes on at most `NumberOfPhysicalBreaks + 1` pages. A request
/// completed BUSY is sent again, as StorPort retries it.
///
/// # Panics
/// On any other status, a data mismatch, or a request not completed within 30 s.
#[must_use]
pub fn verified_random_io(
    machine: &Arc<Machine>,
    units: &[(u8, u8)],
    unit_blocks: u64,
    load: RandomLoad,
) -> LoadFigures {
    let config = machine.adapter.found_adapter().config;
    let region_blocks = unit_blocks / u64::from(load.processors);
    let geometry = Geometry {
        max_pages: u64::from(config.number_of_physical_breaks) + 1,
        max_blocks: u64::from(config.maximum_transfer_length / 512).max(1),
        slot_blocks: region_blocks / load.depth as u64,
    };
    assert!(
        geometry.slot_blocks > 0,
        "{unit_blocks} blocks cannot hold this load"
    );
    let units: Arc<[(u8, u8)]> = units.into();
    let threads: Vec<_> = (0..load.processors)
        .map(|processor| {
            let machine = Arc::clone(machine);
            let units = Arc::clone(&units);
            std::thread::spawn(move || {
                let mut rng = Rng(load.seed ^ (u64::from(processor) + 1).wrapping_mul(0x9E37_79B9));
                let region_bytes = (region_blocks * 512) as usize;
                let mut shadow = vec![vec![0u8; region_bytes]; units.len()];
                let base = u64::from(processor) * region_blocks;
                let mut figures = LoadFigures::default();
                let mut in_flight: std::collections::VecDeque<InFlight> =
                    std::collections::VecDeque::new();
                let mut issued = 0;
                let mut free: Vec<usize> = (0..load.depth).rev().collect();
                while figures.ios < load.ios_per_processor {
                    while issued < load.ios_per_processor
                        && let Some(slot) = free.pop()
                    {
                        let (request, unit, offset) =
                            geometry.random_request(&mut rng, &units, base, slot);
                        let ticket = machine.adapter.submit(processor, &request).unwrap();
                        in_flight.push_back(InFlight {
                            ticket,
                            request,
                            unit,
                            offset,
                            slot,
                        });
                        issued += 1;
                    }
                    let Some(io) = in_flight.pop_front() else {
                        break;
                    };
                    let done = machine
                        .adapter
                        .wait(io.ticket, Duration::from_secs(30))
                        .unwrap_or_else(|error| panic!("processor {processor}: {error:?}"));
                    let region = &mut shadow[io.unit];
                    match done.status() {
                        SRB_STATUS_SUCCESS => {}
                        rvscsi::storport::SRB_STATUS_BUSY => {
                            figures.busy += 1;
                            let ticket = machine.adapter.submit(processor, &io.request).unwrap();
                            in_flight.push_back(InFlight { ticket, ..io });
                            continue;
                        }
                        other => panic!(
                            "processor {processor}: {:?} of {:?}: status {other:#x}",
                            io.request.cdb, units[io.unit]
                        ),
                    }
                    let len = if io.request.data_out.is_empty() {
                        io.request.data_in_len as usize
                    } else {
                        io.request.data_out.len()
                    };
                    let range = io.offset..io.offset + len;
                    if io.request.data_out.is_empty() {
                        assert!(
                            done.data == region[range],
                            "processor {processor}: data mismatch reading {:?} of {:?}",
                            io.request.cdb,
                            units[io.unit]
                        );
                    } else {
                        region[range].copy_from_slice(&io.request.data_out);
                    }
                    figures.ios += 1;
                    figures.bytes += len as u64;
                    free.push(io.slot);
                }
                figures
            })
        })
        .collect();
    threads
        .into_iter()
        .fold(LoadFigures::default(), |sum, thread| {
            let figures = thread.join().expect("a load thread panicked");
            LoadFigures {
                ios: sum.ios + figures.ios,
                busy: sum.busy + figures.busy,
                bytes: sum.bytes + figures.bytes,
            }
        })
}
