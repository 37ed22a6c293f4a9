/*-------------------------------------------------------------------------
 *
 * readkeys.c
 *	  Reads sources without block ranges (views, foreign tables, trees
 *	  whose leaves cannot be read one by one) in key order.
 *
 * Two methods, chosen at the first page by planning the page query:
 *
 * keys: each query reads "WHERE key > $last ORDER BY key LIMIT n" through
 *	  a saved generic plan, several queries per page transaction.  Used when
 *	  that plan streams: no sort, hash, aggregate, window, materialization or
 *	  sequential scan, so the key condition is an index condition inside
 *	  the view and a page costs what its rows cost.  Rows of one key are
 *	  never split between two queries: a query that ends inside a run of
 *	  equal keys stops before it (a query of one key only reads that key
 *	  whole), so "key > last" skips nothing.  Rows whose key is NULL come
 *	  last, in one query.
 *
 * store (readstore.c): otherwise (aggregates, window functions, DISTINCT,
 *	  no key) the source is read once, in the first page's transaction,
 *	  sorted by key when there is one, into a tuplestore that the worker
 *	  owns: SQL cannot name it, unlike a cursor.  Pages then read from the
 *	  store.
 *
 * Either way a resumed run starts "after this key", and nothing named stays
 * open between pages.  A source without a key cannot resume, and is read
 * again from its start.  Everything here runs in the reader's page
 * transaction, in the owner's scope (isolate.c); the reader's memory and
 * plans live as long as the run, and are freed by a reset callback of the
 * run's context if the run ends by an error.
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "checkpoint.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/plannodes.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/resowner.h"
#include "utils/typcache.h"

#include "keyreader.h"

/*
 * Rows of a keys query after the first at most.  The first query reads one
 * batch, so that the first events leave soon; the next ones read a page's
 * worth (batch_size x max_in_flight): each query starts the view's plan
 * afresh, and its caches with it (a Memoize node over a join's inner side
 * begins empty), so small queries cost more per row.
 */
#define KEYS_NEXT_LIMIT_MAX 20000

/*
 * Frees the plans and the store; a reset callback of the run's context,
 * so that an error ending the run frees them too.
 */
static void
keys_release(void *arg)
{
	RetlKeyReader *kr = arg;
	SPIPlanPtr *plans[3] = {&kr->first, &kr->next, &kr->equal};

	for (int i = 0; i < 3; i++)
		if (*plans[i] != NULL)
		{
			SPI_freeplan(*plans[i]);
			*plans[i] = NULL;
		}
	if (kr->ts != NULL)
	{
		tuplestore_end(kr->ts);
		kr->ts = NULL;
	}
}

/*
 * The run's key reader, created on first use: the key column's type, its
 * order and its input function.
 */
static RetlKeyReader *
key_reader(RetlRun *run)
{
	RetlMapping *map = run->map;
	RetlKeyReader *kr;
	MemoryContext cxt;

	if (run->keys != NULL)
		return run->keys;
	cxt = AllocSetContextCreate(run->cxt, "retl key reader",
								ALLOCSET_SMALL_SIZES);
	kr = MemoryContextAllocZero(cxt, sizeof(RetlKeyReader));
	kr->cxt = cxt;
	kr->col = map->pk_column;
	kr->limit = Max(50, Min(5000, run->dest.batch_size));
	kr->next_limit = Max(kr->limit, Min(KEYS_NEXT_LIMIT_MAX,
										run->dest.batch_size * run->dest.max_in_flight));
	kr->base = MemoryContextStrdup(cxt, psprintf("SELECT %s FROM %s WHERE true%s",
												 run->query, map->relname,
												 run->filter));
	if (kr->col >= 0)
	{
		TypeCacheEntry *tc;

		kr->keyname = MemoryContextStrdup(cxt, quote_identifier(map->colnames[kr->col]));
		kr->type = map->coltypes[kr->col];
		get_typlenbyvalalign(kr->type, &kr->typlen, &kr->typbyval, &kr->typalign);
		getTypeInputInfo(kr->type, &kr->typinput, &kr->typioparam);
		{
			Oid			t;
			int32		typmod;

			/* ORDER BY uses the column's collation, not the type's */
			get_atttypetypmodcoll(run->relid,
								  get_attnum(run->relid, map->colnames[kr->col]),
								  &t, &typmod, &kr->collation);
		}
		tc = lookup_type_cache(kr->type, TYPECACHE_CMP_PROC_FINFO);
		kr->ordered = OidIsValid(tc->cmp_proc_finfo.fn_oid);
		if (kr->ordered)
			fmgr_info_copy(&kr->cmp, &tc->cmp_proc_finfo, cxt);
	}
	kr->cb.func = keys_release;
	kr->cb.arg = kr;
	MemoryContextRegisterResetCallback(run->cxt, &kr->cb);
	run->keys = kr;
	return kr;
}

