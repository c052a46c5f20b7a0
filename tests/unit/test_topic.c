/*  =========================================================================
    test_topic - the topic grammar, the matcher and pattern prefixes, as
    tables of cases so that a new edge case is one line.
    =========================================================================
*/

#include <stdlib.h>

#include "nx_test.h"
#include "nx_topic.h"

typedef struct {
    const char *str; /* topic or pattern, NUL-terminated for the table     */
    bool valid;      /* expected validity                                  */
} s_valid_case_t;

typedef struct {
    const char *pattern;
    const char *topic;
    bool match;
} s_match_case_t;

typedef struct {
    const char *pattern;
    size_t prefix; /* expected nx_pattern_prefix                          */
    bool literal;  /* expected nx_pattern_is_literal                      */
} s_prefix_case_t;

static const s_valid_case_t s_topics[] = {
    {"a", true},
    {"work.claimed", true},
    {"a.b.c.d", true},
    {"broadcast", true},
    {"caf\xc3\xa9.\xc3\xbc", true},          /* café.ü                       */
    {"\xe2\x82\xac.\xf0\x9f\x98\x80", true}, /* €.😀 (3- and 4-byte forms)  */
    {"\xf4\x8f\xbf\xbf", true},              /* U+10FFFF, the last one       */
    {"a-b_c:d/e", true},
    {"", false},
    {".", false},
    {"a..b", false},
    {".a", false},
    {"a.", false},
    {"a b", false},
    {" ", false},
    {"a\tb", false},
    {"a\x01", false},
    {"a\x1f", false},
    {"a\x7f", false},
    {"*", false},
    {">", false},
    {"a.*", false},
    {"a.>", false},
    {"a*", false},
    {"a>b", false},
    {"\xff", false},             /* never valid in UTF-8                  */
    {"a\xc3", false},            /* truncated 2-byte sequence             */
    {"\xc3.a", false},           /* truncated by a '.'                    */
    {"\xc0\xaf", false},         /* overlong '/'                          */
    {"\xc1\xbf", false},         /* overlong                              */
    {"\xe0\x80\xaf", false},     /* overlong 3-byte                       */
    {"\xf0\x80\x80\xaf", false}, /* overlong 4-byte                       */
    {"\xed\xa0\x80", false},     /* surrogate U+D800                      */
    {"\xed\xbf\xbf", false},     /* surrogate U+DFFF                      */
    {"\xf4\x90\x80\x80", false}, /* above U+10FFFF                        */
    {"\xf5\x80\x80\x80", false}, /* lead byte above F4                    */
    {"\x80", false},             /* stray continuation byte               */
    {"\xe2\x82", false},         /* truncated 3-byte sequence             */
    {"\xf0\x9f\x98", false},     /* truncated 4-byte sequence             */
    {"\xe2\x28\xa1", false},     /* bad continuation                      */
};

static const s_valid_case_t s_patterns[] = {
    {"a", true},
    {"a.b", true},
    {"*", true},
    {">", true},
    {"broadcast", true},
    {"work.*", true},
    {"*.b", true},
    {"a.*.c", true},
    {"*.*", true},
    {"a.>", true},
    {"*.>", true},
    {"caf\xc3\xa9.*", true},
    {"broadcast.*", true},
    {"", false},
    {".", false},
    {"a..b", false},
    {".a", false},
    {"a.", false},
    {"a*", false},
    {"*b", false},
    {"**", false},
    {">x", false},
    {"x>", false},
    {">>", false},
    {">.a", false},
    {"a.>.b", false},
    {"*.>.*", false},
    {"a b.*", false},
    {"a.\x01", false},
    {"\xff.*", false},
    {"\xed\xa0\x80.>", false},
    {"*.", false},
    {".>", false},
};

