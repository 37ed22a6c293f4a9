/*-------------------------------------------------------------------------
 *
 * reader.c
 *	  Reads a sync's source in pages, each page in its own short
 *	  transaction, and turns its rows into batches of events.
 *
 * No transaction stays open across HTTP: that would pin xmin and block
 * vacuum (DESIGN.md, "Reading and change detection").  Plain tables are
 * read in ranges of blocks (a TID range scan per page).  A row version that
 * was visible to the run's snapshot is at a block below the block count
 * read after that snapshot, and stays visible until it is updated, in which
 * case its new version is newer than the run's snapshot and the next run
 * sends it.  Other sources (views, partitioned tables) are read through a
 * holdable cursor, which PostgreSQL materializes when the first page's
 * transaction commits.
 *
 * Pages are read as the sync's owner, so GRANTs and row-level security
 * apply.
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "optimizer/plancat.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#define RANGE_MIN_BLOCKS 1		/* blocks per TID range query ... */
#define RANGE_MAX_BLOCKS 4096	/* ... adapted to yield about one batch */
#define PAGE_MAX_BLOCKS 16384	/* blocks per transaction */
#define PAGE_MAX_MS 100			/* time per transaction */
#define CURSOR_FETCH 2000		/* rows per fetch from a holdable cursor */

/*
 * Prepares reading: decides how the source is paged and builds the query.
 * Runs in the transaction that claims the run, right after the run's
 * snapshot was taken, so the block count covers every visible row.
 */
void
retl_reader_start(RetlRun *run)
{
	RetlMapping *map = run->map;
	StringInfoData q;
	StringInfoData f;
	bool		filter = run->prev_snapshot != NULL;
	const char *xmin_expr = map->xmin_column >= 0
		? quote_identifier(map->colnames[map->xmin_column]) : "xmin";

	run->use_ctid = map->relkind == RELKIND_RELATION;
	initStringInfo(&q);
	initStringInfo(&f);
	if (filter)
	{
		Size		len = VARSIZE_ANY_EXHDR(run->prev_snapshot);
		char	   *hex = palloc(len * 2 + 1);

		hex[hex_encode(VARDATA_ANY(run->prev_snapshot), len, hex)] = '\0';
		appendStringInfo(&f,
						 " AND retl._xmin_is_new(%s, pg_catalog.decode('%s', 'hex'))",
						 xmin_expr, hex);
	}
	appendStringInfo(&q, "SELECT %s FROM %s%s WHERE true%s",
					 retl_mapping_select_list(map),
					 run->use_ctid ? "ONLY " : "", map->relname, f.data);
	run->query = q.data;
	run->filter = f.data;
	if (run->use_ctid)
	{
		Relation	rel = relation_open(run->relid, AccessShareLock);

		run->nblocks = RelationGetNumberOfBlocks(rel);
		relation_close(rel, AccessShareLock);
		run->next_block = (BlockNumber) Min(run->ckpt.pos, run->nblocks);
		run->range_blocks = 1;
	}
	else
		run->cursor_name = psprintf("retl_run_" INT64_FORMAT, run->id);
	initStringInfo(&run->event_buf);
	initStringInfo(&run->encode_buf);
}

static void read_failed_page(RetlRun *run, Oid worker_uid, int worker_sec);

/*
 * Returns the primary key of a row as text, or NULL.
 */
static char *
row_pk(RetlMapping *map, Datum *values, bool *nulls)
{
	if (map->pk_column < 0 || nulls[map->pk_column])
		return NULL;
	return OutputFunctionCall(&map->pk_out, values[map->pk_column]);
}

/*
 * Builds the event of one row and queues it, or, in a diff run, skips it
 * when unchanged and records it as invalid when its key is NULL or
 * duplicate.
 */
