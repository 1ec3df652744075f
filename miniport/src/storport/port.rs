//! Safe wrappers over the StorPort routines the miniport calls: one `unsafe` call each, with
//! the contract it relies on written down once, here.
//!
//! Every wrapper takes the [`DeviceExtension`] StorPort gave us. The WDK's inline helpers
//! (StorPortAcquireMSISpinLock, StorPortIssueDpc, ...) are spelled out as the variadic
//! StorPortNotification / StorPortExtendedFunction calls they are in storport.h.

use core::ffi::{CStr, c_void};
use core::ptr::{self, NonNull};

use crate::storport::functions::{
    StorPortAllocateRegistryBuffer, StorPortBusy, StorPortDebugPrint, StorPortExtendedFunction,
    StorPortFreeRegistryBuffer, StorPortGetBusData, StorPortGetDeviceBase,
    StorPortGetPhysicalAddress, StorPortGetScatterGatherList, StorPortGetUncachedExtension,
    StorPortNotification, StorPortQuerySystemTime, StorPortRegistryRead,
};
use crate::storport::srb::Srb;
use crate::storport::{
    AcquireSpinLock, Boolean, BusChangeDetected, EnablePassiveInitialization,
    ExtFunctionAcquireMSISpinLock, ExtFunctionGetCurrentProcessorNumber,
    ExtFunctionGetMessageInterruptInformation, ExtFunctionGetStartIoPerformanceParameters,
    ExtFunctionInitializePerformanceOptimizations, ExtFunctionRegistryReadAdapterKey,
    ExtFunctionRegistryWriteAdapterKey, ExtFunctionReleaseMSISpinLock, FALSE, HwDpcRoutine,
    HwPassiveInitializeRoutine, HwTimer, InitializeDpc, InterruptLock, IssueDpc,
    MessageInterruptInformation, PCIBus, PCIConfiguration, PerfConfigurationData,
    PortConfigurationInformation, ProcessorNumber, REG_BINARY, REG_DWORD, ReleaseSpinLock,
    RequestComplete, RequestTimerCall, ResetDetected, STOR_STATUS_NOT_IMPLEMENTED,
    STOR_STATUS_SUCCESS, ScsiRequestBlock, StartIoLock, StartioPerformanceParameters,
    StateChangeDetectedCall, StorAddrBtl8, StorDpc, StorLockHandle, StorPhysicalAddress,
    StorScatterGatherElement, StorScatterGatherList, TRUE,
};

/// The miniport routines bring-up hands StorPort after find-adapter registered the first ones
/// (the message interrupt, passive initialisation, the queue DPCs, the timer and the
/// state-change callback). Built once, by the trampoline module, so no layer above it names a
/// trampoline.
#[derive(Clone, Copy, Debug)]
pub struct Callbacks {
    /// HwMSInterruptRoutine, set in ConfigInfo by find-adapter.
    pub message_interrupt: crate::storport::HwMessageSignaledInterruptRoutine,
    /// HwPassiveInitializeRoutine, enabled by HwInitialize.
    pub passive_initialize: HwPassiveInitializeRoutine,
    /// The per-queue completion DPC routine.
    pub queue_dpc: HwDpcRoutine,
    /// The adapter's one HwTimer routine.
    pub timer: HwTimer,
    /// HwStorStateChange, the callback of a unit's state-change notification.
    pub state_change: crate::storport::HwStateChange,
}

/// The device extension pointer StorPort passes to every HW routine: the identity of this
/// adapter in every StorPort call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceExtension(NonNull<c_void>);

impl DeviceExtension {
    /// Wraps the pointer StorPort passed to a HW routine.
    #[must_use]
    pub fn new(raw: *mut c_void) -> Option<Self> {
        NonNull::new(raw).map(Self)
    }

    /// The raw pointer, for StorPort calls.
    #[must_use]
    pub const fn raw(self) -> *mut c_void {
        self.0.as_ptr()
    }

    /// Reads `buffer.len()` bytes of PCI configuration space; returns the bytes read.
    #[must_use]
    pub fn read_pci_config(self, bus: u32, slot: u32, buffer: &mut [u8]) -> usize {
        let len = u32::try_from(buffer.len()).unwrap_or(u32::MAX);
        // SAFETY: StorPortGetBusData writes at most `len` bytes into `buffer`, which is valid
        // for that many; it is callable from HwFindAdapter (PASSIVE_LEVEL).
        let read = unsafe {
            StorPortGetBusData(
                self.raw(),
                PCIConfiguration,
                bus,
                slot,
                buffer.as_mut_ptr().cast(),
                len,
            )
        };
        (read as usize).min(buffer.len())
    }

