/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The per-database worker: drives every active run of its database
 *	  through one libcurl multi handle.
 *
 * Each turn of the loop claims queued runs, notices stop requests, reads
 * pages of the sources while fewer than 2 x max_in_flight batches wait,
 * keeps max_in_flight requests busy per run, handles finished requests
 * (success, retry with backoff, or failure), records progress at most twice
 * a second and ends the runs that are done.  Errors are caught per turn,
 * like bgwriter.c does: the run that raised the error fails, the others go
 * on, and no connection is dropped.
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include <malloc.h>
#include <math.h>

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "common/pg_prng.h"
#include "libpq/pqsignal.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/ps_status.h"

#define CONTROL_POLL_MS 500
#define FLUSH_MS 500			/* counters */
#define CKPT_FLUSH_MS 50		/* checkpoints: bounds re-sends after a crash */
#define RETRY_BASE_MS 250
#define IDLE_POLL_MS 1000		/* an idle worker still notices DROP DATABASE */
#define IDLE_EXIT_MS 60000		/* keep the connection warm for the next run */

static dlist_head runs = DLIST_STATIC_INIT(runs);
static RetlRun *current_run = NULL; /* the run an error is charged to */
static volatile sig_atomic_t got_sigusr1 = false;
static TimestampTz last_prune = 0;	/* history pruning: once a minute */
static Oid	extension_oid = InvalidOid;	/* the catalog this worker serves */

/*
 * SIGUSR1 handler: PostgreSQL's procsignal handling plus a latch wake-up,
 * so that DROP DATABASE and similar requests are seen at once.
 */
