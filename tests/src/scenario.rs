//! Fixtures the scenario tests share: READ(10)/WRITE(10) CDBs, the standard disks and bus, a
//! faulted read, a polling wait and a replayable random sequence.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use crate::device::target::{Lun, LunConfigError, LunIdentity, opcode};
use crate::device::{DeviceOptions, FaultAction};
use crate::harness::{BootError, Machine, boot, fault_once};
use crate::sim::{Completion, Request, SimError, SimOptions};

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
