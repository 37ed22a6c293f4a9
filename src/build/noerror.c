/*-------------------------------------------------------------------------
 *
 * noerror.c
 *	  Text converted to UTF-8 without raising an error.  Vendors' answers
 *	  parsed as JSON are checked the same way, in dest/json.c
 *	  (retl_json_valid), and timestamps read back from events in
 *	  dest/std.c.
 *
 * PostgreSQL 15 has no soft error reporting, and catching an error with
 * PG_CATCH + FlushErrorState() alone leaves the failed call's locks,
 * buffer pins and memory behind (src/README, "Errors").  So the hot paths
 * check their input first, with functions that report problems as return
 * values, and only then call the input function, which then cannot fail
 * but for lack of memory.
 *
 * Everything here runs in the caller's memory context and transaction
 * state; nothing is kept between calls but the conversion procedure of
 * the database encoding.
 *
 *-------------------------------------------------------------------------
 */
#include "build.h"

#include "catalog/namespace.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

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