static const s_match_case_t s_matches[] = {
    /* exact                                                              */
    {"a", "a", true},
    {"a.b", "a.b", true},
    {"a.b", "a.bc", false},
    {"a.bc", "a.b", false},
    {"a.b", "a", false},
    {"a", "a.b", false},
    {"a.b", "a.c", false},
    {"caf\xc3\xa9.\xc3\xbc", "caf\xc3\xa9.\xc3\xbc", true},
    /* '*': exactly one token                                             */
    {"work.*", "work.claimed", true},
    {"work.*", "work.a.b", false},
    {"work.*", "work", false},
    {"work.*", "worker.claimed", false},
    {"*", "a", true},
    {"*", "a.b", false},
    {"*.b", "a.b", true},
    {"*.b", "x.b", true},
    {"*.b", "a.c", false},
    {"*.b", "b", false},
    {"*.b", "a.b.c", false},
    {"a.*.c", "a.x.c", true},
    {"a.*.c", "a.x.y.c", false},
    {"*.*", "a.b", true},
    {"*.*", "a", false},
    {"*", "caf\xc3\xa9", true},
    /* '>': one or more trailing tokens                                   */
    {">", "a", true},
    {">", "a.b.c", true},
    {"a.>", "a", false},
    {"a.>", "a.b", true},
    {"a.>", "a.b.c", true},
    {"a.>", "b.c", false},
    {"a.>", "ab.c", false},
    {"*.>", "a.b", true},
    {"*.>", "a", false},
    /* broadcast                                                          */
    {"broadcast", "a", true},
    {"broadcast", "a.b.c", true},
    {"broadcast", "broadcast", true},
    {"broadcast.*", "broadcast.x", true},
    {"broadcast.*", "a.x", false},
    /* invalid topic never matches, whatever the pattern                  */
    {">", "", false},
    {">", "a..b", false},
    {">", ".a", false},
    {">", "a.", false},
    {"broadcast", "a b", false},
    {"broadcast", "\xff", false},
    {"*", "\xc3", false},
    {"*", "*", false},
    {">", "a.>", false},
    {"a.*", "a.*", false},
    {"a.>", "a.\xed\xa0\x80", false},
    {"a.>", "a.b.\xc0\xaf", false},
    {"*", "a\x7f", false},
    /* invalid pattern never matches                                      */
    {"", "a", false},
    {"a..b", "a..b", false},
    {"a.", "a.b", false},
    {".a", "a", false},
    {">.a", "x.a", false},
    {"a*", "a", false},
    {"*b", "b", false},
    {">x", "a", false},
};

static const s_prefix_case_t s_prefixes[] = {
    {"work.*", 5, false},
    {"a.b", 3, true},
    {"a", 1, true},
    {"a.>", 2, false},
    {"a.b.*.d", 4, false},
    {"*", 0, false},
    {"*.b", 0, false},
    {">", 0, false},
    {"broadcast", 0, false},
    {"broadcast.x", 11, true},
    {"caf\xc3\xa9.>", 6, false},
    /* invalid patterns: prefix 0, never literal                          */
    {"", 0, false},
    {"a..b", 0, false},
    {"a*", 0, false},
};

#define S_COUNT(table) (sizeof(table) / sizeof((table)[0]))

static void s_test_tables(void)
{
    for (size_t i = 0; i < S_COUNT(s_topics); i++) {
        const s_valid_case_t *c = &s_topics[i];
        bool got = nx_topic_valid(c->str, strlen(c->str));
        if (got != c->valid)
            fprintf(stderr, "topic case %zu\n", i);
        CHECK(got == c->valid);
    }
    for (size_t i = 0; i < S_COUNT(s_patterns); i++) {
        const s_valid_case_t *c = &s_patterns[i];
        bool got = nx_pattern_valid(c->str, strlen(c->str));
        if (got != c->valid)
            fprintf(stderr, "pattern case %zu\n", i);
        CHECK(got == c->valid);
    }
    /* Every valid topic is a valid (literal) pattern.                     */
    for (size_t i = 0; i < S_COUNT(s_topics); i++)
        if (s_topics[i].valid)
            CHECK(nx_pattern_valid(s_topics[i].str, strlen(s_topics[i].str)));

    for (size_t i = 0; i < S_COUNT(s_matches); i++) {
        const s_match_case_t *c = &s_matches[i];
        bool got = nx_pattern_matches(c->pattern, c->topic);
        if (got != c->match)
            fprintf(stderr, "match case %zu: '%s' vs '%s'\n", i, c->pattern, c->topic);
        CHECK(got == c->match);
        /* The (ptr, len) form must agree, on a copy with no terminator.   */
        size_t plen = strlen(c->pattern), tlen = strlen(c->topic);
        char *p = malloc(plen ? plen : 1), *t = malloc(tlen ? tlen : 1);
        memcpy(p, c->pattern, plen);
        memcpy(t, c->topic, tlen);
        CHECK(nx_pattern_match(p, plen, t, tlen) == c->match);
        free(p);
        free(t);
    }
    for (size_t i = 0; i < S_COUNT(s_prefixes); i++) {
        const s_prefix_case_t *c = &s_prefixes[i];
        size_t len = strlen(c->pattern);
        if (nx_pattern_prefix(c->pattern, len) != c->prefix)
            fprintf(stderr, "prefix case %zu: '%s'\n", i, c->pattern);
        CHECK_EQ_U64(nx_pattern_prefix(c->pattern, len), c->prefix);
        CHECK(nx_pattern_is_literal(c->pattern, len) == c->literal);
    }
}

