/*-------------------------------------------------------------------------
 *
 * run.c
 *	  Drives one run: its phases, its reading, its sends, the outcome of
 *	  its requests, and its end.
 *
 * A run goes claimed -> retrying (failed events) -> reading (the source)
 * -> deleting (diff runs) -> draining -> finishing, and only set_phase
 * moves it (src/README, "Run phases").  The reader reads one page of the
 * run's phase and says when that phase has nothing more to read; the run
 * then moves on.  A stop or a failure drains the run from any phase before
 * draining: reading stops, and what was not sent is left to the next run.
 *
 * The worker (worker.c) calls these functions from its loop, outside any
 * transaction; each page, each catalog write is a short transaction of
 * its own, and none is open while requests are in flight.  An error the
 * loop catches is charged to current_run (retl_run_fail_current).
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "batch.h"
#include "build.h"
#include "checkpoint.h"
#include "send.h"
#include "store.h"

#include "access/xact.h"
#include "utils/memutils.h"

static RetlRun *current_run = NULL; /* the run an error is charged to */

/*
 * The name of a phase, for messages.
 */
static const char *
phase_name(RetlRunPhase phase)
{
	switch (phase)
	{
		case RETL_RUN_CLAIMED:
			return "claimed";
		case RETL_RUN_RETRYING:
			return "retrying";
		case RETL_RUN_READING:
			return "reading";
		case RETL_RUN_DELETING:
			return "deleting";
		case RETL_RUN_DRAINING:
			return "draining";
		case RETL_RUN_FINISHING:
			return "finishing";
	}
	return "unknown";
}

/*
 * The phase that follows the run's phase when that phase is done: failed
 * events lead to the source, the source to deletions (diff runs) or to
 * draining, draining to finishing.  Finishing is the last phase.
 */
static RetlRunPhase
phase_after(RetlRun *run)
{
	switch (run->phase)
	{
		case RETL_RUN_CLAIMED:
			return run->retry_failed ? RETL_RUN_RETRYING : RETL_RUN_READING;
		case RETL_RUN_RETRYING:
			return RETL_RUN_READING;
		case RETL_RUN_READING:
			return run->diff ? RETL_RUN_DELETING : RETL_RUN_DRAINING;
		case RETL_RUN_DELETING:
			return RETL_RUN_DRAINING;
		case RETL_RUN_DRAINING:
		case RETL_RUN_FINISHING:
			break;
	}
	return RETL_RUN_FINISHING;
}

/*
 * Moves a run to its next phase: the one after its phase, or draining from
 * any phase before it (a stop, a failure).  Nothing else assigns
 * run->phase, so a move the machine does not have is a bug: it raises.
 */
static void
set_phase(RetlRun *run, RetlRunPhase next)
{
	if (run->phase == RETL_RUN_FINISHING ||
		(next != phase_after(run) &&
		 !(next == RETL_RUN_DRAINING && run->phase < RETL_RUN_DRAINING)))
		elog(ERROR, "retl run " INT64_FORMAT " cannot move from phase %s to %s",
			 run->id, phase_name(run->phase), phase_name(next));
	ereport(DEBUG1,
			(errmsg("retl run " INT64_FORMAT " of sync \"%s\": %s -> %s",
					run->id, run->sync_name, phase_name(run->phase),
					phase_name(next))));
	run->phase = next;
}

/*
 * Starts a claimed run: it re-sends its failed events first when it was
 * asked to, else it reads its source.
 */
void
retl_run_start(RetlRun *run)
{
	set_phase(run, phase_after(run));
}

/*
 * Reads one page of the run's phase (retl_reader_page), and moves the run
 * on when that phase has nothing more to read.  A run that has read all
 * closes its last batch and its reader, and drains.
 */
static void
read_page(RetlRun *run)
{
	if (!retl_reader_page(run))
		return;
	set_phase(run, phase_after(run));
	if (run->phase == RETL_RUN_DRAINING)
	{
		retl_encode_close_batch(run);
		retl_reader_close(run);
	}
}

/*
 * Records a batch as failed for good.  A rejection of single events leaves
 * the run going; anything else fails the run: it stops reading at once
 * (stop_reading), and the events it has not sent are left to the next
 * run, which resumes from the checkpoint.
 */
