/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  State of the per-database worker: runs, batches, and the functions
 *	  of the reader, the transport and the catalog that drive them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_WORKER_H
#define RETL_WORKER_H

#include "dest.h"

#include "executor/spi.h"
#include "lib/ilist.h"
#include "storage/block.h"
#include "storage/itemptr.h"

struct RetlRun;

/* How a run reads its source (shown in retl.runs.read_method). */
typedef enum RetlReadMethod
{
	RETL_READ_BLOCKS,			/* TID ranges over each leaf with storage */
	RETL_READ_KEYS,				/* key-ordered pages, WHERE key > last */
	RETL_READ_STORE				/* materialized in the worker, sorted by key */
} RetlReadMethod;

/* A relation with storage that a blocks run reads. */
typedef struct RetlLeaf
{
	Oid			relid;
	BlockNumber nblocks;		/* read right after the run's snapshot */
	char	   *query;			/* SELECT list FROM ONLY leaf WHERE true[filter] */
} RetlLeaf;

/* The worker's identity, saved while the sync's owner's code runs. */
typedef struct RetlOwnerScope
{
	Oid			save_uid;
	int			save_sec;
	int			guc_level;
} RetlOwnerScope;

/* Acknowledgement state of one batch (kept after the batch is freed). */
typedef struct RetlAck
{
	dlist_node	node;			/* in the run's acks, in creation order */
	int64		end_seq;		/* sequence number after its last event */
	int			parts;			/* parts not done yet (splits add parts) */
	int			nsent;			/* events, counting oversize ones */
	int			nsucceeded;
	int			nfailed;
} RetlAck;

/* A span of the source that was read: a block range or a cursor fetch. */
typedef struct RetlSpan
{
	dlist_node	node;
	int64		end_pos;		/* leaf and block after the span (blocks) */
	char	   *end_key;		/* last key of the span (keys, store), or NULL */
	int64		last_seq;		/* sequence number after its last event */
	int64		rows;
} RetlSpan;

/* What is acknowledged: the source position and the counters there. */
typedef struct RetlCheckpoint
{
	int64		pos;			/* blocks: leaf OID << 32 | block */
	char	   *key;			/* keys, store: the last key read, or NULL */
	int64		rows;
	int64		sent;
	int64		succeeded;
	int64		failed;
	int64		resent;			/* sent before a crash, outcome lost */
	int64		seq;			/* events up to this one are covered (memory) */
} RetlCheckpoint;

#include "batch.h"

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
	bool		reading_done;
	bool		source_done;	/* the source is read; deletions may follow */
	bool		retry_failed;	/* re-send retl.failed_events first */
	bool		retry_done;
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
	bool		deletes_done;
	int64		rows_deleted;
	StringInfoData ident_buf;	/* identity of event_buf, for deletions */
	/* batches */
	RetlBatch  *building;
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
	/* checkpoint.c */
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
	/* outcome */
	bool		stopping;
	bool		finishing;
	TimestampTz drain_deadline;
	bool		failed;			/* sending failed for good: record, don't send */
	char	   *error;
} RetlRun;

/* reader.c */
extern void retl_reader_start(RetlRun *run);
extern void retl_reader_page(RetlRun *run);
extern void retl_reader_close(RetlRun *run);
extern int64 retl_reader_estimate(Oid relid);
extern const char *retl_read_method_name(RetlReadMethod method);
extern char *retl_reader_pk(RetlRun *run, Datum *values, bool *nulls);
extern uint64 retl_reader_row_version(RetlRun *run, Datum *values, bool *nulls);
extern void retl_reader_rows(RetlRun *run, SPITupleTable *tt, uint64 n);
extern void retl_reader_tuples(RetlRun *run, HeapTuple *rows, TupleDesc desc,
							   uint64 n, const bool *dups);

/* readblocks.c */
extern void retl_blocks_start(RetlRun *run);
extern bool retl_blocks_usable(RetlRun *run);
extern void retl_blocks_page(RetlRun *run, int want);
extern int64 retl_blocks_pos(RetlRun *run, BlockNumber block);