/*  A literal pattern matches exactly the topic it spells; every valid topic
    is matched by '>' and by "broadcast".                                   */
static void s_test_self_match(void)
{
    for (size_t i = 0; i < S_COUNT(s_topics); i++) {
        const s_valid_case_t *c = &s_topics[i];
        CHECK(nx_pattern_matches(c->str, c->str) == c->valid);
        CHECK(nx_pattern_matches(">", c->str) == c->valid);
        CHECK(nx_pattern_matches("broadcast", c->str) == c->valid);
    }
}

/*  Length limits: 255 bytes and 32 tokens are fine, one more is not.        */
static void s_test_limits(void)
{
    char buf[NX_TOPIC_MAX + 2];

    memset(buf, 'x', sizeof(buf));
    CHECK(nx_topic_valid(buf, NX_TOPIC_MAX));
    CHECK(!nx_topic_valid(buf, NX_TOPIC_MAX + 1));
    CHECK(nx_pattern_valid(buf, NX_TOPIC_MAX));
    CHECK(!nx_pattern_valid(buf, NX_TOPIC_MAX + 1));
    CHECK(nx_pattern_match(buf, NX_TOPIC_MAX, buf, NX_TOPIC_MAX));
    CHECK(!nx_pattern_match(buf, NX_TOPIC_MAX + 1, buf, NX_TOPIC_MAX + 1));
    CHECK(nx_pattern_match(">", 1, buf, NX_TOPIC_MAX));
    CHECK(!nx_pattern_match(">", 1, buf, NX_TOPIC_MAX + 1));
    CHECK(!nx_pattern_match("broadcast", 9, buf, NX_TOPIC_MAX + 1));
    CHECK_EQ_U64(nx_pattern_prefix(buf, NX_TOPIC_MAX), NX_TOPIC_MAX);
    CHECK_EQ_U64(nx_pattern_prefix(buf, NX_TOPIC_MAX + 1), 0);

    /* "x.x.x...": 32 tokens take 63 bytes, 33 take 65.                     */
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (i % 2) ? '.' : 'x';
    size_t len32 = 2 * NX_TOKENS_MAX - 1, len33 = len32 + 2;
    CHECK(nx_topic_valid(buf, len32));
    CHECK(!nx_topic_valid(buf, len33));
    CHECK(nx_pattern_valid(buf, len32));
    CHECK(!nx_pattern_valid(buf, len33));
    CHECK(nx_pattern_match(buf, len32, buf, len32));
    CHECK(!nx_pattern_match(buf, len33, buf, len33));
    CHECK(nx_pattern_match(">", 1, buf, len32));
    CHECK(!nx_pattern_match(">", 1, buf, len33));
    CHECK(!nx_pattern_match("x.>", 3, buf, len33));
    CHECK(!nx_pattern_match("broadcast", 9, buf, len33));

    /* 32 wildcard tokens are a valid pattern; 33 are not.                   */
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (i % 2) ? '.' : '*';
    CHECK(nx_pattern_valid(buf, len32));
    CHECK(!nx_pattern_valid(buf, len33));

    /* A 255-byte topic of 2-byte characters plus one ASCII byte.           */
    for (size_t i = 0; i + 1 < NX_TOPIC_MAX; i += 2) {
        buf[i] = (char)0xc3;
        buf[i + 1] = (char)0xa9;
    }
    buf[NX_TOPIC_MAX - 1] = 'x';
    CHECK(nx_topic_valid(buf, NX_TOPIC_MAX));
    /* Cut in the middle of a character: truncated sequence.               */
    CHECK(!nx_topic_valid(buf, NX_TOPIC_MAX - 2));
}

/*  The (ptr, len) forms must read only len bytes: bytes after len that
    would change the answer are ignored, and a buffer sized exactly len (on
    the heap, so ASan sees an overread) is safe.                            */
