//! Unit tests of `events`.
use std::boxed::Box;
use std::vec::Vec;

use proptest::prelude::*;
use virtio_core::scsi::LunError;
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32};

use super::*;

fn event(event: u32, lun: [u8; 8], reason: u32) -> [u8; EVENT_LEN] {
    let mut bytes = [0u8; EVENT_LEN];
    bytes.copy_from_slice(
        Event {
            event: U32::new(event),
            lun,
            reason: U32::new(reason),
        }
        .as_bytes(),
    );
    bytes
}

const LUN_2_7: [u8; 8] = [1, 2, 0, 7, 0, 0, 0, 0];

#[test]
fn each_event_type_becomes_its_change() {
    let cases: [(u32, [u8; 8], u32, Change); 8] = [
        (0, [0; 8], 0, Change::None),
        (1, LUN_2_7, 0, Change::HardReset { target: 2, lun: 7 }),
        (1, LUN_2_7, 1, Change::Appeared { target: 2, lun: 7 }),
        (1, LUN_2_7, 2, Change::Removed { target: 2, lun: 7 }),
        (
            3,
            LUN_2_7,
            0x092A,
            Change::ParametersChanged {
                target: 2,
                lun: 7,
                asc: 0x2A,
                ascq: 0x09,
            },
        ),
        (2, LUN_2_7, 0x10, Change::UnsolicitedNotification),
        // LUN 300 (flat space) and target 255 are beyond what StorPort addresses.
        (
            1,
            [1, 2, 0x41, 0x2C, 0, 0, 0, 0],
            1,
            Change::Unaddressable {
                target: 2,
                lun: 300,
            },
        ),
        (
            3,
            [1, 255, 0, 0, 0, 0, 0, 0],
            0x092A,
            Change::Unaddressable {
                target: 255,
                lun: 0,
            },
        ),
    ];
    for (raw, lun, reason, change) in cases {
        let reaction = Reaction::of(&event(raw, lun, reason), 16);
        assert_eq!(reaction.change, change, "event {raw} reason {reason}");
        assert!(!reaction.events_missed);
    }
}

#[test]
fn rescans_follow_the_table() {
    let rescans = |raw, lun, reason| Reaction::of(&event(raw, lun, reason), 16).rescans_bus();
    assert!(rescans(1, LUN_2_7, 1), "RESCAN");
    assert!(rescans(1, LUN_2_7, 2), "REMOVED");
    assert!(!rescans(1, LUN_2_7, 0), "HARD");
    assert!(
        !rescans(3, LUN_2_7, 0x092A),
        "PARAM_CHANGE: a unit notification"
    );
    assert!(!rescans(0, [0; 8], 0), "NO_EVENT");
    assert!(
        rescans(0x8000_0000, [0; 8], 0),
        "NO_EVENT with EVENTS_MISSED"
    );
    assert!(rescans(9, LUN_2_7, 0), "unknown type");
    assert!(!rescans(2, LUN_2_7, 0x10), "unsolicited AN");
}

#[test]
fn garbage_is_classified_never_trusted() {
    // Malformed LUN field, unknown type, undefined reason: each is a Malformed change that
    // keeps the missed bit.
    let bad_lun = [2, 2, 0, 7, 0, 0, 0, 0];
    assert_eq!(
        Reaction::of(&event(1, bad_lun, 1), 16).change,
        Change::Malformed(EventError::MalformedLun(LunError::Malformed {
            bytes: bad_lun
        }))
    );
    let unknown = Reaction::of(&event(0x8000_0007, LUN_2_7, 0), 16);
    assert_eq!(
        unknown.change,
        Change::Malformed(EventError::UnknownType { event: 0x8000_0007 })
    );
    assert!(unknown.events_missed);
    assert_eq!(
        Reaction::of(&event(1, LUN_2_7, 3), 16).change,
        Change::Malformed(EventError::UnknownResetReason { reason: 3 })
    );
    // A short used length is never decoded, whatever the buffer holds.
    for written in [0, 1, 4, 15] {
        let reaction = Reaction::of(&event(0x8000_0001, LUN_2_7, 2), written);
        assert_eq!(reaction.change, Change::Short { written });
        assert!(!reaction.events_missed);
        assert!(!reaction.rescans_bus());
    }
}

fn gone(words: usize) -> GoneUnits<Box<[AtomicU64]>> {
    GoneUnits::new((0..words).map(|_| AtomicU64::new(0)).collect())
}

