/*-------------------------------------------------------------------------
 *
 * batch.h
 *	  A request's worth of events (batch.c): the batch, its events, and
 *	  the memory that closed batches hold across all runs.
 *
 * Only batch.c writes a batch's events; the transport writes its transfer
 * state (send/transport.c), and the rest of retl reads both.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_BATCH_H
#define RETL_BATCH_H

#include "retl.h"

#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "utils/timestamp.h"

#include <curl/curl.h>

struct RetlRun;
struct RetlAck;

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
	int64	   *ev_failed_id;	/* retl.failed_events id of a retry, or 0 */
	char	  **ev_msgid;		/* messageId, for retl.failed_events */
	int64	   *ev_fp;			/* diff runs: fingerprint to store, or 0 */
	char	  **ev_ident;		/* diff runs: "userId":...,"anonymousId":... */
	bool	   *ev_delete;		/* diff runs: a deletion event */
	struct RetlAck *ack;
	int			attempts;
	TimestampTz retry_at;
	/* transfer state; malloc'd or curl's, never palloc'd from callbacks */
	CURL	   *easy;
	struct curl_slist *req_headers; /* per-request headers of kinds with prepare */
	char		errbuf[CURL_ERROR_SIZE];
	char	   *resp;
	size_t		resp_len;
	long		http_status;
	CURLcode	result;
	long		retry_after_s;
	long		ratelimit_reset_s;	/* X-RateLimit-Reset, as seconds to wait */
	char		redirect[256];	/* Location of a 3xx answer (not followed) */
	bool		blocked;		/* netguard refused the address */
	const char *blocked_by;		/* the setting that refused it */
	char		blocked_addr[64];	/* the address it refused */
	Size		counted;		/* bytes counted in retl_pending_bytes */
} RetlBatch;

/*
 * What one event of a batch carries: its text, and what recording its
 * outcome needs.  The batch copies the strings into its own memory.
 */
typedef struct RetlBatchEvent
{
	const char *text;			/* the encoded event */
	int			len;
	const char *pk;				/* primary key text, or NULL */
	const char *message_id;		/* messageId, or NULL or "" */
	int64		failed_id;		/* retl.failed_events id of a retry, or 0 */
	int64		fp;				/* diff runs: fingerprint to store, or 0 */
	const char *ident;			/* diff runs: identity of a deletion, or NULL */
	bool		deletion;		/* diff runs: a deletion event */
} RetlBatchEvent;

/* The two halves of a split batch (retl_batch_split). */
typedef struct RetlBatchHalves
{
	RetlBatch  *left;
	RetlBatch  *right;
} RetlBatchHalves;

extern Size retl_pending_bytes; /* bodies of closed batches, all runs */

#define PENDING_CAP (32 * 1024 * 1024)	/* stop reading above this ... */
#define PENDING_SOFT_CAP (PENDING_CAP / 2)	/* ... read small pages above */

extern RetlBatch *retl_batch_create(struct RetlRun *run, struct RetlAck *ack);
extern bool retl_batch_fits(RetlBatch *b, int len);
extern void retl_batch_append(RetlBatch *b, const RetlBatchEvent *ev);
extern bool retl_batch_close(RetlBatch *b);
extern RetlBatch *retl_batch_part(RetlBatch *b, int from, int to,
								  const bool *pick);
extern RetlBatchHalves retl_batch_split(RetlBatch *b);
extern void retl_batch_uncount(RetlBatch *b);
extern void retl_batch_free(RetlBatch *batch);

#endif							/* RETL_BATCH_H */
