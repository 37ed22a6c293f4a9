/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The retl launcher: starts one worker per database that has work.
 *
 * At start-up it starts a worker in every database that accepts
 * connections, so that runs queued before a restart resume; a worker that
 * finds no retl extension exits at once.  Afterwards it starts workers on
 * request (a backend that queued a run) and restarts workers that died
 * with an error.  With no free worker slot it logs at a limited rate and
 * retries at the next nap, never FATAL-looping (DESIGN.md, "Processes").
 *
 *-------------------------------------------------------------------------
 */
#include "retl.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/tableam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

typedef struct LauncherDb
{
	Oid			dboid;
	BackgroundWorkerHandle *handle;
	bool		restart;		/* start again at the next chance */
	TimestampTz last_start;		/* for a restart backoff of one second */
	bool		crashed;		/* restarting after an error: back off */
} LauncherDb;

static LauncherDb dbs[RETL_MAX_DATABASES];
static TimestampTz last_no_slot_log = 0;
static TimestampTz last_full_log = 0;

/* databases of the start-up scan that found no free record yet */
static List *startup_pending = NIL;

/*
 * Returns the launcher's record of a database, creating it if needed.
 */
static LauncherDb *
launcher_db(Oid dboid)
{
	for (int i = 0; i < RETL_MAX_DATABASES; i++)
		if (dbs[i].dboid == dboid)
			return &dbs[i];
	for (int i = 0; i < RETL_MAX_DATABASES; i++)
		if (dbs[i].dboid == InvalidOid)
		{
			dbs[i].dboid = dboid;
			return &dbs[i];
		}
	return NULL;
}

/*
 * Marks the databases of the start-up scan for a worker start, as many as
 * there are free records; the others wait in startup_pending for records
 * that workers exiting with no work free (reap_workers).
 */
static void
start_pending_databases(void)
{
	while (startup_pending != NIL)
	{
		LauncherDb *ldb = launcher_db(linitial_oid(startup_pending));

		if (ldb == NULL)
			break;
		ldb->restart = true;
		startup_pending = list_delete_first(startup_pending);
	}
}

/*
 * Lists every database that accepts connections for a worker start, so
 * that runs queued before a restart resume.  Reads the shared catalog
 * pg_database, which needs no database connection.
 */
static void
request_all_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	MemoryContext old;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (!db->datallowconn || db->datistemplate)
			continue;
		old = MemoryContextSwitchTo(TopMemoryContext);
		startup_pending = lappend_oid(startup_pending, db->oid);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	start_pending_databases();
}

/*
 * Starts the worker of one database.  Returns false when no worker slot is
 * free, so that the caller retries later.
 */
static bool
start_worker(LauncherDb *ldb)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	worker.bgw_notify_pid = MyProcPid;
	worker.bgw_main_arg = ObjectIdGetDatum(ldb->dboid);
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "retl");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "retl_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "retl worker %u", ldb->dboid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "retl worker");
	if (!RegisterDynamicBackgroundWorker(&worker, &ldb->handle))
	{
		int			asked;

		ldb->handle = NULL;
		/* idle workers of other databases make room at once */
		retl_set_db_waiting(ldb->dboid, true);
		asked = retl_ask_idle_to_leave();
		if (TimestampDifferenceExceeds(last_no_slot_log,
									   GetCurrentTimestamp(), 60000))
		{
			ereport(LOG,
					(errmsg("retl launcher could not start a worker for database %u: no free background worker slot",
							ldb->dboid),
					 errdetail("Asked %d idle retl worker(s) to exit; databases waiting show in retl.workers.",
							   asked),
					 errhint("Raise max_worker_processes.")));
			last_no_slot_log = GetCurrentTimestamp();
		}
		return false;
	}
	return true;
}

/*
 * Forgets workers that have exited.  A worker that exited with an error is
 * restarted; one that exited cleanly (idle, or no extension) is started
 * again only on request, and its database's slot and record are freed for
 * other databases.
 */
static void
reap_workers(void)
{
	for (int i = 0; i < RETL_MAX_DATABASES; i++)
	{
		LauncherDb *ldb = &dbs[i];
		pid_t		pid;
		BgwHandleStatus status;

		if (ldb->handle == NULL)
			continue;
		status = GetBackgroundWorkerPid(ldb->handle, &pid);
		if (status != BGWH_STOPPED)
			continue;
		pfree(ldb->handle);
		ldb->handle = NULL;
		if (!ldb->restart && retl_release_db(ldb->dboid))
			memset(ldb, 0, sizeof(LauncherDb));
	}
	start_pending_databases();
}

/*
 * Does the database still exist?  A request for a dropped database is
 * forgotten instead of failing to connect once a second.
 */
static bool
database_exists(Oid dboid)
{
	bool		exists;

	StartTransactionCommand();
	exists = SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(dboid));
	CommitTransactionCommand();
	return exists;
}

/*
 * Starts the workers that were requested and are not running.
 */
static void
start_requested_workers(void)
{
	Oid			dboid;
	bool		crashed;

	while ((dboid = retl_next_requested_db(&crashed)) != InvalidOid)
	{
		LauncherDb *ldb = launcher_db(dboid);

		if (ldb != NULL)
		{
			ldb->restart = true;
			ldb->crashed = crashed;
		}
		else if (TimestampDifferenceExceeds(last_full_log,
											GetCurrentTimestamp(), 60000))
		{
			/* cannot happen while records match slots; say so if it does */
			ereport(LOG,
					(errmsg("retl launcher has no free record for database %u", dboid)));
			last_full_log = GetCurrentTimestamp();
		}
	}
	for (int i = 0; i < RETL_MAX_DATABASES; i++)
	{
		LauncherDb *ldb = &dbs[i];

		if (ldb->dboid == InvalidOid || !ldb->restart || ldb->handle != NULL)
			continue;
		if (ldb->crashed &&
			!TimestampDifferenceExceeds(ldb->last_start,
										GetCurrentTimestamp(), 1000))
			continue;
		ldb->crashed = false;
		ldb->last_start = GetCurrentTimestamp();
		if (!database_exists(ldb->dboid))
		{
			/* dropped: its slot and record go to other databases */
			(void) retl_release_db(ldb->dboid);
			memset(ldb, 0, sizeof(LauncherDb));
			continue;
		}
		if (start_worker(ldb))
			ldb->restart = false;
	}
}

/*
 * Launcher entry point.
 */
void
retl_launcher_main(Datum arg)
{
	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	if (IsBinaryUpgrade)
		proc_exit(0);
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("retl launcher");
	retl_launcher_attach();
	request_all_databases();

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		reap_workers();
		/* a request that found no slot: look at every database again */
		if (startup_pending == NIL && retl_take_overflow())
			request_all_databases();
		start_requested_workers();
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(retl_naptime_ms, 1000), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
