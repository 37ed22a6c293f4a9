/*-------------------------------------------------------------------------
 *
 * jsonout.c
 *	  Fast JSON encoder for column values.
 *
 * The worker turns every column of every row into JSON.  All catalog work
 * is done once per column by retl_json_type_get(), which caches in a
 * RetlJsonType everything the per-row path needs; retl_json_append_datum()
 * then writes a value with no catalog access and no SQL calls (except the
 * type's own output function for types without a native JSON form).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/tupdesc.h"
#include "catalog/pg_type.h"
#include "common/base64.h"
#include "common/shortest_dec.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/typcache.h"

#include "retl.h"

/* How a value of one type is written. */
typedef enum RetlJsonKind
{
	RJ_INT2,
	RJ_INT4,
	RJ_INT8,
	RJ_OID,
	RJ_FLOAT4,
	RJ_FLOAT8,
	RJ_NUMERIC,
	RJ_BOOL,
	RJ_TEXT,					/* text, varchar, bpchar: escape the bytes */
	RJ_NAME,
	RJ_TIMESTAMPTZ,
	RJ_TIMESTAMP,
	RJ_DATE,
	RJ_JSON,
	RJ_JSONB,
	RJ_BYTEA,
	RJ_ARRAY,
	RJ_COMPOSITE,
	RJ_RECORD,					/* anonymous record: row type from the datum */
	RJ_GENERIC					/* quoted output function text */
} RetlJsonKind;

/* One row type seen by an RJ_RECORD column, keyed by type id and typmod. */
typedef struct RetlJsonRecord
{
	Oid			typid;
	int32		typmod;
	RetlJsonType *comp;
	struct RetlJsonRecord *next;
} RetlJsonRecord;

struct RetlJsonType
{
	RetlJsonKind kind;
	Oid			typid;			/* base type (domains resolved) */
	MemoryContext cxt;			/* where this and its lazy parts live */
	FmgrInfo	outfunc;		/* output function, for fallbacks */

	/* RJ_ARRAY */
	RetlJsonType *elem;
	int16		elmlen;
	bool		elmbyval;
	char		elmalign;

	/* RJ_COMPOSITE */
	TupleDesc	tupdesc;
	RetlJsonType **attrs;		/* NULL for dropped attributes */
	char	  **keys;			/* pre-escaped "name": */
	int		   *keylens;
	Datum	   *values;			/* deform buffers, reused for every row */
	bool	   *nulls;

	/* RJ_RECORD */
	RetlJsonRecord *records;
};

static void append_datum(StringInfo buf, Datum value, RetlJsonType *t);

/* ---------- type lookup (once per column) ---------- */

/*
 * Map a base type OID to the kind with a native JSON form, or RJ_GENERIC.
 * Pure OID comparisons; arrays and composites are handled by the caller.
 */
static RetlJsonKind
kind_of_scalar(Oid typid)
{
	switch (typid)
	{
		case INT2OID:
			return RJ_INT2;
		case INT4OID:
			return RJ_INT4;
		case INT8OID:
			return RJ_INT8;
		case OIDOID:
			return RJ_OID;
		case FLOAT4OID:
			return RJ_FLOAT4;
		case FLOAT8OID:
			return RJ_FLOAT8;
		case NUMERICOID:
			return RJ_NUMERIC;
		case BOOLOID:
			return RJ_BOOL;
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
			return RJ_TEXT;
		case NAMEOID:
			return RJ_NAME;
		case TIMESTAMPTZOID:
			return RJ_TIMESTAMPTZ;
		case TIMESTAMPOID:
			return RJ_TIMESTAMP;
		case DATEOID:
			return RJ_DATE;
		case JSONOID:
			return RJ_JSON;
		case JSONBOID:
			return RJ_JSONB;
		case BYTEAOID:
			return RJ_BYTEA;
		case RECORDOID:
			return RJ_RECORD;
		default:
			return RJ_GENERIC;
	}
}

/*
 * Cache what an array column needs per row: the element's storage
 * properties for deconstruct_array and the element's own encoder.
 */
static void
setup_array(RetlJsonType *t, Oid elemtype, MemoryContext cxt)
{
	get_typlenbyvalalign(elemtype, &t->elmlen, &t->elmbyval, &t->elmalign);
	t->elem = retl_json_type_get(elemtype, cxt);
}

/*
 * Cache what a composite needs per row: a private copy of the row type,
 * one encoder and one pre-escaped key per live attribute, and deform
 * buffers.  Must be called with cxt as the current memory context.
 */
