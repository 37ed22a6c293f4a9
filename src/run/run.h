/*-------------------------------------------------------------------------
 *
 * run.h
 *	  One run of a sync: its state, its phase, and the functions that
 *	  drive it (run.c).  Its checkpoint's bookkeeping is batch/checkpoint.h.
 *
 * A run moves through its phases in one direction (src/README, "Run
 * phases"); only run.c's set_phase moves it, and refuses a move the
 * machine does not have.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_RUN_H
#define RETL_RUN_H

#include "checkpoint.h"
#include "dest.h"
#include "read.h"

#include "lib/ilist.h"

/*
 * Where a run is.  A run moves only forward: claimed, then retrying (when
 * it re-sends failed events) or reading, then deleting (diff runs), then
 * draining, then finishing; a stop or a failure drains it from any phase
 * before draining.  run->stopping and run->failed say why a run drains.
 */
typedef enum RetlRunPhase
{
	RETL_RUN_CLAIMED,			/* set up, not started: nothing read or sent */
	RETL_RUN_RETRYING,			/* re-sending retl.failed_events, page by page */
	RETL_RUN_READING,			/* reading the source, page by page */
	RETL_RUN_DELETING,			/* diff runs: sending deletions (mirror) or
								 * forgetting the keys that are gone */
	RETL_RUN_DRAINING,			/* nothing more to read: the batches built are
								 * sent (unless stopping or failed) and the
								 * requests in flight finish */
	RETL_RUN_FINISHING			/* recording the run's end */
} RetlRunPhase;

/* One run being executed by this worker. */
typedef struct RetlRun
{
	dlist_node	node;
	int64		id;
	int64		sync_id;
	char	   *sync_name;
	bool		full;
	Oid			relid;
	Oid			owner;
	RetlRunPhase phase;		/* where it is; moved only by set_phase (run.c) */
	MemoryContext cxt;			/* lives as long as the run */
	MemoryContext row_cxt;		/* reset after every row */
	RetlMapping *map;
	RetlDest	dest;
	List	   *secrets;		/* the destination's secret values, to scrub */
	RetlEventCtx ectx;
	bytea	   *prev_snapshot;	/* cursor of the previous run, or NULL */
	bytea	   *snapshot;		/* this run's snapshot: the next cursor */
	/* reader (reader.c, readblocks.c, readkeys.c) */
	RetlReadMethod read_method;
	bool		method_chosen;	/* decided at the first source page */
	RetlLeaf   *leaves;			/* blocks: the relations with storage */
	int			nleaves;
	int			leaf;			/* the leaf being read */
	SPIPlanPtr	leaf_plan;		/* its query AND ctid in [$1, $2), or NULL */
	BlockNumber next_block;		/* in that leaf */
	BlockNumber nblocks;		/* of that leaf */
	BlockNumber range_blocks;	/* blocks per TID range query */
	char	   *filter;			/* the xmin filter clause, or "" */
	int			version_column; /* the row's xmin for its messageId, or -1 */
	FullTransactionId next_fxid;	/* widens those xmins */
	bool		tids_tried;		/* tidlist.c: collected, or fell back */
	bool		use_tids;
	ItemPointerData *tids;		/* changed rows, sorted */
	int64		ntids;
	int64		next_tid;
	struct RetlKeyReader *keys; /* keys and store methods (readkeys.c) */
	bool		retry_failed;	/* re-send retl.failed_events first */
	int64		retry_after_id; /* paging through failed events */
	RetlOwnerScope owner_scope; /* isolate.c: while the owner's code runs */
	bool		in_owner;
	char	   *query;			/* SELECT list FROM source, no WHERE */
	StringInfoData event_buf;
	char		message_id[RETL_MESSAGE_ID_LEN + 1];	/* of event_buf */
	char	   *event_reject;	/* why event_buf cannot be sent, or NULL */
	StringInfoData encode_buf;
	/* diff detector (diff.c) */
	bool		diff;
	bool		mirror;
	bool		fp_values;		/* diff: fingerprints of column values (0.4) */
	bool		on_delete_skip;
	char	   *on_delete_event;	/* track event name for deletions */
	struct RetlDiff *diffs;		/* stored fingerprints, seen marks */
	int64		rows_deleted;
	StringInfoData ident_buf;	/* identity of event_buf, for deletions */
	/* batches */
	struct RetlBatch *building;
	dlist_head	ready;			/* built, not sent yet */
	dlist_head	waiting;		/* failed once, waiting for retry_at */
	dlist_head	inflight;		/* being sent */
	int			nready;
	Size		avg_batch_bytes;	/* to size new batch bodies at once */
	int			nwaiting;
	int			in_flight;
	/* counters, flushed to retl.runs at most twice a second */
	int64		rows_read;
	int64		rows_estimated; /* rows this run reads in all, or -1: unknown */
	int64		events_sent;
	int64		events_succeeded;
	int64		events_failed;
	bool		dirty;
	TimestampTz last_flush;
	/* batch/checkpoint.c */
	int64		seq;			/* events built so far */
	int64		ckpt_seq;		/* low-water mark */
	dlist_head	acks;
	dlist_head	spans;
	RetlCheckpoint ckpt;
	bool		ckpt_dirty;
	int64		ckpt_written_seq;	/* ckpt.seq of the stored checkpoint */
	int			acked_since_write;	/* batches done since that write */
	int64		sent_seq;		/* end of the newest batch sent */
	bool		window_full;	/* a new batch waits for a checkpoint write */
	/* outcome: why a run drains (stopped, or failed), not where it is */
	bool		stopping;
	TimestampTz drain_deadline;
	bool		failed;			/* sending failed for good: record, don't send */
	char	   *error;
} RetlRun;

/* run.c */
extern void retl_run_start(RetlRun *run);
extern bool retl_run_advance(RetlRun *run);
extern void retl_run_drain_timeout(RetlRun *run);
extern void retl_run_finish(RetlRun *run);
extern void retl_run_batch_done(struct RetlBatch *b);
extern void retl_run_fail_current(ErrorData *edata);

#endif							/* RETL_RUN_H */
