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
 * Catalog statements (store/fingerprints.c) run as the worker, in the
 * reader's page transaction (lookups, deletions) or in a transaction of
 * their own (acknowledged batches).  The plans are saved once per worker.
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "batch.h"
#include "store.h"

#include "common/hashfn.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

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
	int64		cap;			/* room in stored while it is loaded */
	int64		nunseen;		/* stored keys not seen, not met by the walk */
	uint32	   *dir;			/* first stored index of each top-bits bucket */
	int			dir_bits;
	HTAB	   *seen_hash;		/* blocks runs: every key, for duplicates */
	char	   *deletes_after;	/* paging through stored keys */
} RetlDiff;

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
 * Orders stored keys by hash, for qsort.
 */
static int
cmp_stored(const void *a, const void *b)
{
	uint64		x = ((const StoredKey *) a)->key;
	uint64		y = ((const StoredKey *) b)->key;

	return x < y ? -1 : x > y;
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
 * Adds one stored fingerprint to the array, growing it as needed.
 */
static void
add_stored(void *arg, const char *pk, int len, int64 fp, int64 previous)
{
	RetlDiff   *d = arg;

	if (d->nstored == d->cap)
	{
		d->cap *= 2;
		d->stored = repalloc_huge(d->stored, d->cap * sizeof(StoredKey));
	}
	d->stored[d->nstored].key =
		hash_bytes_extended((const unsigned char *) pk, len, 0x5eed);
	d->stored[d->nstored].fp = fp;
	d->stored[d->nstored++].previous = previous;
}

/*
 * Reads every fingerprint of the sync into a sorted array of 24 bytes a
 * key.  Runs in the transaction that sets the run up, as the worker.
 */
static void
load_stored(RetlRun *run, RetlDiff *d)
{
	d->cap = 1024;
	d->stored = MemoryContextAllocHuge(d->cxt, d->cap * sizeof(StoredKey));
	retl_store_fp_scan(run->sync_id, add_stored, d);
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
 * version in *version.  key is the hash of pk (retl_diff_key), or 0 for
 * this to compute it.  dup says whether the reader saw the key on the
 * previous row (1, 0), or does not know (-1).
 */
const char *
retl_diff_check(RetlRun *run, const char *pk, uint64 key, int64 fp, int dup,
				uint64 *version)
{
	RetlDiff   *d = run->diffs;
	bool		found = false;
	int64		i;

	*version = 0;
	if (pk == NULL)
		return "the primary key is NULL";
	if (key == 0)
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
 * Queues the deletion event of a key, with its stored identity.
 */
static void
queue_deletion(RetlRun *run, const char *pk, int64 fp, const char *identity)
{
	build_delete_event(run, identity ? identity : "\"anonymousId\":null", pk, fp);
	retl_encode_event(run);
	resetStringInfo(&run->ident_buf);
	if (identity != NULL)
		appendStringInfoString(&run->ident_buf, identity);
	retl_encode_add_diff(run, pk, 0, fp, true);
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
	int			n;
	RetlStoredRow *rows;
	char	  **cand;
	int			ncand = 0;
	bool	   *live;
	char	  **gone;
	int			ngone = 0;
	int			c = 0;

	/* every stored key was seen, or met by the walk already: nothing is gone */
	if (d->nunseen <= 0)
		return true;
	n = retl_store_fp_page(run->sync_id, d->deletes_after, &rows);
	cand = palloc(Max(n, 1) * sizeof(char *));
	live = palloc(Max(n, 1) * sizeof(bool));
	gone = palloc(Max(n, 1) * sizeof(char *));
	for (int i = 0; i < n; i++)
	{
		char	   *pk = rows[i].pk;

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
	for (int i = 0; i < n && c < ncand; i++)
	{
		char	   *pk = rows[i].pk;

		if (strcmp(pk, cand[c]) != 0)
			continue;
		if (live[c++])
			continue;			/* moved behind the reader: alive */
		run->rows_deleted++;
		if (run->mirror && !run->on_delete_skip)
			queue_deletion(run, pk, rows[i].fp, rows[i].identity);
		else
			gone[ngone++] = pk;
	}
	retl_store_fp_forget(run->sync_id, gone, ngone);
	return n < RETL_STORE_FP_PAGE;
}

/*
 * Room for n acknowledged keys.
 */
static void
acked_init(RetlFpRows *k, int n)
{
	k->pks = palloc(Max(n, 1) * sizeof(char *));
	k->fps = palloc(Max(n, 1) * sizeof(int64));
	k->prevs = palloc(Max(n, 1) * sizeof(int64));
	k->idents = palloc(Max(n, 1) * sizeof(char *));
	k->n = 0;
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
	RetlFpRows	fresh,
				known;
	char	  **dels = palloc(Max(b->nevents, 1) * sizeof(char *));
	int			ndel = 0;

	acked_init(&fresh, b->nevents);
	acked_init(&known, b->nevents);
	for (int i = 0; i < b->nevents; i++)
	{
		RetlFpRows *k;
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
		k->prevs[k->n] = d != NULL ? version_of(d, si, b->ev_fp[i]) : 0;
		k->pks[k->n] = b->ev_pk[i];
		k->idents[k->n] = b->ev_ident[i];
		k->fps[k->n++] = b->ev_fp[i];
	}
	if (fresh.n == 0 && known.n == 0 && ndel == 0)
		return;
	retl_store_fp_acked(b->run->sync_id, &fresh, &known, dels, ndel);
}
