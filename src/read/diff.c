/*-------------------------------------------------------------------------
 *
 * diff.c
 *	  The content-diff change detector, for sources that an xmin cursor
 *	  cannot serve (views over joins) and for mirror mode.
 *
 * retl.fingerprints keeps one 64-bit fingerprint per primary key: the hash
 * that also makes the event's messageId, so it covers the sync, the key
 * and the mapped content.  Each run reads the whole source; a row whose
 * fingerprint matches the stored one is skipped, the others are sent.
 * Fingerprints are written only when the destination acknowledged the
 * event, so a stop or a crash never loses a change (RudderStack, Hightouch
 * and Census diff this way).
 *
 * Everything is a set operation.  At the start of a run, the sync's stored
 * fingerprints are read once, through a cursor, into a sorted array of 24
 * bytes a key (the hash of the key, its fingerprint and the one before),
 * so that each row costs a bucket lookup, not an index probe: a probe per
 * row cost more than reading the row.  Per acknowledged batch: one insert
 * of the keys that had no fingerprint, one upsert of the others, and one
 * delete.  After the source is read, the stored keys are walked in pages
 * along their index; those the run did not see are candidates for
 * deletion.  A candidate is deleted only if the source, read again in a
 * snapshot taken after the whole run read it, does not have it: a row
 * that an update moved behind the reader was not seen, but is alive (the
 * next run sends its change).  The walk ends as soon as it has met every
 * stored key the run did not see (at once when it saw them all, the usual
 * case).  Mirror syncs send a deletion event for the
 * others, carrying the identity stored with the fingerprint (computed in C
 * when the event was built); other syncs forget them.
 *
 * Duplicate keys: a source read in key order shows them as neighbours
 * (the reader says so); one read by blocks keeps a hash of seen keys.
 *
 * Catalog statements run as the worker, in the reader's page transaction
 * (lookups, deletions) or in a transaction of their own (acknowledged
 * batches).  The plans are saved once per worker.
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#define DELETES_PAGE 1000		/* stored keys per deletions page */

/* A fingerprint stored before the run, by the hash of its key. */
typedef struct StoredKey
{
	uint64		key;			/* hash of the primary key text */
	int64		fp;				/* stored fingerprint */
	int64		previous;		/* the fingerprint before it, or 0 */
} StoredKey;

typedef struct RetlDiff
{
	MemoryContext cxt;			/* the run's */
	StoredKey  *stored;			/* the sync's fingerprints, sorted by key */
	bool	   *seen;			/* stored[i] was seen by this run */
	int64		nstored;
	int64		nunseen;		/* stored keys not seen, not met by the walk */
	uint32	   *dir;			/* first stored index of each top-bits bucket */
	int			dir_bits;
	HTAB	   *seen_hash;		/* blocks runs: every key, for duplicates */
	char	   *deletes_after;	/* paging through stored keys */
} RetlDiff;

/* Plans of the catalog statements, saved once per worker. */
static SPIPlanPtr stored_first_plan;
static SPIPlanPtr stored_next_plan;
static SPIPlanPtr upsert_plan;
static SPIPlanPtr delete_plan;

/*
 * Prepares and saves a catalog statement, once, planned anew for each
 * call's arguments.
 */
static SPIPlanPtr
saved_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types)
{
	if (*plan == NULL)
	{
		/*
		 * Custom plans: a generic plan made while the sync had few
		 * fingerprints (the first pages of its first run) would be kept
		 * for the worker's life and scan them all once there are millions.
		 */
		SPIPlanPtr	p = SPI_prepare_cursor(sql, nargs, types,
										   CURSOR_OPT_CUSTOM_PLAN);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "retl: preparing a fingerprint statement failed: %s",
				 SPI_result_code_string(SPI_result));
		*plan = p;
	}
	return *plan;
}

/*
 * Hashes a primary key's text to the key of the stored array and the
 * seen-set.
 */
uint64
retl_diff_key(const char *pk)
{
	return hash_bytes_extended((const unsigned char *) pk, strlen(pk), 0x5eed);
}

/*
 * Orders 64-bit hashes for qsort and bsearch.
 */