/* readkeys.c */
extern RetlReadMethod retl_keys_choose(RetlRun *run);
extern void retl_keys_page(RetlRun *run, int want);
extern void retl_keys_live(RetlRun *run, char **pks, int n, bool *live);
extern void retl_keys_close(RetlRun *run);

/* isolate.c */
extern void retl_owner_enter(RetlRun *run);
extern void retl_owner_leave(RetlRun *run);
extern void retl_owner_suspend(RetlRun *run);
extern void retl_owner_resume(RetlRun *run);
extern void retl_session_restore(void);

/* refail.c */
extern void retl_refail_page(RetlRun *run);

/* runevent.c: build.h (encode.c) and batch.h */
#include "build.h"

/* tidlist.c */
extern bool retl_tidlist_collect(RetlRun *run, const char *filter);
extern void retl_tidlist_page(RetlRun *run, int want);

/* checkpoint.c */
extern RetlAck *retl_ckpt_new_ack(RetlRun *run);
extern void retl_ckpt_event(RetlRun *run, RetlAck *ack, bool oversize);
extern void retl_ckpt_span(RetlRun *run, int64 end_pos, const char *end_key,
						   int64 rows);
extern void retl_ckpt_advance(RetlRun *run);
extern void retl_ckpt_ack_done(RetlRun *run, RetlAck *ack, int succeeded,
							   int failed);
extern bool retl_ckpt_may_send(RetlRun *run, RetlBatch *b);
extern void retl_ckpt_sent(RetlRun *run, RetlBatch *b);

/* transport.c (the batch functions that were here: batch.h) */
extern void retl_transport_init(void);
extern void retl_transport_send(RetlBatch *batch);
extern bool retl_transport_wait(long timeout_ms);
extern RetlBatch *retl_transport_next_done(void);
extern void retl_transport_release(RetlBatch *batch);

/* diff.c */
extern void retl_diff_start(RetlRun *run);
extern uint64 retl_diff_key(const char *pk);
extern void retl_diff_prefetch(RetlRun *run, uint64 key, int stage);
extern const char *retl_diff_check(RetlRun *run, const char *pk, int64 fp,
								   int dup, uint64 *version);
extern uint64 retl_diff_version(RetlRun *run, const char *pk, int64 fp);
extern void retl_diff_deletes_page(RetlRun *run);
extern void retl_diff_acked(RetlBatch *b);

/*
 * Sets one option of a request, or returns curl's code from the calling
 * function, whose "const char **failed" gets the option's name, as
 * PostgreSQL's libpq-oauth checks every setopt: an option curl refused
 * silently (a CA bundle, the allowed protocols, a guard) would change what
 * the request does.
 */
#define RETL_SETOPT(e, opt, val) \
	do { \
		CURLcode	rc_ = curl_easy_setopt((e), (opt), (val)); \
		if (rc_ != CURLE_OK) \
		{ \
			*failed = #opt; \
			return rc_; \
		} \
	} while (0)

/* netguard.c */
extern void retl_check_url_allowed(const char *url);
extern CURLcode retl_guard_request(RetlBatch *b, CURL *easy,
								   const char **failed);
extern void retl_define_guard_gucs(void);

/* catalog.c */
extern void retl_catalog_recover(void);
extern RetlRun *retl_catalog_claim(void);
extern void retl_catalog_poll_stops(dlist_head *runs);
extern void retl_catalog_flush_due(dlist_head *runs, int interval_ms,
								   int ckpt_interval_ms);
extern void retl_catalog_finish(RetlRun *run);
extern void retl_catalog_finish_failed(RetlRun *run, const char *error);
extern RetlRun *retl_catalog_writing;
extern void retl_catalog_fail_batch(RetlBatch *batch, const char *error,
									const RetlOutcome *outcomes,
									char **reasons);
extern void retl_catalog_fail_event(RetlRun *run, const char *pk,
									const char *payload, int len,
									const char *error);
extern void retl_catalog_batch_delivered(RetlBatch *batch);
extern Oid	retl_catalog_extension_oid(void);
extern bool retl_catalog_version_ok(void);
extern bool retl_catalog_database_locked(void);
extern void retl_catalog_prune_history(void);

#endif							/* RETL_WORKER_H */
