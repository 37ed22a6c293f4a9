/*-------------------------------------------------------------------------
 *
 * isolate.c
 *	  Runs a sync owner's code (the functions of its views, its row-level
 *	  security policies, its triggers) in the worker's session without
 *	  letting it reach other owners' data or change the session.
 *
 * One worker session serves every owner of a database.  While an owner's
 * code runs, the worker is that owner under SECURITY_RESTRICTED_OPERATION
 * and SECURITY_LOCAL_USERID_CHANGE, as REFRESH MATERIALIZED VIEW runs a
 * matview's query: the owner's code cannot SET ROLE, create temporary
 * objects, PREPARE, LISTEN, declare WITH HOLD cursors or queue a deferred
 * trigger (one would fire at commit, outside this scope).  Settings it
 * changes (set_config) live in a GUC nest level that ends with the scope.
 * After the page's commit, retl_session_restore undoes whatever else could
 * survive: a setting at session level, a session advisory lock.  Nothing
 * named stays open between pages (see readkeys.c), so no portal or
 * prepared statement of one owner is reachable by another's code.
 *
 * Scopes do not nest; suspend and resume switch back to the worker's
 * identity inside a scope, for retl's own catalog statements.
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/guc.h"
#include "utils/guc_tables.h"
#include "utils/memutils.h"

/*
 * Becomes the sync's owner, restricted, with a settings level of its own.
 * Needs a transaction.
 */
void
retl_owner_enter(RetlRun *run)
{
	RetlOwnerScope *scope = &run->owner_scope;

	Assert(!run->in_owner);
	scope->guc_level = NewGUCNestLevel();
	GetUserIdAndSecContext(&scope->save_uid, &scope->save_sec);
	SetUserIdAndSecContext(run->owner, scope->save_sec |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	run->in_owner = true;
}

/*
 * Ends the owner's scope: the settings its code changed are undone, and
 * the worker is itself again.
 */
void
retl_owner_leave(RetlRun *run)
{
	RetlOwnerScope *scope = &run->owner_scope;

	if (!run->in_owner)
		return;
	AtEOXact_GUC(false, scope->guc_level);
	SetUserIdAndSecContext(scope->save_uid, scope->save_sec);
	run->in_owner = false;
}

/*
 * Switches back to the worker's identity inside an owner's scope, for a
 * statement against retl's own tables.
 */
void
retl_owner_suspend(RetlRun *run)
{
	if (run->in_owner)
		SetUserIdAndSecContext(run->owner_scope.save_uid,
							   run->owner_scope.save_sec);
}

/*
 * Becomes the owner again after retl_owner_suspend.
 */
void
retl_owner_resume(RetlRun *run)
{
	if (run->in_owner)
		SetUserIdAndSecContext(run->owner, run->owner_scope.save_sec |
							   SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
}

/*
 * Is any setting set at session level?  The worker sets its own settings
 * as overrides, and page code only inside nest levels that end with the
 * page, so one found here leaked out of an owner's code.
 */
static const char *
leaked_setting(void)
{
	struct config_generic **vars = get_guc_variables();
	int			n = GetNumConfigOptions();

	for (int i = 0; i < n; i++)
		if (vars[i]->source == PGC_S_SESSION)
			return vars[i]->name;
	return NULL;
}

/*
 * Runs after a page's transaction committed, outside any transaction:
 * resets settings left at session level (as RESET ALL would; the worker's
 * overrides stay) and releases session advisory locks.  Both are cheap
 * when there is nothing to undo, which is the normal case.
 */
void
retl_session_restore(void)
{
	const char *name = leaked_setting();
	MemoryContext cxt = CurrentMemoryContext;

	if (name != NULL)
	{
		ereport(LOG,
				(errmsg("retl worker: a sync owner's code changed setting \"%s\" for the session; resetting it",
						name)));
		StartTransactionCommand();
		ResetAllOptions();
		CommitTransactionCommand();
		MemoryContextSwitchTo(cxt);
	}
	LockReleaseSession(USER_LOCKMETHOD);
}
