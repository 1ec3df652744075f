//! HwStorUnitControl: the unit control types this miniport handles, and what it does for each:
//! a unit StorPort surprise-removes (or removes) has its requests taken back from the device and
//! every new request failed; a unit StorPort starts is accepted again.
//!
//! # The calls
//! StorPort calls HwStorUnitControl with `ScsiQuerySupportedUnitControlTypes` after the host
//! is initialized and before the first I/O, and from then on only with the types the miniport
//! reported (Microsoft, HW_UNIT_CONTROL). Every type handled here is called at PASSIVE_LEVEL
//! with no StorPort spin lock held (the same page's table), with a `STOR_ADDR_BTL8` of the unit
//! as Parameters for `ScsiUnitStart`, `ScsiUnitRemove` and `ScsiUnitSurpriseRemoval`.
//!
//! | control type | what the miniport does | returns |
//! |---|---|---|
//! | `ScsiQuerySupportedUnitControlTypes` | sets TRUE at each type below, never at or past `MaxControlType` | Success |
//! | `ScsiUnitStart` | clears the unit's removed mark (PnP started the unit, so it is there) | Success |
//! | `ScsiUnitRemove`, `ScsiUnitSurpriseRemoval` | marks the unit removed, drops it from the LUN table, and takes back what it has in flight (below) | Success |
//! | anything else, or an address that is not BTL8 on path 0 | nothing | Unsuccessful |
//!
//! # Taking the requests back
//! Once the mark is set, BuildIo fails every new command to the unit with
//! `SRB_STATUS_NO_DEVICE`, and so does StartIo for a command BuildIo accepted before (StartIo
//! reads the mark under the queue lock; see below). What is already on a ring is the device's:
//! the miniport cannot complete those SRBs while the device may still execute them (a write
//! would land after Windows was told it failed). So it sends a LOGICAL UNIT RESET for the unit
//! through [`crate::recovery::tmf`], which ends as every such function does: the device returns the
//! unit's commands (completed with `SRB_STATUS_NO_DEVICE`, the unit being marked, see
//! `crate::events`), or the function fails or goes unanswered for [`crate::recovery::tmf::DEADLINE`] and
//! the full device reset takes everything back (with `SRB_STATUS_BUS_RESET`). Either way each
//! SRB is completed exactly once, and HwStorUnitControl returns at once: it is synchronous for
//! StorPort, but the function ends on the adapter's timer.
//!
//! No function is sent when none of the unit's commands is on a ring (an idle unit gets no
//! needless reset), nor in dump mode (the crash-dump stack has no PnP and no timer to bound a
//! function with). The scan for the unit's commands runs after the mark is set, each queue under
//! its lock, and StartIo numbers a request and checks the mark under the same lock: a command is
//! either on its ring when the scan (and the function's snapshot, taken after it) looks, and
//! covered, or reaches StartIo after and is refused there. INQUIRY and REPORT LUNS still reach
//! the device for a marked unit (a rescan must learn the truth); they complete on their own.
//!
//! # Context
//! The function is posted right here: posting takes each request queue's lock and the
//! controlq's lock, none of which StorPort holds during this call, and asks for the timer (which
//! StorPort allows at PASSIVE_LEVEL). If no slot is free or the controlq is full, the full
//! device reset runs here instead, taking every lock itself, as HwResetBus's fallback does.
//!
//! # Trace
//! Each handled call but the query is a [`TraceEvent::UnitControl`] record: the control type,
//! target << 16 | LUN, and the unit's commands on a ring when it was called (0 for a start).
#![forbid(unsafe_code)]

use core::sync::atomic::Ordering;

use crate::recovery::host::RecoveryHost;
use crate::recovery::tmf::Nexus;
use crate::recovery::tmf::{PostError, post_tmf};
use crate::storport::{
    STOR_ADDR_BTL8_ADDRESS_LENGTH, STOR_ADDRESS_TYPE_BTL8, ScsiQuerySupportedUnitControlTypes,
    ScsiUnitControlStatus, ScsiUnitControlSuccess, ScsiUnitControlType,
    ScsiUnitControlUnsuccessful, ScsiUnitRemove, ScsiUnitStart, ScsiUnitSurpriseRemoval,
    StorAddrBtl8,
};
use crate::trace::{ADAPTER_WIDE, ResetCause, TraceEvent};

/// The unit control types this miniport handles, each reported supported by the query.
pub const SUPPORTED: [ScsiUnitControlType; 4] = [
    ScsiQuerySupportedUnitControlTypes,
    ScsiUnitStart,
    ScsiUnitRemove,
    ScsiUnitSurpriseRemoval,
];

/// Entries of a `SupportedTypeList` the query may write: one past the highest supported type.
/// The trampoline hands over at most this many (fewer when `MaxControlType` is smaller).
pub const LIST_ENTRIES: usize = ScsiUnitSurpriseRemoval as usize + 1;

