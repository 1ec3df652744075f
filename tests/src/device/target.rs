//! The SCSI target behind the virtio-scsi device: logical units backed by sparse memory or a
//! file, and the commands a Windows storage stack sends them (SPC-4 and SBC-3 subsets).
//!
//! Everything here is pure: a command is a CDB plus the data-out bytes, and the answer is a
//! status, fixed-format sense and the data-in bytes. The device model decides how much of that
//! reaches the driver (buffer sizes, residuals, `sense_size`).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::reservations::{Nexus, PrStatus, Reservations, Task};

/// SCSI status GOOD.
pub const GOOD: u8 = 0x00;
/// SCSI status CHECK CONDITION.
pub const CHECK_CONDITION: u8 = 0x02;
/// SCSI status TASK SET FULL (SAM-5 5.3.1): the logical unit holds as many commands as it can.
pub const TASK_SET_FULL: u8 = 0x28;

/// Sense keys (SPC-4 section 4.5.6).
pub mod sense_key {
    /// NO SENSE.
    pub const NO_SENSE: u8 = 0x0;
    /// NOT READY.
    pub const NOT_READY: u8 = 0x2;
    /// MEDIUM ERROR.
    pub const MEDIUM_ERROR: u8 = 0x3;
    /// ILLEGAL REQUEST.
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    /// UNIT ATTENTION.
    pub const UNIT_ATTENTION: u8 = 0x6;
    /// DATA PROTECT.
    pub const DATA_PROTECT: u8 = 0x7;
}

/// Additional sense codes and qualifiers used here, as `(asc, ascq)` (SPC-4 annex D).
pub mod asc {
    /// INVALID COMMAND OPERATION CODE.
    pub const INVALID_OPCODE: (u8, u8) = (0x20, 0x00);
    /// LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const LBA_OUT_OF_RANGE: (u8, u8) = (0x21, 0x00);
    /// INVALID FIELD IN CDB.
    pub const INVALID_FIELD_IN_CDB: (u8, u8) = (0x24, 0x00);
    /// LOGICAL UNIT NOT SUPPORTED.
    pub const LUN_NOT_SUPPORTED: (u8, u8) = (0x25, 0x00);
    /// WRITE PROTECTED.
    pub const WRITE_PROTECTED: (u8, u8) = (0x27, 0x00);
    /// POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.
    pub const POWER_ON_RESET: (u8, u8) = (0x29, 0x00);
    /// UNRECOVERED READ ERROR.
    pub const UNRECOVERED_READ_ERROR: (u8, u8) = (0x11, 0x00);
    /// WRITE ERROR.
    pub const WRITE_ERROR: (u8, u8) = (0x0C, 0x00);
    /// SAVING PARAMETERS NOT SUPPORTED.
    pub const SAVING_NOT_SUPPORTED: (u8, u8) = (0x39, 0x00);
}

/// Operation codes the target implements (SPC-4, SBC-3).
pub mod opcode {
    /// TEST UNIT READY.
    pub const TEST_UNIT_READY: u8 = 0x00;
    /// REQUEST SENSE.
    pub const REQUEST_SENSE: u8 = 0x03;
    /// INQUIRY.
    pub const INQUIRY: u8 = 0x12;
    /// MODE SENSE(6).
    pub const MODE_SENSE_6: u8 = 0x1A;
    /// READ CAPACITY(10).
    pub const READ_CAPACITY_10: u8 = 0x25;
    /// READ(10).
    pub const READ_10: u8 = 0x28;
    /// WRITE(10).
    pub const WRITE_10: u8 = 0x2A;
    /// SYNCHRONIZE CACHE(10).
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    /// MODE SENSE(10).
    pub const MODE_SENSE_10: u8 = 0x5A;
    /// READ(16).
    pub const READ_16: u8 = 0x88;
    /// WRITE(16).
    pub const WRITE_16: u8 = 0x8A;
    /// SYNCHRONIZE CACHE(16).
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    /// SERVICE ACTION IN(16) (service action 0x10 is READ CAPACITY(16)).
    pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
    /// REPORT LUNS.
    pub const REPORT_LUNS: u8 = 0xA0;
    /// RESERVE(6) (SPC-2).
    pub const RESERVE_6: u8 = 0x16;
    /// RELEASE(6) (SPC-2).
    pub const RELEASE_6: u8 = 0x17;
    /// RESERVE(10) (SPC-2).
    pub const RESERVE_10: u8 = 0x56;
    /// RELEASE(10) (SPC-2).
    pub const RELEASE_10: u8 = 0x57;
    /// PERSISTENT RESERVE IN.
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5E;
    /// PERSISTENT RESERVE OUT.
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5F;
}

/// The READ CAPACITY(16) service action of SERVICE ACTION IN(16).
pub const SAI_READ_CAPACITY_16: u8 = 0x10;

/// Fixed-format sense data (SPC-4 section 4.5.3), 18 bytes, current error.
#[must_use]
pub fn fixed_sense(key: u8, (asc, ascq): (u8, u8)) -> Vec<u8> {
    let mut sense = vec![0u8; 18];
    sense[0] = 0x70;
    sense[2] = key & 0x0F;
    sense[7] = 10; // additional sense length: bytes 8..18
    sense[12] = asc;
    sense[13] = ascq;
    sense
}

