/*  =========================================================================
    nx_conf - one configuration table per program (nexusd, nexus-gateway).

    The table drives everything: parsing, bounds, --help and the ZPL dump,
    so adding a setting is one line in the program's table and nothing else.
    Every source (defaults, file, environment, flags) goes through
    nx_conf_set, so they all accept exactly the same syntax and give the
    same errors. A value is parsed and checked completely before it is
    stored: a failed set leaves the field as it was.

    The settings struct must start zeroed (or filled by this module): a
    string field is freed before it is replaced.
    =========================================================================
*/

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <czmq.h>

#include "nx_conf.h"

/*  Longest key name we accept from a flag or build for an env variable.
    Table names are short; anything longer cannot match one.                */
#define S_NAME_MAX 128

/*  Room for any formatted number with its unit ("18446744073709551615ms").  */
#define S_NUM_MAX 32

/*  A unit suffix and what one of it is worth in the base unit.            */
typedef struct {
    const char *suffix; /* exact text after the number                      */
    uint64_t scale;     /* bytes or milliseconds per unit                   */
} s_unit_t;

/*  Size units are binary (x1024): "64k", "1M", "1MiB", "1MB" and "512B"
    all mean what an operator expects of a buffer limit. Listed largest
    first so s_format_unit picks the shortest exact form.                   */
static const s_unit_t s_size_units[] = {{"T", 1ULL << 40},
                                        {"t", 1ULL << 40},
                                        {"TB", 1ULL << 40},
                                        {"tB", 1ULL << 40},
                                        {"TiB", 1ULL << 40},
                                        {"tiB", 1ULL << 40},
                                        {"G", 1ULL << 30},
                                        {"g", 1ULL << 30},
                                        {"GB", 1ULL << 30},
                                        {"gB", 1ULL << 30},
                                        {"GiB", 1ULL << 30},
                                        {"giB", 1ULL << 30},
                                        {"M", 1ULL << 20},
                                        {"m", 1ULL << 20},
                                        {"MB", 1ULL << 20},
                                        {"mB", 1ULL << 20},
                                        {"MiB", 1ULL << 20},
                                        {"miB", 1ULL << 20},
                                        {"k", 1ULL << 10},
                                        {"K", 1ULL << 10},
                                        {"kB", 1ULL << 10},
                                        {"KB", 1ULL << 10},
                                        {"kiB", 1ULL << 10},
                                        {"KiB", 1ULL << 10},
                                        {"B", 1},
                                        {"", 1},
                                        {NULL, 0}};

/*  Canonical size suffixes for output, largest first.                      */
static const s_unit_t s_size_out[] = {
    {"T", 1ULL << 40}, {"G", 1ULL << 30}, {"M", 1ULL << 20}, {"k", 1ULL << 10}, {NULL, 0}};

/*  Duration units; a bare number is milliseconds, the unit we store.      */
static const s_unit_t s_duration_units[] = {{"d", 86400000ULL}, {"h", 3600000ULL}, {"m", 60000ULL},
                                            {"s", 1000ULL},     {"ms", 1},         {"", 1},
                                            {NULL, 0}};

static const s_unit_t s_duration_out[] = {
    {"d", 86400000ULL}, {"h", 3600000ULL}, {"m", 60000ULL}, {"s", 1000ULL}, {NULL, 0}};

/*  At most this many fraction digits count ("1.5M", "0.25s"); more are
    accepted and truncated. Six digits times the largest unit (2^40) still
    fits in 64 bits, so the fraction arithmetic cannot overflow.            */
#define S_FRAC_DIGITS 6

