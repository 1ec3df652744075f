//! Tests of the indirect table writer on its own: the bytes of each format, every refusal, and
//! the record a caller keeps between contexts. How the rings add what it writes (and that it
//! matches what their own `add` writes) is tested with each ring.

use std::vec::Vec;

use super::*;
use crate::fake::FakeHal;
use crate::hal::Hal;

/// Descriptor `index` of `table` as `(addr, len, last four bytes as two u16s)`.
fn entry(table: &DmaMemory, index: usize) -> (u64, u32, u16, u16) {
    let at = index * DESC_SIZE;
    let relaxed = Ordering::Relaxed;
    (
        table.load_u64(at, relaxed),
        table.load_u32(at + 8, relaxed),
        table.load_u16(at + 12, relaxed),
        table.load_u16(at + 14, relaxed),
    )
}

fn write(
    table: &DmaMemory,
    format: RingFormat,
    readable: &[(u64, u32)],
    writable: &[(u64, u32)],
) -> Result<IndirectChain, QueueError> {
    let mut writer = IndirectWriter::new(table, format)?;
    for &(address, len) in readable {
        writer.push_readable(Segment::new(address, len))?;
    }
    for &(address, len) in writable {
        writer.push_writable(Segment::new(address, len))?;
    }
    writer.finish()
}

#[test]
fn split_entries_are_linked_in_order_and_the_last_ends_the_chain() {
    let hal = FakeHal::new();
    let table = hal.dma_alloc(16 * 8, 16).unwrap();
    let chain = write(
        &table,
        RingFormat::Split,
        &[(0x10, 4), (0x20, 8)],
        &[(0x30, 12), (0x40, 16)],
    )
    .unwrap();
    // (addr, len, flags, next): NEXT = 1, WRITE = 2.
    let expected = [
        (0x10, 4, 1, 1),
        (0x20, 8, 1, 2),
        (0x30, 12, 3, 3),
        (0x40, 16, 2, 4),
    ];
    let written: Vec<_> = (0..4).map(|i| entry(&table, i)).collect();
    assert_eq!(written, expected);
    assert_eq!(chain.descriptors(), 4);
    assert_eq!(chain.table_len(), 64);
    assert_eq!(chain.table(), table.bus_address());
    assert_eq!((chain.writable(), chain.posted()), (28, 40));
    assert_eq!(chain.format(), RingFormat::Split);

    // A chain of readable segments only ends without WRITE.
    let chain = write(&table, RingFormat::Split, &[(0x50, 1)], &[]).unwrap();
    assert_eq!(entry(&table, 0), (0x50, 1, 0, 1));
    assert_eq!(
        (chain.descriptors(), chain.writable(), chain.posted()),
        (1, 0, 1)
    );
}

#[test]
fn packed_entries_carry_write_only_and_a_zero_id() {
    let hal = FakeHal::new();
    let table = hal.dma_alloc(16 * 8, 16).unwrap();
    // Garbage first, so every field is seen written: each field at the size the writer
    // stores it with (one access size per location, as the rings keep).
    let relaxed = Ordering::Relaxed;
    for at in (0..8).map(|i| 16 * i) {
        table.store_u64(at, u64::MAX, relaxed);
        table.store_u32(at + 8, u32::MAX, relaxed);
        table.store_u16(at + 12, 0xABAB, relaxed);
        table.store_u16(at + 14, 0xABAB, relaxed);
    }
    let chain = write(
        &table,
        RingFormat::Packed,
        &[(0x10, 4)],
        &[(0x30, 12), (0x40, 16)],
    )
    .unwrap();
    // (addr, len, id, flags): no NEXT (the table's length ends the chain), WRITE = 2.
    let expected = [(0x10, 4, 0, 0), (0x30, 12, 0, 2), (0x40, 16, 0, 2)];
    let written: Vec<_> = (0..3).map(|i| entry(&table, i)).collect();
    assert_eq!(written, expected);
    assert_eq!(
        (chain.descriptors(), chain.writable(), chain.posted()),
        (3, 28, 32)
    );
    assert_eq!(chain.format(), RingFormat::Packed);
}

