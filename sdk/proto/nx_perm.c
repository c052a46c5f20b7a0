/*  =========================================================================
    nx_perm - topic algebra for token permissions. nx_perm.h is the
    contract.
    =========================================================================
*/

#include <string.h>

#include "nx_perm.h"
#include "nx_topic.h"

/*  The next token of s starting at *pos: sets *tok and *tlen, and moves
 *pos past its dot. False at the end.                                       */
static bool s_next(const char *s, size_t len, size_t *pos, const char **tok, size_t *tlen)
{
    if (*pos >= len)
        return false;
    const char *dot = memchr(s + *pos, '.', len - *pos);
    size_t end = dot ? (size_t)(dot - s) : len;
    *tok = s + *pos;
    *tlen = end - *pos;
    *pos = end + 1; /* past the dot; past the end after the last token */
    return true;
}

static bool s_is(const char *tok, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(tok, word, len) == 0;
}

bool nx_perm_within(const char *grant, size_t glen, const char *pattern, size_t plen)
{
    if (nx_pattern_is_all(grant, glen))
        return true;
    if (nx_pattern_is_all(pattern, plen))
        return false;
    size_t gp = 0, pp = 0;
    const char *g, *p;
    size_t gl, pl;
    for (int i = 0; i < 64; i++) {
        bool have_g = s_next(grant, glen, &gp, &g, &gl);
        bool have_p = s_next(pattern, plen, &pp, &p, &pl);
        if (have_g && s_is(g, gl, ">"))
            return have_p; /* one or more tokens of anything             */
        if (!have_g || !have_p)
            return have_g == have_p;
        if (s_is(p, pl, ">"))
            return false; /* only a '>' covers a '>'                       */
        if (s_is(g, gl, "*"))
            continue; /* one token, literal or '*'                        */
        if (gl != pl || memcmp(g, p, gl) != 0)
            return false; /* a literal covers that literal only            */
    }
    return false;
}

bool nx_perm_broker_topic(const char *topic, size_t len)
{
    static const char *const work[] = {"work.claimed", "work.released", "work.completed",
                                       "work.reopened"};
    if (len >= 5 && topic[0] == 'w') {
        for (size_t i = 0; i < sizeof work / sizeof work[0]; i++)
            if (s_is(topic, len, work[i]))
                return true;
        return false;
    }
    if (len < NX_PERM_PRIVATE_LEN || topic[0] != 's' ||
        memcmp(topic, NX_PERM_PRIVATE, NX_PERM_PRIVATE_LEN) != 0)
        return false;
    /*  session.<id>.direct, exactly three tokens, is a client's message.  */
    const char *rest = topic + NX_PERM_PRIVATE_LEN;
    size_t rlen = len - NX_PERM_PRIVATE_LEN;
    const char *dot = memchr(rest, '.', rlen);
    if (!dot)
        return true;
    size_t after = rlen - (size_t)(dot + 1 - rest);
    return !(s_is(dot + 1, after, "direct"));
}

bool nx_perm_names_first(const char *grant, size_t glen, const char *topic, size_t tlen)
{
    const char *gd = memchr(grant, '.', glen), *td = memchr(topic, '.', tlen);
    size_t gl = gd ? (size_t)(gd - grant) : glen, tl = td ? (size_t)(td - topic) : tlen;
    if (gl == 1 && (grant[0] == '*' || grant[0] == '>'))
        return false;
    if (nx_pattern_is_all(grant, glen))
        return false;
    return gl == tl && memcmp(grant, topic, gl) == 0;
}

bool nx_perm_private_owner(const char *topic, size_t len, const char **owner, size_t *owner_len)
{
    if (len <= NX_PERM_PRIVATE_LEN || memcmp(topic, NX_PERM_PRIVATE, NX_PERM_PRIVATE_LEN) != 0)
        return false;
    const char *id = topic + NX_PERM_PRIVATE_LEN;
    const char *dot = memchr(id, '.', len - NX_PERM_PRIVATE_LEN);
    if (!dot || dot == id || (size_t)(dot + 1 - topic) >= len)
        return false;
    *owner = id;
    *owner_len = (size_t)(dot - id);
    return true;
}

bool nx_perm_grant_prefix(const char *grant, size_t glen, char *out, size_t *out_len)
{
    if (nx_pattern_is_all(grant, glen)) {
        *out_len = 0;
        return true;
    }
    if (glen + 1 > NX_PERM_PREFIX_MAX || !nx_pattern_valid(grant, glen))
        return false;
    size_t pos = 0;
    const char *tok;
    size_t tl;
    while (s_next(grant, glen, &pos, &tok, &tl))
        if (s_is(tok, tl, "*"))
            return false;
    if (glen >= 2 && grant[glen - 1] == '>' && grant[glen - 2] == '.') {
        memcpy(out, grant, glen - 1); /* "a.b.>" -> "a.b."                   */
        *out_len = glen - 1;
    } else {
        memcpy(out, grant, glen); /* a literal: the topic and its NUL       */
        out[glen] = 0;
        *out_len = glen + 1;
    }
    return true;
}

/*  Whether byte b may follow, at position k, bytes that are ASCII: the
    topic grammar's printable ASCII (no space, '*' or '>', no '.' first)
    or a UTF-8 lead byte.                                                 */
static bool s_byte_ok(int b, size_t k)
{
    if (b >= 0x21 && b <= 0x7e)
        return b != '*' && b != '>' && !(k == 0 && b == '.');
    return b >= 0xc2 && b <= 0xf4;
}

size_t nx_perm_ladder(const char *mark, size_t len, size_t from, nx_perm_emit_fn *emit, void *arg)
{
    char buf[NX_PERM_PREFIX_MAX];
    size_t n = 0;
    if (len + 1 > sizeof buf)
        return 0;
    for (size_t k = from; k < len; k++) {
        memcpy(buf, mark, k);
        for (int b = 1; b < 256; b++)
            if (b != (unsigned char)mark[k] && s_byte_ok(b, k)) {
                buf[k] = (char)b;
                emit(arg, buf, k + 1);
                n++;
            }
        /*  The topic mark[0..k) itself, when it is one.                   */
        if (k > 0 && nx_topic_valid(mark, k)) {
            buf[k] = 0;
            emit(arg, buf, k + 1);
            n++;
        }
    }
    return n;
}
