/*  =========================================================================
    nx_gw_perm - a gateway client's token permissions (its line in the
    gateway's tokens_file: pub=, sub=, sessions=), applied to what it asks
    and to what it is shown. The rules are nx_auth's, the same as the
    broker's; the names are what clients see (event_type, message.direct).
    =========================================================================
*/

#include <string.h>

#include "nx_gw.h"
#include "nx_topic.h"

bool nx_gw_may_read(nx_gw_t *gw, const void *auth, const char *type)
{
    return !nx_auth_enabled(gw->auth) || nx_auth_may_read(gw->auth, auth, type, strlen(type));
}

bool nx_gw_may_publish(nx_gw_t *gw, const void *auth, json_t *msg, char *why, size_t size)
{
    json_t *type_v = json_object_get(msg, "event_type");
    if (!type_v)
        type_v = json_object_get(msg, "topic");
    const char *type = json_string_value(type_v);
    /*  What is not a topic is nx_front_publish's to refuse.               */
    if (!type || !nx_topic_valid(type, strlen(type)) || !nx_auth_enabled(gw->auth) ||
        nx_auth_may_publish(gw->auth, auth, type, strlen(type)))
        return true;
    char pub[200];
    snprintf(why, size, "this token may not publish '%.64s': its pub= is '%s'%s", type,
             nx_auth_describe(gw->auth, auth, false, pub, sizeof pub),
             nx_perm_broker_topic(type, strlen(type))
                 ? " (a topic the broker publishes needs a pattern that names its first token)"
                 : "");
    return false;
}

bool nx_gw_may_subscribe(nx_gw_t *gw, const void *auth, json_t *patterns, char *why, size_t size)
{
    if (!nx_auth_enabled(gw->auth))
        return true;
    /*  No patterns: every event.                                           */
    size_t n = json_is_array(patterns) ? json_array_size(patterns) : 0;
    for (size_t i = 0; i < (n ? n : 1); i++) {
        const char *p = n ? json_string_value(json_array_get(patterns, i)) : ">";
        if (p && !nx_auth_may_subscribe(gw->auth, auth, p, strlen(p))) {
            char sub[200];
            snprintf(why, size, "this token may not read '%.64s': its sub= is '%s'", p,
                     nx_auth_describe(gw->auth, auth, true, sub, sizeof sub));
            return false;
        }
    }
    return true;
}

bool nx_gw_may_read_history(nx_gw_t *gw, const void *auth, json_t *fields, char *why,
                            size_t size)
{
    json_t *one = json_object_get(fields, "pattern");
    json_t *asked = json_copy(json_object_get(fields, "patterns"));
    if (one) {
        if (!asked)
            asked = json_array();
        json_array_append(asked, one);
    }
    bool ok = nx_gw_may_subscribe(gw, auth, asked, why, size);
    json_decref(asked);
    return ok;
}

json_t *nx_gw_readable(nx_gw_t *gw, const void *auth)
{
    json_t *list = json_array();
    if (!list)
        return NULL;
    if (!nx_auth_enabled(gw->auth) || !nx_auth_sub_restricted(gw->auth, auth)) {
        json_array_append_new(list, json_string(">"));
        return list;
    }
    /*  A tokens-file line is at most 4096 bytes, so its sub= fits: the
        list is never cut (a cut pattern would be a wrong one).            */
    char sub[8192];
    nx_auth_describe(gw->auth, auth, true, sub, sizeof sub);
    char *save = NULL;
    for (char *p = strtok_r(sub, ",", &save); p; p = strtok_r(NULL, ",", &save))
        if (json_array_append_new(list, json_string(p))) {
            json_decref(list);
            return NULL;
        }
    return list;
}

void nx_gw_filter_events(nx_gw_t *gw, const void *auth, json_t *events)
{
    if (!nx_auth_enabled(gw->auth))
        return;
    for (size_t i = json_array_size(events); i-- > 0;) {
        const char *type =
            json_string_value(json_object_get(json_array_get(events, i), "event_type"));
        if (!type || !nx_gw_may_read(gw, auth, type))
            json_array_remove(events, i);
    }
}