static void
batch_failed(RetlBatch *b, const char *error, bool run_fails)
{
	RetlRun    *run = b->run;

	retl_store_fail_batch(b, error, NULL, NULL);
	run->events_failed += b->nevents;
	run->dirty = true;
	retl_ckpt_ack_done(run, b->ack, 0, b->nevents);
	if (run_fails && !run->failed)
	{
		run->failed = true;
		run->error = MemoryContextStrdup(run->cxt, error);
	}
	retl_batch_free(b);
}

/*
 * Forgets events that were sent but will not be delivered by this run
 * (stop, drain timeout): the next run sends them again.
 */
static void
discard_batch(RetlBatch *b)
{
	b->run->events_sent -= b->nevents;
	b->run->dirty = true;
	retl_batch_free(b);
}

/*
 * Records the events of a batch as delivered: the catalog, and for diff
 * runs their fingerprints.
 */
static void
store_delivered(RetlBatch *b)
{
	retl_store_batch_delivered(b);
	if (b->run->diff)
		retl_diff_acked(b);
}

/*
 * Queues a batch to be sent again once its retry delay has passed.
 */
static void
wait_retry(RetlBatch *b)
{
	RetlRun    *run = b->run;

	dlist_push_tail(&run->waiting, &b->node);
	run->nwaiting++;
}

/*
 * The events of a batch whose outcome is the given one, as a new batch
 * that shares its ack.  pick is scratch space of nevents entries.
 */
static RetlBatch *
outcome_part(RetlBatch *b, const RetlSendOutcomes *o, RetlOutcome which,
			 bool *pick)
{
	for (int i = 0; i < b->nevents; i++)
		pick[i] = o->outcomes[i] == which;
	return retl_batch_part(b, 0, b->nevents, pick);
}

/*
 * Applies the per-event outcomes the destination's answer gave
 * (retl_send_outcomes): accepted events are delivered, rejected ones go
 * to retl.failed_events with the destination's reason, and throttled ones
 * go again later as a part of their own, waiting at least the batch's
 * retry_after_s (the kind's wait), unless the run is stopping or failed (the next run sends
 * them).  Then the batch is done.
 */
static void
apply_outcomes(RetlBatch *b, const RetlSendOutcomes *o)
{
	RetlRun    *run = b->run;
	const int  *n = o->count;
	bool	   *pick = palloc0(b->nevents * sizeof(bool));

	if (n[RETL_OUTCOME_OK] > 0)
	{
		RetlBatch  *ok = outcome_part(b, o, RETL_OUTCOME_OK, pick);

		store_delivered(ok);
		retl_batch_free(ok);
	}
	if (n[RETL_OUTCOME_FAIL] > 0)
		retl_store_fail_batch(b, retl_send_error(b), o->outcomes, o->reasons);
	if (n[RETL_OUTCOME_RETRY] > 0)
	{
		RetlBatch  *again = outcome_part(b, o, RETL_OUTCOME_RETRY, pick);

		again->attempts = b->attempts;
		again->retry_after_s = b->retry_after_s;
		again->retry_at = GetCurrentTimestamp() + retl_send_retry_delay_ms(again) * 1000;
		b->ack->parts++;
		if (run->stopping || run->failed)
			discard_batch(again);	/* not delivered: the next run sends it */
		else
			wait_retry(again);
	}
	run->events_succeeded += n[RETL_OUTCOME_OK];
	run->events_failed += n[RETL_OUTCOME_FAIL];
	retl_ckpt_ack_done(run, b->ack, n[RETL_OUTCOME_OK], n[RETL_OUTCOME_FAIL]);
	retl_batch_free(b);
}

/*
 * Splits a rejected batch in halves (retl_batch_split), sent next.  Its
 * events are counted again when the halves go.
 */
static void
split_batch(RetlBatch *b)
{
	RetlRun    *run = b->run;
	RetlBatchHalves halves = retl_batch_split(b);

	run->events_sent -= b->nevents; /* counted again when the halves go */
	dlist_push_head(&run->ready, &halves.right->node);
	dlist_push_head(&run->ready, &halves.left->node);
	run->nready += 2;
	retl_batch_free(b);
}

/*
 * Handles a finished request: per-event outcomes, success, retry later,
 * split, or failure.
 */
