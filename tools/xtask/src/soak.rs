//! `cargo xtask soak [--ios N] [--seed S]`: the soak (`rvscsi_tests::soak`), optimised: N random
//! reads and writes (default one million) from four processors over every request queue, with
//! device errors, BUSY and TASK SET FULL, dropped commands (StorPort's timeout and the bus
//! reset after it), DEVICE_NEEDS_RESET mid-I/O, lost interrupts and hot-unplug/re-plug
//! injected at random, every byte checked against a shadow copy. Not part of `ci`, which runs
//! [`CI_IOS`] of them (`ci::soak_short`).

use crate::util::{cargo, run};

/// I/Os of the full soak.
const DEFAULT_IOS: u64 = 1_000_000;

/// I/Os of the shortened soak `cargo xtask ci` runs: well under a minute in release.
pub const CI_IOS: u64 = 100_000;

/// The soak's I/O count and seed variables (`tests/tests/soak.rs`; xtask does not link the
/// test crate).
const IOS_VARIABLE: &str = "RVSCSI_SOAK_IOS";
const SEED_VARIABLE: &str = "RVSCSI_SOAK_SEED";

/// Runs the job.
pub fn soak(args: &[String]) -> Result<(), String> {
    let (ios, seed) = parse(args)?;
    let mut command = cargo();
    command
        .args([
            "test",
            "--release",
            "--package",
            "rvscsi-tests",
            "--test",
            "soak",
            "--",
            "--nocapture",
        ])
        .env(IOS_VARIABLE, ios.to_string());
    if let Some(seed) = seed {
        command.env(SEED_VARIABLE, seed.to_string());
    }
    run(&mut command)
}

/// `--ios N` and `--seed S`, each optional.
fn parse(args: &[String]) -> Result<(u64, Option<u64>), String> {
    let mut ios = DEFAULT_IOS;
    let mut seed = None;
    let mut rest = args;
    while let [flag, value, tail @ ..] = rest {
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{flag} wants a number, not {value:?}"))?;
        match flag.as_str() {
            "--ios" if number > 0 => ios = number,
            "--seed" => seed = Some(number),
            _ => {
                return Err(format!(
                    "usage: cargo xtask soak [--ios N] [--seed S], not {args:?}"
                ));
            }
        }
        rest = tail;
    }
    if rest.is_empty() {
        Ok((ios, seed))
    } else {
        Err(format!(
            "usage: cargo xtask soak [--ios N] [--seed S], not {args:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|&arg| arg.to_owned()).collect()
    }

    #[test]
    fn the_command_line_sets_the_count_and_the_seed() {
        assert_eq!(parse(&args(&[])), Ok((DEFAULT_IOS, None)));
        assert_eq!(
            parse(&args(&["--ios", "500", "--seed", "7"])),
            Ok((500, Some(7)))
        );
        assert!(parse(&args(&["--ios", "0"])).is_err());
        assert!(parse(&args(&["--ios"])).is_err());
        assert!(parse(&args(&["--seed", "x"])).is_err());
    }
}