static int
cmp_u64(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return x < y ? -1 : x > y;
}

/*
 * A text[] of the non-NULL strings among n, with NULL elements where
 * allow_nulls and a string is NULL.
 */
static ArrayType *
text_array(char **strs, int n, bool allow_nulls)
{
	Datum	   *elems = palloc(Max(n, 1) * sizeof(Datum));
	bool	   *nulls = palloc(Max(n, 1) * sizeof(bool));
	int			m = 0;
	int			dims[1];
	int			lbs[1] = {1};

	for (int i = 0; i < n; i++)
	{
		if (strs[i] == NULL && !allow_nulls)
			continue;
		nulls[m] = strs[i] == NULL;
		elems[m++] = strs[i] ? CStringGetTextDatum(strs[i]) : (Datum) 0;
	}
	dims[0] = m;
	return construct_md_array(elems, nulls, 1, dims, lbs, TEXTOID, -1, false,
							  TYPALIGN_INT);
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
 * Orders stored keys by hash, for qsort and bsearch.
 */
static int
cmp_stored(const void *a, const void *b)
{
	return cmp_u64(&((const StoredKey *) a)->key, &((const StoredKey *) b)->key);
}

/*
 * Indexes the sorted stored keys by their top bits, about two keys a
 * bucket: the keys are hashes, so a lookup reads one bucket (a cache miss
 * or two) instead of twenty levels of a binary search.
 */
static void
build_directory(RetlDiff *d)
{
	uint32		nb;
	int64		i = 0;

	d->dir_bits = 1;
	while (d->dir_bits < 31 && ((int64) 1 << d->dir_bits) < d->nstored / 2)
		d->dir_bits++;
	nb = (uint32) 1 << d->dir_bits;
	d->dir = MemoryContextAllocHuge(d->cxt, (Size) (nb + 1) * sizeof(uint32));
	for (uint32 b = 0; b < nb; b++)
	{
		while (i < d->nstored && (d->stored[i].key >> (64 - d->dir_bits)) < b)
			i++;
		d->dir[b] = (uint32) i;
	}
	d->dir[nb] = (uint32) d->nstored;
}

/*
 * Reads every fingerprint of the sync into a sorted array of 24 bytes a
 * key, through a cursor of its own that lives only while this function
 * runs (no owner's code runs meanwhile).  Runs in the transaction that sets
 * the run up, as the worker.
 */
static void
load_stored(RetlRun *run, RetlDiff *d)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run->sync_id)};
	int64		cap = 1024;
	Portal		portal;

	if (SPI_execute_with_args("SELECT count(*) FROM retl.fingerprints WHERE sync_id = $1",
							  1, types, values, NULL, true, 0) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool		isnull;

		cap = Max(cap, DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 1, &isnull)));
	}
	d->stored = MemoryContextAllocHuge(d->cxt, cap * sizeof(StoredKey));
	portal = SPI_cursor_open_with_args(NULL, "SELECT pk, fingerprint, previous FROM retl.fingerprints"
									   " WHERE sync_id = $1",
									   1, types, values, NULL, true, 0);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			text	   *pk = DatumGetTextPP(SPI_getbinval(SPI_tuptable->vals[i],
														  SPI_tuptable->tupdesc, 1, &isnull));

			if (d->nstored == cap)
			{
				cap *= 2;
				d->stored = repalloc_huge(d->stored, cap * sizeof(StoredKey));
			}
			d->stored[d->nstored].key =
				hash_bytes_extended((const unsigned char *) VARDATA_ANY(pk),
									VARSIZE_ANY_EXHDR(pk), 0x5eed);
			d->stored[d->nstored].fp =
				DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
											SPI_tuptable->tupdesc, 2, &isnull));
			d->stored[d->nstored++].previous =
				DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
											SPI_tuptable->tupdesc, 3, &isnull));
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	qsort(d->stored, d->nstored, sizeof(StoredKey), cmp_stored);
	d->seen = MemoryContextAllocHuge(d->cxt, Max(d->nstored, 1) * sizeof(bool));
	memset(d->seen, 0, Max(d->nstored, 1) * sizeof(bool));
	d->nunseen = d->nstored;
	build_directory(d);
}

