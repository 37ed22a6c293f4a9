/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  Batches: create, append, close, split and free, and the accounting
 *	  of the memory that closed batches hold (retl_pending_bytes).
 *
 * A batch lives in its own memory context under the run's (src/README,
 * "Memory"), created with its body sized for the run's usual batch.  Its
 * reset callback releases the transfer (retl_transport_release, send/), so
 * deleting the context, by retl_batch_free or with the run's, never leaks
 * curl state.  Only this file writes a batch's events: the builder hands
 * over an event whole (RetlBatchEvent), and parts of a batch are copied
 * event by event.
 *
 * Batches are built in the reader's page transaction (retl_encode_add),
 * and split, parted and freed in the worker's loop between transactions;
 * nothing here runs SQL or raises an error but out of memory.  Nothing
 * here changes the run either: these functions return the batches they
 * make, and the run queues them and counts their events (run/run.c,
 * build/encode.c).  A closed batch's body counts in retl_pending_bytes
 * until the batch is freed, or until the run gives up on sending it
 * (retl_batch_uncount).
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "batch.h"
#include "send.h"

#include "utils/memutils.h"

Size		retl_pending_bytes = 0;

/*
 * The reset callback of a batch's memory context: releases its transfer
 * when the context goes away.
 */
static void
batch_reset(void *arg)
{
	retl_transport_release((RetlBatch *) arg);
}

/*
 * Creates an empty batch in its own memory context under the run's, with
 * the destination's prefix written, that counts its events in ack.
 */
RetlBatch *
retl_batch_create(RetlRun *run, RetlAck *ack)
{
	MemoryContext cxt = AllocSetContextCreate(run->cxt, "retl batch",
											  ALLOCSET_DEFAULT_SIZES);
	RetlBatch  *b = MemoryContextAllocZero(cxt, sizeof(RetlBatch));
	MemoryContextCallback *cb = MemoryContextAlloc(cxt, sizeof(*cb));

	b->cxt = cxt;
	b->run = run;
	b->cap = 64;
	b->ev_start = MemoryContextAlloc(cxt, b->cap * sizeof(int));
	b->ev_len = MemoryContextAlloc(cxt, b->cap * sizeof(int));
	b->ev_pk = MemoryContextAlloc(cxt, b->cap * sizeof(char *));
	b->ev_failed_id = MemoryContextAlloc(cxt, b->cap * sizeof(int64));
	b->ev_msgid = MemoryContextAlloc(cxt, b->cap * sizeof(char *));
	b->ev_fp = MemoryContextAlloc(cxt, b->cap * sizeof(int64));
	b->ev_ident = MemoryContextAlloc(cxt, b->cap * sizeof(char *));
	b->ev_delete = MemoryContextAlloc(cxt, b->cap * sizeof(bool));
	cb->func = batch_reset;
	cb->arg = b;
	MemoryContextRegisterResetCallback(cxt, cb);
	/* one allocation of the usual size: growing by doubling wastes memory */
	b->body.maxlen = Max(8192, run->avg_batch_bytes + run->avg_batch_bytes / 8);
	b->body.data = MemoryContextAlloc(cxt, b->body.maxlen);
	resetStringInfo(&b->body);
	b->ack = ack;
	appendStringInfoString(&b->body, run->dest.prefix);
	return b;
}

/*
 * Does an event of len bytes fit in the batch, within the destination's
 * count and byte limits (with its separator and the batch's suffix)?
 */
bool
retl_batch_fits(RetlBatch *b, int len)
{
	RetlDest   *d = &b->run->dest;

	return b->nevents < d->batch_size &&
		b->body.len + len + strlen(d->separator) + strlen(d->suffix) <= d->max_batch_bytes;
}

/*
 * Appends one event to a batch, after the separator when it is not the
 * first.  The caller checks the batch limits.
 */
