/*  =========================================================================
    nx_topic - topic grammar and pattern matching.

    Everything here works on (pointer, length) pairs that are NOT
    NUL-terminated, never reads past the length and never allocates: the
    matcher runs once per event in every subscriber.

    nx_pattern_match does not validate topic and pattern first and then
    match; it validates while it matches, in one walk. That is safe because a
    match consumes every byte of both: literal pattern tokens are compared
    byte for byte with topic tokens that were validated, and wildcard tokens
    consume whole validated topic tokens. A mismatch returns false without
    looking at the rest, which is fine since false is also the answer for
    invalid input.
    =========================================================================
*/

#include <string.h>

#include "nx_topic.h"

#define S_BROADCAST     "broadcast"
#define S_BROADCAST_LEN (sizeof(S_BROADCAST) - 1)

/*  Returns the length of the valid UTF-8 sequence that starts at s[i] with a
    non-ASCII lead byte, or 0 when it is invalid: a stray continuation byte,
    C0/C1 or F5..FF leads, overlong forms, surrogates (ED A0..BF), code
    points above U+10FFFF, or a sequence cut short by len. The ranges are
    those of Unicode table 3-7, so no decoding is needed.                   */
size_t nx_utf8_seq(const unsigned char *s, size_t len, size_t i)
{
    unsigned char c = s[i];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the 2nd byte     */

    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* below is overlong                                  */
        else if (c == 0xed)
            hi = 0x9f; /* above is a UTF-16 surrogate                         */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90; /* below is overlong                                  */
        else if (c == 0xf4)
            hi = 0x8f; /* above is past U+10FFFF                              */
    } else
        return 0;

    if (len - i < n)
        return 0;
    if (s[i + 1] < lo || s[i + 1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++)
        if ((s[i + k] & 0xc0) != 0x80)
            return 0;
    return n;
}

bool nx_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < len;) {
        if (s[i] < 0x80)
            i++;
        else {
            size_t n = nx_utf8_seq(s, len, i);
            if (n == 0)
                return false;
            i += n;
        }
    }
    return true;
}

size_t nx_utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    /*  Back off over continuation bytes to the start of the character.    */
    while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
        max--;
    return max;
}

void nx_utf8_scrub(char *s)
{
    unsigned char *u = (unsigned char *)s;
    size_t len = strlen(s);
    for (size_t i = 0; i < len;) {
        size_t n = u[i] < 0x80 ? 1 : nx_utf8_seq(u, len, i);
        if (n == 0) {
            u[i] = '?';
            n = 1;
        }
        i += n;
    }
}

/*  What each byte may be in a literal token: every event on the event plane
    is validated, so the scan is one table load per byte (S_OK for printable
    ASCII but '*' and '>'). Bytes from 0x80 are checked as UTF-8.           */
enum { S_BAD = 0, S_OK = 1, S_DOT = 2, S_HIGH = 3 };

#define S_ROW_OK(c) ((c) <= 0x20 || (c) == 0x7f || (c) == '*' || (c) == '>' ? S_BAD : S_OK)
#define S_CLASS(c)  ((c) >= 0x80 ? S_HIGH : (c) == '.' ? S_DOT : S_ROW_OK(c))
#define S_C4(c)     S_CLASS(c), S_CLASS((c) + 1), S_CLASS((c) + 2), S_CLASS((c) + 3)
#define S_C16(c)    S_C4(c), S_C4((c) + 4), S_C4((c) + 8), S_C4((c) + 12)
#define S_C64(c)    S_C16(c), S_C16((c) + 16), S_C16((c) + 32), S_C16((c) + 48)
static const unsigned char s_class[256] = {S_C64(0), S_C64(64), S_C64(128), S_C64(192)};

/*  Scans one literal token starting at s[i]. Returns false when it is empty
    or holds a byte the grammar forbids; otherwise sets *end to the index of
    the '.' that ends it, or to len.                                        */
static bool s_token(const unsigned char *s, size_t len, size_t i, size_t *end)
{
    size_t start = i;
    while (i < len) {
        unsigned char k = s_class[s[i]];
        if (k == S_OK)
            i++;
        else if (k == S_DOT)
            break;
        else if (k == S_BAD)
            return false;
        else {
            size_t n = nx_utf8_seq(s, len, i);
            if (n == 0)
                return false;
            i += n;
        }
    }
    if (i == start)
        return false;
    *end = i;
    return true;
}

/*  True when the token at s[i] is exactly the one-byte token c.            */
static bool s_is_wild(const char *s, size_t len, size_t i, char c)
{
    return s[i] == c && (i + 1 == len || s[i + 1] == '.');
}

static bool s_is_broadcast(const char *s, size_t len)
{
    return len == S_BROADCAST_LEN && memcmp(s, S_BROADCAST, S_BROADCAST_LEN) == 0;
}

/*  Validates a whole topic or pattern. In a pattern a token may be "*", and
    the last token may be ">".                                              */
static bool s_valid(const char *str, size_t len, bool pattern)
{
    if (!str || len == 0 || len > NX_TOPIC_MAX)
        return false;
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    size_t tokens = 0;
    while (true) {
        size_t end;
        if (++tokens > NX_TOKENS_MAX)
            return false;
        if (pattern && i < len && s_is_wild(str, len, i, '*'))
            end = i + 1;
        else if (pattern && i < len && s_is_wild(str, len, i, '>')) {
            end = i + 1;
            if (end != len)
                return false; /* '>' only as the last token                  */
        } else if (!s_token(s, len, i, &end))
            return false;
        if (end == len)
            return true;
        i = end + 1; /* skip the '.'; an empty token after it fails above */
    }
}

