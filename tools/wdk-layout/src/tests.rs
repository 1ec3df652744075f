//! The comparisons: for each structure, size, alignment and every named field offset of the
//! miniport's declaration equal those of wdk-sys' binding of the WDK header.

use core::mem::{align_of, offset_of, size_of};

use crate::types::{
    AccessRange, GroupAffinity, HwInitializationData, KLockQueueHandle, KSpinLockQueue,
    MemoryRegion, MessageInterruptInformation, PerfConfigurationData, PortConfigurationInformation,
    ProcessorNumber, ScsiPnpRequestBlock, ScsiPowerRequestBlock, ScsiRequestBlock,
    ScsiSupportedControlTypeList, ScsiWmiRequestBlock, SrbExData, SrbExDataIoInfo, SrbExDataPnp,
    SrbExDataPower, SrbExDataScsiCdb16, SrbExDataScsiCdb32, SrbExDataScsiCdbVar, SrbExDataWmi,
    SrbIoControl, StartioPerformanceParameters, StorAddrBtl8, StorDpc, StorLockHandle,
    StorPhysicalAddress, StorScatterGatherElement, StorScatterGatherList, StorageRequestBlock,
};

/// Asserts that `$rust` and the WDK's `$wdk` have the same size and alignment, and that each
/// listed Rust field sits at the offset of the WDK field it mirrors.
macro_rules! same_layout {
    ($rust:ty, $wdk:ty $(, $rust_field:ident => $wdk_field:ident)* $(,)?) => {{
        assert_eq!(
            size_of::<$rust>(),
            size_of::<$wdk>(),
            concat!("size of ", stringify!($wdk))
        );
        assert_eq!(
            align_of::<$rust>(),
            align_of::<$wdk>(),
            concat!("alignment of ", stringify!($wdk))
        );
        $(assert_eq!(
            offset_of!($rust, $rust_field),
            offset_of!($wdk, $wdk_field),
            concat!("offset of ", stringify!($wdk), ".", stringify!($wdk_field))
        );)*
    }};
}

#[test]
fn addresses_and_memory_ranges() {
    same_layout!(StorPhysicalAddress, wdk_sys::STOR_PHYSICAL_ADDRESS);
    same_layout!(AccessRange, wdk_sys::ACCESS_RANGE,
        range_start => RangeStart, range_length => RangeLength,
        range_in_memory => RangeInMemory);
    same_layout!(MemoryRegion, wdk_sys::MEMORY_REGION,
        virtual_base => VirtualBase, physical_base => PhysicalBase, length => Length);
}

#[test]
fn scsi_request_block() {
    // InternalStatus is an anonymous union with QueueSortKey and LinkTimeoutValue.
    same_layout!(ScsiRequestBlock, wdk_sys::SCSI_REQUEST_BLOCK,
        length => Length, function => Function, srb_status => SrbStatus,
        scsi_status => ScsiStatus, path_id => PathId, target_id => TargetId, lun => Lun,
        queue_tag => QueueTag, queue_action => QueueAction, cdb_length => CdbLength,
        sense_info_buffer_length => SenseInfoBufferLength, srb_flags => SrbFlags,
        data_transfer_length => DataTransferLength, time_out_value => TimeOutValue,
        data_buffer => DataBuffer, sense_info_buffer => SenseInfoBuffer, next_srb => NextSrb,
        original_request => OriginalRequest, srb_extension => SrbExtension,
        reserved => Reserved, cdb => Cdb);
}