static void s_err(char *err_buf, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_err(char *err_buf, size_t err_size, const char *fmt, ...)
{
    if (!err_buf || err_size == 0)
        return;
    va_list args;
    va_start(args, fmt);
    vsnprintf(err_buf, err_size, fmt, args);
    va_end(args);
}

/*  Parses "<digits>[.<digits>]<suffix>" where suffix is one of units.
    Returns 0 and the value in base units, or -1. Rules:
    1. at least one digit before the point, and one after it if present;
       no sign, no spaces ("-1" must not wrap to a huge size);
    2. a fraction needs a unit larger than the base unit, because half a
       byte or half a millisecond cannot be stored;
    3. any overflow of 64 bits, in the integer part or after scaling, is
       an error rather than a silently wrapped limit.                      */
static int s_parse_scaled(const char *text, const s_unit_t *units, uint64_t *out)
{
    if (!text)
        return -1;
    const char *p = text;
    if (!isdigit((unsigned char)*p))
        return -1;
    uint64_t whole = 0;
    while (isdigit((unsigned char)*p)) {
        unsigned digit = (unsigned)(*p - '0');
        if (whole > (UINT64_MAX - digit) / 10)
            return -1;
        whole = whole * 10 + digit;
        p++;
    }
    uint64_t frac = 0;
    uint64_t frac_div = 1;
    bool has_frac = false;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        has_frac = true;
        int kept = 0;
        while (isdigit((unsigned char)*p)) {
            if (kept < S_FRAC_DIGITS) {
                frac = frac * 10 + (uint64_t)(*p - '0');
                frac_div *= 10;
                kept++;
            }
            p++;
        }
    }
    const s_unit_t *unit = units;
    while (unit->suffix && strcmp(unit->suffix, p) != 0)
        unit++;
    if (!unit->suffix)
        return -1;
    if (has_frac && unit->scale == 1)
        return -1;
    if (whole > UINT64_MAX / unit->scale)
        return -1;
    uint64_t value = whole * unit->scale;
    uint64_t part = frac * unit->scale / frac_div;
    if (value > UINT64_MAX - part)
        return -1;
    *out = value + part;
    return 0;
}

int nx_conf_parse_size(const char *text, uint64_t *bytes)
{
    uint64_t value;
    if (s_parse_scaled(text, s_size_units, &value) != 0)
        return -1;
    if (bytes)
        *bytes = value;
    return 0;
}

int nx_conf_parse_duration(const char *text, uint64_t *ms)
{
    uint64_t value;
    if (s_parse_scaled(text, s_duration_units, &value) != 0)
        return -1;
    if (ms)
        *ms = value;
    return 0;
}

/*  Writes value with the largest unit that divides it exactly, so the text
    parses back to the same number ("1M", "90s"; "1025" stays bytes).      */
static void s_format_unit(uint64_t value, const s_unit_t *units, const char *base, char *buf)
{
    for (const s_unit_t *unit = units; value && unit->suffix; unit++) {
        if (value % unit->scale == 0) {
            snprintf(buf, S_NUM_MAX, "%" PRIu64 "%s", value / unit->scale, unit->suffix);
            return;
        }
    }
    snprintf(buf, S_NUM_MAX, "%" PRIu64 "%s", value, value ? base : "");
}

/*  Formats a numeric value in the unit its type is written in.            */
static void s_format_number(nx_conf_type_t type, uint64_t value, char *buf)
{
    if (type == NX_CONF_SIZE)
        s_format_unit(value, s_size_out, "", buf);
    else if (type == NX_CONF_DURATION)
        s_format_unit(value, s_duration_out, "ms", buf);
    else
        snprintf(buf, S_NUM_MAX, "%" PRIu64, value);
}

static bool s_is_numeric(nx_conf_type_t type)
{
    return type == NX_CONF_U64 || type == NX_CONF_SIZE || type == NX_CONF_DURATION;
}

/*  "min..max", or "at least min" when there is no upper bound.            */
static void s_format_bounds(const nx_conf_key_t *key, char *buf, size_t size)
{
    char lo[S_NUM_MAX], hi[S_NUM_MAX];
    s_format_number(key->type, key->min, lo);
    if (key->max) {
        s_format_number(key->type, key->max, hi);
        snprintf(buf, size, "%s..%s", lo, hi);
    } else
        snprintf(buf, size, "at least %s", lo);
}

/*  Compares a table name with len bytes of name; '-' and '_' are equal so
    flags can be written --max-payload and files max_payload.              */
static bool s_name_eq(const char *table_name, const char *name, size_t len)
{
    size_t i;
    for (i = 0; i < len && table_name[i]; i++) {
        char a = table_name[i] == '-' ? '_' : table_name[i];
        char b = name[i] == '-' ? '_' : name[i];
        if (a != b)
            return false;
    }
    return i == len && table_name[i] == '\0';
}