static void
setup_composite(RetlJsonType *t, TupleDesc src, MemoryContext cxt)
{
	int			natts = src->natts;
	int			i;

	check_stack_depth();
	t->kind = RJ_COMPOSITE;
	t->tupdesc = CreateTupleDescCopy(src);
	t->attrs = palloc0(natts * sizeof(RetlJsonType *));
	t->keys = palloc0(natts * sizeof(char *));
	t->keylens = palloc0(natts * sizeof(int));
	t->values = palloc(natts * sizeof(Datum));
	t->nulls = palloc(natts * sizeof(bool));

	for (i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(t->tupdesc, i);
		StringInfoData key;

		if (att->attisdropped)
			continue;
		initStringInfo(&key);
		retl_json_escape(&key, NameStr(att->attname),
						 strlen(NameStr(att->attname)));
		appendStringInfoChar(&key, ':');
		t->keys[i] = key.data;
		t->keylens[i] = key.len;
		t->attrs[i] = retl_json_type_get(att->atttypid, cxt);
	}
}

/*
 * Cache a named composite type's row descriptor.  Done eagerly: PostgreSQL
 * forbids a composite type from containing itself, so this terminates.
 */
static void
setup_named_composite(RetlJsonType *t, Oid typid, MemoryContext cxt)
{
	TupleDesc	src = lookup_rowtype_tupdesc(typid, -1);

	setup_composite(t, src, cxt);
	ReleaseTupleDesc(src);
}

/*
 * Build the encoder for one SQL type.  All catalog lookups happen here, and
 * everything is allocated in cxt, so that it can be reused for every row.
 * Domains are encoded as their base type.
 */
RetlJsonType *
retl_json_type_get(Oid typid, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	RetlJsonType *t = palloc0(sizeof(RetlJsonType));
	Oid			base = getBaseType(typid);
	Oid			outfn;
	Oid			elemtype;
	bool		isvarlena;

	t->typid = base;
	t->cxt = cxt;
	t->kind = kind_of_scalar(base);
	getTypeOutputInfo(base, &outfn, &isvarlena);
	fmgr_info_cxt(outfn, &t->outfunc, cxt);

	if (t->kind == RJ_GENERIC)
	{
		elemtype = get_element_type(base);
		if (OidIsValid(elemtype))
		{
			t->kind = RJ_ARRAY;
			setup_array(t, elemtype, cxt);
		}
		else if (get_typtype(base) == TYPTYPE_COMPOSITE)
			setup_named_composite(t, base, cxt);
	}

	MemoryContextSwitchTo(old);
	return t;
}

/* ---------- strings ---------- */

/*
 * Append the JSON escape sequence for one byte that cannot appear raw in a
 * JSON string.  Written by hand: this runs for every control character.
 */
static void
append_escape(StringInfo buf, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";
	char		esc[6] = {'\\', 'u', '0', '0', 0, 0};

	switch (c)
	{
		case '"':
			appendBinaryStringInfo(buf, "\\\"", 2);
			return;
		case '\\':
			appendBinaryStringInfo(buf, "\\\\", 2);
			return;
		case '\n':
			appendBinaryStringInfo(buf, "\\n", 2);
			return;
		case '\t':
			appendBinaryStringInfo(buf, "\\t", 2);
			return;
		case '\r':
			appendBinaryStringInfo(buf, "\\r", 2);
			return;
		case '\b':
			appendBinaryStringInfo(buf, "\\b", 2);
			return;
		case '\f':
			appendBinaryStringInfo(buf, "\\f", 2);
			return;
	}
	esc[4] = hex[c >> 4];
	esc[5] = hex[c & 0xf];
	appendBinaryStringInfo(buf, esc, 6);
}

/*
 * Append s[0..len) as a quoted JSON string.  Runs of bytes that need no
 * escaping are copied in one go, which is the common case by far.
 */
void
retl_json_escape(StringInfo buf, const char *s, int len)
{
	const char *end = s + len;
	const char *run = s;
	const char *p;

	enlargeStringInfo(buf, len + 2);
	appendStringInfoCharMacro(buf, '"');
	for (p = s; p < end; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		if (p > run)
			appendBinaryStringInfo(buf, run, p - run);
		append_escape(buf, c);
		run = p + 1;
	}
	if (p > run)
		appendBinaryStringInfo(buf, run, p - run);
	appendStringInfoCharMacro(buf, '"');
}

