/*
 * A test double of Huawei's libdcmi.so: the functions Eagle Eye's ctypes binding calls, with the same names and
 * ABI (dcmi_interface_api.h), serving values from a scenario file so that the binding's real code paths run.
 *
 * The scenario file's path is read from $EAGLEEYE_DCMI_DOUBLE_SCENARIO at every call, and the file is parsed again
 * whenever its path, inode, size or mtime changes. One directive a line; '#' starts a comment:
 *
 *   driver_version <text>                       dcmi_get_driver_version's answer (unset: -8255)
 *   fail <function> <code>                      a node-level function (dcmi_init, dcmi_get_card_list, ...) fails
 *   hang <function> <ms>                        a node-level function sleeps first (-1: see below)
 *   card <card> devices <n>                     the card holds chips 0..n-1 (default: 1 + the highest chip named)
 *   card <card> fail <function> <code>          a card-level function (dcmi_get_device_num_in_card) fails
 *   chip <card> <dev> logic_id <n>
 *   chip <card> <dev> health <n>                0..3, or 0xFFFFFFFF for "absent"
 *   chip <card> <dev> errorcode <code>          repeatable; hex (0x...) or decimal
 *   chip <card> <dev> temperature <celsius>
 *   chip <card> <dev> power <tenths_of_watt>
 *   chip <card> <dev> utilization <type> <pct>  type as dcmi_get_device_utilization_rate's input_type
 *   chip <card> <dev> frequency <type> <mhz>    type as enum dcmi_freq_type
 *   chip <card> <dev> hbm <size_mb> <usage_mb>
 *   chip <card> <dev> chip_info <type> <name> <version> [aicore_cnt]
 *   chip <card> <dev> fail <function> <code>    the function returns <code> for this chip
 *   chip <card> <dev> hang <function> <ms>      the function sleeps for this chip first (then answers or fails)
 *
 * A hang of -1 ms lasts until the scenario no longer gives it: the call polls the file every 10 ms, so a test
 * releases it by rewriting the scenario. Hangs happen outside the double's lock: other chips still answer.
 *
 * Cards are listed in the order they first appear. A value the scenario does not give is answered with
 * DCMI_ERR_CODE_NOT_SUPPORT (-8255), as a chip without that feature would. Every call before dcmi_init fails.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define SCENARIO_ENV "EAGLEEYE_DCMI_DOUBLE_SCENARIO"

#define DCMI_OK 0
#define DCMI_ERR_CODE_INVALID_PARAMETER (-8001)
#define DCMI_ERR_CODE_INNER_ERR (-8005)
#define DCMI_ERR_CODE_INVALID_DEVICE_ID (-8007)
#define DCMI_ERR_CODE_NOT_SUPPORT (-8255)

#define MAX_CHIP_NAME_LEN 32
#define MAX_CARDS 64
#define MAX_DEVICES 16
#define MAX_TYPES 16
#define MAX_ERROR_CODES 128
#define MAX_RULES 16
#define FUNCTION_LEN 64

struct dcmi_chip_info {
    unsigned char chip_type[MAX_CHIP_NAME_LEN];
    unsigned char chip_name[MAX_CHIP_NAME_LEN];
    unsigned char chip_ver[MAX_CHIP_NAME_LEN];
    unsigned int aicore_cnt;
};

struct dcmi_hbm_info {
    unsigned long long memory_size;
    unsigned int freq;
    unsigned long long memory_usage;
    int temp;
    unsigned int bandwith_util_rate;
};

enum dcmi_freq_type {
    DCMI_FREQ_DDR = 1,
    DCMI_FREQ_CTRLCPU = 2,
    DCMI_FREQ_HBM = 6,
    DCMI_FREQ_AICORE_CURRENT_ = 7,
    DCMI_FREQ_AICORE_MAX = 9,
    DCMI_FREQ_VECTORCORE_CURRENT = 12
};

struct rule {
    char function[FUNCTION_LEN];
    int code;     /* returned instead of answering, when fails */
    int fails;
    long hang_ms; /* slept before answering */
};

struct rules {
    int count;
    struct rule items[MAX_RULES];
};

struct chip {
    int has_logic_id, has_health, has_temperature, has_power, has_hbm, has_chip_info;
    int logic_id;
    unsigned int health;
    int temperature;
    int power;
    int has_util[MAX_TYPES];
    unsigned int util[MAX_TYPES];
    int has_freq[MAX_TYPES];
    unsigned int freq[MAX_TYPES];
    unsigned long long hbm_size, hbm_usage;
    struct dcmi_chip_info info;
    int error_count;
    unsigned int error_codes[MAX_ERROR_CODES];
    struct rules rules;
};