static void
process_row(RetlRun *run, HeapTuple tup, TupleDesc desc, Datum *values,
			bool *nulls)
{
	RetlMapping *map = run->map;
	char		message_id[RETL_MESSAGE_ID_LEN + 1];
	MemoryContext old = MemoryContextSwitchTo(run->row_cxt);
	char	   *pk;
	int64		fp = 0;
	const char *verdict = NULL;

	heap_deform_tuple(tup, desc, values, nulls);
	resetStringInfo(&run->event_buf);
	retl_event_build(&run->event_buf, map, &run->ectx, values, nulls,
					 message_id);
	pk = row_pk(map, values, nulls);
	memcpy(run->message_id, message_id, sizeof(run->message_id));
	retl_run_encode(run);
	MemoryContextSwitchTo(old);
	run->rows_read++;
	if (run->diff)
	{
		fp = retl_diff_fingerprint(message_id);
		verdict = retl_diff_check(run, pk, fp);
	}
	if (verdict != NULL && verdict[0] != '\0')
		retl_catalog_fail_event(run, pk, run->event_buf.data,
								run->event_buf.len, verdict);
	else if (verdict == NULL && retl_run_add_event(run, pk, 0) && run->diff)
		run->building->ev_fp[run->building->nevents - 1] = fp;
	run->event_reject = NULL;	/* in row_cxt */
	MemoryContextReset(run->row_cxt);
}

/*
 * Turns the rows of one SPI result into events.  A diff run first looks up
 * the stored fingerprints of the whole page in one query.
 */
static void
process_rows(RetlRun *run, SPITupleTable *tt, uint64 n)
{
	RetlMapping *map = run->map;
	Datum	   *values = palloc(map->ncolumns * sizeof(Datum));
	bool	   *nulls = palloc(map->ncolumns * sizeof(bool));

	if (run->diff && n > 0)
	{
		char	  **pks = palloc(n * sizeof(char *));

		for (uint64 i = 0; i < n; i++)
		{
			heap_deform_tuple(tt->vals[i], tt->tupdesc, values, nulls);
			pks[i] = row_pk(map, values, nulls);
		}
		retl_diff_lookup(run, pks, (int) n, run->worker_uid, run->worker_sec);
	}
	for (uint64 i = 0; i < n; i++)
		process_row(run, tt->vals[i], tt->tupdesc, values, nulls);
	pfree(values);
	pfree(nulls);
}

/*
 * Sizes the next TID range so that it yields about one batch of events:
 * small spans keep the checkpoint close behind the acknowledged events,
 * and sparse incremental scans still read large ranges per query.
 */
static void
adapt_range(RetlRun *run, BlockNumber blocks, uint64 rows)
{
	double		per_block = rows > 0 ? (double) rows / blocks : 0;
	double		want = run->dest.batch_size;
	double		next = per_block > 0 ? want / per_block : (double) blocks * 4;

	run->range_blocks = (BlockNumber) Max(RANGE_MIN_BLOCKS,
										  Min(RANGE_MAX_BLOCKS, next));
}

/*
 * Reads block ranges until enough events are built or the page's block or
 * time budget is spent.
 */
static void
read_ctid_page(RetlRun *run, int want_events)
{
	TimestampTz start = GetCurrentTimestamp();
	BlockNumber scanned = 0;
	int64		before = run->rows_read;

	while (run->next_block < run->nblocks)
	{
		BlockNumber end = Min(run->nblocks, run->next_block + run->range_blocks);
		char	   *sql = psprintf("%s AND ctid >= '(%u,0)'::tid AND ctid < '(%u,0)'::tid",
								   run->query, run->next_block, end);
		int			rc = SPI_execute(sql, true, 0);

		if (rc != SPI_OK_SELECT)
			elog(ERROR, "retl: reading the source failed: %s",
				 SPI_result_code_string(rc));
		process_rows(run, SPI_tuptable, SPI_processed);
		retl_ckpt_span(run, end, (int64) SPI_processed);
		adapt_range(run, end - run->next_block, SPI_processed);
		SPI_freetuptable(SPI_tuptable);
		pfree(sql);
		scanned += end - run->next_block;
		run->next_block = end;
		if (run->rows_read - before >= want_events ||
			scanned >= PAGE_MAX_BLOCKS ||
			TimestampDifferenceExceeds(start, GetCurrentTimestamp(), PAGE_MAX_MS))
			break;
	}
	if (run->next_block >= run->nblocks)
		run->source_done = true;
}

