//! The C `enum` values of storport.h, srb.h and wdm.h, as `u32` constants with their WDK names.
//!
//! C enums are 32-bit `int`s on Windows. They stay plain `u32`s here, not Rust enums, because
//! the other side may hand the miniport a value this crate does not know (a newer Windows adds
//! control types and notification codes), and an out-of-range Rust enum would be undefined
//! behaviour; the miniport's safe layer matches on these constants and rejects the rest.
#![expect(
    non_upper_case_globals,
    reason = "the WDK spells enum values in CamelCase (RequestComplete, PCIBus); keeping the \
              names verbatim lets readers grep the WDK"
)]

/// `SCSI_NOTIFICATION_TYPE`: the first argument of `StorPortNotification`.
pub type ScsiNotificationType = u32;
/// Complete an SRB: `(RequestComplete, ext, PSCSI_REQUEST_BLOCK)`.
pub const RequestComplete: ScsiNotificationType = 0;
/// Ready for the next request (ignored by StorPort): `(NextRequest, ext)`.
pub const NextRequest: ScsiNotificationType = 1;
/// Ready for the next request to a LU (ignored by StorPort).
pub const NextLuRequest: ScsiNotificationType = 2;
/// A bus reset was detected: `(ResetDetected, ext)`.
pub const ResetDetected: ScsiNotificationType = 3;
/// `_obsolete1` (SCSIport's `CallDisableInterrupts`), not supported by StorPort.
pub const _obsolete1: ScsiNotificationType = 4;
/// `_obsolete2` (SCSIport's `CallEnableInterrupts`), not supported by StorPort.
pub const _obsolete2: ScsiNotificationType = 5;
/// Arm the HwStorTimer: `(RequestTimerCall, ext, PHW_TIMER, ULONG microseconds)`.
pub const RequestTimerCall: ScsiNotificationType = 6;
/// Rescan the bus: `(BusChangeDetected, ext, UCHAR PathId)`.
pub const BusChangeDetected: ScsiNotificationType = 7;
/// Fire a WMI event: `(WMIEvent, ext, PWNODE_EVENT_ITEM, UCHAR PathId[, TargetId, Lun])`.
pub const WMIEvent: ScsiNotificationType = 8;
/// Re-register WMI GUIDs: `(WMIReregister, ext, UCHAR PathId[, TargetId, Lun])`.
pub const WMIReregister: ScsiNotificationType = 9;
/// The link came up.
pub const LinkUp: ScsiNotificationType = 10;
/// The link went down.
pub const LinkDown: ScsiNotificationType = 11;
/// Read the tick count: `(QueryTickCount, ext, PLARGE_INTEGER)`.
pub const QueryTickCount: ScsiNotificationType = 12;
/// Buffer overrun detected.
pub const BufferOverrunDetected: ScsiNotificationType = 13;
/// Trace notification.
pub const TraceNotification: ScsiNotificationType = 14;
/// Get the extended function table.
pub const GetExtendedFunctionTable: ScsiNotificationType = 15;
/// StorPort-only: `StorPortEnablePassiveInitialization`.
pub const EnablePassiveInitialization: ScsiNotificationType = 0x1000;
/// StorPort-only: `StorPortInitializeDpc`.
pub const InitializeDpc: ScsiNotificationType = 0x1001;
/// StorPort-only: `StorPortIssueDpc`.
pub const IssueDpc: ScsiNotificationType = 0x1002;
/// StorPort-only: `StorPortAcquireSpinLock`.
pub const AcquireSpinLock: ScsiNotificationType = 0x1003;
/// StorPort-only: `StorPortReleaseSpinLock`.
pub const ReleaseSpinLock: ScsiNotificationType = 0x1004;
/// StorPort-only: `StorPortStateChangeDetected`.
pub const StateChangeDetectedCall: ScsiNotificationType = 0x1005;
/// StorPort-only: `StorPortIoTargetRequestServiceTime`.
pub const IoTargetRequestServiceTime: ScsiNotificationType = 0x1006;
/// StorPort-only: `StorPortAsyncNotificationDetected`.
pub const AsyncNotificationDetected: ScsiNotificationType = 0x1007;
/// StorPort-only: complete a request in the caller's context instead of a DPC.
pub const RequestDirectComplete: ScsiNotificationType = 0x1008;
/// StorPort-only: `StorPortInitializeDpcWithContext`.
pub const InitializeDpcWithContext: ScsiNotificationType = 0x1009;
/// StorPort-only: `StorPortInitializeThreadedDpc`.
pub const InitializeThreadedDpc: ScsiNotificationType = 0x100A;
/// StorPort-only: `StorPortSetTargetProcessorDpc`.
pub const SetTargetProcessorDpc: ScsiNotificationType = 0x100B;
/// StorPort-only: `StorPortMarkDeviceFailed`.
pub const MarkDeviceFailed: ScsiNotificationType = 0x100C;
/// StorPort-only: `StorPortMarkDeviceFailedEx`.
pub const MarkDeviceFailedEx: ScsiNotificationType = 0x100D;

