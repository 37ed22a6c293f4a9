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
 * on, and no connection is dropped.  What one run does in a turn, and its
 * phases, are run.c's; this file is the process around them.
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "batch.h"
#include "send.h"
#include "store.h"
#include "setup.h"

#include <malloc.h>

#include "access/xact.h"
#include "commands/dbcommands.h"
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
#define IDLE_POLL_MS 1000		/* an idle worker still notices DROP DATABASE */
#define IDLE_EXIT_MS 60000		/* keep the connection warm for the next run */

static dlist_head runs = DLIST_STATIC_INIT(runs);
static RetlClaimQueue claims;	/* runs claimed, not set up yet */
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
 * Handles every request that finished since the last turn.
 */
static void
collect_done(void)
{
	RetlBatch  *b;

	while ((b = retl_transport_next_done()) != NULL)
		retl_run_batch_done(b);
}

/*
 * Claims queued runs, starts them, and notices stop requests.
 */
static void
poll_control(void)
{
	RetlRun    *run;

	if (!dlist_is_empty(&runs))
		retl_store_poll_stops(&runs);
	while ((run = retl_run_claim(&claims)) != NULL)
	{
		dlist_push_tail(&runs, &run->node);
		ereport(DEBUG1,
				(errmsg("retl run " INT64_FORMAT " of sync \"%s\" started",
						run->id, run->sync_name)));
		retl_run_start(run);
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
			(run->nready > 0 || run->phase < RETL_RUN_DRAINING))
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
		if (retl_store_extension_oid() != extension_oid)
		{
			/*
			 * DROP EXTENSION took the catalog with it: the runs in memory
			 * belong to nothing any more.  Leaving drops their requests.
			 */
			ereport(LOG, (errmsg("retl worker exiting: extension retl was dropped in this database")));
			proc_exit(0);
		}
		if (retl_store_database_locked())
		{
			/* runs left 'running' resume when a worker starts again */
			ereport(LOG, (errmsg("retl worker exiting: the database is being dropped or altered")));
			proc_exit(0);
		}
		poll_control();
		if (TimestampDifferenceExceeds(last_prune, GetCurrentTimestamp(), 60000))
		{
			retl_store_prune_history();
			last_prune = GetCurrentTimestamp();
		}
		report_activity();
		*last_poll = GetCurrentTimestamp();
	}
	dlist_foreach_modify(iter, &runs)
	{
		RetlRun    *run = dlist_container(RetlRun, node, iter.cur);

		retl_run_drain_timeout(run);
		if (retl_run_advance(run))
		{
			retl_run_finish(run);
			report_activity();
		}
	}
	retl_store_flush_due(&runs, FLUSH_MS, CKPT_FLUSH_MS);
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
	extension_oid = retl_store_extension_oid();
	if (!OidIsValid(extension_oid) || !retl_store_version_ok())
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
	retl_store_recover();
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
		retl_run_fail_current(edata);
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
		retl_store_flush_due(&runs, FLUSH_MS, CKPT_FLUSH_MS);
		latch_set = retl_transport_wait(next_timeout(last_poll));
		collect_done();
		retl_store_flush_due(&runs, FLUSH_MS, CKPT_FLUSH_MS);
		maybe_idle_exit(dboid, &idle_since);
		MemoryContextReset(loop_cxt);
	}
}