#[test]
fn malformed_chains_are_refused_where_they_are_written() {
    let hal = FakeHal::new();
    let table = hal.dma_alloc(16 * 4, 16).unwrap();
    for format in [RingFormat::Split, RingFormat::Packed] {
        let s = (0x1000, 8);
        assert_eq!(write(&table, format, &[], &[]), Err(QueueError::EmptyChain));
        assert_eq!(
            write(&table, format, &[s, (0x2000, 0)], &[]),
            Err(QueueError::EmptySegment)
        );
        assert_eq!(
            write(&table, format, &[s], &[(0x2000, 0)]),
            Err(QueueError::EmptySegment)
        );
        assert_eq!(
            write(&table, format, &[], &[(0, u32::MAX), (0, 1)]),
            Err(QueueError::WritableTooLong)
        );
        // Four entries fit in 64 bytes; a fifth does not.
        assert!(write(&table, format, &[s, s], &[s, s]).is_ok());
        assert_eq!(
            write(&table, format, &[s, s, s], &[s, s]),
            Err(QueueError::ChainTooLong {
                segments: 5,
                limit: 4
            })
        );
        // Readable after writable: the order the device reads them in would be wrong.
        let mut writer = IndirectWriter::new(&table, format).unwrap();
        writer.push_readable(Segment::new(0x1000, 8)).unwrap();
        writer.push_writable(Segment::new(0x2000, 8)).unwrap();
        assert_eq!(
            writer.push_readable(Segment::new(0x3000, 8)),
            Err(QueueError::ReadableAfterWritable)
        );
        assert_eq!(writer.len(), 2);
        // Misaligned tables are refused before anything is written.
        let misaligned = table.sub(8, 48).unwrap();
        assert_eq!(
            IndirectWriter::new(&misaligned, format).err(),
            Some(QueueError::IndirectMisaligned)
        );
        // A table too small for one descriptor holds no chain.
        let tiny = table.sub(0, 8).unwrap();
        let mut writer = IndirectWriter::new(&tiny, format).unwrap();
        assert!(writer.is_empty());
        assert_eq!(
            writer.push_readable(Segment::new(0x1000, 8)),
            Err(QueueError::ChainTooLong {
                segments: 1,
                limit: 0
            })
        );
        // ... and finishes as an empty chain, not as a chain whose last entry lies outside.
        assert_eq!(writer.finish(), Err(QueueError::EmptyChain));
    }
}

#[test]
fn readable_totals_saturate_and_writable_totals_are_exact() {
    let hal = FakeHal::new();
    let table = hal.dma_alloc(16 * 4, 16).unwrap();
    let chain = write(
        &table,
        RingFormat::Split,
        &[(0, u32::MAX), (0, u32::MAX)],
        &[(0, 7)],
    )
    .unwrap();
    assert_eq!((chain.writable(), chain.posted()), (7, u32::MAX));
}

#[test]
fn a_kept_record_comes_back_as_the_same_chain_and_impossible_ones_are_refused() {
    let hal = FakeHal::new();
    let table = hal.dma_alloc(16 * 4, 16).unwrap();
    let chain = write(&table, RingFormat::Packed, &[(0x10, 4)], &[(0x20, 96)]).unwrap();
    let kept = IndirectChain::from_parts(
        chain.format(),
        chain.table(),
        chain.descriptors(),
        chain.writable(),
        chain.posted(),
    );
    assert_eq!(kept, Some(chain));
    let bus = table.bus_address();
    assert_eq!(
        IndirectChain::from_parts(RingFormat::Split, bus, 0, 0, 0),
        None
    );
    assert_eq!(
        IndirectChain::from_parts(RingFormat::Split, bus, 1, 9, 8),
        None
    );
    assert_eq!(
        IndirectChain::from_parts(RingFormat::Split, bus + 8, 1, 0, 8),
        None
    );
    assert_eq!(
        RingFormat::from_raw(RingFormat::Split as u8),
        Some(RingFormat::Split)
    );
    assert_eq!(
        RingFormat::from_raw(RingFormat::Packed as u8),
        Some(RingFormat::Packed)
    );
    assert_eq!(RingFormat::from_raw(0), None);
    assert_eq!(RingFormat::from_raw(3), None);
}

#[test]
fn check_for_s_one_compare_decides_as_the_checks_one_by_one() {
    let formats = [RingFormat::Split, RingFormat::Packed];
    for written in formats {
        let chain = IndirectChain::from_parts(written, 0x1000, 2, 16, 32).unwrap();
        for ring in formats {
            for negotiated in [false, true] {
                assert_eq!(
                    chain.check_for(ring, negotiated),
                    chain.check_for_by_definition(ring, negotiated),
                    "{written:?} on {ring:?}, negotiated {negotiated}"
                );
            }
        }
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "65,535 descriptors of pure stores: run natively; the shorter tests cover the code"
)]
fn a_table_larger_than_u16_max_descriptors_holds_u16_max_of_them() {
    let hal = FakeHal::new();
    // One descriptor more than the split format's 16-bit `next` can name.
    let limit = usize::from(u16::MAX);
    let table = hal.dma_alloc((limit + 1) * DESC_SIZE, 16).unwrap();
    let mut writer = IndirectWriter::new(&table, RingFormat::Split).unwrap();
    let segment = Segment::new(0x1000, 1);
    for _ in 0..limit {
        writer.push_writable(segment).unwrap();
    }
    assert_eq!(writer.len(), u16::MAX);
    assert_eq!(
        writer.push_writable(segment),
        Err(QueueError::ChainTooLong {
            segments: limit + 1,
            limit
        })
    );
    let chain = writer.finish().unwrap();
    // The second to last links to the last (index `u16::MAX - 1`); the last ends the chain,
    // with the `next` the device ignores at its largest value.
    assert_eq!(entry(&table, limit - 2), (0x1000, 1, 3, u16::MAX - 1));
    assert_eq!(entry(&table, limit - 1), (0x1000, 1, 2, u16::MAX));
    assert_eq!(
        (chain.descriptors(), chain.writable(), chain.posted()),
        (u16::MAX, u32::from(u16::MAX), u32::from(u16::MAX))
    );
}
