/*-------------------------------------------------------------------------
 *
 * std.c
 *	  Readers of the standard event (RudderStack/Segment JSON, as
 *	  build/event.c writes it) for the kinds that rewrite it into their
 *	  API's own record: its time, its user, whether it is a deletion, its
 *	  traits' keys.
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"
#include "build.h"

#include "datatype/timestamp.h"
#include "utils/fmgrprotos.h"
#include "utils/timestamp.h"

/*
 * The event's time in milliseconds since the Unix epoch: its "timestamp"
 * when that parses as a timestamp, else its "originalTimestamp".  APIs such
 * as Amplitude, Mixpanel and Statsig want epoch milliseconds.  ISO 8601
 * timestamps, which retl writes, are read without timestamptz_in (this
 * runs for every event); other forms go through it in a subtransaction
 * (retl_try_input), so that a string it refuses raises nothing.
 */
int64
retl_std_time_ms(Jsonb *event)
{
	const char *keys[2] = {"timestamp", "originalTimestamp"};

	for (int k = 0; k < 2; k++)
	{
		JsonbValue *v = retl_json_get(event, keys[k]);
		char	   *str;
		TimestampTz ts = 0;
		Datum		d;
		bool		ok;

		if (v == NULL || v->type != jbvString)
			continue;
		str = pnstrdup(v->val.string.val, v->val.string.len);
		ok = retl_iso_timestamptz(str, &ts);
		if (!ok && retl_try_input(timestamptz_in, str, &d))
		{
			ts = DatumGetTimestampTz(d);
			ok = true;
		}
		pfree(str);
		if (ok && !TIMESTAMP_NOT_FINITE(ts))
			return ts / 1000 + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
	}
	return (GetCurrentTimestamp() / 1000) +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
}

/*
 * The event's user: its userId when present, else its anonymousId, as
 * text; NULL when it has neither.
 */
char *
retl_std_user(Jsonb *event, bool *anonymous)
{
	JsonbValue *v = retl_json_get(event, "userId");

	*anonymous = false;
	if (v == NULL || v->type != jbvString)
	{
		v = retl_json_get(event, "anonymousId");
		*anonymous = true;
	}
	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * Is the event a mirror deletion (context.retl.deleted = true, diff.c)?
 * Kinds whose API removes properties with an operation of its own
 * (Amplitude, Mixpanel) encode its null traits as that operation.
 */
bool
retl_std_deleted(Jsonb *event)
{
	JsonbValue *ctx = retl_json_get(event, "context");
	JsonbValue *retl;
	JsonbValue *deleted;

	if (ctx == NULL || ctx->type != jbvBinary)
		return false;
	retl = getKeyJsonValueFromContainer(ctx->val.binary.data, "retl", 4, NULL);
	if (retl == NULL || retl->type != jbvBinary)
		return false;
	deleted = getKeyJsonValueFromContainer(retl->val.binary.data, "deleted", 7, NULL);
	return deleted != NULL && deleted->type == jbvBool && deleted->val.boolean;
}

/*
 * Appends the keys of the event's traits as JSON strings, separated by
 * commas, each followed by after (e.g. ":\"-\""): the properties a
 * deletion removes.
 */
void
retl_std_append_trait_keys(StringInfo out, Jsonb *event, const char *after)
{
	JsonbValue *traits = retl_json_get(event, "traits");
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		first = true;

	if (traits == NULL || traits->type != jbvBinary)
		return;
	it = JsonbIteratorInit(traits->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		if (!first)
			appendStringInfoChar(out, ',');
		first = false;
		retl_json_escape(out, v.val.string.val, v.val.string.len);
		appendStringInfoString(out, after);
	}
}
