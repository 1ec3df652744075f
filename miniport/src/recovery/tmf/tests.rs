//! Unit tests of `tmf`.
use core::borrow::Borrow;

use proptest::prelude::*;
use virtio_core::fake::FakeHal;
use virtio_core::hal::Hal;
use virtio_core::scsi::{Response, TmfResp, complete_tmf};
use zerocopy::IntoBytes;

use super::*;

fn table(slots: usize) -> (FakeHal, TmfTable<Vec<TmfSlot>>) {
    let hal = FakeHal::new();
    let memory = hal
        .dma_alloc(TmfTable::<Vec<TmfSlot>>::memory_len(slots), 16)
        .unwrap();
    let table = TmfTable::new((0..slots).map(|_| TmfSlot::new()).collect(), memory);
    (hal, table)
}

fn request(queue: u16, target: u8, lun: u16, tag: u64, sequence: u64) -> InFlight {
    InFlight {
        queue,
        target,
        lun,
        tag,
        srb: 0x1000,
        sequence,
    }
}

fn actives<S: Borrow<[TmfSlot]>>(table: &TmfTable<S>) -> Vec<Active> {
    let mut all = Vec::new();
    table.for_each_active(|active| all.push(active));
    all
}

#[test]
fn the_request_names_the_function_lun_and_tag() {
    let (_hal, table) = table(2);
    let nexus = Nexus::Task {
        target: 3,
        lun: 9,
        tag: 0xAB_CDEF,
    };
    let (claim, readable, writable) = table.claim(nexus, &mut None, 0, 1, |_| 0).unwrap();
    assert_eq!(claim.index(), 0);
    assert_eq!((readable.len, writable.len), (24, 1));
    assert_eq!(writable.address, readable.address + 24);
    let mut bytes = [0u8; 24];
    assert!(table.memory.read_bytes(0, &mut bytes));
    let expected = TmfReq::new(TmfSubtype::AbortTask, Lun::new(3, 9).unwrap(), 0xAB_CDEF);
    assert_eq!(&bytes, expected.as_bytes());
    for (nexus, subtype, lun) in [
        (Nexus::LogicalUnit { target: 1, lun: 5 }, 5, [1, 1, 0, 5]),
        (Nexus::Target { target: 7 }, 4, [1, 7, 0, 0]),
    ] {
        assert_eq!(nexus.subtype().raw(), subtype);
        assert_eq!(nexus.tag(), 0);
        assert_eq!(nexus.lun().unwrap().encode()[..4], lun);
    }
}

#[test]
fn a_slot_goes_claimed_posted_answered_and_ends_once() {
    let (_hal, table) = table(1);
    let nexus = Nexus::LogicalUnit { target: 0, lun: 1 };
    let owner = || Owner::for_table_tests(0x7000, true);
    let (claim, ..) = table
        .claim(nexus, &mut Some(owner()), 5, 2, |queue| {
            [10, 20][usize::from(queue)]
        })
        .unwrap();
    assert!(
        table.claim(nexus, &mut None, 5, 2, |_| 0).is_none(),
        "one slot only"
    );
    assert!(
        actives(&table).is_empty(),
        "a claimed slot is not active yet"
    );
    assert!(!table.answer(0, 1), "no answer before posting");
    table.posted(claim);
    let [posted] = actives(&table)[..] else {
        panic!("one active")
    };
    assert_eq!(posted.answer, Answer::Pending);
    assert_eq!(posted.posted_at, 5);
    // The device answers FUNCTION SUCCEEDED.
    table
        .memory
        .store_u8(RESPONSE_OFFSET, Response::FunctionSucceeded.raw());
    assert!(table.answer(0, 1));
    assert!(!table.answer(0, 1), "a second answer is refused");
    let [answered] = actives(&table)[..] else {
        panic!("one active")
    };
    assert_eq!(answered.answer, Answer::Outcome(TmfOutcome::Succeeded));
    // Covered: same LUN and older than the snapshot of its queue.
    assert!(table.covers(&answered, &request(0, 0, 1, 1, 9)));
    assert!(table.covers(&answered, &request(1, 0, 1, 1, 19)));
    assert!(!table.covers(&answered, &request(0, 0, 1, 1, 10)), "newer");
    assert!(
        !table.covers(&answered, &request(0, 0, 0, 1, 0)),
        "other LUN"
    );
    table.mark_waiting(&answered);
    assert!(table.finish(&answered).is_none(), "the view went stale");
    let [waiting] = actives(&table)[..] else {
        panic!("one active")
    };
    assert!(waiting.was_waiting());
    assert_eq!(
        table.finish(&waiting),
        Some(Ended {
            owner: Some(owner())
        })
    );
    assert_eq!(table.finish(&waiting), None, "ended once");
    assert!(!table.any_active());
    // The slot is reusable, and the old view cannot touch the new incarnation.
    let (claim, ..) = table.claim(nexus, &mut None, 6, 0, |_| 0).unwrap();
    table.posted(claim);
    assert_eq!(table.finish(&waiting), None);
    assert_eq!(table.resolve_all(|_, owner| assert_eq!(owner, None)), 1);
    assert_eq!(table.counters.superseded.load(Ordering::Relaxed), 1);
}