/*
 * Reads a page of a plain table.  An incremental run first tries to find
 * its changed rows in one scan (tidlist.c) and reads them by TID; with too
 * many changes, or on a full run, it walks block ranges.
 */
static void
read_table_page(RetlRun *run, int want)
{
	if (!run->tids_tried && run->filter[0] != '\0')
	{
		run->tids_tried = true;
		if (retl_tidlist_collect(run, run->filter))
			return;
	}
	if (run->use_tids)
		retl_tidlist_page(run, want, process_rows);
	else
		read_ctid_page(run, want);
}

/*
 * Reads one fetch from the holdable cursor, declaring it on first use.
 */
static void
read_cursor_page(RetlRun *run)
{
	Portal		portal;

	if (!run->cursor_open)
	{
		char	   *sql = psprintf("DECLARE %s NO SCROLL CURSOR WITH HOLD FOR %s",
								   run->cursor_name, run->query);

		if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "retl: could not declare the source cursor");
		run->cursor_open = true;
		portal = SPI_cursor_find(run->cursor_name);
		/* a resumed run skips the rows acknowledged before */
		if (portal != NULL && run->ckpt.pos > 0)
			SPI_cursor_move(portal, true, run->ckpt.pos);
		run->fetched = run->ckpt.pos;
	}
	portal = SPI_cursor_find(run->cursor_name);
	if (portal == NULL)
		elog(ERROR, "retl: source cursor \"%s\" is gone", run->cursor_name);
	SPI_cursor_fetch(portal, true, CURSOR_FETCH);
	if (SPI_processed == 0)
		run->source_done = true;
	process_rows(run, SPI_tuptable, SPI_processed);
	run->fetched += SPI_processed;
	retl_ckpt_span(run, run->fetched, (int64) SPI_processed);
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Undoes the settings the owner's code changed while the commit that
 * declared a holdable cursor ran the rest of its query (after the page's
 * own settings level had ended), as RESET ALL would: the worker's own
 * settings are overrides, which it keeps.
 */
static void
reset_owner_settings(MemoryContext caller)
{
	StartTransactionCommand();
	ResetAllOptions();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
}

/*
 * Reads one page of the source in a short transaction, as the sync's
 * owner.  Closes the last batch when the source is exhausted.  Whatever
 * settings the owner's code (a view's functions) changes are undone at
 * the end of the page: the worker's session serves other owners too.
 */
void
retl_reader_page(RetlRun *run)
{
	Oid			save_uid;
	int			save_sec;
	/* a page makes the batches the pipeline lacks, one batch when memory is tight */
	int			want = retl_pending_bytes < PENDING_SOFT_CAP
		? run->dest.batch_size * run->dest.max_in_flight * 2
		: run->dest.batch_size;
	MemoryContext caller = CurrentMemoryContext;
	int			guc_level;
	bool		had_cursor = run->cursor_open;

	StartTransactionCommand();
	/* settings the owner's code changes (set_config) end with the page */
	guc_level = NewGUCNestLevel();
	GetUserIdAndSecContext(&save_uid, &save_sec);
	SetUserIdAndSecContext(run->owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "retl: SPI_connect failed");
	retl_event_ctx_set_now(&run->ectx, GetCurrentTimestamp());
	run->worker_uid = save_uid;
	run->worker_sec = save_sec;
	if (!run->retry_done)
		read_failed_page(run, save_uid, save_sec);
	else if (!run->source_done && run->use_ctid)
		read_table_page(run, want);
	else if (!run->source_done)
		read_cursor_page(run);
	else
	{
		SetUserIdAndSecContext(save_uid, save_sec);
		retl_diff_deletes_page(run);
	}
	run->reading_done = run->source_done &&
		(!run->diff || run->deletes_done);
	SPI_finish();
	PopActiveSnapshot();
	AtEOXact_GUC(false, guc_level);
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
	SetUserIdAndSecContext(save_uid, save_sec);
	if (run->cursor_open && !had_cursor)
		reset_owner_settings(caller);
	run->dirty = true;
	if (run->reading_done)
	{
		retl_batch_close(run);
		retl_reader_close(run);
	}
}

