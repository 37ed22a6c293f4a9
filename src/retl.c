/*-------------------------------------------------------------------------
 *
 * retl.c
 *	  Module entry point: GUCs, the launcher's registration, the shared
 *	  memory that lets backends wake workers, and the commit-time wake-up.
 *
 * Shared memory holds only values that mean the same in every process:
 * database OIDs, pids and latch pointers into PGPROC (DESIGN.md, "Shared
 * memory").  Never a curl handle or a file descriptor.
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"
#include "send.h"
#include "urlpolicy.h"

#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/fmgrprotos.h"
#include "utils/timestamp.h"

PG_MODULE_MAGIC;

int			retl_naptime_ms = 10000;
int			retl_drain_timeout_ms = 30000;
char	   *retl_history_retention = NULL;

/*
 * A database's slot: claimed when a backend asks for its worker, freed when
 * its worker exits with no work or the database is gone, so that more
 * databases than slots can take turns (src/README, "Processes").
 */
typedef struct RetlDbSlot
{
	Oid			dboid;			/* InvalidOid: free slot */
	bool		requested;		/* a backend asked for a worker */
	bool		crashed;		/* ... or its worker died of an error */
	pid_t		worker_pid;		/* 0 when no worker is attached */
	Latch	   *worker_latch;
	bool		idle;			/* the worker has no run */
	bool		leave;			/* the launcher asked the idle worker to exit */
	TimestampTz waiting_since;	/* no background worker slot since, or 0 */
} RetlDbSlot;

typedef struct RetlShared
{
	slock_t		mutex;
	Latch	   *launcher_latch;
	TimestampTz last_full_log;	/* rate limit of "no free database slot" */
	bool		overflow;		/* a request found no free slot */
	RetlDbSlot	dbs[RETL_MAX_DATABASES];
} RetlShared;

static RetlShared *retl_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool wake_pending = false;
static bool xact_callback_registered = false;

void		_PG_init(void);
PG_FUNCTION_INFO_V1(retl_wake);
PG_FUNCTION_INFO_V1(retl_workers);

/*
 * Reserves the shared memory segment.  Runs in the postmaster only when the
 * library is preloaded, which is the only way workers can exist.
 */
static void
retl_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(sizeof(RetlShared));
}

/*
 * Attaches to (or creates and zeroes) the shared state.
 */
