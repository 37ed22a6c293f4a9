/*-------------------------------------------------------------------------
 *
 * tidlist.c
 *	  Incremental runs on plain tables: find the changed rows with one
 *	  (parallel) scan that returns only their TIDs, then read those rows by
 *	  TID in pages.
 *
 * The xmin filter runs inside the scan (retl._xmin_is_new is parallel
 * safe), so the cost of an incremental run is close to a count(*) of the
 * table, as the benchmark asks, instead of a walk over block ranges in one
 * process.  A TID takes 6 bytes; when more rows than TIDLIST_MAX changed,
 * the run falls back to block ranges, so memory stays bounded.
 *
 * The TIDs come from the scan's snapshot and the rows from later page
 * snapshots: a row updated in between is invisible by its old TID, and its
 * new version is newer than the run's snapshot, so the next run sends it.
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "checkpoint.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "storage/itemptr.h"
#include "utils/array.h"
#include "utils/guc.h"

#define TIDLIST_MAX (4 * 1024 * 1024)	/* 24 MB of TIDs at most */

static int
cmp_tid(const void *a, const void *b)
{
	return ItemPointerCompare((ItemPointer) a, (ItemPointer) b);
}

/*
 * Collects the TIDs of the changed rows, sorted, at or after the resume
 * block.  Returns false (and collects nothing) when there are too many:
 * the caller then reads block ranges.  Runs in a page transaction.
 */
bool
retl_tidlist_collect(RetlRun *run, const char *filter)
{
	/* a TID range condition would rule out a parallel scan: only on resume */
	char	   *sql = run->next_block > 0
		? psprintf("SELECT ctid FROM ONLY %s WHERE ctid >= '(%u,0)'::tid%s LIMIT %d",
				   run->map->relname, run->next_block, filter, TIDLIST_MAX + 1)
		: psprintf("SELECT ctid FROM ONLY %s WHERE true%s LIMIT %d",
				   run->map->relname, filter, TIDLIST_MAX + 1);
	uint64		n;

	/*
	 * The planner cannot know that the filter keeps few rows, and would
	 * price a parallel scan's tuple transfer for a third of the table: tell
	 * it that transfer is cheap, for this transaction only.
	 */
	(void) set_config_option("parallel_tuple_cost", "0.0001", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "retl: finding the changed rows failed");
	n = SPI_processed;
	if (n > TIDLIST_MAX)
	{
		SPI_freetuptable(SPI_tuptable);
		return false;
	}
	run->tids = MemoryContextAlloc(run->cxt, Max(n, 1) * sizeof(ItemPointerData));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
									  1, &isnull);

		ItemPointerCopy((ItemPointer) DatumGetPointer(d), &run->tids[i]);
	}
	SPI_freetuptable(SPI_tuptable);
	qsort(run->tids, n, sizeof(ItemPointerData), cmp_tid);
	run->ntids = (int64) n;
	run->next_tid = 0;
	run->use_tids = true;
	/* progress: now the run knows how many rows it will read */
	run->rows_estimated = run->rows_read + run->ntids;
	run->dirty = true;
	return true;
}

/*
 * Reads the rows of the next want TIDs, as one query, and records the
 * span: up to the block of the first TID not read yet.  Returns true when
 * every changed row is read.
 */
bool
retl_tidlist_page(RetlRun *run, int want)
{
	int64		from = run->next_tid;
	int64		to = Min(run->ntids, from + want);
	Datum	   *elems;
	ArrayType  *arr;
	Oid			argtypes[1] = {TIDARRAYOID};
	Datum		args[1];
	int64		end_pos;
	uint64		n;

	if (to > from)
	{
		elems = palloc((to - from) * sizeof(Datum));
		for (int64 i = from; i < to; i++)
			elems[i - from] = PointerGetDatum(&run->tids[i]);
		arr = construct_array(elems, (int) (to - from), TIDOID,
							  sizeof(ItemPointerData), false, TYPALIGN_SHORT);
		args[0] = PointerGetDatum(arr);
		n = retl_reader_execute(run, NULL,
								psprintf("%s AND ctid = ANY ($1)",
										 run->leaves[0].query),
								1, argtypes, args);
		end_pos = to < run->ntids
			? ItemPointerGetBlockNumber(&run->tids[to]) : run->nblocks;
		retl_ckpt_span(run, retl_blocks_pos(run, end_pos), NULL, (int64) n);
	}
	run->next_tid = to;
	if (run->next_tid < run->ntids)
		return false;
	retl_ckpt_span(run, retl_blocks_pos(run, run->nblocks), NULL, 0);
	return true;
}