/// What the target answers to one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// SCSI status byte.
    pub status: u8,
    /// Sense data (empty unless CHECK CONDITION).
    pub sense: Vec<u8>,
    /// Data-in bytes (may be shorter than the buffer; the device reports the residual).
    pub data_in: Vec<u8>,
}

impl Outcome {
    fn good(data_in: Vec<u8>) -> Self {
        Self::good_data(data_in)
    }

    /// GOOD with `data_in`.
    pub(crate) fn good_data(data_in: Vec<u8>) -> Self {
        Self {
            status: GOOD,
            sense: Vec::new(),
            data_in,
        }
    }

    /// `status` with no sense and no data (GOOD, RESERVATION CONFLICT).
    pub(crate) fn status_only(status: u8) -> Self {
        Self {
            status,
            sense: Vec::new(),
            data_in: Vec::new(),
        }
    }

    /// CHECK CONDITION with fixed-format sense.
    #[must_use]
    pub fn check(key: u8, code: (u8, u8)) -> Self {
        Self {
            status: CHECK_CONDITION,
            sense: fixed_sense(key, code),
            data_in: Vec::new(),
        }
    }

    fn data_in(mut data: Vec<u8>, allocation_length: usize) -> Self {
        data.truncate(allocation_length);
        Self::good(data)
    }
}

/// The data transfer a CDB asks for, in its direction (what QEMU calls the request's mode and
/// `xfer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataPhase {
    /// No data.
    None,
    /// Up to this many bytes from the device.
    In(u64),
    /// Exactly this many bytes to the device.
    Out(u64),
}

/// A CDB, read without ever indexing out of range: bytes past the end read as zero (commands
/// check the CDB is long enough for their opcode first, see [`cdb_length`]).
#[derive(Clone, Copy, Debug)]
struct Cdb<'a>(&'a [u8]);

impl Cdb<'_> {
    fn u8(self, at: usize) -> u8 {
        self.0.get(at).copied().unwrap_or(0)
    }
    fn be16(self, at: usize) -> u16 {
        u16::from_be_bytes([self.u8(at), self.u8(at + 1)])
    }
    fn be32(self, at: usize) -> u32 {
        u32::from_be_bytes([
            self.u8(at),
            self.u8(at + 1),
            self.u8(at + 2),
            self.u8(at + 3),
        ])
    }
    fn be64(self, at: usize) -> u64 {
        (u64::from(self.be32(at)) << 32) | u64::from(self.be32(at + 4))
    }
}

/// Length of a CDB from its group code (SPC-4 section 4.2.5.1).
#[must_use]
pub fn cdb_length(opcode: u8) -> usize {
    match opcode >> 5 {
        1 | 2 => 10,
        4 => 16,
        5 => 12,
        _ => 6,
    }
}

/// The transfer `cdb` asks for on a logical unit of `block_size`-byte blocks.
#[must_use]
pub fn data_phase(cdb: &[u8], block_size: u32) -> DataPhase {
    let c = Cdb(cdb);
    let blocks = |count: u64| count * u64::from(block_size);
    match c.u8(0) {
        opcode::REQUEST_SENSE | opcode::MODE_SENSE_6 => DataPhase::In(c.u8(4).into()),
        opcode::INQUIRY => DataPhase::In(c.be16(3).into()),
        opcode::READ_CAPACITY_10 => DataPhase::In(8),
        opcode::PERSISTENT_RESERVE_OUT => DataPhase::Out(c.be32(5).into()),
        opcode::MODE_SENSE_10 | opcode::PERSISTENT_RESERVE_IN => DataPhase::In(c.be16(7).into()),
        opcode::SERVICE_ACTION_IN_16 | opcode::REPORT_LUNS => {
            let at = if c.u8(0) == opcode::REPORT_LUNS {
                6
            } else {
                10
            };
            DataPhase::In(c.be32(at).into())
        }
        opcode::READ_10 => DataPhase::In(blocks(c.be16(7).into())),
        opcode::READ_16 => DataPhase::In(blocks(c.be32(10).into())),
        opcode::WRITE_10 => DataPhase::Out(blocks(c.be16(7).into())),
        opcode::WRITE_16 => DataPhase::Out(blocks(c.be32(10).into())),
        _ => DataPhase::None,
    }
}

/// Bytes per chunk of sparse memory backing.
const CHUNK: u64 = 64 << 10;

#[derive(Debug)]
enum Backing {
    /// Chunks written so far; the rest reads as zeroes, so large disks cost nothing.
    Sparse(HashMap<u64, Box<[u8]>>),
    File(File),
}

