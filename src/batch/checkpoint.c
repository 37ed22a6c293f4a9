/*-------------------------------------------------------------------------
 *
 * checkpoint.c
 *	  Tracks which part of a run is acknowledged, so that a stopped or
 *	  crashed run resumes where its contiguous acknowledged prefix ends.
 *
 * Events get sequence numbers in reading order, and batches hold
 * contiguous sequence ranges, so an "ack" record per batch, kept in
 * creation order, gives the low-water mark: the end of the longest prefix
 * of batches that are done (delivered, or recorded as failed).  The source
 * is read in spans (block ranges or key pages); a span is
 * checkpointed once the low-water mark passes its last event.  The
 * checkpoint (source position plus the counters at that point) is written
 * to retl.runs with the run's progress, so a resumed run re-sends only the
 * batches after it: those in flight or acknowledged out of order (the
 * cursor only advances over the contiguous prefix of acknowledged work).
 * The position is a leaf and a block for sources read by blocks, and the
 * last key read for sources read in key order: never a count of rows,
 * which rows deleted before a resume would shift.
 *
 * Crash re-sends are bounded (src/README, "Checkpoints"): the checkpoint
 * is written once max_in_flight batches were done since the last write,
 * or 50 ms after it moved, and a new batch is sent only while the events
 * sent past the stored checkpoint stay within 2 x max_in_flight x
 * batch_size (or the span there and a batch), so that acknowledgements
 * out of order cannot stretch it.
 *
 * The reader, the builder and the run all call these, so they sit below
 * them, with the batches.  They take the run, the state all layers share
 * (run/run.h), and write only its checkpoint fields; they call nothing
 * above them.
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "batch.h"
#include "checkpoint.h"

/*
 * Starts the ack record of a new batch.
 */
RetlAck *
retl_ckpt_new_ack(RetlRun *run)
{
	RetlAck    *ack = MemoryContextAllocZero(run->cxt, sizeof(RetlAck));

	ack->parts = 1;
	ack->end_seq = run->seq;
	dlist_push_tail(&run->acks, &ack->node);
	return ack;
}

/*
 * Counts one more event (sent or, when oversize, failed at once) in the
 * batch being built.
 */
void
retl_ckpt_event(RetlRun *run, RetlAck *ack, bool oversize)
{
	run->seq++;
	ack->end_seq = run->seq;
	ack->nsent++;
	if (oversize)
		ack->nfailed++;
}

/*
 * Records that the source was read up to end_pos (a leaf and block), or up
 * to and including key end_key, with rows rows in this span.
 */
void
retl_ckpt_span(RetlRun *run, int64 end_pos, const char *end_key, int64 rows)
{
	RetlSpan   *span = MemoryContextAllocZero(run->cxt, sizeof(RetlSpan));

	span->end_pos = end_pos;
	span->end_key = end_key ? MemoryContextStrdup(run->cxt, end_key) : NULL;
	span->last_seq = run->seq;
	span->rows = rows;
	dlist_push_tail(&run->spans, &span->node);
	retl_ckpt_advance(run);
}

/*
 * Moves the low-water mark over the done batches at the head of the list,
 * and the checkpoint over the spans it covers.
 */
void
retl_ckpt_advance(RetlRun *run)
{
	int64		low = run->ckpt_seq;

	while (!dlist_is_empty(&run->acks))
	{
		RetlAck    *ack = dlist_head_element(RetlAck, node, &run->acks);

		if (ack->parts > 0)
			break;
		low = ack->end_seq;
		run->ckpt.sent += ack->nsent;
		run->ckpt.succeeded += ack->nsucceeded;
		run->ckpt.failed += ack->nfailed;
		dlist_delete(&ack->node);
		pfree(ack);
	}
	/* with no batch outstanding, everything read so far is acknowledged */
	if (dlist_is_empty(&run->acks))
		low = run->seq;
	run->ckpt_seq = low;
	while (!dlist_is_empty(&run->spans))
	{
		RetlSpan   *span = dlist_head_element(RetlSpan, node, &run->spans);

		if (span->last_seq > low)
			break;
		run->ckpt.pos = span->end_pos;
		if (span->end_key != NULL)
		{
			if (run->ckpt.key != NULL)
				pfree(run->ckpt.key);
			run->ckpt.key = span->end_key;
		}
		run->ckpt.rows += span->rows;
		run->ckpt.seq = span->last_seq;
		run->ckpt_dirty = true;
		dlist_delete(&span->node);
		pfree(span);
	}
	/* re-sent failed events have no position: a resume never reads them */
	if (run->phase == RETL_RUN_RETRYING && low > run->ckpt.seq)
		run->ckpt.seq = low;
}

/*
 * Records the outcome of one part of a batch (a batch split after a 4xx has
 * several parts).  The batch is done when all its parts are.
 */
void
retl_ckpt_ack_done(RetlRun *run, RetlAck *ack, int succeeded, int failed)
{
	ack->nsucceeded += succeeded;
	ack->nfailed += failed;
	if (--ack->parts == 0)
	{
		run->acked_since_write++;
		retl_ckpt_advance(run);
	}
}

/*
 * May a batch be sent now?  A batch of events not sent before is held
 * back while it would put more than 2 x max_in_flight x batch_size events
 * past the stored checkpoint: those are what a crash sends again.  The
 * position is a span (a block range, a key page), so the window always
 * covers the span that starts at the stored checkpoint, and one batch
 * beyond it: with spans larger than the window (batches smaller than a
 * block's rows), a crash re-sends at most that span and a batch.  A diff
 * run reads everything again after a crash (its fingerprints skip what
 * was acknowledged), so no window applies; nor when nothing is
 * outstanding, so that a run always progresses.
 */
bool
retl_ckpt_may_send(RetlRun *run, RetlBatch *b)
{
	int64		limit = run->ckpt_written_seq +
		2 * (int64) run->dest.max_in_flight * run->dest.batch_size;

	if (run->ckpt_written_seq == run->ckpt.seq && !dlist_is_empty(&run->spans))
		limit = Max(limit, dlist_head_element(RetlSpan, node, &run->spans)->last_seq +
					run->dest.batch_size);
	if (run->diff || b->ack->end_seq <= run->sent_seq ||
		b->ack->end_seq <= limit ||
		(run->in_flight == 0 && run->nwaiting == 0))
	{
		run->window_full = false;
		return true;
	}
	run->window_full = true;
	return false;
}

/*
 * Notes that a batch was sent: the newest sent event bounds the window.
 */
void
retl_ckpt_sent(RetlRun *run, RetlBatch *b)
{
	run->sent_seq = Max(run->sent_seq, b->ack->end_seq);
}