/*
 * Compares two keys in the order of ORDER BY key.
 */
int
retl_keys_cmp(RetlKeyReader *kr, Datum a, Datum b)
{
	return DatumGetInt32(FunctionCall2Coll(&kr->cmp, kr->collation, a, b));
}

/*
 * Remembers the last key read (copied into the reader's memory).
 */
void
retl_keys_set_last(RetlKeyReader *kr, Datum key)
{
	MemoryContext old = MemoryContextSwitchTo(kr->cxt);

	if (kr->have_last && !kr->typbyval)
		pfree(DatumGetPointer(kr->last));
	kr->last = datumCopy(key, kr->typbyval, kr->typlen);
	kr->have_last = true;
	MemoryContextSwitchTo(old);
}

/*
 * The checkpoint text of the last key read, or NULL.
 */
char *
retl_keys_last_text(RetlRun *run, RetlKeyReader *kr)
{
	return kr->have_last ? OutputFunctionCall(&run->map->pk_out, kr->last) : NULL;
}

/*
 * Prepares and keeps a plan of the keys method: always the generic plan,
 * the one retl_keys_choose checked.
 */
static SPIPlanPtr
keep_plan(RetlKeyReader *kr, const char *sql, int nargs)
{
	Oid			types[1] = {kr->type};
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, types,
										  CURSOR_OPT_GENERIC_PLAN);

	if (plan == NULL)
		elog(ERROR, "retl: preparing the page query failed: %s",
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "retl: keeping the page query failed");
	return plan;
}

/*
 * Does a plan produce its rows as it goes, with a cost per row, whatever
 * the size of the source?  Any node that reads all its input first, or a
 * sequential scan, would make every page cost the whole source.
 */
static bool
plan_streams(Plan *plan)
{
	ListCell   *lc;
	List	   *children = NIL;

	if (plan == NULL)
		return true;
	switch (nodeTag(plan))
	{
		case T_Sort:
		case T_IncrementalSort:
		case T_Agg:
		case T_Group:
		case T_WindowAgg:
		case T_Unique:
		case T_SetOp:
		case T_Hash:
		case T_Material:
		case T_RecursiveUnion:
		case T_CteScan:
		case T_WorkTableScan:
		case T_FunctionScan:
		case T_TableFuncScan:
		case T_SeqScan:
		case T_SampleScan:
		case T_BitmapHeapScan:
		case T_TidRangeScan:
		case T_ForeignScan:
		case T_CustomScan:
		case T_Gather:
		case T_GatherMerge:
			return false;
		case T_Append:
			children = ((Append *) plan)->appendplans;
			break;
		case T_MergeAppend:
			children = ((MergeAppend *) plan)->mergeplans;
			break;
		case T_SubqueryScan:
			children = list_make1(((SubqueryScan *) plan)->subplan);
			break;
		default:
			break;
	}
	foreach(lc, children)
		if (!plan_streams(lfirst(lc)))
			return false;
	return plan_streams(plan->lefttree) && plan_streams(plan->righttree);
}

/*
 * Plans the keys query and tells whether its generic plan streams.
 */
static bool
keys_plan_streams(RetlKeyReader *kr)
{
	CachedPlan *cplan;
	bool		streams = true;
	ListCell   *lc;

	kr->next = keep_plan(kr, psprintf("%s AND %s > $1 ORDER BY %s LIMIT %d",
									  kr->base, kr->keyname, kr->keyname,
									  kr->next_limit), 1);
	cplan = SPI_plan_get_cached_plan(kr->next);
	if (cplan == NULL)
		return false;
	foreach(lc, cplan->stmt_list)
	{
		PlannedStmt *stmt = lfirst_node(PlannedStmt, lc);

		streams &= stmt->commandType == CMD_SELECT && plan_streams(stmt->planTree);
	}
	ReleaseCachedPlan(cplan, CurrentResourceOwner);
	return streams;
}