impl Backing {
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        match self {
            Self::File(file) => file.read_exact_at(out, offset),
            Self::Sparse(chunks) => {
                let mut done = 0usize;
                while done < out.len() {
                    let at = offset + done as u64;
                    let (chunk, within) = (at / CHUNK, (at % CHUNK) as usize);
                    let piece = (out.len() - done).min(CHUNK as usize - within);
                    let dest = out.get_mut(done..done + piece).unwrap_or_default();
                    match chunks
                        .get(&chunk)
                        .and_then(|c| c.get(within..within + piece))
                    {
                        Some(source) => dest.copy_from_slice(source),
                        None => dest.fill(0),
                    }
                    done += piece;
                }
                Ok(())
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        match self {
            Self::File(file) => file.write_all_at(data, offset),
            Self::Sparse(chunks) => {
                let mut done = 0usize;
                while done < data.len() {
                    let at = offset + done as u64;
                    let (chunk, within) = (at / CHUNK, (at % CHUNK) as usize);
                    let piece = (data.len() - done).min(CHUNK as usize - within);
                    let stored = chunks
                        .entry(chunk)
                        .or_insert_with(|| vec![0; CHUNK as usize].into_boxed_slice());
                    if let (Some(dest), Some(source)) = (
                        stored.get_mut(within..within + piece),
                        data.get(done..done + piece),
                    ) {
                        dest.copy_from_slice(source);
                    }
                    done += piece;
                }
                Ok(())
            }
        }
    }

    fn sync(&self) -> std::io::Result<()> {
        match self {
            Self::File(file) => file.sync_data(),
            Self::Sparse(_) => Ok(()),
        }
    }
}

/// The identity and shape of a logical unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LunIdentity {
    /// T10 vendor identification (INQUIRY bytes 8-15, space padded).
    pub vendor: String,
    /// Product identification (bytes 16-31).
    pub product: String,
    /// Product revision level (bytes 32-35).
    pub revision: String,
    /// Unit serial number (VPD page 0x80).
    pub serial: String,
    /// The 64-bit id behind the NAA-6 designator of VPD page 0x83; `None` answers page 0x83
    /// with no designators at all, so the driver's identifier synthesis is exercised.
    pub naa_id: Option<u64>,
}

impl Default for LunIdentity {
    fn default() -> Self {
        Self {
            vendor: "RVSCSI".into(),
            product: "SIM DISK".into(),
            revision: "1.0".into(),
            serial: "SIM0001".into(),
            naa_id: Some(0x5000_0000_0000_0001),
        }
    }
}

#[derive(Debug)]
struct LunInner {
    block_size: u32,
    /// Capacity in blocks; it changes only through [`Lun::resize`] (a host-side resize).
    blocks: AtomicU64,
    read_only: bool,
    write_cache: bool,
    identity: LunIdentity,
    /// Reservations and unit attentions. Taken before `backing` and held for a whole command,
    /// so a command admitted under one reservation state finishes before the state changes
    /// (a preempted nexus's write either completed before the PREEMPT or conflicts).
    reservations: Mutex<Reservations>,
    backing: Mutex<Backing>,
}

/// A logical unit. A cheap handle: clones share the medium *and* the reservation state, so
/// several simulated nodes reach one disk: give each node's [`VirtioScsiDevice`] a clone
/// (`add_lun(t, l, lun.clone())`), and each device's [`Nexus`] is a distinct initiator of it.
///
/// [`VirtioScsiDevice`]: super::VirtioScsiDevice
#[derive(Clone, Debug)]
pub struct Lun {
    inner: Arc<LunInner>,
}

/// Why a [`Lun`] could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LunConfigError {
    /// Block size other than 512 or 4096.
    BlockSize(u32),
    /// Zero blocks.
    Empty,
    /// The backing file's length could not be read or is not a whole number of blocks.
    FileLength(u64),
}

impl Lun {
    /// A logical unit of `blocks` blocks of `block_size` (512 or 4096) bytes in sparse memory,
    /// reading as zeroes until written.
    ///
    /// # Errors
    /// [`LunConfigError`] for an unsupported block size or zero blocks.
    pub fn memory(blocks: u64, block_size: u32) -> Result<Self, LunConfigError> {
        Self::with_backing(Backing::Sparse(HashMap::new()), blocks, block_size)
    }

    /// A logical unit over `file` (its length is the capacity).
    ///
    /// # Errors
    /// [`LunConfigError`] for an unsupported block size or a file length that is not a whole
    /// number of blocks.
    pub fn file(file: File, block_size: u32) -> Result<Self, LunConfigError> {
        let len = file
            .metadata()
            .map_err(|_| LunConfigError::FileLength(0))?
            .len();
        if block_size == 0 || !len.is_multiple_of(u64::from(block_size)) {
            return Err(LunConfigError::FileLength(len));
        }
        Self::with_backing(Backing::File(file), len / u64::from(block_size), block_size)
    }

    fn with_backing(
        backing: Backing,
        blocks: u64,
        block_size: u32,
    ) -> Result<Self, LunConfigError> {
        if block_size != 512 && block_size != 4096 {
            return Err(LunConfigError::BlockSize(block_size));
        }
        if blocks == 0 {
            return Err(LunConfigError::Empty);
        }
        Ok(Self {
            inner: Arc::new(LunInner {
                block_size,
                blocks: AtomicU64::new(blocks),
                read_only: false,
                write_cache: true,
                identity: LunIdentity::default(),
                reservations: Mutex::new(Reservations::default()),
                backing: Mutex::new(backing),
            }),
        })
    }

