/*-------------------------------------------------------------------------
 *
 * failed.c
 *	  retl.failed_events: the events a destination refused for good, or
 *	  that were never sent; read again and forgotten by the next runs
 *	  (read/refail.c).
 *
 * Statements run as the worker: in a short transaction of their own
 * (a failed batch, a delivered one) or in the reader's page transaction
 * (an event rejected while it was built, the pages of failed events to
 * send again).  Every text a vendor or a row may have filled is scrubbed
 * of the destination's secrets before it is stored.
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "batch.h"
#include "store_internal.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

/* the arguments of both statements that record a failed event */
#define FAILED_EVENT_ARGS 11, {INT8OID, INT8OID, TEXTOID, TEXTOID, INT4OID, \
	TEXTOID, TEXTOID, INT4OID, INT8OID, BOOLOID, TEXTOID}

static RetlStoreStmt retried_stmt = {
	"UPDATE retl.failed_events SET run_id = $2, payload = $4,"
	" message_id = coalesce($11, message_id),"
	" http_status = $5, response_body = left($6, 4096), error = $7,"
	" attempts = attempts + $8, last_failed_at = now()"
	" WHERE id = $9",
	FAILED_EVENT_ARGS
};
static RetlStoreStmt failed_stmt = {
	"INSERT INTO retl.failed_events AS f (sync_id, run_id, primary_key,"
	" message_id, payload, http_status, response_body, error, attempts, retryable)"
	" SELECT (SELECT s.id FROM retl.syncs s WHERE s.id = $1), $2, $3,"
	" $11, $4, $5, left($6, 4096), $7, $8, $10"
	" ON CONFLICT (sync_id, message_id) DO UPDATE SET run_id = EXCLUDED.run_id,"
	" http_status = EXCLUDED.http_status, response_body = EXCLUDED.response_body,"
	" error = EXCLUDED.error, attempts = f.attempts + EXCLUDED.attempts,"
	" retryable = EXCLUDED.retryable, last_failed_at = now()",
	FAILED_EVENT_ARGS
};

/*
 * Records one failed event: a retried one updates its row, a new one is
 * inserted, or merged with the same event (sync, messageId) recorded
 * before, so that re-sends do not pile up duplicates.  Must run inside a
 * transaction with SPI connected.
 */
void
retl_store_failed_event(const RetlFailedEvent *ev)
{
	bool		has_msgid = ev->message_id && ev->message_id[0];
	Datum		values[11];
	char		nulls[11] = {' ', ' ', ev->pk ? ' ' : 'n', ' ',
		ev->http_status ? ' ' : 'n', ev->response ? ' ' : 'n', ' ', ' ', ' ', ' ',
	has_msgid ? ' ' : 'n'};

	values[0] = Int64GetDatum(ev->sync_id);
	values[1] = Int64GetDatum(ev->run_id);
	values[2] = ev->pk ? CStringGetTextDatum(ev->pk) : (Datum) 0;
	values[3] = PointerGetDatum(ev->payload);
	values[4] = Int32GetDatum(ev->http_status);
	values[5] = PointerGetDatum(ev->response);
	values[6] = PointerGetDatum(ev->error);
	values[7] = Int32GetDatum(ev->attempts);
	values[8] = Int64GetDatum(ev->failed_id);
	values[9] = BoolGetDatum(ev->retryable);
	values[10] = has_msgid ? CStringGetTextDatum(ev->message_id) : (Datum) 0;
	if (ev->failed_id != 0)
		retl_store_exec(&retried_stmt, values, nulls, SPI_OK_UPDATE);
	else
		retl_store_exec(&failed_stmt, values, nulls, SPI_OK_INSERT);
}

/*
 * Records one failed event of a run, its texts scrubbed of the run's
 * secrets.  Must run inside a transaction with SPI connected.
 */
static void
record_failed(RetlRun *run, int64 failed_id, const char *pk,
			  const char *message_id, const char *payload, int len,
			  int http_status, const char *response, const char *error,
			  int attempts, bool retryable)
{
	RetlFailedEvent ev = {
		.sync_id = run->sync_id,
		.run_id = run->id,
		.failed_id = failed_id,
		.pk = pk,
		.message_id = message_id,
		/* a vendor may echo a credential back: none reaches the table */
		.payload = retl_secrets_scrub(run->secrets, payload, len),
		.http_status = http_status,
		.response = response ? retl_secrets_scrub(run->secrets, response, -1) : NULL,
		.error = retl_secrets_scrub(run->secrets, error, -1),
		.attempts = attempts,
		.retryable = retryable
	};

	retl_store_failed_event(&ev);
}

