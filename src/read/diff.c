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
 * Everything is a set operation.  The fingerprints are stored as chunks,
 * rows of arrays, an acknowledged batch at a time (store/fingerprints.c);
 * a key's fingerprint is its last entry.  At the start of a run, the sync's
 * chunks are read once into a sorted array of 32 bytes a key (the hash of
 * the key, its fingerprint and the one before, and where its entry is),
 * so that each row costs a bucket lookup, not an index probe: a probe per
 * row cost more than reading the row.  Per acknowledged batch: one chunk.
 * After the source is read, the stored keys the run did not see are
 * candidates for deletion; the walk reads their chunks, a page of keys at
 * a time.  A candidate is deleted only if the source, read again in a
 * snapshot taken after the whole run read it, does not have it: a row
 * that an update moved behind the reader was not seen, but is alive (the
 * next run sends its change).  Mirror syncs send a deletion event for the
 * others, carrying the identity stored with the fingerprint (computed in C
 * when the event was built); other syncs forget them (a chunk of
 * fingerprints 0).  When most stored entries are stale, the walk's last
 * page rewrites the sync's chunks.
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
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

/* A fingerprint stored before the run, by the hash of its key. */
typedef struct StoredKey
{
	uint64		key;			/* hash of the primary key text */
	int64		fp;				/* stored fingerprint */
	int64		previous;		/* the fingerprint before it, or 0 */
	uint32		chunk;			/* its entry: the index of its chunk */
	uint32		pos;			/* ... and its place in the chunk */
} StoredKey;

typedef struct RetlDiff
{
	MemoryContext cxt;			/* the run's */
	StoredKey  *stored;			/* the sync's fingerprints, sorted by key */
	bool	   *seen;			/* stored[i] was seen by this run */
	int64		nstored;
	int64		cap;			/* room in stored while it is loaded */
	int64		nunseen;		/* stored keys not seen, not met by the walk */
	int64		nentries;		/* entries loaded, stale ones included */
	int64	   *chunks;			/* the loaded chunks' numbers, in order */
	uint32		nchunks;
	uint32		chunks_cap;
	uint32	   *dir;			/* first stored index of each top-bits bucket */
	int			dir_bits;
	HTAB	   *seen_hash;		/* blocks runs: every key, for duplicates */
	uint32	   *cand;			/* the walk: unseen stored keys, by entry */
	int64		ncand;			/* -1 until the walk starts */
	int64		walk_at;		/* the next candidate to check */
	bool		rewritten;		/* the loaded chunks are gone */
} RetlDiff;

#define KEY_SEED 0x5eed			/* of key hashes: stored keys are matched by it */

/*
 * Hashes a primary key's text to the key of the stored array and the
 * seen-set.
 */
uint64
retl_diff_key(const char *pk)
{
	return hash_bytes_extended((const unsigned char *) pk, strlen(pk), KEY_SEED);
}

/*
 * The key hash (retl_diff_key) of entry i of a stored chunk, from its text
 * as stored.
 */