/*
 * Prepares a diff run: loads the sync's stored fingerprints, none seen
 * yet.  Runs in the transaction that sets the run up, as the worker.
 */
void
retl_diff_start(RetlRun *run)
{
	RetlDiff   *d = MemoryContextAllocZero(run->cxt, sizeof(RetlDiff));
	MemoryContext caller = CurrentMemoryContext;

	d->cxt = run->cxt;
	run->diffs = d;
	load_stored(run, d);
	/* SPI calls return in SPI's procedure memory: the caller's is the run's */
	MemoryContextSwitchTo(caller);
}

/*
 * The index of a stored key, or -1.
 */
static int64
find_stored(RetlDiff *d, uint64 key)
{
	uint64		b = key >> (64 - d->dir_bits);

	for (uint32 i = d->dir[b]; i < d->dir[b + 1]; i++)
		if (d->stored[i].key == key)
			return i;
	return -1;
}

/*
 * Asks the CPU to fetch what looking up a key will read, so that a page of
 * lookups waits for memory once, not once a row: stage 0 the key's bucket
 * in the directory, stage 1 (once stage 0 arrived) the bucket's keys.
 */
void
retl_diff_prefetch(RetlRun *run, uint64 key, int stage)
{
	RetlDiff   *d = run->diffs;
	uint64		b;

	if (d->nstored == 0)
		return;
	b = key >> (64 - d->dir_bits);
	if (stage == 0)
		__builtin_prefetch(&d->dir[b]);
	else
		__builtin_prefetch(&d->stored[Min(d->dir[b], (uint32) (d->nstored - 1))]);
}

/*
 * Creates a set of 64-bit keys.
 */