    /// Maps `len` bytes of a BAR at bus address `start`; `None` if StorPort refuses.
    #[must_use]
    pub fn map_device_base(
        self,
        bus: u32,
        start: u64,
        len: u32,
        io_space: bool,
    ) -> Option<NonNull<u8>> {
        // SAFETY: plain call from HwFindAdapter with the range StorPort gave us in
        // AccessRanges; StorPort returns null on failure, checked below.
        let base = unsafe {
            StorPortGetDeviceBase(
                self.raw(),
                PCIBus,
                bus,
                StorPortPhysical::from(start).0,
                len,
                Boolean::from(io_space),
            )
        };
        NonNull::new(base.cast::<u8>())
    }

    /// The uncached extension of `len` bytes (callable once, from HwFindAdapter).
    #[must_use]
    pub fn uncached_extension(
        self,
        config: &mut PortConfigurationInformation,
        len: u32,
    ) -> Option<NonNull<u8>> {
        // SAFETY: called from HwFindAdapter with the ConfigInfo StorPort passed (exclusive
        // reference); StorPort returns null when it cannot allocate.
        let memory =
            unsafe { StorPortGetUncachedExtension(self.raw(), ptr::from_mut(config), len) };
        NonNull::new(memory.cast::<u8>())
    }

    /// The bus address of `address` and the bytes physically contiguous from it. `srb` is the
    /// request whose memory (data buffer, sense buffer or SRB extension) is translated, or
    /// `None` for the uncached extension. Under DMA remapping StorPort finds the logical
    /// address of an SRB extension through its SRB only: with `None` it answers 0 (see
    /// `io::prepare`).
    #[must_use]
    pub fn physical_address(self, srb: Option<&Srb>, address: usize) -> (u64, u32) {
        let mut length = 0u32;
        let srb = srb.map_or(ptr::null_mut(), |srb| srb.raw().as_ptr());
        // SAFETY: StorPortGetPhysicalAddress only translates `address` (memory StorPort
        // allocated for this adapter: uncached extension, SRB extension or the SRB's own
        // buffers) and writes `length`, a valid local.
        let physical = unsafe {
            StorPortGetPhysicalAddress(self.raw(), srb, address as *mut c_void, &raw mut length)
        };
        (physical.as_u64(), length)
    }

