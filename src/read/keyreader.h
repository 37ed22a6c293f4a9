/*-------------------------------------------------------------------------
 *
 * keyreader.h
 *	  The key reader that readkeys.c (key pages) and readstore.c (the
 *	  private store) share; nothing outside read/ sees it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_KEYREADER_H
#define RETL_KEYREADER_H

#include "run.h"

#include "executor/tuptable.h"
#include "utils/tuplestore.h"

typedef struct RetlKeyReader
{
	MemoryContext cxt;			/* the reader's, child of the run's */
	bool		store;			/* method store, else keys */
	bool		ordered;		/* the key has a btree order */
	int			col;			/* select-list index of the key, or -1 */
	char	   *keyname;		/* its quoted name */
	Oid			type;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Oid			collation;
	FmgrInfo	cmp;			/* the type's btree comparison */
	Oid			typinput;
	Oid			typioparam;
	int			limit;			/* rows of the first keys query */
	int			next_limit;		/* rows of the next ones */
	char	   *base;			/* SELECT list FROM source WHERE true[filter] */
	SPIPlanPtr	first;			/* ORDER BY key LIMIT n */
	SPIPlanPtr	next;			/* key > $1 ORDER BY key LIMIT n */
	SPIPlanPtr	equal;			/* key = $1 */
	bool		keys_done;
	bool		nulls_done;
	bool		have_last;
	Datum		last;			/* last key read, in cxt */
	Tuplestorestate *ts;		/* store: the rows */
	TupleDesc	desc;
	TupleTableSlot *slot;
	bool		filled;
	bool		have_prev;
	Datum		prev;			/* store: key of the previous row */
	MemoryContextCallback cb;
} RetlKeyReader;

extern int	retl_keys_cmp(RetlKeyReader *kr, Datum a, Datum b);
extern void retl_keys_set_last(RetlKeyReader *kr, Datum key);
extern char *retl_keys_last_text(RetlRun *run, RetlKeyReader *kr);
extern bool retl_readstore_page(RetlRun *run, RetlKeyReader *kr, int want);

#endif							/* RETL_KEYREADER_H */
