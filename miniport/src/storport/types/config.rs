//! `PORT_CONFIGURATION_INFORMATION` and `HW_INITIALIZATION_DATA`.

use super::request_blocks::{
    ScsiPnpRequestBlock, ScsiPowerRequestBlock, ScsiRequestBlock, ScsiWmiRequestBlock,
    SrbExDataScsiCdb16, SrbExDataScsiCdb32, SrbExDataScsiCdbVar, SrbExDataWmi, StorageRequestBlock,
};
use super::routines::{
    HwAdapterControl, HwAdapterState, HwBuildIo, HwCleanupTracing, HwCompleteServiceIrp,
    HwDmaStarted, HwFreeAdapterResources, HwInitialize, HwInitializeTracing, HwInterrupt,
    HwMessageSignaledInterruptRoutine, HwProcessServiceRequest, HwResetBus, HwStartIo,
    HwTracingEnabled, HwUnitControl,
};
use super::scatter_gather::StorScatterGatherList;
use super::system::{
    KLockQueueHandle, KSpinLockQueue, PerfConfigurationData, ScsiSupportedControlTypeList, StorDpc,
    StorLockHandle,
};
use super::{AccessRange, Boolean, MemoryRegion};
use core::ffi::{c_char, c_void};

/// `PHW_FIND_ADAPTER`: HwStorFindAdapter, called at PASSIVE_LEVEL to claim the adapter and fill
/// `config_info`; returns an `SP_RETURN_*` code. The last parameter (SCSIport's `Again`) is
/// `Reserved3` for StorPort and must be ignored. (WDK 10 declares the registration's slot as
/// `PVOID` because virtual miniports use another signature; the layout is the same.)
pub type HwFindAdapter = Option<
    unsafe extern "system" fn(
        device_extension: *mut c_void,
        hw_context: *mut c_void,
        bus_information: *mut c_void,
        argument_string: *mut c_char,
        config_info: *mut PortConfigurationInformation,
        reserved3: *mut Boolean,
    ) -> u32,
>;