/*
 * Append a value as the quoted text of its type's output function: the
 * fallback for every type without a native JSON form.
 */
static void
append_output_text(StringInfo buf, Datum value, RetlJsonType *t)
{
	char	   *s = OutputFunctionCall(&t->outfunc, value);

	retl_json_escape(buf, s, strlen(s));
	pfree(s);
}

/*
 * Append a text-like varlena (text, varchar, bpchar) as a JSON string,
 * escaping straight from the detoasted bytes without a C-string copy.
 */
static void
append_text(StringInfo buf, Datum value)
{
	text	   *txt = DatumGetTextPP(value);

	retl_json_escape(buf, VARDATA_ANY(txt), VARSIZE_ANY_EXHDR(txt));
	if ((Pointer) txt != DatumGetPointer(value))
		pfree(txt);
}

/* ---------- numbers ---------- */

/*
 * Append a signed integer as a JSON number, formatted directly into buf
 * (pg_lltoa needs at most MAXINT8LEN bytes plus the terminator).
 */
static void
append_int64(StringInfo buf, int64 v)
{
	enlargeStringInfo(buf, MAXINT8LEN + 1);
	buf->len += pg_lltoa(v, buf->data + buf->len);
}

/*
 * Append a double as the shortest text that reads back exactly, as
 * float8out does; NaN and infinities are not JSON numbers, so quote them.
 */
