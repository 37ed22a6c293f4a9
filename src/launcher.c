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
 * Marks every database that accepts connections for a worker start.  Reads
 * the shared catalog pg_database, which needs no database connection.
 */
static void
request_all_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		LauncherDb *ldb;

		if (!db->datallowconn || db->datistemplate)
			continue;
		ldb = launcher_db(db->oid);
		if (ldb != NULL)
			ldb->restart = true;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
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
		ldb->handle = NULL;
		if (TimestampDifferenceExceeds(last_no_slot_log,
									   GetCurrentTimestamp(), 60000))
		{
			ereport(LOG,
					(errmsg("retl launcher could not start a worker for database %u: no free background worker slot",
							ldb->dboid),
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
 * again only on request.
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
	}
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
			ldb->dboid = InvalidOid;
			ldb->restart = false;
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
		start_requested_workers();
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(retl_naptime_ms, 1000), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