struct card {
    int id;
    int devices; /* -1: 1 + the highest chip named */
    int highest;
    struct rules rules;
    struct chip chips[MAX_DEVICES];
};

struct scenario {
    int card_count;
    struct card cards[MAX_CARDS];
    int has_driver_version;
    char driver_version[256];
    struct rules rules;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct scenario current;
static char loaded_path[4096];
static struct stat loaded_stat;
static int initialized;

static struct rule *rule_for(struct rules *rules, const char *function)
{
    for (int i = 0; i < rules->count; i++) {
        if (strcmp(rules->items[i].function, function) == 0) {
            return &rules->items[i];
        }
    }
    if (rules->count == MAX_RULES) {
        return NULL;
    }
    struct rule *rule = &rules->items[rules->count++];
    memset(rule, 0, sizeof(*rule));
    snprintf(rule->function, sizeof(rule->function), "%s", function);
    return rule;
}

static void add_rule(struct rules *rules, const char *kind, const char *function, const char *value)
{
    struct rule *rule = rule_for(rules, function);
    if (rule == NULL) {
        return;
    }
    if (strcmp(kind, "fail") == 0) {
        rule->fails = 1;
        rule->code = (int)strtol(value, NULL, 0);
    } else if (strcmp(kind, "hang") == 0) {
        rule->hang_ms = strtol(value, NULL, 0);
    }
}

static struct card *card_for(struct scenario *s, int id)
{
    for (int i = 0; i < s->card_count; i++) {
        if (s->cards[i].id == id) {
            return &s->cards[i];
        }
    }
    if (s->card_count == MAX_CARDS) {
        return NULL;
    }
    struct card *card = &s->cards[s->card_count++];
    card->id = id;
    card->devices = -1;
    card->highest = -1;
    return card;
}

static void copy_name(unsigned char *target, const char *value)
{
    snprintf((char *)target, MAX_CHIP_NAME_LEN, "%s", value);
}

static void parse_chip(struct chip *chip, int argc, char **argv)
{
    const char *key = argv[0];
    if (argc >= 3 && (strcmp(key, "fail") == 0 || strcmp(key, "hang") == 0)) {
        add_rule(&chip->rules, key, argv[1], argv[2]);
    } else if (argc >= 2 && strcmp(key, "logic_id") == 0) {
        chip->has_logic_id = 1;
        chip->logic_id = (int)strtol(argv[1], NULL, 0);
    } else if (argc >= 2 && strcmp(key, "health") == 0) {
        chip->has_health = 1;
        chip->health = (unsigned int)strtoul(argv[1], NULL, 0);
    } else if (argc >= 2 && strcmp(key, "errorcode") == 0) {
        if (chip->error_count < MAX_ERROR_CODES) {
            chip->error_codes[chip->error_count++] = (unsigned int)strtoul(argv[1], NULL, 0);
        }
    } else if (argc >= 2 && strcmp(key, "temperature") == 0) {
        chip->has_temperature = 1;
        chip->temperature = (int)strtol(argv[1], NULL, 0);
    } else if (argc >= 2 && strcmp(key, "power") == 0) {
        chip->has_power = 1;
        chip->power = (int)strtol(argv[1], NULL, 0);
    } else if (argc >= 3 && (strcmp(key, "utilization") == 0 || strcmp(key, "frequency") == 0)) {
        long type = strtol(argv[1], NULL, 0);
        if (type >= 0 && type < MAX_TYPES) {
            int is_util = strcmp(key, "utilization") == 0;
            (is_util ? chip->has_util : chip->has_freq)[type] = 1;
            (is_util ? chip->util : chip->freq)[type] = (unsigned int)strtoul(argv[2], NULL, 0);
        }
    } else if (argc >= 3 && strcmp(key, "hbm") == 0) {
        chip->has_hbm = 1;
        chip->hbm_size = strtoull(argv[1], NULL, 0);
        chip->hbm_usage = strtoull(argv[2], NULL, 0);
    } else if (argc >= 4 && strcmp(key, "chip_info") == 0) {
        chip->has_chip_info = 1;
        copy_name(chip->info.chip_type, argv[1]);
        copy_name(chip->info.chip_name, argv[2]);
        copy_name(chip->info.chip_ver, argv[3]);
        chip->info.aicore_cnt = argc >= 5 ? (unsigned int)strtoul(argv[4], NULL, 0) : 0;
    }
}

static void parse_line(struct scenario *s, char *line)
{
    char *argv[16];
    int argc = 0;
    char *hash = strchr(line, '#');
    if (hash != NULL) {
        *hash = '\0';
    }
    for (char *save = NULL, *token = strtok_r(line, " \t\r\n", &save); token != NULL && argc < 16;
         token = strtok_r(NULL, " \t\r\n", &save)) {
        argv[argc++] = token;
    }
    if (argc >= 2 && strcmp(argv[0], "driver_version") == 0) {
        s->has_driver_version = 1;
        snprintf(s->driver_version, sizeof(s->driver_version), "%s", argv[1]);
    } else if (argc >= 3 && (strcmp(argv[0], "fail") == 0 || strcmp(argv[0], "hang") == 0)) {
        add_rule(&s->rules, argv[0], argv[1], argv[2]);
    } else if (argc >= 4 && strcmp(argv[0], "card") == 0) {
        struct card *card = card_for(s, (int)strtol(argv[1], NULL, 0));
        if (card == NULL) {
            return;
        }
        if (strcmp(argv[2], "devices") == 0) {
            card->devices = (int)strtol(argv[3], NULL, 0);
        } else if (argc >= 5) {
            add_rule(&card->rules, argv[2], argv[3], argv[4]);
        }
    } else if (argc >= 4 && strcmp(argv[0], "chip") == 0) {
        struct card *card = card_for(s, (int)strtol(argv[1], NULL, 0));
        long device = strtol(argv[2], NULL, 0);
        if (card == NULL || device < 0 || device >= MAX_DEVICES) {
            return;
        }
        if (device > card->highest) {
            card->highest = (int)device;
        }
        parse_chip(&card->chips[device], argc - 3, argv + 3);
    }
}

/* Parse the scenario again if its path or file changed; a missing file is an empty node. Call with the lock. */
static void reload(void)
{
    const char *path = getenv(SCENARIO_ENV);
    struct stat st;
    if (path == NULL || stat(path, &st) != 0) {
        memset(&current, 0, sizeof(current));
        loaded_path[0] = '\0';
        return;
    }
    if (strcmp(path, loaded_path) == 0 && st.st_ino == loaded_stat.st_ino && st.st_size == loaded_stat.st_size &&
        st.st_mtim.tv_sec == loaded_stat.st_mtim.tv_sec && st.st_mtim.tv_nsec == loaded_stat.st_mtim.tv_nsec) {
        return;
    }
    memset(&current, 0, sizeof(current));
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        loaded_path[0] = '\0';
        return;
    }
    char line[1024];
    while (fgets(line, sizeof(line), file) != NULL) {
        parse_line(&current, line);
    }
    fclose(file);
    snprintf(loaded_path, sizeof(loaded_path), "%s", path);
    loaded_stat = st;
}