/// Whether `control_type` is one this miniport handles.
#[must_use]
pub fn is_supported(control_type: ScsiUnitControlType) -> bool {
    SUPPORTED.contains(&control_type)
}

/// Fills a `SupportedTypeList` (the caller's entries, as many as `MaxControlType` allows up to
/// [`LIST_ENTRIES`]): TRUE (1) at each supported type inside it, nothing written elsewhere.
pub fn report_supported(list: &mut [u8]) {
    for control_type in SUPPORTED {
        if let Some(entry) = list.get_mut(control_type as usize) {
            *entry = 1;
        }
    }
}

/// A unit StorPort names in a unit control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    /// TargetId.
    pub target: u8,
    /// Lun.
    pub lun: u8,
}

/// Why an address in Parameters was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// Not a `STOR_ADDRESS_TYPE_BTL8` address.
    Type(u16),
    /// An address length other than `STOR_ADDR_BTL8_ADDRESS_LENGTH`.
    Length(u32),
    /// A path other than 0 (the adapter has one bus).
    Path(u8),
}

impl core::fmt::Display for AddressError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Type(kind) => write!(f, "address type {kind} is not BTL8"),
            Self::Length(length) => write!(f, "address length {length} is not BTL8's"),
            Self::Path(path) => write!(f, "path {path} is not 0"),
        }
    }
}

impl Unit {
    /// The unit a `STOR_ADDR_BTL8` names.
    ///
    /// # Errors
    /// [`AddressError`]: not a BTL8 address of path 0.
    pub const fn from_address(address: &StorAddrBtl8) -> Result<Self, AddressError> {
        if address.r#type != STOR_ADDRESS_TYPE_BTL8 {
            return Err(AddressError::Type(address.r#type));
        }
        if address.address_length != STOR_ADDR_BTL8_ADDRESS_LENGTH {
            return Err(AddressError::Length(address.address_length));
        }
        if address.path != 0 {
            return Err(AddressError::Path(address.path));
        }
        Ok(Self {
            target: address.target,
            lun: address.lun,
        })
    }

    /// Target << 16 | LUN, as the trace records it.
    #[must_use]
    pub fn address_word(self) -> u64 {
        u64::from(self.target) << 16 | u64::from(self.lun)
    }
}

/// What a removal did about the unit's commands in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// None was on a ring: nothing to take back.
    Idle,
    /// A LOGICAL UNIT RESET went to the device for `in_flight` commands.
    LunReset {
        /// The unit's commands on a ring when it was sent.
        in_flight: u32,
    },
    /// The function could not be sent (no free slot, controlq full): the device was reset.
    DeviceReset {
        /// The unit's commands on a ring before the reset.
        in_flight: u32,
    },
    /// The adapter is stopped: nothing is in flight.
    Stopped,
    /// The crash-dump stack: marked only (no task management there).
    DumpMode,
}

/// A unit control with its parameters already checked by the trampoline: `unit` is the address
/// Parameters held (`None` if it was null or refused). Returns the `SCSI_UNIT_CONTROL_STATUS`.
/// The query is answered by the trampoline with [`report_supported`], which needs the caller's
/// list; here it is only accepted.
pub fn control<H: RecoveryHost>(
    host: &H,
    control_type: ScsiUnitControlType,
    unit: Option<Unit>,
) -> ScsiUnitControlStatus {
    if control_type == ScsiQuerySupportedUnitControlTypes {
        return ScsiUnitControlSuccess;
    }
    let Some(unit) = unit else {
        return ScsiUnitControlUnsuccessful;
    };
    if control_type == ScsiUnitStart {
        start(host, unit);
        ScsiUnitControlSuccess
    } else if control_type == ScsiUnitRemove || control_type == ScsiUnitSurpriseRemoval {
        let _ = remove(host, control_type, unit);
        ScsiUnitControlSuccess
    } else {
        ScsiUnitControlUnsuccessful
    }
}

/// `ScsiUnitStart`: the unit is there (PnP started it): its removed mark is cleared.
pub fn start<H: RecoveryHost>(host: &H, unit: Unit) {
    host.gone().clear(unit.target, unit.lun);
    host.tracer().trace(
        TraceEvent::UnitControl,
        ADAPTER_WIDE,
        (ScsiUnitStart, unit.address_word(), 0),
    );
}

