//! Unit tests of `queue_locks`: which lock guards which virtqueue, and the choice of mode.
use super::*;

#[test]
fn four_messages_or_more_give_a_message_per_queue_with_three_for_the_rest() {
    assert_eq!(InterruptMode::choose(4, 8), (InterruptMode::PerQueue, 1));
    assert_eq!(InterruptMode::choose(11, 8), (InterruptMode::PerQueue, 8));
    // More messages than queues: every prepared queue, no more.
    assert_eq!(InterruptMode::choose(67, 8), (InterruptMode::PerQueue, 8));
}

#[test]
fn one_to_three_messages_are_shared_by_every_prepared_queue() {
    for messages in 1..=3 {
        assert_eq!(
            InterruptMode::choose(messages, 8),
            (InterruptMode::Shared, 8)
        );
    }
}

#[test]
fn no_message_means_the_line_interrupt() {
    assert_eq!(InterruptMode::choose(0, 1), (InterruptMode::Line, 1));
}

#[test]
fn each_mode_names_the_lock_storport_holds_in_the_queue_isr() {
    // Per-queue: message 0 is configuration, virtqueue n has message n + 1.
    assert_eq!(InterruptMode::PerQueue.lock_of(0), Lock::Message(1));
    assert_eq!(InterruptMode::PerQueue.lock_of(5), Lock::Message(6));
    assert_eq!(InterruptMode::Shared.lock_of(5), Lock::Message(0));
    assert_eq!(InterruptMode::Line.lock_of(5), Lock::Interrupt);
}

#[test]
fn the_interrupt_lock_covers_every_lock_and_a_message_lock_only_itself() {
    assert!(Lock::Interrupt.covers(Lock::Message(3)));
    assert!(Lock::Interrupt.covers(Lock::Interrupt));
    assert!(Lock::Message(3).covers(Lock::Message(3)));
    assert!(!Lock::Message(3).covers(Lock::Message(4)));
    assert!(!Lock::Message(0).covers(Lock::Interrupt));
}

#[test]
fn the_stored_mode_round_trips_and_defaults_to_per_queue() {
    for mode in [
        InterruptMode::PerQueue,
        InterruptMode::Shared,
        InterruptMode::Line,
    ] {
        assert_eq!(InterruptMode::from_raw(mode as u8), mode);
    }
    assert_eq!(InterruptMode::from_raw(0), InterruptMode::PerQueue);
}

#[test]
fn each_mode_s_lock_plan_names_the_lock_of_the_mode_for_every_virtqueue() {
    for mode in [
        InterruptMode::PerQueue,
        InterruptMode::Shared,
        InterruptMode::Line,
    ] {
        let plan = mode.plan();
        // Every index the mode's own 16-bit vector arithmetic takes (`u16::MAX` has no
        // vector of its own).
        for index in 0..u16::MAX {
            assert_eq!(plan.lock_of(index), mode.lock_of(index), "{mode:?} {index}");
        }
    }
}

#[test]
fn a_hold_of_a_message_lock_is_below_both_markers() {
    // `release` tells a message lock from the markers with one compare: the highest message a
    // plan can name must stay below them.
    let highest = InterruptMode::PerQueue.plan().message_of(u16::MAX);
    assert_eq!(highest, Some(u32::from(u16::MAX) + 1));
    assert!(highest.is_some_and(|message| message < Held::BY_CALLER));
    const { assert!(Held::BY_CALLER < Held::INTERRUPT) };
}