static int device_count(const struct card *card)
{
    int n = card->devices >= 0 ? card->devices : card->highest + 1;
    return n > MAX_DEVICES ? MAX_DEVICES : n;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static struct rule copy_rule(const struct rules *rules, const char *function);
static const struct card *find_card(int card_id);

/* The current scenario's hang for `function` (a chip's when card_id >= 0, else the node's). Call with the lock. */
static long hang_of(const char *function, int card_id, int device_id)
{
    if (card_id < 0) {
        return copy_rule(&current.rules, function).hang_ms;
    }
    const struct card *card = find_card(card_id);
    if (card == NULL || device_id < 0 || device_id >= MAX_DEVICES) {
        return 0;
    }
    return copy_rule(&card->chips[device_id].rules, function).hang_ms;
}

/* Apply a rule outside the lock: sleep if it hangs, then its failure code or DCMI_OK. */
static int apply_for(struct rule rule, int card_id, int device_id)
{
    if (rule.hang_ms > 0) {
        sleep_ms(rule.hang_ms);
    }
    for (long ms = rule.hang_ms; ms < 0;) {
        sleep_ms(10);
        pthread_mutex_lock(&lock);
        reload();
        ms = hang_of(rule.function, card_id, device_id);
        pthread_mutex_unlock(&lock);
    }
    return rule.fails ? rule.code : DCMI_OK;
}

static int apply(struct rule rule)
{
    return apply_for(rule, -1, -1);
}

static struct rule copy_rule(const struct rules *rules, const char *function)
{
    struct rule none = {{0}, 0, 0, 0};
    for (int i = 0; i < rules->count; i++) {
        if (strcmp(rules->items[i].function, function) == 0) {
            return rules->items[i];
        }
    }
    return none;
}

static const struct card *find_card(int card_id)
{
    for (int i = 0; i < current.card_count; i++) {
        if (current.cards[i].id == card_id) {
            return &current.cards[i];
        }
    }
    return NULL;
}

/* Chip-level call: copies the chip (under the lock), then applies the node's and the chip's rule for the function. */
static int begin_chip(const char *function, int card_id, int device_id, struct chip *out)
{
    pthread_mutex_lock(&lock);
    reload();
    int ready = initialized;
    const struct card *card = find_card(card_id);
    int found = card != NULL && device_id >= 0 && device_id < device_count(card);
    if (found) {
        *out = card->chips[device_id];
    }
    struct rule node_rule = copy_rule(&current.rules, function);
    pthread_mutex_unlock(&lock);
    if (!ready) {
        return DCMI_ERR_CODE_INNER_ERR;
    }
    if (!found) {
        return DCMI_ERR_CODE_INVALID_DEVICE_ID;
    }
    int rc = apply(node_rule);
    return rc != DCMI_OK ? rc : apply_for(copy_rule(&out->rules, function), card_id, device_id);
}

int dcmi_init(void)
{
    pthread_mutex_lock(&lock);
    reload();
    struct rule rule = copy_rule(&current.rules, "dcmi_init");
    pthread_mutex_unlock(&lock);
    int rc = apply(rule);
    if (rc == DCMI_OK) {
        pthread_mutex_lock(&lock);
        initialized = 1;
        pthread_mutex_unlock(&lock);
    }
    return rc;
}

int dcmi_get_driver_version(char *driver_ver, unsigned int len)
{
    char version[sizeof(current.driver_version)];
    pthread_mutex_lock(&lock);
    reload();
    int ready = initialized;
    int has_version = current.has_driver_version;
    memcpy(version, current.driver_version, sizeof(version));
    struct rule rule = copy_rule(&current.rules, "dcmi_get_driver_version");
    pthread_mutex_unlock(&lock);
    int rc = ready ? apply(rule) : DCMI_ERR_CODE_INNER_ERR;
    if (rc != DCMI_OK) {
        return rc;
    }
    if (!has_version) {
        return DCMI_ERR_CODE_NOT_SUPPORT;
    }
    if (driver_ver == NULL || len == 0) {
        return DCMI_ERR_CODE_INVALID_PARAMETER;
    }
    snprintf(driver_ver, len, "%s", version);
    return DCMI_OK;
}

int dcmi_get_card_list(int *card_num, int *card_list, int list_len)
{
    int ids[MAX_CARDS];
    pthread_mutex_lock(&lock);
    reload();
    int ready = initialized;
    int count = current.card_count;
    for (int i = 0; i < count; i++) {
        ids[i] = current.cards[i].id;
    }
    struct rule rule = copy_rule(&current.rules, "dcmi_get_card_list");
    pthread_mutex_unlock(&lock);
    int rc = ready ? apply(rule) : DCMI_ERR_CODE_INNER_ERR;
    if (rc != DCMI_OK) {
        return rc;
    }
    if (card_num == NULL || card_list == NULL || list_len < 0) {
        return DCMI_ERR_CODE_INVALID_PARAMETER;
    }
    *card_num = count;
    for (int i = 0; i < count && i < list_len; i++) {
        card_list[i] = ids[i];
    }
    return DCMI_OK;
}

int dcmi_get_device_num_in_card(int card_id, int *device_num)
{
    pthread_mutex_lock(&lock);
    reload();
    int ready = initialized;
    const struct card *card = find_card(card_id);
    int count = card != NULL ? device_count(card) : 0;
    struct rule node_rule = copy_rule(&current.rules, "dcmi_get_device_num_in_card");
    struct rule card_rule = card != NULL ? copy_rule(&card->rules, "dcmi_get_device_num_in_card") : node_rule;
    pthread_mutex_unlock(&lock);
    if (!ready) {
        return DCMI_ERR_CODE_INNER_ERR;
    }
    if (card == NULL) {
        return DCMI_ERR_CODE_INVALID_DEVICE_ID;
    }
    int rc = apply(node_rule);
    rc = rc != DCMI_OK ? rc : apply(card_rule);
    if (rc == DCMI_OK) {
        *device_num = count;
    }
    return rc;
}

int dcmi_get_device_logic_id(int *device_logic_id, int card_id, int device_id)
{
    struct chip c;
    int rc = begin_chip("dcmi_get_device_logic_id", card_id, device_id, &c);
    if (rc == DCMI_OK && !c.has_logic_id) {
        rc = DCMI_ERR_CODE_NOT_SUPPORT;
    }
    if (rc == DCMI_OK) {
        *device_logic_id = c.logic_id;
    }
    return rc;
}

int dcmi_get_device_health(int card_id, int device_id, unsigned int *health)
{
    struct chip c;
    int rc = begin_chip("dcmi_get_device_health", card_id, device_id, &c);
    if (rc == DCMI_OK && !c.has_health) {
        rc = DCMI_ERR_CODE_NOT_SUPPORT;
    }
    if (rc == DCMI_OK) {
        *health = c.health;
    }
    return rc;
}

int dcmi_get_device_errorcode_v2(int card_id, int device_id, int *error_count, unsigned int *error_code_list,
                                 unsigned int list_len)
{
    struct chip c;
    int rc = begin_chip("dcmi_get_device_errorcode_v2", card_id, device_id, &c);
    if (rc != DCMI_OK) {
        return rc;
    }
    if (error_count == NULL || error_code_list == NULL) {
        return DCMI_ERR_CODE_INVALID_PARAMETER;
    }
    *error_count = c.error_count;
    for (int i = 0; i < c.error_count && (unsigned int)i < list_len; i++) {
        error_code_list[i] = c.error_codes[i];
    }
    return DCMI_OK;
}

int dcmi_get_device_temperature(int card_id, int device_id, int *temperature)
{
    struct chip c;
    int rc = begin_chip("dcmi_get_device_temperature", card_id, device_id, &c);
    if (rc == DCMI_OK && !c.has_temperature) {
        rc = DCMI_ERR_CODE_NOT_SUPPORT;
    }
    if (rc == DCMI_OK) {
        *temperature = c.temperature;
    }
    return rc;
}

int dcmi_get_device_power_info(int card_id, int device_id, int *power)
{
    struct chip c;
    int rc = begin_chip("dcmi_get_device_power_info", card_id, device_id, &c);
    if (rc == DCMI_OK && !c.has_power) {
        rc = DCMI_ERR_CODE_NOT_SUPPORT;
    }
    if (rc == DCMI_OK) {
        *power = c.power;
    }
    return rc;
}

int dcmi_get_device_utilization_rate(int card_id, int device_id, int input_type, unsigned int *utilization_rate)
{
    struct chip c;
    int rc = begin_chip("dcmi_get_device_utilization_rate", card_id, device_id, &c);
    if (rc == DCMI_OK && (input_type < 0 || input_type >= MAX_TYPES || !c.has_util[input_type])) {
        rc = DCMI_ERR_CODE_NOT_SUPPORT;
    }
    if (rc == DCMI_OK) {
        *utilization_rate = c.util[input_type];
    }
    return rc;
}

int dcmi_get_device_frequency(int card_id, int device_id, enum dcmi_freq_type input_type, unsigned int *frequency)
{
    struct chip c;
    int rc = begin_chip("dcmi_get_device_frequency", card_id, device_id, &c);
    if (rc == DCMI_OK && ((int)input_type < 0 || input_type >= MAX_TYPES || !c.has_freq[input_type])) {
        rc = DCMI_ERR_CODE_NOT_SUPPORT;
    }
    if (rc == DCMI_OK) {
        *frequency = c.freq[input_type];
    }
    return rc;
}

int dcmi_get_device_hbm_info(int card_id, int device_id, struct dcmi_hbm_info *hbm_info)
{
    struct chip c;
    int rc = begin_chip("dcmi_get_device_hbm_info", card_id, device_id, &c);
    if (rc == DCMI_OK && !c.has_hbm) {
        rc = DCMI_ERR_CODE_NOT_SUPPORT;
    }
    if (rc == DCMI_OK) {
        memset(hbm_info, 0, sizeof(*hbm_info));
        hbm_info->memory_size = c.hbm_size;
        hbm_info->memory_usage = c.hbm_usage;
    }
    return rc;
}

int dcmi_get_device_chip_info(int card_id, int device_id, struct dcmi_chip_info *chip_info)
{
    struct chip c;
    int rc = begin_chip("dcmi_get_device_chip_info", card_id, device_id, &c);
    if (rc == DCMI_OK && !c.has_chip_info) {
        rc = DCMI_ERR_CODE_NOT_SUPPORT;
    }
    if (rc == DCMI_OK) {
        *chip_info = c.info;
    }
    return rc;
}