#[test]
fn the_removed_set_marks_and_clears_single_units_targets_and_all() {
    let set = gone(GONE_WORDS);
    for (target, lun) in [(0, 0), (0, 63), (0, 64), (3, 255), (254, 1), (255, 255)] {
        assert!(!set.contains(target, lun));
        set.mark(target, lun);
        assert!(set.contains(target, lun), "{target}:{lun}");
    }
    assert_eq!(set.count(), 6);
    assert!(!set.contains(0, 1) && !set.contains(1, 0) && !set.contains(3, 254));
    set.clear(0, 63);
    assert!(!set.contains(0, 63) && set.contains(0, 64) && set.contains(0, 0));
    set.clear_target(0);
    assert!(!set.contains(0, 0) && !set.contains(0, 64));
    assert!(set.contains(3, 255), "other targets keep their marks");
    set.clear_all();
    assert_eq!(set.count(), 0);
    // A short table covers fewer targets and ignores the rest, never panicking.
    let small = gone(4);
    small.mark(1, 0);
    small.clear_target(9);
    assert!(!small.contains(1, 0));
    small.mark(0, 200);
    assert!(small.contains(0, 200));
}

fn config() -> Config {
    Config {
        num_queues: U32::new(4),
        seg_max: U32::new(254),
        max_sectors: U32::new(0xFFFF),
        cmd_per_lun: U32::new(128),
        event_info_size: U32::new(16),
        sense_size: U32::new(96),
        cdb_size: U32::new(32),
        max_channel: U16::new(0),
        max_target: U16::new(255),
        max_lun: U32::new(16383),
    }
}

#[test]
fn configuration_changes_are_sorted_into_reset_rescan_and_ignored() {
    let seen = config();
    assert_eq!(
        ConfigChanges::between(&seen, &seen),
        ConfigChanges::default()
    );
    let mut now = config();
    now.sense_size = U32::new(64);
    assert!(ConfigChanges::between(&seen, &now).layout);
    let mut now = config();
    now.cdb_size = U32::new(16);
    assert!(ConfigChanges::between(&seen, &now).layout);
    let mut now = config();
    now.max_target = U16::new(7);
    assert_eq!(
        ConfigChanges::between(&seen, &now),
        ConfigChanges {
            bus: true,
            ..ConfigChanges::default()
        }
    );
    for change in [
        |c: &mut Config| c.num_queues = U32::new(8),
        |c: &mut Config| c.seg_max = U32::new(8),
        |c: &mut Config| c.max_sectors = U32::new(8),
        |c: &mut Config| c.cmd_per_lun = U32::new(8),
        |c: &mut Config| c.event_info_size = U32::new(32),
    ] {
        let mut now = config();
        change(&mut now);
        assert_eq!(
            ConfigChanges::between(&seen, &now),
            ConfigChanges {
                limits: true,
                ..ConfigChanges::default()
            }
        );
    }
    // The layout rule compares with what requests need, not with what was seen: a device
    // that keeps a wrong size keeps asking for a reset.
    let mut wrong = config();
    wrong.sense_size = U32::new(64);
    assert!(ConfigChanges::between(&wrong, &wrong).layout);
}

proptest! {
    #[test]
    fn any_bytes_and_length_yield_a_reaction_consistent_with_the_decoder(
        bytes in proptest::array::uniform16(any::<u8>()),
        written in 0u32..64,
    ) {
        let reaction = Reaction::of(&bytes, written);
        if written < 16 {
            prop_assert_eq!(reaction.change, Change::Short { written });
            prop_assert!(!reaction.events_missed);
        } else {
            let event = Event::read_from_bytes(&bytes[..]).unwrap();
            prop_assert_eq!(reaction.events_missed, event.events_missed());
            match event.decode() {
                Err(error) => prop_assert_eq!(reaction.change, Change::Malformed(error)),
                Ok(_) => prop_assert!(!matches!(reaction.change, Change::Malformed(_))),
            }
            if let Change::Appeared { target, lun } | Change::Removed { target, lun }
                | Change::HardReset { target, lun } = reaction.change
            {
                prop_assert_eq!(bytes[1], target);
                prop_assert!(target <= MAX_ADDRESSABLE_TARGET);
                prop_assert_eq!(u16::from(lun), (u16::from(bytes[2] & 0x3F) << 8) | u16::from(bytes[3]));
            }
        }
    }

    #[test]
    fn the_removed_set_agrees_with_a_model(
        operations in proptest::collection::vec((0u8..4, any::<u8>(), any::<u8>()), 0..200)
    ) {
        let set = gone(GONE_WORDS);
        let mut model = std::collections::BTreeSet::new();
        for (operation, target, lun) in operations {
            match operation {
                0 => { set.mark(target, lun); model.insert((target, lun)); }
                1 => { set.clear(target, lun); model.remove(&(target, lun)); }
                2 => { set.clear_target(target); model.retain(|&(t, _)| t != target); }
                _ => prop_assert_eq!(set.contains(target, lun), model.contains(&(target, lun))),
            }
        }
        prop_assert_eq!(set.count() as usize, model.len());
        let all: Vec<_> = model.iter().copied().collect();
        for (target, lun) in all {
            prop_assert!(set.contains(target, lun));
        }
    }
}