    fn modify(self, f: impl FnOnce(&mut LunInner)) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                f(&mut inner);
                Self {
                    inner: Arc::new(inner),
                }
            }
            // Already shared: the identity is fixed once a second handle exists.
            Err(inner) => Self { inner },
        }
    }

    /// The same unit with another identity (only before it is cloned).
    #[must_use]
    pub fn with_identity(self, identity: LunIdentity) -> Self {
        self.modify(|inner| inner.identity = identity)
    }

    /// The same unit, write protected (only before it is cloned).
    #[must_use]
    pub fn read_only(self, read_only: bool) -> Self {
        self.modify(|inner| inner.read_only = read_only)
    }

    /// Block size in bytes.
    #[must_use]
    pub fn block_size(&self) -> u32 {
        self.inner.block_size
    }

    /// Capacity in blocks.
    #[must_use]
    pub fn blocks(&self) -> u64 {
        // ORDERING: a capacity value publishes nothing else; a command racing a resize sees
        // the old or the new capacity, as on a real target.
        self.inner.blocks.load(Ordering::Relaxed)
    }

    /// Changes the capacity to `blocks` (a host-side resize, as `block_resize` in QEMU's
    /// monitor): a file backing is truncated or extended to match; sparse memory reads as
    /// zeroes beyond what was written.
    ///
    /// # Errors
    /// [`LunConfigError::Empty`] for zero blocks, [`LunConfigError::FileLength`] if the
    /// backing file cannot be resized.
    pub fn resize(&self, blocks: u64) -> Result<(), LunConfigError> {
        if blocks == 0 {
            return Err(LunConfigError::Empty);
        }
        let len = blocks.saturating_mul(u64::from(self.inner.block_size));
        if let Backing::File(file) = &*self.backing() {
            file.set_len(len)
                .map_err(|_| LunConfigError::FileLength(len))?;
        }
        // ORDERING: see `blocks`.
        self.inner.blocks.store(blocks, Ordering::Relaxed);
        Ok(())
    }

    /// The unit's identity.
    #[must_use]
    pub fn identity(&self) -> &LunIdentity {
        &self.inner.identity
    }

    /// Reads `out.len()` bytes at byte `offset` of the medium (for test checks).
    ///
    /// # Errors
    /// The backing store's I/O error.
    pub fn read_at(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.backing().read(offset, out)
    }

    fn backing(&self) -> MutexGuard<'_, Backing> {
        self.inner
            .backing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn reservations(&self) -> MutexGuard<'_, Reservations> {
        self.inner
            .reservations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The reservation state (registrations, persistent and SPC-2 reservations, PRgeneration),
    /// for test assertions.
    #[must_use]
    pub fn pr_status(&self) -> PrStatus {
        self.reservations().status()
    }

    /// The unit attentions pending for `nexus`, oldest first, as `(asc, ascq)`.
    #[must_use]
    pub fn unit_attentions(&self, nexus: Nexus) -> Vec<(u8, u8)> {
        self.reservations().unit_attentions(nexus)
    }

    /// Simulates power loss and power on: SPC-2 reservations and unit attentions are lost, and
    /// persistent registrations and the reservation too unless the last REGISTER set APTPL.
    /// The medium keeps its data.
    pub fn power_cycle(&self) {
        self.reservations().power_cycle();
    }

    /// A LOGICAL UNIT RESET: ends an SPC-2 reservation (persistent reservations stay).
    pub fn logical_unit_reset(&self) {
        self.reservations().logical_unit_reset();
    }

    /// The loss of I_T nexus `nexus` (I_T NEXUS RESET): ends its SPC-2 reservation.
    pub fn nexus_loss(&self, nexus: Nexus) {
        self.reservations().nexus_loss(nexus);
    }

    /// Marks a command from `nexus` as received now; [`Lun::execute_task`] aborts it if a
    /// PREEMPT AND ABORT removes `nexus`'s registration in between.
    pub(crate) fn receive(&self, nexus: Nexus) -> Task {
        self.reservations().receive(nexus)
    }

    /// Executes `cdb` from nexus 0 ([`Lun::execute_from`] for a unit with a single initiator).
    #[must_use]
    pub fn execute(&self, cdb: &[u8], data_out: &[u8], luns: &[u16]) -> Outcome {
        self.execute_from(Nexus::new(0), cdb, data_out, luns)
    }

    /// Executes `cdb` with `data_out` (exactly what the CDB's [`data_phase`] asked for, as the
    /// device checked) from I_T nexus `nexus` on this unit, subject to its reservations and
    /// unit attentions; `luns` are the LUNs present on its target (REPORT LUNS).
    #[must_use]
    pub fn execute_from(&self, nexus: Nexus, cdb: &[u8], data_out: &[u8], luns: &[u16]) -> Outcome {
        let mut reservations = self.reservations();
        self.run(&mut reservations, nexus, cdb, data_out, luns)
    }

    /// Executes `task`'s `cdb` as [`Lun::execute_from`] does; `None` if a PREEMPT AND ABORT
    /// aborted the task after it was received (it then never ran).
    pub(crate) fn execute_task(
        &self,
        task: Task,
        cdb: &[u8],
        data_out: &[u8],
        luns: &[u16],
    ) -> Option<Outcome> {
        let mut reservations = self.reservations();
        if reservations.aborted(task) {
            return None;
        }
        Some(self.run(&mut reservations, task.nexus, cdb, data_out, luns))
    }

    /// Executes `cdb` from `nexus` with the reservation lock held throughout, so the command
    /// runs under the state that admitted it.
    fn run(
        &self,
        reservations: &mut Reservations,
        nexus: Nexus,
        cdb: &[u8],
        data_out: &[u8],
        luns: &[u16],
    ) -> Outcome {
        let c = Cdb(cdb);
        let op = c.u8(0);
        if cdb.len() < cdb_length(op) {
            return Outcome::check(sense_key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
        }
        if let Some(answer) = reservations.admit(nexus, cdb) {
            return answer;
        }
        match op {
            opcode::PERSISTENT_RESERVE_IN => reservations.persistent_reserve_in(cdb),
            opcode::PERSISTENT_RESERVE_OUT => {
                reservations.persistent_reserve_out(nexus, cdb, data_out)
            }
            opcode::RESERVE_6 | opcode::RESERVE_10 => reservations.reserve_scsi2(nexus, cdb),
            opcode::RELEASE_6 | opcode::RELEASE_10 => reservations.release_scsi2(nexus, cdb),
            _ => self.execute_admitted(c, data_out, luns),
        }
    }

    /// Executes a command the reservations admitted.
    fn execute_admitted(&self, c: Cdb<'_>, data_out: &[u8], luns: &[u16]) -> Outcome {
        let op = c.u8(0);
        match op {
            opcode::TEST_UNIT_READY => Outcome::good(Vec::new()),
            opcode::REQUEST_SENSE => {
                Outcome::data_in(fixed_sense(sense_key::NO_SENSE, (0, 0)), c.u8(4).into())
            }
            opcode::INQUIRY => self.inquiry(c),
            opcode::READ_CAPACITY_10 => {
                let last = u32::try_from(self.blocks() - 1).unwrap_or(u32::MAX);
                let mut data = last.to_be_bytes().to_vec();
                data.extend_from_slice(&self.inner.block_size.to_be_bytes());
                Outcome::good(data)
            }
            opcode::SERVICE_ACTION_IN_16 if c.u8(1) & 0x1F == SAI_READ_CAPACITY_16 => {
                let mut data = vec![0u8; 32];
                data[..8].copy_from_slice(&(self.blocks() - 1).to_be_bytes());
                data[8..12].copy_from_slice(&self.inner.block_size.to_be_bytes());
                Outcome::data_in(data, c.be32(10) as usize)
            }
            opcode::READ_10 => self.read(c.be32(2).into(), c.be16(7).into()),
            opcode::READ_16 => self.read(c.be64(2), c.be32(10).into()),
            opcode::WRITE_10 => self.write(c.be32(2).into(), c.be16(7).into(), data_out),
            opcode::WRITE_16 => self.write(c.be64(2), c.be32(10).into(), data_out),
            opcode::SYNCHRONIZE_CACHE_10 | opcode::SYNCHRONIZE_CACHE_16 => {
                let (lba, count) = if op == opcode::SYNCHRONIZE_CACHE_10 {
                    (c.be32(2).into(), c.be16(7).into())
                } else {
                    (c.be64(2), c.be32(10).into())
                };
                if !self.in_range(lba, count) {
                    return Outcome::check(sense_key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
                }
                match self.backing().sync() {
                    Ok(()) => Outcome::good(Vec::new()),
                    Err(_) => Outcome::check(sense_key::MEDIUM_ERROR, asc::WRITE_ERROR),
                }
            }
            opcode::MODE_SENSE_6 | opcode::MODE_SENSE_10 => self.mode_sense(c),
            opcode::REPORT_LUNS => report_luns(c, luns),
            _ => Outcome::check(sense_key::ILLEGAL_REQUEST, asc::INVALID_OPCODE),
        }
    }

    fn in_range(&self, lba: u64, count: u64) -> bool {
        lba.checked_add(count)
            .is_some_and(|end| end <= self.blocks())
    }

    fn read(&self, lba: u64, count: u64) -> Outcome {
        if !self.in_range(lba, count) {
            return Outcome::check(sense_key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
        }
        let size = u64::from(self.inner.block_size);
        let Ok(len) = usize::try_from(count * size) else {
            return Outcome::check(sense_key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
        };
        let mut data = vec![0u8; len];
        match self.backing().read(lba * size, &mut data) {
            Ok(()) => Outcome::good(data),
            Err(_) => Outcome::check(sense_key::MEDIUM_ERROR, asc::UNRECOVERED_READ_ERROR),
        }
    }

    fn write(&self, lba: u64, count: u64, data: &[u8]) -> Outcome {
        if !self.in_range(lba, count) {
            return Outcome::check(sense_key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
        }
        if self.inner.read_only {
            return Outcome::check(sense_key::DATA_PROTECT, asc::WRITE_PROTECTED);
        }
        let size = u64::from(self.inner.block_size);
        let len = usize::try_from(count * size).unwrap_or(usize::MAX);
        let Some(data) = data.get(..len) else {
            return Outcome::check(sense_key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
        };
        match self.backing().write(lba * size, data) {
            Ok(()) => Outcome::good(Vec::new()),
            Err(_) => Outcome::check(sense_key::MEDIUM_ERROR, asc::WRITE_ERROR),
        }
    }

    fn inquiry(&self, c: Cdb<'_>) -> Outcome {
        let evpd = c.u8(1) & 1 != 0;
        let page = c.u8(2);
        let allocation = usize::from(c.be16(3));
        let identity = &self.inner.identity;
        if !evpd {
            if page != 0 {
                return Outcome::check(sense_key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
            }
            return Outcome::data_in(standard_inquiry(0x00, identity), allocation);
        }
        let body = match page {
            0x00 => vec![0x00, 0x80, 0x83],
            0x80 => identity.serial.as_bytes().to_vec(),
            0x83 => identity.naa_id.map_or_else(Vec::new, naa6_designator),
            _ => return Outcome::check(sense_key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB),
        };
        let mut data = vec![0x00, page];
        data.extend_from_slice(&(body.len() as u16).to_be_bytes());
        data.extend_from_slice(&body);
        Outcome::data_in(data, allocation)
    }

    fn mode_sense(&self, c: Cdb<'_>) -> Outcome {
        let six = c.u8(0) == opcode::MODE_SENSE_6;
        let dbd = c.u8(1) & 0x08 != 0;
        let page_control = c.u8(2) >> 6;
        let page = c.u8(2) & 0x3F;
        let allocation = if six {
            usize::from(c.u8(4))
        } else {
            usize::from(c.be16(7))
        };
        if page_control == 3 {
            return Outcome::check(sense_key::ILLEGAL_REQUEST, asc::SAVING_NOT_SUPPORTED);
        }
        // Page control 1 asks for the changeable mask: nothing is changeable here.
        let changeable = page_control == 1;
        let mut caching = vec![0u8; 20];
        caching[0] = 0x08;
        caching[1] = 0x12;
        if self.inner.write_cache && !changeable {
            caching[2] = 0x04; // WCE
        }
        let mut control = vec![0u8; 12];
        control[0] = 0x0A;
        control[1] = 0x0A;
        let pages = match page {
            0x08 => caching,
            0x0A => control,
            0x3F => [caching, control].concat(),
            _ => return Outcome::check(sense_key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB),
        };
        let mut descriptor = Vec::new();
        if !dbd {
            let capacity = self.blocks();
            let blocks = u32::try_from(capacity).unwrap_or(u32::MAX) & 0x00FF_FFFF;
            let blocks = if capacity > 0x00FF_FFFF {
                0x00FF_FFFF
            } else {
                blocks
            };
            descriptor.push(0); // density code
            descriptor.extend_from_slice(&blocks.to_be_bytes()[1..]);
            descriptor.push(0);
            descriptor.extend_from_slice(&self.inner.block_size.to_be_bytes()[1..]);
        }
        let device_specific = if self.inner.read_only { 0x80 } else { 0 } | 0x10; // WP, DPOFUA
        let mut data = if six {
            vec![0, 0, device_specific, descriptor.len() as u8]
        } else {
            let mut header = vec![0, 0, 0, device_specific, 0, 0];
            header.extend_from_slice(&(descriptor.len() as u16).to_be_bytes());
            header
        };
        data.extend_from_slice(&descriptor);
        data.extend_from_slice(&pages);
        // The mode data length excludes itself.
        if six {
            data[0] = (data.len() - 1) as u8;
        } else {
            let len = ((data.len() - 2) as u16).to_be_bytes();
            data[..2].copy_from_slice(&len);
        }
        Outcome::data_in(data, allocation)
    }
}

/// The standard INQUIRY data (SPC-4 section 6.4.2), 36 bytes, with `peripheral` in byte 0.
fn standard_inquiry(peripheral: u8, identity: &LunIdentity) -> Vec<u8> {
    let mut data = vec![0u8; 36];
    data[0] = peripheral;
    data[2] = 0x06; // SPC-4
    data[3] = 0x12; // HISUP, response data format 2
    data[4] = 31; // additional length
    data[7] = 0x02; // CMDQUE
    let field = |data: &mut [u8], range: std::ops::Range<usize>, text: &str| {
        let bytes = text.as_bytes();
        for (i, slot) in data
            .get_mut(range)
            .unwrap_or_default()
            .iter_mut()
            .enumerate()
        {
            *slot = bytes.get(i).copied().unwrap_or(b' ');
        }
    };
    field(&mut data, 8..16, &identity.vendor);
    field(&mut data, 16..32, &identity.product);
    field(&mut data, 32..36, &identity.revision);
    data
}

/// IEEE OUI placed in NAA-6 designators (the one Linux LIO uses for software targets).
const NAA_OUI: u128 = 0x00_1405;

/// One NAA IEEE Registered Extended (NAA 6) designator (SPC-4 section 7.8.6.6.4) for `id`.
fn naa6_designator(id: u64) -> Vec<u8> {
    let value =
        (6u128 << 124) | (NAA_OUI << 100) | (u128::from(id & 0xF_FFFF_FFFF) << 64) | u128::from(id);
    // Code set 1 (binary), association 0 (logical unit), designator type 3 (NAA), length 16.
    let mut designator = vec![0x01, 0x03, 0x00, 16];
    designator.extend_from_slice(&value.to_be_bytes());
    designator
}

/// REPORT LUNS (SPC-4 section 6.33) for the LUNs in `luns`, in SAM-5 single-level format.
fn report_luns(c: Cdb<'_>, luns: &[u16]) -> Outcome {
    let allocation = c.be32(6) as usize;
    if allocation < 16 {
        return Outcome::check(sense_key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    }
    let mut data = ((luns.len() * 8) as u32).to_be_bytes().to_vec();
    data.extend_from_slice(&[0; 4]);
    for &lun in luns {
        let [high, low] = lun.to_be_bytes();
        let first = if lun < 256 { 0 } else { 0x40 | high };
        data.extend_from_slice(&[first, low, 0, 0, 0, 0, 0, 0]);
    }
    Outcome::data_in(data, allocation)
}

/// What a target answers for a LUN it does not have (`luns` are the ones it has), as QEMU's
/// target-level emulation does: INQUIRY reports peripheral qualifier 3 (no unit), REPORT LUNS
/// and REQUEST SENSE work, everything else is LOGICAL UNIT NOT SUPPORTED.
#[must_use]
pub fn execute_absent(cdb: &[u8], luns: &[u16]) -> Outcome {
    let c = Cdb(cdb);
    let op = c.u8(0);
    if cdb.len() < cdb_length(op) {
        return Outcome::check(sense_key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    }
    match op {
        opcode::INQUIRY if c.u8(1) & 1 == 0 && c.u8(2) == 0 => Outcome::data_in(
            standard_inquiry(0x7F, &LunIdentity::default()),
            c.be16(3).into(),
        ),
        opcode::REPORT_LUNS => report_luns(c, luns),
        opcode::REQUEST_SENSE => Outcome::data_in(
            fixed_sense(sense_key::ILLEGAL_REQUEST, asc::LUN_NOT_SUPPORTED),
            c.u8(4).into(),
        ),
        _ => Outcome::check(sense_key::ILLEGAL_REQUEST, asc::LUN_NOT_SUPPORTED),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn read10(lba: u32, blocks: u16) -> Vec<u8> {
        let mut cdb = vec![opcode::READ_10, 0];
        cdb.extend_from_slice(&lba.to_be_bytes());
        cdb.push(0);
        cdb.extend_from_slice(&blocks.to_be_bytes());
        cdb.push(0);
        cdb
    }

    fn write16(lba: u64, blocks: u32) -> Vec<u8> {
        let mut cdb = vec![opcode::WRITE_16, 0];
        cdb.extend_from_slice(&lba.to_be_bytes());
        cdb.extend_from_slice(&blocks.to_be_bytes());
        cdb.extend_from_slice(&[0, 0]);
        cdb
    }

    #[test]
    fn write_then_read_round_trips_across_chunks() {
        let lun = Lun::memory(1 << 20, 512).unwrap();
        let data: Vec<u8> = (0u32..512 * 300).map(|i| (i * 7 % 251) as u8).collect();
        let lba = (CHUNK / 512) - 5;
        assert_eq!(lun.execute(&write16(lba, 300), &data, &[0]).status, GOOD);
        let read = lun.execute(&read10(lba as u32, 300), &[], &[0]);
        assert_eq!(read.status, GOOD);
        assert_eq!(read.data_in, data);
        assert_eq!(lun.execute(&read10(0, 1), &[], &[0]).data_in, vec![0; 512]);
    }

    #[test]
    fn file_backed_units_read_and_write_the_file() {
        let path = std::env::temp_dir().join(format!("rvscsi-lun-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(8 * 4096).unwrap();
        let lun = Lun::file(file, 4096).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(lun.blocks(), 8);
        let data = vec![0x5A; 4096];
        assert_eq!(lun.execute(&write16(7, 1), &data, &[0]).status, GOOD);
        assert_eq!(lun.execute(&read10(7, 1), &[], &[0]).data_in, data);
        let sync = lun.execute(
            &[opcode::SYNCHRONIZE_CACHE_10, 0, 0, 0, 0, 7, 0, 0, 1, 0],
            &[],
            &[0],
        );
        assert_eq!(sync.status, GOOD);
        assert_eq!(lun.execute(&write16(8, 1), &data, &[0]).sense[12], 0x21);
        assert!(matches!(
            Lun::memory(8, 1024),
            Err(LunConfigError::BlockSize(1024))
        ));
    }

    #[test]
    fn out_of_range_and_unknown_opcodes_give_illegal_request() {
        let lun = Lun::memory(100, 4096).unwrap();
        let out = lun.execute(&read10(99, 2), &[], &[0]);
        assert_eq!(out.status, CHECK_CONDITION);
        assert_eq!((out.sense[2], out.sense[12], out.sense[13]), (5, 0x21, 0));
        let out = lun.execute(&write16(u64::MAX, 1), &[0; 4096], &[0]);
        assert_eq!(out.sense[12], 0x21);
        let out = lun.execute(&[0xC7, 0, 0, 0, 0, 0], &[], &[0]);
        assert_eq!((out.sense[2], out.sense[12]), (5, 0x20));
        // A CDB shorter than its group's length is refused, not read past its end.
        let out = lun.execute(&[opcode::READ_16, 0, 0], &[], &[0]);
        assert_eq!(out.sense[12], 0x24);
    }

    #[test]
    fn capacity_inquiry_and_vpd_pages() {
        let lun = Lun::memory(1000, 512).unwrap().with_identity(LunIdentity {
            serial: "ABC".into(),
            naa_id: Some(0x1122_3344_5566_7788),
            ..LunIdentity::default()
        });
        let cap = lun.execute(
            &[opcode::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[],
            &[0],
        );
        assert_eq!(cap.data_in, [0, 0, 3, 0xE7, 0, 0, 2, 0]);
        let mut sai = vec![opcode::SERVICE_ACTION_IN_16, SAI_READ_CAPACITY_16];
        sai.extend_from_slice(&[0; 8]);
        sai.extend_from_slice(&32u32.to_be_bytes());
        sai.extend_from_slice(&[0, 0]);
        let cap16 = lun.execute(&sai, &[], &[0]);
        assert_eq!(cap16.data_in.len(), 32);
        assert_eq!(
            &cap16.data_in[..12],
            &[0, 0, 0, 0, 0, 0, 3, 0xE7, 0, 0, 2, 0]
        );
        let std = lun.execute(&[opcode::INQUIRY, 0, 0, 0, 96, 0], &[], &[0]);
        assert_eq!(std.data_in.len(), 36);
        assert_eq!(&std.data_in[8..16], b"RVSCSI  ");
        let serial = lun.execute(&[opcode::INQUIRY, 1, 0x80, 0, 96, 0], &[], &[0]);
        assert_eq!(serial.data_in, [0, 0x80, 0, 3, b'A', b'B', b'C']);
        let ids = lun.execute(&[opcode::INQUIRY, 1, 0x83, 0, 96, 0], &[], &[0]);
        assert_eq!(&ids.data_in[..8], &[0, 0x83, 0, 20, 1, 3, 0, 16]);
        assert_eq!(ids.data_in[8] >> 4, 6);
        assert_eq!(
            &ids.data_in[16..24],
            &0x1122_3344_5566_7788u64.to_be_bytes()
        );
        let empty = Lun::memory(1, 512).unwrap().with_identity(LunIdentity {
            naa_id: None,
            ..LunIdentity::default()
        });
        let ids = empty.execute(&[opcode::INQUIRY, 1, 0x83, 0, 96, 0], &[], &[0]);
        assert_eq!(ids.data_in, [0, 0x83, 0, 0]);
        let bad = lun.execute(&[opcode::INQUIRY, 1, 0xB0, 0, 96, 0], &[], &[0]);
        assert_eq!(bad.sense[12], 0x24);
        // Allocation length truncates.
        let short = lun.execute(&[opcode::INQUIRY, 0, 0, 0, 5, 0], &[], &[0]);
        assert_eq!(short.data_in.len(), 5);
    }

    #[test]
    fn mode_sense_caching_page_and_all_pages() {
        let lun = Lun::memory(1000, 512).unwrap();
        let caching = lun.execute(&[opcode::MODE_SENSE_6, 0x08, 0x08, 0, 255, 0], &[], &[0]);
        assert_eq!(caching.data_in.len(), 4 + 20);
        assert_eq!(caching.data_in[0], 23);
        assert_eq!(&caching.data_in[4..7], &[0x08, 0x12, 0x04]);
        let all = lun.execute(
            &[opcode::MODE_SENSE_10, 0, 0x3F, 0, 0, 0, 0, 1, 0, 0],
            &[],
            &[0],
        );
        assert_eq!(all.data_in.len(), 8 + 8 + 20 + 12);
        assert_eq!(&all.data_in[6..8], &[0, 8]);
        assert_eq!(&all.data_in[13..16], &[0, 2, 0]);
        let bad = lun.execute(&[opcode::MODE_SENSE_6, 0, 0x19, 0, 255, 0], &[], &[0]);
        assert_eq!(bad.status, CHECK_CONDITION);
    }

    #[test]
    fn absent_luns_and_report_luns() {
        let inquiry = execute_absent(&[opcode::INQUIRY, 0, 0, 0, 36, 0], &[1, 300]);
        assert_eq!(inquiry.data_in[0], 0x7F);
        let mut cdb = vec![opcode::REPORT_LUNS, 0, 0, 0, 0, 0];
        cdb.extend_from_slice(&64u32.to_be_bytes());
        cdb.extend_from_slice(&[0, 0]);
        let luns = execute_absent(&cdb, &[1, 300]);
        assert_eq!(
            luns.data_in,
            [
                0, 0, 0, 16, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x41, 44, 0, 0, 0, 0, 0, 0
            ]
        );
        let tur = execute_absent(&[0; 6], &[1]);
        assert_eq!((tur.sense[2], tur.sense[12]), (5, 0x25));
    }

    proptest! {
        #[test]
        fn no_cdb_panics_and_check_conditions_carry_sense(cdb in proptest::collection::vec(any::<u8>(), 0..32), data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let lun = Lun::memory(64, 512).unwrap();
            let out = lun.execute(&cdb, &data, &[0]);
            prop_assert!(out.status == GOOD || !out.sense.is_empty());
            let absent = execute_absent(&cdb, &[]);
            prop_assert!(absent.status == GOOD || !absent.sense.is_empty());
        }
    }
}