static void
batch_done(RetlBatch *b)
{
	RetlRun    *run = b->run;
	bool		ok = b->result == CURLE_OK && b->http_status >= 200 &&
		b->http_status < 300;
	bool		retryable = b->result != CURLE_OK || b->http_status == 429 ||
		b->http_status == 408 || b->http_status >= 500;
	RetlSendOutcomes outcomes;

	dlist_delete(&b->node);
	run->in_flight--;
	run->dirty = true;
	if (retl_send_outcomes(b, &outcomes))
		apply_outcomes(b, &outcomes);
	else if (ok)
	{
		store_delivered(b);
		run->events_succeeded += b->nevents;
		retl_ckpt_ack_done(run, b->ack, b->nevents, 0);
		retl_batch_free(b);
	}
	else if (b->blocked)
		batch_failed(b, retl_send_error(b), true);
	else if (retryable && (run->stopping || run->failed))
		discard_batch(b);		/* the next run sends it */
	else if (retryable && b->attempts < run->dest.max_attempts)
	{
		b->retry_at = GetCurrentTimestamp() +
			retl_send_retry_delay_ms(b) * 1000;
		wait_retry(b);
	}
	else if (!retryable && retl_send_rejects_events(b->http_status) &&
			 b->nevents > 1)
		split_batch(b);
	else
		batch_failed(b, retl_send_error(b),
					 retryable || !retl_send_rejects_events(b->http_status));
}

/*
 * Handles a finished request (batch_done), charging an error meanwhile to
 * the batch's run.
 */
void
retl_run_batch_done(RetlBatch *b)
{
	current_run = b->run;
	batch_done(b);
	current_run = NULL;
}

/*
 * Starts sending a batch (retl_transport_send).  When curl refused an
 * option of its request, the batch is never sent: it stops counting in
 * retl_pending_bytes, and the run fails with the refusal
 * (retl_transport_refused raises it).
 */
static void
send_batch(RetlBatch *b)
{
	const char *option = NULL;
	CURLcode	rc = retl_transport_send(b, &option);

	if (rc != CURLE_OK)
	{
		retl_batch_uncount(b);
		retl_transport_refused(b, option, rc);
	}
}

/*
 * Sends what can be sent: due retries first, then new batches, up to
 * max_in_flight requests and within the checkpoint's window
 * (retl_ckpt_may_send).  A failed run sends nothing more.
 */
static void
dispatch(RetlRun *run)
{
	TimestampTz now = GetCurrentTimestamp();
	dlist_mutable_iter iter;

	if (run->failed)
		return;
	dlist_foreach_modify(iter, &run->waiting)
	{
		RetlBatch  *b = dlist_container(RetlBatch, node, iter.cur);

		if (run->in_flight >= run->dest.max_in_flight)
			return;
		if (b->retry_at > now)
			continue;
		dlist_delete(&b->node);
		run->nwaiting--;
		send_batch(b);
		dlist_push_tail(&run->inflight, &b->node);
		run->in_flight++;
	}
	while (run->in_flight < run->dest.max_in_flight &&
		   !dlist_is_empty(&run->ready))
	{
		RetlBatch  *b = dlist_container(RetlBatch, node,
										dlist_head_node(&run->ready));

		if (!retl_ckpt_may_send(run, b))
			break;
		dlist_delete(&b->node);
		run->nready--;
		retl_ckpt_sent(run, b);
		send_batch(b);
		dlist_push_tail(&run->inflight, &b->node);
		run->in_flight++;
		run->events_sent += b->nevents;
		run->dirty = true;
	}
}

/*
 * Stops reading and drops what is not in flight, for a stopped or failed
 * run: the next run resumes from the checkpoint and sends those events
 * (their acks stay open, so the checkpoint stops before them).  Batches
 * waiting for a retry are dropped too; requests in flight finish.
 */
static void
stop_reading(RetlRun *run)
{
	dlist_mutable_iter iter;

	if (run->phase < RETL_RUN_DRAINING)
	{
		set_phase(run, RETL_RUN_DRAINING);
		retl_reader_close(run);
	}
	if (run->building)
	{
		retl_batch_free(run->building);
		run->building = NULL;
	}
	dlist_foreach_modify(iter, &run->ready)
	{
		RetlBatch  *b = dlist_container(RetlBatch, node, iter.cur);

		dlist_delete(iter.cur);
		/* split halves were counted as sent before the split */
		retl_batch_free(b);
	}
	run->nready = 0;
	run->window_full = false;
	if (run->stopping || run->failed)
	{
		dlist_foreach_modify(iter, &run->waiting)
		{
			dlist_delete(iter.cur);
			discard_batch(dlist_container(RetlBatch, node, iter.cur));
		}
		run->nwaiting = 0;
	}
}

/*
 * Reads and sends for one run, and tells whether it is finished.
 */
