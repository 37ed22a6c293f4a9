/*-------------------------------------------------------------------------
 *
 * preview.c
 *	  retl_preview(): the events of a sync exactly as they would be sent,
 *	  built by the same code as the worker's, sending nothing.
 *
 * By default a preview shows the destination kind's records (a Braze
 * events[] or attributes[] object, a Kinesis record with its base64 data
 * and partition key ...), encoded by the kind as the worker encodes them;
 * with format 'standard' it shows the standard (Segment spec) event that
 * retl builds first.  Kinds without an encoding of their own (webhook,
 * RudderStack, Segment) send the standard event: both formats agree.  The
 * destination is opened from its catalog row, where secrets are "***",
 * so a record can never show one.
 *
 * The preview reads the source with the caller's privileges; its events
 * carry job_run_id null, as no run exists.
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"
#include "read.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

PG_FUNCTION_INFO_V1(retl_preview);

/*
 * Reads what the preview needs of a sync.
 */
static void
load_sync(int64 sync_id, Oid *relid, char **name, bool *track,
		  Jsonb **mapping, char **pk, Jsonb **options, char **kind,
		  Jsonb **config, bool *diff, bool *fp_values)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(sync_id)};
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	desc;

	if (SPI_execute_with_args("SELECT s.source::oid, s.name, s.event_type = 'track',"
							  " s.mapping, s.primary_key, s.options, d.kind, d.config,"
							  " s.detector = 'diff', s.fingerprints = 'values'"
							  " FROM retl.syncs s"
							  " JOIN retl.destinations d ON d.id = s.destination_id"
							  " WHERE s.id = $1",
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
	*kind = SPI_getvalue(tup, desc, 7);
	*config = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 8, &isnull));
	*diff = DatumGetBool(SPI_getbinval(tup, desc, 9, &isnull));
	*fp_values = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull));
}

/*
 * The version that makes a previewed row's messageId the one the worker
 * would send it with: an xmin sync's row xmin, or what a diff sync's
 * stored fingerprints of the key give (retl_diff_version_of).
 */
static uint64
preview_version(int64 sync_id, RetlMapping *map, int vcol, bool diff,
				bool fp_values, Datum *values, bool *nulls,
				const char *message_id)
{
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		args[2];
	bool		isnull;
	int64		fp,
				stored;
	Oid			save_userid;
	int			save_sec;
	int			rc;

	if (vcol >= 0)
		return retl_xmin_version(values[vcol], nulls[vcol],
								 ReadNextFullTransactionId());
	if (!diff || map->pk_column < 0 || nulls[map->pk_column])
		return 0;
	args[0] = Int64GetDatum(sync_id);
	args[1] = CStringGetTextDatum(OutputFunctionCall(&map->pk_out,
													 values[map->pk_column]));

	/*
	 * The diff state is the worker's (nobody else reads its chunks):
	 * read as the catalog's owner, for the sync the caller could load.
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(retl_privileges_catalog_owner(),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE);
	rc = SPI_execute_with_args("SELECT u.fp, COALESCE(u.prev, 0) FROM retl.fingerprint_chunks c,"
							   " ROWS FROM (pg_catalog.unnest(c.pks),"
							   "  pg_catalog.unnest(c.fingerprints),"
							   "  pg_catalog.unnest(c.previous))"
							   "  WITH ORDINALITY AS u (pk, fp, prev, n)"
							   " WHERE c.sync_id OPERATOR(pg_catalog.=) $1"
							   " AND $2 OPERATOR(pg_catalog.=) ANY (c.pks)"
							   " AND u.pk OPERATOR(pg_catalog.=) $2"
							   " ORDER BY c.chunk DESC, u.n DESC",
							   2, types, args, NULL, true, 1);
	SetUserIdAndSecContext(save_userid, save_sec);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "retl: reading fingerprints failed");
	/* no entry, or the last one forgot the key */
	if (SPI_processed == 0 ||
		DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) == 0)
		return 0;
	fp = fp_values ? retl_event_fingerprint(map, sync_id, values, nulls)
		: retl_diff_fingerprint(message_id);
	stored = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return (uint64) retl_diff_version_of(fp, stored,
										 DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
																	 SPI_tuptable->tupdesc, 2, &isnull)));
}

