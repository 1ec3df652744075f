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
#include <string.h>

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
    ExtFunctionGetStartIoPerformanceParameters = 15,
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
uint32_t rvscsi_sim_get_start_io_perf_params(void *ext, void *srb, void *params);
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

/*
 * The decoding of each variadic routine, written once and expanded for both calling
 * conventions: System V (the linked miniport) and Windows x64 (a loaded rvscsi.sys, whose
 * caller passes every variadic argument in an 8-byte slot, read with __builtin_ms_va_list).
 * ARGS is an lvalue of the va_list type of the flavour; va_arg (__builtin_va_arg) reads both.
 */
#define DECODE_NOTIFICATION(ARGS, notification, ext)                                         \
    switch (notification) {                                                                    \
    case RequestComplete: {                                                                    \
        void *srb = va_arg(ARGS, void *);                                                      \
        rvscsi_sim_request_complete(ext, srb);                                                 \
        break;                                                                                 \
    }                                                                                          \
    case NextRequest:                                                                          \
        rvscsi_sim_next_request(ext);                                                          \
        break;                                                                                 \
    case NextLuRequest: {                                                                      \
        int path = va_arg(ARGS, int);                                                          \
        int target = va_arg(ARGS, int);                                                        \
        int lun = va_arg(ARGS, int);                                                           \
        rvscsi_sim_next_lu_request(ext, (uint8_t)path, (uint8_t)target, (uint8_t)lun);         \
        break;                                                                                 \
    }                                                                                          \
    case ResetDetected:                                                                        \
        rvscsi_sim_reset_detected(ext);                                                        \
        break;                                                                                 \
    case RequestTimerCall: {                                                                   \
        void *routine = va_arg(ARGS, void *);                                                  \
        uint32_t microseconds = va_arg(ARGS, uint32_t);                                        \
        rvscsi_sim_request_timer_call(ext, routine, microseconds);                             \
        break;                                                                                 \
    }                                                                                          \
    case BusChangeDetected: {                                                                  \
        int path = va_arg(ARGS, int);                                                          \
        rvscsi_sim_bus_change_detected(ext, (uint8_t)path);                                    \
        break;                                                                                 \
    }                                                                                          \
    case QueryTickCount: {                                                                     \
        int64_t *count = va_arg(ARGS, int64_t *);                                              \
        rvscsi_sim_query_tick_count(ext, count);                                               \
        break;                                                                                 \
    }                                                                                          \
    case EnablePassiveInitialization: {                                                        \
        void *routine = va_arg(ARGS, void *);                                                  \
        int32_t *result = va_arg(ARGS, int32_t *);                                             \
        rvscsi_sim_enable_passive_initialization(ext, routine, result);                        \
        break;                                                                                 \
    }                                                                                          \
    case InitializeDpc: {                                                                      \
        void *dpc = va_arg(ARGS, void *);                                                      \
        void *routine = va_arg(ARGS, void *);                                                  \
        rvscsi_sim_initialize_dpc(ext, dpc, routine);                                          \
        break;                                                                                 \
    }                                                                                          \
    case IssueDpc: {                                                                           \
        void *dpc = va_arg(ARGS, void *);                                                      \
        void *argument1 = va_arg(ARGS, void *);                                                \
        void *argument2 = va_arg(ARGS, void *);                                                \
        int32_t *result = va_arg(ARGS, int32_t *);                                             \
        rvscsi_sim_issue_dpc(ext, dpc, argument1, argument2, result);                          \
        break;                                                                                 \
    }                                                                                          \
    case AcquireSpinLock: {                                                                    \
        uint32_t lock = va_arg(ARGS, uint32_t);                                                \
        void *context = va_arg(ARGS, void *);                                                  \
        void *handle = va_arg(ARGS, void *);                                                   \
        rvscsi_sim_acquire_spin_lock(ext, lock, context, handle);                              \
        break;                                                                                 \
    }                                                                                          \
    case ReleaseSpinLock: {                                                                    \
        void *handle = va_arg(ARGS, void *);                                                   \
        rvscsi_sim_release_spin_lock(ext, handle);                                             \
        break;                                                                                 \
    }                                                                                          \
    case StateChangeDetectedCall: {                                                            \
        /* storport.h's StorPortStateChangeDetected: (ULONG ChangedEntity, PSTOR_ADDRESS       \
         * Address, ULONG Attributes, PHW_STATE_CHANGE, PVOID Context, PULONG Status). */      \
        uint32_t entity = va_arg(ARGS, uint32_t);                                              \
        void *address = va_arg(ARGS, void *);                                                  \
        uint32_t attributes = va_arg(ARGS, uint32_t);                                          \
        void *callback = va_arg(ARGS, void *);                                                 \
        void *context = va_arg(ARGS, void *);                                                  \
        uint32_t *status = va_arg(ARGS, uint32_t *);                                           \
        rvscsi_sim_state_change_detected(ext, entity, address, attributes, callback, context,  \
                                         status);                                              \
        break;                                                                                 \
    }                                                                                          \
    default:                                                                                   \
        rvscsi_sim_notification_unknown(notification, ext);                                    \
        break;                                                                                 \
    }                                                                                          \