static void
append_float8(StringInfo buf, float8 v)
{
	if (isnan(v))
		appendBinaryStringInfo(buf, "\"NaN\"", 5);
	else if (isinf(v))
		appendStringInfoString(buf, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
	else
	{
		enlargeStringInfo(buf, DOUBLE_SHORTEST_DECIMAL_LEN);
		buf->len += double_to_shortest_decimal_buf(v, buf->data + buf->len);
	}
}

/* Same as append_float8, for float4's own shortest round-trip text. */
static void
append_float4(StringInfo buf, float4 v)
{
	if (isnan(v))
		appendBinaryStringInfo(buf, "\"NaN\"", 5);
	else if (isinf(v))
		appendStringInfoString(buf, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
	else
	{
		enlargeStringInfo(buf, FLOAT_SHORTEST_DECIMAL_LEN);
		buf->len += float_to_shortest_decimal_buf(v, buf->data + buf->len);
	}
}

/*
 * Append a numeric as a JSON number using numeric_out's plain decimal text
 * (it never uses exponents); the special values NaN, Infinity and
 * -Infinity are the only outputs containing letters, and are quoted.
 */
static void
append_numeric(StringInfo buf, Datum value, RetlJsonType *t)
{
	char	   *s = OutputFunctionCall(&t->outfunc, value);

	if (s[0] == 'N' || s[0] == 'I' || (s[0] == '-' && s[1] == 'I'))
		retl_json_escape(buf, s, strlen(s));
	else
		appendStringInfoString(buf, s);
	pfree(s);
}

/* ---------- dates and times ---------- */

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
static bool
append_timestamp_iso(StringInfo buf, Timestamp ts)
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

	enlargeStringInfo(buf, 40);
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

	if (append_timestamp_iso(buf, ts))
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
static void
append_date(StringInfo buf, Datum value, RetlJsonType *t)
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
		append_output_text(buf, value, t);
		return;
	}
	enlargeStringInfo(buf, 24);
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

/* ---------- json, jsonb, bytea ---------- */

/*
 * Append a json value compactly: its text is valid JSON (json_in checked
 * it), copied without the whitespace between tokens, so that a value
 * written over several lines cannot split an NDJSON record.  Whitespace
 * inside strings is escaped in valid JSON, except spaces, which stay.
 */
static void
append_json(StringInfo buf, Datum value)
{
	text	   *txt = DatumGetTextPP(value);
	const char *s = VARDATA_ANY(txt);
	int			len = VARSIZE_ANY_EXHDR(txt);
	int			from = 0;		/* first byte not copied yet */
	bool		in_str = false;

	enlargeStringInfo(buf, len);
	for (int i = 0; i < len; i++)
	{
		if (in_str)
		{
			if (s[i] == '\\')
				i++;			/* the escaped character */
			else if (s[i] == '"')
				in_str = false;
		}
		else if (s[i] == '"')
			in_str = true;
		else if (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')
		{
			appendBinaryStringInfo(buf, s + from, i - from);
			from = i + 1;
		}
	}
	appendBinaryStringInfo(buf, s + from, len - from);
	if ((Pointer) txt != DatumGetPointer(value))
		pfree(txt);
}

/* Append a jsonb value's JSON text, rendered straight into buf. */
static void
append_jsonb(StringInfo buf, Datum value)
{
	Jsonb	   *jb = DatumGetJsonbP(value);

	JsonbToCString(buf, &jb->root, VARSIZE(jb));
	if ((Pointer) jb != DatumGetPointer(value))
		pfree(jb);
}

/*
 * Append a bytea as a quoted standard base64 string (padded, no line
 * breaks), encoded directly into buf.
 */
static void
append_bytea(StringInfo buf, Datum value)
{
	bytea	   *b = DatumGetByteaPP(value);
	int			len = VARSIZE_ANY_EXHDR(b);
	int			enclen = pg_b64_enc_len(len);
	int			n;

	enlargeStringInfo(buf, enclen + 2);
	buf->data[buf->len++] = '"';
	n = pg_b64_encode(VARDATA_ANY(b), len, buf->data + buf->len, enclen);
	if (n < 0)
		elog(ERROR, "could not encode bytea value as base64");
	buf->len += n;
	buf->data[buf->len++] = '"';
	buf->data[buf->len] = '\0';
	if ((Pointer) b != DatumGetPointer(value))
		pfree(b);
}

/* ---------- arrays ---------- */

/*
 * Append dimension dim of a deconstructed array as a JSON array, recursing
 * for inner dimensions; *pos walks the flat element list in storage order.
 */
static void
append_array_dim(StringInfo buf, RetlJsonType *t, int dim, int ndim,
				 const int *dims, Datum *elems, bool *nulls, int *pos)
{
	int			i;

	appendStringInfoChar(buf, '[');
	for (i = 0; i < dims[dim]; i++)
	{
		if (i > 0)
			appendStringInfoChar(buf, ',');
		if (dim + 1 < ndim)
			append_array_dim(buf, t, dim + 1, ndim, dims, elems, nulls, pos);
		else
		{
			if (nulls[*pos])
				appendBinaryStringInfo(buf, "null", 4);
			else
				append_datum(buf, elems[*pos], t->elem);
			(*pos)++;
		}
	}
	appendStringInfoChar(buf, ']');
}

/*
 * Append an array as (nested) JSON arrays, elements encoded by the cached
 * element encoder; SQL NULL elements become null.
 */
static void
append_array(StringInfo buf, Datum value, RetlJsonType *t)
{
	ArrayType  *arr;
	int			ndim;
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	int			pos = 0;

	/* arrays of composites of arrays ...: the recursion is the data's */
	check_stack_depth();
	arr = DatumGetArrayTypeP(value);
	ndim = ARR_NDIM(arr);
	if (ndim <= 0)
		appendBinaryStringInfo(buf, "[]", 2);
	else
	{
		deconstruct_array(arr, ARR_ELEMTYPE(arr), t->elmlen, t->elmbyval,
						  t->elmalign, &elems, &nulls, &nelems);
		append_array_dim(buf, t, 0, ndim, ARR_DIMS(arr), elems, nulls, &pos);
		pfree(elems);
		pfree(nulls);
	}
	if ((Pointer) arr != DatumGetPointer(value))
		pfree(arr);
}

/* ---------- composites ---------- */

/*
 * Append a row as a JSON object using the cached row type of t: deform
 * into t's buffers, then write "key":value for every live attribute.
 * The tuple's storage is owned by the caller.
 */
static void
append_row(StringInfo buf, HeapTupleHeader td, RetlJsonType *t)
{
	HeapTupleData tuple;
	int			natts = t->tupdesc->natts;
	bool		first = true;
	int			i;

	tuple.t_len = HeapTupleHeaderGetDatumLength(td);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = td;
	heap_deform_tuple(&tuple, t->tupdesc, t->values, t->nulls);

	appendStringInfoChar(buf, '{');
	for (i = 0; i < natts; i++)
	{
		if (t->attrs[i] == NULL)
			continue;
		if (!first)
			appendStringInfoChar(buf, ',');
		first = false;
		appendBinaryStringInfo(buf, t->keys[i], t->keylens[i]);
		if (t->nulls[i])
			appendBinaryStringInfo(buf, "null", 4);
		else
			append_datum(buf, t->values[i], t->attrs[i]);
	}
	appendStringInfoChar(buf, '}');
}

/*
 * Find (or build once, in t's context) the encoder for the row type that
 * an anonymous record datum carries.  Registered record typmods are stable
 * for the backend's life, so the per-column list stays tiny.
 */
static RetlJsonType *
record_encoder(RetlJsonType *t, Oid typid, int32 typmod)
{
	RetlJsonRecord *r;
	MemoryContext old;
	TupleDesc	src;

	for (r = t->records; r != NULL; r = r->next)
		if (r->typid == typid && r->typmod == typmod)
			return r->comp;

	old = MemoryContextSwitchTo(t->cxt);
	r = palloc0(sizeof(RetlJsonRecord));
	r->typid = typid;
	r->typmod = typmod;
	r->comp = palloc0(sizeof(RetlJsonType));
	r->comp->typid = typid;
	r->comp->cxt = t->cxt;
	src = lookup_rowtype_tupdesc(typid, typmod);
	setup_composite(r->comp, src, t->cxt);
	ReleaseTupleDesc(src);
	r->next = t->records;
	t->records = r;
	MemoryContextSwitchTo(old);
	return r->comp;
}

/*
 * Append a composite datum as a JSON object.  Named composites use the row
 * type cached at lookup time; anonymous records use the one their header
 * names.
 */
static void
append_composite(StringInfo buf, Datum value, RetlJsonType *t)
{
	HeapTupleHeader td;
	RetlJsonType *comp = t;

	/* a record may hold records (anonymous ones without a limit) */
	check_stack_depth();
	td = DatumGetHeapTupleHeader(value);
	if (t->kind == RJ_RECORD)
		comp = record_encoder(t, HeapTupleHeaderGetTypeId(td),
							  HeapTupleHeaderGetTypMod(td));
	append_row(buf, td, comp);
	if ((Pointer) td != DatumGetPointer(value))
		pfree(td);
}

/* ---------- dispatch ---------- */

/*
 * Append one non-NULL value as JSON, dispatching on the cached kind.  No
 * catalog access happens here (anonymous records aside, once per row type).
 */
static void
append_datum(StringInfo buf, Datum value, RetlJsonType *t)
{
	switch (t->kind)
	{
		case RJ_INT2:
			append_int64(buf, DatumGetInt16(value));
			break;
		case RJ_INT4:
			append_int64(buf, DatumGetInt32(value));
			break;
		case RJ_INT8:
			append_int64(buf, DatumGetInt64(value));
			break;
		case RJ_OID:
			append_int64(buf, DatumGetObjectId(value));
			break;
		case RJ_FLOAT4:
			append_float4(buf, DatumGetFloat4(value));
			break;
		case RJ_FLOAT8:
			append_float8(buf, DatumGetFloat8(value));
			break;
		case RJ_NUMERIC:
			append_numeric(buf, value, t);
			break;
		case RJ_BOOL:
			if (DatumGetBool(value))
				appendBinaryStringInfo(buf, "true", 4);
			else
				appendBinaryStringInfo(buf, "false", 5);
			break;
		case RJ_TEXT:
			append_text(buf, value);
			break;
		case RJ_NAME:
			retl_json_escape(buf, NameStr(*DatumGetName(value)),
							 strlen(NameStr(*DatumGetName(value))));
			break;
		case RJ_TIMESTAMPTZ:
			retl_json_append_timestamptz(buf, DatumGetTimestampTz(value));
			break;
		case RJ_TIMESTAMP:
			if (!append_timestamp_iso(buf, DatumGetTimestamp(value)))
				append_output_text(buf, value, t);
			break;
		case RJ_DATE:
			append_date(buf, value, t);
			break;
		case RJ_JSON:
			append_json(buf, value);
			break;
		case RJ_JSONB:
			append_jsonb(buf, value);
			break;
		case RJ_BYTEA:
			append_bytea(buf, value);
			break;
		case RJ_ARRAY:
			append_array(buf, value, t);
			break;
		case RJ_COMPOSITE:
		case RJ_RECORD:
			append_composite(buf, value, t);
			break;
		case RJ_GENERIC:
			append_output_text(buf, value, t);
			break;
	}
}

/*
 * Append one non-NULL value of the type that `type` was built for, as
 * JSON.  The caller writes SQL NULLs of top-level values itself.
 */
void
retl_json_append_datum(StringInfo buf, Datum value, RetlJsonType *type)
{
	append_datum(buf, value, type);
}