static void
worker_sigusr1(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigusr1 = true;
	procsignal_sigusr1_handler(postgres_signal_arg);
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * Computes the delay before the next attempt: exponential backoff with
 * full jitter, but never less than the Retry-After the server asked for.
 */
static long
retry_delay_ms(RetlBatch *b)
{
	double		cap = Min((double) b->run->dest.max_backoff_ms,
						  RETRY_BASE_MS * pow(2.0, Min(b->attempts, 20)));
	long		delay = (long) (pg_prng_double(&pg_global_prng_state) * cap);

	if (b->retry_after_s > 0)
		delay = Max(delay, b->retry_after_s * 1000);
	return Max(delay, 10);
}

/*
 * A readable reason for a failed request, without the URL (it may carry
 * credentials).
 */
static char *
batch_error(RetlBatch *b)
{
	if (b->blocked && b->blocked_by &&
		strcmp(b->blocked_by, "retl.deny_networks") == 0)
		return psprintf("the destination resolved to %s, in a network that retl.deny_networks refuses",
						b->blocked_addr[0] ? b->blocked_addr : "an address");
	if (b->blocked)
		return psprintf("the destination resolved to %s, a link-local or metadata address, which retl.deny_private_networks refuses",
						b->blocked_addr[0] ? b->blocked_addr : "an address");
	if (b->result != CURLE_OK)
		return psprintf("request failed after %d attempt(s): %s", b->attempts,
						b->errbuf[0] ? b->errbuf : curl_easy_strerror(b->result));
	if (b->http_status >= 300 && b->http_status < 400)
		return psprintf("destination answered HTTP %ld, a redirect to \"%s\", which retl does not follow: set the destination's url to the final address",
						b->http_status, b->redirect[0] ? b->redirect : "(no Location)");
	return psprintf("destination answered HTTP %ld after %d attempt(s)%s%.200s",
					b->http_status, b->attempts, b->resp ? ": " : "",
					b->resp ? b->resp : "");
}

/*
 * Does this status reject some events of the batch (so that splitting the
 * batch isolates them), rather than the whole destination?
 */
static bool
status_rejects_events(long status)
{
	return status == 400 || status == 413 || status == 422;
}

/*
 * Applies per-event outcomes that the destination kind read from the
 * response: accepted events are done, throttled ones are sent again later
 * (only them: Braze and Kinesis have no dedupe), rejected ones go to
 * retl.failed_events with the destination's reason.  Returns false when
 * the kind found no per-event information in the response.
 */
static bool
batch_outcomes(RetlBatch *b)
{
	RetlRun    *run = b->run;
	RetlDest   *d = &run->dest;
	RetlOutcome *out = palloc0(b->nevents * sizeof(RetlOutcome));
	char	  **reasons = palloc0(b->nevents * sizeof(char *));
	bool	   *pick = palloc0(b->nevents * sizeof(bool));
	int			n[3] = {0, 0, 0};

	if (d->kind->parse == NULL || b->result != CURLE_OK ||
		!d->kind->parse(d, b, b->http_status, b->resp ? b->resp : "", out, reasons))
		return false;
	for (int i = 0; i < b->nevents; i++)
		n[out[i]]++;
	if (n[RETL_OUTCOME_RETRY] > 0 && b->attempts >= d->max_attempts)
	{
		for (int i = 0; i < b->nevents; i++)
			if (out[i] == RETL_OUTCOME_RETRY)
			{
				out[i] = RETL_OUTCOME_FAIL;
				reasons[i] = psprintf("still throttled after %d attempts%s%s",
									  b->attempts, reasons[i] ? ": " : "",
									  reasons[i] ? reasons[i] : "");
			}
		n[RETL_OUTCOME_FAIL] += n[RETL_OUTCOME_RETRY];
		n[RETL_OUTCOME_RETRY] = 0;
	}
	for (int i = 0; i < b->nevents; i++)
		pick[i] = out[i] == RETL_OUTCOME_OK;
	if (n[RETL_OUTCOME_OK] > 0)
	{
		RetlBatch  *ok = retl_batch_part(b, 0, b->nevents, pick);

		retl_catalog_batch_delivered(ok);
		if (run->diff)
			retl_diff_acked(ok);
		retl_batch_free(ok);
	}
	if (n[RETL_OUTCOME_FAIL] > 0)
		retl_catalog_fail_batch(b, batch_error(b), out, reasons);
	if (n[RETL_OUTCOME_RETRY] > 0)
	{
		RetlBatch  *again;

		for (int i = 0; i < b->nevents; i++)
			pick[i] = out[i] == RETL_OUTCOME_RETRY;
		again = retl_batch_part(b, 0, b->nevents, pick);
		again->attempts = b->attempts;
		again->retry_after_s = b->retry_after_s;
		again->retry_at = GetCurrentTimestamp() + retry_delay_ms(again) * 1000;
		b->ack->parts++;
		if (run->stopping || run->failed)
		{
			/* not delivered: the next run sends it */
			run->events_sent -= again->nevents;
			retl_batch_free(again);
		}
		else
		{
			dlist_push_tail(&run->waiting, &again->node);
			run->nwaiting++;
		}
	}
	run->events_succeeded += n[RETL_OUTCOME_OK];
	run->events_failed += n[RETL_OUTCOME_FAIL];
	retl_ckpt_ack_done(run, b->ack, n[RETL_OUTCOME_OK], n[RETL_OUTCOME_FAIL]);
	retl_batch_free(b);
	return true;
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

	retl_catalog_fail_batch(b, error, NULL, NULL);
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
 * Handles a finished request: success, retry later, split, or failure.
 */
static void
batch_done(RetlBatch *b)
{
	RetlRun    *run = b->run;
	bool		ok = b->result == CURLE_OK && b->http_status >= 200 &&
		b->http_status < 300;
	bool		retryable = b->result != CURLE_OK || b->http_status == 429 ||
		b->http_status == 408 || b->http_status >= 500;

	dlist_delete(&b->node);
	run->in_flight--;
	run->dirty = true;
	if (batch_outcomes(b))
		return;
	if (ok)
	{
		retl_catalog_batch_delivered(b);
		if (run->diff)
			retl_diff_acked(b);
		run->events_succeeded += b->nevents;
		retl_ckpt_ack_done(run, b->ack, b->nevents, 0);
		retl_batch_free(b);
	}
	else if (b->blocked)
		batch_failed(b, batch_error(b), true);
	else if (retryable && (run->stopping || run->failed))
		retl_batch_discard(b);	/* the next run sends it */
	else if (retryable && b->attempts < run->dest.max_attempts)
	{
		b->retry_at = GetCurrentTimestamp() + retry_delay_ms(b) * 1000;
		dlist_push_tail(&run->waiting, &b->node);
		run->nwaiting++;
	}
	else if (!retryable && status_rejects_events(b->http_status) && b->nevents > 1)
		retl_batch_split(b);
	else
		batch_failed(b, batch_error(b),
					 retryable || !status_rejects_events(b->http_status));
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
		retl_transport_send(b);
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
		retl_transport_send(b);
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

	if (!run->reading_done)
	{
		run->reading_done = true;
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
			retl_batch_discard(dlist_container(RetlBatch, node, iter.cur));
		}
		run->nwaiting = 0;
	}
}

/*
 * Reads and sends for one run, and tells whether it is finished.
 */
static bool
advance_run(RetlRun *run)
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
	while (!run->reading_done &&
		   run->nready + run->nwaiting + run->in_flight < 2 * run->dest.max_in_flight &&
		   (retl_pending_bytes < PENDING_CAP || run->nready == 0) &&
		   !TimestampDifferenceExceeds(start, GetCurrentTimestamp(), 200))
	{
		retl_reader_page(run);
		/* an idle pipeline sends its first batch at once */
		if (run->in_flight == 0 && run->nready > 0)
			break;
	}
	dispatch(run);
	current_run = NULL;
	return run->reading_done && run->building == NULL && run->nready == 0 &&
		dlist_is_empty(&run->waiting) && run->in_flight == 0;
}

