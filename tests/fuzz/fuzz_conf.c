/*  =========================================================================
    fuzz_conf - the configuration parser (sdk/proto/nx_conf.c) with the
    tables of nexusd and nexus-gateway: ZPL files, command-line flags and
    single values.

    Input: one byte that picks the table (bit 0: gateway) and the source
    (bits 1-2: 0-1 a ZPL file, 2 flags separated by NUL bytes, 3 one
    "name NUL value"), then the text. Promises checked:
      - a refused input says why (a non-empty message);
      - settings that loaded print (--print-config) as a file that loads
        back to the same settings, unless a string holds both quote kinds
        or a line break (nx_conf_print says it cannot write those);
      - a size or duration that parses prints as text that parses back to
        the same number.
    =========================================================================
*/

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "nx_broker_config.h"
#include "nx_conf.h"
#include "nx_gw_config.h"

typedef struct {
    const nx_conf_key_t *keys;
    size_t count;
    size_t size; /* of the settings struct */
} s_table_t;

static const char *const s_passthrough[] = {"-v", NULL};

/*  True when nx_conf_print can write this string so that it reads back.  */
static bool s_printable(const char *s)
{
    return !s || !((strchr(s, '"') && strchr(s, '\'')) || strpbrk(s, "\r\n"));
}

static bool s_all_printable(const s_table_t *t, const void *settings)
{
    for (size_t i = 0; i < t->count; i++)
        if (t->keys[i].type == NX_CONF_STRING) {
            const char *v;
            memcpy(&v, (const char *)settings + t->keys[i].offset, sizeof v);
            if (!s_printable(v))
                return false;
        }
    return true;
}

/*  Compares two settings structs key by key; returns the first key that
    differs, or NULL.                                                      */
static const char *s_differ(const s_table_t *t, const void *a, const void *b)
{
    for (size_t i = 0; i < t->count; i++) {
        const nx_conf_key_t *k = &t->keys[i];
        const char *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
        switch (k->type) {
        case NX_CONF_STRING: {
            const char *sa, *sb;
            memcpy(&sa, fa, sizeof sa);
            memcpy(&sb, fb, sizeof sb);
            if ((sa == NULL) != (sb == NULL) || (sa && strcmp(sa, sb) != 0))
                return k->name;
            break;
        }
        case NX_CONF_U64:
        case NX_CONF_SIZE:
        case NX_CONF_DURATION:
            if (memcmp(fa, fb, sizeof(uint64_t)) != 0)
                return k->name;
            break;
        case NX_CONF_BOOL:
            if (memcmp(fa, fb, sizeof(bool)) != 0)
                return k->name;
            break;
        case NX_CONF_ENUM:
            if (memcmp(fa, fb, sizeof(int)) != 0)
                return k->name;
            break;
        }
    }
    return NULL;
}

/*  Prints settings as a config file and loads that file into fresh
    defaults: it must load, and to the same settings.                     */
static void s_round_trip(const s_table_t *t, const void *settings)
{
    if (!s_all_printable(t, settings))
        return;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    FZ_CHECK(out, "open_memstream");
    nx_conf_print(t->keys, t->count, settings, out);
    fclose(out);
    void *again = calloc(1, t->size);
    char err[512] = "";
    FZ_CHECK(nx_conf_defaults(t->keys, t->count, again, err, sizeof err) == NEXUS_OK,
             "defaults: %s", err);
    nexus_err_t rc = nx_conf_load_file(t->keys, t->count, again,
                                       fz_file((const uint8_t *)text, len), err, sizeof err);
    FZ_CHECK(rc == NEXUS_OK, "--print-config wrote a file that does not load: %s\n%s", err, text);
    const char *key = s_differ(t, settings, again);
    FZ_CHECK(!key, "--print-config changed '%s' on the way back:\n%s", key, text);
    nx_conf_free(t->keys, t->count, again);
    free(again);
    free(text);
}

/*  A size or duration that parses prints back to the same number.        */
static void s_number_round_trip(const char *value)
{
    static const struct {
        const char *name;
        nx_conf_type_t type;
    } kinds[] = {{"max_payload", NX_CONF_SIZE}, {"flush_interval", NX_CONF_DURATION}};
    for (size_t i = 0; i < 2; i++) {
        uint64_t n;
        int rc = kinds[i].type == NX_CONF_SIZE ? nx_conf_parse_size(value, &n)
                                               : nx_conf_parse_duration(value, &n);
        if (rc)
            continue;
        /*  Printed through a one-key table without bounds.                */
        nx_conf_key_t key = {kinds[i].name, kinds[i].type, 0, NULL, 0, 0, NULL, NULL};
        uint64_t settings = n, back = 0;
        char *text = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&text, &len);
        nx_conf_print(&key, 1, &settings, out);
        fclose(out);
        const char *v = strchr(text, '=');
        FZ_CHECK(v, "no value printed");
        v += 2;
        char *copy = strndup(v, strcspn(v, "\n"));
        rc = kinds[i].type == NX_CONF_SIZE ? nx_conf_parse_size(copy, &back)
                                           : nx_conf_parse_duration(copy, &back);
        FZ_CHECK(rc == 0 && back == n, "'%s' is %llu but prints as '%s'", value,
                 (unsigned long long)n, copy);
        free(copy);
        free(text);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const s_table_t tables[2] = {
        {NULL, 0, sizeof(nx_broker_config_t)},
        {NULL, 0, sizeof(nx_gw_config_t)},
    };
    s_table_t t = tables[data[0] & 1];
    t.keys = data[0] & 1 ? nx_gw_conf_keys : nx_broker_conf_keys;
    t.count = data[0] & 1 ? nx_gw_conf_count : nx_broker_conf_count;
    int source = (data[0] >> 1) & 3;
    data++;
    size--;

    void *settings = calloc(1, t.size);
    char err[512] = "";
    FZ_CHECK(nx_conf_defaults(t.keys, t.count, settings, err, sizeof err) == NEXUS_OK,
             "defaults: %s", err);
    nexus_err_t rc;
    if (source <= 1)
        rc = nx_conf_load_file(t.keys, t.count, settings, fz_file(data, size), err, sizeof err);
    else if (source == 2) {
        char *text = fz_strndup(data, size);
        char *argv[64];
        int argc = 0;
        for (char *p = text; argc < 64 && p <= text + size; p += strlen(p) + 1)
            argv[argc++] = p;
        rc = nx_conf_load_args(t.keys, t.count, settings, argc, argv, 0, s_passthrough, err,
                               sizeof err);
        free(text);
    } else {
        char *text = fz_strndup(data, size);
        const char *value = text + strlen(text) + (strlen(text) < size ? 1 : 0);
        rc = nx_conf_set(t.keys, t.count, settings, text, value, err, sizeof err);
        s_number_round_trip(value);
        free(text);
    }
    if (rc == NEXUS_OK)
        s_round_trip(&t, settings);
    else
        FZ_CHECK(err[0], "refused (%d) without a message", (int)rc);
    nx_conf_free(t.keys, t.count, settings);
    free(settings);
    return 0;
}