#define DECODE_EXTENDED_FUNCTION(ARGS, function, ext, status)                                   \
    switch (function) {                                                                         \
    case ExtFunctionAcquireMSISpinLock: {                                                       \
        uint32_t message = va_arg(ARGS, uint32_t);                                              \
        uint32_t *old_irql = va_arg(ARGS, uint32_t *);                                          \
        status = rvscsi_sim_acquire_msi_spin_lock(ext, message, old_irql);                      \
        break;                                                                                  \
    }                                                                                           \
    case ExtFunctionReleaseMSISpinLock: {                                                       \
        uint32_t message = va_arg(ARGS, uint32_t);                                              \
        uint32_t old_irql = va_arg(ARGS, uint32_t);                                             \
        status = rvscsi_sim_release_msi_spin_lock(ext, message, old_irql);                      \
        break;                                                                                  \
    }                                                                                           \
    case ExtFunctionGetMessageInterruptInformation: {                                           \
        uint32_t message = va_arg(ARGS, uint32_t);                                              \
        void *info = va_arg(ARGS, void *);                                                      \
        status = rvscsi_sim_get_message_interrupt_information(ext, message, info);              \
        break;                                                                                  \
    }                                                                                           \
    case ExtFunctionInitializePerformanceOptimizations: {                                       \
        int query = va_arg(ARGS, int);                                                          \
        void *data = va_arg(ARGS, void *);                                                      \
        status = rvscsi_sim_initialize_perf_opts(ext, (uint8_t)query, data);                    \
        break;                                                                                  \
    }                                                                                           \
    case ExtFunctionGetStartIoPerformanceParameters: {                                          \
        void *srb = va_arg(ARGS, void *);                                                       \
        void *params = va_arg(ARGS, void *);                                                    \
        status = rvscsi_sim_get_start_io_perf_params(ext, srb, params);                         \
        break;                                                                                  \
    }                                                                                           \
    case ExtFunctionGetCurrentProcessorNumber: {                                                \
        void *number = va_arg(ARGS, void *);                                                    \
        status = rvscsi_sim_get_current_processor_number(ext, number);                          \
        break;                                                                                  \
    }                                                                                           \
    case ExtFunctionGetActiveGroupCount: {                                                      \
        uint16_t *count = va_arg(ARGS, uint16_t *);                                             \
        status = rvscsi_sim_get_active_group_count(ext, count);                                 \
        break;                                                                                  \
    }                                                                                           \
    case ExtFunctionGetGroupAffinity: {                                                         \
        int group = va_arg(ARGS, int);                                                          \
        uint64_t *mask = va_arg(ARGS, uint64_t *);                                              \
        status = rvscsi_sim_get_group_affinity(ext, (uint16_t)group, mask);                     \
        break;                                                                                  \
    }                                                                                           \
    case ExtFunctionGetActiveNodeCount: {                                                       \
        uint32_t *count = va_arg(ARGS, uint32_t *);                                             \
        status = rvscsi_sim_get_active_node_count(ext, count);                                  \
        break;                                                                                  \
    }                                                                                           \
    case ExtFunctionGetNodeAffinity: {                                                          \
        uint32_t node = va_arg(ARGS, uint32_t);                                                 \
        void *affinity = va_arg(ARGS, void *);                                                  \
        status = rvscsi_sim_get_node_affinity(ext, node, affinity);                             \
        break;                                                                                  \
    }                                                                                           \
    case ExtFunctionGetHighestNodeNumber: {                                                     \
        uint32_t *number = va_arg(ARGS, uint32_t *);                                            \
        status = rvscsi_sim_get_highest_node_number(ext, number);                               \
        break;                                                                                  \
    }                                                                                           \
    case ExtFunctionRegistryReadAdapterKey: {                                                   \
        const char *subkey = va_arg(ARGS, const char *);                                        \
        const char *name = va_arg(ARGS, const char *);                                          \
        uint32_t type = va_arg(ARGS, uint32_t);                                                 \
        void **data = va_arg(ARGS, void **);                                                    \
        uint32_t *length = va_arg(ARGS, uint32_t *);                                            \
        status = rvscsi_sim_registry_read_adapter_key(ext, subkey, name, type, data, length);   \
        break;                                                                                  \
    }                                                                                           \
    case ExtFunctionRegistryWriteAdapterKey: {                                                  \
        const char *subkey = va_arg(ARGS, const char *);                                        \
        const char *name = va_arg(ARGS, const char *);                                          \
        uint32_t type = va_arg(ARGS, uint32_t);                                                 \
        void *data = va_arg(ARGS, void *);                                                      \
        uint32_t length = va_arg(ARGS, uint32_t);                                               \
        status = rvscsi_sim_registry_write_adapter_key(ext, subkey, name, type, data, length);  \
        break;                                                                                  \
    }                                                                                           \
    default:                                                                                    \
        status = rvscsi_sim_extended_function_unknown(function, ext);                           \
        break;                                                                                  \
    }                                                                                           \