void
retl_batch_append(RetlBatch *b, const RetlBatchEvent *ev)
{
	if (b->nevents == b->cap)
	{
		b->cap *= 2;
		b->ev_start = repalloc(b->ev_start, b->cap * sizeof(int));
		b->ev_len = repalloc(b->ev_len, b->cap * sizeof(int));
		b->ev_pk = repalloc(b->ev_pk, b->cap * sizeof(char *));
		b->ev_failed_id = repalloc(b->ev_failed_id, b->cap * sizeof(int64));
		b->ev_msgid = repalloc(b->ev_msgid, b->cap * sizeof(char *));
		b->ev_fp = repalloc(b->ev_fp, b->cap * sizeof(int64));
		b->ev_ident = repalloc(b->ev_ident, b->cap * sizeof(char *));
		b->ev_delete = repalloc(b->ev_delete, b->cap * sizeof(bool));
	}
	if (b->nevents > 0)
		appendStringInfoString(&b->body, b->run->dest.separator);
	b->ev_start[b->nevents] = b->body.len;
	b->ev_len[b->nevents] = ev->len;
	b->ev_pk[b->nevents] = ev->pk ? MemoryContextStrdup(b->cxt, ev->pk) : NULL;
	b->ev_failed_id[b->nevents] = ev->failed_id;
	b->ev_msgid[b->nevents] = ev->message_id && ev->message_id[0]
		? MemoryContextStrdup(b->cxt, ev->message_id) : NULL;
	b->ev_fp[b->nevents] = ev->fp;
	b->ev_ident[b->nevents] = ev->ident
		? MemoryContextStrdup(b->cxt, ev->ident) : NULL;
	b->ev_delete[b->nevents] = ev->deletion;
	appendBinaryStringInfo(&b->body, ev->text, ev->len);
	b->nevents++;
}

/*
 * Closes a batch that has events: appends the destination's suffix and
 * counts its body in retl_pending_bytes.  Returns false, and leaves the
 * batch as it is, when it has none (only oversize events, already
 * recorded as failed): queueing it, or finishing it at once, is the
 * caller's business.
 */
bool
retl_batch_close(RetlBatch *b)
{
	if (b->nevents == 0)
		return false;
	appendStringInfoString(&b->body, b->run->dest.suffix);
	b->counted = b->body.len;
	retl_pending_bytes += b->counted;
	return true;
}

/*
 * Event i of a batch, as retl_batch_append takes it.
 */
static RetlBatchEvent
batch_event(RetlBatch *b, int i)
{
	RetlBatchEvent ev = {
		.text = b->body.data + b->ev_start[i],
		.len = b->ev_len[i],
		.pk = b->ev_pk[i],
		.message_id = b->ev_msgid[i],
		.failed_id = b->ev_failed_id[i],
		.fp = b->ev_fp[i],
		.ident = b->ev_ident[i],
		.deletion = b->ev_delete[i],
	};

	return ev;
}

/*
 * Copies the events of a batch for which pick is true (all of them when
 * pick is NULL) from index from to index to into a new batch that shares
 * its ack.
 */
RetlBatch *
retl_batch_part(RetlBatch *b, int from, int to, const bool *pick)
{
	RetlRun    *run = b->run;
	RetlBatch  *part = retl_batch_create(run, b->ack);

	for (int i = from; i < to; i++)
	{
		RetlBatchEvent ev;

		if (pick != NULL && !pick[i])
			continue;
		ev = batch_event(b, i);
		retl_batch_append(part, &ev);
	}
	appendStringInfoString(&part->body, run->dest.suffix);
	return part;
}

/*
 * Splits a rejected batch in halves, until the bad events are isolated
 * (as Census and Hightouch do): only those fail.  The halves share the
 * batch's ack, which gets one more part; the batch itself is left to the
 * caller, which sends the halves next.
 */
RetlBatchHalves
retl_batch_split(RetlBatch *b)
{
	int			half = b->nevents / 2;
	RetlBatchHalves halves = {
		.left = retl_batch_part(b, 0, half, NULL),
		.right = retl_batch_part(b, half, b->nevents, NULL),
	};

	b->ack->parts++;			/* one part becomes two */
	return halves;
}

/*
 * Stops counting a batch's body in retl_pending_bytes, for a batch that
 * will never be sent (the transport could not set up its request): its
 * memory goes with the run's.
 */
void
retl_batch_uncount(RetlBatch *b)
{
	retl_pending_bytes -= b->counted;
	b->counted = 0;
}

/*
 * Frees a batch and everything it holds.
 */
void
retl_batch_free(RetlBatch *b)
{
	retl_pending_bytes -= b->counted;
	MemoryContextDelete(b->cxt);
}
