/*-------------------------------------------------------------------------
 *
 * std.c
 *	  Readers of the standard event (RudderStack/Segment JSON, as
 *	  build/event.c writes it) for the kinds that rewrite it into their
 *	  API's own record: its time, its user, whether it is a deletion, its
 *	  traits' keys.
 *
 * Its time is read without raising an error (src/README, "Errors"): an
 * ISO 8601 timestamp, as retl writes it, by hand (iso_timestamptz); any
 * other form by timestamptz_in inside an internal subtransaction, as
 * PL/pgSQL's exception blocks do (try_input), the one rare path that
 * cannot be checked in advance.
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"

#include "access/xact.h"
#include "datatype/timestamp.h"
#include "pgtime.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

/*
 * Reads n decimal digits at s into *out; false unless all are digits.
 */
static bool
read_digits(const char *s, int n, int *out)
{
	*out = 0;
	for (int i = 0; i < n; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return false;
		*out = *out * 10 + (s[i] - '0');
	}
	return true;
}

/*
 * Reads a UTC offset, "Z", "+HH", "+HHMM" or "+HH:MM" (or "-"), at s, the
 * rest of the string, as seconds east of UTC.
 */
static bool
read_offset(const char *s, int *east)
{
	int			h,
				m = 0;
	int			sign;

	if (s[0] == 'Z' && s[1] == '\0')
	{
		*east = 0;
		return true;
	}
	if (s[0] != '+' && s[0] != '-')
		return false;
	sign = s[0] == '-' ? -1 : 1;
	if (!read_digits(s + 1, 2, &h))
		return false;
	s += 3;
	if (*s == ':')
		s++;
	if (*s != '\0' && (!read_digits(s, 2, &m) || s[2] != '\0'))
		return false;
	if (h > 15 || m > 59)
		return false;
	*east = sign * (h * SECS_PER_HOUR + m * SECS_PER_MINUTE);
	return true;
}

/*
 * Reads an ISO 8601 date or timestamp, as retl writes them
 * ("2024-01-01T00:00:00.123Z", "2024-01-01") and most sources do:
 * YYYY-MM-DD[[T ]HH:MM:SS[.fraction][Z|+HH[:MM]|-HH[:MM]]].  Without an
 * offset the time is local to the session's TimeZone, as timestamptz_in
 * reads it.  Returns false, raising nothing, for anything else
 * (timestamptz_in may still read it) and for a date that does not exist.
 * This is the hot path of retl_std_time_ms: it runs for every event of
 * some kinds, where a subtransaction per event would cost more than the
 * event.
 */
static bool
iso_timestamptz(const char *s, TimestampTz *result)
{
	struct pg_tm tm;
	fsec_t		fsec = 0;
	int			tz;
	int			east;
	size_t		len = strlen(s);
	const char *p = s + 19;

	memset(&tm, 0, sizeof(tm));
	if (len < 10 ||
		!read_digits(s, 4, &tm.tm_year) || s[4] != '-' ||
		!read_digits(s + 5, 2, &tm.tm_mon) || s[7] != '-' ||
		!read_digits(s + 8, 2, &tm.tm_mday))
		return false;
	if (len == 10)
		p = s + 10;
	else if (len < 19 || (s[10] != 'T' && s[10] != ' ') ||
			 !read_digits(s + 11, 2, &tm.tm_hour) || s[13] != ':' ||
			 !read_digits(s + 14, 2, &tm.tm_min) || s[16] != ':' ||
			 !read_digits(s + 17, 2, &tm.tm_sec))
		return false;
	if (*p == '.')
	{
		int			scale = USECS_PER_SEC;

		/* microseconds, rounded at the seventh digit as ParseFraction does */
		for (p++; *p >= '0' && *p <= '9'; p++)
		{
			if (scale > 1)
				fsec += (*p - '0') * (scale /= 10);
			else if (scale == 1)
			{
				fsec += *p >= '5';
				scale = 0;
			}
		}
	}
	if (tm.tm_year < 1 || tm.tm_mon < 1 || tm.tm_mon > MONTHS_PER_YEAR ||
		tm.tm_mday < 1 ||
		tm.tm_mday > day_tab[isleap(tm.tm_year)][tm.tm_mon - 1] ||
		tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 59)
		return false;
	if (*p == '\0')
		tz = DetermineTimeZoneOffset(&tm, session_timezone);
	else if (read_offset(p, &east))
		tz = -east;				/* PostgreSQL counts seconds west */
	else
		return false;
	return tm2timestamp(&tm, fsec, &tz, result) == 0;
}

/*
 * Runs a type's input function on str inside an internal subtransaction,
 * as PL/pgSQL's exception blocks do, so that an error releases whatever
 * the call held.  Returns whether it succeeded, with the value in
 * *result (allocated in the caller's memory context).  Outside a
 * transaction there is nothing to run it in: returns false.  Costs a
 * subtransaction: only for input that could not be checked first.
 */
static bool
try_input(PGFunction input, const char *str, Datum *result)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	bool		ok = false;

	if (!IsTransactionState())
		return false;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		*result = DirectFunctionCall3(input, CStringGetDatum(str),
									  ObjectIdGetDatum(InvalidOid),
									  Int32GetDatum(-1));
		ReleaseCurrentSubTransaction();
		ok = true;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return ok;
}

/*
 * The event's time in milliseconds since the Unix epoch: its "timestamp"
 * when that parses as a timestamp, else its "originalTimestamp".  APIs such
 * as Amplitude, Mixpanel and Statsig want epoch milliseconds.  ISO 8601
 * timestamps, which retl writes, are read without timestamptz_in (this
 * runs for every event); other forms go through it in a subtransaction
 * (try_input), so that a string it refuses raises nothing.
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
		ok = iso_timestamptz(str, &ts);
		if (!ok && try_input(timestamptz_in, str, &d))
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