/*
 * Builds the newest version of a row that failed before, found by primary
 * key as the sync's owner.  Returns false when the row is gone.
 */
static bool
rebuild_failed_row(RetlRun *run, const char *pk, char *message_id)
{
	RetlMapping *map = run->map;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(pk)};
	char	   *sql = psprintf("SELECT %s FROM %s WHERE %s = $1::text::%s LIMIT 1",
							   retl_mapping_select_list(map), map->relname,
							   quote_identifier(map->colnames[map->pk_column]),
							   format_type_be(map->coltypes[map->pk_column]));
	Datum	   *values = palloc(map->ncolumns * sizeof(Datum));
	bool	   *nulls = palloc(map->ncolumns * sizeof(bool));

	if (SPI_execute_with_args(sql, 1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "retl: reading a failed row back failed");
	if (SPI_processed == 0)
		return false;
	heap_deform_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, values, nulls);
	resetStringInfo(&run->event_buf);
	retl_event_build(&run->event_buf, map, &run->ectx, values, nulls, message_id);
	retl_run_encode(run);
	return true;
}

/*
 * Deletes a failed event that must not be retried, as the worker.
 */
static void
forget_failed(int64 id, Oid worker_uid, int worker_sec, Oid owner)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(id)};

	SetUserIdAndSecContext(worker_uid, worker_sec);
	if (SPI_execute_with_args("DELETE FROM retl.failed_events WHERE id = $1",
							  1, argtypes, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "retl: deleting a failed event failed");
	SetUserIdAndSecContext(owner, worker_sec | SECURITY_LOCAL_USERID_CHANGE);
}

/*
 * Re-sends a page of the sync's failed events, before the source is read:
 * the newest version of the row where the sync has a primary key and the
 * row still exists, else the stored payload.  Failed events are read as
 * the worker; source rows as the owner.
 */
static void
read_failed_page(RetlRun *run, Oid worker_uid, int worker_sec)
{
	Oid			argtypes[3] = {INT8OID, INT8OID, INT8OID};
	Datum		args[3] = {Int64GetDatum(run->sync_id),
	Int64GetDatum(run->retry_after_id), Int64GetDatum(run->id)};
	SPITupleTable *tt;
	uint64		n;

	SetUserIdAndSecContext(worker_uid, worker_sec);
	if (SPI_execute_with_args("SELECT id, primary_key, payload, message_id FROM retl.failed_events"
							  " WHERE sync_id = $1 AND id > $2 AND run_id IS DISTINCT FROM $3"
							  " AND retryable ORDER BY id LIMIT 500",
							  3, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "retl: reading failed events failed");
	tt = SPI_tuptable;
	n = SPI_processed;
	SetUserIdAndSecContext(run->owner, worker_sec | SECURITY_LOCAL_USERID_CHANGE);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		char	   *pk = SPI_getvalue(tt->vals[i], tt->tupdesc, 2);
		char		message_id[RETL_MESSAGE_ID_LEN + 1];
		bool		rebuilt = pk != NULL && run->map->pk_column >= 0 &&
			rebuild_failed_row(run, pk, message_id);

		run->retry_after_id = id;
		if (!rebuilt && run->diff)
		{
			/* the row is gone: a diff sync must not resurrect it */
			forget_failed(id, worker_uid, worker_sec, run->owner);
			continue;
		}
		if (!rebuilt)
		{
			char	   *payload = SPI_getvalue(tt->vals[i], tt->tupdesc, 3);
			char	   *msgid = SPI_getvalue(tt->vals[i], tt->tupdesc, 4);

			resetStringInfo(&run->event_buf);
			appendStringInfoString(&run->event_buf, payload);
			run->event_reject = NULL;
			strlcpy(run->message_id, msgid ? msgid : "", sizeof(run->message_id));
		}
		else
			memcpy(run->message_id, message_id, sizeof(run->message_id));
		if (retl_run_add_event(run, pk, id) && rebuilt && run->diff)
			run->building->ev_fp[run->building->nevents - 1] =
				retl_diff_fingerprint(message_id);
	}
	if (n < 500)
		run->retry_done = true;
}

