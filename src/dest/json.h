/*-------------------------------------------------------------------------
 *
 * json.h
 *	  JSON helpers shared by the mapping and the destination kinds
 *	  (json.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_JSON_H
#define RETL_JSON_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/jsonb.h"

/* options and config settings: an error for a value of the wrong type */
extern char *retl_jsonb_get_text(Jsonb *jb, const char *key);
extern bool retl_jsonb_get_int(Jsonb *jb, const char *key, int64 *out);
extern bool retl_jsonb_get_bool(Jsonb *jb, const char *key, bool *out);
extern Jsonb *retl_jsonb_get_object(Jsonb *jb, const char *key);
extern char *retl_json_unknown_key(Jsonb *obj, const char *const *known,
								   const char *const *also);

/* vendor answers and events: never an error */
extern bool retl_json_valid(char *text, int len);
extern Jsonb *retl_json_parse(const char *text, int len);
extern JsonbValue *retl_json_get(Jsonb *jb, const char *key);
extern bool retl_json_int64(const JsonbValue *v, int64 *result);
extern int64 retl_json_index(const JsonbValue *v, int nevents);
extern void retl_json_append_value(StringInfo out, JsonbValue *v);

/* writing JSON: a quoted, escaped string */
extern void retl_json_escape(StringInfo buf, const char *s, int len);

/*
 * appendBinaryStringInfo, inline when the room is already there: events are
 * written a few bytes at a time, and the two calls (append, enlarge) of each
 * piece cost more than copying it.
 */
static inline void
retl_buf_append(StringInfo buf, const char *p, int n)
{
	if (likely(buf->maxlen - buf->len > n))
	{
		memcpy(buf->data + buf->len, p, n);
		buf->len += n;
		buf->data[buf->len] = '\0';
	}
	else
		appendBinaryStringInfo(buf, p, n);
}

/*
 * enlargeStringInfo, without its call when the room is already there.
 */
static inline void
retl_buf_reserve(StringInfo buf, int n)
{
	if (unlikely(buf->maxlen - buf->len <= n))
		enlargeStringInfo(buf, n);
}

#endif							/* RETL_JSON_H */
