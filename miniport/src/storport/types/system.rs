//! Processor, performance, interrupt-message, lock and DPC structures.

use super::{Boolean, StorPhysicalAddress};
use core::ffi::c_void;

/// `SCSI_SUPPORTED_CONTROL_TYPE_LIST`: the `ScsiQuerySupportedControlTypes` parameter;
/// `max_control_type` `BOOLEAN`s follow at `supported_type_list`.
#[repr(C)]
#[derive(Debug)]
pub struct ScsiSupportedControlTypeList {
    /// `MaxControlType`: entries in `supported_type_list`.
    pub max_control_type: u32,
    /// `SupportedTypeList[]`: TRUE at each supported `SCSI_ADAPTER_CONTROL_TYPE` index.
    pub supported_type_list: [Boolean; 0],
}

/// `GROUP_AFFINITY`: a processor group and a mask within it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupAffinity {
    /// `Mask` (`KAFFINITY`, pointer-sized).
    pub mask: usize,
    /// `Group`.
    pub group: u16,
    /// `Reserved`.
    pub reserved: [u16; 3],
}

/// `PROCESSOR_NUMBER`: a processor as group and number within the group.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessorNumber {
    /// `Group`.
    pub group: u16,
    /// `Number`.
    pub number: u8,
    /// `Reserved`.
    pub reserved: u8,
}

/// `PERF_CONFIGURATION_DATA`: the in/out parameter of `StorPortInitializePerfOpts`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PerfConfigurationData {
    /// `Version`: `STOR_PERF_VERSION*`.
    pub version: u32,
    /// `Size`: `sizeof(PERF_CONFIGURATION_DATA)`.
    pub size: u32,
    /// `Flags`: `STOR_PERF_*`.
    pub flags: u32,
    /// `ConcurrentChannels`: concurrent HwStorStartIo calls supported.
    pub concurrent_channels: u32,
    /// `FirstRedirectionMessageNumber`.
    pub first_redirection_message_number: u32,
    /// `LastRedirectionMessageNumber`.
    pub last_redirection_message_number: u32,
    /// `DeviceNode`.
    pub device_node: u32,
    /// `Reserved`.
    pub reserved: u32,
    /// `MessageTargets`: an array of one `GROUP_AFFINITY` per message, owned by the miniport.
    pub message_targets: *mut GroupAffinity,
}

/// `STARTIO_PERFORMANCE_PARAMETERS`: the out parameter of `StorPortGetStartIoPerfParams`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartioPerformanceParameters {
    /// `Version`.
    pub version: u32,
    /// `Size`.
    pub size: u32,
    /// `MessageNumber`: the MSI message the request's completion should use.
    pub message_number: u32,
    /// `ChannelNumber`.
    pub channel_number: u32,
}

/// `MESSAGE_INTERRUPT_INFORMATION`: the out parameter of `StorPortGetMSIInfo`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageInterruptInformation {
    /// `MessageId`.
    pub message_id: u32,
    /// `MessageData`.
    pub message_data: u32,
    /// `MessageAddress`.
    pub message_address: StorPhysicalAddress,
    /// `InterruptVector`.
    pub interrupt_vector: u32,
    /// `InterruptLevel`.
    pub interrupt_level: u32,
    /// `InterruptMode`: a `KINTERRUPT_MODE`.
    pub interrupt_mode: u32,
}

/// `KSPIN_LOCK_QUEUE`: one in-stack queued spin lock entry.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KSpinLockQueue {
    /// `Next`.
    pub next: *mut c_void,
    /// `Lock`.
    pub lock: *mut c_void,
}

/// `KLOCK_QUEUE_HANDLE`: the context of an in-stack queued spin lock.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KLockQueueHandle {
    /// `LockQueue`.
    pub lock_queue: KSpinLockQueue,
    /// `OldIrql`: the IRQL to return to on release.
    pub old_irql: u8,
}

/// `STOR_LOCK_HANDLE`: the caller-owned handle `StorPortAcquireSpinLock` fills and
/// `StorPortReleaseSpinLock` consumes. It lives on the caller's stack and must not move
/// between the two calls.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StorLockHandle {
    /// `Lock`: the `STOR_SPINLOCK` held.
    pub lock: u32,
    /// `Context`: StorPort's lock state (a `KLOCK_QUEUE_HANDLE`, or just the old IRQL).
    pub context: KLockQueueHandle,
}

/// `STOR_DPC`: a StorPort DPC object, opaque to the miniport (`StorPortInitializeDpc`
/// initialises it, `StorPortIssueDpc` queues it). WDK layout: a `KDPC`-sized `DPC_BUFFER`
/// (64 bytes on 64-bit Windows) followed by a `ULONG_PTR` lock, 8-aligned. It must stay at a
/// fixed address (normally in the device extension) from initialisation until unload.
#[repr(C, align(8))]
#[derive(Debug)]
pub struct StorDpc {
    /// `Dpc` (`DPC_BUFFER`): the kernel DPC, never touched by the miniport.
    pub dpc: [u8; 64],
    /// `Lock` (`ULONG_PTR`): StorPort's private lock word.
    pub lock: usize,
}
