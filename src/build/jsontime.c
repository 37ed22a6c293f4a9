/*-------------------------------------------------------------------------
 *
 * jsontime.c
 *	  The JSON encoder's dates and times: ISO 8601 text written by hand,
 *	  without snprintf or a time zone conversion, on the per-row path.
 *
 * Values ISO 8601 cannot show (years before 1 AD, out of range) fall back
 * to their type's output text.  Runs in the caller's memory context and
 * does no catalog access.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"

#include "retl.h"
#include "jsontype.h"
#include "json.h"

/*
 * Write v as exactly ndigits decimal digits (zero-padded) at p and return
 * the position after them.  Used instead of snprintf on the per-row path.
 */
static char *
put_digits(char *p, int v, int ndigits)
{
	int			i;

	for (i = ndigits - 1; i >= 0; i--)
	{
		p[i] = '0' + v % 10;
		v /= 10;
	}
	return p + ndigits;
}

/*
 * Write a positive year with at least four digits.  Years past 9999 (which
 * PostgreSQL allows) simply get more digits.
 */
static char *
put_year(char *p, int year)
{
	if (year <= 9999)
		return put_digits(p, year, 4);
	return p + pg_ultoa_n((uint32) year, p);
}

/*
 * Append a timestamp as "YYYY-MM-DDTHH:MM:SS.mmmZ", reading it as UTC
 * (no time zone conversion); infinities become "infinity"/"-infinity".
 * Returns false, writing nothing, for years before 1 AD or values that
 * timestamp2tm rejects, so the caller can fall back to the output text.
 */
bool
retl_json_append_timestamp(StringInfo buf, Timestamp ts)
{
	struct pg_tm tm;
	fsec_t		fsec;
	char	   *p;

	if (TIMESTAMP_IS_NOBEGIN(ts))
	{
		appendStringInfoString(buf, "\"-infinity\"");
		return true;
	}
	if (TIMESTAMP_IS_NOEND(ts))
	{
		appendStringInfoString(buf, "\"infinity\"");
		return true;
	}
	if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0 || tm.tm_year < 1)
		return false;

	retl_buf_reserve(buf, 40);
	p = buf->data + buf->len;
	*p++ = '"';
	p = put_year(p, tm.tm_year);
	*p++ = '-';
	p = put_digits(p, tm.tm_mon, 2);
	*p++ = '-';
	p = put_digits(p, tm.tm_mday, 2);
	*p++ = 'T';
	p = put_digits(p, tm.tm_hour, 2);
	*p++ = ':';
	p = put_digits(p, tm.tm_min, 2);
	*p++ = ':';
	p = put_digits(p, tm.tm_sec, 2);
	*p++ = '.';
	p = put_digits(p, fsec / 1000, 3);
	*p++ = 'Z';
	*p++ = '"';
	*p = '\0';
	buf->len = p - buf->data;
	return true;
}

/*
 * Append a timestamptz as a quoted ISO 8601 UTC time with milliseconds.
 * BC and out-of-range values fall back to timestamptz_out's text.
 */
void
retl_json_append_timestamptz(StringInfo buf, TimestampTz ts)
{
	char	   *s;

	if (retl_json_append_timestamp(buf, ts))
		return;
	s = DatumGetCString(DirectFunctionCall1(timestamptz_out,
											TimestampTzGetDatum(ts)));
	retl_json_escape(buf, s, strlen(s));
	pfree(s);
}

/*
 * Append a date as "YYYY-MM-DD"; infinities become "infinity"/"-infinity",
 * and BC dates fall back to the date output text.
 */
void
retl_json_append_date(StringInfo buf, Datum value, RetlJsonType *t)
{
	DateADT		d = DatumGetDateADT(value);
	int			year,
				mon,
				mday;
	char	   *p;

	if (DATE_IS_NOBEGIN(d))
	{
		appendStringInfoString(buf, "\"-infinity\"");
		return;
	}
	if (DATE_IS_NOEND(d))
	{
		appendStringInfoString(buf, "\"infinity\"");
		return;
	}
	j2date(d + POSTGRES_EPOCH_JDATE, &year, &mon, &mday);
	if (year < 1)
	{
		retl_json_append_output_text(buf, value, t);
		return;
	}
	retl_buf_reserve(buf, 24);
	p = buf->data + buf->len;
	*p++ = '"';
	p = put_year(p, year);
	*p++ = '-';
	p = put_digits(p, mon, 2);
	*p++ = '-';
	p = put_digits(p, mday, 2);
	*p++ = '"';
	*p = '\0';
	buf->len = p - buf->data;
}