    /// The scatter/gather elements of `srb`'s data buffer; `None` when it has no list or the
    /// list has more than `max` elements.
    #[must_use]
    pub fn scatter_gather_elements(
        self,
        srb: &Srb,
        max: u32,
    ) -> Option<&[StorScatterGatherElement]> {
        // SAFETY: `srb` is an SRB StorPort handed us and not yet completed; StorPort returns
        // its list (or null when it has no data).
        let list =
            NonNull::new(unsafe { StorPortGetScatterGatherList(self.raw(), srb.raw().as_ptr()) })?;
        // SAFETY: StorPort's list for this SRB stays valid until the SRB is completed (the
        // returned slice borrows the view); its header is read by value.
        let elements = unsafe { list.as_ref() }.number_of_elements;
        if elements > max {
            return None;
        }
        #[expect(
            clippy::cast_ptr_alignment,
            reason = "the element array follows the 8-aligned header at its field offset"
        )]
        let first = list
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(core::mem::offset_of!(StorScatterGatherList, list))
            .cast::<StorScatterGatherElement>();
        // SAFETY: `number_of_elements` elements follow the header at `list` (StorPort's
        // layout), valid until the SRB is completed; the count was bounded above.
        Some(unsafe { core::slice::from_raw_parts(first, elements as usize) })
    }

    /// Completes `srb` back to StorPort. Consumes the view: it is completed exactly once.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "consuming the view is the point: the SRB cannot be completed twice"
    )]
    pub fn complete_request(self, srb: Srb) {
        let raw: *mut ScsiRequestBlock = srb.raw().as_ptr();
        // SAFETY: RequestComplete takes the SRB pointer as its one variadic argument; the SRB
        // is ours (not completed before, since `Srb` is consumed here) and its status is set.
        unsafe { StorPortNotification(RequestComplete, self.raw(), raw) };
    }

    /// StorPortBusy: StorPort sends no request until `requests` of those the adapter holds
    /// complete (a full ring).
    pub fn busy(self, requests: u32) {
        // SAFETY: StorPortBusy takes the device extension and a count; any IRQL up to
        // DISPATCH_LEVEL, which StartIo runs at.
        let _ = unsafe { StorPortBusy(self.raw(), requests) };
    }

    /// Tells StorPort the bus was reset (after HwResetBus or a device reset), so it resumes
    /// the queues it holds.
    pub fn reset_detected(self) {
        // SAFETY: ResetDetected takes no variadic arguments.
        unsafe { StorPortNotification(ResetDetected, self.raw()) };
    }

    /// Asks StorPort to rescan the bus (path 0): units that appeared are enumerated, units that
    /// no longer answer are removed. StorPort queues the rescan, so any IRQL up to DIRQL will do
    /// (the event queue calls it from its ISR).
    pub fn bus_change_detected(self) {
        // SAFETY: BusChangeDetected takes (UCHAR PathId), promoted to a 32-bit int.
        unsafe { StorPortNotification(BusChangeDetected, self.raw(), 0u32) };
    }

    /// StorPortStateChangeDetected: tells StorPort that `entity` (`STATE_CHANGE_*`) at
    /// `address` changed, so it re-enumerates it; StorPort calls `callback(context)` when done.
    /// Returns the `STOR_STATUS_*` (BUSY while a previous notification is being processed).
    ///
    /// # Safety
    /// `address` stays valid and unchanged until StorPort calls `callback` (StorPort reads it
    /// until then); `callback` is a static function that accepts `context`.
    #[must_use]
    pub unsafe fn state_change_detected(
        self,
        entity: u32,
        address: NonNull<StorAddrBtl8>,
        callback: crate::storport::HwStateChange,
        context: *mut c_void,
    ) -> u32 {
        let mut status = STOR_STATUS_NOT_IMPLEMENTED;
        let callback = callback.map_or(ptr::null_mut(), |f| f as *mut c_void);
        // SAFETY: StateChangeDetectedCall takes (ULONG ChangedEntity, PSTOR_ADDRESS, ULONG
        // Attributes, PHW_STATE_CHANGE, PVOID Context, PULONG Status), as storport.h's inline
        // StorPortStateChangeDetected passes them; the address outlives the notification (the
        // caller's contract) and the status is a valid local.
        unsafe {
            StorPortNotification(
                StateChangeDetectedCall,
                self.raw(),
                entity,
                address.as_ptr(),
                0u32,
                callback,
                context,
                &raw mut status,
            );
        };
        status
    }

    /// Asks StorPort to call `routine` at PASSIVE_LEVEL after HwInitialize.
    #[must_use]
    pub fn enable_passive_initialization(self, routine: HwPassiveInitializeRoutine) -> bool {
        let mut enabled: i32 = 0;
        let routine = routine.map_or(ptr::null_mut(), |f| f as *mut c_void);
        // SAFETY: EnablePassiveInitialization takes (routine, PBOOLEAN result); both are valid
        // for the call (the routine is a static function).
        unsafe {
            StorPortNotification(
                EnablePassiveInitialization,
                self.raw(),
                routine,
                &raw mut enabled,
            );
        };
        enabled != 0
    }

    /// Asks StorPort to call `routine` (with the StartIo lock, at DISPATCH_LEVEL) once, after
    /// `microseconds`; a new request replaces a pending one.
    pub fn request_timer(self, routine: HwTimer, microseconds: u32) {
        let routine = routine.map_or(ptr::null_mut(), |f| f as *mut c_void);
        // SAFETY: RequestTimerCall takes (PHW_TIMER, ULONG microseconds); the routine is a
        // static function.
        unsafe { StorPortNotification(RequestTimerCall, self.raw(), routine, microseconds) };
    }

    /// The system time in 100 ns units (StorPortQuerySystemTime). The miniport's deadlines
    /// measure intervals with it; callers treat a clock that went backwards as no time passed.
    #[must_use]
    pub fn system_time(self) -> u64 {
        let mut time: i64 = 0;
        // SAFETY: StorPortQuerySystemTime writes one LARGE_INTEGER to a valid local; callable
        // at any IRQL.
        unsafe { StorPortQuerySystemTime(&raw mut time) };
        time.cast_unsigned()
    }

    /// Initialises `dpc` to run `routine` (HwPassiveInitialize context).
    pub fn initialize_dpc(self, dpc: NonNull<StorDpc>, routine: HwDpcRoutine) {
        let routine = routine.map_or(ptr::null_mut(), |f| f as *mut c_void);
        // SAFETY: InitializeDpc takes (PSTOR_DPC, PHW_DPC_ROUTINE); the DPC object lives in the
        // device extension, at a fixed address for the adapter's life.
        unsafe { StorPortNotification(InitializeDpc, self.raw(), dpc.as_ptr(), routine) };
    }

    /// Queues `dpc` with `argument` as its first system argument; false if already queued.
    #[must_use]
    pub fn issue_dpc(self, dpc: NonNull<StorDpc>, argument: usize) -> bool {
        let mut queued: i32 = 0;
        // SAFETY: IssueDpc takes (PSTOR_DPC, SystemArgument1, SystemArgument2, PBOOLEAN); the
        // DPC was initialised in PassiveInitialize and the result is a valid local.
        unsafe {
            StorPortNotification(
                IssueDpc,
                self.raw(),
                dpc.as_ptr(),
                argument as *mut c_void,
                ptr::null_mut::<c_void>(),
                &raw mut queued,
            );
        };
        queued != 0
    }

    /// Acquires StorPort's interrupt lock (line-interrupt mode), filling `handle`.
    ///
    /// # Safety
    /// `handle` is valid for writes, stays at its address until the matching release, and is
    /// used by no one but the lock holder.
    pub unsafe fn acquire_interrupt_lock(self, handle: *mut StorLockHandle) {
        // SAFETY: AcquireSpinLock takes (STOR_SPINLOCK, LockContext, PSTOR_LOCK_HANDLE); the
        // handle lives in the adapter at a fixed address and only the lock holder uses it.
        unsafe {
            StorPortNotification(
                AcquireSpinLock,
                self.raw(),
                InterruptLock,
                ptr::null_mut::<c_void>(),
                handle,
            );
        };
    }

    /// Acquires StorPort's StartIo lock, filling `handle`.
    ///
    /// # Safety
    /// As for [`Self::acquire_interrupt_lock`]; the caller holds no StorPort lock (the StartIo
    /// lock is not reentrant).
    pub unsafe fn acquire_start_io_lock(self, handle: *mut StorLockHandle) {
        // SAFETY: AcquireSpinLock takes (STOR_SPINLOCK, LockContext, PSTOR_LOCK_HANDLE); the
        // handle stays at its address until the release and only the lock holder uses it.
        unsafe {
            StorPortNotification(
                AcquireSpinLock,
                self.raw(),
                StartIoLock,
                ptr::null_mut::<c_void>(),
                handle,
            );
        };
    }

    /// Releases the lock taken by [`Self::acquire_start_io_lock`] with the same `handle`.
    ///
    /// # Safety
    /// The caller holds the lock, acquired with this `handle`.
    pub unsafe fn release_start_io_lock(self, handle: *mut StorLockHandle) {
        // SAFETY: ReleaseSpinLock takes (PSTOR_LOCK_HANDLE) filled by the matching acquire.
        unsafe { StorPortNotification(ReleaseSpinLock, self.raw(), handle) };
    }

    /// Releases the lock taken by [`Self::acquire_interrupt_lock`] with the same `handle`.
    ///
    /// # Safety
    /// The caller holds the lock, acquired with this `handle`.
    pub unsafe fn release_interrupt_lock(self, handle: *mut StorLockHandle) {
        // SAFETY: ReleaseSpinLock takes (PSTOR_LOCK_HANDLE) filled by the matching acquire.
        unsafe { StorPortNotification(ReleaseSpinLock, self.raw(), handle) };
    }

    /// Acquires the spin lock StorPort holds while running the ISR for `message`; returns the
    /// IRQL to restore.
    #[must_use]
    pub fn acquire_msi_lock(self, message: u32) -> u32 {
        let mut old_irql = 0u32;
        // SAFETY: ExtFunctionAcquireMSISpinLock takes (ULONG MessageId, PULONG OldIrql).
        unsafe {
            StorPortExtendedFunction(
                ExtFunctionAcquireMSISpinLock,
                self.raw(),
                message,
                &raw mut old_irql,
            );
        };
        old_irql
    }

    /// Releases the lock taken by [`Self::acquire_msi_lock`].
    pub fn release_msi_lock(self, message: u32, old_irql: u32) {
        // SAFETY: ExtFunctionReleaseMSISpinLock takes (ULONG MessageId, ULONG OldIrql).
        unsafe {
            StorPortExtendedFunction(ExtFunctionReleaseMSISpinLock, self.raw(), message, old_irql);
        };
    }

    /// The MSI/MSI-X message `message` StorPort connected, if it exists.
    #[must_use]
    pub fn msi_info(self, message: u32) -> Option<MessageInterruptInformation> {
        let mut info = MessageInterruptInformation::default();
        // SAFETY: ExtFunctionGetMessageInterruptInformation takes (ULONG MessageId,
        // PMESSAGE_INTERRUPT_INFORMATION); `info` is a valid local.
        let status = unsafe {
            StorPortExtendedFunction(
                ExtFunctionGetMessageInterruptInformation,
                self.raw(),
                message,
                &raw mut info,
            )
        };
        (status == STOR_STATUS_SUCCESS).then_some(info)
    }

    /// The processor this code runs on, as a flat index (group * 64 + number).
    #[must_use]
    pub fn current_processor(self) -> u32 {
        let mut number = ProcessorNumber::default();
        // SAFETY: ExtFunctionGetCurrentProcessorNumber takes (PPROCESSOR_NUMBER).
        let status = unsafe {
            StorPortExtendedFunction(
                ExtFunctionGetCurrentProcessorNumber,
                self.raw(),
                &raw mut number,
            )
        };
        if status == STOR_STATUS_SUCCESS {
            u32::from(number.group) * 64 + u32::from(number.number)
        } else {
            0
        }
    }

    /// StorPortGetStartIoPerfParams: the MSI-X message StorPort would have `srb` complete on
    /// (the one targeting the current processor, within the redirection range), `None` if
    /// StorPort does not say.
    #[must_use]
    pub fn start_io_message(self, srb: &Srb) -> Option<u32> {
        let mut params = StartioPerformanceParameters {
            size: size_of::<StartioPerformanceParameters>() as u32,
            ..StartioPerformanceParameters::default()
        };
        // SAFETY: ExtFunctionGetStartIoPerformanceParameters takes (PSCSI_REQUEST_BLOCK,
        // PSTARTIO_PERFORMANCE_PARAMETERS); the SRB is one StorPort handed us and has not
        // completed, and `params` is ours with its Size set.
        let status = unsafe {
            StorPortExtendedFunction(
                ExtFunctionGetStartIoPerformanceParameters,
                self.raw(),
                srb.raw().as_ptr(),
                &raw mut params,
            )
        };
        (status == STOR_STATUS_SUCCESS).then_some(params.message_number)
    }

    /// StorPortInitializePerfOpts: with `query`, fills `data` with what StorPort supports;
    /// otherwise applies it. True on success.
    pub fn perf_opts(self, query: bool, data: &mut PerfConfigurationData) -> bool {
        let query: Boolean = if query { TRUE } else { FALSE };
        // SAFETY: ExtFunctionInitializePerformanceOptimizations takes (BOOLEAN Query,
        // PPERF_CONFIGURATION_DATA); `data` is an exclusive reference for the call.
        let status = unsafe {
            StorPortExtendedFunction(
                ExtFunctionInitializePerformanceOptimizations,
                self.raw(),
                u32::from(query),
                ptr::from_mut(data),
            )
        };
        status == STOR_STATUS_SUCCESS
    }
}