/// `STOR_SPINLOCK`: which StorPort lock `StorPortAcquireSpinLock` takes.
pub type StorSpinlock = u32;
/// Never a valid lock.
pub const InvalidLock: StorSpinlock = 0;
/// The DPC lock (raises to DISPATCH_LEVEL).
pub const DpcLock: StorSpinlock = 1;
/// The StartIo lock (DISPATCH_LEVEL).
pub const StartIoLock: StorSpinlock = 2;
/// The interrupt lock (DIRQL); not for use in MSI per-message mode.
pub const InterruptLock: StorSpinlock = 3;
/// The threaded-DPC lock.
pub const ThreadedDpcLock: StorSpinlock = 4;
/// The DPC-level lock.
pub const DpcLevelLock: StorSpinlock = 5;

/// `STORPORT_FUNCTION_CODE`: the first argument of `StorPortExtendedFunction`.
pub type StorportFunctionCode = u32;
/// `StorPortAllocatePool`.
pub const ExtFunctionAllocatePool: StorportFunctionCode = 0;
/// `StorPortFreePool`.
pub const ExtFunctionFreePool: StorportFunctionCode = 1;
/// `StorPortAllocateMdl`.
pub const ExtFunctionAllocateMdl: StorportFunctionCode = 2;
/// `StorPortFreeMdl`.
pub const ExtFunctionFreeMdl: StorportFunctionCode = 3;
/// `StorPortBuildMdlForNonPagedPool`.
pub const ExtFunctionBuildMdlForNonPagedPool: StorportFunctionCode = 4;
/// `StorPortGetSystemAddress`.
pub const ExtFunctionGetSystemAddress: StorportFunctionCode = 5;
/// `StorPortGetOriginalMdl`.
pub const ExtFunctionGetOriginalMdl: StorportFunctionCode = 6;
/// `StorPortCompleteServiceIrp`.
pub const ExtFunctionCompleteServiceIrp: StorportFunctionCode = 7;
/// `StorPortGetDeviceObjects`.
pub const ExtFunctionGetDeviceObjects: StorportFunctionCode = 8;
/// `StorPortBuildScatterGatherList`.
pub const ExtFunctionBuildScatterGatherList: StorportFunctionCode = 9;
/// `StorPortPutScatterGatherList`.
pub const ExtFunctionPutScatterGatherList: StorportFunctionCode = 10;
/// `StorPortAcquireMSISpinLock`.
pub const ExtFunctionAcquireMSISpinLock: StorportFunctionCode = 11;
/// `StorPortReleaseMSISpinLock`.
pub const ExtFunctionReleaseMSISpinLock: StorportFunctionCode = 12;
/// `StorPortGetMSIInfo`.
pub const ExtFunctionGetMessageInterruptInformation: StorportFunctionCode = 13;
/// `StorPortInitializePerfOpts`.
pub const ExtFunctionInitializePerformanceOptimizations: StorportFunctionCode = 14;
/// `StorPortGetStartIoPerfParams`.
pub const ExtFunctionGetStartIoPerformanceParameters: StorportFunctionCode = 15;
/// `StorPortLogSystemEvent`.
pub const ExtFunctionLogSystemEvent: StorportFunctionCode = 16;
/// `StorPortGetCurrentProcessorNumber` (Windows 7+).
pub const ExtFunctionGetCurrentProcessorNumber: StorportFunctionCode = 17;
/// `StorPortGetActiveGroupCount` (Windows 7+).
pub const ExtFunctionGetActiveGroupCount: StorportFunctionCode = 18;
/// `StorPortGetGroupAffinity` (Windows 7+).
pub const ExtFunctionGetGroupAffinity: StorportFunctionCode = 19;
/// `StorPortGetActiveNodeCount` (Windows 7+).
pub const ExtFunctionGetActiveNodeCount: StorportFunctionCode = 20;
/// `StorPortGetNodeAffinity` (Windows 7+).
pub const ExtFunctionGetNodeAffinity: StorportFunctionCode = 21;
/// `StorPortGetHighestNodeNumber` (Windows 7+).
pub const ExtFunctionGetHighestNodeNumber: StorportFunctionCode = 22;
/// `StorPortGetLogicalProcessorRelationship` (Windows 7+).
pub const ExtFunctionGetLogicalProcessorRelationship: StorportFunctionCode = 23;
/// `StorPortAllocateContiguousMemorySpecifyCacheNode` (Windows 7+).
pub const ExtFunctionAllocateContiguousMemorySpecifyCacheNode: StorportFunctionCode = 24;
/// `StorPortFreeContiguousMemorySpecifyCache` (Windows 7+).
pub const ExtFunctionFreeContiguousMemorySpecifyCache: StorportFunctionCode = 25;
/// `StorPortSetPowerSettingNotificationGuids` (Windows 8+).
pub const ExtFunctionSetPowerSettingNotificationGuids: StorportFunctionCode = 26;
/// `StorPortInvokeAcpiMethod` (Windows 8+).
pub const ExtFunctionInvokeAcpiMethod: StorportFunctionCode = 27;
/// `StorPortGetRequestInfo` (Windows 8+).
pub const ExtFunctionGetRequestInfo: StorportFunctionCode = 28;
/// `StorPortInitializeWorker` (Windows 8+).
pub const ExtFunctionInitializeWorker: StorportFunctionCode = 29;
/// `StorPortQueueWorkItem` (Windows 8+).
pub const ExtFunctionQueueWorkItem: StorportFunctionCode = 30;
/// `StorPortFreeWorker` (Windows 8+).
pub const ExtFunctionFreeWorker: StorportFunctionCode = 31;
/// `StorPortInitializeTimer` (Windows 8+).
pub const ExtFunctionInitializeTimer: StorportFunctionCode = 32;
/// `StorPortRequestTimer` (Windows 8+).
pub const ExtFunctionRequestTimer: StorportFunctionCode = 33;
/// `StorPortFreeTimer` (Windows 8+).
pub const ExtFunctionFreeTimer: StorportFunctionCode = 34;
/// `StorPortRegistryReadAdapterKey` (Windows 10+). storport.h numbers the Windows 10 codes
/// after the Windows 8.1 block that starts at `ExtFunctionGetProcessorIndexFromNumber` (56,
/// commented there) and six codes on; `ExtFunctionGetD3ColdSupport`, five after this one, is
/// commented 67, which agrees.
pub const ExtFunctionRegistryReadAdapterKey: StorportFunctionCode = 62;
/// `StorPortRegistryWriteAdapterKey` (Windows 10+), the code after the read.
pub const ExtFunctionRegistryWriteAdapterKey: StorportFunctionCode = 63;

