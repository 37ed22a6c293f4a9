/*-------------------------------------------------------------------------
 *
 * jsonout.c
 *	  Fast JSON encoder for column values: the writers of each kind of
 *	  value, and the dispatch on it.
 *
 * The worker turns every column of every row into JSON.  All catalog work
 * is done once per column by retl_json_type_get() (jsontype.c), which
 * caches in a RetlJsonType everything the per-row path needs;
 * retl_json_append_datum() then writes a value with no catalog access and
 * no SQL calls (except the type's own output function for types without a
 * native JSON form).  Dates and times are written in jsontime.c.  Runs in
 * the caller's memory context (a row's).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "common/base64.h"
#include "common/shortest_dec.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "retl.h"
#include "jsontype.h"
#include "json.h"

static void append_datum(StringInfo buf, Datum value, RetlJsonType *t);

/* ---------- strings ---------- */

/*
 * Append a value as the quoted text of its type's output function: the
 * fallback for every type without a native JSON form.
 */
void
retl_json_append_output_text(StringInfo buf, Datum value, RetlJsonType *t)
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
	retl_buf_reserve(buf, MAXINT8LEN + 1);
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
		retl_buf_append(buf, "\"NaN\"", 5);
	else if (isinf(v))
		appendStringInfoString(buf, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
	else
	{
		retl_buf_reserve(buf, DOUBLE_SHORTEST_DECIMAL_LEN);
		buf->len += double_to_shortest_decimal_buf(v, buf->data + buf->len);
	}
}

/* Same as append_float8, for float4's own shortest round-trip text. */
static void
append_float4(StringInfo buf, float4 v)
{
	if (isnan(v))
		retl_buf_append(buf, "\"NaN\"", 5);
	else if (isinf(v))
		appendStringInfoString(buf, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
	else
	{
		retl_buf_reserve(buf, FLOAT_SHORTEST_DECIMAL_LEN);
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

	retl_buf_reserve(buf, len);
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
			retl_buf_append(buf, s + from, i - from);
			from = i + 1;
		}
	}
	retl_buf_append(buf, s + from, len - from);
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

	retl_buf_reserve(buf, enclen + 2);
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

	appendStringInfoCharMacro(buf, '[');
	for (i = 0; i < dims[dim]; i++)
	{
		if (i > 0)
			appendStringInfoCharMacro(buf, ',');
		if (dim + 1 < ndim)
			append_array_dim(buf, t, dim + 1, ndim, dims, elems, nulls, pos);
		else
		{
			if (nulls[*pos])
				retl_buf_append(buf, "null", 4);
			else
				append_datum(buf, elems[*pos], t->elem);
			(*pos)++;
		}
	}
	appendStringInfoCharMacro(buf, ']');
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
		retl_buf_append(buf, "[]", 2);
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

	appendStringInfoCharMacro(buf, '{');
	for (i = 0; i < natts; i++)
	{
		if (t->attrs[i] == NULL)
			continue;
		if (!first)
			appendStringInfoCharMacro(buf, ',');
		first = false;
		retl_buf_append(buf, t->keys[i], t->keylens[i]);
		if (t->nulls[i])
			retl_buf_append(buf, "null", 4);
		else
			append_datum(buf, t->values[i], t->attrs[i]);
	}
	appendStringInfoCharMacro(buf, '}');
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
		comp = retl_json_record_type(t, HeapTupleHeaderGetTypeId(td),
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
				retl_buf_append(buf, "true", 4);
			else
				retl_buf_append(buf, "false", 5);
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
			if (!retl_json_append_timestamp(buf, DatumGetTimestamp(value)))
				retl_json_append_output_text(buf, value, t);
			break;
		case RJ_DATE:
			retl_json_append_date(buf, value, t);
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
			retl_json_append_output_text(buf, value, t);
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