/// A bus address as StorPort passes it.
struct StorPortPhysical(StorPhysicalAddress);

impl From<u64> for StorPortPhysical {
    fn from(value: u64) -> Self {
        Self(StorPhysicalAddress::from_u64(value))
    }
}

/// The device's hardware key (`Enum\<instance>\Device Parameters`) through
/// StorPortRegistryRead/WriteAdapterKey, which storport.h spells as StorPortExtendedFunction
/// calls. PASSIVE_LEVEL only (HwFindAdapter).
pub struct StorPortAdapterKey {
    extension: DeviceExtension,
}

impl StorPortAdapterKey {
    /// The hardware key of `extension`'s adapter.
    #[must_use]
    pub const fn new(extension: DeviceExtension) -> Self {
        Self { extension }
    }
}

impl crate::identity::AdapterKey for StorPortAdapterKey {
    fn read_binary8(&mut self, name: &'static CStr) -> Option<[u8; 8]> {
        let mut value = [0u8; 8];
        let mut data: *mut c_void = value.as_mut_ptr().cast();
        let mut length: u32 = 8;
        // SAFETY: ExtFunctionRegistryReadAdapterKey takes (PUCHAR SubKeyName (NULL: the key
        // itself), PUCHAR ValueName, ULONG ValueType, PVOID *ValueData, PULONG
        // ValueDataLength): `*ValueData` points to our 8-byte buffer and `*ValueDataLength` is
        // its size; StorPort writes at most that many bytes and the size it wrote.
        let status = unsafe {
            StorPortExtendedFunction(
                ExtFunctionRegistryReadAdapterKey,
                self.extension.raw(),
                ptr::null_mut::<u8>(),
                name.as_ptr(),
                REG_BINARY,
                &raw mut data,
                &raw mut length,
            )
        };
        (status == STOR_STATUS_SUCCESS && length == 8).then_some(value)
    }