/// `SCSI_ADAPTER_CONTROL_TYPE`: HwStorAdapterControl's `ControlType`.
pub type ScsiAdapterControlType = u32;
/// Report which control types the miniport supports (a `SCSI_SUPPORTED_CONTROL_TYPE_LIST`).
pub const ScsiQuerySupportedControlTypes: ScsiAdapterControlType = 0;
/// Stop the adapter (power down / remove), at DIRQL.
pub const ScsiStopAdapter: ScsiAdapterControlType = 1;
/// Restart the adapter after `ScsiStopAdapter`.
pub const ScsiRestartAdapter: ScsiAdapterControlType = 2;
/// Reconfigure boot settings.
pub const ScsiSetBootConfig: ScsiAdapterControlType = 3;
/// Reconfigure running settings.
pub const ScsiSetRunningConfig: ScsiAdapterControlType = 4;
/// A power setting changed.
pub const ScsiPowerSettingNotification: ScsiAdapterControlType = 5;
/// Adapter power transition.
pub const ScsiAdapterPower: ScsiAdapterControlType = 6;
/// PoFx: power required.
pub const ScsiAdapterPoFxPowerRequired: ScsiAdapterControlType = 7;
/// PoFx: component active.
pub const ScsiAdapterPoFxPowerActive: ScsiAdapterControlType = 8;
/// PoFx: set F-state.
pub const ScsiAdapterPoFxPowerSetFState: ScsiAdapterControlType = 9;
/// PoFx: power control.
pub const ScsiAdapterPoFxPowerControl: ScsiAdapterControlType = 10;
/// Prepare for a bus rescan.
pub const ScsiAdapterPrepareForBusReScan: ScsiAdapterControlType = 11;
/// System power hints.
pub const ScsiAdapterSystemPowerHints: ScsiAdapterControlType = 12;
/// Filter resource requirements.
pub const ScsiAdapterFilterResourceRequirements: ScsiAdapterControlType = 13;
/// PoFx: maximum operational power.
pub const ScsiAdapterPoFxMaxOperationalPower: ScsiAdapterControlType = 14;
/// PoFx: set performance state.
pub const ScsiAdapterPoFxSetPerfState: ScsiAdapterControlType = 15;
/// The adapter was surprise-removed.
pub const ScsiAdapterSurpriseRemoval: ScsiAdapterControlType = 16;