#[test]
fn wmi_power_and_pnp_request_blocks() {
    same_layout!(ScsiWmiRequestBlock, wdk_sys::SCSI_WMI_REQUEST_BLOCK,
        length => Length, function => Function, srb_status => SrbStatus,
        wmi_sub_function => WMISubFunction, path_id => PathId, target_id => TargetId,
        lun => Lun, reserved1 => Reserved1, wmi_flags => WMIFlags, reserved2 => Reserved2,
        srb_flags => SrbFlags, data_transfer_length => DataTransferLength,
        time_out_value => TimeOutValue, data_buffer => DataBuffer, data_path => DataPath,
        reserved3 => Reserved3, original_request => OriginalRequest,
        srb_extension => SrbExtension, reserved4 => Reserved4, reserved6 => Reserved6,
        reserved5 => Reserved5);
    same_layout!(ScsiPowerRequestBlock, wdk_sys::SCSI_POWER_REQUEST_BLOCK,
        length => Length, function => Function, srb_status => SrbStatus,
        srb_power_flags => SrbPowerFlags, path_id => PathId, target_id => TargetId, lun => Lun,
        device_power_state => DevicePowerState, srb_flags => SrbFlags,
        data_transfer_length => DataTransferLength, time_out_value => TimeOutValue,
        data_buffer => DataBuffer, sense_info_buffer => SenseInfoBuffer, next_srb => NextSrb,
        original_request => OriginalRequest, srb_extension => SrbExtension,
        power_action => PowerAction, reserved => Reserved, reserved5 => Reserved5);
    same_layout!(ScsiPnpRequestBlock, wdk_sys::SCSI_PNP_REQUEST_BLOCK,
        length => Length, function => Function, srb_status => SrbStatus,
        pnp_sub_function => PnPSubFunction, path_id => PathId, target_id => TargetId,
        lun => Lun, pnp_action => PnPAction, srb_flags => SrbFlags,
        data_transfer_length => DataTransferLength, time_out_value => TimeOutValue,
        data_buffer => DataBuffer, sense_info_buffer => SenseInfoBuffer, next_srb => NextSrb,
        original_request => OriginalRequest, srb_extension => SrbExtension,
        srb_pnp_flags => SrbPnPFlags, reserved => Reserved, reserved4 => Reserved4);
}

#[test]
fn storage_request_block_and_address() {
    // SystemStatus is an anonymous union with RequestTagHigh4Bytes (WDK 10 CU and later).
    same_layout!(StorageRequestBlock, wdk_sys::STORAGE_REQUEST_BLOCK,
        length => Length, function => Function, srb_status => SrbStatus,
        reserved_ulong1 => ReservedUlong1, signature => Signature, version => Version,
        srb_length => SrbLength, srb_function => SrbFunction, srb_flags => SrbFlags,
        reserved_ulong2 => ReservedUlong2, request_tag => RequestTag,
        request_priority => RequestPriority, request_attribute => RequestAttribute,
        time_out_value => TimeOutValue, zero_guard1 => ZeroGuard1,
        address_offset => AddressOffset, num_srb_ex_data => NumSrbExData,
        data_transfer_length => DataTransferLength, data_buffer => DataBuffer,
        zero_guard2 => ZeroGuard2, original_request => OriginalRequest,
        class_context => ClassContext, port_context => PortContext,
        miniport_context => MiniportContext, next_srb => NextSrb,
        srb_ex_data_offset => SrbExDataOffset);
    same_layout!(StorAddrBtl8, wdk_sys::STOR_ADDR_BTL8,
        r#type => Type, port => Port, address_length => AddressLength, path => Path,
        target => Target, lun => Lun, reserved => Reserved);
}

