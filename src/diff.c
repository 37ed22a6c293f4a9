/*-------------------------------------------------------------------------
 *
 * diff.c
 *	  The content-diff change detector, for sources that an xmin cursor
 *	  cannot serve (views over joins) and for mirror mode.
 *
 * retl.fingerprints keeps one 64-bit fingerprint per primary key: the hash
 * that also makes the event's messageId, so it covers the sync, the key
 * and the mapped content.  Each run reads the whole source; a row whose
 * fingerprint matches the stored one is skipped, the others are sent.  Keys
 * that were stored but not seen in this run were deleted: mirror syncs
 * send a deletion event for them, other syncs forget them.  Fingerprints
 * are written only when the destination acknowledged the event, so a stop
 * or a crash never loses a change (RudderStack, Hightouch and Census diff
 * this way; DESIGN.md, "Content diff").
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

typedef struct FpEntry
{
	uint64		key;			/* hash of the primary key text */
	int64		fp;				/* stored fingerprint, or 0 */
} FpEntry;

/*
 * Hashes a primary key's text to the key of the seen-set and lookups.
 */
static uint64
pk_hash(const char *pk)
{
	return hash_bytes_extended((const unsigned char *) pk, strlen(pk), 0x5eed);
}

/*
 * Creates a hash table of 64-bit keys in the run's memory.
 */
