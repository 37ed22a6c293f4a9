/*-------------------------------------------------------------------------
 *
 * preview.c
 *	  retl_preview(): the events of a sync exactly as they would be sent,
 *	  built by the same code as the worker's, sending nothing.
 *
 * The preview reads the source with the caller's privileges; its events
 * carry job_run_id null, as no run exists.
 *
 *-------------------------------------------------------------------------
 */
#include "retl.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

PG_FUNCTION_INFO_V1(retl_preview);

/*
 * Reads what the preview needs of a sync.
 */
static void
load_sync(int64 sync_id, Oid *relid, char **name, bool *track,
		  Jsonb **mapping, char **pk, Jsonb **options)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(sync_id)};
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	desc;

	if (SPI_execute_with_args("SELECT source::oid, name, event_type = 'track',"
							  " mapping, primary_key, options"
							  " FROM retl.syncs WHERE id = $1",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("sync " INT64_FORMAT " does not exist", sync_id)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	*relid = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
	*name = SPI_getvalue(tup, desc, 2);
	*track = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
	*mapping = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 4, &isnull));
	*pk = SPI_getvalue(tup, desc, 5);
	*options = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 6, &isnull));
}

/*
 * SQL: retl._preview(sync_id, n).
 */
Datum
retl_preview(PG_FUNCTION_ARGS)
{
	int64		sync_id = PG_GETARG_INT64(0);
	int32		n = PG_GETARG_INT32(1);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			relid;
	char	   *name,
			   *pk;
	bool		track;
	Jsonb	   *mapping,
			   *options;
	RetlMapping *map;
	RetlEventCtx ctx;
	StringInfoData buf;
	char		message_id[RETL_MESSAGE_ID_LEN + 1];
	MemoryContext cxt = CurrentMemoryContext;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "retl: SPI_connect failed");
	load_sync(sync_id, &relid, &name, &track, &mapping, &pk, &options);
	map = retl_mapping_compile(relid, track, mapping, pk, options);
	retl_event_ctx_init(&ctx, sync_id, name, 0);
	if (SPI_execute(psprintf("SELECT %s FROM %s LIMIT %d",
							 retl_mapping_select_list(map), map->relname, n),
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "retl: reading the source failed");
	initStringInfo(&buf);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum	   *values = palloc(map->ncolumns * sizeof(Datum));
		bool	   *nulls = palloc(map->ncolumns * sizeof(bool));
		Datum		jb;
		bool		isnull = false;
		MemoryContext old;

		heap_deform_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
						  values, nulls);
		resetStringInfo(&buf);
		retl_event_build(&buf, map, &ctx, values, nulls, message_id);
		old = MemoryContextSwitchTo(cxt);
		jb = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &jb, &isnull);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return (Datum) 0;
}
