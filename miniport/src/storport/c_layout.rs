//! Compile-time layout checks: the size, alignment and every field offset of each structure,
//! as the WDK lays them out on 64-bit Windows (x86_64 and aarch64 share the layout: LLP64,
//! natural alignment, 8-byte pointers).
//!
//! The numbers are computed from the WDK field lists; `tests/c_layout.rs` checks the same
//! values against mingw-w64's C headers, so a mistake here fails twice.

use core::mem::{align_of, offset_of, size_of};

use super::types::{
    AccessRange, GroupAffinity, HwInitializationData, KLockQueueHandle, MemoryRegion,
    MessageInterruptInformation, PerfConfigurationData, PortConfigurationInformation,
    ProcessorNumber, ScsiPnpRequestBlock, ScsiPowerRequestBlock, ScsiRequestBlock,
    ScsiSupportedControlTypeList, ScsiWmiRequestBlock, SrbExData, SrbExDataIoInfo, SrbExDataPnp,
    SrbExDataPower, SrbExDataScsiCdb16, SrbExDataScsiCdb32, SrbExDataScsiCdbVar, SrbExDataWmi,
    SrbIoControl, StartioPerformanceParameters, StorAddrBtl8, StorDpc, StorLockHandle,
    StorPhysicalAddress, StorScatterGatherElement, StorageRequestBlock,
};

/// Asserts `size_of`, `align_of` and the listed field offsets of a type at compile time.
macro_rules! assert_layout {
    ($ty:ty, size $size:literal, align $align:literal $(, $field:ident @ $offset:literal)* $(,)?) => {
        const _: () = {
            assert!(size_of::<$ty>() == $size, concat!("size of ", stringify!($ty)));
            assert!(align_of::<$ty>() == $align, concat!("alignment of ", stringify!($ty)));
            $(assert!(
                offset_of!($ty, $field) == $offset,
                concat!(stringify!($ty), ".", stringify!($field))
            );)*
        };
    };
}

#[cfg(not(target_pointer_width = "64"))]
compile_error!("the StorPort bindings describe 64-bit Windows (x86_64, aarch64) only");

assert_layout!(StorPhysicalAddress, size 8, align 8, quad_part @ 0);
assert_layout!(AccessRange, size 16, align 8, range_start @ 0, range_length @ 8, range_in_memory @ 12);
assert_layout!(MemoryRegion, size 24, align 8, virtual_base @ 0, physical_base @ 8, length @ 16);

assert_layout!(ScsiRequestBlock, size 88, align 8,
    length @ 0, function @ 2, srb_status @ 3, scsi_status @ 4, path_id @ 5, target_id @ 6,
    lun @ 7, queue_tag @ 8, queue_action @ 9, cdb_length @ 10, sense_info_buffer_length @ 11,
    srb_flags @ 12, data_transfer_length @ 16, time_out_value @ 20, data_buffer @ 24,
    sense_info_buffer @ 32, next_srb @ 40, original_request @ 48, srb_extension @ 56,
    internal_status @ 64, reserved @ 68, cdb @ 72);

assert_layout!(ScsiWmiRequestBlock, size 88, align 8,
    length @ 0, function @ 2, srb_status @ 3, wmi_sub_function @ 4, path_id @ 5, target_id @ 6,
    lun @ 7, reserved1 @ 8, wmi_flags @ 9, reserved2 @ 10, srb_flags @ 12,
    data_transfer_length @ 16, time_out_value @ 20, data_buffer @ 24, data_path @ 32,
    reserved3 @ 40, original_request @ 48, srb_extension @ 56, reserved4 @ 64, reserved6 @ 68,
    reserved5 @ 72);

assert_layout!(ScsiPowerRequestBlock, size 88, align 8,
    length @ 0, function @ 2, srb_status @ 3, srb_power_flags @ 4, path_id @ 5, target_id @ 6,
    lun @ 7, device_power_state @ 8, srb_flags @ 12, data_transfer_length @ 16,
    time_out_value @ 20, data_buffer @ 24, sense_info_buffer @ 32, next_srb @ 40,
    original_request @ 48, srb_extension @ 56, power_action @ 64, reserved @ 68, reserved5 @ 72);

