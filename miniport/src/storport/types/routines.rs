//! The HW callback types (`PHW_*`): the routines the miniport hands StorPort.

use super::Boolean;
use super::request_blocks::ScsiRequestBlock;
use super::system::StorDpc;
use core::ffi::c_void;

/// `PHW_INITIALIZE`: HwStorInitialize, called at DIRQL (with the interrupt lock) after
/// HwStorFindAdapter; returns TRUE when the adapter is ready.
pub type HwInitialize = Option<unsafe extern "system" fn(device_extension: *mut c_void) -> Boolean>;

/// `PHW_PASSIVE_INITIALIZE_ROUTINE`: HwStorPassiveInitializeRoutine, called at PASSIVE_LEVEL
/// after HwStorInitialize when enabled with `StorPortEnablePassiveInitialization`.
pub type HwPassiveInitializeRoutine =
    Option<unsafe extern "system" fn(device_extension: *mut c_void) -> Boolean>;

/// `PHW_BUILDIO`: HwStorBuildIo, called at DISPATCH_LEVEL without locks before HwStorStartIo;
/// returns FALSE after completing the SRB itself.
pub type HwBuildIo = Option<
    unsafe extern "system" fn(device_extension: *mut c_void, srb: *mut ScsiRequestBlock) -> Boolean,
>;

/// `PHW_STARTIO`: HwStorStartIo, called at DISPATCH_LEVEL (with the StartIo lock in half-duplex
/// mode, without it under `STOR_PERF_CONCURRENT_CHANNELS`); must return TRUE.
pub type HwStartIo = Option<
    unsafe extern "system" fn(device_extension: *mut c_void, srb: *mut ScsiRequestBlock) -> Boolean,
>;

/// `PHW_INTERRUPT`: HwStorInterrupt, the line-based ISR at DIRQL; returns TRUE if the adapter
/// interrupted.
pub type HwInterrupt = Option<unsafe extern "system" fn(device_extension: *mut c_void) -> Boolean>;

/// `PHW_MESSAGE_SIGNALED_INTERRUPT_ROUTINE`: HwMSInterruptRoutine, the MSI/MSI-X ISR at DIRQL
/// for message `message_id`.
pub type HwMessageSignaledInterruptRoutine =
    Option<unsafe extern "system" fn(device_extension: *mut c_void, message_id: u32) -> Boolean>;

/// `PHW_RESET_BUS`: HwStorResetBus, called at DISPATCH_LEVEL (StartIo lock held) to reset bus
/// `path_id`; returns TRUE on success.
pub type HwResetBus =
    Option<unsafe extern "system" fn(device_extension: *mut c_void, path_id: u32) -> Boolean>;

/// `PHW_DMA_STARTED`: SCSIport-era callback, unused by StorPort (leave `None`).
pub type HwDmaStarted = Option<unsafe extern "system" fn(device_extension: *mut c_void)>;

/// `PHW_ADAPTER_STATE`: SCSIport-era callback, unused by StorPort (leave `None`).
pub type HwAdapterState = Option<
    unsafe extern "system" fn(
        device_extension: *mut c_void,
        context: *mut c_void,
        save_state: Boolean,
    ) -> Boolean,
>;

/// `PHW_ADAPTER_CONTROL`: HwStorAdapterControl; `control_type` is a `SCSI_ADAPTER_CONTROL_TYPE`,
/// the result a `SCSI_ADAPTER_CONTROL_STATUS`. IRQL depends on the control type
/// (`ScsiStopAdapter` at DIRQL, `ScsiRestartAdapter` at DISPATCH_LEVEL or lower).
pub type HwAdapterControl = Option<
    unsafe extern "system" fn(
        device_extension: *mut c_void,
        control_type: u32,
        parameters: *mut c_void,
    ) -> u32,
>;

/// `PHW_UNIT_CONTROL`: HwStorUnitControl; `control_type` is a `SCSI_UNIT_CONTROL_TYPE`, the
/// result a `SCSI_UNIT_CONTROL_STATUS`.
pub type HwUnitControl = Option<
    unsafe extern "system" fn(
        device_extension: *mut c_void,
        control_type: u32,
        parameters: *mut c_void,
    ) -> u32,
>;

/// `PHW_DPC_ROUTINE`: HwStorDpcRoutine, run at DISPATCH_LEVEL for a DPC queued with
/// `StorPortIssueDpc`; the two system arguments are the ones given there.
pub type HwDpcRoutine = Option<
    unsafe extern "system" fn(
        dpc: *mut StorDpc,
        hw_device_extension: *mut c_void,
        system_argument1: *mut c_void,
        system_argument2: *mut c_void,
    ),
>;

/// `PHW_TIMER`: HwStorTimer, the `RequestTimerCall` callback, at DISPATCH_LEVEL with the
/// StartIo lock.
pub type HwTimer = Option<unsafe extern "system" fn(device_extension: *mut c_void)>;

/// `PHW_TIMER_EX`: the callback of a timer from `StorPortInitializeTimer`, at DISPATCH_LEVEL,
/// with the context given to `StorPortRequestTimer`.
pub type HwTimerEx =
    Option<unsafe extern "system" fn(device_extension: *mut c_void, context: *mut c_void)>;

/// `PHW_STATE_CHANGE`: HwStorStateChange, called at DISPATCH_LEVEL with the StartIo lock held
/// once StorPort has processed a `StorPortStateChangeDetected` notification; `address` is the
/// `STOR_ADDRESS` the notification named and `status` is below 0x8000_0000 on success.
pub type HwStateChange = Option<
    unsafe extern "system" fn(
        hw_device_extension: *mut c_void,
        context: *mut c_void,
        address_type: i16,
        address: *mut c_void,
        status: u32,
    ),
>;

/// `PHW_FREE_ADAPTER_RESOURCES`: virtual miniports only (leave `None`).
pub type HwFreeAdapterResources = Option<unsafe extern "system" fn(device_extension: *mut c_void)>;

/// `PHW_PROCESS_SERVICE_REQUEST`: virtual miniports only (leave `None`).
pub type HwProcessServiceRequest =
    Option<unsafe extern "system" fn(device_extension: *mut c_void, irp: *mut c_void)>;

/// `PHW_COMPLETE_SERVICE_IRP`: virtual miniports only (leave `None`).
pub type HwCompleteServiceIrp = Option<unsafe extern "system" fn(device_extension: *mut c_void)>;

/// `PHW_INITIALIZE_TRACING`: WPP tracing setup hook (optional).
pub type HwInitializeTracing =
    Option<unsafe extern "system" fn(argument1: *mut c_void, argument2: *mut c_void)>;

/// `PHW_CLEANUP_TRACING`: WPP tracing teardown hook (optional).
pub type HwCleanupTracing = Option<unsafe extern "system" fn(argument1: *mut c_void)>;

/// `PHW_TRACING_ENABLED`: WPP tracing state hook (optional).
pub type HwTracingEnabled =
    Option<unsafe extern "system" fn(hw_device_extension: *mut c_void, enable_tracing: Boolean)>;

/// `PSTOR_SYNCHRONIZED_ACCESS`: the routine `StorPortSynchronizeAccess` runs with the interrupt
/// lock held.
pub type StorSynchronizedAccess = Option<
    unsafe extern "system" fn(hw_device_extension: *mut c_void, context: *mut c_void) -> Boolean,
>;
