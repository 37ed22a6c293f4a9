/*-------------------------------------------------------------------------
 *
 * reader.c
 *	  Reads a sync's source in pages, each page in its own short
 *	  transaction, and turns its rows into events.
 *
 * No transaction stays open across HTTP: that would pin xmin and block
 * vacuum.  A page first re-sends failed events (refail.c), then reads the
 * source, then, for diff runs, finds deleted keys (diff.c).  The source is
 * read one of three ways, chosen at its first page and recorded in
 * retl.runs.read_method:
 *   - blocks (readblocks.c): tables, materialized views and the leaves of
 *     partitioned tables, by ranges of blocks;
 *   - keys (readkeys.c): views whose key pages stream, "WHERE key > last";
 *   - store (readstore.c): other views, materialized privately by key.
 * All of the source's reading, and the building of its events, runs in
 * the owner's restricted scope (isolate.c), so GRANTs and row-level
 * security apply and the owner's code cannot touch the session; retl's
 * own statements in the page run as the worker.
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "batch.h"
#include "store.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_inherits.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/params.h"
#include "optimizer/plancat.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

/*
 * The version of an xmin sync's row: its xmin, widened to 64 bits, or 0.
 */
uint64
retl_reader_row_version(RetlRun *run, Datum *values, bool *nulls)
{
	if (run->version_column < 0)
		return 0;
	return retl_xmin_version(values[run->version_column],
							 nulls[run->version_column], run->next_fxid);
}

/*
 * Prepares reading: the select list, the xmin filter of an incremental
 * run, and the leaves of a source with storage.  Runs in the transaction
 * that claims the run, right after the run's snapshot was taken, so the
 * block counts cover every visible row.
 */
void
retl_reader_start(RetlRun *run)
{
	RetlMapping *map = run->map;
	StringInfoData f;
	const char *xmin_expr = map->xmin_column >= 0
		? quote_identifier(map->colnames[map->xmin_column]) : "xmin";

	initStringInfo(&f);
	if (run->prev_snapshot != NULL)
	{
		Size		len = VARSIZE_ANY_EXHDR(run->prev_snapshot);
		char	   *hex = palloc(len * 2 + 1);

		hex[hex_encode(VARDATA_ANY(run->prev_snapshot), len, hex)] = '\0';
		appendStringInfo(&f,
						 " AND retl._xmin_is_new(%s, pg_catalog.decode('%s', 'hex'))",
						 xmin_expr, hex);
	}
	run->filter = f.data;
	run->version_column = retl_mapping_version_column(map, run->diff,
													  &run->query);
	run->next_fxid = ReadNextFullTransactionId();
	if (map->relkind == RELKIND_RELATION || map->relkind == RELKIND_MATVIEW ||
		map->relkind == RELKIND_PARTITIONED_TABLE)
		retl_blocks_start(run);
	initStringInfo(&run->event_buf);
	initStringInfo(&run->encode_buf);
	initStringInfo(&run->ident_buf);
}

/*
 * Returns the primary key of a row as text, or NULL.
 */
char *
retl_reader_pk(RetlRun *run, Datum *values, bool *nulls)
{
	RetlMapping *map = run->map;

	if (map->pk_column < 0 || nulls[map->pk_column])
		return NULL;
	return OutputFunctionCall(&map->pk_out, values[map->pk_column]);
}

/*
 * Builds the event of one row and queues it, or, in a diff run, skips it
 * when unchanged and records it as invalid when its key is NULL or
 * duplicate.  dup is 1 or 0 when the reader knows whether the key repeats
 * the previous row's (sources read in key order), else -1.  pk is the
 * row's key as text when the caller has it, else NULL, and key its hash
 * (retl_diff_key), or 0.
 */