/// `SCSI_ADAPTER_CONTROL_STATUS`: HwStorAdapterControl's result.
pub type ScsiAdapterControlStatus = u32;
/// The control succeeded.
pub const ScsiAdapterControlSuccess: ScsiAdapterControlStatus = 0;
/// The control failed.
pub const ScsiAdapterControlUnsuccessful: ScsiAdapterControlStatus = 1;
/// Retry the control later.
pub const ScsiAdapterControlRetryNeeded: ScsiAdapterControlStatus = 2;
/// The parameter buffer is too small.
pub const ScsiAdapterControlBufferTooSmall: ScsiAdapterControlStatus = 3;

/// `SCSI_UNIT_CONTROL_TYPE`: HwStorUnitControl's `ControlType`.
pub type ScsiUnitControlType = u32;
/// Report which unit control types the miniport supports.
pub const ScsiQuerySupportedUnitControlTypes: ScsiUnitControlType = 0;
/// Unit usage notification.
pub const ScsiUnitUsage: ScsiUnitControlType = 1;
/// Start the unit.
pub const ScsiUnitStart: ScsiUnitControlType = 2;
/// Unit power change.
pub const ScsiUnitPower: ScsiUnitControlType = 3;
/// PoFx power information.
pub const ScsiUnitPoFxPowerInfo: ScsiUnitControlType = 4;
/// PoFx: power required.
pub const ScsiUnitPoFxPowerRequired: ScsiUnitControlType = 5;
/// PoFx: component active.
pub const ScsiUnitPoFxPowerActive: ScsiUnitControlType = 6;
/// PoFx: set F-state.
pub const ScsiUnitPoFxPowerSetFState: ScsiUnitControlType = 7;
/// PoFx: power control.
pub const ScsiUnitPoFxPowerControl: ScsiUnitControlType = 8;
/// The unit is being removed.
pub const ScsiUnitRemove: ScsiUnitControlType = 9;
/// The unit was surprise-removed.
pub const ScsiUnitSurpriseRemoval: ScsiUnitControlType = 10;

/// `SCSI_UNIT_CONTROL_STATUS`: HwStorUnitControl's result.
pub type ScsiUnitControlStatus = u32;
/// The unit control succeeded.
pub const ScsiUnitControlSuccess: ScsiUnitControlStatus = 0;
/// The unit control failed.
pub const ScsiUnitControlUnsuccessful: ScsiUnitControlStatus = 1;

