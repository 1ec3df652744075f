/*
 * The StorPort simulator's variadic exports: StorPortNotification, StorPortExtendedFunction and
 * StorPortDebugPrint. Stable Rust cannot define C-variadic functions, so these decode their
 * arguments with va_arg exactly as the WDK's inline wrappers (storport.h) pass them and forward
 * to Rust functions with fixed signatures (sim/exports.rs). Arguments narrower than int (BOOLEAN,
 * UCHAR, USHORT) arrive promoted to int, as C's default argument promotions require.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* SCSI_NOTIFICATION_TYPE */
enum {
    RequestComplete = 0,
    NextRequest = 1,
    NextLuRequest = 2,
    ResetDetected = 3,
    RequestTimerCall = 6,
    BusChangeDetected = 7,
    QueryTickCount = 12,
    EnablePassiveInitialization = 0x1000,
    InitializeDpc = 0x1001,
    IssueDpc = 0x1002,
    AcquireSpinLock = 0x1003,
    ReleaseSpinLock = 0x1004,
    StateChangeDetectedCall = 0x1005
};

/* STORPORT_FUNCTION_CODE */
enum {
    ExtFunctionAcquireMSISpinLock = 11,
    ExtFunctionReleaseMSISpinLock = 12,
    ExtFunctionGetMessageInterruptInformation = 13,
    ExtFunctionInitializePerformanceOptimizations = 14,
    ExtFunctionGetCurrentProcessorNumber = 17,
    ExtFunctionGetActiveGroupCount = 18,
    ExtFunctionGetGroupAffinity = 19,
    ExtFunctionGetActiveNodeCount = 20,
    ExtFunctionGetNodeAffinity = 21,
    ExtFunctionGetHighestNodeNumber = 22,
    ExtFunctionRegistryReadAdapterKey = 62,
    ExtFunctionRegistryWriteAdapterKey = 63
};

void rvscsi_sim_request_complete(void *ext, void *srb);
void rvscsi_sim_next_request(void *ext);
void rvscsi_sim_next_lu_request(void *ext, uint8_t path, uint8_t target, uint8_t lun);
void rvscsi_sim_reset_detected(void *ext);
void rvscsi_sim_bus_change_detected(void *ext, uint8_t path);
void rvscsi_sim_request_timer_call(void *ext, void *routine, uint32_t microseconds);
void rvscsi_sim_query_tick_count(void *ext, int64_t *count);
void rvscsi_sim_enable_passive_initialization(void *ext, void *routine, int32_t *result);
void rvscsi_sim_initialize_dpc(void *ext, void *dpc, void *routine);
void rvscsi_sim_issue_dpc(void *ext, void *dpc, void *argument1, void *argument2, int32_t *result);
void rvscsi_sim_acquire_spin_lock(void *ext, uint32_t lock, void *context, void *handle);
void rvscsi_sim_release_spin_lock(void *ext, void *handle);
void rvscsi_sim_state_change_detected(void *ext, uint32_t entity, void *address,
                                      uint32_t attributes, void *callback, void *context,
                                      uint32_t *status);
void rvscsi_sim_notification_unknown(uint32_t notification, void *ext);

uint32_t rvscsi_sim_acquire_msi_spin_lock(void *ext, uint32_t message, uint32_t *old_irql);
uint32_t rvscsi_sim_release_msi_spin_lock(void *ext, uint32_t message, uint32_t old_irql);
uint32_t rvscsi_sim_get_message_interrupt_information(void *ext, uint32_t message, void *info);
uint32_t rvscsi_sim_initialize_perf_opts(void *ext, uint8_t query, void *data);
uint32_t rvscsi_sim_get_current_processor_number(void *ext, void *number);
uint32_t rvscsi_sim_get_active_group_count(void *ext, uint16_t *count);
uint32_t rvscsi_sim_get_group_affinity(void *ext, uint16_t group, uint64_t *mask);
uint32_t rvscsi_sim_get_active_node_count(void *ext, uint32_t *count);
uint32_t rvscsi_sim_get_node_affinity(void *ext, uint32_t node, void *affinity);
uint32_t rvscsi_sim_get_highest_node_number(void *ext, uint32_t *number);
uint32_t rvscsi_sim_registry_read_adapter_key(void *ext, const char *subkey, const char *name,
                                              uint32_t type, void **data, uint32_t *length);