static HTAB *
fp_table(RetlRun *run, const char *name, long size)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(FpEntry);
	ctl.hcxt = run->cxt;
	return hash_create(name, size, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * The fingerprint of an event: the high 64 bits of its messageId.
 */
int64
retl_diff_fingerprint(const char *message_id)
{
	char		hex[17];
	int			j = 0;

	for (int i = 0; message_id[i] && j < 16; i++)
		if (message_id[i] != '-')
			hex[j++] = message_id[i];
	hex[j] = '\0';
	return (int64) strtoull(hex, NULL, 16);
}

/*
 * Prepares a diff run: the set of keys seen so far.
 */
void
retl_diff_start(RetlRun *run)
{
	run->diff_seen = fp_table(run, "retl seen keys", 1024);
	run->diff_page = NULL;
	run->deletes_done = false;
	run->deletes_after = NULL;
}

/*
 * Looks up the stored fingerprints of a page of keys, in one query, as the
 * worker (the sync's owner need not read retl's tables).
 */
void
retl_diff_lookup(RetlRun *run, char **pks, int n, Oid worker_uid, int sec)
{
	StringInfoData arr;
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2];
	Oid			save_uid;
	int			save_sec;

	run->diff_page = fp_table(run, "retl page fingerprints", Max(n, 16));
	initStringInfo(&arr);
	appendStringInfoChar(&arr, '{');
	for (int i = 0; i < n; i++)
	{
		if (pks[i] == NULL)
			continue;
		if (arr.len > 1)
			appendStringInfoChar(&arr, ',');
		appendStringInfoChar(&arr, '"');
		for (const char *c = pks[i]; *c; c++)
		{
			if (*c == '"' || *c == '\\')
				appendStringInfoChar(&arr, '\\');
			appendStringInfoChar(&arr, *c);
		}
		appendStringInfoChar(&arr, '"');
	}
	appendStringInfoChar(&arr, '}');
	values[0] = Int64GetDatum(run->sync_id);
	values[1] = CStringGetTextDatum(arr.data);
	GetUserIdAndSecContext(&save_uid, &save_sec);
	SetUserIdAndSecContext(worker_uid, sec);
	if (SPI_execute_with_args("SELECT pk, fingerprint FROM retl.fingerprints"
							  " WHERE sync_id = $1 AND pk = ANY ($2::text[])",
							  2, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "retl: reading fingerprints failed");
	SetUserIdAndSecContext(save_uid, save_sec);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		char	   *pk = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		uint64		key = pk_hash(pk);
		FpEntry    *e = hash_search(run->diff_page, &key, HASH_ENTER, NULL);

		e->fp = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
											SPI_tuptable->tupdesc, 2, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Decides what to do with one row of a diff run.  Returns NULL to send it,
 * "" to skip it (unchanged), or the reason it is invalid.
 */
const char *
retl_diff_check(RetlRun *run, const char *pk, int64 fp)
{
	uint64		key;
	bool		found;
	FpEntry    *stored;

	if (pk == NULL)
		return "the primary key is NULL";
	key = pk_hash(pk);
	(void) hash_search(run->diff_seen, &key, HASH_ENTER, &found);
	if (found)
		return "duplicate primary key";
	stored = hash_search(run->diff_page, &key, HASH_FIND, NULL);
	if (!run->full && stored != NULL && stored->fp == fp)
		return "";
	return NULL;
}

/*
 * Builds the deletion event of a key: for identify syncs, the mapped traits
 * set to null; with on_delete {"event": ...}, a track event of that name.
 * Both carry context.retl.deleted = true.
 */
static void
build_delete_event(RetlRun *run, const char *identity, const char *pk,
				   int64 fp)
{
	StringInfo	buf = &run->event_buf;
	char		message_id[RETL_MESSAGE_ID_LEN + 1];
	uint64		hi = hash_bytes_extended((const unsigned char *) pk, strlen(pk),
										 (uint64) run->sync_id * 2 + 1) ^ (uint64) fp;
	uint64		lo = hash_bytes_extended((const unsigned char *) pk, strlen(pk),
										 (uint64) fp) ^ 0xde1e7edULL;

	snprintf(message_id, sizeof(message_id), "%08x-%04x-%04x-%04x-%012llx",
			 (uint32) (hi >> 32), (uint32) (hi >> 16) & 0xffff,
			 (uint32) hi & 0xffff, (uint32) (lo >> 48) & 0xffff,
			 (unsigned long long) (lo & 0xffffffffffffULL));
	memcpy(run->message_id, message_id, sizeof(run->message_id));
	resetStringInfo(buf);
	if (run->on_delete_event != NULL)
	{
		appendStringInfoString(buf, "{\"type\":\"track\",\"event\":");
		retl_json_escape(buf, run->on_delete_event, strlen(run->on_delete_event));
		appendStringInfoString(buf, ",\"properties\":{}");
	}
	else
	{
		bool		first = true;

		appendStringInfoString(buf, "{\"type\":\"identify\",\"traits\":{");
		for (RetlMapNode *t = run->map->traits ? run->map->traits->children : NULL;
			 t != NULL; t = t->next)
		{
			appendBinaryStringInfo(buf, t->key_json.data + (first ? 1 : 0),
								   t->key_json.len - (first ? 1 : 0));
			appendStringInfoString(buf, "null");
			first = false;
		}
		appendStringInfoChar(buf, '}');
	}
	appendStringInfo(buf, ",%s,\"context\":{\"retl\":{\"deleted\":true},%s,"
					 "\"messageId\":\"%s\",\"originalTimestamp\":%s,"
					 "\"sentAt\":%s,\"timestamp\":%s}",
					 identity, run->ectx.tail, message_id, run->ectx.now,
					 run->ectx.now, run->ectx.now);
}

/*
 * Reads a page of stored keys and handles those this run did not see:
 * mirror syncs send a deletion event (unless on_delete is "skip"), other
 * syncs just forget them.  Runs in the reader's page transaction, as the
 * worker.
 */
void
retl_diff_deletes_page(RetlRun *run)
{
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2] = {Int64GetDatum(run->sync_id),
	CStringGetTextDatum(run->deletes_after ? run->deletes_after : "")};
	char		nulls[2] = {' ', run->deletes_after ? ' ' : 'n'};
	SPITupleTable *tt;
	uint64		n;

	if (SPI_execute_with_args("SELECT pk, fingerprint, identity FROM retl.fingerprints"
							  " WHERE sync_id = $1 AND ($2 IS NULL OR pk > $2)"
							  " ORDER BY pk LIMIT 1000",
							  2, types, values, nulls, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "retl: reading fingerprints failed");
	tt = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		char	   *pk = SPI_getvalue(tt->vals[i], tt->tupdesc, 1);
		int64		fp = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
		char	   *identity = SPI_getvalue(tt->vals[i], tt->tupdesc, 3);
		uint64		key = pk_hash(pk);

		run->deletes_after = MemoryContextStrdup(run->cxt, pk);
		if (hash_search(run->diff_seen, &key, HASH_FIND, NULL) != NULL)
			continue;
		run->rows_deleted++;
		if (!run->mirror || run->on_delete_skip)
		{
			Oid			dtypes[2] = {INT8OID, TEXTOID};
			Datum		dvalues[2] = {Int64GetDatum(run->sync_id), CStringGetTextDatum(pk)};

			if (SPI_execute_with_args("DELETE FROM retl.fingerprints WHERE sync_id = $1 AND pk = $2",
									  2, dtypes, dvalues, NULL, false, 0) != SPI_OK_DELETE)
				elog(ERROR, "retl: forgetting a deleted key failed");
			continue;
		}
		build_delete_event(run, identity ? identity : "\"anonymousId\":null", pk, fp);
		retl_run_encode(run);
		if (retl_run_add_event(run, pk, 0))
			run->building->ev_delete[run->building->nevents - 1] = true;
	}
	if (n < 1000)
		run->deletes_done = true;
}

/*
 * Stores the fingerprints of the events a destination acknowledged, and
 * forgets the keys whose deletion it acknowledged.  One short transaction.
 */
void
retl_diff_acked(RetlBatch *b)
{
	Oid			types[4] = {INT8OID, TEXTOID, INT8OID, TEXTOID};
	bool		any = false;
	MemoryContext cxt = CurrentMemoryContext;

	for (int i = 0; i < b->nevents && !any; i++)
		any = b->ev_fp[i] != 0 || b->ev_delete[i];
	if (!any)
		return;
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "retl: SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	for (int i = 0; i < b->nevents; i++)
	{
		Datum		values[4];
		int			rc;

		if ((b->ev_fp[i] == 0 && !b->ev_delete[i]) || b->ev_pk[i] == NULL)
			continue;
		values[0] = Int64GetDatum(b->run->sync_id);
		values[1] = CStringGetTextDatum(b->ev_pk[i]);
		values[2] = Int64GetDatum(b->ev_fp[i]);
		values[3] = PointerGetDatum(cstring_to_text_with_len(b->body.data + b->ev_start[i],
															 b->ev_len[i]));
		if (b->ev_delete[i])
			rc = SPI_execute_with_args("DELETE FROM retl.fingerprints"
									   " WHERE sync_id = $1 AND pk = $2",
									   2, types, values, NULL, false, 0);
		else
			rc = SPI_execute_with_args("INSERT INTO retl.fingerprints (sync_id, pk, fingerprint, identity)"
									   " SELECT s.id, $2, $3, (SELECT string_agg(pg_catalog.to_json(k)::text"
									   "   || ':' || (e->k)::text, ',') FROM pg_catalog.unnest("
									   "   ARRAY['userId', 'anonymousId']) k WHERE e ? k)"
									   " FROM retl.syncs s, (SELECT $4::jsonb AS e) x"
									   " WHERE s.id = $1"
									   " ON CONFLICT (sync_id, pk) DO UPDATE SET"
									   " fingerprint = EXCLUDED.fingerprint, identity = EXCLUDED.identity",
									   4, types, values, NULL, false, 0);
		if (rc < 0)
			elog(ERROR, "retl: writing fingerprints failed");
	}
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
}
