//! Registry parameters read once at find-adapter, validated and clamped before anything uses them.
//!
//! StorPort reads `HKLM\SYSTEM\CurrentControlSet\Services\rvscsi\Parameters\Device` (global) for
//! us through StorPortRegistryRead, at PASSIVE_LEVEL only, so find-adapter is the one place they
//! are read; the crash-dump stack offers no registry and every value keeps its default there.
//!
//! | value | default | accepted | effect |
//! |---|---|---|---|
//! | `PhysicalBreaks` (vioscsi's name) | none (the device's limits) | clamped to 16..=512 | caps `NumberOfPhysicalBreaks`; the device's `seg_max`/`max_sectors` and the ring size still cap it |
//! | `VioscsiActionOnReset` (vioscsi's name) | 0 | 0 only | 0 is what rvscsi always does (complete every outstanding SRB once); vioscsi's 1 ("do nothing") would leave SRBs outstanding forever and 0xDEADDEAD needs KeBugCheckEx, which a StorPort miniport does not import, so both are refused, traced and counted |
//! | `RvscsiMaxQueues` | none (the device's `num_queues`) | clamped to 1..=the build's maximum | fewer request queues (and MSI-X messages) than the device offers |
//! | `RvscsiDebugPrintLevel` | 0 (errors) | clamped to 0..=3 | the most verbose DPFLTR level passed to StorPortDebugPrint (0 error, 1 warning, 2 trace, 3 info) |
//!
//! vioscsi's third value, `TraceResponseTime` (log SRBs slower than N ms), is not read: rvscsi
//! does not time SRBs, and reading a value it ignores would pretend otherwise.
#![forbid(unsafe_code)]

use core::ffi::CStr;

/// Where registry DWORDs come from: StorPort in the driver, a map in tests.
pub trait RegistrySource {
    /// The REG_DWORD `name` under `Parameters\Device`, `None` if absent, of another type or
    /// unreadable.
    fn read_dword(&mut self, name: &'static CStr) -> Option<u32>;
}

/// `PhysicalBreaks`, as vioscsi names it.
pub const PHYSICAL_BREAKS: &CStr = c"PhysicalBreaks";
/// `VioscsiActionOnReset`, as vioscsi names it.
pub const ACTION_ON_RESET: &CStr = c"VioscsiActionOnReset";
/// `RvscsiMaxQueues`.
pub const MAX_QUEUES: &CStr = c"RvscsiMaxQueues";
/// `RvscsiDebugPrintLevel`.
pub const DEBUG_PRINT_LEVEL: &CStr = c"RvscsiDebugPrintLevel";

/// The bounds vioscsi applies to `PhysicalBreaks`, kept so existing settings mean the same.
pub const PHYSICAL_BREAKS_RANGE: (u32, u32) = (16, 512);
/// DPFLTR_INFO_LEVEL, the most verbose level we print at.
pub const MAX_DEBUG_PRINT_LEVEL: u32 = 3;

/// What one registry value did to the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueOutcome {
    /// Absent: the default applies.
    Absent,
    /// Present and used as written.
    Used(u32),
    /// Present, out of range, used clamped to the second value.
    Clamped(u32, u32),
    /// Present and refused: the default applies.
    Refused(u32),
}

/// The validated parameters; the default is what an empty registry gives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parameters {
    /// Cap on `NumberOfPhysicalBreaks`, if the administrator set one.
    pub physical_breaks: Option<u32>,
    /// Cap on request queues, if set.
    pub max_request_queues: Option<u16>,
    /// The most verbose StorPortDebugPrint level to emit.
    pub debug_print_level: u32,
}

/// Each value's outcome, in the order of [`Report::NAMES`], for the trace ring and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// One outcome per value name.
    pub outcomes: [ValueOutcome; 4],
}

impl Report {
    /// The value names, in outcome order.
    pub const NAMES: [&'static CStr; 4] = [
        PHYSICAL_BREAKS,
        ACTION_ON_RESET,
        MAX_QUEUES,
        DEBUG_PRINT_LEVEL,
    ];

    /// Values present but not used as written (clamped or refused).
    #[must_use]
    pub fn adjusted(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|outcome| {
                matches!(
                    outcome,
                    ValueOutcome::Clamped(..) | ValueOutcome::Refused(_)
                )
            })
            .count()
    }
}

/// Clamps `value` into `low..=high`, saying whether it had to.
fn clamp(value: u32, (low, high): (u32, u32)) -> (u32, ValueOutcome) {
    let clamped = value.clamp(low, high);
    let outcome = if clamped == value {
        ValueOutcome::Used(value)
    } else {
        ValueOutcome::Clamped(value, clamped)
    };
    (clamped, outcome)
}

