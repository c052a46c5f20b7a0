/*  =========================================================================
    nx_topic - topic grammar and pattern matching, shared by broker, SDK and
    gateway so that all three agree on what matches what.

    A topic is 1..NX_TOPIC_MAX bytes of valid UTF-8 made of tokens separated
    by '.'. A token is non-empty and holds no ASCII control character, no
    space, and none of '*', '>'. Non-ASCII (UTF-8) tokens are allowed.

    A pattern has the same shape, except that a token may be '*' (exactly one
    token) and the last token may be '>' (one or more trailing tokens). The
    patterns ">" and "broadcast" (the seed protocol's word) match every topic.

    ZeroMQ filters subscriptions by byte prefix only, so a subscriber sends
    nx_pattern_prefix () to ZeroMQ and checks nx_pattern_match () itself.
    =========================================================================
*/

#ifndef NX_TOPIC_H_INCLUDED
#define NX_TOPIC_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#define NX_TOPIC_MAX  255 /* bytes in a topic or pattern                     */
#define NX_TOKENS_MAX 32  /* tokens in a topic or pattern                    */

/*  Returns the length of the valid UTF-8 sequence that starts at s[i] with a
    non-ASCII lead byte (2..4), or 0 when it is not valid UTF-8 (stray or
    missing continuation bytes, overlong forms, surrogates, past U+10FFFF).
    The rule topics follow, shared with whatever else must check UTF-8.   */
size_t nx_utf8_seq(const unsigned char *s, size_t len, size_t i);

/*  Returns true when s[0..len) is valid UTF-8 (what msgpack's str type
    promises a reader).                                                     */
bool nx_utf8_valid(const char *s, size_t len);

/*  The longest length <= max at which valid UTF-8 s[0..len) can be cut
    without splitting a character: for quoting client text in messages.    */
size_t nx_utf8_cut(const char *s, size_t len, size_t max);

/*  Replaces, in place, each byte of the NUL-terminated s that is not part
    of valid UTF-8 with '?': for messages that quote what a client sent
    (a JSON parser's error text, a cut at a buffer's end), which a JSON or
    msgpack string must not carry.                                          */
void nx_utf8_scrub(char *s);

/*  Returns true when topic[0..len) is a valid topic (no wildcards).        */
bool nx_topic_valid(const char *topic, size_t len);

/*  Returns true when pattern[0..len) is a valid pattern. "broadcast" and
    ">" are valid and match everything.                                     */
bool nx_pattern_valid(const char *pattern, size_t len);

/*  Why str (len bytes) is not a valid topic (pattern false) or pattern:
    a short phrase for an error message ("it has a space"), or NULL when
    it is valid.                                                            */
const char *nx_topic_why(const char *str, size_t len, bool pattern);

/*  True when pattern[0..len) matches every topic: ">" or "broadcast"
    ("*" matches one-token topics only).                                    */
bool nx_pattern_is_all(const char *pattern, size_t len);

/*  Returns true when topic matches pattern. Both are taken as given: an
    invalid pattern or topic never matches (returns false), it never crashes.
    Matching is by bytes, token by token.                                   */
bool nx_pattern_match(const char *pattern, size_t plen, const char *topic, size_t tlen);

/*  Same, for NUL-terminated strings.                                       */
bool nx_pattern_matches(const char *pattern, const char *topic);

/*  Returns the length of the literal byte prefix of pattern that every
    matching topic starts with: the tokens before the first wildcard,
    including the '.' after them. "work.*" -> 5 ("work."), "a.b" -> 3 (the
    whole pattern: a literal pattern still needs the full match check since
    "a.bc" shares the prefix), ">" and "broadcast" -> 0.                    */
size_t nx_pattern_prefix(const char *pattern, size_t len);

/*  Returns true when the pattern has no wildcard (matches one topic only). */
bool nx_pattern_is_literal(const char *pattern, size_t len);

/*  True when id is a valid session id: 1..64 bytes of [A-Za-z0-9_:@-].
    Session ids become topic tokens (session.<id>.direct), so they hold no
    dots, spaces or wildcards. Shared by broker and gateway.                */
#define NX_SESSION_ID_MAX 64
bool nx_session_id_valid(const char *id, size_t len);

#endif