#[test]
fn unwritten_and_undefined_answers_are_broken() {
    let (_hal, table) = table(2);
    for (index, written, byte) in [(0, 0, 0u8), (1, 1, 4)] {
        let (claim, ..) = table
            .claim(
                Nexus::Target {
                    target: index as u8,
                },
                &mut None,
                0,
                0,
                |_| 0,
            )
            .unwrap();
        table.posted(claim);
        table
            .memory
            .store_u8(index * SLOT_STRIDE + RESPONSE_OFFSET, byte);
        assert!(table.answer(index, written));
    }
    let answers: Vec<_> = actives(&table).iter().map(|a| a.answer).collect();
    assert_eq!(answers, [Answer::Broken, Answer::Broken]);
}

#[test]
fn a_released_claim_hands_its_owner_back() {
    let (_hal, table) = table(1);
    let owner = || Owner::for_table_tests(0x10, false);
    let (claim, ..) = table
        .claim(Nexus::Target { target: 1 }, &mut Some(owner()), 0, 0, |_| 0)
        .unwrap();
    assert_eq!(table.release(claim), Some(owner()));
    assert!(
        table
            .claim(Nexus::Target { target: 1 }, &mut None, 0, 0, |_| 0)
            .is_some()
    );
}

#[test]
fn the_decision_table() {
    use Answer::*;
    use Decision::*;
    let ok = Outcome(TmfOutcome::Complete);
    let late = DEADLINE;
    let cases = [
        (Pending, 0, 0, Wait),
        (Pending, 5, late - 1, Wait),
        (Pending, 0, late, Escalate(Escalation::TimedOut)),
        (ok, 0, 0, Complete(Ending::Done)),
        (
            Outcome(TmfOutcome::Succeeded),
            0,
            late * 2,
            Complete(Ending::Done),
        ),
        (ok, 3, 0, Wait),
        (ok, 3, late, Escalate(Escalation::Stranded)),
        (
            Outcome(TmfOutcome::Rejected),
            0,
            0,
            Escalate(Escalation::Failed),
        ),
        (
            Outcome(TmfOutcome::Failed(ControlFailure::Failure)),
            0,
            0,
            Escalate(Escalation::Failed),
        ),
        (
            Outcome(TmfOutcome::Failed(ControlFailure::BadTarget)),
            0,
            0,
            Complete(Ending::AbsentNexus),
        ),
        (
            Outcome(TmfOutcome::Failed(ControlFailure::IncorrectLun)),
            1,
            0,
            Escalate(Escalation::Failed),
        ),
        (Broken, 0, 0, Escalate(Escalation::Failed)),
    ];
    for (answer, covered, elapsed, expected) in cases {
        assert_eq!(
            decide(answer, covered, elapsed),
            expected,
            "{answer:?} {covered} {elapsed}"
        );
    }
}

fn any_answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        Just(Answer::Pending),
        Just(Answer::Broken),
        (0u8..=12).prop_filter_map("a TMF response", |raw| complete_tmf(&TmfResp {
            response: raw
        })
        .ok()
        .map(Answer::Outcome)),
    ]
}

proptest! {
    /// The deadline bounds every function: past it, nothing waits.
    #[test]
    fn nothing_waits_past_the_deadline(answer in any_answer(), covered in 0u32..4, over in 0u64..1_000_000_000) {
        prop_assert_ne!(decide(answer, covered, DEADLINE + over), Decision::Wait);
    }

    /// A successful function completes only when nothing it covers is outstanding, and a
    /// failed one never completes while something is.
    #[test]
    fn no_srb_is_left_to_the_device_after_completion(answer in any_answer(), covered in 1u32..4, elapsed in 0u64..40_000_000) {
        prop_assert!(!matches!(decide(answer, covered, elapsed), Decision::Complete(_)));
    }

    /// Any interleaving of claims, answers, views, finishes and resets ends each owner's
    /// SRB at most once, and a reset ends every active function.
    #[test]
    fn every_owner_ends_exactly_once(ops in proptest::collection::vec((0u8..5, 0usize..4), 1..80)) {
        let (_hal, table) = table(4);
        let mut next_owner = 8usize;
        let mut live: Vec<usize> = Vec::new();
        let mut ended: Vec<usize> = Vec::new();
        let mut views: Vec<Active> = Vec::new();
        for (op, pick) in ops {
            match op {
                0 => {
                    let owner = Owner::for_table_tests(next_owner, false);
                    if let Some((claim, ..)) = table.claim(Nexus::Target { target: 0 }, &mut Some(owner), 0, 0, |_| 0) {
                        table.posted(claim);
                        live.push(next_owner);
                        next_owner += 8;
                    }
                }
                1 => { table.memory.store_u8(pick * SLOT_STRIDE + RESPONSE_OFFSET, 0); let _ = table.answer(pick, 1); }
                2 => views = actives(&table),
                3 => if let Some(view) = views.get(pick)
                    && let Some(Ended { owner: Some(owner) }) = table.finish(view)
                {
                    ended.push(owner.address());
                },
                _ => { table.resolve_all(|_, owner| if let Some(owner) = owner { ended.push(owner.address()); }); }
            }
        }
        table.resolve_all(|_, owner| if let Some(owner) = owner { ended.push(owner.address()); });
        ended.sort_unstable();
        live.sort_unstable();
        prop_assert_eq!(ended, live);
        prop_assert!(!table.any_active());
    }
}
