/*-------------------------------------------------------------------------
 *
 * jsontype.c
 *	  The JSON encoder's type lookup: what writing a value of one SQL type
 *	  needs, found once per column (jsonout.c writes the values).
 *
 * All catalog work of the encoder is done here, by retl_json_type_get(),
 * which caches in a RetlJsonType everything the per-row path needs, in
 * the memory context it is given (the run's, or the fuzzer's).  The only
 * lookup left for the per-row path is the row type of an anonymous
 * record, once per row type (retl_json_record_type).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/tupdesc.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/lsyscache.h"
#include "utils/typcache.h"

#include "retl.h"
#include "jsontype.h"
#include "json.h"

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

/*
 * Find (or build once, in t's context) the encoder for the row type that
 * an anonymous record datum carries.  Registered record typmods are stable
 * for the backend's life, so the per-column list stays tiny.
 */
RetlJsonType *
retl_json_record_type(RetlJsonType *t, Oid typid, int32 typmod)
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