/*
 * Aborts the requests of a run whose drain timed out; the next run sends
 * their events again.
 */
static void
drain_timeout(RetlRun *run)
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
		retl_batch_discard(dlist_container(RetlBatch, node, iter.cur));
	}
}

/*
 * Ends a run: records its outcome and frees everything it holds.
 */
static void
finish_run(RetlRun *run)
{
	run->finishing = true;
	retl_reader_close(run);
	retl_catalog_finish(run);
	dlist_delete(&run->node);
	ereport(DEBUG1,
			(errmsg("retl run " INT64_FORMAT " of sync \"%s\" ended",
					run->id, run->sync_name)));
	MemoryContextDelete(run->cxt);
}

/*
 * Handles every request that finished since the last turn.
 */
static void
collect_done(void)
{
	RetlBatch  *b;

	while ((b = retl_transport_next_done()) != NULL)
	{
		current_run = b->run;
		batch_done(b);
		current_run = NULL;
	}
}

/*
 * Claims queued runs and notices stop requests.
 */
static void
poll_control(void)
{
	RetlRun    *run;

	if (!dlist_is_empty(&runs))
		retl_catalog_poll_stops(&runs);
	while ((run = retl_catalog_claim()) != NULL)
	{
		dlist_push_tail(&runs, &run->node);
		ereport(DEBUG1,
				(errmsg("retl run " INT64_FORMAT " of sync \"%s\" started",
						run->id, run->sync_name)));
	}
}

/*
 * Shows the syncs being run in pg_stat_activity.
 */
static void
report_activity(void)
{
	StringInfoData buf;
	dlist_iter	iter;

	if (dlist_is_empty(&runs))
	{
		pgstat_report_activity(STATE_IDLE, NULL);
		return;
	}
	initStringInfo(&buf);
	appendStringInfoString(&buf, "retl sync");
	dlist_foreach(iter, &runs)
		appendStringInfo(&buf, " %s",
						 dlist_container(RetlRun, node, iter.cur)->sync_name);
	pgstat_report_activity(STATE_RUNNING, buf.data);
	pfree(buf.data);
}

/*
 * How long the next wait may last: until the next due retry, the next
 * control poll, or the drain deadline.
 */
static long
next_timeout(TimestampTz last_poll)
{
	TimestampTz now = GetCurrentTimestamp();
	long		timeout = dlist_is_empty(&runs) ? IDLE_POLL_MS : CONTROL_POLL_MS;
	dlist_iter	iter;

	timeout = Min(timeout, Max(0, timeout - (now - last_poll) / 1000));
	dlist_foreach(iter, &runs)
	{
		RetlRun    *run = dlist_container(RetlRun, node, iter.cur);
		dlist_iter	w;

		if (run->dirty)
			timeout = Min(timeout, FLUSH_MS);
		if (run->ckpt_dirty)
			timeout = Min(timeout, CKPT_FLUSH_MS);
		/* acknowledgements freed a slot: send or read at once */
		if (run->in_flight < run->dest.max_in_flight && !run->window_full &&
			(run->nready > 0 || !run->reading_done))
			timeout = 0;
		if (run->stopping)
			timeout = Min(timeout, Max(0, (run->drain_deadline - now) / 1000));
		dlist_foreach(w, &run->waiting)
		{
			RetlBatch  *b = dlist_container(RetlBatch, node, w.cur);

			timeout = Min(timeout, Max(0, (b->retry_at - now) / 1000));
		}
	}
	return timeout;
}

/*
 * Exits when the worker has had nothing to do for a while, so that it does
 * not hold a connection (which blocks DROP DATABASE), or at once when the
 * launcher asks idle workers to make room for a database that waits for a
 * background worker slot.  The latch is withdrawn first and the queue
 * checked once more, so a run queued meanwhile is either claimed here or
 * starts a new worker.
 */
static void
maybe_idle_exit(Oid dboid, TimestampTz *idle_since)
{
	bool		leave = retl_worker_idle(dboid, dlist_is_empty(&runs));

	if (!dlist_is_empty(&runs))
	{
		*idle_since = 0;
		return;
	}
	if (*idle_since == 0)
		*idle_since = GetCurrentTimestamp();
	if (!leave &&
		!TimestampDifferenceExceeds(*idle_since, GetCurrentTimestamp(),
									IDLE_EXIT_MS))
		return;
	if (leave)
		ereport(LOG,
				(errmsg("retl worker exiting while idle: another database waits for a background worker slot")));
	retl_worker_detach(dboid);
	poll_control();
	if (dlist_is_empty(&runs))
		proc_exit(0);
	retl_worker_attach(dboid);
	*idle_since = 0;
}