static void
retl_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	retl_shared = ShmemInitStruct("retl", sizeof(RetlShared), &found);
	if (!found)
	{
		memset(retl_shared, 0, sizeof(RetlShared));
		SpinLockInit(&retl_shared->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Finds the slot of a database, claiming a free one when asked to.  Must be
 * called with the mutex held.
 */
static RetlDbSlot *
find_slot(Oid dboid, bool create)
{
	RetlDbSlot *free_slot = NULL;

	for (int i = 0; i < RETL_MAX_DATABASES; i++)
	{
		RetlDbSlot *slot = &retl_shared->dbs[i];

		if (slot->dboid == dboid)
			return slot;
		if (slot->dboid == InvalidOid && free_slot == NULL)
			free_slot = slot;
	}
	if (create && free_slot != NULL)
	{
		memset(free_slot, 0, sizeof(RetlDbSlot));
		free_slot->dboid = dboid;
	}
	return create ? free_slot : NULL;
}

/*
 * Asks for the worker of a database to look at its queue: sets the worker's
 * latch when one is attached, otherwise asks the launcher to start one.
 */
void
retl_request_db(Oid dboid)
{
	Latch	   *latch = NULL;
	RetlDbSlot *slot;
	bool		log_full = false;

	if (retl_shared == NULL)
		return;
	SpinLockAcquire(&retl_shared->mutex);
	slot = find_slot(dboid, true);
	if (slot != NULL && slot->worker_latch != NULL)
		latch = slot->worker_latch;
	else
	{
		if (slot != NULL)
			slot->requested = true;
		else
		{
			/* the launcher rescans every database once slots free */
			retl_shared->overflow = true;
			if (TimestampDifferenceExceeds(retl_shared->last_full_log,
										   GetCurrentTimestamp(), 60000))
			{
				retl_shared->last_full_log = GetCurrentTimestamp();
				log_full = true;
			}
		}
		latch = retl_shared->launcher_latch;
	}
	SpinLockRelease(&retl_shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
	/* LOG, not an error: this runs in the commit callback */
	if (log_full)
		ereport(LOG,
				(errmsg("retl: no free database slot for database %u: %d databases have a worker or want one",
						dboid, RETL_MAX_DATABASES),
				 errdetail("The run stays queued; once slots free, the launcher starts a worker in every database, which finds it.")));
}

/*
 * Did a request find no free slot since the last call?  The launcher then
 * rescans every database, as at start-up, since the request itself could
 * not be recorded.
 */
bool
retl_take_overflow(void)
{
	bool		overflow;

	SpinLockAcquire(&retl_shared->mutex);
	overflow = retl_shared->overflow;
	retl_shared->overflow = false;
	SpinLockRelease(&retl_shared->mutex);
	return overflow;
}

/*
 * Frees the slot of a database that has neither a worker nor a request:
 * its worker exited with no work, or the database is gone.  Called by the
 * launcher once it has seen the worker stop.  Returns false when the slot
 * is kept (a request came in meanwhile, or the worker crashed).
 */
bool
retl_release_db(Oid dboid)
{
	RetlDbSlot *slot;
	bool		released = false;

	SpinLockAcquire(&retl_shared->mutex);
	slot = find_slot(dboid, false);
	if (slot == NULL)
		released = true;
	else if (slot->worker_pid == 0 && !slot->requested)
	{
		slot->dboid = InvalidOid;
		released = true;
	}
	SpinLockRelease(&retl_shared->mutex);
	return released;
}

/*
 * Records whether a database waits for a background worker slot (the
 * launcher could not start its worker): shown by retl.workers.
 */
void
retl_set_db_waiting(Oid dboid, bool waiting)
{
	RetlDbSlot *slot;

	SpinLockAcquire(&retl_shared->mutex);
	slot = find_slot(dboid, false);
	if (slot != NULL)
	{
		if (!waiting)
			slot->waiting_since = 0;
		else if (slot->waiting_since == 0)
			slot->waiting_since = GetCurrentTimestamp();
	}
	SpinLockRelease(&retl_shared->mutex);
}

/*
 * Asks idle workers to exit at once, so that databases waiting for a
 * background worker slot get theirs: one idle worker per waiting database
 * that no leaving worker makes room for yet.  Returns how many were asked.
 */
int
retl_ask_idle_to_leave(void)
{
	Latch	   *latches[RETL_MAX_DATABASES];
	int			nlatches = 0;
	int			waiting = 0;
	int			leaving = 0;

	SpinLockAcquire(&retl_shared->mutex);
	for (int i = 0; i < RETL_MAX_DATABASES; i++)
	{
		RetlDbSlot *slot = &retl_shared->dbs[i];

		if (slot->dboid == InvalidOid)
			continue;
		waiting += slot->waiting_since != 0 && slot->worker_pid == 0;
		leaving += slot->leave && slot->worker_pid != 0;
	}
	for (int i = 0; i < RETL_MAX_DATABASES && leaving < waiting; i++)
	{
		RetlDbSlot *slot = &retl_shared->dbs[i];

		if (slot->dboid == InvalidOid || slot->worker_pid == 0 ||
			!slot->idle || slot->leave || slot->worker_latch == NULL)
			continue;
		slot->leave = true;
		latches[nlatches++] = slot->worker_latch;
		leaving++;
	}
	SpinLockRelease(&retl_shared->mutex);
	for (int i = 0; i < nlatches; i++)
		SetLatch(latches[i]);
	return nlatches;
}

/*
 * Publishes whether this worker is idle (has no run), and returns whether
 * the launcher asked it to leave.  A worker with runs is never asked.
 */
bool
retl_worker_idle(Oid dboid, bool idle)
{
	RetlDbSlot *slot;
	bool		leave = false;

	SpinLockAcquire(&retl_shared->mutex);
	slot = find_slot(dboid, false);
	if (slot != NULL && slot->worker_pid == MyProcPid)
	{
		slot->idle = idle;
		if (!idle)
			slot->leave = false;
		leave = slot->leave;
	}
	SpinLockRelease(&retl_shared->mutex);
	return leave;
}

/*
 * Registers the launcher's latch, so that backends can reach it.
 */
void
retl_launcher_attach(void)
{
	SpinLockAcquire(&retl_shared->mutex);
	retl_shared->launcher_latch = MyLatch;
	SpinLockRelease(&retl_shared->mutex);
}

/*
 * Returns a database whose worker was requested and has none attached, and
 * clears the request; InvalidOid when there is none.  *crashed tells
 * whether the request comes from a worker that died of an error.
 */
Oid
retl_next_requested_db(bool *crashed)
{
	Oid			result = InvalidOid;

	SpinLockAcquire(&retl_shared->mutex);
	for (int i = 0; i < RETL_MAX_DATABASES; i++)
	{
		RetlDbSlot *slot = &retl_shared->dbs[i];

		if (slot->dboid != InvalidOid && slot->requested &&
			slot->worker_pid == 0)
		{
			slot->requested = false;
			*crashed = slot->crashed;
			slot->crashed = false;
			result = slot->dboid;
			break;
		}
	}
	SpinLockRelease(&retl_shared->mutex);
	return result;
}

/*
 * Clears this worker's slot when the process exits, however it exits, so
 * that later wake-ups go to the launcher instead of a dead latch.
 */
static void
worker_detach(int code, Datum arg)
{
	RetlDbSlot *slot;
	Latch	   *launcher;

	SpinLockAcquire(&retl_shared->mutex);
	slot = find_slot(DatumGetObjectId(arg), false);
	if (slot != NULL && slot->worker_pid == MyProcPid)
	{
		slot->worker_pid = 0;
		slot->worker_latch = NULL;
		slot->idle = slot->leave = false;
		/* a worker that died of an error is restarted by the launcher */
		if (code != 0)
			slot->requested = slot->crashed = true;
	}
	launcher = retl_shared->launcher_latch;
	SpinLockRelease(&retl_shared->mutex);
	if (code != 0 && launcher != NULL)
		SetLatch(launcher);
}

/*
 * Withdraws this worker's latch before an idle exit, so that wake-ups go to
 * the launcher from now on.  The caller checks its queue once more after
 * this, so a run queued in between is not missed.
 */
void
retl_worker_detach(Oid dboid)
{
	worker_detach(0, ObjectIdGetDatum(dboid));
}

/*
 * Publishes this worker's latch for its database.
 */
void
retl_worker_attach(Oid dboid)
{
	static bool exit_hook = false;
	RetlDbSlot *slot;

	SpinLockAcquire(&retl_shared->mutex);
	slot = find_slot(dboid, true);
	if (slot != NULL)
	{
		slot->worker_pid = MyProcPid;
		slot->worker_latch = MyLatch;
		slot->requested = false;
		slot->idle = slot->leave = false;
		slot->waiting_since = 0;
	}
	SpinLockRelease(&retl_shared->mutex);
	if (slot == NULL)
		ereport(LOG,
				(errmsg("retl worker: no free database slot; wake-ups for this database go to the launcher"),
				 errdetail("%d databases have a worker or want one.", RETL_MAX_DATABASES)));
	if (!exit_hook)
		on_shmem_exit(worker_detach, ObjectIdGetDatum(dboid));
	exit_hook = true;
}

/*
 * Wakes the worker of this database once the transaction that queued work
 * commits; a rolled-back call wakes nothing.  Registered once per process.
 */
static void
retl_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && wake_pending)
		retl_request_db(MyDatabaseId);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_ABORT)
		wake_pending = false;
}