/*
 * Opens the sync's destination for encoding, when the preview shows the
 * kind's records and the kind has an encoding of its own; else NULL.  The
 * destination lives in the caller's memory, which frees its header list.
 */
static RetlDest *
open_for_records(const char *kind, Jsonb *config, bool track, bool standard)
{
	RetlDest   *dest;

	if (standard || retl_dest_kind(kind, false)->encode == NULL)
		return NULL;
	dest = palloc(sizeof(RetlDest));
	retl_dest_open(dest, kind, config, track);
	return dest;
}

/*
 * The jsonb of one previewed event (standard, in buf): the kind's record
 * when dest is set, encoded as the worker encodes it, else the event.
 */
static Datum
preview_value(StringInfo buf, RetlDest *dest, StringInfo record)
{
	Datum		event = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf->data));

	if (dest == NULL)
		return event;
	resetStringInfo(record);
	dest->kind->encode(dest, record, DatumGetJsonbP(event));
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(record->data));
}

/*
 * SQL: retl._preview(sync_id, n, standard).  Shows the kind's records, or
 * the standard events when standard is true.
 */
Datum
retl_preview(PG_FUNCTION_ARGS)
{
	int64		sync_id = PG_GETARG_INT64(0);
	int32		n = PG_GETARG_INT32(1);
	bool		standard = PG_GETARG_BOOL(2);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			relid;
	char	   *name,
			   *pk,
			   *kind;
	bool		track;
	Jsonb	   *mapping,
			   *options,
			   *config;
	RetlDest   *dest;
	StringInfoData record;
	RetlMapping *map;
	RetlEventCtx ctx;
	StringInfoData buf;
	char		message_id[RETL_MESSAGE_ID_LEN + 1];
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext old;
	bool		diff;
	bool		fp_values;
	int			vcol;
	char	   *select_list;
	SPITupleTable *rows;
	uint64		nrows;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "retl: SPI_connect failed");
	load_sync(sync_id, &relid, &name, &track, &mapping, &pk, &options, &kind,
			  &config, &diff, &fp_values);
	map = retl_mapping_compile(relid, track, mapping, pk, options);
	old = MemoryContextSwitchTo(cxt);
	dest = open_for_records(kind, config, track, standard);
	MemoryContextSwitchTo(old);
	retl_event_ctx_init(&ctx, sync_id, name, 0);
	vcol = retl_mapping_version_column(map, diff, &select_list);
	if (SPI_execute(psprintf("SELECT %s FROM %s LIMIT %d", select_list,
							 map->relname, n),
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "retl: reading the source failed");
	rows = SPI_tuptable;
	nrows = SPI_processed;
	initStringInfo(&buf);
	initStringInfo(&record);
	for (uint64 i = 0; i < nrows; i++)
	{
		Datum	   *values = palloc((map->ncolumns + 1) * sizeof(Datum));
		bool	   *nulls = palloc((map->ncolumns + 1) * sizeof(bool));
		Datum		jb;
		bool		isnull = false;
		int			id_at;

		heap_deform_tuple(rows->vals[i], rows->tupdesc, values, nulls);
		resetStringInfo(&buf);
		id_at = retl_event_build(&buf, map, &ctx, values, nulls, message_id);
		retl_event_version_id(message_id,
							  preview_version(sync_id, map, vcol, diff, fp_values,
											  values, nulls, message_id));
		memcpy(buf.data + id_at, message_id, RETL_MESSAGE_ID_LEN);
		old = MemoryContextSwitchTo(cxt);
		jb = preview_value(&buf, dest, &record);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &jb, &isnull);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return (Datum) 0;
}
