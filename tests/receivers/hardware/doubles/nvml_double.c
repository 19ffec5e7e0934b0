/*
 * A test double of NVIDIA's libnvidia-ml.so.1: the functions Eagle Eye's NVML source reaches through pynvml, with
 * the symbol names pynvml resolves and the ABI of nvml.h, serving values from a scenario file so that pynvml's real
 * code paths run (its ctypes structures, its error classes, its reference count).
 *
 * Built by the test suite as <tmp>/libnvidia-ml.so.1 with soname libnvidia-ml.so.1, so that pynvml's own
 * dlopen("libnvidia-ml.so.1") finds it once the source has pre-loaded it by path.
 *
 * The scenario file's path is read from $EAGLEEYE_NVML_DOUBLE_SCENARIO at every call, and the file is parsed again
 * whenever its path, inode, size or mtime changes. One directive a line; '#' starts a comment:
 *
 *   count <n>                               GPUs (default: 1 + the highest index named)
 *   driver_version <text>                   nvmlSystemGetDriverVersion
 *   nvml_version <text>                     nvmlSystemGetNVMLVersion
 *   fail <function> <code>                  a node-level function (nvmlInitWithFlags, nvmlDeviceGetCount_v2,
 *                                           nvmlEventSetWait_v2, ...) returns <code>
 *   gpu <i> fail <function|*> <code>        a function returns <code> for GPU i ('*': every function, as a GPU
 *                                           that fell off the bus answers)
 *   gpu <i> hang <function|*> <ms>          a call of the function for GPU i sleeps <ms> first, without holding the
 *                                           double's lock (other GPUs still answer); -1: until the scenario no
 *                                           longer says so (a test releases the call by rewriting the file)
 *   gpu <i> field <id> <value> [type]       nvmlDeviceGetFieldValues entry; type d, ui, ul, ull (default), sll,
 *                                           si or us, as nvmlValueType_t. A field not given answers NOT_SUPPORTED.
 *   gpu <i> field_fail <id> <code>          that nvmlDeviceGetFieldValues entry answers <code>
 *   gpu <i> <key> <text>                    a value; keys: uuid name serial vbios pci_bus_id util_gpu util_mem
 *                                           mem_total mem_used temp temp_slowdown temp_shutdown power_mw
 *                                           power_limit_mw energy_mj clock_sm_mhz clock_mem_mhz clock_reasons
 *                                           pcie_gen pcie_width pcie_tx_kbps pcie_rx_kbps supported_events
 *   event <seq> <i> <type> <data>           queued for nvmlEventSetWait_v2, delivered once per event set in seq
 *                                           order to a set where GPU i registered <type>
 *
 * Numbers may be hex (0x...). When a key or field is given twice, the later line wins. A value the scenario does not give is answered NVML_ERROR_NOT_SUPPORTED, as a GPU
 * without that feature would. Every call before nvmlInitWithFlags answers NVML_ERROR_UNINITIALIZED.
 *
 * For the tests, beside the NVML API: eagleeye_double_calls(function, gpu) counts the calls of a function (gpu -1:
 * on every GPU and node-level; "nvmlDeviceGetFieldValues#<id>" counts the requests of one field), eagleeye_double_reset_calls() zeroes the counts, eagleeye_double_init_count()
 * returns the nvmlInit reference count.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define SCENARIO_ENV "EAGLEEYE_NVML_DOUBLE_SCENARIO"

typedef int nvmlReturn_t;
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_TIMEOUT 10
#define NVML_ERROR_MEMORY 20

#define FIELD_FAILS 99 /* a struct field whose text is the return code of its entry */
#define MAX_GPUS 16
#define MAX_KEYS 40
#define MAX_FIELDS 48
#define MAX_RULES 32
#define MAX_EVENTS 64
#define MAX_CALLS 1024
#define TEXT_LEN 96
#define NAME_LEN 64

typedef struct nvmlDevice_st {
    int index;
} *nvmlDevice_t;

typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef union {
    double dVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    long long sllVal;
    int siVal;
    unsigned short usVal;
} nvmlValue_t;

typedef struct {
    unsigned int fieldId;
    unsigned int scopeId;
    long long timestamp;
    long long latencyUsec;
    unsigned int valueType;
    nvmlReturn_t nvmlReturn;
    nvmlValue_t value;
} nvmlFieldValue_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlEventData_t;

