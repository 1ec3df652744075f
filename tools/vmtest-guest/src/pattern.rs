//! The data written and verified across the disk, and where on the disk it goes.
//!
//! Every 8-byte word of a block is a hash of (pass seed, LBA, word index), so a block read back
//! from the wrong LBA, a stale block from an earlier pass, a shifted or torn transfer, or a
//! block of zeroes all fail verification, and the mismatch names the LBA and offset.

use core::sync::atomic::Ordering::Relaxed;

use virtio_core::dma::DmaMemory;

/// The 64-bit word at `word` of block `lba` in pass `seed` (splitmix64's finaliser over the
/// three inputs: cheap, and every input bit changes about half the output bits).
#[must_use]
pub const fn word(seed: u64, lba: u64, word: u64) -> u64 {
    let mut z =
        seed ^ lba.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ word.wrapping_mul(0xd1b5_4a32_d192_ed03);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `memory` with `blocks` blocks of `block_length` bytes starting at `lba`.
/// Returns `false`, writing nothing, if they do not fit or the block length is not a multiple
/// of 8.
#[must_use]
pub fn fill(memory: &DmaMemory, seed: u64, lba: u64, block_length: u32, blocks: u32) -> bool {
    let Some(words) = words_per_block(memory, block_length, blocks) else {
        return false;
    };
    for block in 0..u64::from(blocks) {
        for index in 0..words {
            let offset = (block * words + index) * 8;
            memory.store_u64(offset as usize, word(seed, lba + block, index), Relaxed);
        }
    }
    true
}

/// A word that did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// The word at `offset` of block `lba` differs.
    Mismatch {
        /// The block.
        lba: u64,
        /// Byte offset in the block.
        offset: u32,
        /// What was written.
        expected: u64,
        /// What was read.
        found: u64,
    },
    /// The blocks do not fit the memory, or the block length is not a multiple of 8.
    Geometry {
        /// Blocks asked for.
        blocks: u32,
        /// Block length asked for.
        block_length: u32,
    },
}

/// Checks that `memory` holds what [`fill`] wrote for the same arguments.
///
/// # Errors
/// The first mismatching word, or [`VerifyError::Geometry`].
pub fn verify(
    memory: &DmaMemory,
    seed: u64,
    lba: u64,
    block_length: u32,
    blocks: u32,
) -> Result<(), VerifyError> {
    let words = words_per_block(memory, block_length, blocks).ok_or(VerifyError::Geometry {
        blocks,
        block_length,
    })?;
    for block in 0..u64::from(blocks) {
        for index in 0..words {
            let offset = (block * words + index) * 8;
            let expected = word(seed, lba + block, index);
            let found = memory.load_u64(offset as usize, Relaxed);
            if found != expected {
                return Err(VerifyError::Mismatch {
                    lba: lba + block,
                    offset: (index * 8) as u32,
                    expected,
                    found,
                });
            }
        }
    }
    Ok(())
}

/// Words per block, if `blocks` blocks of `block_length` bytes fit in `memory`.
fn words_per_block(memory: &DmaMemory, block_length: u32, blocks: u32) -> Option<u64> {
    if block_length == 0 || !block_length.is_multiple_of(8) {
        return None;
    }
    let bytes = u64::from(block_length).checked_mul(u64::from(blocks))?;
    (bytes <= memory.len() as u64).then_some(u64::from(block_length) / 8)
}

/// The first LBA of region `index` of `regions` regions of `region_blocks` blocks spread evenly
/// over a disk of `disk_blocks` blocks: region 0 starts at LBA 0 and the last region ends at the
/// disk's last block. `None` if the regions do not fit or `index` is out of range.
#[must_use]
pub fn spread(disk_blocks: u64, regions: u64, region_blocks: u64, index: u64) -> Option<u64> {
    let used = regions.checked_mul(region_blocks)?;
    if index >= regions || used > disk_blocks {
        return None;
    }
    let slack = disk_blocks - used;
    let gaps = regions.saturating_sub(1).max(1);
    // slack * index / gaps, without overflow: both are far below 2^32 on test disks, but the
    // arithmetic is done in u128 so it holds for any disk.
    let gap_before = (u128::from(slack) * u128::from(index) / u128::from(gaps)) as u64;
    Some(index * region_blocks + gap_before)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use virtio_core::fake::FakeHal;
    use virtio_core::hal::Hal;

    use super::*;

    // The library forbids unsafe code, tests included, so the fake DMA memory is not returned
    // with `dma_free`; it lives until the test process ends.
    #[test]
    fn fill_then_verify_passes_and_any_corruption_is_located() {
        let hal = FakeHal::new();
        let memory = hal.dma_alloc(4 * 512, 8).unwrap();
        assert!(fill(&memory, 7, 1000, 512, 4));
        assert_eq!(verify(&memory, 7, 1000, 512, 4), Ok(()));
        // Wrong seed (stale data), wrong LBA (misdirected I/O).
        assert!(verify(&memory, 8, 1000, 512, 4).is_err());
        assert!(matches!(
            verify(&memory, 7, 1001, 512, 4),
            Err(VerifyError::Mismatch {
                lba: 1001,
                offset: 0,
                ..
            })
        ));
        // One flipped byte in the third block.
        let flipped = memory.load_u8(2 * 512 + 100) ^ 0x10;
        memory.store_u8(2 * 512 + 100, flipped);
        assert!(matches!(
            verify(&memory, 7, 1000, 512, 4),
            Err(VerifyError::Mismatch {
                lba: 1002,
                offset: 96,
                ..
            })
        ));
        // Zeroed memory never verifies.
        memory.zero();
        assert!(verify(&memory, 7, 1000, 512, 4).is_err());
    }

    #[test]
    fn geometry_that_does_not_fit_is_refused() {
        let hal = FakeHal::new();
        let memory = hal.dma_alloc(1024, 8).unwrap();
        assert!(!fill(&memory, 1, 0, 512, 3));
        assert!(!fill(&memory, 1, 0, 500, 1));
        assert!(!fill(&memory, 1, 0, 0, 1));
        assert_eq!(
            verify(&memory, 1, 0, 512, 3),
            Err(VerifyError::Geometry {
                blocks: 3,
                block_length: 512
            })
        );
    }

    #[test]
    fn spread_covers_both_ends_of_the_disk() {
        assert_eq!(spread(1000, 4, 10, 0), Some(0));
        assert_eq!(spread(1000, 4, 10, 3), Some(990));
        assert_eq!(spread(1000, 1, 10, 0), Some(0));
        assert_eq!(spread(1000, 4, 10, 4), None);
        assert_eq!(spread(30, 4, 10, 0), None);
    }

    proptest! {
        #[test]
        fn spread_regions_are_ordered_disjoint_and_inside(
            disk in 1u64..1 << 40,
            regions in 1u64..200,
            size in 1u64..5000,
        ) {
            prop_assume!(regions * size <= disk);
            let mut previous_end = 0;
            for index in 0..regions {
                let start = spread(disk, regions, size, index).unwrap();
                prop_assert!(start >= previous_end);
                previous_end = start + size;
            }
            prop_assert!(previous_end <= disk);
            if regions > 1 {
                prop_assert_eq!(previous_end, disk);
            }
        }

        #[test]
        fn words_differ_across_lbas_and_indices(seed in any::<u64>(), lba in 0u64..1 << 48) {
            let words: BTreeSet<u64> =
                (0..64).flat_map(|i| [word(seed, lba, i), word(seed, lba + 1, i)]).collect();
            prop_assert_eq!(words.len(), 128);
        }
    }
}
