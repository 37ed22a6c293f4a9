/*-------------------------------------------------------------------------
 *
 * readblocks.c
 *	  Reads relations with storage (tables, materialized views, the leaves
 *	  of partitioned tables and inheritance trees) in ranges of blocks: a
 *	  TID range scan per query, several queries per page transaction.
 *
 * A row version visible to the run's snapshot is at a block below the
 * block count read right after that snapshot, and stays visible until it
 * is updated, in which case its new version is newer than the run's
 * snapshot and the next run sends it.  Leaves are read one after another,
 * in OID order, each as "ONLY leaf", so the position of a run is a leaf
 * and a block: a resumed run starts there, and never counts rows.
 *
 * Reading a leaf directly checks the leaf's privileges and policies, not
 * the parent's: retl_blocks_usable says when that reads exactly what
 * "SELECT ... FROM parent" would; otherwise the run reads through the
 * parent by key (readkeys.c).
 *
 * Runs in the reader's page transaction, in the owner's scope.
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "checkpoint.h"

#include "access/relation.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rls.h"
#include "utils/timestamp.h"

#define RANGE_MIN_BLOCKS 1		/* blocks per TID range query ... */
#define RANGE_MAX_BLOCKS 4096	/* ... adapted to yield about one batch */
#define PAGE_MAX_BLOCKS 16384	/* blocks per transaction */

/*
 * The checkpoint position of a block of the current leaf.
 */
int64
retl_blocks_pos(RetlRun *run, BlockNumber block)
{
	return (int64) (((uint64) run->leaves[run->leaf].relid << 32) | block);
}

/*
 * Frees the saved range plan of the leaf being read.  Also the reset
 * callback of the run's context, so that a run ending in an error frees
 * it too.
 */
static void
free_leaf_plan(void *arg)
{
	RetlRun    *run = arg;

	if (run->leaf_plan != NULL)
	{
		SPI_freeplan(run->leaf_plan);
		run->leaf_plan = NULL;
	}
}

/*
 * The saved plan that reads a TID range of the current leaf: prepared once
 * a leaf, not parsed and planned again for every range (a few percent of a
 * full run).  Generic: a TID range scan whose bounds are parameters.
 * Prepared in the owner's scope, as it runs.
 */
static SPIPlanPtr
leaf_plan(RetlRun *run)
{
	RetlLeaf   *leaf = &run->leaves[run->leaf];
	Oid			types[2] = {TIDOID, TIDOID};

	if (run->leaf_plan == NULL)
	{
		char	   *sql = psprintf("%s AND ctid >= $1 AND ctid < $2", leaf->query);
		SPIPlanPtr	p = SPI_prepare_cursor(sql, 2, types, CURSOR_OPT_GENERIC_PLAN);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "retl: preparing the read of \"%s\" failed: %s",
				 get_rel_name(leaf->relid), SPI_result_code_string(SPI_result));
		run->leaf_plan = p;
		pfree(sql);
	}
	return run->leaf_plan;
}

/*
 * Moves to leaf i, at block start.
 */
static void
enter_leaf(RetlRun *run, int i, BlockNumber start)
{
	free_leaf_plan(run);
	run->leaf = i;
	if (i < run->nleaves)
	{
		run->nblocks = run->leaves[i].nblocks;
		run->next_block = Min(start, run->nblocks);
	}
	run->range_blocks = 1;
}

/*
 * Lists the leaves with storage and their sizes, and finds where a resumed
 * run goes on.  Runs in the transaction that took the run's snapshot.  A
 * tree with a leaf that has no storage (a foreign table) has no leaves:
 * it is read by key.
 */
void
retl_blocks_start(RetlRun *run)
{
	List	   *rels = find_all_inheritors(run->relid, AccessShareLock, NULL);
	MemoryContextCallback *cb;
	Oid		   *oids = palloc(list_length(rels) * sizeof(Oid));
	int			n = 0;
	uint64		pos = (uint64) run->ckpt.pos;
	Oid			at_oid = (Oid) (pos >> 32);
	ListCell   *lc;
	int			first = 0;

	/*
	 * A checkpoint of 0.2 holds a block of the table itself, or, for other
	 * sources, a count of rows read through a cursor, which means nothing
	 * here: start over.
	 */
	if (at_oid == InvalidOid && pos != 0)
	{
		at_oid = run->map->relkind == RELKIND_RELATION ? run->relid : InvalidOid;
		pos = at_oid == InvalidOid ? 0 : pos;
		pos |= (uint64) at_oid << 32;
	}

	foreach(lc, rels)
	{
		char		relkind = get_rel_relkind(lfirst_oid(lc));

		if (RELKIND_HAS_STORAGE(relkind))
			oids[n++] = lfirst_oid(lc);
		else if (relkind != RELKIND_PARTITIONED_TABLE)
			return;				/* a foreign leaf */
	}
	qsort(oids, n, sizeof(Oid), oid_cmp);
	run->leaves = palloc0(Max(n, 1) * sizeof(RetlLeaf));
	for (int i = 0; i < n; i++)
	{
		RetlLeaf   *leaf = &run->leaves[i];
		Relation	rel = relation_open(oids[i], AccessShareLock);

		leaf->relid = oids[i];
		leaf->nblocks = RelationGetNumberOfBlocks(rel);
		leaf->query = psprintf("SELECT %s FROM ONLY %s WHERE true%s", run->query,
							   quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
														  RelationGetRelationName(rel)),
							   run->filter);
		relation_close(rel, AccessShareLock);
		if (at_oid != InvalidOid && oids[i] < at_oid)
			first = i + 1;
	}
	run->nleaves = n;
	cb = MemoryContextAllocZero(run->cxt, sizeof(MemoryContextCallback));
	cb->func = free_leaf_plan;
	cb->arg = run;
	MemoryContextRegisterResetCallback(run->cxt, cb);
	/* resume in the checkpoint's leaf, or in the first one after it */
	if (first < n && oids[first] == at_oid)
		enter_leaf(run, first, (BlockNumber) (pos & 0xffffffff));
	else
		enter_leaf(run, first, 0);
}