static const nx_conf_key_t *s_find(const nx_conf_key_t *table, size_t count, const char *name,
                                   size_t len)
{
    for (size_t i = 0; i < count; i++)
        if (s_name_eq(table[i].name, name, len))
            return &table[i];
    return NULL;
}

/*  Looks value up in "a|b|c"; returns its index or -1. Case is ignored, as
    for booleans, because environment values are often upper-case.        */
static int s_choice_index(const char *choices, const char *value)
{
    if (!choices)
        return -1;
    size_t len = strlen(value);
    int index = 0;
    const char *start = choices;
    while (true) {
        const char *end = strchr(start, '|');
        size_t item = end ? (size_t)(end - start) : strlen(start);
        if (item == len && strncasecmp(start, value, len) == 0)
            return index;
        if (!end)
            return -1;
        start = end + 1;
        index++;
    }
}

/*  Returns the index-th choice of "a|b|c" into buf, or "?" if none.       */
static const char *s_choice_name(const char *choices, int index, char *buf, size_t size)
{
    const char *start = choices;
    for (int i = 0; start && i < index; i++) {
        start = strchr(start, '|');
        if (start)
            start++;
    }
    if (!start || index < 0) {
        snprintf(buf, size, "?");
        return buf;
    }
    const char *end = strchr(start, '|');
    int len = end ? (int)(end - start) : (int)strlen(start);
    snprintf(buf, size, "%.*s", len, start);
    return buf;
}