/// `INTERRUPT_SYNCHRONIZATION_MODE`: how StorPort serialises MSI interrupts.
pub type InterruptSynchronizationMode = u32;
/// No MSI support.
pub const InterruptSupportNone: InterruptSynchronizationMode = 0;
/// One lock for all messages.
pub const InterruptSynchronizeAll: InterruptSynchronizationMode = 1;
/// One lock per message (the miniport serialises with `StorPortAcquireMSISpinLock`).
pub const InterruptSynchronizePerMessage: InterruptSynchronizationMode = 2;

/// `STOR_SYNCHRONIZATION_MODEL`: whether HwStorStartIo and the ISR share a lock.
pub type StorSynchronizationModel = u32;
/// StartIo runs under the interrupt lock.
pub const StorSynchronizeHalfDuplex: StorSynchronizationModel = 0;
/// StartIo and the ISR run concurrently.
pub const StorSynchronizeFullDuplex: StorSynchronizationModel = 1;

/// `INTERFACE_TYPE`: the bus of `AdapterInterfaceType`.
pub type InterfaceType = u32;
/// PCI (and PCI Express).
pub const PCIBus: InterfaceType = 5;

/// `BUS_DATA_TYPE`: the `BusDataType` of `StorPortGetBusData`.
pub type BusDataType = u32;
/// PCI configuration space.
pub const PCIConfiguration: BusDataType = 4;

/// `KINTERRUPT_MODE`.
pub type KinterruptMode = u32;
/// Level-triggered.
pub const LevelSensitive: KinterruptMode = 0;
/// Edge-triggered.
pub const Latched: KinterruptMode = 1;

/// `STOR_DEVICE_POWER_STATE`.
pub type StorDevicePowerState = u32;
/// Unspecified.
pub const StorPowerDeviceUnspecified: StorDevicePowerState = 0;
/// D0 (working).
pub const StorPowerDeviceD0: StorDevicePowerState = 1;
/// D1.
pub const StorPowerDeviceD1: StorDevicePowerState = 2;
/// D2.
pub const StorPowerDeviceD2: StorDevicePowerState = 3;
/// D3 (off).
pub const StorPowerDeviceD3: StorDevicePowerState = 4;

/// `STOR_POWER_ACTION`.
pub type StorPowerAction = u32;
/// None.
pub const StorPowerActionNone: StorPowerAction = 0;
/// Reserved.
pub const StorPowerActionReserved: StorPowerAction = 1;
/// Sleep.
pub const StorPowerActionSleep: StorPowerAction = 2;
/// Hibernate.
pub const StorPowerActionHibernate: StorPowerAction = 3;
/// Shutdown.
pub const StorPowerActionShutdown: StorPowerAction = 4;
/// Shutdown and reset.
pub const StorPowerActionShutdownReset: StorPowerAction = 5;
/// Shutdown and power off.
pub const StorPowerActionShutdownOff: StorPowerAction = 6;
/// Warm eject.
pub const StorPowerActionWarmEject: StorPowerAction = 7;

/// `STOR_PNP_ACTION` (the `IRP_MN_*` code).
pub type StorPnpAction = u32;
/// Start.
pub const StorStartDevice: StorPnpAction = 0x0;
/// Remove.
pub const StorRemoveDevice: StorPnpAction = 0x2;
/// Stop.
pub const StorStopDevice: StorPnpAction = 0x4;
/// Query capabilities.
pub const StorQueryCapabilities: StorPnpAction = 0x9;
/// Query resource requirements.
pub const StorQueryResourceRequirements: StorPnpAction = 0xB;
/// Filter resource requirements.
pub const StorFilterResourceRequirements: StorPnpAction = 0xD;
/// Surprise removal.
pub const StorSurpriseRemoval: StorPnpAction = 0x17;

