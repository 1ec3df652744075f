//! The hostile device at the miniport level, on fixed scripts: the sessions the fuzz target
//! `hostile_device` (tools/fuzz) runs on the fuzzer's bytes, run here on seeded sequences and on
//! the inputs that once broke an invariant, so CI runs them on stable everywhere.

use rvscsi_tests::hostile::{run, seeded_script};

/// Seeded sessions: each boots the miniport, lets the script lie for up to 64 operations, then
/// checks the invariants (see `rvscsi_tests::hostile`).
#[test]
fn seeded_sessions_keep_every_invariant() {
    let mut answered = 0;
    for seed in 0..24 {
        let figures = run(&seeded_script(seed, 400));
        answered += figures.answered;
        eprintln!("seed {seed}: {figures:?}");
    }
    // The scripts must reach the device's lies, not only submit.
    assert!(answered > 0);
}
