/*-------------------------------------------------------------------------
 *
 * read.h
 *	  The read side of a run: how its source is read (reader.c,
 *	  readblocks.c, readkeys.c, tidlist.c), the owner's scope (isolate.c),
 *	  failed events re-sent (refail.c), the content diff (diff.c) and the
 *	  xmin cursor (snapshot.c).
 *
 * Every function that reads the source runs in a page's transaction
 * (retl_reader_page); see src/README, "Reading".
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_READ_H
#define RETL_READ_H

#include "build.h"

#include "executor/spi.h"
#include "storage/block.h"
#include "storage/itemptr.h"

#define PAGE_MAX_MS 100			/* time per page transaction, any read method */

typedef struct RetlRun RetlRun;
typedef struct RetlBatch RetlBatch;

/* How a run reads its source (shown in retl.runs.read_method). */
typedef enum RetlReadMethod
{
	RETL_READ_BLOCKS,			/* TID ranges over each leaf with storage */
	RETL_READ_KEYS,				/* key-ordered pages, WHERE key > last */
	RETL_READ_STORE				/* materialized in the worker, sorted by key */
} RetlReadMethod;

/* A relation with storage that a blocks run reads. */
typedef struct RetlLeaf
{
	Oid			relid;
	BlockNumber nblocks;		/* read right after the run's snapshot */
	char	   *query;			/* SELECT list FROM ONLY leaf WHERE true[filter] */
} RetlLeaf;

/* The worker's identity, saved while the sync's owner's code runs. */
typedef struct RetlOwnerScope
{
	Oid			save_uid;
	int			save_sec;
	int			guc_level;
} RetlOwnerScope;

/* The name of a read method, as retl.runs.read_method shows it. */
static inline const char *
retl_read_method_name(RetlReadMethod method)
{
	switch (method)
	{
		case RETL_READ_BLOCKS:
			return "blocks";
		case RETL_READ_KEYS:
			return "keys";
		case RETL_READ_STORE:
			return "materialized";
	}
	return "unknown";
}

/* reader.c */
extern void retl_reader_start(RetlRun *run);
extern bool retl_reader_page(RetlRun *run);
extern void retl_reader_close(RetlRun *run);
extern int64 retl_reader_estimate(Oid relid);
extern char *retl_reader_pk(RetlRun *run, Datum *values, bool *nulls);
extern uint64 retl_reader_row_version(RetlRun *run, Datum *values, bool *nulls);
extern uint64 retl_reader_execute(RetlRun *run, SPIPlanPtr plan,
								  const char *sql, int nargs, Oid *types,
								  Datum *args);
extern void retl_reader_receiver(DestReceiver *r,
								 bool (*receive) (TupleTableSlot *slot,
												  DestReceiver *self),
								 void (*startup) (DestReceiver *self,
												  int operation,
												  TupleDesc typeinfo),
								 void (*shutdown) (DestReceiver *self));
extern ParamListInfo retl_reader_params(int n, SPIPlanPtr plan,
									   const Oid *types,
									   const Datum *values);
extern void retl_reader_tuples(RetlRun *run, HeapTuple *rows, TupleDesc desc,
							   uint64 n, const bool *dups);

/* readblocks.c */
extern void retl_blocks_start(RetlRun *run);
extern bool retl_blocks_usable(RetlRun *run);
extern bool retl_blocks_page(RetlRun *run, int want);
extern int64 retl_blocks_pos(RetlRun *run, BlockNumber block);

/* readkeys.c */
extern RetlReadMethod retl_keys_choose(RetlRun *run);
extern bool retl_keys_page(RetlRun *run, int want);
extern void retl_keys_live(RetlRun *run, char **pks, int n, bool *live);
extern void retl_keys_close(RetlRun *run);

/* isolate.c */
extern void retl_owner_enter(RetlRun *run);
extern void retl_owner_leave(RetlRun *run);
extern void retl_owner_suspend(RetlRun *run);
extern void retl_owner_resume(RetlRun *run);
extern void retl_session_restore(void);

/* refail.c */
extern bool retl_refail_page(RetlRun *run);

/* tidlist.c */
extern bool retl_tidlist_collect(RetlRun *run, const char *filter);
extern bool retl_tidlist_page(RetlRun *run, int want);

/* diff.c */
extern void retl_diff_start(RetlRun *run);
extern uint64 retl_diff_key(const char *pk);
extern void retl_diff_prefetch(RetlRun *run, uint64 key, int stage);
extern const char *retl_diff_check(RetlRun *run, const char *pk, uint64 key,
								   int64 fp, int dup, uint64 *version);
extern uint64 retl_diff_version(RetlRun *run, const char *pk, int64 fp);
extern bool retl_diff_deletes_page(RetlRun *run);
extern void retl_diff_acked(RetlBatch *b);
extern int64 retl_diff_fingerprint(const char *message_id);
extern int64 retl_diff_version_of(int64 fp, int64 stored_fp,
								  int64 stored_previous);

/* snapshot.c: the xmin cursor */
extern bytea *retl_snapshot_capture(Oid relid);
extern const char *retl_snapshot_guard(bytea *blob, Oid relid);
extern uint64 retl_widen_xid(TransactionId xid, FullTransactionId next);
extern uint64 retl_xmin_version(Datum xmin, bool isnull, FullTransactionId next);

#endif							/* RETL_READ_H */
