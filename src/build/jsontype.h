/*-------------------------------------------------------------------------
 *
 * jsontype.h
 *	  Inside the JSON encoder: how a value of one type is written.  Shared
 *	  by jsontype.c (the lookup, once per column), jsonout.c (the writers,
 *	  per row) and jsontime.c (dates and times); the rest of retl sees
 *	  RetlJsonType only as an opaque type (build.h).
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_JSONTYPE_H
#define RETL_JSONTYPE_H

#include "retl.h"

#include "access/tupdesc.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/timestamp.h"

#include "build.h"

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

/* jsontype.c */
extern RetlJsonType *retl_json_record_type(RetlJsonType *t, Oid typid,
										   int32 typmod);

/* jsontime.c */
extern bool retl_json_append_timestamp(StringInfo buf, Timestamp ts);
extern void retl_json_append_date(StringInfo buf, Datum value,
								  RetlJsonType *t);

/* jsonout.c */
extern void retl_json_append_output_text(StringInfo buf, Datum value,
										 RetlJsonType *t);

#endif							/* RETL_JSONTYPE_H */