assert_layout!(ScsiPnpRequestBlock, size 88, align 8,
    length @ 0, function @ 2, srb_status @ 3, pnp_sub_function @ 4, path_id @ 5, target_id @ 6,
    lun @ 7, pnp_action @ 8, srb_flags @ 12, data_transfer_length @ 16, time_out_value @ 20,
    data_buffer @ 24, sense_info_buffer @ 32, next_srb @ 40, original_request @ 48,
    srb_extension @ 56, srb_pnp_flags @ 64, reserved @ 68, reserved4 @ 72);

assert_layout!(StorageRequestBlock, size 128, align 8,
    length @ 0, function @ 2, srb_status @ 3, reserved_ulong1 @ 4, signature @ 8, version @ 12,
    srb_length @ 16, srb_function @ 20, srb_flags @ 24, reserved_ulong2 @ 28, request_tag @ 32,
    request_priority @ 36, request_attribute @ 38, time_out_value @ 40, system_status @ 44,
    zero_guard1 @ 48, address_offset @ 52, num_srb_ex_data @ 56, data_transfer_length @ 60,
    data_buffer @ 64, zero_guard2 @ 72, original_request @ 80, class_context @ 88,
    port_context @ 96, miniport_context @ 104, next_srb @ 112, srb_ex_data_offset @ 120);