/*
 * One turn of the worker loop.
 */
static void
worker_turn(TimestampTz *last_poll, bool latch_was_set)
{
	dlist_mutable_iter iter;

	if (latch_was_set ||
		TimestampDifferenceExceeds(*last_poll, GetCurrentTimestamp(),
								   dlist_is_empty(&runs) ? IDLE_POLL_MS : CONTROL_POLL_MS))
	{
		if (retl_catalog_extension_oid() != extension_oid)
		{
			/*
			 * DROP EXTENSION took the catalog with it: the runs in memory
			 * belong to nothing any more.  Leaving drops their requests.
			 */
			ereport(LOG, (errmsg("retl worker exiting: extension retl was dropped in this database")));
			proc_exit(0);
		}
		if (retl_catalog_database_locked())
		{
			/* runs left 'running' resume when a worker starts again */
			ereport(LOG, (errmsg("retl worker exiting: the database is being dropped or altered")));
			proc_exit(0);
		}
		poll_control();
		if (TimestampDifferenceExceeds(last_prune, GetCurrentTimestamp(), 60000))
		{
			retl_catalog_prune_history();
			last_prune = GetCurrentTimestamp();
		}
		report_activity();
		*last_poll = GetCurrentTimestamp();
	}
	dlist_foreach_modify(iter, &runs)
	{
		RetlRun    *run = dlist_container(RetlRun, node, iter.cur);

		drain_timeout(run);
		if (advance_run(run))
		{
			current_run = run;
			finish_run(run);
			current_run = NULL;
			report_activity();
		}
	}
	retl_catalog_flush_due(&runs, FLUSH_MS, CKPT_FLUSH_MS);
}

/*
 * Ends a run whose end could not be recorded (retl_catalog_finish raised
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
		retl_catalog_finish_failed(run, message);
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
static void
fail_current_run(ErrorData *edata)
{
	RetlRun    *run = current_run ? current_run : retl_catalog_writing;

	current_run = NULL;
	retl_catalog_writing = NULL;
	if (run == NULL)
		return;
	if (run->finishing)
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
	run->reading_done = true;
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

/*
 * Worker entry point.  bgw_main_arg carries the database OID.
 */
void
retl_worker_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	sigjmp_buf	local_sigjmp_buf;
	TimestampTz last_poll = 0;
	TimestampTz idle_since = 0;
	MemoryContext loop_cxt;
	volatile bool latch_set = true;

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGUSR1, worker_sigusr1);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("application_name", "retl worker", PGC_USERSET, PGC_S_OVERRIDE);
	extension_oid = retl_catalog_extension_oid();
	if (!OidIsValid(extension_oid) || !retl_catalog_version_ok())
		proc_exit(0);
	StartTransactionCommand();
	pgstat_report_appname(psprintf("retl worker %s", get_database_name(dboid)));
	CommitTransactionCommand();
	retl_worker_attach(dboid);
	/*
	 * Batch bodies and page results are large, short-lived allocations;
	 * served by mmap, each would cost page faults and zeroing.  Keep them
	 * on the heap instead (memory stays bounded by the pipeline depth).
	 */
	mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
	mallopt(M_TRIM_THRESHOLD, 128 * 1024 * 1024);
	retl_transport_init();
	retl_catalog_recover();
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "retl worker loop",
									 ALLOCSET_DEFAULT_SIZES);

	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
	{
		ErrorData  *edata;

		/* not using PG_TRY: reset the error context stack by hand */
		error_context_stack = NULL;
		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		fail_current_run(edata);
		FreeErrorData(edata);
		MemoryContextReset(loop_cxt);
		RESUME_INTERRUPTS();
		/* back off a little, so that a persistent error cannot spin */
		pg_usleep(100000L);
	}
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		MemoryContextSwitchTo(loop_cxt);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		worker_turn(&last_poll, latch_set || got_sigusr1);
		got_sigusr1 = false;
		MemoryContextSwitchTo(loop_cxt);
		collect_done();
		retl_catalog_flush_due(&runs, FLUSH_MS, CKPT_FLUSH_MS);
		latch_set = retl_transport_wait(next_timeout(last_poll));
		collect_done();
		retl_catalog_flush_due(&runs, FLUSH_MS, CKPT_FLUSH_MS);
		maybe_idle_exit(dboid, &idle_since);
		MemoryContextReset(loop_cxt);
	}
}