/// Reads and validates every parameter; `max_request_queues` is the build's queue maximum.
pub fn read(source: &mut impl RegistrySource, max_request_queues: u16) -> (Parameters, Report) {
    let mut parameters = Parameters::default();
    let mut outcomes = [ValueOutcome::Absent; 4];

    if let Some(value) = source.read_dword(PHYSICAL_BREAKS) {
        let (breaks, outcome) = clamp(value, PHYSICAL_BREAKS_RANGE);
        parameters.physical_breaks = Some(breaks);
        outcomes[0] = outcome;
    }
    if let Some(value) = source.read_dword(ACTION_ON_RESET) {
        outcomes[1] = if value == 0 {
            ValueOutcome::Used(0)
        } else {
            ValueOutcome::Refused(value)
        };
    }
    if let Some(value) = source.read_dword(MAX_QUEUES) {
        let (queues, outcome) = clamp(value, (1, u32::from(max_request_queues.max(1))));
        // The clamp keeps the value within a u16 maximum.
        parameters.max_request_queues = u16::try_from(queues).ok();
        outcomes[2] = outcome;
    }
    if let Some(value) = source.read_dword(DEBUG_PRINT_LEVEL) {
        let (level, outcome) = clamp(value, (0, MAX_DEBUG_PRINT_LEVEL));
        parameters.debug_print_level = level;
        outcomes[3] = outcome;
    }
    (parameters, Report { outcomes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A registry of (name, value) pairs; counts reads so a test can see every name is asked.
    struct MapRegistry {
        values: Vec<(&'static CStr, u32)>,
        reads: Vec<&'static CStr>,
    }

    impl RegistrySource for MapRegistry {
        fn read_dword(&mut self, name: &'static CStr) -> Option<u32> {
            self.reads.push(name);
            self.values
                .iter()
                .find(|(key, _)| *key == name)
                .map(|&(_, value)| value)
        }
    }

    fn registry(values: &[(&'static CStr, u32)]) -> MapRegistry {
        MapRegistry {
            values: values.to_vec(),
            reads: Vec::new(),
        }
    }

    #[test]
    fn an_empty_registry_gives_the_defaults_and_asks_for_every_name() {
        let mut source = registry(&[]);
        let (parameters, report) = read(&mut source, 16);
        assert_eq!(parameters, Parameters::default());
        assert_eq!(report.outcomes, [ValueOutcome::Absent; 4]);
        assert_eq!(source.reads, Report::NAMES.to_vec());
    }

    #[test]
    fn values_in_range_are_used_as_written() {
        let mut source = registry(&[
            (PHYSICAL_BREAKS, 64),
            (ACTION_ON_RESET, 0),
            (MAX_QUEUES, 2),
            (DEBUG_PRINT_LEVEL, 2),
        ]);
        let (parameters, report) = read(&mut source, 16);
        assert_eq!(parameters.physical_breaks, Some(64));
        assert_eq!(parameters.max_request_queues, Some(2));
        assert_eq!(parameters.debug_print_level, 2);
        assert_eq!(report.adjusted(), 0);
    }

    #[test]
    fn out_of_range_values_are_clamped_as_vioscsi_clamps_them() {
        let mut source = registry(&[
            (PHYSICAL_BREAKS, 0xFFFF_FFFF),
            (MAX_QUEUES, 0),
            (DEBUG_PRINT_LEVEL, 9),
        ]);
        let (parameters, report) = read(&mut source, 16);
        assert_eq!(parameters.physical_breaks, Some(512));
        assert_eq!(parameters.max_request_queues, Some(1));
        assert_eq!(parameters.debug_print_level, 3);
        assert_eq!(report.outcomes[0], ValueOutcome::Clamped(0xFFFF_FFFF, 512));
        assert_eq!(report.outcomes[2], ValueOutcome::Clamped(0, 1));
        assert_eq!(report.adjusted(), 3);

        let (parameters, _) = read(&mut registry(&[(PHYSICAL_BREAKS, 1)]), 16);
        assert_eq!(parameters.physical_breaks, Some(16));
    }

    #[test]
    fn vioscsi_reset_actions_other_than_complete_are_refused() {
        for value in [1, 0xDEAD_DEAD, 7] {
            let (parameters, report) = read(&mut registry(&[(ACTION_ON_RESET, value)]), 16);
            assert_eq!(parameters, Parameters::default());
            assert_eq!(report.outcomes[1], ValueOutcome::Refused(value));
        }
    }

    proptest! {
        #[test]
        fn any_values_stay_within_bounds(
            breaks in any::<Option<u32>>(),
            queues in any::<Option<u32>>(),
            level in any::<Option<u32>>(),
            maximum in 1u16..=64,
        ) {
            let mut values = Vec::new();
            values.extend(breaks.map(|v| (PHYSICAL_BREAKS, v)));
            values.extend(queues.map(|v| (MAX_QUEUES, v)));
            values.extend(level.map(|v| (DEBUG_PRINT_LEVEL, v)));
            let (parameters, _) = read(&mut registry(&values), maximum);
            if let Some(breaks) = parameters.physical_breaks {
                prop_assert!((16..=512).contains(&breaks));
            }
            if let Some(queues) = parameters.max_request_queues {
                prop_assert!((1..=maximum).contains(&queues));
            }
            prop_assert!(parameters.debug_print_level <= MAX_DEBUG_PRINT_LEVEL);
            prop_assert_eq!(parameters.physical_breaks.is_some(), breaks.is_some());
        }
    }
}
