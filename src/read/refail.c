/*-------------------------------------------------------------------------
 *
 * refail.c
 *	  Re-sends a sync's failed events at the start of a run, before the
 *	  source is read.
 *
 * Where the sync has a primary key and the row still exists, the newest
 * version of the row is built again (read as the owner, in its restricted
 * scope); else the stored payload is sent as it was.  A diff sync forgets
 * a failed event whose row is gone, rather than resurrect it.  Failed
 * events are read and deleted as the worker (store/failed.c).  Runs in
 * the reader's page transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "store.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

/*
 * Builds the newest version of a row that failed before, found by primary
 * key as the sync's owner, with its version's messageId, and its content
 * fingerprint in *fp.  Returns false when the row is gone.
 */
static bool
rebuild_failed_row(RetlRun *run, const char *pk, char *message_id, int64 *fp)
{
	RetlMapping *map = run->map;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(pk)};
	char	   *sql = psprintf("SELECT %s FROM %s WHERE %s = $1::text::%s LIMIT 1",
							   run->query, map->relname,
							   quote_identifier(map->colnames[map->pk_column]),
							   format_type_be(map->coltypes[map->pk_column]));
	Datum	   *values = palloc((map->ncolumns + 1) * sizeof(Datum));
	bool	   *nulls = palloc((map->ncolumns + 1) * sizeof(bool));
	bool		found;

	retl_owner_enter(run);
	if (SPI_execute_with_args(sql, 1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "retl: reading a failed row back failed");
	found = SPI_processed > 0;
	if (found)
	{
		int			id_at;

		heap_deform_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, values, nulls);
		resetStringInfo(&run->event_buf);
		id_at = retl_event_build(&run->event_buf, map, &run->ectx, values, nulls,
								 message_id);
		/* the version as the reader gives it, so the id is the one it gets */
		*fp = run->fp_values
			? retl_event_fingerprint(map, run->sync_id, values, nulls)
			: retl_diff_fingerprint(message_id);
		if (run->diff)
			retl_event_version_id(message_id, retl_diff_version(run, pk, *fp));
		else
			retl_event_version_id(message_id, retl_reader_row_version(run, values, nulls));
		memcpy(run->event_buf.data + id_at, message_id, RETL_MESSAGE_ID_LEN);
		resetStringInfo(&run->ident_buf);
		if (run->mirror)
			retl_event_identity(&run->ident_buf, map, &run->ectx, values, nulls);
		retl_encode_event(run);
	}
	retl_owner_leave(run);
	return found;
}

/*
 * Queues the stored payload of a failed event, as it was sent.
 */
static void
queue_stored(RetlRun *run, const RetlFailedRow *row)
{
	resetStringInfo(&run->event_buf);
	appendStringInfoString(&run->event_buf, row->payload);
	run->event_reject = NULL;
	strlcpy(run->message_id, row->message_id ? row->message_id : "",
			sizeof(run->message_id));
	(void) retl_encode_add(run, row->pk, row->id);
}

/*
 * Re-sends a page of the sync's failed events.  Returns true when none is
 * left.
 */
bool
retl_refail_page(RetlRun *run)
{
	RetlFailedRow *rows;
	int			n = retl_store_failed_page(run->sync_id, run->retry_after_id,
										   run->id, &rows);

	for (int i = 0; i < n; i++)
	{
		int64		id = rows[i].id;
		char	   *pk = rows[i].pk;
		char		message_id[RETL_MESSAGE_ID_LEN + 1];
		int64		fp = 0;
		bool		rebuilt = pk != NULL && run->map->pk_column >= 0 &&
			rebuild_failed_row(run, pk, message_id, &fp);

		run->retry_after_id = id;
		if (!rebuilt && run->diff)
			retl_store_forget_failed(id);	/* the row is gone: do not resurrect it */
		else if (!rebuilt)
			queue_stored(run, &rows[i]);
		else
		{
			memcpy(run->message_id, message_id, sizeof(run->message_id));
			if (run->diff)
				retl_encode_add_diff(run, pk, id, fp, false);
			else
				(void) retl_encode_add(run, pk, id);
		}
	}
	return n < RETL_STORE_FAILED_PAGE;
}