/*
 * Records an event that is never sent (e.g. over the size limit), in the
 * reader's page transaction, as the worker (the caller suspends the
 * owner's scope: retl_encode_reject).
 */
void
retl_store_fail_event(RetlRun *run, const char *pk, const char *payload,
					  int len, const char *error)
{
	/* rejected before sending (invalid key, oversize): retrying cannot help */
	record_failed(run, 0, pk, run->message_id, payload, len, 0, NULL, error, 0,
				  false);
}

/*
 * Records the events of a batch that failed for good (all of them, or
 * those whose outcome is RETL_OUTCOME_FAIL), each with its own reason when
 * the destination gave one, in a short transaction of its own.
 */
void
retl_store_fail_batch(RetlBatch *b, const char *error,
						const RetlOutcome *outcomes, char **reasons)
{
	MemoryContext caller = retl_store_begin();

	for (int i = 0; i < b->nevents; i++)
	{
		if (outcomes != NULL && outcomes[i] != RETL_OUTCOME_FAIL)
			continue;
		record_failed(b->run, b->ev_failed_id[i], b->ev_pk[i], b->ev_msgid[i],
					  b->body.data + b->ev_start[i], b->ev_len[i],
					  (int) b->http_status, b->resp,
					  reasons && reasons[i] ? reasons[i] : error, b->attempts,
					  true);
	}
	retl_store_commit(caller);
}

static RetlStoreStmt forget_ids_stmt = {
	"DELETE FROM retl.failed_events WHERE id = ANY ($1)",
	1, {INT8ARRAYOID}
};

/*
 * Deletes the failed events of ids, in a short transaction of its own.
 */
void
retl_store_forget_failed_ids(const int64 *ids, int n)
{
	Datum		values[1] = {PointerGetDatum(retl_store_int8_array(ids, n))};
	MemoryContext caller = retl_store_begin();

	retl_store_exec(&forget_ids_stmt, values, NULL, SPI_OK_DELETE);
	retl_store_commit(caller);
}

/*
 * Removes the failed events that a delivered batch re-sent successfully.
 */
void
retl_store_batch_delivered(RetlBatch *b)
{
	int64	   *ids = palloc(Max(b->nevents, 1) * sizeof(int64));
	int			n = 0;

	for (int i = 0; i < b->nevents; i++)
		if (b->ev_failed_id[i] != 0)
			ids[n++] = b->ev_failed_id[i];
	if (n == 0)
		return;
	retl_store_forget_failed_ids(ids, n);
}

static RetlStoreStmt failed_page_stmt = {
	"SELECT id, primary_key, payload, message_id FROM retl.failed_events"
	" WHERE sync_id = $1 AND id > $2 AND run_id IS DISTINCT FROM $3"
	" AND retryable ORDER BY id LIMIT " CppAsString2(RETL_STORE_FAILED_PAGE),
	3, {INT8OID, INT8OID, INT8OID}, 0, true
};

/*
 * Reads the next page of a sync's retryable failed events, after after_id,
 * but those recorded by run_id (this run): at most RETL_STORE_FAILED_PAGE,
 * in the caller's (page) transaction and memory.  Returns how many.
 */
int
retl_store_failed_page(int64 sync_id, int64 after_id, int64 run_id,
					   RetlFailedRow **rows)
{
	Datum		args[3] = {Int64GetDatum(sync_id), Int64GetDatum(after_id),
	Int64GetDatum(run_id)};
	SPITupleTable *tt;
	int			n;

	retl_store_exec(&failed_page_stmt, args, NULL, SPI_OK_SELECT);
	tt = SPI_tuptable;
	n = (int) SPI_processed;
	*rows = palloc(Max(n, 1) * sizeof(RetlFailedRow));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;
		RetlFailedRow *r = &(*rows)[i];

		r->id = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		r->pk = SPI_getvalue(tt->vals[i], tt->tupdesc, 2);
		r->payload = SPI_getvalue(tt->vals[i], tt->tupdesc, 3);
		r->message_id = SPI_getvalue(tt->vals[i], tt->tupdesc, 4);
	}
	SPI_freetuptable(tt);
	return n;
}

static RetlStoreStmt forget_stmt = {
	"DELETE FROM retl.failed_events WHERE id = $1",
	1, {INT8OID}
};

/*
 * Deletes a failed event that must not be retried, in the caller's
 * transaction.
 */
void
retl_store_forget_failed(int64 id)
{
	retl_store_exec_id(&forget_stmt, id, SPI_OK_DELETE);
}
