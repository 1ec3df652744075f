//! The soak (`rvscsi_tests::soak`): random reads and writes with faults injected at random,
//! checked against a shadow copy. `RVSCSI_SOAK_IOS` sets the I/Os (default 3,000, so the
//! ordinary test run stays short; `cargo xtask soak` runs one million in release) and
//! `RVSCSI_SOAK_SEED` the seed.

use rvscsi_tests::soak::{SoakOptions, soak};

fn from_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_io_under_random_faults_matches_a_shadow_copy() {
    let ios = usize::try_from(from_env("RVSCSI_SOAK_IOS", 3000)).expect("a count");
    let options = SoakOptions {
        ios,
        seed: from_env("RVSCSI_SOAK_SEED", 0x50A4),
        processors: 4,
    };
    let figures = soak(options);
    // Information for the log (`cargo xtask soak` prints it); the checks are in `soak`.
    eprintln!("soak (seed {:#x}): {figures}", options.seed);
    assert_eq!(figures.ios, ios as u64);
}