/*
 * The planner's estimate of the rows of a table, materialized view or
 * partitioned table (the sum of its leaves), for retl.sync_status's
 * progress: it is right for a table never analyzed too, unlike
 * pg_class.reltuples, and runs no user code.  -1 for views and foreign
 * tables.  Needs a transaction.
 */
int64
retl_reader_estimate(Oid relid)
{
	char		relkind = get_rel_relkind(relid);
	List	   *rels;
	ListCell   *lc;
	double		total = 0;

	if (relkind != RELKIND_RELATION && relkind != RELKIND_MATVIEW &&
		relkind != RELKIND_PARTITIONED_TABLE)
		return -1;
	rels = find_all_inheritors(relid, AccessShareLock, NULL);
	foreach(lc, rels)
	{
		Relation	rel = relation_open(lfirst_oid(lc), NoLock);
		BlockNumber pages;
		double		tuples,
					allvisfrac;

		if (RELKIND_HAS_STORAGE(rel->rd_rel->relkind))
		{
			estimate_rel_size(rel, NULL, &pages, &tuples, &allvisfrac);
			total += tuples;
		}
		relation_close(rel, NoLock);
	}
	return (int64) total;
}

/*
 * Closes the holdable cursor, if any.  Safe to call more than once.
 */
void
retl_reader_close(RetlRun *run)
{
	Portal		portal;

	if (!run->cursor_open)
		return;
	run->cursor_open = false;
	portal = GetPortalByName(run->cursor_name);
	if (PortalIsValid(portal))
	{
		bool		in_xact = IsTransactionState();

		MemoryContext cxt = CurrentMemoryContext;

		if (!in_xact)
			StartTransactionCommand();
		PortalDrop(portal, false);
		if (!in_xact)
		{
			CommitTransactionCommand();
			MemoryContextSwitchTo(cxt);
		}
	}
}

/*
 * Describes the first invalid UTF-8 sequence of an event built in a
 * SQL_ASCII database, which stores whatever bytes it is given: its bytes
 * as PostgreSQL shows them, and where it is.
 */
static char *
invalid_utf8_reason(const char *s, int len, int bad)
{
	StringInfoData bytes;
	int			n = Min(pg_encoding_mblen(PG_UTF8, s + bad), len - bad);

	initStringInfo(&bytes);
	for (int i = 0; i < n; i++)
		appendStringInfo(&bytes, "%s0x%02x", i ? " " : "",
						 (unsigned char) s[bad + i]);
	return psprintf("event is not valid UTF-8: invalid byte sequence %s at byte %d; "
					"a SQL_ASCII database stores any bytes, but JSON must be UTF-8",
					bytes.data, bad);
}

/*
 * Converts the event in run->event_buf from the database encoding to
 * UTF-8, which JSON requires.  Returns NULL, or why it cannot be converted
 * (then the event is left as it was).  A UTF-8 database has nothing to do;
 * a SQL_ASCII one cannot convert, only check.
 */
static char *
event_to_utf8(RetlRun *run)
{
	StringInfo	ev = &run->event_buf;
	int			enc = GetDatabaseEncoding();
	MemoryContext cxt = CurrentMemoryContext;
	char	   *volatile converted = NULL;
	char	   *reason = NULL;
	int			valid;

	if (enc == PG_UTF8)
		return NULL;
	if (enc == PG_SQL_ASCII)
	{
		valid = pg_encoding_verifymbstr(PG_UTF8, ev->data, ev->len);
		return valid == ev->len ? NULL
			: invalid_utf8_reason(ev->data, ev->len, valid);
	}
	/* conversion functions raise errors: nothing to undo but memory */
	PG_TRY();
	{
		converted = pg_server_to_any(ev->data, ev->len, PG_UTF8);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		reason = psprintf("event cannot be converted to UTF-8: %s",
						  edata->message);
	}
	PG_END_TRY();
	if (converted != NULL && converted != ev->data)
	{
		resetStringInfo(ev);
		appendStringInfoString(ev, converted);
		pfree(converted);
	}
	return reason;
}