/// `SRBEXDATATYPE`: `SRBEX_DATA.Type`.
pub type SrbExDataType = u32;
/// Unknown.
pub const SrbExDataTypeUnknown: SrbExDataType = 0;
/// `SRBEX_DATA_BIDIRECTIONAL`.
pub const SrbExDataTypeBidirectional: SrbExDataType = 1;
/// `SRBEX_DATA_SCSI_CDB16`.
pub const SrbExDataTypeScsiCdb16: SrbExDataType = 0x40;
/// `SRBEX_DATA_SCSI_CDB32`.
pub const SrbExDataTypeScsiCdb32: SrbExDataType = 0x41;
/// `SRBEX_DATA_SCSI_CDB_VAR`.
pub const SrbExDataTypeScsiCdbVar: SrbExDataType = 0x42;
/// `SRBEX_DATA_WMI`.
pub const SrbExDataTypeWmi: SrbExDataType = 0x60;
/// `SRBEX_DATA_POWER`.
pub const SrbExDataTypePower: SrbExDataType = 0x61;
/// `SRBEX_DATA_PNP`.
pub const SrbExDataTypePnP: SrbExDataType = 0x62;
/// `SRBEX_DATA_IO_INFO`.
pub const SrbExDataTypeIoInfo: SrbExDataType = 0x80;
/// Start of the Microsoft-reserved range.
pub const SrbExDataTypeMSReservedStart: SrbExDataType = 0xF000_0000;
/// Reserved.
pub const SrbExDataTypeReserved: SrbExDataType = 0xFFFF_FFFF;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storport_only_notifications_are_consecutive_from_0x1000() {
        assert_eq!(
            [
                EnablePassiveInitialization,
                InitializeDpc,
                IssueDpc,
                AcquireSpinLock,
                ReleaseSpinLock
            ],
            [0x1000, 0x1001, 0x1002, 0x1003, 0x1004]
        );
        // The SCSIport-compatible codes stay below the StorPort-only range.
        const { assert!(GetExtendedFunctionTable < EnablePassiveInitialization) };
    }

    #[test]
    fn extended_function_codes_are_the_enum_positions() {
        let in_order = [
            ExtFunctionAllocatePool,
            ExtFunctionFreePool,
            ExtFunctionAllocateMdl,
            ExtFunctionFreeMdl,
            ExtFunctionBuildMdlForNonPagedPool,
            ExtFunctionGetSystemAddress,
            ExtFunctionGetOriginalMdl,
            ExtFunctionCompleteServiceIrp,
            ExtFunctionGetDeviceObjects,
            ExtFunctionBuildScatterGatherList,
            ExtFunctionPutScatterGatherList,
            ExtFunctionAcquireMSISpinLock,
            ExtFunctionReleaseMSISpinLock,
            ExtFunctionGetMessageInterruptInformation,
            ExtFunctionInitializePerformanceOptimizations,
            ExtFunctionGetStartIoPerformanceParameters,
            ExtFunctionLogSystemEvent,
            ExtFunctionGetCurrentProcessorNumber,
            ExtFunctionGetActiveGroupCount,
            ExtFunctionGetGroupAffinity,
            ExtFunctionGetActiveNodeCount,
            ExtFunctionGetNodeAffinity,
            ExtFunctionGetHighestNodeNumber,
            ExtFunctionGetLogicalProcessorRelationship,
            ExtFunctionAllocateContiguousMemorySpecifyCacheNode,
            ExtFunctionFreeContiguousMemorySpecifyCache,
            ExtFunctionSetPowerSettingNotificationGuids,
            ExtFunctionInvokeAcpiMethod,
            ExtFunctionGetRequestInfo,
            ExtFunctionInitializeWorker,
            ExtFunctionQueueWorkItem,
            ExtFunctionFreeWorker,
            ExtFunctionInitializeTimer,
            ExtFunctionRequestTimer,
            ExtFunctionFreeTimer,
        ];
        for (position, code) in (0_u32..).zip(in_order) {
            assert_eq!(code, position);
        }
    }

    #[test]
    fn spinlocks_start_at_one_so_zero_is_never_a_valid_lock() {
        assert_eq!(InvalidLock, 0);
        assert_eq!(
            [
                DpcLock,
                StartIoLock,
                InterruptLock,
                ThreadedDpcLock,
                DpcLevelLock
            ],
            [1, 2, 3, 4, 5]
        );
    }
}
