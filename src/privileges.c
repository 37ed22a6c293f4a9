/*-------------------------------------------------------------------------
 *
 * privileges.c
 *	  Who may use retl, and the one door through which the API writes runs.
 *
 * Using retl takes membership in retl_user (or retl_admin): EXECUTE on
 * the API and access to the catalog are granted to those roles only.  A
 * role without the grant gets PostgreSQL's own "permission denied"
 * (42501); retl adds the hint that names the grant.
 *
 * Nobody but retl writes retl.runs: a queued run's snapshot becomes its
 * sync's cursor, and its checkpoint the sync's counters.  The API's
 * functions run with the caller's privileges, so they queue and stop runs
 * through retl._run_control, which checks, under the caller's row-level
 * security, that the caller manages the sync, and only then runs
 * retl._enqueue_run or retl._stop_run as the owner of the catalog (see
 * src/README, "Privileges").
 *
 *-------------------------------------------------------------------------
 */
#include "retl.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/elog.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(retl_run_control);

static emit_log_hook_type prev_emit_log_hook = NULL;

/*
 * The owner of retl's catalog tables (the role that created the
 * extension): it bypasses their row-level security and may write them.
 */
Oid
retl_privileges_catalog_owner(void)
{
	Oid			nsp = get_namespace_oid("retl", false);
	Oid			runs = get_relname_relid("runs", nsp);
	HeapTuple	tup;
	Oid			owner;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(runs));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "retl: table retl.runs does not exist");
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Raises insufficient_privilege unless the caller manages the sync: as in
 * every API function, that is what row-level security lets it see
 * (its own syncs, its roles', all of them for retl_admin).
 */
static void
check_caller_manages(int64 sync_id)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(sync_id)};

	if (SPI_execute_with_args("SELECT 1 FROM retl.syncs"
							  " WHERE id OPERATOR(pg_catalog.=) $1",
							  1, types, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "retl: could not read retl.syncs");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for sync " INT64_FORMAT, sync_id),
				 errdetail("Only the sync's owner, members of the owner role, members of retl_admin and superusers manage it.")));
}

/*
 * SQL: retl._run_control(action, sync_id, want_full, retry).  'enqueue'
 * queues a run of the sync (or returns the one queued or running), 'stop'
 * stops its active run; returns the run's id or NULL.  The write runs as
 * the catalog's owner, with the caller's security restrictions kept.
 */
Datum
retl_run_control(PG_FUNCTION_ARGS)
{
	Oid			types[3] = {INT8OID, BOOLOID, BOOLOID};
	Datum		values[3];
	char	   *action;
	bool		enqueue;
	Oid			save_userid;
	int			save_sec;
	Datum		result;
	bool		isnull = true;
	int			rc;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("action and sync_id must not be NULL")));
	action = text_to_cstring(PG_GETARG_TEXT_PP(0));
	enqueue = strcmp(action, "enqueue") == 0;
	if (!enqueue && strcmp(action, "stop") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown run action \"%s\"", action),
				 errhint("The action is 'enqueue' or 'stop'.")));
	values[0] = PG_GETARG_DATUM(1);
	values[1] = BoolGetDatum(!PG_ARGISNULL(2) && PG_GETARG_BOOL(2));
	values[2] = BoolGetDatum(!PG_ARGISNULL(3) && PG_GETARG_BOOL(3));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "retl: SPI_connect failed");
	check_caller_manages(PG_GETARG_INT64(1));

	/* an error in between is undone by the (sub)transaction's abort */
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(retl_privileges_catalog_owner(),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE);
	rc = enqueue
		? SPI_execute_with_args("SELECT retl._enqueue_run($1, $2, $3)",
								3, types, values, NULL, false, 1)
		: SPI_execute_with_args("SELECT retl._stop_run($1)",
								1, types, values, NULL, false, 1);
	SetUserIdAndSecContext(save_userid, save_sec);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "retl: could not %s the run", action);
	/* bigint is passed by value: the result outlives SPI_finish */
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
						   &isnull);
	SPI_finish();
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

/*
 * Is this error PostgreSQL's refusal of retl to a role without the grant,
 * EXECUTE on an API function (all are named retl_...)?  message_id is the
 * untranslated format string.  (Table names such as "runs" are too common
 * to tell retl's from others'.)
 */
static bool
is_retl_denial(ErrorData *edata)
{
	if (edata->elevel < ERROR ||
		edata->sqlerrcode != ERRCODE_INSUFFICIENT_PRIVILEGE ||
		edata->hint != NULL || edata->message_id == NULL ||
		edata->message == NULL)
		return false;
	return strcmp(edata->message_id, "permission denied for function %s") == 0 &&
		strstr(edata->message, "retl_") != NULL;
}

/*
 * emit_log_hook: adds to that refusal the hint that names the grant.  No
 * catalog access here (the transaction may be failed): the hint names no
 * role.  EmitErrorReport calls the hook in edata's own memory context.
 */
static void
hint_retl_user(ErrorData *edata)
{
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
	if (!is_retl_denial(edata))
		return;
	edata->hint = MemoryContextStrdup(edata->assoc_context ? edata->assoc_context
									  : ErrorContext,
									  "Using retl takes membership in role retl_user: GRANT retl_user TO <role>;");
}

/*
 * Installs the hint hook.  Called once per process, from _PG_init; a
 * preloaded library's hook is inherited by every backend.
 */
void
retl_privileges_init(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = hint_retl_user;
}