uint32_t rvscsi_sim_registry_write_adapter_key(void *ext, const char *subkey, const char *name,
                                               uint32_t type, void *data, uint32_t length);
uint32_t rvscsi_sim_extended_function_unknown(uint32_t function, void *ext);

void rvscsi_sim_debug_print(uint32_t level, const char *message, size_t length);

void StorPortNotification(uint32_t notification, void *ext, ...)
{
    va_list args;
    va_start(args, ext);
    switch (notification) {
    case RequestComplete: {
        void *srb = va_arg(args, void *);
        rvscsi_sim_request_complete(ext, srb);
        break;
    }
    case NextRequest:
        rvscsi_sim_next_request(ext);
        break;
    case NextLuRequest: {
        int path = va_arg(args, int);
        int target = va_arg(args, int);
        int lun = va_arg(args, int);
        rvscsi_sim_next_lu_request(ext, (uint8_t)path, (uint8_t)target, (uint8_t)lun);
        break;
    }
    case ResetDetected:
        rvscsi_sim_reset_detected(ext);
        break;
    case RequestTimerCall: {
        void *routine = va_arg(args, void *);
        uint32_t microseconds = va_arg(args, uint32_t);
        rvscsi_sim_request_timer_call(ext, routine, microseconds);
        break;
    }
    case BusChangeDetected: {
        int path = va_arg(args, int);
        rvscsi_sim_bus_change_detected(ext, (uint8_t)path);
        break;
    }
    case QueryTickCount: {
        int64_t *count = va_arg(args, int64_t *);
        rvscsi_sim_query_tick_count(ext, count);
        break;
    }
    case EnablePassiveInitialization: {
        void *routine = va_arg(args, void *);
        int32_t *result = va_arg(args, int32_t *);
        rvscsi_sim_enable_passive_initialization(ext, routine, result);
        break;
    }
    case InitializeDpc: {
        void *dpc = va_arg(args, void *);
        void *routine = va_arg(args, void *);
        rvscsi_sim_initialize_dpc(ext, dpc, routine);
        break;
    }
    case IssueDpc: {
        void *dpc = va_arg(args, void *);
        void *argument1 = va_arg(args, void *);
        void *argument2 = va_arg(args, void *);
        int32_t *result = va_arg(args, int32_t *);
        rvscsi_sim_issue_dpc(ext, dpc, argument1, argument2, result);
        break;
    }
    case AcquireSpinLock: {
        uint32_t lock = va_arg(args, uint32_t);
        void *context = va_arg(args, void *);
        void *handle = va_arg(args, void *);
        rvscsi_sim_acquire_spin_lock(ext, lock, context, handle);
        break;
    }
    case ReleaseSpinLock: {
        void *handle = va_arg(args, void *);
        rvscsi_sim_release_spin_lock(ext, handle);
        break;
    }
    case StateChangeDetectedCall: {
        /* storport.h's StorPortStateChangeDetected: (ULONG ChangedEntity, PSTOR_ADDRESS
         * Address, ULONG Attributes, PHW_STATE_CHANGE, PVOID Context, PULONG Status). */
        uint32_t entity = va_arg(args, uint32_t);
        void *address = va_arg(args, void *);
        uint32_t attributes = va_arg(args, uint32_t);
        void *callback = va_arg(args, void *);
        void *context = va_arg(args, void *);
        uint32_t *status = va_arg(args, uint32_t *);
        rvscsi_sim_state_change_detected(ext, entity, address, attributes, callback, context,
                                         status);
        break;
    }
    default:
        rvscsi_sim_notification_unknown(notification, ext);
        break;
    }
    va_end(args);
}