typedef struct nvmlEventSet_st {
    unsigned long long mask[MAX_GPUS];
    unsigned long long last_seq;
} *nvmlEventSet_t;

struct entry {
    char key[NAME_LEN];
    char text[TEXT_LEN];
};

struct field {
    unsigned int id;
    unsigned int type;
    char text[TEXT_LEN];
};

struct rule {
    int gpu; /* -1: node-level */
    char function[NAME_LEN];
    int code;
};

struct hang {
    int gpu;
    char function[NAME_LEN];
    long ms; /* -1: until the rule is gone */
};

struct event {
    unsigned long long seq;
    int gpu;
    unsigned long long type;
    unsigned long long data;
};

struct gpu {
    struct entry entries[MAX_KEYS];
    int n_entries;
    struct field fields[MAX_FIELDS];
    int n_fields;
};

struct scenario {
    int count;
    char driver_version[TEXT_LEN];
    char nvml_version[TEXT_LEN];
    struct gpu gpus[MAX_GPUS];
    struct rule rules[MAX_RULES];
    int n_rules;
    struct hang hangs[MAX_RULES];
    int n_hangs;
    struct event events[MAX_EVENTS];
    int n_events;
};

struct call_count {
    char function[NAME_LEN];
    int gpu;
    unsigned long count;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct scenario scenario;
static struct nvmlDevice_st handles[MAX_GPUS];
static struct call_count calls[MAX_CALLS];
static int n_calls;
static int init_count;
static char loaded_path[4096];
static struct stat loaded_stat;

static const char *VALUE_TYPES[] = {"d", "ui", "ul", "ull", "sll", "si", "us"};

static void add_rule(int gpu, const char *text)
{
    struct rule *r = &scenario.rules[scenario.n_rules];
    if (scenario.n_rules < MAX_RULES && sscanf(text, "%63s %i", r->function, &r->code) == 2) {
        r->gpu = gpu;
        scenario.n_rules++;
    }
}

static void parse_line(char *line)
{
    char word[NAME_LEN], key[NAME_LEN];
    int index, used = 0;
    unsigned long long seq, type, data;
    unsigned int id;
    struct scenario *s = &scenario;

    line[strcspn(line, "#\n")] = '\0';
    if (sscanf(line, "%63s %n", word, &used) != 1)
        return;
    char *rest = line + used;
    if (strcmp(word, "count") == 0) {
        s->count = atoi(rest);
    } else if (strcmp(word, "driver_version") == 0) {
        snprintf(s->driver_version, TEXT_LEN, "%s", rest);
    } else if (strcmp(word, "nvml_version") == 0) {
        snprintf(s->nvml_version, TEXT_LEN, "%s", rest);
    } else if (strcmp(word, "fail") == 0) {
        add_rule(-1, rest);
    } else if (strcmp(word, "event") == 0 && s->n_events < MAX_EVENTS) {
        if (sscanf(rest, "%lli %i %lli %lli", &seq, &index, &type, &data) == 4 && index >= 0 && index < MAX_GPUS)
            s->events[s->n_events++] = (struct event){.seq = seq, .gpu = index, .type = type, .data = data};
    } else if (strcmp(word, "gpu") == 0 && sscanf(rest, "%i %63s %n", &index, key, &used) == 2 && index >= 0 &&
               index < MAX_GPUS) {
        struct gpu *g = &s->gpus[index];
        char *value = rest + used;
        char type_name[8] = "ull";
        if (index >= s->count)
            s->count = index + 1;
        if (strcmp(key, "fail") == 0) {
            add_rule(index, value);
        } else if (strcmp(key, "hang") == 0) {
            struct hang *h = &s->hangs[s->n_hangs];
            if (s->n_hangs < MAX_RULES && sscanf(value, "%63s %li", h->function, &h->ms) == 2) {
                h->gpu = index;
                s->n_hangs++;
            }
        } else if (strcmp(key, "field") == 0 || strcmp(key, "field_fail") == 0) {
            struct field *f = &g->fields[g->n_fields];
            if (g->n_fields < MAX_FIELDS && sscanf(value, "%u %95s %7s", &id, f->text, type_name) >= 2) {
                f->id = id;
                f->type = key[5] == '_' ? FIELD_FAILS : 3;
                for (unsigned int t = 0; f->type != FIELD_FAILS && t < sizeof VALUE_TYPES / sizeof *VALUE_TYPES; t++)
                    if (strcmp(type_name, VALUE_TYPES[t]) == 0)
                        f->type = t;
                g->n_fields++;
            }
        } else if (g->n_entries < MAX_KEYS) {
            value[strcspn(value, "\r")] = '\0';
            while (*value && value[strlen(value) - 1] == ' ')
                value[strlen(value) - 1] = '\0';
            snprintf(g->entries[g->n_entries].key, NAME_LEN, "%s", key);
            snprintf(g->entries[g->n_entries++].text, TEXT_LEN, "%s", value);
        }
    }
}

/* Parse the scenario again when $EAGLEEYE_NVML_DOUBLE_SCENARIO names another file or the file changed. */
static void reload(void)
{
    const char *path = getenv(SCENARIO_ENV);
    struct stat st;
    if (path == NULL || stat(path, &st) != 0) {
        if (loaded_path[0] != '\0')
            memset(&scenario, 0, sizeof scenario);
        loaded_path[0] = '\0';
        return;
    }
    if (strcmp(path, loaded_path) == 0 && st.st_ino == loaded_stat.st_ino && st.st_size == loaded_stat.st_size &&
        st.st_mtim.tv_sec == loaded_stat.st_mtim.tv_sec && st.st_mtim.tv_nsec == loaded_stat.st_mtim.tv_nsec)
        return;
    FILE *file = fopen(path, "r");
    if (file == NULL)
        return;
    memset(&scenario, 0, sizeof scenario);
    char line[512];
    while (fgets(line, sizeof line, file) != NULL)
        parse_line(line);
    fclose(file);
    snprintf(loaded_path, sizeof loaded_path, "%s", path);
    loaded_stat = st;
}

static void count_call(const char *function, int gpu)
{
    for (int i = 0; i < n_calls; i++)
        if (calls[i].gpu == gpu && strcmp(calls[i].function, function) == 0) {
            calls[i].count++;
            return;
        }
    if (n_calls < MAX_CALLS) {
        snprintf(calls[n_calls].function, NAME_LEN, "%s", function);
        calls[n_calls].gpu = gpu;
        calls[n_calls++].count = 1;
    }
}

static int failure(const char *function, int gpu)
{
    for (int i = 0; i < scenario.n_rules; i++) {
        struct rule *r = &scenario.rules[i];
        if (r->gpu == gpu && (strcmp(r->function, function) == 0 || (gpu >= 0 && strcmp(r->function, "*") == 0)))
            return r->code;
    }
    return NVML_SUCCESS;
}

/* The scenario's hang for a call of `function` on GPU `gpu`: milliseconds, -1 (until released) or 0 (none). */
static long hang_for(const char *function, int gpu)
{
    for (int i = 0; gpu >= 0 && i < scenario.n_hangs; i++) {
        struct hang *h = &scenario.hangs[i];
        if (h->gpu == gpu && (strcmp(h->function, function) == 0 || strcmp(h->function, "*") == 0))
            return h->ms;
    }
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Called with the lock held; sleeps as the scenario says with the lock released, so other GPUs still answer. */
static void hang(const char *function, int gpu)
{
    long ms = hang_for(function, gpu);
    if (ms == 0)
        return;
    pthread_mutex_unlock(&lock);
    if (ms > 0)
        sleep_ms(ms);
    while (ms < 0) {
        sleep_ms(10);
        pthread_mutex_lock(&lock);
        reload();
        ms = hang_for(function, gpu);
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_lock(&lock);
    reload();
}

/* Every call starts here, under the lock: count it, reload, hang if told to, check init, then the failure rules. */
static nvmlReturn_t enter(const char *function, nvmlDevice_t device, struct gpu **gpu)
{
    int index = -1;
    if (device != NULL) {
        if (device < handles || device >= handles + MAX_GPUS)
            return NVML_ERROR_INVALID_ARGUMENT;
        index = device->index;
    }
    count_call(function, index);
    reload();
    hang(function, index);
    if (init_count <= 0)
        return NVML_ERROR_UNINITIALIZED;
    if (index >= scenario.count)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (gpu != NULL && index >= 0)
        *gpu = &scenario.gpus[index];
    return failure(function, index);
}

/* The last value the scenario gives for a key wins, so a test can append an override to a whole node. */
static const char *lookup(const struct gpu *g, const char *key)
{
    for (int i = g->n_entries - 1; i >= 0; i--)
        if (strcmp(g->entries[i].key, key) == 0)
            return g->entries[i].text;
    return NULL;
}

static nvmlReturn_t get_number(const char *function, nvmlDevice_t device, const char *key, unsigned long long *out)
{
    struct gpu *g = NULL;
    pthread_mutex_lock(&lock);
    nvmlReturn_t rc = enter(function, device, &g);
    const char *text = rc == NVML_SUCCESS && g != NULL ? lookup(g, key) : NULL;
    if (rc == NVML_SUCCESS)
        rc = text == NULL ? NVML_ERROR_NOT_SUPPORTED : NVML_SUCCESS;
    if (rc == NVML_SUCCESS)
        *out = strtoull(text, NULL, 0);
    pthread_mutex_unlock(&lock);
    return rc;
}

static nvmlReturn_t get_uint(const char *function, nvmlDevice_t device, const char *key, unsigned int *out)
{
    unsigned long long value = 0;
    nvmlReturn_t rc = key == NULL ? NVML_ERROR_INVALID_ARGUMENT : get_number(function, device, key, &value);
    if (rc == NVML_SUCCESS)
        *out = (unsigned int)value;
    return rc;
}

static nvmlReturn_t copy_text(const char *text, char *buffer, unsigned int length)
{
    if (text == NULL || text[0] == '\0')
        return NVML_ERROR_NOT_SUPPORTED;
    if (strlen(text) >= length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(buffer, text, strlen(text) + 1);
    return NVML_SUCCESS;
}

static nvmlReturn_t get_text(const char *function, nvmlDevice_t device, const char *key, char *buffer,
                             unsigned int length)
{
    struct gpu *g = NULL;
    pthread_mutex_lock(&lock);
    nvmlReturn_t rc = enter(function, device, &g);
    if (rc == NVML_SUCCESS)
        rc = copy_text(g != NULL ? lookup(g, key) : NULL, buffer, length);
    pthread_mutex_unlock(&lock);
    return rc;
}

/* -- lifecycle and system ------------------------------------------------------------------------------------- */

nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    (void)flags;
    pthread_mutex_lock(&lock);
    count_call(__func__, -1);
    reload();
    nvmlReturn_t rc = failure(__func__, -1);
    if (rc == NVML_SUCCESS)
        init_count++;
    pthread_mutex_unlock(&lock);
    return rc;
}

nvmlReturn_t nvmlShutdown(void)
{
    pthread_mutex_lock(&lock);
    nvmlReturn_t rc = enter(__func__, NULL, NULL);
    if (rc == NVML_SUCCESS)
        init_count--;
    pthread_mutex_unlock(&lock);
    return rc;
}

const char *nvmlErrorString(nvmlReturn_t result)
{
    switch (result) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 7: return "Insufficient Size";
    case 9: return "Driver Not Loaded";
    case 10: return "Timeout";
    case 13: return "Function Not Found";
    case 15: return "GPU is lost";
    case 16: return "GPU requires restart";
    case 18: return "RM has detected an NVML/RM version mismatch.";
    default: return "Unknown Error";
    }
}

static nvmlReturn_t system_text(const char *function, const char *text, char *buffer, unsigned int length)
{
    pthread_mutex_lock(&lock);
    nvmlReturn_t rc = enter(function, NULL, NULL);
    if (rc == NVML_SUCCESS)
        rc = copy_text(text, buffer, length);
    pthread_mutex_unlock(&lock);
    return rc;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    return system_text(__func__, scenario.driver_version, version, length);
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    return system_text(__func__, scenario.nvml_version, version, length);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
    pthread_mutex_lock(&lock);
    nvmlReturn_t rc = enter(__func__, NULL, NULL);
    if (rc == NVML_SUCCESS)
        *count = (unsigned int)scenario.count;
    pthread_mutex_unlock(&lock);
    return rc;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    if (index >= MAX_GPUS)
        return NVML_ERROR_INVALID_ARGUMENT;
    handles[index].index = (int)index;
    pthread_mutex_lock(&lock);
    nvmlReturn_t rc = enter(__func__, &handles[index], NULL);
    if (rc == NVML_SUCCESS)
        *device = &handles[index];
    pthread_mutex_unlock(&lock);
    return rc;
}

/* -- identity ------------------------------------------------------------------------------------------------- */

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length)
{
    return get_text(__func__, d, "uuid", uuid, length);
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length)
{
    return get_text(__func__, d, "name", name, length);
}

nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t d, char *serial, unsigned int length)
{
    return get_text(__func__, d, "serial", serial, length);
}