assert_layout!(StorAddrBtl8, size 16, align 8,
    r#type @ 0, port @ 2, address_length @ 4, path @ 8, target @ 9, lun @ 10, reserved @ 11);

assert_layout!(SrbExData, size 16, align 8, r#type @ 0, length @ 4, data @ 8);
assert_layout!(SrbExDataScsiCdb16, size 40, align 8,
    r#type @ 0, length @ 4, scsi_status @ 8, sense_info_buffer_length @ 9, cdb_length @ 10,
    reserved @ 11, reserved1 @ 12, sense_info_buffer @ 16, cdb @ 24);
assert_layout!(SrbExDataScsiCdb32, size 56, align 8,
    r#type @ 0, length @ 4, scsi_status @ 8, sense_info_buffer_length @ 9, cdb_length @ 10,
    reserved @ 11, reserved1 @ 12, sense_info_buffer @ 16, cdb @ 24);
assert_layout!(SrbExDataScsiCdbVar, size 40, align 8,
    r#type @ 0, length @ 4, scsi_status @ 8, sense_info_buffer_length @ 9, reserved @ 10,
    cdb_length @ 12, reserved1 @ 16, sense_info_buffer @ 24, cdb @ 32);
assert_layout!(SrbExDataWmi, size 24, align 8,
    r#type @ 0, length @ 4, wmi_sub_function @ 8, wmi_flags @ 9, reserved @ 10, reserved1 @ 12,
    data_path @ 16);
assert_layout!(SrbExDataPower, size 24, align 8,
    r#type @ 0, length @ 4, srb_power_flags @ 8, reserved @ 9, device_power_state @ 12,
    power_action @ 16);
assert_layout!(SrbExDataPnp, size 24, align 8,
    r#type @ 0, length @ 4, pnp_sub_function @ 8, reserved @ 9, pnp_action @ 12,
    srb_pnp_flags @ 16, reserved1 @ 20);
assert_layout!(SrbExDataIoInfo, size 32, align 8,
    r#type @ 0, length @ 4, flags @ 8, key @ 12, rw_length @ 16, is_write_request @ 20,
    cache_priority @ 21, reserved @ 22, reserved1 @ 24);

assert_layout!(SrbIoControl, size 28, align 4,
    header_length @ 0, signature @ 4, timeout @ 12, control_code @ 16, return_code @ 20,
    length @ 24);

assert_layout!(StorScatterGatherElement, size 24, align 8,
    physical_address @ 0, length @ 8, reserved @ 16);
// The `planted-c-ulong` feature breaks this layout on Windows on purpose (a test's planted
// fault, which the image run must catch at run time).
#[cfg(not(feature = "planted-c-ulong"))]
assert_layout!(super::types::StorScatterGatherList, size 16, align 8,
    number_of_elements @ 0, reserved @ 8, list @ 16);
assert_layout!(ScsiSupportedControlTypeList, size 4, align 4,
    max_control_type @ 0, supported_type_list @ 4);

assert_layout!(GroupAffinity, size 16, align 8, mask @ 0, group @ 8, reserved @ 10);
assert_layout!(ProcessorNumber, size 4, align 2, group @ 0, number @ 2, reserved @ 3);
assert_layout!(PerfConfigurationData, size 40, align 8,
    version @ 0, size @ 4, flags @ 8, concurrent_channels @ 12,
    first_redirection_message_number @ 16, last_redirection_message_number @ 20,
    device_node @ 24, reserved @ 28, message_targets @ 32);
assert_layout!(StartioPerformanceParameters, size 16, align 4,
    version @ 0, size @ 4, message_number @ 8, channel_number @ 12);
assert_layout!(MessageInterruptInformation, size 32, align 8,
    message_id @ 0, message_data @ 4, message_address @ 8, interrupt_vector @ 16,
    interrupt_level @ 20, interrupt_mode @ 24);
assert_layout!(KLockQueueHandle, size 24, align 8, lock_queue @ 0, old_irql @ 16);
assert_layout!(StorLockHandle, size 32, align 8, lock @ 0, context @ 8);
assert_layout!(StorDpc, size 72, align 8, dpc @ 0, lock @ 64);

assert_layout!(PortConfigurationInformation, size 224, align 8,
    length @ 0, system_io_bus_number @ 4, adapter_interface_type @ 8, bus_interrupt_level @ 12,
    bus_interrupt_vector @ 16, interrupt_mode @ 20, maximum_transfer_length @ 24,
    number_of_physical_breaks @ 28, dma_channel @ 32, dma_port @ 36, dma_width @ 40,
    dma_speed @ 44, alignment_mask @ 48, number_of_access_ranges @ 52, access_ranges @ 56,
    miniport_dump_data @ 64, number_of_buses @ 72, initiator_bus_id @ 73, scatter_gather @ 81,
    master @ 82, caches_data @ 83, adapter_scans_down @ 84, atdisk_primary_claimed @ 85,
    atdisk_secondary_claimed @ 86, dma32_bit_addresses @ 87, demand_mode @ 88,
    map_buffers @ 89, need_physical_addresses @ 90, tagged_queuing @ 91,
    auto_request_sense @ 92, multiple_request_per_lu @ 93, receive_event @ 94,
    real_mode_initialized @ 95, buffer_access_scsi_port_controlled @ 96,
    maximum_number_of_targets @ 97, srb_type @ 98, address_type @ 99, slot_number @ 100,
    bus_interrupt_level2 @ 104, bus_interrupt_vector2 @ 108, interrupt_mode2 @ 112,
    dma_channel2 @ 116, dma_port2 @ 120, dma_width2 @ 124, dma_speed2 @ 128,
    device_extension_size @ 132, specific_lu_extension_size @ 136, srb_extension_size @ 140,
    dma64_bit_addresses @ 144, reset_target_supported @ 145,
    maximum_number_of_logical_units @ 146, wmi_data_provider @ 147,
    synchronization_model @ 148, hw_ms_interrupt_routine @ 152,
    interrupt_synchronization_mode @ 160, dump_region @ 168, requested_dump_buffer_size @ 192,
    virtual_device @ 196, dump_mode @ 197, dma_address_width @ 198, extended_flags1 @ 200,
    max_number_of_io @ 204, max_ios_per_lun @ 208, initial_lun_queue_depth @ 212,
    bus_reset_hold_time @ 216, feature_support @ 220);

assert_layout!(HwInitializationData, size 208, align 8,
    hw_initialization_data_size @ 0, adapter_interface_type @ 4, hw_initialize @ 8,
    hw_start_io @ 16, hw_interrupt @ 24, hw_find_adapter @ 32, hw_reset_bus @ 40,
    hw_dma_started @ 48, hw_adapter_state @ 56, device_extension_size @ 64,
    specific_lu_extension_size @ 68, srb_extension_size @ 72, number_of_access_ranges @ 76,
    reserved @ 80, map_buffers @ 88, need_physical_addresses @ 89, tagged_queuing @ 90,
    auto_request_sense @ 91, multiple_request_per_lu @ 92, receive_event @ 93,
    vendor_id_length @ 94, vendor_id @ 96, port_version_flags @ 104, device_id_length @ 106,
    device_id @ 112, hw_adapter_control @ 120, hw_build_io @ 128,
    hw_free_adapter_resources @ 136, hw_process_service_request @ 144,
    hw_complete_service_irp @ 152, hw_initialize_tracing @ 160, hw_cleanup_tracing @ 168,
    hw_tracing_enabled @ 176, feature_support @ 184, srb_type_flags @ 188,
    address_type_flags @ 192, reserved1 @ 196, hw_unit_control @ 200);
