//! Fuzzes the whole miniport against a hostile device: the input is the script of a session
//! (`rvscsi_tests::hostile`): it boots the real miniport under the StorPort simulator, submits
//! reads, writes, task management, WMI and IOCTL SRBs, and decides every value the device
//! writes back (used ids and lengths, packed descriptor flags, responses, sense lengths,
//! residuals, TMF answers, events, configuration changes, DEVICE_NEEDS_RESET, interrupts lost
//! or spurious). The session panics, and so crashes the target, when an invariant breaks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|script: &[u8]| {
    let _ = rvscsi_tests::hostile::run(script);
});