nvmlReturn_t nvmlDeviceGetVbiosVersion(nvmlDevice_t d, char *version, unsigned int length)
{
    return get_text(__func__, d, "vbios", version, length);
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci)
{
    char bus_id[32];
    nvmlReturn_t rc = get_text(__func__, d, "pci_bus_id", bus_id, sizeof bus_id);
    if (rc != NVML_SUCCESS)
        return rc;
    memset(pci, 0, sizeof *pci);
    snprintf(pci->busId, sizeof pci->busId, "%s", bus_id);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%.15s", bus_id);
    sscanf(bus_id, "%x:%x:%x", &pci->domain, &pci->bus, &pci->device);
    return NVML_SUCCESS;
}

/* -- telemetry ------------------------------------------------------------------------------------------------ */

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *utilization)
{
    unsigned int gpu = 0, memory = 0;
    nvmlReturn_t rc = get_uint(__func__, d, "util_gpu", &gpu);
    if (rc == NVML_SUCCESS)
        rc = get_uint(__func__, d, "util_mem", &memory);
    if (rc == NVML_SUCCESS)
        *utilization = (nvmlUtilization_t){.gpu = gpu, .memory = memory};
    return rc;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *memory)
{
    unsigned long long total = 0, used = 0;
    nvmlReturn_t rc = get_number(__func__, d, "mem_total", &total);
    if (rc == NVML_SUCCESS)
        rc = get_number(__func__, d, "mem_used", &used);
    if (rc == NVML_SUCCESS)
        *memory = (nvmlMemory_t){.total = total, .free = total - used, .used = used};
    return rc;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *celsius)
{
    return get_uint(__func__, d, sensor == 0 ? "temp" : NULL, celsius);
}

nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t d, int threshold, unsigned int *celsius)
{
    return get_uint(__func__, d, threshold == 0 ? "temp_shutdown" : threshold == 1 ? "temp_slowdown" : NULL, celsius);
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *milliwatts)
{
    return get_uint(__func__, d, "power_mw", milliwatts);
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t d, unsigned int *milliwatts)
{
    return get_uint(__func__, d, "power_limit_mw", milliwatts);
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *millijoules)
{
    return get_number(__func__, d, "energy_mj", millijoules);
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned int *mhz)
{
    return get_uint(__func__, d, type == 1 ? "clock_sm_mhz" : type == 2 ? "clock_mem_mhz" : NULL, mhz);
}

nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t d, unsigned long long *reasons)
{
    return get_number(__func__, d, "clock_reasons", reasons);
}

nvmlReturn_t nvmlDeviceGetCurrPcieLinkGeneration(nvmlDevice_t d, unsigned int *generation)
{
    return get_uint(__func__, d, "pcie_gen", generation);
}

nvmlReturn_t nvmlDeviceGetCurrPcieLinkWidth(nvmlDevice_t d, unsigned int *width)
{
    return get_uint(__func__, d, "pcie_width", width);
}

nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t d, int counter, unsigned int *kilobytes_per_s)
{
    return get_uint(__func__, d, counter == 0 ? "pcie_tx_kbps" : counter == 1 ? "pcie_rx_kbps" : NULL,
                    kilobytes_per_s);
}