static void
process_row(RetlRun *run, Datum *values, bool *nulls, int dup, char *pk,
			uint64 key)
{
	RetlMapping *map = run->map;
	char		message_id[RETL_MESSAGE_ID_LEN + 1];
	MemoryContext old = MemoryContextSwitchTo(run->row_cxt);
	int64		fp = 0;
	const char *verdict = NULL;
	uint64		version = 0;
	int			id_at;

	if (pk == NULL)
		pk = retl_reader_pk(run, values, nulls);
	if (run->diff && run->fp_values)
	{
		/* an unchanged row is skipped before its event is built */
		fp = retl_event_fingerprint(map, run->sync_id, values, nulls);
		verdict = retl_diff_check(run, pk, key, fp, dup, &version);
		if (verdict != NULL && verdict[0] == '\0')
		{
			MemoryContextSwitchTo(old);
			run->rows_read++;
			MemoryContextReset(run->row_cxt);
			return;
		}
	}
	resetStringInfo(&run->event_buf);
	id_at = retl_event_build(&run->event_buf, map, &run->ectx, values, nulls,
							 message_id);
	if (run->diff && !run->fp_values)
	{
		/* fingerprints of syncs made before 0.4: the event's content id */
		fp = retl_diff_fingerprint(message_id);
		verdict = retl_diff_check(run, pk, key, fp, dup, &version);
	}
	else if (!run->diff)
		version = retl_reader_row_version(run, values, nulls);
	retl_event_version_id(message_id, version);
	memcpy(run->event_buf.data + id_at, message_id, RETL_MESSAGE_ID_LEN);
	memcpy(run->message_id, message_id, sizeof(run->message_id));
	/* only mirror deletions carry the stored identity */
	resetStringInfo(&run->ident_buf);
	if (run->diff && run->mirror)
		retl_event_identity(&run->ident_buf, map, &run->ectx, values, nulls);
	retl_encode_event(run);
	MemoryContextSwitchTo(old);
	run->rows_read++;
	if (verdict != NULL && verdict[0] != '\0')
		retl_encode_reject(run, pk, run->event_buf.data, run->event_buf.len,
						   verdict);
	else if (verdict == NULL && run->diff)
		retl_encode_add_diff(run, pk, 0, fp, false);
	else if (verdict == NULL)
		(void) retl_encode_add(run, pk, 0);
	run->event_reject = NULL;	/* in row_cxt */
	MemoryContextReset(run->row_cxt);
}

/*
 * How many rows ahead a diff run asks for the memory of a row's stored
 * fingerprint (retl_diff_prefetch): its bucket two windows ahead, the
 * bucket's keys one window ahead: far enough that the fetch is done when
 * the row comes, near enough that building the rows between does not
 * evict it (a result holds thousands of rows).
 */
#define PREFETCH_AHEAD 8

/*
 * Turns n rows into events.  dups, when not NULL, says which rows repeat
 * the previous row's key.  A diff run first takes each row's key (that
 * column alone), so that the lookups of stored fingerprints can be
 * fetched ahead of the rows.
 */
void
retl_reader_tuples(RetlRun *run, HeapTuple *rows, TupleDesc desc, uint64 n,
				   const bool *dups)
{
	RetlMapping *map = run->map;
	/* one more: the xmin that versions an xmin sync's rows */
	Datum	   *values = palloc((map->ncolumns + 1) * sizeof(Datum));
	bool	   *nulls = palloc((map->ncolumns + 1) * sizeof(bool));
	char	  **pks = NULL;
	uint64	   *keys = NULL;

	if (run->diff && n > 0)
	{
		pks = palloc(n * sizeof(char *));
		keys = palloc(n * sizeof(uint64));
		for (uint64 i = 0; i < n; i++)
		{
			bool		isnull = true;
			Datum		key = map->pk_column < 0 ? (Datum) 0 :
				heap_getattr(rows[i], map->pk_column + 1, desc, &isnull);

			pks[i] = isnull ? NULL : OutputFunctionCall(&map->pk_out, key);
			keys[i] = pks[i] ? retl_diff_key(pks[i]) : 0;
		}
		for (uint64 i = 0; i < Min(n, 2 * PREFETCH_AHEAD); i++)
			retl_diff_prefetch(run, keys[i], i < PREFETCH_AHEAD ? 1 : 0);
	}
	for (uint64 i = 0; i < n; i++)
	{
		if (keys != NULL && i + 2 * PREFETCH_AHEAD < n)
			retl_diff_prefetch(run, keys[i + 2 * PREFETCH_AHEAD], 0);
		if (keys != NULL && i + PREFETCH_AHEAD < n)
			retl_diff_prefetch(run, keys[i + PREFETCH_AHEAD], 1);
		heap_deform_tuple(rows[i], desc, values, nulls);
		process_row(run, values, nulls, dups ? (int) dups[i] : -1,
					pks ? pks[i] : NULL, keys ? keys[i] : 0);
	}
	pfree(values);
	pfree(nulls);
	if (keys != NULL)
		pfree(keys);
}

