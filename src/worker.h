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

#include "lib/ilist.h"
#include "storage/block.h"

struct RetlRun;

/*
 * A request's worth of events.  Each batch has its own memory context:
 * deleting it also removes its easy handle from the multi handle and frees
 * the response buffer (a reset callback), so an error cannot leak curl
 * resources.
 */
typedef struct RetlBatch
{
	dlist_node	node;			/* in the run's ready or waiting list */
	struct RetlRun *run;
	MemoryContext cxt;
	StringInfoData body;
	int			nevents;
	int			cap;
	int		   *ev_start;		/* offset of each event in body */
	int		   *ev_len;
	char	  **ev_pk;			/* primary key text, or NULL */
	int			attempts;
	TimestampTz retry_at;
	/* transfer state; malloc'd or curl's, never palloc'd from callbacks */
	CURL	   *easy;
	char		errbuf[CURL_ERROR_SIZE];
	char	   *resp;
	size_t		resp_len;
	long		http_status;
	CURLcode	result;
	long		retry_after_s;
} RetlBatch;

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
	RetlEventCtx ectx;
	bytea	   *prev_snapshot;	/* cursor of the previous run, or NULL */
	bytea	   *snapshot;		/* this run's snapshot: the next cursor */
	/* reader */
	bool		use_ctid;
	BlockNumber next_block;
	BlockNumber nblocks;
	char	   *cursor_name;	/* holdable cursor for non-table sources */
	bool		cursor_open;
	bool		reading_done;
	char	   *query;			/* SELECT ... FROM source [filter] */
	StringInfoData event_buf;
	/* batches */
	RetlBatch  *building;
	dlist_head	ready;			/* built, not sent yet */
	dlist_head	waiting;		/* failed once, waiting for retry_at */
	dlist_head	inflight;		/* being sent */
	int			nready;
	int			in_flight;
	/* counters, flushed to retl.runs at most twice a second */
	int64		rows_read;
	int64		events_sent;
	int64		events_succeeded;
	int64		events_failed;
	bool		dirty;
	TimestampTz last_flush;
	/* outcome */
	bool		stopping;
	bool		finishing;
	TimestampTz drain_deadline;
	bool		failed;
	char	   *error;
} RetlRun;

/* reader.c */
extern void retl_reader_start(RetlRun *run);
extern void retl_reader_page(RetlRun *run);
extern void retl_reader_close(RetlRun *run);
extern void retl_run_add_event(RetlRun *run, const char *pk);
extern void retl_batch_close(RetlRun *run);

/* transport.c */
extern void retl_transport_init(void);
extern void retl_transport_send(RetlBatch *batch);
extern bool retl_transport_wait(long timeout_ms);
extern RetlBatch *retl_transport_next_done(void);
extern RetlBatch *retl_batch_create(RetlRun *run);
extern void retl_batch_free(RetlBatch *batch);

/* catalog.c */
extern void retl_catalog_recover(void);
extern RetlRun *retl_catalog_claim(void);
extern void retl_catalog_poll_stops(dlist_head *runs);
extern void retl_catalog_flush(RetlRun *run);
extern void retl_catalog_finish(RetlRun *run);
extern void retl_catalog_fail_batch(RetlBatch *batch, const char *error,
									bool in_xact);
extern void retl_catalog_fail_event(RetlRun *run, const char *pk,
									const char *payload, int len,
									const char *error);
extern bool retl_catalog_extension_exists(void);

#endif							/* RETL_WORKER_H */