/*
 * Finishes a freshly built event in run->event_buf: rewrites it into the
 * destination kind's own record, for kinds that have one (Braze,
 * Amplitude ...), then into UTF-8.  Sets run->event_reject when it cannot
 * be sent.  Stored failed payloads were finished before and skip this.
 */
void
retl_run_encode(RetlRun *run)
{
	Jsonb	   *event;

	if (run->dest.kind->encode != NULL)
	{
		event = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
												   CStringGetDatum(run->event_buf.data)));
		resetStringInfo(&run->encode_buf);
		run->dest.kind->encode(&run->dest, &run->encode_buf, event);
		resetStringInfo(&run->event_buf);
		appendBinaryStringInfo(&run->event_buf, run->encode_buf.data,
							   run->encode_buf.len);
	}
	run->event_reject = event_to_utf8(run);
}

/*
 * Closes the batch being built, if it has events, and queues it for
 * sending.
 */
void
retl_batch_close(RetlRun *run)
{
	RetlBatch  *b = run->building;

	if (b == NULL)
		return;
	run->building = NULL;
	if (b->nevents == 0)
	{
		/* only oversize events, already recorded as failed */
		retl_ckpt_ack_done(run, b->ack, 0, 0);
		retl_batch_free(b);
		return;
	}
	appendStringInfoString(&b->body, run->dest.suffix);
	b->counted = b->body.len;
	retl_pending_bytes += b->counted;
	run->avg_batch_bytes = run->avg_batch_bytes == 0 ? (Size) b->body.len
		: (run->avg_batch_bytes * 7 + b->body.len) / 8;
	dlist_push_tail(&run->ready, &b->node);
	run->nready++;
}

/*
 * Why the event in run->event_buf must not be sent (over the destination's
 * per-event limit, or not UTF-8), or NULL.  Consumes run->event_reject.
 */
static char *
event_reject(RetlRun *run)
{
	char	   *reject = run->event_reject;

	run->event_reject = NULL;
	if (run->event_buf.len > run->dest.max_event_bytes)
		return psprintf("event is %d bytes, over the destination's limit of " INT64_FORMAT " bytes",
						run->event_buf.len, run->dest.max_event_bytes);
	return reject;
}

/*
 * Adds the event in run->event_buf to the batch being built, closing the
 * batch first when the event would exceed its count or byte limit.  An
 * event that cannot be sent (over the destination's per-event limit, or
 * not UTF-8) is never sent: it goes to retl.failed_events with the reason,
 * and counts as sent and failed.  failed_id is the retl.failed_events row
 * the event retries, or 0.  Returns whether the event went into the batch.
 */
bool
retl_run_add_event(RetlRun *run, const char *pk, int64 failed_id)
{
	RetlDest   *d = &run->dest;
	StringInfo	ev = &run->event_buf;
	RetlBatch  *b = run->building;
	char	   *reject = event_reject(run);
	bool		rejected = reject != NULL;

	if (b != NULL && !rejected &&
		(b->nevents >= d->batch_size ||
		 b->body.len + ev->len + strlen(d->separator) + strlen(d->suffix) > d->max_batch_bytes))
	{
		retl_batch_close(run);
		b = NULL;
	}
	if (b == NULL)
	{
		b = run->building = retl_batch_create(run);
		b->ack = retl_ckpt_new_ack(run);
		appendStringInfoString(&b->body, d->prefix);
	}
	retl_ckpt_event(run, b->ack, rejected);
	if (rejected)
	{
		retl_catalog_fail_event(run, pk, ev->data, ev->len, reject);
		return false;
	}
	retl_batch_append(b, ev->data, ev->len, pk, run->message_id, failed_id);
	return true;
}