static HTAB *
key_set(MemoryContext cxt, const char *name, long size)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(uint64);
	ctl.hcxt = cxt;
	return hash_create(name, size, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * The version of a row with fingerprint fp whose key has a stored
 * fingerprint, which makes its messageId: the fingerprint the
 * destination had before this content.  An unchanged row keeps the
 * version it was sent with (stored as previous), a changed one gets the
 * stored fingerprint, a new key none (0).  So a row that goes A, B, A
 * gets three ids, and a retry, a resume or a forced full run re-sends the
 * id the destination saw.
 */
int64
retl_diff_version_of(int64 fp, int64 stored_fp, int64 stored_previous)
{
	return stored_fp == fp ? stored_previous : stored_fp;
}

/*
 * The version of a row with fingerprint fp whose stored key is stored[i],
 * or 0 (i < 0: a new key).
 */
static int64
version_of(RetlDiff *d, int64 i, int64 fp)
{
	return i < 0 ? 0 : retl_diff_version_of(fp, d->stored[i].fp,
											d->stored[i].previous);
}

/*
 * The version of a row of key pk and fingerprint fp (see version_of).
 */
uint64
retl_diff_version(RetlRun *run, const char *pk, int64 fp)
{
	RetlDiff   *d = run->diffs;

	if (pk == NULL || d->nstored == 0)
		return 0;
	return (uint64) version_of(d, find_stored(d, retl_diff_key(pk)), fp);
}

/*
 * Decides what to do with one row of a diff run.  Returns NULL to send it,
 * "" to skip it (unchanged), or the reason it is invalid, and the row's
 * version in *version.  dup says whether the reader saw the key on the
 * previous row (1, 0), or does not know (-1).
 */
const char *
retl_diff_check(RetlRun *run, const char *pk, int64 fp, int dup,
				uint64 *version)
{
	RetlDiff   *d = run->diffs;
	uint64		key;
	bool		found = false;
	int64		i;

	*version = 0;
	if (pk == NULL)
		return "the primary key is NULL";
	key = retl_diff_key(pk);
	if (dup < 0)
	{
		if (d->seen_hash == NULL)
			d->seen_hash = key_set(d->cxt, "retl seen keys", 1024);
		(void) hash_search(d->seen_hash, &key, HASH_ENTER, &found);
	}
	if (found || dup > 0)
		return "duplicate primary key";
	i = d->nstored > 0 ? find_stored(d, key) : -1;
	*version = (uint64) version_of(d, i, fp);
	if (i >= 0 && !d->seen[i])
	{
		d->seen[i] = true;
		d->nunseen--;
	}
	if (!run->full && i >= 0 && d->stored[i].fp == fp)
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
 * Was this stored key seen by the run?  A key stored after the run loaded
 * the fingerprints was stored by the run itself: seen.
 */
static bool
was_seen(RetlDiff *d, const char *pk)
{
	int64		i = find_stored(d, retl_diff_key(pk));

	return i < 0 || d->seen[i];
}

/*
 * Reads the next page of stored keys, after the last one read.  Returns
 * the result's row count; SPI_tuptable holds them.  The page must be read
 * along the primary key's index: a generic plan that sorts the keys after
 * the last one (its estimate of a sync's keys is blind) would make the
 * walk quadratic, so sorts and bitmap scans are off while it plans.
 */
static uint64
stored_page(RetlRun *run)
{
	RetlDiff   *d = run->diffs;
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2] = {Int64GetDatum(run->sync_id), 0};
	int			rc;
	int			level = NewGUCNestLevel();

	(void) set_config_option("enable_sort", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_bitmapscan", "off", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);

	if (d->deletes_after == NULL)
		rc = SPI_execute_plan(saved_plan(&stored_first_plan,
										 "SELECT pk, fingerprint, identity FROM retl.fingerprints"
										 " WHERE sync_id = $1 ORDER BY pk"
										 " LIMIT " CppAsString2(DELETES_PAGE), 1, types),
							  values, NULL, true, 0);
	else
	{
		values[1] = CStringGetTextDatum(d->deletes_after);
		rc = SPI_execute_plan(saved_plan(&stored_next_plan,
										 "SELECT pk, fingerprint, identity FROM retl.fingerprints"
										 " WHERE sync_id = $1 AND pk > $2 ORDER BY pk"
										 " LIMIT " CppAsString2(DELETES_PAGE), 2, types),
							  values, NULL, true, 0);
	}
	AtEOXact_GUC(false, level);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "retl: reading fingerprints failed");
	return SPI_processed;
}

/*
 * Forgets the fingerprints of n keys, in one statement.
 */
static void
forget_keys(RetlRun *run, char **pks, int n)
{
	Oid			types[2] = {INT8OID, TEXTARRAYOID};
	Datum		values[2];

	if (n == 0)
		return;
	values[0] = Int64GetDatum(run->sync_id);
	values[1] = PointerGetDatum(text_array(pks, n, false));
	if (SPI_execute_plan(saved_plan(&delete_plan,
									"DELETE FROM retl.fingerprints"
									" WHERE sync_id = $1 AND pk = ANY ($2)",
									2, types),
						 values, NULL, false, 0) < 0)
		elog(ERROR, "retl: forgetting deleted keys failed");
}

/*
 * Queues the deletion event of a key, with its stored identity.
 */
static void
queue_deletion(RetlRun *run, const char *pk, int64 fp, const char *identity)
{
	build_delete_event(run, identity ? identity : "\"anonymousId\":null", pk, fp);
	retl_run_encode(run);
	resetStringInfo(&run->ident_buf);
	if (identity != NULL)
		appendStringInfoString(&run->ident_buf, identity);
	retl_run_add_diff_event(run, pk, 0, fp, true);
}

/*
 * Reads a page of stored keys and handles those that are gone: the keys
 * this run did not see and that the source, read again now as the owner,
 * does not have.  Mirror syncs send a deletion event (unless on_delete is
 * "skip"), other syncs forget them.  Runs in the reader's page
 * transaction, as the worker.  Returns true when no stored key is left to
 * check.
 */
bool
retl_diff_deletes_page(RetlRun *run)
{
	RetlDiff   *d = run->diffs;
	uint64		n;
	SPITupleTable *tt;
	char	  **cand;
	int			ncand = 0;
	bool	   *live;
	char	  **gone;
	int			ngone = 0;
	int			c = 0;

	/* every stored key was seen, or met by the walk already: nothing is gone */
	if (d->nunseen <= 0)
		return true;
	n = stored_page(run);
	tt = SPI_tuptable;
	cand = palloc(Max(n, 1) * sizeof(char *));
	live = palloc(Max(n, 1) * sizeof(bool));
	gone = palloc(Max(n, 1) * sizeof(char *));
	for (uint64 i = 0; i < n; i++)
	{
		char	   *pk = SPI_getvalue(tt->vals[i], tt->tupdesc, 1);

		if (i == n - 1)
			d->deletes_after = MemoryContextStrdup(d->cxt, pk);
		if (!was_seen(d, pk))
		{
			cand[ncand++] = pk;
			d->nunseen--;
		}
	}
	retl_owner_enter(run);
	retl_keys_live(run, cand, ncand, live);
	retl_owner_leave(run);
	for (uint64 i = 0; i < n && c < ncand; i++)
	{
		bool		isnull;
		char	   *pk = SPI_getvalue(tt->vals[i], tt->tupdesc, 1);

		if (strcmp(pk, cand[c]) != 0)
			continue;
		if (live[c++])
			continue;			/* moved behind the reader: alive */
		run->rows_deleted++;
		if (run->mirror && !run->on_delete_skip)
			queue_deletion(run, pk,
						   DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull)),
						   SPI_getvalue(tt->vals[i], tt->tupdesc, 3));
		else
			gone[ngone++] = pk;
	}
	forget_keys(run, gone, ngone);
	SPI_freetuptable(tt);
	return n < DELETES_PAGE;
}