/*
 * SQL: retl._wake().  Marks the current transaction as having queued work.
 */
Datum
retl_wake(PG_FUNCTION_ARGS)
{
	if (retl_shared == NULL)
		ereport(WARNING,
				(errmsg("retl is not loaded through shared_preload_libraries"),
				 errdetail("The run is queued, but no background worker will execute it."),
				 errhint("Add retl to shared_preload_libraries and restart the server.")));
	if (!xact_callback_registered)
	{
		RegisterXactCallback(retl_xact_callback, NULL);
		xact_callback_registered = true;
	}
	wake_pending = true;
	PG_RETURN_VOID();
}

/*
 * SQL: retl._workers().  One row per database slot in use: the database,
 * its worker's pid, its state ('running', 'idle', 'leaving', 'starting'
 * or 'waiting' for a background worker slot) and since when it waits.
 * The slots are copied under the spinlock, then read without it.
 */
Datum
retl_workers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RetlDbSlot	copy[RETL_MAX_DATABASES];

	InitMaterializedSRF(fcinfo, 0);
	if (retl_shared == NULL)
		PG_RETURN_VOID();
	SpinLockAcquire(&retl_shared->mutex);
	memcpy(copy, retl_shared->dbs, sizeof(copy));
	SpinLockRelease(&retl_shared->mutex);
	for (int i = 0; i < RETL_MAX_DATABASES; i++)
	{
		RetlDbSlot *slot = &copy[i];
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};
		const char *state;

		if (slot->dboid == InvalidOid)
			continue;
		state = slot->worker_pid == 0
			? (slot->waiting_since != 0 ? "waiting" : "starting")
			: slot->leave ? "leaving" : slot->idle ? "idle" : "running";
		values[0] = ObjectIdGetDatum(slot->dboid);
		values[1] = Int32GetDatum(slot->worker_pid);
		nulls[1] = slot->worker_pid == 0;
		values[2] = CStringGetTextDatum(state);
		values[3] = TimestampTzGetDatum(slot->waiting_since);
		nulls[3] = slot->waiting_since == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}