uint32_t StorPortExtendedFunction(uint32_t function, void *ext, ...)
{
    uint32_t status;
    va_list args;
    va_start(args, ext);
    switch (function) {
    case ExtFunctionAcquireMSISpinLock: {
        uint32_t message = va_arg(args, uint32_t);
        uint32_t *old_irql = va_arg(args, uint32_t *);
        status = rvscsi_sim_acquire_msi_spin_lock(ext, message, old_irql);
        break;
    }
    case ExtFunctionReleaseMSISpinLock: {
        uint32_t message = va_arg(args, uint32_t);
        uint32_t old_irql = va_arg(args, uint32_t);
        status = rvscsi_sim_release_msi_spin_lock(ext, message, old_irql);
        break;
    }
    case ExtFunctionGetMessageInterruptInformation: {
        uint32_t message = va_arg(args, uint32_t);
        void *info = va_arg(args, void *);
        status = rvscsi_sim_get_message_interrupt_information(ext, message, info);
        break;
    }
    case ExtFunctionInitializePerformanceOptimizations: {
        int query = va_arg(args, int);
        void *data = va_arg(args, void *);
        status = rvscsi_sim_initialize_perf_opts(ext, (uint8_t)query, data);
        break;
    }
    case ExtFunctionGetCurrentProcessorNumber: {
        void *number = va_arg(args, void *);
        status = rvscsi_sim_get_current_processor_number(ext, number);
        break;
    }
    case ExtFunctionGetActiveGroupCount: {
        uint16_t *count = va_arg(args, uint16_t *);
        status = rvscsi_sim_get_active_group_count(ext, count);
        break;
    }
    case ExtFunctionGetGroupAffinity: {
        int group = va_arg(args, int);
        uint64_t *mask = va_arg(args, uint64_t *);
        status = rvscsi_sim_get_group_affinity(ext, (uint16_t)group, mask);
        break;
    }
    case ExtFunctionGetActiveNodeCount: {
        uint32_t *count = va_arg(args, uint32_t *);
        status = rvscsi_sim_get_active_node_count(ext, count);
        break;
    }
    case ExtFunctionGetNodeAffinity: {
        uint32_t node = va_arg(args, uint32_t);
        void *affinity = va_arg(args, void *);
        status = rvscsi_sim_get_node_affinity(ext, node, affinity);
        break;
    }
    case ExtFunctionGetHighestNodeNumber: {
        uint32_t *number = va_arg(args, uint32_t *);
        status = rvscsi_sim_get_highest_node_number(ext, number);
        break;
    }
    case ExtFunctionRegistryReadAdapterKey: {
        const char *subkey = va_arg(args, const char *);
        const char *name = va_arg(args, const char *);
        uint32_t type = va_arg(args, uint32_t);
        void **data = va_arg(args, void **);
        uint32_t *length = va_arg(args, uint32_t *);
        status = rvscsi_sim_registry_read_adapter_key(ext, subkey, name, type, data, length);
        break;
    }
    case ExtFunctionRegistryWriteAdapterKey: {
        const char *subkey = va_arg(args, const char *);
        const char *name = va_arg(args, const char *);
        uint32_t type = va_arg(args, uint32_t);
        void *data = va_arg(args, void *);
        uint32_t length = va_arg(args, uint32_t);
        status = rvscsi_sim_registry_write_adapter_key(ext, subkey, name, type, data, length);
        break;
    }
    default:
        status = rvscsi_sim_extended_function_unknown(function, ext);
        break;
    }
    va_end(args);
    return status;
}

void StorPortDebugPrint(uint32_t level, const char *format, ...)
{
    char message[512];
    va_list args;
    int length;
    va_start(args, format);
    length = vsnprintf(message, sizeof message, format, args);
    va_end(args);
    if (length < 0) {
        return;
    }
    if ((size_t)length >= sizeof message) {
        length = (int)(sizeof message - 1);
    }
    rvscsi_sim_debug_print(level, message, (size_t)length);
}