/// `ScsiUnitRemove` or `ScsiUnitSurpriseRemoval` (`control_type`, for the trace): marks the
/// unit removed and takes its commands back from the device (see the module documentation).
pub fn remove<H: RecoveryHost>(host: &H, control_type: ScsiUnitControlType, unit: Unit) -> Removal {
    // First the mark: from here on StartIo refuses the unit's commands, so the scan below sees
    // every one that will ever be on a ring.
    host.gone().mark(unit.target, unit.lun);
    let _ = host.luns().remove(unit.target, u16::from(unit.lun));
    let mut in_flight = 0u32;
    if !host.in_dump_mode() && !host.is_stopped() {
        host.for_each_in_flight(|request| {
            if request.target == unit.target && request.lun == u16::from(unit.lun) {
                in_flight += 1;
            }
        });
    }
    host.tracer().trace(
        TraceEvent::UnitControl,
        ADAPTER_WIDE,
        (control_type, unit.address_word(), u64::from(in_flight)),
    );
    if host.in_dump_mode() {
        return Removal::DumpMode;
    }
    if host.is_stopped() {
        return Removal::Stopped;
    }
    if in_flight == 0 {
        return Removal::Idle;
    }
    let nexus = Nexus::LogicalUnit {
        target: unit.target,
        lun: u16::from(unit.lun),
    };
    match post_tmf(host, nexus, None) {
        Ok(()) => Removal::LunReset { in_flight },
        // Stopped meanwhile: the stop took everything back.
        Err(PostError::Stopped(_)) => Removal::Stopped,
        Err(PostError::NotSent(_)) => {
            host.tmfs()
                .counters
                .not_sent
                .fetch_add(1, Ordering::Relaxed);
            let _ = host.reset_device(ResetCause::UnitRemoval);
            Removal::DeviceReset { in_flight }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::storport::{ScsiUnitPower, ScsiUnitUsage};

    fn btl8(path: u8, target: u8, lun: u8) -> StorAddrBtl8 {
        StorAddrBtl8 {
            r#type: STOR_ADDRESS_TYPE_BTL8,
            port: 0,
            address_length: STOR_ADDR_BTL8_ADDRESS_LENGTH,
            path,
            target,
            lun,
            reserved: 0,
        }
    }

    #[test]
    fn the_query_reports_exactly_the_handled_types() {
        let mut list = [0u8; LIST_ENTRIES];
        report_supported(&mut list);
        let reported: Vec<u32> = (0..LIST_ENTRIES as u32)
            .filter(|&t| list[t as usize] == 1)
            .collect();
        assert_eq!(reported, vec![0, 2, 9, 10]);
        for control_type in 0..32 {
            assert_eq!(
                is_supported(control_type),
                reported.contains(&control_type),
                "{control_type}"
            );
        }
        assert!(!is_supported(ScsiUnitUsage) && !is_supported(ScsiUnitPower));
    }

    #[test]
    fn a_short_list_gets_only_the_entries_inside_it() {
        for max in 0..=LIST_ENTRIES {
            let mut list = [0u8; LIST_ENTRIES];
            report_supported(&mut list[..max]);
            for (index, &entry) in list.iter().enumerate() {
                let expected = index < max && SUPPORTED.contains(&(index as u32));
                assert_eq!(entry == 1, expected, "max {max}, entry {index}");
            }
        }
    }

    #[test]
    fn only_btl8_addresses_of_path_0_name_a_unit() {
        assert_eq!(
            Unit::from_address(&btl8(0, 3, 7)),
            Ok(Unit { target: 3, lun: 7 })
        );
        assert_eq!(
            Unit::from_address(&btl8(1, 3, 7)),
            Err(AddressError::Path(1))
        );
        let mut wrong_type = btl8(0, 3, 7);
        wrong_type.r#type = 2;
        assert_eq!(Unit::from_address(&wrong_type), Err(AddressError::Type(2)));
        let mut wrong_length = btl8(0, 3, 7);
        wrong_length.address_length = 8;
        assert_eq!(
            Unit::from_address(&wrong_length),
            Err(AddressError::Length(8))
        );
        assert_eq!(Unit { target: 2, lun: 5 }.address_word(), 0x2_0005);
    }

    proptest! {
        #[test]
        fn any_address_is_a_unit_or_a_typed_refusal(
            kind in any::<u16>(), length in any::<u32>(), path in any::<u8>(),
            target in any::<u8>(), lun in any::<u8>(),
        ) {
            let mut address = btl8(path, target, lun);
            address.r#type = kind;
            address.address_length = length;
            let valid = kind == STOR_ADDRESS_TYPE_BTL8
                && length == STOR_ADDR_BTL8_ADDRESS_LENGTH
                && path == 0;
            match Unit::from_address(&address) {
                Ok(unit) => {
                    prop_assert!(valid);
                    prop_assert_eq!(unit, Unit { target, lun });
                }
                Err(_) => prop_assert!(!valid),
            }
        }

        #[test]
        fn any_list_length_is_never_written_past(max in 0usize..64) {
            let mut list = [0u8; 64];
            report_supported(&mut list[..max.min(LIST_ENTRIES)]);
            prop_assert!(list[max.min(LIST_ENTRIES)..].iter().all(|&b| b == 0));
        }
    }
}