/*
 * Chooses how a source without usable block ranges is read: key pages
 * when their plan streams, else the private store.  A resumed run starts
 * after the checkpoint's key.  Runs at the first source page, in the
 * owner's scope (planning may run the owner's functions).
 */
RetlReadMethod
retl_keys_choose(RetlRun *run)
{
	RetlKeyReader *kr = key_reader(run);

	if (kr->ordered && run->ckpt.key != NULL)
		retl_keys_set_last(kr, OidInputFunctionCall(kr->typinput, run->ckpt.key,
										  kr->typioparam, -1));
	kr->store = !kr->ordered || !keys_plan_streams(kr);
	if (kr->store && kr->next != NULL)
	{
		SPI_freeplan(kr->next);
		kr->next = NULL;
	}
	return kr->store ? RETL_READ_STORE : RETL_READ_KEYS;
}

/*
 * The key of row i of a result, and whether it is NULL.
 */
static Datum
row_key(RetlKeyReader *kr, SPITupleTable *tt, uint64 i, bool *isnull)
{
	return SPI_getbinval(tt->vals[i], tt->tupdesc, kr->col + 1, isnull);
}

/*
 * Runs one keys query: the first, the next after the last key, or all
 * rows of the last key.  Returns the result's row count.
 */
static uint64
keys_query(RetlKeyReader *kr, SPIPlanPtr *plan, const char *suffix, int nargs)
{
	Datum		args[1] = {kr->last};

	if (*plan == NULL)
		*plan = keep_plan(kr, psprintf("%s%s", kr->base, suffix), nargs);
	if (SPI_execute_plan(*plan, nargs ? args : NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "retl: reading the source failed");
	return SPI_processed;
}

/*
 * Processes rows [0, n) of a keys result, marking each row whose key
 * equals the previous row's as a duplicate, and records the span.
 */
static void
keys_process(RetlRun *run, RetlKeyReader *kr, SPITupleTable *tt, uint64 n)
{
	bool	   *dups = palloc0(Max(n, 1) * sizeof(bool));

	for (uint64 i = 1; i < n; i++)
	{
		bool		null_a,
					null_b;
		Datum		a = row_key(kr, tt, i - 1, &null_a);
		Datum		b = row_key(kr, tt, i, &null_b);

		dups[i] = !null_a && !null_b && retl_keys_cmp(kr, a, b) == 0;
	}
	retl_reader_tuples(run, tt->vals, tt->tupdesc, n, dups);
	pfree(dups);
}

/*
 * Reads the next keys query and processes it.  A full result stops before
 * its trailing run of equal keys, which the next query reads again; a
 * result of one key only is read whole with "key = $1".
 */
static void
keys_step(RetlRun *run, RetlKeyReader *kr)
{
	uint64		n,
				cut;
	SPITupleTable *tt;
	bool		isnull;
	bool		full;
	Datum		lastkey;
	int			limit = kr->have_last ? kr->next_limit : kr->limit;

	n = kr->have_last ? keys_query(kr, &kr->next, "", 1)
		: keys_query(kr, &kr->first,
					 psprintf(" AND %s IS NOT NULL ORDER BY %s LIMIT %d",
							  kr->keyname, kr->keyname, kr->limit), 0);
	tt = SPI_tuptable;
	full = n == (uint64) limit;
	if (n == 0)
	{
		kr->keys_done = true;
		SPI_freetuptable(tt);
		return;
	}
	cut = n;
	lastkey = row_key(kr, tt, n - 1, &isnull);
	if (full)
	{
		while (cut > 0 && retl_keys_cmp(kr, row_key(kr, tt, cut - 1, &isnull), lastkey) == 0)
			cut--;
	}
	if (cut == 0)
	{
		/* one key fills the whole result: read all of its rows */
		retl_keys_set_last(kr, lastkey);
		SPI_freetuptable(tt);
		n = keys_query(kr, &kr->equal, psprintf(" AND %s = $1", kr->keyname), 1);
		tt = SPI_tuptable;
		cut = n;
	}
	else
		retl_keys_set_last(kr, row_key(kr, tt, cut - 1, &isnull));
	kr->keys_done = !full;
	keys_process(run, kr, tt, cut);
	retl_ckpt_span(run, 0, retl_keys_last_text(run, kr), (int64) cut);
	SPI_freetuptable(tt);
}

/*
 * Reads the rows whose key is NULL, once, after all others.
 */
static void
nulls_step(RetlRun *run, RetlKeyReader *kr)
{
	SPITupleTable *tt;
	uint64		n;

	if (SPI_execute(psprintf("%s AND %s IS NULL", kr->base, kr->keyname),
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "retl: reading the source failed");
	tt = SPI_tuptable;
	n = SPI_processed;
	kr->nulls_done = true;
	keys_process(run, kr, tt, n);
	retl_ckpt_span(run, 0, retl_keys_last_text(run, kr), (int64) n);
	SPI_freetuptable(tt);
}

/*
 * Keys method: reads queries until want events are built or the page's
 * time is spent.  Events, not rows: a content-diff run skips unchanged
 * rows, and a run that sends few of them reads on in the same page.  A
 * page may end one query past want: at most 2 x batch_size x
 * max_in_flight events, the checkpoint's window (retl_ckpt_may_send).
 * Returns true when the keys and the NULL keys are read.
 */
static bool
keys_page(RetlRun *run, RetlKeyReader *kr, int want)
{
	TimestampTz start = GetCurrentTimestamp();
	int64		seq0 = run->seq;

	for (;;)
	{
		if (!kr->keys_done)
			keys_step(run, kr);
		else if (!kr->nulls_done)
			nulls_step(run, kr);
		else
			return true;
		if (run->seq - seq0 >= want ||
			TimestampDifferenceExceeds(start, GetCurrentTimestamp(), PAGE_MAX_MS))
			return false;
	}
}

/*
 * Reads a page of a keys or store run.  Returns true when the source is
 * read.
 */
bool
retl_keys_page(RetlRun *run, int want)
{
	RetlKeyReader *kr = key_reader(run);

	if (kr->store)
		return retl_readstore_page(run, kr, Max(want, 1));
	return keys_page(run, kr, want);
}

/*
 * Orders C strings for qsort and bsearch.
 */
static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/*
 * Tells which of n keys (as text) are in the source now: live[i] is set
 * for those found.  One query with an array of the key's type.  Runs in
 * the owner's scope, in a transaction whose snapshot is newer than every
 * page of the run, so a key that moved while the run read is found.
 */
void
retl_keys_live(RetlRun *run, char **pks, int n, bool *live)
{
	RetlKeyReader *kr = key_reader(run);
	Datum	   *elems = palloc(Max(n, 1) * sizeof(Datum));
	Oid			types[1] = {get_array_type(kr->type)};
	Datum		args[1];
	char	  **found;
	uint64		nfound;
	SPITupleTable *tt;

	memset(live, 0, n * sizeof(bool));
	if (n == 0)
		return;
	for (int i = 0; i < n; i++)
		elems[i] = OidInputFunctionCall(kr->typinput, pks[i], kr->typioparam, -1);
	args[0] = PointerGetDatum(construct_array(elems, n, kr->type, kr->typlen,
											  kr->typbyval, kr->typalign));
	if (SPI_execute_with_args(psprintf("SELECT %s FROM %s WHERE %s = ANY ($1)",
									   kr->keyname, run->map->relname, kr->keyname),
							  1, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "retl: checking deleted keys failed");
	tt = SPI_tuptable;
	nfound = SPI_processed;
	found = palloc(Max(nfound, 1) * sizeof(char *));
	for (uint64 i = 0; i < nfound; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull);

		found[i] = isnull ? "" : OutputFunctionCall(&run->map->pk_out, d);
	}
	qsort(found, nfound, sizeof(char *), cmp_str);
	for (int i = 0; i < n; i++)
		live[i] = bsearch(&pks[i], found, nfound, sizeof(char *), cmp_str) != NULL;
	SPI_freetuptable(tt);
}

/*
 * Frees the reader's plans and store now (the run goes on without them,
 * or ends).  Safe to call more than once.
 */
void
retl_keys_close(RetlRun *run)
{
	if (run->keys != NULL)
		keys_release(run->keys);
}