#[test]
fn srb_extended_data_blocks() {
    same_layout!(SrbExData, wdk_sys::SRBEX_DATA, r#type => Type, length => Length, data => Data);
    same_layout!(SrbExDataScsiCdb16, wdk_sys::SRBEX_DATA_SCSI_CDB16,
        r#type => Type, length => Length, scsi_status => ScsiStatus,
        sense_info_buffer_length => SenseInfoBufferLength, cdb_length => CdbLength,
        reserved => Reserved, reserved1 => Reserved1, sense_info_buffer => SenseInfoBuffer,
        cdb => Cdb);
    same_layout!(SrbExDataScsiCdb32, wdk_sys::SRBEX_DATA_SCSI_CDB32,
        r#type => Type, length => Length, scsi_status => ScsiStatus,
        sense_info_buffer_length => SenseInfoBufferLength, cdb_length => CdbLength,
        reserved => Reserved, reserved1 => Reserved1, sense_info_buffer => SenseInfoBuffer,
        cdb => Cdb);
    same_layout!(SrbExDataScsiCdbVar, wdk_sys::SRBEX_DATA_SCSI_CDB_VAR,
        r#type => Type, length => Length, scsi_status => ScsiStatus,
        sense_info_buffer_length => SenseInfoBufferLength, reserved => Reserved,
        cdb_length => CdbLength, reserved1 => Reserved1, sense_info_buffer => SenseInfoBuffer,
        cdb => Cdb);
    same_layout!(SrbExDataWmi, wdk_sys::SRBEX_DATA_WMI,
        r#type => Type, length => Length, wmi_sub_function => WMISubFunction,
        wmi_flags => WMIFlags, reserved => Reserved, reserved1 => Reserved1,
        data_path => DataPath);
    same_layout!(SrbExDataPower, wdk_sys::SRBEX_DATA_POWER,
        r#type => Type, length => Length, srb_power_flags => SrbPowerFlags,
        reserved => Reserved, device_power_state => DevicePowerState,
        power_action => PowerAction);
    same_layout!(SrbExDataPnp, wdk_sys::SRBEX_DATA_PNP,
        r#type => Type, length => Length, pnp_sub_function => PnPSubFunction,
        reserved => Reserved, pnp_action => PnPAction, srb_pnp_flags => SrbPnPFlags,
        reserved1 => Reserved1);
    same_layout!(SrbExDataIoInfo, wdk_sys::SRBEX_DATA_IO_INFO,
        r#type => Type, length => Length, flags => Flags, key => Key, rw_length => RWLength,
        is_write_request => IsWriteRequest, cache_priority => CachePriority,
        reserved => Reserved, reserved1 => Reserved1);
}

#[test]
fn io_control_and_scatter_gather() {
    same_layout!(SrbIoControl, wdk_sys::SRB_IO_CONTROL,
        header_length => HeaderLength, signature => Signature, timeout => Timeout,
        control_code => ControlCode, return_code => ReturnCode, length => Length);
    same_layout!(StorScatterGatherElement, wdk_sys::STOR_SCATTER_GATHER_ELEMENT,
        physical_address => PhysicalAddress, length => Length, reserved => Reserved);
    same_layout!(StorScatterGatherList, wdk_sys::STOR_SCATTER_GATHER_LIST,
        number_of_elements => NumberOfElements, reserved => Reserved, list => List);
    same_layout!(ScsiSupportedControlTypeList, wdk_sys::SCSI_SUPPORTED_CONTROL_TYPE_LIST,
        max_control_type => MaxControlType, supported_type_list => SupportedTypeList);
}

#[test]
fn performance_and_interrupt_structures() {
    same_layout!(GroupAffinity, wdk_sys::GROUP_AFFINITY,
        mask => Mask, group => Group, reserved => Reserved);
    same_layout!(ProcessorNumber, wdk_sys::PROCESSOR_NUMBER,
        group => Group, number => Number, reserved => Reserved);
    same_layout!(PerfConfigurationData, wdk_sys::PERF_CONFIGURATION_DATA,
        version => Version, size => Size, flags => Flags,
        concurrent_channels => ConcurrentChannels,
        first_redirection_message_number => FirstRedirectionMessageNumber,
        last_redirection_message_number => LastRedirectionMessageNumber,
        device_node => DeviceNode, reserved => Reserved, message_targets => MessageTargets);
    same_layout!(StartioPerformanceParameters, wdk_sys::STARTIO_PERFORMANCE_PARAMETERS,
        version => Version, size => Size, message_number => MessageNumber,
        channel_number => ChannelNumber);
    same_layout!(MessageInterruptInformation, wdk_sys::MESSAGE_INTERRUPT_INFORMATION,
        message_id => MessageId, message_data => MessageData,
        message_address => MessageAddress, interrupt_vector => InterruptVector,
        interrupt_level => InterruptLevel, interrupt_mode => InterruptMode);
}

#[test]
fn locks_and_dpcs() {
    same_layout!(KSpinLockQueue, wdk_sys::KSPIN_LOCK_QUEUE, next => Next, lock => Lock);
    same_layout!(KLockQueueHandle, wdk_sys::KLOCK_QUEUE_HANDLE,
        lock_queue => LockQueue, old_irql => OldIrql);
    same_layout!(StorLockHandle, wdk_sys::STOR_LOCK_HANDLE, lock => Lock, context => Context);
    // storport.h declares Context as its own two-pointer-and-KIRQL struct; ours reuses
    // KLOCK_QUEUE_HANDLE, so the nested offset is compared too.
    assert_eq!(
        offset_of!(StorLockHandle, context.old_irql),
        offset_of!(wdk_sys::STOR_LOCK_HANDLE, Context.OldIrql),
        "offset of STOR_LOCK_HANDLE.Context.OldIrql"
    );
    same_layout!(StorDpc, wdk_sys::STOR_DPC, dpc => Dpc, lock => Lock);
}

#[test]
fn port_configuration_information() {
    same_layout!(PortConfigurationInformation, wdk_sys::PORT_CONFIGURATION_INFORMATION,
        length => Length, system_io_bus_number => SystemIoBusNumber,
        adapter_interface_type => AdapterInterfaceType,
        bus_interrupt_level => BusInterruptLevel, bus_interrupt_vector => BusInterruptVector,
        interrupt_mode => InterruptMode, maximum_transfer_length => MaximumTransferLength,
        number_of_physical_breaks => NumberOfPhysicalBreaks, dma_channel => DmaChannel,
        dma_port => DmaPort, dma_width => DmaWidth, dma_speed => DmaSpeed,
        alignment_mask => AlignmentMask, number_of_access_ranges => NumberOfAccessRanges,
        access_ranges => AccessRanges, miniport_dump_data => MiniportDumpData,
        number_of_buses => NumberOfBuses, initiator_bus_id => InitiatorBusId,
        scatter_gather => ScatterGather, master => Master, caches_data => CachesData,
        adapter_scans_down => AdapterScansDown,
        atdisk_primary_claimed => AtdiskPrimaryClaimed,
        atdisk_secondary_claimed => AtdiskSecondaryClaimed,
        dma32_bit_addresses => Dma32BitAddresses, demand_mode => DemandMode,
        map_buffers => MapBuffers, need_physical_addresses => NeedPhysicalAddresses,
        tagged_queuing => TaggedQueuing, auto_request_sense => AutoRequestSense,
        multiple_request_per_lu => MultipleRequestPerLu, receive_event => ReceiveEvent,
        real_mode_initialized => RealModeInitialized,
        buffer_access_scsi_port_controlled => BufferAccessScsiPortControlled,
        maximum_number_of_targets => MaximumNumberOfTargets, srb_type => SrbType,
        address_type => AddressType, slot_number => SlotNumber,
        bus_interrupt_level2 => BusInterruptLevel2,
        bus_interrupt_vector2 => BusInterruptVector2, interrupt_mode2 => InterruptMode2,
        dma_channel2 => DmaChannel2, dma_port2 => DmaPort2, dma_width2 => DmaWidth2,
        dma_speed2 => DmaSpeed2, device_extension_size => DeviceExtensionSize,
        specific_lu_extension_size => SpecificLuExtensionSize,
        srb_extension_size => SrbExtensionSize, dma64_bit_addresses => Dma64BitAddresses,
        reset_target_supported => ResetTargetSupported,
        maximum_number_of_logical_units => MaximumNumberOfLogicalUnits,
        wmi_data_provider => WmiDataProvider, synchronization_model => SynchronizationModel,
        hw_ms_interrupt_routine => HwMSInterruptRoutine,
        interrupt_synchronization_mode => InterruptSynchronizationMode,
        dump_region => DumpRegion, requested_dump_buffer_size => RequestedDumpBufferSize,
        virtual_device => VirtualDevice, dump_mode => DumpMode,
        dma_address_width => DmaAddressWidth, extended_flags1 => ExtendedFlags1,
        max_number_of_io => MaxNumberOfIO, max_ios_per_lun => MaxIOsPerLun,
        initial_lun_queue_depth => InitialLunQueueDepth,
        bus_reset_hold_time => BusResetHoldTime, feature_support => FeatureSupport);
}

#[test]
fn hw_initialization_data() {
    // PortVersionFlags (with ReservedUshort), HwAdapterControl (with HwNvmeAdapterControl) and
    // HwUnitControl (with HwNamespaceControl) are anonymous unions in current WDKs.
    same_layout!(HwInitializationData, wdk_sys::HW_INITIALIZATION_DATA,
        hw_initialization_data_size => HwInitializationDataSize,
        adapter_interface_type => AdapterInterfaceType, hw_initialize => HwInitialize,
        hw_start_io => HwStartIo, hw_interrupt => HwInterrupt,
        hw_find_adapter => HwFindAdapter, hw_reset_bus => HwResetBus,
        hw_dma_started => HwDmaStarted, hw_adapter_state => HwAdapterState,
        device_extension_size => DeviceExtensionSize,
        specific_lu_extension_size => SpecificLuExtensionSize,
        srb_extension_size => SrbExtensionSize, number_of_access_ranges => NumberOfAccessRanges,
        reserved => Reserved, map_buffers => MapBuffers,
        need_physical_addresses => NeedPhysicalAddresses, tagged_queuing => TaggedQueuing,
        auto_request_sense => AutoRequestSense,
        multiple_request_per_lu => MultipleRequestPerLu, receive_event => ReceiveEvent,
        vendor_id_length => VendorIdLength, vendor_id => VendorId,
        device_id_length => DeviceIdLength, device_id => DeviceId, hw_build_io => HwBuildIo,
        hw_free_adapter_resources => HwFreeAdapterResources,
        hw_process_service_request => HwProcessServiceRequest,
        hw_complete_service_irp => HwCompleteServiceIrp,
        hw_initialize_tracing => HwInitializeTracing, hw_cleanup_tracing => HwCleanupTracing,
        hw_tracing_enabled => HwTracingEnabled, feature_support => FeatureSupport,
        srb_type_flags => SrbTypeFlags, address_type_flags => AddressTypeFlags,
        reserved1 => Reserved1);
}
