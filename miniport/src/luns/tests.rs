//! Unit tests of `luns`.
use std::boxed::Box;
use std::sync::Arc;
use std::vec::Vec;

use super::*;
use crate::sizing::LUN_SLOTS;

fn table(slots: usize) -> LunTable<Box<[LunSlot]>> {
    LunTable::new((0..slots).map(|_| LunSlot::new()).collect())
}

fn inquiry(qualifier_type: u8, tag: u8) -> [u8; 36] {
    let mut data = [tag; 36];
    data[0] = qualifier_type;
    data[4] = 31;
    data
}

fn copies(table: &LunTable<Box<[LunSlot]>>) -> Vec<LunCopy> {
    (0..table.capacity())
        .filter_map(|index| {
            let mut copy = LunCopy::EMPTY;
            table.copy_slot(index, &mut copy).then_some(copy)
        })
        .collect()
}

#[test]
fn snooped_commands_are_recognised_from_opcode_and_detail() {
    assert_eq!(
        Snooped::of(0x12, 0xFFFF),
        Some(Snooped::Answer(Answer::Inquiry))
    );
    assert_eq!(
        Snooped::of(0x12, 0x80),
        Some(Snooped::Answer(Answer::UnitSerialNumber))
    );
    assert_eq!(
        Snooped::of(0x12, 0x83),
        Some(Snooped::Answer(Answer::DeviceIdentification))
    );
    assert_eq!(Snooped::of(0x12, 0x00), None);
    assert_eq!(
        Snooped::of(0x25, 0xFFFF),
        Some(Snooped::Answer(Answer::ReadCapacity10))
    );
    assert_eq!(
        Snooped::of(0x9E, 0x10),
        Some(Snooped::Answer(Answer::ReadCapacity16))
    );
    assert_eq!(Snooped::of(0x9E, 0x11), None);
    assert_eq!(Snooped::of(0xA0, 0xFFFF), Some(Snooped::ReportLuns));
    assert_eq!(Snooped::of(0x28, 0xFFFF), None);
}

#[test]
fn inquiry_inserts_then_updates_and_other_answers_attach() {
    let table = table(4);
    let first = inquiry(0x00, 0xAA);
    assert_eq!(
        table.record(2, 5, Answer::Inquiry, &first),
        Recorded::Inserted
    );
    let second = inquiry(0x00, 0xBB);
    assert_eq!(
        table.record(2, 5, Answer::Inquiry, &second),
        Recorded::Updated
    );
    let capacity = [0, 0, 0x0F, 0xFF, 0, 0, 2, 0];
    assert_eq!(
        table.record(2, 5, Answer::ReadCapacity10, &capacity),
        Recorded::Updated
    );
    let serial = [0, 0x80, 0, 4, b'a', b'b', b'c', b'd'];
    assert_eq!(
        table.record(2, 5, Answer::UnitSerialNumber, &serial),
        Recorded::Updated
    );
    let all = copies(&table);
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].target, all[0].lun), (2, 5));
    assert_eq!(all[0].answer(Answer::Inquiry), Some(&second[..]));
    assert_eq!(all[0].answer(Answer::ReadCapacity10), Some(&capacity[..]));
    assert_eq!(all[0].answer(Answer::UnitSerialNumber), Some(&serial[..]));
    assert_eq!(all[0].answer(Answer::DeviceIdentification), None);
    assert_eq!(all[0].answer(Answer::ReadCapacity16), None);
}

#[test]
fn answers_of_unknown_luns_and_malformed_pages_are_not_kept() {
    let table = table(4);
    let capacity = [0u8; 8];
    assert_eq!(
        table.record(0, 0, Answer::ReadCapacity10, &capacity),
        Recorded::Unknown
    );
    table.record(0, 0, Answer::Inquiry, &inquiry(0, 1));
    // Page 0x83 data answering as page 0x80, a short page, a short capacity.
    let wrong_page = [0, 0x83, 0, 0];
    assert_eq!(
        table.record(0, 0, Answer::UnitSerialNumber, &wrong_page),
        Recorded::Malformed
    );
    assert_eq!(
        table.record(0, 0, Answer::DeviceIdentification, &[0, 0x83]),
        Recorded::Malformed
    );
    assert_eq!(
        table.record(0, 0, Answer::ReadCapacity10, &capacity[..7]),
        Recorded::Malformed
    );
    assert_eq!(
        table.record(0, 0, Answer::Inquiry, &[0; 4]),
        Recorded::Malformed
    );
    assert_eq!(copies(&table)[0].answer(Answer::UnitSerialNumber), None);
}

#[test]
fn absent_inquiry_frees_the_slot() {
    let table = table(2);
    table.record(1, 0, Answer::Inquiry, &inquiry(0x00, 1));
    table.record(1, 1, Answer::Inquiry, &inquiry(0x00, 2));
    assert_eq!(
        table.record(1, 0, Answer::Inquiry, &inquiry(0x7F, 0)),
        Recorded::Removed
    );
    let all = copies(&table);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].lun, 1);
    // Qualifier 1 (no device connected) counts as absent too.
    assert_eq!(
        table.record(1, 1, Answer::Inquiry, &inquiry(0x20, 0)),
        Recorded::Removed
    );
    assert!(copies(&table).is_empty());
    // Answers of a removed LUN are no longer kept.
    assert_eq!(
        table.record(1, 1, Answer::ReadCapacity10, &[0; 8]),
        Recorded::Unknown
    );
}