/// `PORT_CONFIGURATION_INFORMATION` (storport.h): what StorPort knows about the adapter, passed
/// to HwStorFindAdapter, which completes it. 224 bytes on 64-bit Windows (WDK 10 layout; the
/// fields from `hw_ms_interrupt_routine` on are StorPort-only, absent from srb.h's SCSIport
/// version).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PortConfigurationInformation {
    /// `Length`: `sizeof(PORT_CONFIGURATION_INFORMATION)` as StorPort knows it (its version).
    pub length: u32,
    /// `SystemIoBusNumber`.
    pub system_io_bus_number: u32,
    /// `AdapterInterfaceType`: an `INTERFACE_TYPE` (`PCIBus`).
    pub adapter_interface_type: u32,
    /// `BusInterruptLevel`.
    pub bus_interrupt_level: u32,
    /// `BusInterruptVector`.
    pub bus_interrupt_vector: u32,
    /// `InterruptMode`: a `KINTERRUPT_MODE`.
    pub interrupt_mode: u32,
    /// `MaximumTransferLength`: largest transfer in bytes (set by the miniport).
    pub maximum_transfer_length: u32,
    /// `NumberOfPhysicalBreaks`: scatter/gather elements minus one (set by the miniport).
    pub number_of_physical_breaks: u32,
    /// `DmaChannel`.
    pub dma_channel: u32,
    /// `DmaPort`.
    pub dma_port: u32,
    /// `DmaWidth`: a `DMA_WIDTH`.
    pub dma_width: u32,
    /// `DmaSpeed`: a `DMA_SPEED`.
    pub dma_speed: u32,
    /// `AlignmentMask`: buffer alignment the adapter needs, minus one.
    pub alignment_mask: u32,
    /// `NumberOfAccessRanges`: entries at `access_ranges`.
    pub number_of_access_ranges: u32,
    /// `AccessRanges`: pointer to the array of the adapter's ranges (BARs).
    pub access_ranges: *mut AccessRange,
    /// `MiniportDumpData` (`Reserved` before Windows 8): data handed to the dump-mode instance.
    pub miniport_dump_data: *mut c_void,
    /// `NumberOfBuses`.
    pub number_of_buses: u8,
    /// `InitiatorBusId`.
    pub initiator_bus_id: [i8; 8],
    /// `ScatterGather`.
    pub scatter_gather: Boolean,
    /// `Master`: bus master.
    pub master: Boolean,
    /// `CachesData`.
    pub caches_data: Boolean,
    /// `AdapterScansDown`.
    pub adapter_scans_down: Boolean,
    /// `AtdiskPrimaryClaimed`.
    pub atdisk_primary_claimed: Boolean,
    /// `AtdiskSecondaryClaimed`.
    pub atdisk_secondary_claimed: Boolean,
    /// `Dma32BitAddresses`.
    pub dma32_bit_addresses: Boolean,
    /// `DemandMode`.
    pub demand_mode: Boolean,
    /// `MapBuffers`: a `STOR_MAP_*` value.
    pub map_buffers: u8,
    /// `NeedPhysicalAddresses`.
    pub need_physical_addresses: Boolean,
    /// `TaggedQueuing`.
    pub tagged_queuing: Boolean,
    /// `AutoRequestSense`.
    pub auto_request_sense: Boolean,
    /// `MultipleRequestPerLu`.
    pub multiple_request_per_lu: Boolean,
    /// `ReceiveEvent`.
    pub receive_event: Boolean,
    /// `RealModeInitialized`.
    pub real_mode_initialized: Boolean,
    /// `BufferAccessScsiPortControlled`.
    pub buffer_access_scsi_port_controlled: Boolean,
    /// `MaximumNumberOfTargets`.
    pub maximum_number_of_targets: u8,
    /// `SrbType` (`ReservedUchars[0]` before Windows 8): `SRB_TYPE_*` the miniport uses.
    pub srb_type: u8,
    /// `AddressType` (`ReservedUchars[1]` before Windows 8): `STORAGE_ADDRESS_TYPE_BTL8`.
    pub address_type: u8,
    /// `SlotNumber`.
    pub slot_number: u32,
    /// `BusInterruptLevel2`.
    pub bus_interrupt_level2: u32,
    /// `BusInterruptVector2`.
    pub bus_interrupt_vector2: u32,
    /// `InterruptMode2`.
    pub interrupt_mode2: u32,
    /// `DmaChannel2`.
    pub dma_channel2: u32,
    /// `DmaPort2`.
    pub dma_port2: u32,
    /// `DmaWidth2`.
    pub dma_width2: u32,
    /// `DmaSpeed2`.
    pub dma_speed2: u32,
    /// `DeviceExtensionSize`.
    pub device_extension_size: u32,
    /// `SpecificLuExtensionSize`.
    pub specific_lu_extension_size: u32,
    /// `SrbExtensionSize`.
    pub srb_extension_size: u32,
    /// `Dma64BitAddresses`: `SCSI_DMA64_*`.
    pub dma64_bit_addresses: u8,
    /// `ResetTargetSupported`.
    pub reset_target_supported: Boolean,
    /// `MaximumNumberOfLogicalUnits`.
    pub maximum_number_of_logical_units: u8,
    /// `WmiDataProvider`.
    pub wmi_data_provider: Boolean,
    /// `SynchronizationModel`: a `STOR_SYNCHRONIZATION_MODEL`.
    pub synchronization_model: u32,
    /// `HwMSInterruptRoutine`: the MSI ISR.
    pub hw_ms_interrupt_routine: HwMessageSignaledInterruptRoutine,
    /// `InterruptSynchronizationMode`: an `INTERRUPT_SYNCHRONIZATION_MODE`.
    pub interrupt_synchronization_mode: u32,
    /// `DumpRegion`: the buffer StorPort gives a dump-mode instance.
    pub dump_region: MemoryRegion,
    /// `RequestedDumpBufferSize`.
    pub requested_dump_buffer_size: u32,
    /// `VirtualDevice`.
    pub virtual_device: Boolean,
    /// `DumpMode`: nonzero in the crash-dump / hibernation instance.
    pub dump_mode: u8,
    /// `DmaAddressWidth`: DMA address bits (0 = 64 when `Dma64BitAddresses` says so).
    pub dma_address_width: u8,
    /// `ExtendedFlags1`.
    pub extended_flags1: u32,
    /// `MaxNumberOfIO`: outstanding requests per adapter.
    pub max_number_of_io: u32,
    /// `MaxIOsPerLun`.
    pub max_ios_per_lun: u32,
    /// `InitialLunQueueDepth`.
    pub initial_lun_queue_depth: u32,
    /// `BusResetHoldTime` in microseconds.
    pub bus_reset_hold_time: u32,
    /// `FeatureSupport`: `STOR_ADAPTER_FEATURE_*`.
    pub feature_support: u32,
}