bool
retl_run_advance(RetlRun *run)
{
	TimestampTz start = GetCurrentTimestamp();

	current_run = run;
	if (run->stopping || run->failed)
		stop_reading(run);
	/*
	 * Read while fewer than 2 x max_in_flight batches are pending (memory
	 * stays flat even when the destination is down) and all runs together
	 * hold less than PENDING_CAP of batch bodies (a run with nothing ready
	 * may always read, so none starves), but come back to the network and
	 * the queue at least 5 times a second.  Fresh memory is expensive:
	 * page faults cost more than the HTTP work with 50 runs at once.
	 */
	while (run->phase < RETL_RUN_DRAINING &&
		   run->nready + run->nwaiting + run->in_flight < 2 * run->dest.max_in_flight &&
		   (retl_pending_bytes < PENDING_CAP || run->nready == 0) &&
		   !TimestampDifferenceExceeds(start, GetCurrentTimestamp(), 200))
	{
		read_page(run);
		/* an idle pipeline sends its first batch at once */
		if (run->in_flight == 0 && run->nready > 0)
			break;
	}
	dispatch(run);
	current_run = NULL;
	return run->phase == RETL_RUN_DRAINING && run->building == NULL &&
		run->nready == 0 &&
		dlist_is_empty(&run->waiting) && run->in_flight == 0;
}

/*
 * Aborts the requests of a run whose drain timed out; the next run sends
 * their events again.
 */
void
retl_run_drain_timeout(RetlRun *run)
{
	dlist_mutable_iter iter;

	if (!run->stopping || run->in_flight == 0 ||
		GetCurrentTimestamp() < run->drain_deadline)
		return;
	ereport(LOG,
			(errmsg("retl run " INT64_FORMAT " of sync \"%s\": drain timeout, aborting %d request(s)",
					run->id, run->sync_name, run->in_flight)));
	dlist_foreach_modify(iter, &run->inflight)
	{
		dlist_delete(iter.cur);
		run->in_flight--;
		discard_batch(dlist_container(RetlBatch, node, iter.cur));
	}
}

/*
 * Ends a run: records its outcome and frees everything it holds.  An error
 * meanwhile is charged to the run, which then ends failed (finish_failed).
 */
void
retl_run_finish(RetlRun *run)
{
	current_run = run;
	set_phase(run, RETL_RUN_FINISHING);
	retl_reader_close(run);
	retl_store_finish(run);
	dlist_delete(&run->node);
	ereport(DEBUG1,
			(errmsg("retl run " INT64_FORMAT " of sync \"%s\" ended",
					run->id, run->sync_name)));
	MemoryContextDelete(run->cxt);
	current_run = NULL;
}

/*
 * Ends a run whose end could not be recorded (retl_store_finish raised
 * an error, e.g. a trigger or the notification): it is marked failed with
 * that error, so that it is never left active (and retl_stop or
 * retl_drop_sync never leave it 'stopping').  If even that fails, the run
 * stays active in the catalog, and the next worker start requeues it.
 */
static void
finish_failed(RetlRun *run, const char *message)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		retl_store_finish_failed(run, message);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errmsg("retl run " INT64_FORMAT " of sync \"%s\": its end could not be recorded; it is requeued when the worker starts again",
						run->id, run->sync_name)));
	}
	PG_END_TRY();
	dlist_delete(&run->node);
	MemoryContextDelete(run->cxt);
}

/*
 * Charges an error caught by the main loop to the run that raised it: the
 * run fails, its reading stops, and its requests in flight finish.
 */
void
retl_run_fail_current(ErrorData *edata)
{
	RetlRun    *run = current_run ? current_run : retl_store_writing;

	current_run = NULL;
	retl_store_writing = NULL;
	if (run == NULL)
		return;
	if (run->phase == RETL_RUN_FINISHING)
	{
		/* its end could not be recorded: it ends failed, with the error */
		finish_failed(run, edata->message);
		return;
	}
	if (!run->failed)
	{
		run->failed = true;
		run->error = MemoryContextStrdup(run->cxt, edata->message);
	}
	/* an error is not retried within the run: stop reading, let requests end */
	if (run->phase < RETL_RUN_DRAINING)
		set_phase(run, RETL_RUN_DRAINING);
	if (run->building)
	{
		/*
		 * Its events were never sent: its ack stays open, so the checkpoint
		 * stops before them (and keeps sent = succeeded + failed).  A run
		 * resumed from that checkpoint after a crash sends them, and so
		 * does the next run: the cursor does not move past a failed run.
		 */
		retl_batch_free(run->building);
		run->building = NULL;
	}
}