#[test]
fn past_the_bound_new_luns_are_refused_until_a_slot_frees() {
    let table = table(LUN_SLOTS);
    for lun in 0..LUN_SLOTS as u16 {
        assert_eq!(
            table.record(0, lun, Answer::Inquiry, &inquiry(0, 0)),
            Recorded::Inserted
        );
    }
    assert_eq!(
        table.record(1, 0, Answer::Inquiry, &inquiry(0, 0)),
        Recorded::Full
    );
    // Known LUNs still update.
    assert_eq!(
        table.record(0, 3, Answer::Inquiry, &inquiry(0, 9)),
        Recorded::Updated
    );
    assert!(table.remove(0, 7));
    assert!(!table.remove(0, 7));
    assert_eq!(
        table.record(1, 0, Answer::Inquiry, &inquiry(0, 0)),
        Recorded::Inserted
    );
    assert_eq!(copies(&table).len(), LUN_SLOTS);
}

#[test]
fn a_truncated_answer_does_not_replace_a_longer_one_but_a_complete_one_does() {
    let table = table(1);
    table.record(0, 0, Answer::Inquiry, &inquiry(0, 0));
    let mut page = std::vec![0u8, 0x83, 0, 12];
    page.extend_from_slice(&[0x01, 0x03, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    table.record(0, 0, Answer::DeviceIdentification, &page);
    // Windows asking for the header only.
    assert_eq!(
        table.record(0, 0, Answer::DeviceIdentification, &page[..4]),
        Recorded::KeptLonger
    );
    assert_eq!(
        copies(&table)[0].answer(Answer::DeviceIdentification),
        Some(&page[..])
    );
    // A changed, shorter but complete page replaces it.
    let shorter = [0u8, 0x83, 0, 0];
    assert_eq!(
        table.record(0, 0, Answer::DeviceIdentification, &shorter),
        Recorded::Updated
    );
    assert_eq!(
        copies(&table)[0].answer(Answer::DeviceIdentification),
        Some(&shorter[..])
    );
    // Longer than kept: cut to the capacity.
    let mut long = std::vec![0u8, 0x80, 0x01, 0x00];
    long.extend((0..=255u8).cycle().take(256));
    table.record(0, 0, Answer::UnitSerialNumber, &long);
    assert_eq!(
        copies(&table)[0].answer(Answer::UnitSerialNumber),
        Some(&long[..Answer::UnitSerialNumber.capacity()])
    );
}

#[test]
fn report_luns_frees_luns_a_complete_list_omits() {
    let table = table(8);
    for lun in [0, 1, 2, 300] {
        table.record(4, lun, Answer::Inquiry, &inquiry(0, 0));
    }
    table.record(5, 1, Answer::Inquiry, &inquiry(0, 0));
    // Lists LUN 0 and 300 (flat space addressing); LUN 1 and 2 are gone.
    let mut data = std::vec![0, 0, 0, 16, 0, 0, 0, 0];
    data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    data.extend_from_slice(&[0x41, 0x2C, 0, 0, 0, 0, 0, 0]);
    // Cut short: nothing is freed.
    table.report_luns(4, &data[..16]);
    assert_eq!(copies(&table).len(), 5);
    table.observe(4, 0, Snooped::ReportLuns, &data);
    let mut left: Vec<(u8, u16)> = copies(&table)
        .iter()
        .map(|copy| (copy.target, copy.lun))
        .collect();
    left.sort_unstable();
    assert_eq!(left, [(4, 0), (4, 300), (5, 1)]);
}

#[test]
fn readers_never_see_a_slot_half_written() {
    // Two writers alternate between two complete answers of different fill bytes; a
    // reader must only ever see one or the other, never a mix.
    // Miri interleaves threads at every step, so far fewer rounds still mix them.
    const ROUNDS: usize = if cfg!(miri) { 64 } else { 20_000 };
    let table = Arc::new(table(1));
    table.record(0, 0, Answer::Inquiry, &[0u8; 96]);
    let writers: Vec<_> = [0x11u8, 0x22]
        .into_iter()
        .map(|fill| {
            let table = Arc::clone(&table);
            std::thread::spawn(move || {
                let mut data = [fill; 96];
                data[0] = 0;
                data[4] = 91;
                for _ in 0..ROUNDS {
                    table.record(0, 0, Answer::Inquiry, &data);
                }
            })
        })
        .collect();
    let mut copy = LunCopy::EMPTY;
    for _ in 0..ROUNDS {
        assert!(table.copy_slot(0, &mut copy));
        let data = copy.answer(Answer::Inquiry).unwrap();
        let fill = data[5];
        assert!(
            data[5..].iter().all(|&byte| byte == fill),
            "torn read: {data:?}"
        );
    }
    for writer in writers {
        writer.join().unwrap();
    }
}