/// `HW_INITIALIZATION_DATA` (storport.h): the miniport's registration, passed to
/// `StorPortInitialize` from DriverEntry. 208 bytes on 64-bit Windows (WDK 10 layout; the
/// fields from `hw_build_io` on are StorPort-only).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HwInitializationData {
    /// `HwInitializationDataSize`: `sizeof(HW_INITIALIZATION_DATA)`.
    pub hw_initialization_data_size: u32,
    /// `AdapterInterfaceType`: `PCIBus`.
    pub adapter_interface_type: u32,
    /// `HwInitialize`.
    pub hw_initialize: HwInitialize,
    /// `HwStartIo`.
    pub hw_start_io: HwStartIo,
    /// `HwInterrupt`.
    pub hw_interrupt: HwInterrupt,
    /// `HwFindAdapter`.
    pub hw_find_adapter: HwFindAdapter,
    /// `HwResetBus`.
    pub hw_reset_bus: HwResetBus,
    /// `HwDmaStarted`: unused by StorPort.
    pub hw_dma_started: HwDmaStarted,
    /// `HwAdapterState`: unused by StorPort.
    pub hw_adapter_state: HwAdapterState,
    /// `DeviceExtensionSize`.
    pub device_extension_size: u32,
    /// `SpecificLuExtensionSize`.
    pub specific_lu_extension_size: u32,
    /// `SrbExtensionSize`.
    pub srb_extension_size: u32,
    /// `NumberOfAccessRanges`.
    pub number_of_access_ranges: u32,
    /// `Reserved`.
    pub reserved: *mut c_void,
    /// `MapBuffers`: a `STOR_MAP_*` value.
    pub map_buffers: u8,
    /// `NeedPhysicalAddresses`: must be TRUE for StorPort.
    pub need_physical_addresses: Boolean,
    /// `TaggedQueuing`: must be TRUE for StorPort.
    pub tagged_queuing: Boolean,
    /// `AutoRequestSense`: must be TRUE for StorPort.
    pub auto_request_sense: Boolean,
    /// `MultipleRequestPerLu`: must be TRUE for StorPort.
    pub multiple_request_per_lu: Boolean,
    /// `ReceiveEvent`.
    pub receive_event: Boolean,
    /// `VendorIdLength`.
    pub vendor_id_length: u16,
    /// `VendorId`.
    pub vendor_id: *mut c_void,
    /// The C union `ReservedUshort` / `PortVersionFlags`.
    pub port_version_flags: u16,
    /// `DeviceIdLength`.
    pub device_id_length: u16,
    /// `DeviceId`.
    pub device_id: *mut c_void,
    /// `HwAdapterControl`.
    pub hw_adapter_control: HwAdapterControl,
    /// `HwBuildIo`.
    pub hw_build_io: HwBuildIo,
    /// `HwFreeAdapterResources`.
    pub hw_free_adapter_resources: HwFreeAdapterResources,
    /// `HwProcessServiceRequest`.
    pub hw_process_service_request: HwProcessServiceRequest,
    /// `HwCompleteServiceIrp`.
    pub hw_complete_service_irp: HwCompleteServiceIrp,
    /// `HwInitializeTracing`.
    pub hw_initialize_tracing: HwInitializeTracing,
    /// `HwCleanupTracing`.
    pub hw_cleanup_tracing: HwCleanupTracing,
    /// `HwTracingEnabled`.
    pub hw_tracing_enabled: HwTracingEnabled,
    /// `FeatureSupport`: `STOR_FEATURE_*`.
    pub feature_support: u32,
    /// `SrbTypeFlags`: `SRB_TYPE_FLAG_*`.
    pub srb_type_flags: u32,
    /// `AddressTypeFlags`: `ADDRESS_TYPE_FLAG_*`.
    pub address_type_flags: u32,
    /// `Reserved1`.
    pub reserved1: u32,
    /// `HwUnitControl`.
    pub hw_unit_control: HwUnitControl,
}

/// The all-zero value of a structure whose fields are integers, raw pointers, `Option`s of
/// function pointers and arrays of those: for each of them all-zero bytes are a valid value
/// (0, null, `None`).
macro_rules! zeroed_constructor {
    ($($ty:ty),* $(,)?) => {$(
        impl $ty {
            /// The all-zero value (integers 0, pointers null, callbacks `None`), the starting
            /// point C code gets from `RtlZeroMemory`.
            #[must_use]
            pub const fn zeroed() -> Self {
                // SAFETY: every field of this type is an integer, a raw pointer, an
                // `Option<fn>` or an array or `repr(C)` struct of those, and all-zero bytes are
                // a valid value for each (0, null, None).
                unsafe { core::mem::zeroed() }
            }
        }
    )*};
}

zeroed_constructor!(
    MemoryRegion,
    ScsiRequestBlock,
    ScsiWmiRequestBlock,
    ScsiPowerRequestBlock,
    ScsiPnpRequestBlock,
    StorageRequestBlock,
    SrbExDataScsiCdb16,
    SrbExDataScsiCdb32,
    SrbExDataScsiCdbVar,
    SrbExDataWmi,
    StorScatterGatherList,
    ScsiSupportedControlTypeList,
    PerfConfigurationData,
    KSpinLockQueue,
    KLockQueueHandle,
    StorLockHandle,
    StorDpc,
    PortConfigurationInformation,
    HwInitializationData,
);