/*
 * Does reading the leaves one by one, as the owner, read exactly what the
 * source's own query would?  Yes for a table without children.  For a
 * tree, the owner must be able to read every leaf, and no row-level
 * security may apply to the parent (it would be bypassed) or to a leaf
 * (it would hide rows the parent shows).  Runs in the owner's scope.
 */
bool
retl_blocks_usable(RetlRun *run)
{
	if (run->nleaves == 0)
		return false;
	if (run->nleaves == 1 && run->leaves[0].relid == run->relid)
		return true;
	if (check_enable_rls(run->relid, InvalidOid, true) == RLS_ENABLED)
		return false;
	for (int i = 0; i < run->nleaves; i++)
	{
		Oid			leaf = run->leaves[i].relid;

		if (pg_class_aclcheck(leaf, GetUserId(), ACL_SELECT) != ACLCHECK_OK ||
			check_enable_rls(leaf, InvalidOid, true) == RLS_ENABLED)
			return false;
	}
	return true;
}

/*
 * Sizes the next TID range so that it yields about one batch of events:
 * small spans keep the checkpoint close behind the acknowledged events,
 * and sparse incremental scans still read large ranges per query.
 */
static void
adapt_range(RetlRun *run, BlockNumber blocks, uint64 rows)
{
	double		per_block = rows > 0 ? (double) rows / blocks : 0;
	double		want = run->dest.batch_size;
	double		next = per_block > 0 ? want / per_block : (double) blocks * 4;

	run->range_blocks = (BlockNumber) Max(RANGE_MIN_BLOCKS,
										  Min(RANGE_MAX_BLOCKS, next));
}

/*
 * Reads one TID range of the current leaf and records its span.  Returns
 * the rows it read.
 */
static uint64
read_range(RetlRun *run)
{
	BlockNumber end = Min(run->nblocks, run->next_block + run->range_blocks);
	ItemPointerData from,
				to;
	Datum		values[2] = {PointerGetDatum(&from), PointerGetDatum(&to)};
	uint64		n;

	ItemPointerSet(&from, run->next_block, 0);
	ItemPointerSet(&to, end, 0);
	n = retl_reader_execute(run, leaf_plan(run), NULL, 2, NULL, values);
	retl_ckpt_span(run, retl_blocks_pos(run, end), NULL, (int64) n);
	adapt_range(run, end - run->next_block, n);
	run->next_block = end;
	return n;
}

/*
 * Reads block ranges, leaf after leaf, until enough events are built or
 * the page's block or time budget is spent.  Returns true when every leaf
 * is read.
 */
static bool
read_ranges(RetlRun *run, int want)
{
	TimestampTz start = GetCurrentTimestamp();
	BlockNumber scanned = 0;
	uint64		rows = 0;

	while (run->leaf < run->nleaves)
	{
		if (run->next_block >= run->nblocks)
		{
			/* the leaf is read: its end is a position too */
			retl_ckpt_span(run, retl_blocks_pos(run, run->nblocks), NULL, 0);
			enter_leaf(run, run->leaf + 1, 0);
			continue;
		}
		scanned += Min(run->range_blocks, run->nblocks - run->next_block);
		rows += read_range(run);
		if (rows >= (uint64) want || scanned >= PAGE_MAX_BLOCKS ||
			TimestampDifferenceExceeds(start, GetCurrentTimestamp(), PAGE_MAX_MS))
			break;
	}
	return run->leaf >= run->nleaves;
}

/*
 * Reads a page of a blocks run.  An incremental run of a single table
 * first tries to find its changed rows in one scan (tidlist.c) and reads
 * them by TID; with too many changes, on a full run, or over several
 * leaves, it walks block ranges.  Returns true when the source is read.
 */
bool
retl_blocks_page(RetlRun *run, int want)
{
	bool		single = run->nleaves == 1 && run->leaves[0].relid == run->relid;

	if (!run->tids_tried && run->filter[0] != '\0' && single)
	{
		run->tids_tried = true;
		if (retl_tidlist_collect(run, run->filter))
			return false;
	}
	if (run->use_tids)
		return retl_tidlist_page(run, want);
	return read_ranges(run, want);
}