static int s_parse_bool(const char *value, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1", NULL};
    static const char *const no[] = {"false", "no", "off", "0", NULL};
    for (int i = 0; yes[i]; i++) {
        if (strcasecmp(value, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(value, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/*  Plain unsigned decimal, no sign, no suffix, no overflow.               */
static int s_parse_u64(const char *text, uint64_t *out)
{
    if (!isdigit((unsigned char)*text))
        return -1;
    uint64_t value = 0;
    for (; isdigit((unsigned char)*text); text++) {
        unsigned digit = (unsigned)(*text - '0');
        if (value > (UINT64_MAX - digit) / 10)
            return -1;
        value = value * 10 + digit;
    }
    if (*text)
        return -1;
    *out = value;
    return 0;
}

/*  Parses and stores one value for key. Nothing is stored unless the whole
    value is valid.                                                         */
static nexus_err_t s_set_key(const nx_conf_key_t *key, void *settings, const char *value,
                             char *err_buf, size_t err_size)
{
    char *field = (char *)settings + key->offset;
    if (!value) {
        s_err(err_buf, err_size, "%s: missing value", key->name);
        return NEXUS_ERR_INVALID;
    }
    switch (key->type) {
    case NX_CONF_STRING: {
        char *copy = strdup(value);
        if (!copy) {
            s_err(err_buf, err_size, "%s: out of memory", key->name);
            return NEXUS_ERR_NOMEM;
        }
        char **slot = (char **)field;
        free(*slot);
        *slot = copy;
        return NEXUS_OK;
    }
    case NX_CONF_U64:
    case NX_CONF_SIZE:
    case NX_CONF_DURATION: {
        uint64_t number;
        int rc;
        const char *expect;
        if (key->type == NX_CONF_U64) {
            rc = s_parse_u64(value, &number);
            expect = "an unsigned integer";
        } else if (key->type == NX_CONF_SIZE) {
            rc = nx_conf_parse_size(value, &number);
            expect = "a size such as 1024, 64k, 1M or 1.5G";
        } else {
            rc = nx_conf_parse_duration(value, &number);
            expect = "a duration such as 250ms, 10s, 5m, 2h or 7d";
        }
        if (rc != 0) {
            s_err(err_buf, err_size, "%s: '%s' is not %s", key->name, value, expect);
            return NEXUS_ERR_INVALID;
        }
        if (number < key->min || (key->max && number > key->max)) {
            char bounds[2 * S_NUM_MAX + 16];
            s_format_bounds(key, bounds, sizeof bounds);
            s_err(err_buf, err_size, "%s: '%s' is out of bounds (%s)", key->name, value, bounds);
            return NEXUS_ERR_INVALID;
        }
        memcpy(field, &number, sizeof number);
        return NEXUS_OK;
    }
    case NX_CONF_BOOL: {
        bool flag;
        if (s_parse_bool(value, &flag) != 0) {
            s_err(err_buf, err_size, "%s: '%s' is not a boolean (true/false/yes/no/on/off/1/0)",
                  key->name, value);
            return NEXUS_ERR_INVALID;
        }
        memcpy(field, &flag, sizeof flag);
        return NEXUS_OK;
    }
    case NX_CONF_ENUM: {
        int index = s_choice_index(key->choices, value);
        if (index < 0) {
            s_err(err_buf, err_size, "%s: '%s' is not one of %s", key->name, value,
                  key->choices ? key->choices : "(no choices)");
            return NEXUS_ERR_INVALID;
        }
        memcpy(field, &index, sizeof index);
        return NEXUS_OK;
    }
    }
    s_err(err_buf, err_size, "%s: unknown type %d in the table", key->name, (int)key->type);
    return NEXUS_ERR_INVALID;
}

/*  A NULL default means "unset": NULL string, zero number, false, first
    choice. It is not bounds-checked, so a key may require a value.        */
static void s_clear_key(const nx_conf_key_t *key, void *settings)
{
    char *field = (char *)settings + key->offset;
    switch (key->type) {
    case NX_CONF_STRING: {
        char **slot = (char **)field;
        free(*slot);
        *slot = NULL;
        break;
    }
    case NX_CONF_U64:
    case NX_CONF_SIZE:
    case NX_CONF_DURATION:
        memset(field, 0, sizeof(uint64_t));
        break;
    case NX_CONF_BOOL:
        memset(field, 0, sizeof(bool));
        break;
    case NX_CONF_ENUM:
        memset(field, 0, sizeof(int));
        break;
    }
}

nexus_err_t nx_conf_defaults(const nx_conf_key_t *table, size_t count, void *settings,
                             char *err_buf, size_t err_size)
{
    for (size_t i = 0; i < count; i++) {
        if (!table[i].dflt) {
            s_clear_key(&table[i], settings);
            continue;
        }
        char detail[256];
        nexus_err_t rc = s_set_key(&table[i], settings, table[i].dflt, detail, sizeof detail);
        if (rc != NEXUS_OK) {
            s_err(err_buf, err_size, "bad default: %s", detail);
            return rc;
        }
    }
    return NEXUS_OK;
}

nexus_err_t nx_conf_set(const nx_conf_key_t *table, size_t count, void *settings, const char *name,
                        const char *value, char *err_buf, size_t err_size)
{
    if (!name) {
        s_err(err_buf, err_size, "missing key name");
        return NEXUS_ERR_INVALID;
    }
    const nx_conf_key_t *key = s_find(table, count, name, strlen(name));
    if (!key) {
        s_err(err_buf, err_size, "unknown key '%s'", name);
        return NEXUS_ERR_NOT_FOUND;
    }
    return s_set_key(key, settings, value, err_buf, err_size);
}

/*  Largest config file we read: ours are a few KiB; anything this large
    is not one.                                                             */
#define S_FILE_MAX (1 << 20)

/*  The 1-based line of text that at points into.                           */
static size_t s_line_of(const char *text, const char *at)
{
    size_t line = 1;
    for (const char *p = text; p < at; p++)
        line += *p == '\n';
    return line;
}

/*  Parses ZPL text. zconfig tells why it refused a file only in a line it
    prints on stdout ("YY-MM-DD HH:MM:SS E (zconfig): (LINE) WHY", through
    zclock_log), apart from our own error and in another format. So the
    parse runs with stdout sent to a temporary file, and that complaint
    comes back in why ("line LINE: WHY"; empty if it could not be had).
    Runs at start-up only, before any other thread exists.                  */
static zconfig_t *s_zpl_parse(const char *text, char *why, size_t why_size)
{
    why[0] = 0;
    fflush(stdout);
    FILE *capture = tmpfile();
    int saved = capture ? dup(STDOUT_FILENO) : -1;
    bool redirected = saved >= 0 && dup2(fileno(capture), STDOUT_FILENO) >= 0;
    zconfig_t *root = zconfig_str_load(text);
    if (redirected) {
        fflush(stdout);
        dup2(saved, STDOUT_FILENO);
        rewind(capture);
        char line[512];
        while (!why[0] && fgets(line, sizeof line, capture)) {
            const char *m = strstr(line, "(zconfig): ");
            if (!m)
                continue;
            m += strlen("(zconfig): ");
            line[strcspn(line, "\r\n")] = 0;
            unsigned long lineno = 0;
            int used = 0;
            if (sscanf(m, "(%lu) %n", &lineno, &used) == 1 && used > 0)
                snprintf(why, why_size, "line %lu: %s", lineno, m + used);
            else
                snprintf(why, why_size, "%s", m);
        }
    }
    if (saved >= 0)
        close(saved);
    if (capture)
        fclose(capture);
    return root;
}

/*  The lines (1-based) of the first two top-level lines of text that set
    key, in lines[0..1]; 0 where there is none. zconfig keeps no line
    numbers: a top-level key is a line that starts in column 0 with
    neither blank nor '#', its name running to a blank or '='.             */
static void s_key_lines(const char *text, const nx_conf_key_t *key, size_t lines[2])
{
    lines[0] = lines[1] = 0;
    size_t line = 1, found = 0;
    for (const char *p = text; *p && found < 2; line++) {
        size_t len = strcspn(p, " \t=\r\n");
        if (len && *p != '#' && s_name_eq(key->name, p, len))
            lines[found++] = line;
        p += strcspn(p, "\n");
        if (*p)
            p++;
    }
}

nexus_err_t nx_conf_load_file(const nx_conf_key_t *table, size_t count, void *settings,
                              const char *path, char *err_buf, size_t err_size)
{
    if (!path) {
        s_err(err_buf, err_size, "missing config file name");
        return NEXUS_ERR_INVALID;
    }
    //  We read the file ourselves rather than with zconfig_load: that one
    //  leaks its zfile when the syntax is bad, cannot tell a missing file
    //  from bad syntax, and reads a file with a NUL byte as if it ended
    //  there (a binary file would start the broker on defaults).
    FILE *f = fopen(path, "rb");
    if (!f) {
        int err = errno;
        s_err(err_buf, err_size, "%s: %s", path, strerror(err));
        return err == ENOENT ? NEXUS_ERR_NOT_FOUND : NEXUS_ERR_INVALID;
    }
    /*  Grown as it is read: a config file is a few KiB, and the bound
        is what it may not pass, not what each read costs.                */
    size_t size = 0, cap = 4096;
    char *text = malloc(cap + 1);
    while (text && !ferror(f) && !feof(f) && size <= S_FILE_MAX) {
        if (size == cap) {
            cap *= 2;
            char *grown = realloc(text, cap + 1);
            if (!grown) {
                free(text);
                text = NULL;
                break;
            }
            text = grown;
        }
        size += fread(text + size, 1, cap - size, f);
    }
    int read_err = ferror(f) ? errno : 0;
    fclose(f);
    if (!text || read_err || size > S_FILE_MAX) {
        if (!text)
            s_err(err_buf, err_size, "%s: out of memory", path);
        else if (read_err)
            s_err(err_buf, err_size, "%s: %s", path, strerror(read_err));
        else
            s_err(err_buf, err_size, "%s: over %d bytes: not a config file", path, S_FILE_MAX);
        free(text);
        return NEXUS_ERR_INVALID;
    }
    text[size] = 0;
    const char *nul = memchr(text, 0, size);
    if (nul) {
        s_err(err_buf, err_size, "%s: line %zu: NUL byte: not a text file", path,
              s_line_of(text, nul));
        free(text);
        return NEXUS_ERR_INVALID;
    }
    char why[256];
    zconfig_t *root = s_zpl_parse(text, why, sizeof why);
    if (!root) {
        free(text);
        s_err(err_buf, err_size, "%s: not a valid ZPL file%s%s", path, why[0] ? ": " : "", why);
        return NEXUS_ERR_INVALID;
    }
    /*  Keys this file set: a second one would win in silence over the
        first, which its reader takes for the setting ("sync = full" on
        line 3 and "sync = none" on line 40).                              */
    bool *seen = calloc(count ? count : 1, sizeof *seen);
    nexus_err_t rc = NEXUS_OK;
    if (!seen) {
        s_err(err_buf, err_size, "%s: out of memory", path);
        rc = NEXUS_ERR_NOMEM;
    }
    for (zconfig_t *item = seen ? zconfig_child(root) : NULL; item; item = zconfig_next(item)) {
        const char *name = zconfig_name(item);
        const char *value = zconfig_value(item);
        char detail[256];
        if (zconfig_child(item)) {
            //  Our settings are flat; a section is a typo or a file meant
            //  for another program, and silently ignoring it would hide that.
            s_err(err_buf, err_size, "%s: '%s' has nested keys; settings are top-level only", path,
                  name ? name : "");
            rc = NEXUS_ERR_INVALID;
            break;
        }
        const nx_conf_key_t *key = name ? s_find(table, count, name, strlen(name)) : NULL;
        if (key && seen[key - table]) {
            size_t lines[2];
            s_key_lines(text, key, lines);
            if (lines[1])
                s_err(err_buf, err_size,
                      "%s: '%s' is set twice (lines %zu and %zu): keep one of them", path,
                      key->name, lines[0], lines[1]);
            else
                s_err(err_buf, err_size, "%s: '%s' is set twice: keep one of them", path,
                      key->name);
            rc = NEXUS_ERR_INVALID;
            break;
        }
        rc = nx_conf_set(table, count, settings, name, value ? value : "", detail, sizeof detail);
        if (rc != NEXUS_OK) {
            s_err(err_buf, err_size, "%s: %s", path, detail);
            break;
        }
        if (key)
            seen[key - table] = true;
    }
    free(seen);
    free(text);
    zconfig_destroy(&root);
    return rc;
}

/*  Builds NEXUS_<NAME>: upper-cased, '-' as '_'. Returns -1 if too long.  */
static int s_env_name(const char *name, char *buf, size_t size)
{
    size_t prefix = strlen("NEXUS_");
    if (prefix + strlen(name) + 1 > size)
        return -1;
    memcpy(buf, "NEXUS_", prefix);
    size_t i;
    for (i = 0; name[i]; i++)
        buf[prefix + i] = name[i] == '-' ? '_' : (char)toupper((unsigned char)name[i]);
    buf[prefix + i] = '\0';
    return 0;
}

nexus_err_t nx_conf_load_env(const nx_conf_key_t *table, size_t count, void *settings,
                             char *err_buf, size_t err_size)
{
    for (size_t i = 0; i < count; i++) {
        char env_name[S_NAME_MAX + 8];
        if (s_env_name(table[i].name, env_name, sizeof env_name) != 0)
            continue;
        //  A variable set to the empty string counts as set: that is how an
        //  operator clears a string setting from the environment.
        const char *value = getenv(env_name);
        if (!value)
            continue;
        char detail[256];
        nexus_err_t rc = s_set_key(&table[i], settings, value, detail, sizeof detail);
        if (rc != NEXUS_OK) {
            s_err(err_buf, err_size, "environment %s: %s", env_name, detail);
            return rc;
        }
    }
    return NEXUS_OK;
}

static bool s_is_passthrough(const char *arg, const char *const *passthrough)
{
    for (size_t i = 0; passthrough && passthrough[i]; i++)
        if (strcmp(arg, passthrough[i]) == 0)
            return true;
    return false;
}

/*  Each argument is one of:
    1. an exact passthrough entry ("-v"): skipped, the caller handles it;
    2. "--name=value": the value may be empty or contain '=';
    3. "--name value": the next argument is the value; one that starts with
       "--" is taken as a forgotten value, not as a value, since no size,
       duration or choice starts that way;
    4. anything else: an unknown short flag or a stray word, both errors
       so that a typo never silently runs with the default.               */
nexus_err_t nx_conf_load_args(const nx_conf_key_t *table, size_t count, void *settings, int argc,
                              char **argv, int first, const char *const *passthrough, char *err_buf,
                              size_t err_size)
{
    for (int i = first < 0 ? 0 : first; i < argc; i++) {
        const char *arg = argv[i];
        if (!arg)
            continue;
        if (s_is_passthrough(arg, passthrough))
            continue;
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (arg[0] == '-' && arg[1] != '\0' && arg[1] != '-') {
                s_err(err_buf, err_size, "unknown flag '%s'", arg);
                return NEXUS_ERR_NOT_FOUND;
            }
            s_err(err_buf, err_size, "unexpected argument '%s'", arg);
            return NEXUS_ERR_INVALID;
        }
        const char *name = arg + 2;
        const char *equals = strchr(name, '=');
        size_t name_len = equals ? (size_t)(equals - name) : strlen(name);
        const nx_conf_key_t *key = s_find(table, count, name, name_len);
        if (!key) {
            s_err(err_buf, err_size, "unknown flag '--%.*s'", (int)name_len, name);
            return NEXUS_ERR_NOT_FOUND;
        }
        const char *value;
        if (equals)
            value = equals + 1;
        else {
            if (i + 1 >= argc || !argv[i + 1] || strncmp(argv[i + 1], "--", 2) == 0) {
                s_err(err_buf, err_size, "flag '--%.*s' needs a value", (int)name_len, name);
                return NEXUS_ERR_INVALID;
            }
            value = argv[++i];
        }
        char detail[256];
        nexus_err_t rc = s_set_key(key, settings, value, detail, sizeof detail);
        if (rc != NEXUS_OK) {
            s_err(err_buf, err_size, "--%.*s: %s", (int)name_len, name, detail);
            return rc;
        }
    }
    return NEXUS_OK;
}

/*  What --help shows after the flag name.                                 */
static const char *s_metavar(const nx_conf_key_t *key)
{
    switch (key->type) {
    case NX_CONF_STRING:
        return "TEXT";
    case NX_CONF_U64:
        return "N";
    case NX_CONF_SIZE:
        return "SIZE";
    case NX_CONF_DURATION:
        return "DURATION";
    case NX_CONF_BOOL:
        return "BOOL";
    case NX_CONF_ENUM:
        return key->choices ? key->choices : "CHOICE";
    }
    return "VALUE";
}

/*  "--max-payload SIZE": the name as a flag is written, with dashes.      */
static void s_flag_text(const nx_conf_key_t *key, char *buf, size_t size)
{
    int n = snprintf(buf, size, "--%s %s", key->name, s_metavar(key));
    size_t end = n < 0 ? 0 : ((size_t)n < size ? (size_t)n : size - 1);
    for (size_t i = 2; i < end && buf[i] != ' '; i++)
        if (buf[i] == '_')
            buf[i] = '-';
}

void nx_conf_print_help(const nx_conf_key_t *table, size_t count, FILE *out)
{
    char flag[S_NAME_MAX + 64];
    size_t width = 0;
    for (size_t i = 0; i < count; i++) {
        s_flag_text(&table[i], flag, sizeof flag);
        if (strlen(flag) > width)
            width = strlen(flag);
    }
    for (size_t i = 0; i < count; i++) {
        const nx_conf_key_t *key = &table[i];
        s_flag_text(key, flag, sizeof flag);
        fprintf(out, "  %-*s  %s", (int)width, flag, key->help ? key->help : "");
        char bounds[2 * S_NUM_MAX + 16] = "";
        if (s_is_numeric(key->type) && (key->min || key->max))
            s_format_bounds(key, bounds, sizeof bounds);
        /*  An empty default says so ("none" read as the value none).     */
        const char *dflt = key->dflt && !*key->dflt ? "empty" : key->dflt;
        if (dflt && *bounds)
            fprintf(out, " (default %s, %s)", dflt, bounds);
        else if (dflt)
            fprintf(out, " (default %s)", dflt);
        else if (*bounds)
            fprintf(out, " (%s)", bounds);
        fputc('\n', out);
    }
}

/*  ZPL has no escapes: a value is quoted with whichever quote it does not
    contain. A value holding both kinds (or a newline) cannot be written
    exactly; it is rare enough in paths and endpoints to accept.           */
static void s_print_string(FILE *out, const char *name, const char *value)
{
    char quote = strchr(value, '"') ? '\'' : '"';
    fprintf(out, "%s = %c%s%c\n", name, quote, value, quote);
}

void nx_conf_print(const nx_conf_key_t *table, size_t count, const void *settings, FILE *out)
{
    for (size_t i = 0; i < count; i++) {
        const nx_conf_key_t *key = &table[i];
        const char *field = (const char *)settings + key->offset;
        if (key->help)
            fprintf(out, "#   %s\n", key->help);
        switch (key->type) {
        case NX_CONF_STRING: {
            const char *value;
            memcpy(&value, field, sizeof value);
            if (value)
                s_print_string(out, key->name, value);
            else
                fprintf(out, "#%s =\n", key->name);
            break;
        }
        case NX_CONF_U64:
        case NX_CONF_SIZE:
        case NX_CONF_DURATION: {
            uint64_t number;
            char text[S_NUM_MAX];
            memcpy(&number, field, sizeof number);
            s_format_number(key->type, number, text);
            fprintf(out, "%s = %s\n", key->name, text);
            break;
        }
        case NX_CONF_BOOL: {
            bool flag;
            memcpy(&flag, field, sizeof flag);
            fprintf(out, "%s = %s\n", key->name, flag ? "true" : "false");
            break;
        }
        case NX_CONF_ENUM: {
            int index;
            char choice[64];
            memcpy(&index, field, sizeof index);
            fprintf(out, "%s = %s\n", key->name,
                    s_choice_name(key->choices, index, choice, sizeof choice));
            break;
        }
        }
    }
}

void nx_conf_free(const nx_conf_key_t *table, size_t count, void *settings)
{
    for (size_t i = 0; i < count; i++) {
        if (table[i].type != NX_CONF_STRING)
            continue;
        char **slot = (char **)((char *)settings + table[i].offset);
        free(*slot);
        *slot = NULL;
    }
}

nx_conf_next_t nx_conf_main(const nx_conf_key_t *table, size_t count, void *settings, int argc,
                            char **argv, const char *program, void (*usage)(FILE *out),
                            bool *verbose)
{
    const char *config_file = NULL;
    bool print_config = false;
    *verbose = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return NX_CONF_EXIT_OK;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("%s %s\n", program, NEXUS_VERSION_STRING);
            return NX_CONF_EXIT_OK;
        }
        if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose"))
            *verbose = true;
        else if (!strcmp(argv[i], "--print-config"))
            print_config = true;
        else if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: %s needs a file name\n", program, argv[i]);
                return NX_CONF_EXIT_USAGE;
            }
            config_file = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9))
            config_file = argv[i] + 9;
    }
    char err[512] = "";
    static const char *const passthrough[] = {"-v", "--verbose", "--print-config", NULL};
    nexus_err_t rc = nx_conf_defaults(table, count, settings, err, sizeof err);
    if (!rc && config_file)
        rc = nx_conf_load_file(table, count, settings, config_file, err, sizeof err);
    if (!rc)
        rc = nx_conf_load_env(table, count, settings, err, sizeof err);
    if (!rc) {
        /*  -c FILE was read above; the flag parser does not see it.        */
        char **args = calloc((size_t)argc + 1, sizeof *args);
        if (!args)
            return NX_CONF_EXIT_USAGE;
        int n = 0;
        for (int i = 0; i < argc; i++) {
            if (i > 0 && (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config"))) {
                i++;
                continue;
            }
            if (i > 0 && !strncmp(argv[i], "--config=", 9))
                continue;
            args[n++] = argv[i];
        }
        rc = nx_conf_load_args(table, count, settings, n, args, 1, passthrough, err, sizeof err);
        free(args);
    }
    /*  -v is log_level debug, whatever else set it, so that
        --print-config shows what the program will do.                     */
    if (!rc && *verbose &&
        nx_conf_set(table, count, settings, "log_level", "debug", err, sizeof err) ==
            NEXUS_ERR_NOT_FOUND)
        rc = NEXUS_OK;
    if (rc) {
        fprintf(stderr, "%s: %s (see %s --help)\n", program, err, program);
        return NX_CONF_EXIT_USAGE;
    }
    if (print_config) {
        nx_conf_print(table, count, settings, stdout);
        return NX_CONF_EXIT_OK;
    }
    return NX_CONF_RUN;
}