/*
 * A receiver that turns each row of a source statement into its event as
 * the executor makes it, from the slot's values: no copy of the row is
 * formed in a tuple table and taken apart again.
 */
typedef struct RowStream
{
	DestReceiver pub;
	RetlRun    *run;
	uint64		rows;
} RowStream;

/*
 * Builds and queues the event of one row (RowStream).
 */
static bool
stream_receive(TupleTableSlot *slot, DestReceiver *self)
{
	RowStream  *s = (RowStream *) self;

	slot_getallattrs(slot);
	process_row(s->run, slot->tts_values, slot->tts_isnull, -1, NULL, 0);
	s->rows++;
	return true;
}

/*
 * Gives the statement's rows an SPI connection of their own: turning a row
 * into its event may run statements (a rejected event is recorded in
 * retl.failed_events), and those must not run on the connection whose
 * statement is still executing -- its end would free that statement's
 * executor memory.  A PL function called from a query does the same.  The
 * executor's memory context stays current.
 */
static void
stream_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "retl: SPI_connect failed");
	MemoryContextSwitchTo(cxt);
}

/*
 * Ends the connection stream_startup opened.
 */
static void
stream_shutdown(DestReceiver *self)
{
	MemoryContext cxt = CurrentMemoryContext;

	SPI_finish();
	MemoryContextSwitchTo(cxt);
}

/*
 * A receiver that lives on its caller's stack: nothing to free.
 */
static void
receiver_destroy(DestReceiver *self)
{
}

/*
 * Sets up a DestReceiver of the reader's own, which SPI hands every row of
 * a statement (SPI_execute_*_extended with options.dest) instead of
 * collecting them in a tuple table.
 */
void
retl_reader_receiver(DestReceiver *r,
					 bool (*receive) (TupleTableSlot *slot, DestReceiver *self),
					 void (*startup) (DestReceiver *self, int operation,
									  TupleDesc typeinfo),
					 void (*shutdown) (DestReceiver *self))
{
	r->receiveSlot = receive;
	r->rStartup = startup;
	r->rShutdown = shutdown;
	r->rDestroy = receiver_destroy;
	r->mydest = DestTuplestore;	/* not DestNone: SPI would discard */
}

/*
 * The parameters of a source statement, for SPI's extended calls: n
 * values, none NULL, of the plan's argument types, or else of types.
 * (makeParamList leaves each isnull unset.)
 */
ParamListInfo
retl_reader_params(int n, SPIPlanPtr plan, const Oid *types,
				   const Datum *values)
{
	ParamListInfo params = makeParamList(n);

	for (int i = 0; i < n; i++)
	{
		params->params[i].value = values[i];
		params->params[i].isnull = false;
		params->params[i].ptype = plan ? SPI_getargtypeid(plan, i) : types[i];
		params->params[i].pflags = PARAM_FLAG_CONST;
	}
	return params;
}

/*
 * Runs a statement that reads the source (a plan, or else sql with its
 * arguments) and turns its rows into events; returns how many rows it
 * read.  A diff run collects the rows first, so that the lookups of their
 * stored fingerprints can be fetched together (retl_reader_tuples); any
 * other run builds each event straight from the executor's slot.
 */