static void s_test_bounds(void)
{
    CHECK(nx_topic_valid("a.b garbage", 3));
    CHECK(nx_pattern_valid("a.* garbage", 3));
    CHECK(nx_pattern_match("a.*xx", 3, "a.byy", 3));
    CHECK(!nx_pattern_match("a.b", 3, "a.b.c", 4)); /* topic "a.b." is bad */
    CHECK(nx_pattern_match(">.a", 1, "a", 1));
    CHECK(nx_topic_valid("\xc3\xa9", 2));
    CHECK(!nx_topic_valid("\xc3\xa9", 1));

    const char *src[] = {"\xc3", "\xe2\x82", "\xf0\x9f\x98", "a.", "a.*", "a.>", "*", ">"};
    for (size_t i = 0; i < S_COUNT(src); i++) {
        size_t len = strlen(src[i]);
        char *p = malloc(len);
        memcpy(p, src[i], len);
        (void)nx_topic_valid(p, len);
        (void)nx_pattern_valid(p, len);
        (void)nx_pattern_match(p, len, p, len);
        (void)nx_pattern_match("a.>", 3, p, len);
        (void)nx_pattern_prefix(p, len);
        (void)nx_pattern_is_literal(p, len);
        free(p);
    }

    /* NULL and zero lengths are just invalid.                              */
    CHECK(!nx_topic_valid(NULL, 3));
    CHECK(!nx_pattern_valid(NULL, 3));
    CHECK(!nx_pattern_match(NULL, 1, "a", 1));
    CHECK(!nx_pattern_match("a", 1, NULL, 1));
    CHECK(!nx_pattern_match("a", 0, "a", 1));
    CHECK(!nx_pattern_matches(NULL, "a"));
    CHECK(!nx_pattern_matches("a", NULL));
    CHECK_EQ_U64(nx_pattern_prefix(NULL, 3), 0);
    CHECK(!nx_pattern_is_literal(NULL, 3));
}

/*  nx_utf8_valid: what msgpack str fields must hold; nx_utf8_cut never
    splits a character.                                                     */
static void s_test_utf8(void)
{
    CHECK(nx_utf8_valid("", 0));
    CHECK(nx_utf8_valid("plain ascii\n", 12));
    CHECK(nx_utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14));
    CHECK(!nx_utf8_valid("\xff", 1));
    CHECK(!nx_utf8_valid("a\x80", 2));            /* stray continuation      */
    CHECK(!nx_utf8_valid("\xc0\xaf", 2));         /* overlong '/'            */
    CHECK(!nx_utf8_valid("\xed\xa0\x80", 3));     /* surrogate               */
    CHECK(!nx_utf8_valid("\xf4\x90\x80\x80", 4)); /* past U+10FFFF         */
    CHECK(!nx_utf8_valid("\xe2\x82", 2));         /* cut short               */
    CHECK(!nx_utf8_valid("\xc3\xa9", 1));         /* len ends mid-character  */

    CHECK_EQ_U64(nx_utf8_cut("abcdef", 6, 10), 6);
    CHECK_EQ_U64(nx_utf8_cut("abcdef", 6, 3), 3);
    /* "a" + e-acute (2 bytes) + euro sign (3 bytes)                       */
    const char *s = "a\xc3\xa9\xe2\x82\xac";
    CHECK_EQ_U64(nx_utf8_cut(s, 6, 1), 1);
    CHECK_EQ_U64(nx_utf8_cut(s, 6, 2), 1);
    CHECK_EQ_U64(nx_utf8_cut(s, 6, 3), 3);
    CHECK_EQ_U64(nx_utf8_cut(s, 6, 4), 3);
    CHECK_EQ_U64(nx_utf8_cut(s, 6, 5), 3);
    CHECK_EQ_U64(nx_utf8_cut(s, 6, 6), 6);
    CHECK_EQ_U64(nx_utf8_cut(s, 6, 0), 0);

    /*  nx_utf8_scrub: valid text untouched, each bad byte one '?'.       */
    char buf[64];
    snprintf(buf, sizeof buf, "%s", s);
    nx_utf8_scrub(buf);
    CHECK(strcmp(buf, s) == 0);
    /*  jansson's text for the fuzz input: a character, two stray bytes.  */
    snprintf(buf, sizeof buf, "near '\"acti\\\xe4\xa3\xa3\xa3\xa1'");
    nx_utf8_scrub(buf);
    CHECK(strcmp(buf, "near '\"acti\\\xe4\xa3\xa3?"
                      "?'") == 0);
    snprintf(buf, sizeof buf, "cut \xe2\x82"); /* a character cut at the end */
    nx_utf8_scrub(buf);
    CHECK(strcmp(buf, "cut ??") == 0);
    snprintf(buf, sizeof buf, "\xed\xa0\x80x\xc3\xa9"); /* surrogate, then e-acute */
    nx_utf8_scrub(buf);
    CHECK(strcmp(buf, "???x\xc3\xa9") == 0);
    CHECK(nx_utf8_valid(buf, strlen(buf)));
}