void StorPortNotification(uint32_t notification, void *ext, ...)
{
    va_list args;
    va_start(args, ext);
    DECODE_NOTIFICATION(args, notification, ext)
    va_end(args);
}

uint32_t StorPortExtendedFunction(uint32_t function, void *ext, ...)
{
    uint32_t status;
    va_list args;
    va_start(args, ext);
    DECODE_EXTENDED_FUNCTION(args, function, ext, status)
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

/*
 * The Windows flavours, bound to a loaded rvscsi.sys's imports through the stack-switching
 * thunks of sim/win64.rs (so they run on the simulator's stack, with the image's register
 * arguments and stack argument slots copied there). On x64 they are ms_abi functions reading
 * their arguments with __builtin_ms_va_list; on AArch64, Windows passes integer and pointer
 * variadic arguments exactly as AAPCS64 does (x0-x7, then 8-byte stack slots), so a plain
 * variadic function reads them.
 */
#if defined(__x86_64__)
#define WIN64_ABI __attribute__((ms_abi))
typedef __builtin_ms_va_list win64_va_list;
#define win64_va_start __builtin_ms_va_start
#define win64_va_end __builtin_ms_va_end
#elif defined(__aarch64__)
#define WIN64_ABI
typedef va_list win64_va_list;
#define win64_va_start va_start
#define win64_va_end va_end
#else
#error "the Windows flavours exist for x86-64 and AArch64 hosts only"
#endif

WIN64_ABI void rvscsi_win64_StorPortNotification(uint32_t notification, void *ext, ...)
{
    win64_va_list args;
    win64_va_start(args, ext);
    DECODE_NOTIFICATION(args, notification, ext)
    win64_va_end(args);
}

WIN64_ABI uint32_t rvscsi_win64_StorPortExtendedFunction(uint32_t function, void *ext, ...)
{
    uint32_t status;
    win64_va_list args;
    win64_va_start(args, ext);
    DECODE_EXTENDED_FUNCTION(args, function, ext, status)
    win64_va_end(args);
    return status;
}

/* The size of an integer argument, by its length modifier, as the Windows C runtime reads it:
 * `l` is 32 bits there (LLP64), `ll`, `I64`, `I`, `z`, `j` and `t` are 64. */
enum ms_size { MS_INT, MS_INT64 };

/* Appends one conversion, formatted by snprintf from a spec rebuilt for this process's C
 * library, whose long is 64 bits. */
static size_t format_conversion_ms(char *out, size_t capacity, const char *flags, size_t flags_len,
                                   int width, int precision, enum ms_size size, char conversion,
                                   win64_va_list *args)
{
    char spec[48];
    size_t used = 0;
    int written;
    spec[used++] = '%';
    if (flags_len > 8) {
        flags_len = 8;
    }
    memcpy(spec + used, flags, flags_len);
    used += flags_len;
    if (width >= 0) {
        used += (size_t)snprintf(spec + used, sizeof spec - used, "%d", width);
    }
    if (precision >= 0) {
        used += (size_t)snprintf(spec + used, sizeof spec - used, ".%d", precision);
    }
    switch (conversion) {
    case 'd':
    case 'i':
    case 'u':
    case 'x':
    case 'X':
    case 'o':
        spec[used++] = 'l';
        spec[used++] = 'l';
        spec[used++] = conversion;
        spec[used] = '\0';
        if (size == MS_INT64) {
            long long value = __builtin_va_arg(*args, long long);
            written = snprintf(out, capacity, spec, value);
        } else if (conversion == 'd' || conversion == 'i') {
            long long value = __builtin_va_arg(*args, int);
            written = snprintf(out, capacity, spec, value);
        } else {
            long long value = __builtin_va_arg(*args, unsigned int);
            written = snprintf(out, capacity, spec, value);
        }
        break;
    case 'c': {
        spec[used++] = 'c';
        spec[used] = '\0';
        written = snprintf(out, capacity, spec, __builtin_va_arg(*args, int));
        break;
    }
    case 's': {
        const char *string = __builtin_va_arg(*args, const char *);
        spec[used++] = 's';
        spec[used] = '\0';
        written = snprintf(out, capacity, spec, string != NULL ? string : "(null)");
        break;
    }
    case 'p':
        spec[used++] = 'p';
        spec[used] = '\0';
        written = snprintf(out, capacity, spec, __builtin_va_arg(*args, void *));
        break;
    default:
        /* %n, wide strings and floating point have no place in a kernel debug print. */
        written = snprintf(out, capacity, "<%%%c?>", conversion);
        break;
    }
    if (written < 0) {
        return 0;
    }
    return (size_t)written < capacity ? (size_t)written : capacity - 1;
}

static void debug_print_ms(uint32_t level, const char *format, win64_va_list *args)
{
    const char *f = format;
    char message[512];
    size_t used = 0;
    while (*f != '\0' && used < sizeof message - 1) {
        const char *flags;
        size_t flags_len = 0;
        int width = -1;
        int precision = -1;
        enum ms_size size = MS_INT;
        if (*f != '%') {
            message[used++] = *f++;
            continue;
        }
        f++;
        if (*f == '%') {
            message[used++] = *f++;
            continue;
        }
        flags = f;
        while (*f == '-' || *f == '+' || *f == ' ' || *f == '#' || *f == '0') {
            f++;
            flags_len++;
        }
        if (*f == '*') {
            width = __builtin_va_arg(*args, int);
            f++;
        } else {
            while (*f >= '0' && *f <= '9') {
                width = (width < 0 ? 0 : width) * 10 + (*f++ - '0');
            }
        }
        if (*f == '.') {
            f++;
            precision = 0;
            if (*f == '*') {
                precision = __builtin_va_arg(*args, int);
                f++;
            } else {
                while (*f >= '0' && *f <= '9') {
                    precision = precision * 10 + (*f++ - '0');
                }
            }
        }
        if (f[0] == 'l' && f[1] == 'l') {
            size = MS_INT64;
            f += 2;
        } else if (f[0] == 'I' && f[1] == '6' && f[2] == '4') {
            size = MS_INT64;
            f += 3;
        } else if (f[0] == 'I' && f[1] == '3' && f[2] == '2') {
            f += 3;
        } else if (*f == 'I' || *f == 'z' || *f == 'j' || *f == 't') {
            size = MS_INT64;
            f++;
        } else if (*f == 'l' || *f == 'h') {
            f++;
            if (*f == 'h') {
                f++;
            }
        }
        if (*f == '\0') {
            break;
        }
        used += format_conversion_ms(message + used, sizeof message - used, flags, flags_len,
                                     width, precision, size, *f++, args);
    }
    message[used] = '\0';
    rvscsi_sim_debug_print(level, message, used);
}

WIN64_ABI void rvscsi_win64_StorPortDebugPrint(uint32_t level, const char *format, ...)
{
    win64_va_list args;
    win64_va_start(args, format);
    if (format != NULL) {
        debug_print_ms(level, format, &args);
    }
    win64_va_end(args);
}
