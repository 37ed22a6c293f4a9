/*-------------------------------------------------------------------------
 *
 * noerror.c
 *	  Input that must not raise an error: timestamps read back from
 *	  events, text converted to UTF-8.  Vendors' answers parsed as JSON
 *	  are checked the same way, in dest/json.c (retl_json_valid).
 *
 * PostgreSQL 15 has no soft error reporting, and catching an error with
 * PG_CATCH + FlushErrorState() alone leaves the failed call's locks,
 * buffer pins and memory behind (src/README, "Errors").  So the hot paths
 * check their input first, with functions that report problems as return
 * values, and only then call the input function, which then cannot fail
 * but for lack of memory.  The one rare path that cannot be checked in
 * advance (a timestamp in a free form, which only timestamptz_in reads)
 * runs inside an internal subtransaction, as PL/pgSQL's exception blocks
 * do.
 *
 * Everything here runs in the caller's memory context and transaction
 * state; nothing is kept between calls but the conversion procedure of
 * the database encoding.
 *
 *-------------------------------------------------------------------------
 */
#include "build.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "datatype/timestamp.h"
#include "mb/pg_wchar.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

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
bool
retl_iso_timestamptz(const char *s, TimestampTz *result)
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
bool
retl_try_input(PGFunction input, const char *str, Datum *result)
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
 * The bytes of the character at s + at, as PostgreSQL shows them in
 * encoding errors ("0xe9 0x80").
 */
char *
retl_describe_char(const char *s, int len, int at, int encoding)
{
	StringInfoData bytes;
	int			n = Min(pg_encoding_mblen(encoding, s + at), len - at);

	initStringInfo(&bytes);
	for (int i = 0; i < n; i++)
		appendStringInfo(&bytes, "%s0x%02x", i ? " " : "",
						 (unsigned char) s[at + i]);
	return bytes.data;
}

/*
 * Converts s (len bytes in the database encoding, which is neither UTF-8
 * nor SQL_ASCII) to UTF-8 into out, without raising an error: the
 * conversion procedure is called with noError, and stops at a character
 * that has no equivalent in UTF-8.  Returns NULL, or why the text cannot
 * be converted.  The procedure is looked up once per process: the
 * database encoding never changes.
 */
char *
retl_to_utf8(const char *s, int len, StringInfo out)
{
	static Oid	proc = InvalidOid;
	int			enc = GetDatabaseEncoding();
	Size		need = (Size) len * MAX_CONVERSION_GROWTH + 1;
	char	   *buf;
	int			done;

	if (!OidIsValid(proc))
		proc = FindDefaultConversionProc(enc, PG_UTF8);
	if (!OidIsValid(proc))
		return psprintf("event cannot be converted to UTF-8: no conversion from encoding \"%s\"",
						GetDatabaseEncodingName());
	buf = MemoryContextAllocHuge(CurrentMemoryContext, need);
	done = pg_do_encoding_conversion_buf(proc, enc, PG_UTF8,
										 (unsigned char *) s, len,
										 (unsigned char *) buf, need, true);
	if (done < len)
	{
		char	   *shown = retl_describe_char(s, len, done, enc);

		pfree(buf);
		return psprintf("event cannot be converted to UTF-8: character with byte sequence %s in encoding \"%s\" has no equivalent in encoding \"UTF8\"",
						shown, GetDatabaseEncodingName());
	}
	resetStringInfo(out);
	appendStringInfoString(out, buf);
	pfree(buf);
	return NULL;
}
