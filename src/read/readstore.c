/*-------------------------------------------------------------------------
 *
 * readstore.c
 *	  The store method of readkeys.c: a source whose key pages would not
 *	  stream (aggregates, window functions, DISTINCT, no key) is read once,
 *	  in the first page's transaction, sorted by key when there is one,
 *	  into a tuplestore that the worker owns: SQL cannot name it, unlike a
 *	  cursor.  Pages then read from the store, and a resumed run starts
 *	  after the checkpoint's key.  Runs in the reader's page transaction,
 *	  in the owner's scope (isolate.c).
 *
 *-------------------------------------------------------------------------
 */
#include "keyreader.h"
#include "checkpoint.h"

#include "access/detoast.h"
#include "miscadmin.h"
#include "utils/memutils.h"

/* A DestReceiver that detoasts rows into the store, keeping their shape. */
typedef struct StoreReceiver
{
	DestReceiver pub;
	RetlKeyReader *kr;
	MemoryContext tmp;
} StoreReceiver;

/*
 * Receiver startup: keeps a copy of the rows' shape for reading them back.
 */
static void
store_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	StoreReceiver *r = (StoreReceiver *) self;
	MemoryContext old = MemoryContextSwitchTo(r->kr->cxt);

	/* the executor's copy ends with the query; the store's rows do not */
	r->kr->desc = CreateTupleDescCopy(typeinfo);
	MemoryContextSwitchTo(old);
}

/*
 * Receiver: stores one row, with its TOASTed values fetched now, while
 * the page's snapshot is active.
 */
static bool
store_receive(TupleTableSlot *slot, DestReceiver *self)
{
	StoreReceiver *r = (StoreReceiver *) self;
	TupleDesc	desc = r->kr->desc;
	MemoryContext old = MemoryContextSwitchTo(r->tmp);
	Datum	   *values = palloc(desc->natts * sizeof(Datum));

	slot_getallattrs(slot);
	for (int i = 0; i < desc->natts; i++)
	{
		values[i] = slot->tts_values[i];
		if (!slot->tts_isnull[i] && TupleDescAttr(desc, i)->attlen == -1 &&
			VARATT_IS_EXTERNAL(DatumGetPointer(values[i])))
			values[i] = PointerGetDatum(detoast_external_attr((struct varlena *)
															  DatumGetPointer(values[i])));
	}
	tuplestore_putvalues(r->kr->ts, desc, values, slot->tts_isnull);
	MemoryContextSwitchTo(old);
	MemoryContextReset(r->tmp);
	return true;
}

/*
 * The store receiver has nothing to do at its shutdown.
 */
static void
store_noop(DestReceiver *self)
{
}

/*
 * Reads the whole source into the store, sorted by key when there is one,
 * after the checkpoint's key for a resumed run.  The store lives in the
 * reader's memory and across transactions, and spills to temporary files
 * past work_mem.
 */
static void
store_fill(RetlRun *run, RetlKeyReader *kr)
{
	StoreReceiver r;
	SPIExecuteOptions opts;
	MemoryContext old;
	char	   *sql = kr->base;

	memset(&r, 0, sizeof(r));
	retl_reader_receiver(&r.pub, store_receive, store_startup, store_noop);
	r.kr = kr;
	r.tmp = AllocSetContextCreate(CurrentMemoryContext, "retl store row",
								  ALLOCSET_DEFAULT_SIZES);
	memset(&opts, 0, sizeof(opts));
	opts.read_only = true;
	opts.dest = &r.pub;
	if (kr->ordered && kr->have_last)
	{
		opts.params = retl_reader_params(1, NULL, &kr->type, &kr->last);
		sql = psprintf("%s AND (%s > $1 OR %s IS NULL)", sql, kr->keyname,
					   kr->keyname);
	}
	if (kr->ordered)
		sql = psprintf("%s ORDER BY %s", sql, kr->keyname);
	old = MemoryContextSwitchTo(kr->cxt);
	/* interXact: the store outlives this transaction, as a held cursor's */
	kr->ts = tuplestore_begin_heap(false, true, work_mem);
	MemoryContextSwitchTo(old);
	if (SPI_execute_extended(sql, &opts) != SPI_OK_SELECT)
		elog(ERROR, "retl: reading the source failed");
	old = MemoryContextSwitchTo(kr->cxt);
	if (kr->desc == NULL)
		elog(ERROR, "retl: reading the source returned no row description");
	kr->slot = MakeSingleTupleTableSlot(kr->desc, &TTSOpsMinimalTuple);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(r.tmp);
	kr->filled = true;
}

/*
 * Store method: fills the store at the first page, then turns up to want
 * of its rows into events.  Equal neighbouring keys are duplicates.
 * Returns true when the store is read to its end.
 */
bool
retl_readstore_page(RetlRun *run, RetlKeyReader *kr, int want)
{
	HeapTuple  *rows = palloc(want * sizeof(HeapTuple));
	bool	   *dups = palloc0(want * sizeof(bool));
	int			n = 0;

	if (!kr->filled)
		store_fill(run, kr);
	while (n < want && tuplestore_gettupleslot(kr->ts, true, false, kr->slot))
	{
		bool		isnull = true;
		Datum		key = kr->col >= 0 ? slot_getattr(kr->slot, kr->col + 1, &isnull) : 0;

		rows[n] = ExecCopySlotHeapTuple(kr->slot);
		if (kr->ordered && !isnull)
		{
			dups[n] = kr->have_prev && retl_keys_cmp(kr, kr->prev, key) == 0;
			retl_keys_set_last(kr, key);
			kr->prev = kr->last;
			kr->have_prev = true;
		}
		n++;
	}
	retl_reader_tuples(run, rows, kr->desc, n, dups);
	retl_ckpt_span(run, 0, retl_keys_last_text(run, kr), n);
	return n < want;
}