static void s_test_is_all(void)
{
    CHECK(nx_pattern_is_all(">", 1) && nx_pattern_is_all("broadcast", 9));
    CHECK(!nx_pattern_is_all("*", 1) && !nx_pattern_is_all("*.x", 3));
    CHECK(!nx_pattern_is_all("a.>", 3) && !nx_pattern_is_all("broadcasts", 10));
    CHECK(!nx_pattern_is_all(NULL, 1) && !nx_pattern_is_all(">", 0));
}

/*  Every single byte, in a token of its own and inside one, against the
    grammar spelled out here (the validator looks bytes up in a table).    */
static void s_test_every_byte(void)
{
    for (int b = 0; b < 256; b++) {
        bool ascii_ok = b > 0x20 && b < 0x7f && b != '*' && b != '>' && b != '.';
        char alone[1] = {(char)b}, inside[3] = {'a', (char)b, 'z'};
        bool want = ascii_ok; /* a lone byte >= 0x80 is never UTF-8        */
        if (nx_topic_valid(alone, 1) != want)
            fprintf(stderr, "byte 0x%02x: want %s\n", b, want ? "valid" : "invalid");
        CHECK(nx_topic_valid(alone, 1) == want);
        CHECK(nx_topic_valid(inside, 3) == (want || b == '.'));
        char dotted[5] = {'a', '.', (char)b, '.', 'z'};
        CHECK(nx_topic_valid(dotted, 5) == want);
    }
    /*  '.' separates: valid between tokens, never at an end or doubled.    */
    CHECK(nx_topic_valid("a.z", 3) && !nx_topic_valid(".", 1) && !nx_topic_valid("a..z", 4));
    /*  Multibyte UTF-8 still goes through the sequence check.             */
    CHECK(nx_topic_valid("a.\xc3\xa9", 4) && !nx_topic_valid("a.\xc3", 3));
    CHECK(!nx_topic_valid("\xed\xa0\x80", 3)); /* a surrogate                     */
}

/*  nx_topic_why names the first thing wrong, and nothing for what is valid. */
static void s_test_why(void)
{
    static const struct {
        const char *s;
        bool pattern;
        const char *want; /* a part of the reason; NULL: valid */
    } cases[] = {
        {"work.done", false, NULL},
        {"work.*", true, NULL},
        {"work.>", true, NULL},
        {"broadcast", true, NULL},
        {"", false, "empty"},
        {"a b", false, "space"},
        {"a..b", false, "empty token"},
        {".a", false, "empty token"},
        {"a.", true, "empty token"},
        {"a.*", false, "wildcards"},
        {"a.>.b", true, "last token"},
        {"a*b", true, "whole tokens"},
        {"a*b", false, "'*' or '>'"},
        {"a.\x01", false, "control"},
        {"a.\xff", false, "UTF-8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *why = nx_topic_why(cases[i].s, strlen(cases[i].s), cases[i].pattern);
        if (!cases[i].want)
            CHECK(why == NULL);
        else
            CHECK(why && strstr(why, cases[i].want));
    }
    char big[300];
    memset(big, 'x', sizeof big);
    CHECK(strstr(nx_topic_why(big, sizeof big, false), "255"));
    char many[100] = "";
    for (int i = 0; i < 33; i++)
        strcat(many, i ? ".t" : "t");
    CHECK(strstr(nx_topic_why(many, strlen(many), false), "32 tokens"));
}

int main(void)
{
    s_test_why();
    s_test_every_byte();
    s_test_utf8();
    s_test_is_all();
    s_test_tables();
    s_test_self_match();
    s_test_limits();
    s_test_bounds();
    NX_TEST_DONE();
}