uint64
retl_reader_execute(RetlRun *run, SPIPlanPtr plan, const char *sql,
					int nargs, Oid *types, Datum *args)
{
	RowStream	s;
	SPIExecuteOptions opts;
	int			rc;

	if (run->diff)
	{
		SPITupleTable *tt;
		uint64		n;

		rc = plan ? SPI_execute_plan(plan, args, NULL, true, 0)
			: SPI_execute_with_args(sql, nargs, types, args, NULL, true, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "retl: reading the source failed");
		/* before the rows' processing runs statements of its own */
		tt = SPI_tuptable;
		n = SPI_processed;
		retl_reader_tuples(run, tt->vals, tt->tupdesc, n, NULL);
		SPI_freetuptable(tt);
		return n;
	}
	memset(&s, 0, sizeof(s));
	retl_reader_receiver(&s.pub, stream_receive, stream_startup,
						 stream_shutdown);
	s.run = run;
	memset(&opts, 0, sizeof(opts));
	opts.read_only = true;
	opts.dest = &s.pub;
	if (nargs > 0)
		opts.params = retl_reader_params(nargs, plan, types, args);
	rc = plan ? SPI_execute_plan_extended(plan, &opts)
		: SPI_execute_extended(sql, &opts);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "retl: reading the source failed");
	return s.rows;
}

/*
 * Chooses how the source is read, at its first page, in the owner's
 * scope: by blocks when its leaves can be read directly, else by keys or
 * through the private store.
 */
static void
choose_method(RetlRun *run)
{
	if (retl_blocks_usable(run))
		run->read_method = RETL_READ_BLOCKS;
	else
		run->read_method = retl_keys_choose(run);
	run->method_chosen = true;
	ereport(DEBUG1,
			(errmsg("retl run " INT64_FORMAT " of sync \"%s\" reads its source by %s",
					run->id, run->sync_name,
					retl_read_method_name(run->read_method))));
}

/*
 * Reads want rows (about) of the source, as its owner.  Returns true when
 * the source has nothing more to read.
 */
static bool
read_source_page(RetlRun *run, int want)
{
	bool		done;

	retl_owner_enter(run);
	if (!run->method_chosen)
		choose_method(run);
	if (run->read_method == RETL_READ_BLOCKS)
		done = retl_blocks_page(run, want);
	else
		done = retl_keys_page(run, want);
	retl_owner_leave(run);
	return done;
}

/*
 * Reads one page of the run's phase in a short transaction: failed events
 * (retrying), the source (reading) or deletions (deleting).  After the
 * commit, whatever the owner's code left in the session is undone.
 * Returns true when the phase has nothing more to read: the run then
 * moves on (run.c), and closes its last batch once all is read.
 */
bool
retl_reader_page(RetlRun *run)
{
	/*
	 * A page makes max_in_flight batches, one batch when memory is tight,
	 * and just the first batch at the start: the first events leave after
	 * one batch's worth of rows (it closes on the next row).  A page is at
	 * most one span, and a span plus a batch fits the checkpoint's window
	 * of 2 x max_in_flight batches (retl_ckpt_may_send).
	 */
	int			want = retl_pending_bytes < PENDING_SOFT_CAP && run->seq > 0
		? run->dest.batch_size * run->dest.max_in_flight
		: run->dest.batch_size + 1;
	MemoryContext caller = CurrentMemoryContext;
	bool		done = false;

	run->in_owner = false;		/* an aborted page left no scope */
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "retl: SPI_connect failed");
	retl_event_ctx_set_now(&run->ectx, GetCurrentTimestamp());
	switch (run->phase)
	{
		case RETL_RUN_RETRYING:
			done = retl_refail_page(run);
			break;
		case RETL_RUN_READING:
			done = read_source_page(run, want);
			break;
		case RETL_RUN_DELETING:
			done = retl_diff_deletes_page(run);
			break;
		default:
			elog(ERROR, "retl: run " INT64_FORMAT " has nothing to read in its phase",
				 run->id);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
	retl_session_restore();
	run->dirty = true;
	return done;
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
 * Frees what reading holds beyond the run's memory (saved plans, the
 * store).  Safe to call more than once, in a transaction or not.
 */
void
retl_reader_close(RetlRun *run)
{
	retl_keys_close(run);
}
