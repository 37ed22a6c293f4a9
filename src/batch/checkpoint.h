/*-------------------------------------------------------------------------
 *
 * checkpoint.h
 *	  The bookkeeping of positions and acknowledgements (checkpoint.c):
 *	  what a run read, what its batches hold, and which prefix of it is
 *	  acknowledged.
 *
 * Every layer that makes or finishes events calls these: the reader
 * (spans), the builder (acks and events), the run (sent, done).  They
 * take the run, the state all layers share (run/run.h), and write only
 * its checkpoint fields.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_CHECKPOINT_H
#define RETL_CHECKPOINT_H

#include "retl.h"

#include "lib/ilist.h"

struct RetlRun;
struct RetlBatch;

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

extern RetlAck *retl_ckpt_new_ack(struct RetlRun *run);
extern void retl_ckpt_event(struct RetlRun *run, RetlAck *ack, bool oversize);
extern void retl_ckpt_span(struct RetlRun *run, int64 end_pos,
						   const char *end_key, int64 rows);
extern void retl_ckpt_advance(struct RetlRun *run);
extern void retl_ckpt_ack_done(struct RetlRun *run, RetlAck *ack,
							   int succeeded, int failed);
extern bool retl_ckpt_may_send(struct RetlRun *run, struct RetlBatch *b);
extern void retl_ckpt_sent(struct RetlRun *run, struct RetlBatch *b);

#endif							/* RETL_CHECKPOINT_H */