static void set_value(nvmlFieldValue_t *entry, const struct field *f)
{
    entry->valueType = f->type;
    switch (f->type) {
    case 0: entry->value.dVal = strtod(f->text, NULL); break;
    case 1: entry->value.uiVal = (unsigned int)strtoul(f->text, NULL, 0); break;
    case 2: entry->value.ulVal = strtoul(f->text, NULL, 0); break;
    case 4: entry->value.sllVal = strtoll(f->text, NULL, 0); break;
    case 5: entry->value.siVal = (int)strtol(f->text, NULL, 0); break;
    case 6: entry->value.usVal = (unsigned short)strtoul(f->text, NULL, 0); break;
    default: entry->value.ullVal = strtoull(f->text, NULL, 0); break;
    }
}

nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t d, int count, nvmlFieldValue_t *values)
{
    struct gpu *g = NULL;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    pthread_mutex_lock(&lock);
    nvmlReturn_t rc = enter(__func__, d, &g);
    for (int i = 0; rc == NVML_SUCCESS && g != NULL && i < count; i++) {
        nvmlFieldValue_t *entry = &values[i];
        char name[NAME_LEN];
        snprintf(name, sizeof name, "%s#%u", __func__, entry->fieldId);
        count_call(name, d->index);
        entry->timestamp = (long long)now.tv_sec * 1000000 + now.tv_nsec / 1000;
        entry->latencyUsec = 0;
        entry->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        for (int f = 0; f < g->n_fields; f++) /* the last line given for the field wins */
            if (g->fields[f].id == entry->fieldId && g->fields[f].type == FIELD_FAILS) {
                entry->nvmlReturn = (nvmlReturn_t)strtol(g->fields[f].text, NULL, 0);
            } else if (g->fields[f].id == entry->fieldId) {
                entry->nvmlReturn = NVML_SUCCESS;
                set_value(entry, &g->fields[f]);
            }
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

/* -- events --------------------------------------------------------------------------------------------------- */

nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set)
{
    pthread_mutex_lock(&lock);
    nvmlReturn_t rc = enter(__func__, NULL, NULL);
    pthread_mutex_unlock(&lock);
    if (rc == NVML_SUCCESS) {
        *set = calloc(1, sizeof **set);
        if (*set == NULL)
            rc = NVML_ERROR_MEMORY;
    }
    return rc;
}

nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set)
{
    pthread_mutex_lock(&lock);
    nvmlReturn_t rc = enter(__func__, NULL, NULL);
    pthread_mutex_unlock(&lock);
    if (rc == NVML_SUCCESS)
        free(set);
    return rc;
}

nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t d, unsigned long long *types)
{
    return get_number(__func__, d, "supported_events", types);
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long types, nvmlEventSet_t set)
{
    unsigned long long supported = 0;
    nvmlReturn_t rc = get_number(__func__, d, "supported_events", &supported);
    if (rc == NVML_SUCCESS && (set == NULL || (types & ~supported) != 0))
        rc = set == NULL ? NVML_ERROR_INVALID_ARGUMENT : NVML_ERROR_NOT_SUPPORTED;
    if (rc == NVML_SUCCESS) {
        pthread_mutex_lock(&lock);
        set->mask[d->index] |= types;
        pthread_mutex_unlock(&lock);
    }
    return rc;
}

/* The next event (lowest seq above the set's last) of a type a GPU registered in this set, or NULL. */
static const struct event *next_event(nvmlEventSet_t set)
{
    const struct event *next = NULL;
    for (int i = 0; i < scenario.n_events; i++) {
        const struct event *e = &scenario.events[i];
        if (e->seq > set->last_seq && e->gpu < scenario.count && (set->mask[e->gpu] & e->type) != 0 &&
            (next == NULL || e->seq < next->seq))
            next = e;
    }
    return next;
}

nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeout_ms)
{
    const struct timespec tick = {.tv_sec = 0, .tv_nsec = 5 * 1000 * 1000};
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int first = 1;; first = 0) {
        pthread_mutex_lock(&lock);
        if (first)
            count_call(__func__, -1);
        reload();
        nvmlReturn_t rc = init_count <= 0 ? NVML_ERROR_UNINITIALIZED : failure(__func__, -1);
        const struct event *e = rc == NVML_SUCCESS ? next_event(set) : NULL;
        if (e != NULL) {
            *data = (nvmlEventData_t){.device = &handles[e->gpu],
                                      .eventType = e->type,
                                      .eventData = e->data,
                                      .gpuInstanceId = 0xFFFFFFFFu,
                                      .computeInstanceId = 0xFFFFFFFFu};
            set->last_seq = e->seq;
        }
        pthread_mutex_unlock(&lock);
        if (rc != NVML_SUCCESS || e != NULL)
            return rc;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 >= (long)timeout_ms)
            return NVML_ERROR_TIMEOUT;
        nanosleep(&tick, NULL);
    }
}

/* -- for the tests -------------------------------------------------------------------------------------------- */

unsigned long eagleeye_double_calls(const char *function, int gpu)
{
    unsigned long total = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < n_calls; i++)
        if ((gpu < 0 || calls[i].gpu == gpu) && strcmp(calls[i].function, function) == 0)
            total += calls[i].count;
    pthread_mutex_unlock(&lock);
    return total;
}

void eagleeye_double_reset_calls(void)
{
    pthread_mutex_lock(&lock);
    n_calls = 0;
    pthread_mutex_unlock(&lock);
}

int eagleeye_double_init_count(void)
{
    pthread_mutex_lock(&lock);
    int count = init_count;
    pthread_mutex_unlock(&lock);
    return count;
}