/*
 * Columns of the fingerprints of one acknowledged batch: the keys, their
 * fingerprints and identities.
 */
typedef struct AckedKeys
{
	char	  **pks;
	Datum	   *fps;
	Datum	   *prevs;			/* the versions their messageIds had */
	char	  **idents;
	int			n;
} AckedKeys;

/*
 * Room for n acknowledged keys.
 */
static void
acked_init(AckedKeys *k, int n)
{
	k->pks = palloc(Max(n, 1) * sizeof(char *));
	k->fps = palloc(Max(n, 1) * sizeof(Datum));
	k->prevs = palloc(Max(n, 1) * sizeof(Datum));
	k->idents = palloc(Max(n, 1) * sizeof(char *));
	k->n = 0;
}

/*
 * The statement's arguments for a set of keys: the sync, then the keys,
 * fingerprints, identities and previous fingerprints as arrays.
 */
static void
acked_args(RetlBatch *b, AckedKeys *k, Datum *values)
{
	values[0] = Int64GetDatum(b->run->sync_id);
	values[1] = PointerGetDatum(text_array(k->pks, k->n, false));
	values[2] = PointerGetDatum(construct_array(k->fps, k->n, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[3] = PointerGetDatum(text_array(k->idents, k->n, true));
	values[4] = PointerGetDatum(construct_array(k->prevs, k->n, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * Stores fingerprints of keys that may be stored already: an upsert that
 * keeps the last of a key sent twice and leaves rows that did not change.
 * The sync is locked against a concurrent drop (whose trigger forgets its
 * fingerprints) once, not per row.
 */
static void
upsert_keys(RetlBatch *b, AckedKeys *k)
{
	Oid			types[5] = {INT8OID, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID,
	INT8ARRAYOID};
	Datum		values[5];

	acked_args(b, k, values);
	if (SPI_execute_plan(saved_plan(&upsert_plan,
									"WITH s AS (SELECT id FROM retl.syncs WHERE id = $1 FOR KEY SHARE)"
									" INSERT INTO retl.fingerprints AS f"
									"  (sync_id, pk, fingerprint, identity, previous)"
									" SELECT DISTINCT ON (u.pk) s.id, u.pk, u.fp, u.ident, u.prev"
									" FROM s, ROWS FROM (pg_catalog.unnest($2),"
									"  pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5))"
									"  WITH ORDINALITY AS u (pk, fp, ident, prev, ord)"
									" ORDER BY u.pk, u.ord DESC"
									" ON CONFLICT (sync_id, pk) DO UPDATE SET"
									" fingerprint = EXCLUDED.fingerprint, identity = EXCLUDED.identity,"
									" previous = EXCLUDED.previous"
									" WHERE (f.fingerprint, f.identity, f.previous) IS DISTINCT FROM"
									" (EXCLUDED.fingerprint, EXCLUDED.identity, EXCLUDED.previous)",
									5, types),
						 values, NULL, false, 0) < 0)
		elog(ERROR, "retl: writing fingerprints failed");
}

/*
 * Stores the fingerprints of keys that had none when the run began, with
 * a plain INSERT: a first run writes every key this way, and the upsert's
 * conflict check and speculative insertion cost as much as the insert
 * itself.  The statement scans no fingerprints, so its saved plan can be
 * generic.  A key stored meanwhile (sent twice in one run) makes it fail
 * with a unique violation: it is then rolled back, as a subtransaction,
 * and the keys go through the upsert.
 */
static void
insert_fresh_keys(RetlBatch *b, AckedKeys *k)
{
	static SPIPlanPtr insert_plan;
	Oid			types[5] = {INT8OID, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID,
	INT8ARRAYOID};
	Datum		values[5];
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	if (insert_plan == NULL)
	{
		insert_plan = SPI_prepare("WITH s AS (SELECT id FROM retl.syncs WHERE id = $1 FOR KEY SHARE)"
								  " INSERT INTO retl.fingerprints (sync_id, pk, fingerprint, identity, previous)"
								  " SELECT s.id, u.pk, u.fp, u.ident, u.prev"
								  " FROM s, ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3),"
								  "  pg_catalog.unnest($4), pg_catalog.unnest($5)) AS u (pk, fp, ident, prev)",
								  5, types);
		if (insert_plan == NULL || SPI_keepplan(insert_plan) != 0)
			elog(ERROR, "retl: preparing a fingerprint statement failed: %s",
				 SPI_result_code_string(SPI_result));
	}
	acked_args(b, k, values);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		if (SPI_execute_plan(insert_plan, values, NULL, false, 0) < 0)
			elog(ERROR, "retl: writing fingerprints failed");
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_UNIQUE_VIOLATION)
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		upsert_keys(b, k);
	}
	PG_END_TRY();
}

/*
 * Stores the fingerprints of the events a destination acknowledged, and
 * forgets the keys whose deletion it acknowledged, in one short
 * transaction: keys without a fingerprint when the run began are
 * inserted, the others upserted.
 */
void
retl_diff_acked(RetlBatch *b)
{
	RetlDiff   *d = b->run->diffs;
	AckedKeys	fresh,
				known;
	char	  **dels = palloc(Max(b->nevents, 1) * sizeof(char *));
	int			ndel = 0;
	MemoryContext cxt = CurrentMemoryContext;

	acked_init(&fresh, b->nevents);
	acked_init(&known, b->nevents);
	for (int i = 0; i < b->nevents; i++)
	{
		AckedKeys  *k;
		int64		si;

		if (b->ev_pk[i] == NULL)
			continue;
		if (b->ev_delete[i])
		{
			dels[ndel++] = b->ev_pk[i];
			continue;
		}
		if (b->ev_fp[i] == 0)
			continue;
		si = d != NULL ? find_stored(d, retl_diff_key(b->ev_pk[i])) : 0;
		k = si < 0 ? &fresh : &known;
		k->prevs[k->n] = Int64GetDatum(d != NULL ? version_of(d, si, b->ev_fp[i]) : 0);
		k->pks[k->n] = b->ev_pk[i];
		k->idents[k->n] = b->ev_ident[i];
		k->fps[k->n++] = Int64GetDatum(b->ev_fp[i]);
	}
	if (fresh.n == 0 && known.n == 0 && ndel == 0)
		return;
	StartTransactionCommand();

	/*
	 * A fingerprint lost in a crash only makes the next run send its event
	 * again, with the same messageId: no need to wait for the WAL flush.
	 */
	(void) set_config_option("synchronous_commit", "off", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "retl: SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	if (fresh.n > 0)
		insert_fresh_keys(b, &fresh);
	if (known.n > 0)
		upsert_keys(b, &known);
	forget_keys(b->run, dels, ndel);
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
}
