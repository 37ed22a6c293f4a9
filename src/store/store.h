/*-------------------------------------------------------------------------
 *
 * store.h
 *	  The store: every statement the worker runs against retl's catalog
 *	  tables (retl.runs, retl.failed_events, retl.fingerprints ...), each
 *	  prepared once per worker and kept, with plain C values in and out.
 *
 * store.c       transactions, extension and database checks, recovery,
 *               history pruning
 * claim.c       claiming queued runs, a run's row, its start or failure
 * progress.c    stops, counters and checkpoints, the end of a run
 * failed.c      failed events: recorded, re-read, forgotten
 * fingerprints.c  retl.fingerprint_chunks, for the content diff (read/diff.c)
 *
 * The functions that take a run or a batch (retl_store_flush_due,
 * retl_store_finish, retl_store_fail_batch ...) pass its values to the
 * statements, which take plain values.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_STORE_H
#define RETL_STORE_H

#include "dest.h"

#include "lib/ilist.h"

struct RetlRun;
struct RetlBatch;

/* store.c */
extern MemoryContext retl_store_begin(void);
extern void retl_store_commit(MemoryContext caller);

/* claim.c: a claimed run's sync, destination and state, as stored */
typedef struct RetlRunRow
{
	int64		sync_id;
	char	   *sync_name;
	bool		full;			/* the run is of kind 'full' */
	Oid			relid;			/* the source */
	Oid			owner;			/* the sync's owner */
	char	   *event_type;
	Jsonb	   *mapping;
	char	   *pk;				/* the primary key column, or NULL */
	Jsonb	   *options;
	char	   *kind;			/* the destination's kind */
	Jsonb	   *config;			/* its secrets row, NULL when missing */
	bytea	   *prev_snapshot;	/* the sync's cursor, or NULL */
	bytea	   *snapshot;		/* the run's snapshot (a resumed run), or NULL */
	Jsonb	   *checkpoint;		/* the run's checkpoint, or NULL */
	bool		retry_failed;	/* the run or the sync asks for retries */
	bool		has_retryable;	/* the sync has retryable failed events */
	bool		diff;			/* detector 'diff' */
	bool		mirror;			/* mode 'mirror' */
	bool		fp_values;		/* fingerprints of column values (0.4) */
} RetlRunRow;

extern int	retl_store_claim_runs(int64 *ids, int max);
extern bool retl_store_run_row(int64 run_id, MemoryContext cxt,
							   RetlRunRow *row);
extern void retl_store_run_started(int64 run_id, bytea *snapshot,
								   const char *full_reason,
								   int64 rows_estimated);
extern void retl_store_setup_failed(int64 run_id, const char *error);

/* progress.c: what retl.runs keeps of a run while it runs */
typedef struct RetlRunProgress
{
	int64		run_id;
	int64		rows_read;
	int64		rows_estimated; /* or -1: unknown */
	int64		rows_deleted;
	int64		events_sent;
	int64		events_succeeded;
	int64		events_failed;
	const char *read_method;	/* NULL: not chosen yet */
	/* the checkpoint: position and the counters there */
	int64		ckpt_pos;
	const char *ckpt_key;		/* or NULL */
	int64		ckpt_rows;
	int64		ckpt_sent;
	int64		ckpt_succeeded;
	int64		ckpt_failed;
	int64		ckpt_resent;
} RetlRunProgress;

extern int	retl_store_draining(const int64 *ids, int n, int64 *draining);
extern void retl_store_progress(const RetlRunProgress *p);
extern void retl_store_lock_sync(int64 run_id);
extern void retl_store_run_end(int64 run_id, const char *status,
							   text *error, bytea *snapshot);
extern void retl_store_end_failed(int64 run_id, text *error);

/* failed.c: one failed event to record (texts scrubbed of secrets) */
typedef struct RetlFailedEvent
{
	int64		sync_id;
	int64		run_id;
	int64		failed_id;		/* the row of a retried event, or 0 */
	const char *pk;				/* or NULL */
	const char *message_id;		/* or NULL or "" */
	text	   *payload;
	int			http_status;	/* or 0 */
	text	   *response;		/* or NULL */
	text	   *error;
	int			attempts;
	bool		retryable;
} RetlFailedEvent;

/* A stored failed event to send again. */
typedef struct RetlFailedRow
{
	int64		id;
	char	   *pk;				/* or NULL */
	char	   *payload;
	char	   *message_id;		/* or NULL */
} RetlFailedRow;

#define RETL_STORE_FAILED_PAGE 500	/* failed events per page */

extern void retl_store_failed_event(const RetlFailedEvent *ev);
extern void retl_store_forget_failed_ids(const int64 *ids, int n);
extern int	retl_store_failed_page(int64 sync_id, int64 after_id,
								   int64 run_id, RetlFailedRow **rows);
extern void retl_store_forget_failed(int64 id);

/*
 * fingerprints.c: retl.fingerprint_chunks.  Keys whose fingerprints are
 * written, a chunk at a time; fps[i] 0 forgets a key.
 */
typedef struct RetlFpRows
{
	char	  **pks;
	int64	   *fps;
	int64	   *prevs;			/* the versions their messageIds had */
	char	  **idents;			/* or NULL elements */
	int			n;
} RetlFpRows;

/* One stored chunk, its arrays deconstructed (see where it is read). */
typedef struct RetlFpChunk
{
	int64		chunk;			/* its number: later chunks win */
	int			n;
	Datum	   *pks;			/* text */
	int64	   *fps;
	int64	   *prevs;
	Datum	   *idents;			/* text, for the deletions walk, or NULL */
	bool	   *ident_nulls;
} RetlFpChunk;

/* an open scan of a sync's chunks */
typedef struct RetlFpCursor RetlFpCursor;

#define RETL_STORE_FP_PAGE 1000 /* stored keys per deletions page */

extern RetlFpCursor *retl_store_fp_open(int64 sync_id, int64 after,
										int64 upto, bool with_idents);
extern bool retl_store_fp_next(RetlFpCursor *cur, RetlFpChunk *c);
extern void retl_store_fp_close(RetlFpCursor *cur);
extern int	retl_store_fp_chunks(int64 sync_id, const int64 *chunks, int n,
								 RetlFpChunk **out);
extern void retl_store_fp_write(int64 sync_id, int64 *chunk,
								const RetlFpRows *k);
extern void retl_store_fp_acked(int64 sync_id, const RetlFpRows *k);
extern void retl_store_fp_drop(int64 sync_id, int64 upto);

/* the worker's entry points, taking its runs and batches */
extern void retl_store_recover(void);
extern void retl_store_poll_stops(dlist_head *runs);
extern void retl_store_flush_due(dlist_head *runs, int interval_ms,
								   int ckpt_interval_ms);
extern void retl_store_finish(struct RetlRun *run);
extern void retl_store_finish_failed(struct RetlRun *run, const char *error);
extern struct RetlRun *retl_store_writing;
extern void retl_store_fail_batch(struct RetlBatch *batch, const char *error,
									const RetlOutcome *outcomes,
									char **reasons);
extern void retl_store_fail_event(struct RetlRun *run, const char *pk,
									const char *payload, int len,
									const char *error);
extern void retl_store_batch_delivered(struct RetlBatch *batch);
extern Oid	retl_store_extension_oid(void);
extern bool retl_store_version_ok(void);
extern bool retl_store_database_locked(void);
extern void retl_store_prune_history(void);

#endif							/* RETL_STORE_H */