bool nx_topic_valid(const char *topic, size_t len)
{
    return s_valid(topic, len, false);
}

bool nx_pattern_valid(const char *pattern, size_t len)
{
    if (pattern && s_is_broadcast(pattern, len))
        return true;
    return s_valid(pattern, len, true);
}

const char *nx_topic_why(const char *str, size_t len, bool pattern)
{
    if (pattern ? nx_pattern_valid(str, len) : nx_topic_valid(str, len))
        return NULL;
    if (!str || len == 0)
        return "it is empty";
    if (len > NX_TOPIC_MAX)
        return "it is over 255 bytes";
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, tokens = 0;
    while (true) {
        size_t end = i;
        while (end < len && s[end] != '.')
            end++;
        if (end == i)
            return "it has an empty token (two dots in a row, or a dot at an end)";
        if (++tokens > NX_TOKENS_MAX)
            return "it has more than 32 tokens";
        bool wild = end == i + 1 && (s[i] == '*' || s[i] == '>');
        if (wild && !pattern)
            return "'*' and '>' are wildcards: patterns have them, topics do not";
        if (wild && s[i] == '>' && end != len)
            return "'>' may only be the last token";
        for (size_t k = i; !wild && k < end;) {
            if (s[k] == ' ')
                return "it has a space";
            if (s[k] < 0x20 || s[k] == 0x7f)
                return "it has a control character";
            if (s[k] == '*' || s[k] == '>')
                return pattern ? "'*' and '>' are whole tokens only" : "it has '*' or '>'";
            if (s[k] < 0x80) {
                k++;
                continue;
            }
            size_t n = nx_utf8_seq(s, len, k);
            if (n == 0)
                return "it is not valid UTF-8";
            k += n;
        }
        if (end == len)
            break;
        i = end + 1;
    }
    return "it breaks the topic grammar";
}

bool nx_pattern_is_all(const char *pattern, size_t len)
{
    return pattern && ((len == 1 && pattern[0] == '>') || s_is_broadcast(pattern, len));
}

bool nx_pattern_match(const char *pattern, size_t plen, const char *topic, size_t tlen)
{
    if (!pattern || !topic || plen == 0 || tlen == 0 || plen > NX_TOPIC_MAX || tlen > NX_TOPIC_MAX)
        return false;
    if (s_is_broadcast(pattern, plen))
        return nx_topic_valid(topic, tlen);

    const unsigned char *t = (const unsigned char *)topic;
    size_t pi = 0, ti = 0;
    size_t tokens = 0;
    while (true) {
        size_t tend;
        /* Both sides must have a token here; an empty pattern token (from
           "a..b", ".a" or "a.") never matches.                            */
        if (pi >= plen || pattern[pi] == '.' || ti >= tlen)
            return false;
        if (++tokens > NX_TOKENS_MAX)
            return false;
        if (s_is_wild(pattern, plen, pi, '>')) {
            if (pi + 1 != plen)
                return false; /* '>' that is not last: invalid pattern      */
            /* One or more tokens, all valid, make up the rest of the topic. */
            while (true) {
                if (!s_token(t, tlen, ti, &tend))
                    return false;
                if (tend == tlen)
                    return true;
                ti = tend + 1;
                if (++tokens > NX_TOKENS_MAX)
                    return false;
            }
        }
        if (!s_token(t, tlen, ti, &tend))
            return false;
        if (s_is_wild(pattern, plen, pi, '*'))
            pi++;
        else {
            size_t n = tend - ti;
            if (plen - pi < n || memcmp(pattern + pi, topic + ti, n) != 0)
                return false;
            pi += n;
            if (pi < plen && pattern[pi] != '.')
                return false; /* pattern token is longer than topic token  */
        }
        ti = tend;
        /* Both now sit on a '.' or at their end; they must agree.         */
        if (pi == plen || ti == tlen)
            return pi == plen && ti == tlen;
        pi++;
        ti++;
    }
}

bool nx_pattern_matches(const char *pattern, const char *topic)
{
    if (!pattern || !topic)
        return false;
    return nx_pattern_match(pattern, strlen(pattern), topic, strlen(topic));
}

/*  An invalid pattern gets prefix 0: it matches nothing, and 0 is the one
    prefix that cannot make a subscriber miss anything it should see.       */
size_t nx_pattern_prefix(const char *pattern, size_t len)
{
    if (!nx_pattern_valid(pattern, len) || s_is_broadcast(pattern, len))
        return 0;
    size_t i = 0;
    while (i < len) {
        if (s_is_wild(pattern, len, i, '*') || s_is_wild(pattern, len, i, '>'))
            return i;
        const char *dot = memchr(pattern + i, '.', len - i);
        if (!dot)
            break;
        i = (size_t)(dot - pattern) + 1;
    }
    return len;
}

/*  An invalid pattern is not literal: it matches no topic at all.          */
bool nx_pattern_is_literal(const char *pattern, size_t len)
{
    if (!nx_pattern_valid(pattern, len) || s_is_broadcast(pattern, len))
        return false;
    return nx_pattern_prefix(pattern, len) == len;
}

bool nx_session_id_valid(const char *id, size_t len)
{
    if (!id || len == 0 || len > NX_SESSION_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == ':' || c == '@'))
            return false;
    }
    return true;
}