    fn write_binary8(&mut self, name: &'static CStr, value: &[u8; 8]) -> bool {
        // SAFETY: ExtFunctionRegistryWriteAdapterKey takes (PUCHAR SubKeyName (NULL), PUCHAR
        // ValueName, ULONG ValueType, PVOID ValueData, ULONG ValueDataLength); StorPort only
        // reads the 8 bytes of `value`.
        let status = unsafe {
            StorPortExtendedFunction(
                ExtFunctionRegistryWriteAdapterKey,
                self.extension.raw(),
                ptr::null_mut::<u8>(),
                name.as_ptr(),
                REG_BINARY,
                value.as_ptr(),
                8u32,
            )
        };
        status == STOR_STATUS_SUCCESS
    }
}

/// Reads `Parameters\Device` DWORDs through StorPort's one registry buffer, which it allocates
/// on the first read and frees when dropped. PASSIVE_LEVEL only (HwFindAdapter).
pub struct StorPortRegistry {
    extension: DeviceExtension,
    buffer: Option<NonNull<u8>>,
}

impl StorPortRegistry {
    /// Bytes of the registry buffer: one DWORD.
    const BUFFER_LEN: u32 = 4;

    /// A reader for `extension`'s adapter (nothing is allocated yet).
    #[must_use]
    pub const fn new(extension: DeviceExtension) -> Self {
        Self {
            extension,
            buffer: None,
        }
    }

