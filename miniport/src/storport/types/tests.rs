//! Unit tests of `types`.
use core::ffi::c_void;

use proptest::prelude::*;

use super::*;

proptest! {
    #[test]
    fn physical_address_round_trips_every_bus_address(address: u64) {
        let physical = StorPhysicalAddress::from_u64(address);
        prop_assert_eq!(physical.as_u64(), address);
        // LARGE_INTEGER keeps the bits: the low and high halves are the address's.
        prop_assert_eq!(physical.quad_part.to_le_bytes(), address.to_le_bytes());
    }
}

#[test]
fn addresses_above_2_63_stay_unsigned() {
    let top = StorPhysicalAddress::from_u64(u64::MAX);
    assert_eq!(top.quad_part, -1);
    assert_eq!(top.as_u64(), u64::MAX);
}

#[test]
fn zeroed_registration_has_no_callbacks_and_null_pointers() {
    let init = HwInitializationData::zeroed();
    assert!(init.hw_initialize.is_none());
    assert!(init.hw_start_io.is_none());
    assert!(init.hw_find_adapter.is_none());
    assert!(init.hw_build_io.is_none());
    assert!(init.hw_unit_control.is_none());
    assert!(init.vendor_id.is_null() && init.device_id.is_null() && init.reserved.is_null());
    assert_eq!(init.hw_initialization_data_size, 0);
    let config = PortConfigurationInformation::zeroed();
    assert!(config.hw_ms_interrupt_routine.is_none());
    assert!(config.access_ranges.is_null());
    assert!(config.dump_region.virtual_base.is_null());
    let srb = StorageRequestBlock::zeroed();
    assert!(srb.data_buffer.is_null() && srb.next_srb.is_null());
    assert_eq!(srb.srb_ex_data_offset, [0]);
}

#[test]
fn a_callback_survives_the_option_niche() {
    unsafe extern "system" fn interrupt(_device_extension: *mut c_void) -> Boolean {
        TRUE
    }
    let mut init = HwInitializationData::zeroed();
    init.hw_interrupt = Some(interrupt);
    let stored = init.hw_interrupt.expect("set above");
    // SAFETY: `interrupt` ignores its argument.
    assert_eq!(unsafe { stored(core::ptr::null_mut()) }, TRUE);
    // `Option<fn>` is pointer-sized, so the C slot is a plain function pointer.
    assert_eq!(size_of::<HwInterrupt>(), size_of::<*const c_void>());
}