static uint64
entry_key(const RetlFpChunk *c, int i)
{
	const char *pk = DatumGetPointer(c->pks[i]);

	return hash_bytes_extended((const unsigned char *) VARDATA_ANY(pk),
							   VARSIZE_ANY_EXHDR(pk), KEY_SEED);
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
 * Orders stored entries by key hash, then by where they are stored, for
 * qsort: a key's last entry comes last.
 */
static int
cmp_stored(const void *a, const void *b)
{
	const StoredKey *x = a;
	const StoredKey *y = b;

	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	if (x->chunk != y->chunk)
		return x->chunk < y->chunk ? -1 : 1;
	return x->pos < y->pos ? -1 : x->pos > y->pos;
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
 * Adds the entries of one stored chunk to the array, growing it as
 * needed.
 */
static void
add_chunk(RetlDiff *d, const RetlFpChunk *c)
{
	if (d->nchunks == d->chunks_cap)
	{
		d->chunks_cap *= 2;
		d->chunks = repalloc_huge(d->chunks, d->chunks_cap * sizeof(int64));
	}
	d->chunks[d->nchunks] = c->chunk;
	for (int i = 0; i < c->n; i++)
	{
		StoredKey  *s;

		if (d->nstored == d->cap)
		{
			d->cap *= 2;
			d->stored = repalloc_huge(d->stored, d->cap * sizeof(StoredKey));
		}
		s = &d->stored[d->nstored++];
		s->key = entry_key(c, i);
		s->fp = c->fps[i];
		s->previous = c->prevs[i];
		s->chunk = d->nchunks;
		s->pos = (uint32) i;
	}
	d->nchunks++;
}

/*
 * Keeps the last entry of each key of the sorted array, and drops the
 * keys whose last entry forgets them (fingerprint 0).
 */
static void
keep_last_entries(RetlDiff *d)
{
	int64		n = 0;

	d->nentries = d->nstored;
	for (int64 i = 0; i < d->nstored; i++)
	{
		if (i + 1 < d->nstored && d->stored[i + 1].key == d->stored[i].key)
			continue;
		if (d->stored[i].fp != 0)
			d->stored[n++] = d->stored[i];
	}
	d->nstored = n;
	/* give back the room of the stale entries (a realloc of its own block) */
	if (d->nentries > n + 1024)
		d->stored = repalloc_huge(d->stored, Max(n, 1) * sizeof(StoredKey));
}

/*
 * Reads every chunk of the sync into a sorted array of 32 bytes a key.
 * Runs in the transaction that sets the run up, as the worker.
 */
static void
load_stored(RetlRun *run, RetlDiff *d)
{
	RetlFpCursor *cur;
	RetlFpChunk c;

	d->cap = 1024;
	d->stored = MemoryContextAllocHuge(d->cxt, d->cap * sizeof(StoredKey));
	d->chunks_cap = 64;
	d->chunks = MemoryContextAlloc(d->cxt, d->chunks_cap * sizeof(int64));
	cur = retl_store_fp_open(run->sync_id, 0, PG_INT64_MAX, false);
	while (retl_store_fp_next(cur, &c))
		add_chunk(d, &c);
	retl_store_fp_close(cur);
	qsort(d->stored, d->nstored, sizeof(StoredKey), cmp_stored);
	keep_last_entries(d);
	d->seen = MemoryContextAllocHuge(d->cxt, Max(d->nstored, 1) * sizeof(bool));
	memset(d->seen, 0, Max(d->nstored, 1) * sizeof(bool));
	d->nunseen = d->nstored;
	d->ncand = -1;
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
 * Orders candidates (indexes of stored keys) by where their entries are,
 * for qsort: the walk reads each chunk once.
 */
static int
cmp_entry(const void *a, const void *b, void *arg)
{
	const StoredKey *stored = arg;
	const StoredKey *x = &stored[*(const uint32 *) a];
	const StoredKey *y = &stored[*(const uint32 *) b];

	if (x->chunk != y->chunk)
		return x->chunk < y->chunk ? -1 : 1;
	return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/*
 * Lists the stored keys the run did not see, in the order of their
 * chunks.
 */
static void
walk_start(RetlDiff *d)
{
	d->cand = MemoryContextAllocHuge(d->cxt, Max(d->nunseen, 1) * sizeof(uint32));
	d->ncand = 0;
	for (int64 i = 0; i < d->nstored; i++)
		if (!d->seen[i])
			d->cand[d->ncand++] = (uint32) i;
	qsort_arg(d->cand, d->ncand, sizeof(uint32), cmp_entry, d->stored);
	d->walk_at = 0;
}

/*
 * The next page of candidates, from d->walk_at to the returned end: at
 * most RETL_STORE_FP_PAGE keys in at most WALK_CHUNKS chunks, whose
 * numbers go to chunks.
 */
#define WALK_CHUNKS 64

static int64
walk_page_end(RetlDiff *d, int64 *chunks, int *nchunks)
{
	int64		end = d->walk_at;

	*nchunks = 0;
	while (end < d->ncand && end - d->walk_at < RETL_STORE_FP_PAGE)
	{
		int64		chunk = d->chunks[d->stored[d->cand[end]].chunk];

		if (*nchunks == 0 || chunks[*nchunks - 1] != chunk)
		{
			if (*nchunks == WALK_CHUNKS)
				break;
			chunks[(*nchunks)++] = chunk;
		}
		end++;
	}
	return end;
}

/* The candidates of a walk page, read from their chunks. */
typedef struct WalkKeys
{
	char	  **pks;
	int64	   *fps;
	char	  **idents;
	int			n;
} WalkKeys;

/*
 * Reads the stored entries of the candidates cand[from .. end-1] from
 * their chunks (sorted by number, as the candidates are).  A chunk gone,
 * or an entry whose key is not the one loaded, is skipped: nothing of it
 * is left to delete.
 */
static void
walk_read(RetlRun *run, int64 from, int64 end, const int64 *chunks,
		  int nchunks, WalkKeys *w)
{
	RetlDiff   *d = run->diffs;
	RetlFpChunk *got;
	int			ngot = retl_store_fp_chunks(run->sync_id, chunks, nchunks, &got);
	int			g = 0;

	w->pks = palloc(Max(end - from, 1) * sizeof(char *));
	w->fps = palloc(Max(end - from, 1) * sizeof(int64));
	w->idents = palloc(Max(end - from, 1) * sizeof(char *));
	w->n = 0;
	for (int64 c = from; c < end; c++)
	{
		StoredKey  *s = &d->stored[d->cand[c]];
		RetlFpChunk *ch;
		char	   *pk;

		while (g < ngot && got[g].chunk < d->chunks[s->chunk])
			g++;
		if (g == ngot || got[g].chunk != d->chunks[s->chunk] || s->pos >= got[g].n)
			continue;
		ch = &got[g];
		pk = TextDatumGetCString(ch->pks[s->pos]);
		if (retl_diff_key(pk) != s->key)
			continue;
		w->pks[w->n] = pk;
		w->fps[w->n] = ch->fps[s->pos];
		w->idents[w->n++] = ch->idents == NULL || ch->ident_nulls[s->pos]
			? NULL : TextDatumGetCString(ch->idents[s->pos]);
	}
}

/*
 * Forgets n keys: a chunk of fingerprints 0, in the caller's
 * transaction.
 */
static void
forget_keys(RetlRun *run, char **pks, int n)
{
	RetlFpRows	k;

	k.pks = pks;
	k.fps = palloc0(Max(n, 1) * sizeof(int64));
	k.prevs = k.fps;
	k.idents = palloc0(Max(n, 1) * sizeof(char *));
	k.n = n;
	retl_store_fp_write(run->sync_id, NULL, &k);
}

/*
 * Checks one page of candidates and handles those that are gone: the keys
 * this run did not see and that the source, read again now as the owner,
 * does not have.  Mirror syncs send a deletion event (unless on_delete is
 * "skip"), other syncs forget them.  Returns true when no candidate is
 * left.
 */
static bool
walk_page(RetlRun *run)
{
	RetlDiff   *d = run->diffs;
	int64		chunks[WALK_CHUNKS];
	int			nchunks;
	int64		end;
	WalkKeys	w;
	bool	   *live;
	char	  **gone;
	int			ngone = 0;

	if (d->ncand < 0)
		walk_start(d);
	end = walk_page_end(d, chunks, &nchunks);
	walk_read(run, d->walk_at, end, chunks, nchunks, &w);
	d->nunseen -= end - d->walk_at;
	d->walk_at = end;
	live = palloc(Max(w.n, 1) * sizeof(bool));
	gone = palloc(Max(w.n, 1) * sizeof(char *));
	retl_owner_enter(run);
	retl_keys_live(run, w.pks, w.n, live);
	retl_owner_leave(run);
	for (int i = 0; i < w.n; i++)
	{
		if (live[i])
			continue;			/* moved behind the reader: alive */
		run->rows_deleted++;
		if (run->mirror && !run->on_delete_skip)
			queue_deletion(run, w.pks[i], w.fps[i], w.idents[i]);
		else
			gone[ngone++] = w.pks[i];
	}
	forget_keys(run, gone, ngone);
	return d->walk_at >= d->ncand;
}

static void acked_init(RetlFpRows *k, int n);
static void acked_add(RetlFpRows *k, char *pk, int64 fp, int64 prev,
					  char *ident);

/* The rewrite of a sync's chunks: where it is, and the chunk it fills. */
typedef struct Rewrite
{
	RetlRun    *run;
	uint32		ci;				/* the index of the chunk read */
	int64		next;			/* the next new chunk's number */
	RetlFpRows	out;
	MemoryContext cxt;			/* the new chunk's keys */
} Rewrite;

#define REWRITE_KEYS 10000	/* keys written at a time (rows of ~8 kB) */

/*
 * Writes the keys the rewrite has kept so far as new chunks.
 */
static void
rewrite_flush(Rewrite *w)
{
	if (w->out.n == 0)
		return;
	retl_store_fp_write(w->run->sync_id, &w->next, &w->out);
	w->out.n = 0;
	MemoryContextReset(w->cxt);
}

/*
 * Keeps, of one old chunk, the entries that were their key's last when
 * the run loaded them (and did not forget the key).
 */
static void
rewrite_chunk(Rewrite *w, const RetlFpChunk *c)
{
	RetlDiff   *d = w->run->diffs;

	while (w->ci < d->nchunks && d->chunks[w->ci] < c->chunk)
		w->ci++;
	if (w->ci == d->nchunks || d->chunks[w->ci] != c->chunk)
		return;					/* not loaded: cannot be */
	for (int i = 0; i < c->n; i++)
	{
		int64		j = find_stored(d, entry_key(c, i));
		MemoryContext old;

		if (j < 0 || d->stored[j].chunk != w->ci || d->stored[j].pos != (uint32) i)
			continue;
		old = MemoryContextSwitchTo(w->cxt);
		acked_add(&w->out, TextDatumGetCString(c->pks[i]), c->fps[i], c->prevs[i],
				  c->idents == NULL || c->ident_nulls[i]
				  ? NULL : TextDatumGetCString(c->idents[i]));
		MemoryContextSwitchTo(old);
		if (w->out.n == REWRITE_KEYS)
			rewrite_flush(w);
	}
}

/*
 * Marks the loaded entries of the keys that a chunk written by this run
 * stores again: they are stale.
 */
static void
supersede_chunk(RetlDiff *d, const RetlFpChunk *c)
{
	for (int i = 0; i < c->n; i++)
	{
		int64		j = find_stored(d, entry_key(c, i));

		if (j >= 0)
			d->stored[j].chunk = UINT32_MAX;
	}
}

/*
 * Rewrites the sync's chunks when most of the entries the run loaded were
 * stale (keys stored again, or forgotten), or the chunks were many for
 * their keys (small batches): the load then reads about one entry a key,
 * in few rows.  The chunks loaded are replaced by chunks of the entries
 * that are still their key's last: not stale when loaded, nor stored
 * again by this run (a forced full run stores every key again, and then
 * leaves no loaded entry to keep).  The new chunks are numbered down from
 * the last chunk loaded: below every chunk this run wrote, whose entries
 * are newer.
 */
static void
maybe_rewrite(RetlRun *run)
{
	RetlDiff   *d = run->diffs;
	int64		stale = d->nentries - d->nstored;
	int64		top;
	Rewrite		w;
	RetlFpCursor *cur;
	RetlFpChunk c;

	if (d->rewritten || !((stale >= 1000 && stale > d->nstored) ||
						  (int64) d->nchunks > d->nstored / 100 + 100))
		return;
	d->rewritten = true;
	top = d->chunks[d->nchunks - 1];
	memset(&w, 0, sizeof(w));
	w.run = run;
	w.next = top;
	w.cxt = AllocSetContextCreate(CurrentMemoryContext, "retl rewritten chunk",
								  ALLOCSET_DEFAULT_SIZES);
	acked_init(&w.out, REWRITE_KEYS);
	cur = retl_store_fp_open(run->sync_id, top, PG_INT64_MAX, false);
	while (retl_store_fp_next(cur, &c))
		supersede_chunk(d, &c);
	retl_store_fp_close(cur);

	/* the scan, opened before the delete, reads the old chunks */
	cur = retl_store_fp_open(run->sync_id, 0, top, true);
	retl_store_fp_drop(run->sync_id, top);
	while (retl_store_fp_next(cur, &c))
		rewrite_chunk(&w, &c);
	retl_store_fp_close(cur);
	rewrite_flush(&w);
	MemoryContextDelete(w.cxt);
}

/*
 * One page of the deletions walk (walk_page), then, once the walk is
 * done, the rewrite of the sync's chunks if they need one.  Runs in the
 * reader's page transaction, as the worker.  Returns true when the walk
 * is done.
 */
bool
retl_diff_deletes_page(RetlRun *run)
{
	RetlDiff   *d = run->diffs;

	/* every stored key was seen (the usual case): nothing can be gone */
	if (d->nunseen > 0 && !walk_page(run))
		return false;
	maybe_rewrite(run);
	return true;
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
 * Adds one key to a chunk being written.
 */
static void
acked_add(RetlFpRows *k, char *pk, int64 fp, int64 prev, char *ident)
{
	k->pks[k->n] = pk;
	k->fps[k->n] = fp;
	k->prevs[k->n] = prev;
	k->idents[k->n++] = ident;
}

/*
 * Stores the fingerprints of the events a destination acknowledged, and
 * forgets the keys whose deletion it acknowledged (fingerprint 0), as one
 * chunk, in one short transaction.
 */
void
retl_diff_acked(RetlBatch *b)
{
	RetlDiff   *d = b->run->diffs;
	RetlFpRows	k;

	acked_init(&k, b->nevents);
	for (int i = 0; i < b->nevents; i++)
	{
		if (b->ev_pk[i] == NULL)
			continue;
		if (b->ev_delete[i])
			acked_add(&k, b->ev_pk[i], 0, 0, NULL);
		else if (b->ev_fp[i] != 0)
			acked_add(&k, b->ev_pk[i], b->ev_fp[i],
					  d != NULL && d->nstored > 0
					  ? version_of(d, find_stored(d, retl_diff_key(b->ev_pk[i])),
								   b->ev_fp[i]) : 0,
					  b->ev_ident[i]);
	}
	retl_store_fp_acked(b->run->sync_id, &k);
}