    fn buffer(&mut self) -> Option<NonNull<u8>> {
        if self.buffer.is_none() {
            let mut length = Self::BUFFER_LEN;
            // SAFETY: StorPortAllocateRegistryBuffer reads and updates `length` and returns
            // null or a buffer of `length` bytes owned by us until freed.
            let buffer =
                unsafe { StorPortAllocateRegistryBuffer(self.extension.raw(), &raw mut length) };
            // A buffer smaller than asked cannot hold a DWORD; it is freed on drop unused.
            self.buffer = NonNull::new(buffer);
            if length < Self::BUFFER_LEN {
                return None;
            }
        }
        self.buffer
    }
}

impl crate::registry::RegistrySource for StorPortRegistry {
    fn read_dword(&mut self, name: &'static CStr) -> Option<u32> {
        let buffer = self.buffer()?;
        let mut length = Self::BUFFER_LEN;
        // SAFETY: `name` is NUL-terminated; `buffer` came from StorPortAllocateRegistryBuffer
        // with at least BUFFER_LEN bytes (checked in `buffer`), and StorPort writes at most
        // `length` bytes into it.
        let found = unsafe {
            StorPortRegistryRead(
                self.extension.raw(),
                name.as_ptr().cast(),
                1,
                REG_DWORD,
                buffer.as_ptr(),
                &raw mut length,
            )
        };
        if found == FALSE || length != Self::BUFFER_LEN {
            return None;
        }
        let mut bytes = [0u8; 4];
        // SAFETY: StorPort wrote `length` (== 4) bytes at `buffer`; a byte copy needs no
        // alignment.
        unsafe { ptr::copy_nonoverlapping(buffer.as_ptr(), bytes.as_mut_ptr(), bytes.len()) };
        Some(u32::from_le_bytes(bytes))
    }
}

impl Drop for StorPortRegistry {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            // SAFETY: the buffer came from StorPortAllocateRegistryBuffer for this adapter and
            // is freed once.
            unsafe { StorPortFreeRegistryBuffer(self.extension.raw(), buffer.as_ptr()) };
        }
    }
}

/// Prints `message` and three values in hex through StorPortDebugPrint at `level` (a DPFLTR
/// level). The format is fixed here, so no caller can pass a mismatched one.
pub fn debug_print(level: u32, message: &CStr, values: [u64; 3]) {
    // SAFETY: the format is NUL-terminated with one `%s` (a NUL-terminated `message`) and three
    // `%llx` (u64 each), matching the arguments passed.
    unsafe {
        StorPortDebugPrint(
            level,
            c"rvscsi: %s %llx %llx %llx\n".as_ptr(),
            message.as_ptr(),
            values[0],
            values[1],
            values[2],
        );
    }
}