/*
 * Checks that retl.history_retention is a valid interval.
 */
static bool
check_interval(char **newval, void **extra, GucSource source)
{
	Interval   *iv;

	if (*newval == NULL)
		return false;
	iv = DatumGetIntervalP(DirectFunctionCall3(interval_in,
											   CStringGetDatum(*newval),
											   ObjectIdGetDatum(InvalidOid),
											   Int32GetDatum(-1)));
	if (iv->month < 0 || iv->day < 0 || iv->time < 0)
	{
		GUC_check_errdetail("retl.history_retention must not be negative.");
		return false;
	}
	return true;
}

/*
 * Defines the GUCs.  They are defined in every process that loads the
 * library, so that SHOW and SET work from any session.
 */
static void
define_gucs(void)
{
	DefineCustomIntVariable("retl.naptime",
							"Time between the launcher's and idle workers' rescans of the run queue.",
							NULL, &retl_naptime_ms, 10000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("retl.drain_timeout",
							"Longest time a stopped run waits for its requests in flight.",
							NULL, &retl_drain_timeout_ms, 30000, 0, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("retl.history_retention",
							   "How long finished runs are kept in retl.runs.",
							   "An interval; the worker deletes older runs in small batches.",
							   &retl_history_retention, "30 days",
							   PGC_SIGHUP, 0, check_interval, NULL, NULL);
	retl_urlpolicy_define_gucs();
	MarkGUCPrefixReserved("retl");
}

/*
 * Registers the launcher, a static worker that starts after recovery and is
 * restarted by the postmaster if it crashes.
 */
static void
register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "retl");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "retl_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "retl launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "retl launcher");
	RegisterBackgroundWorker(&worker);
}

/*
 * Library entry point.
 */
void
_PG_init(void)
{
	define_gucs();
	retl_privileges_init();
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = retl_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = retl_shmem_startup;
	register_launcher();
}
