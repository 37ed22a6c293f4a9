/*-------------------------------------------------------------------------
 *
 * snapshot.c
 *	  The xmin cursor: a snapshot stored in 64-bit xids, and the rule that
 *	  tells whether a row version is new since that snapshot.
 *
 * A run stores the snapshot taken when it started: xmin, xmax, xip and
 * subxip, whether subxip overflowed and whether it was taken during
 * recovery.  The next run sends
 * a row when its raw xmin X, widened against the current next xid, is
 *	 - X >= xmax, or
 *	 - X in xip or subxip, or
 *	 - X in [xmin, xmax) while subxip cannot be trusted.
 * SQL pg_current_snapshot() has no subxip, so it would miss rows written in
 * a subtransaction that was open at the snapshot; this C snapshot does not.
 *
 * The blob also records the system identifier, the relation and its
 * relfilenode, so that guards can force a full run after a restore from
 * another cluster, a TRUNCATE or a table rewrite.
 *
 *-------------------------------------------------------------------------
 */
#include "retl.h"
#include "read.h"

#include "access/transam.h"
#include "catalog/pg_inherits.h"
#include "common/hashfn.h"
#include "access/xlog.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "access/htup_details.h"
#include "catalog/pg_class.h"

#define RETL_SNAP_MAGIC 0x52544c31	/* "RTL1" */
#define RETL_SNAP_OVERFLOWED 0x01
#define RETL_SNAP_RECOVERY 0x02

typedef struct RetlSnapHeader
{
	uint32		magic;
	uint32		flags;
	uint64		sysid;
	uint64		xmin;
	uint64		xmax;
	uint32		relid;
	uint32		relfilenode;
	uint32		nxip;
	uint32		nsubxip;
	/* followed by nxip + nsubxip uint64 xids, sorted */
} RetlSnapHeader;

typedef struct RetlSnap
{
	RetlSnapHeader h;
	uint64	   *xip;			/* xip and subxip together, sorted */
	int			nall;
	FullTransactionId next;		/* widening reference */
} RetlSnap;

PG_FUNCTION_INFO_V1(retl_xmin_is_new);
static Oid	get_rel_relfilenode_safe(Oid relid);
PG_FUNCTION_INFO_V1(retl_snapshot_text);

/*
 * Widens a 32-bit xid to 64 bits against the next full xid, the way
 * xid8funcs.c does.  Special xids (frozen, bootstrap) count as ancient.
 */
uint64
retl_widen_xid(TransactionId xid, FullTransactionId next)
{
	uint32		epoch = EpochFromFullTransactionId(next);

	if (!TransactionIdIsNormal(xid))
		return 0;
	if (xid > XidFromFullTransactionId(next))
	{
		if (epoch == 0)
			return 0;
		epoch--;
	}
	return ((uint64) epoch << 32) | xid;
}

/*
 * A row version's xmin as the 64-bit version its messageId mixes in (0 for
 * NULL or a special xid: the content id alone).
 */
uint64
retl_xmin_version(Datum xmin, bool isnull, FullTransactionId next)
{
	return isnull ? 0 : retl_widen_xid(DatumGetTransactionId(xmin), next);
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return (x > y) - (x < y);
}

/*
 * Serializes the current transaction snapshot, in 64-bit xids, together
 * with the identity of the relation it was taken for.  Must be called
 * inside a transaction.
 */
bytea *
retl_snapshot_capture(Oid relid)
{
	Snapshot	snap = GetTransactionSnapshot();
	FullTransactionId next = ReadNextFullTransactionId();
	int			nsub = snap->subxcnt < 0 ? 0 : snap->subxcnt;
	int			nall = snap->xcnt + nsub;
	Size		len = VARHDRSZ + sizeof(RetlSnapHeader) + nall * sizeof(uint64);
	bytea	   *result = palloc0(len);
	RetlSnapHeader *h = (RetlSnapHeader *) VARDATA(result);
	uint64	   *xids = (uint64 *) (h + 1);

	SET_VARSIZE(result, len);
	h->magic = RETL_SNAP_MAGIC;
	h->flags = (snap->suboverflowed ? RETL_SNAP_OVERFLOWED : 0) |
		(snap->takenDuringRecovery ? RETL_SNAP_RECOVERY : 0);
	h->sysid = GetSystemIdentifier();
	h->xmin = retl_widen_xid(snap->xmin, next);
	h->xmax = retl_widen_xid(snap->xmax, next);
	if (snap->xmax == XidFromFullTransactionId(next))
		h->xmax = U64FromFullTransactionId(next);
	h->relid = relid;
	h->relfilenode = OidIsValid(relid) ? get_rel_relfilenode_safe(relid) : 0;
	h->nxip = snap->xcnt;
	h->nsubxip = nsub;
	for (int i = 0; i < snap->xcnt; i++)
		xids[i] = retl_widen_xid(snap->xip[i], next);
	for (int i = 0; i < nsub; i++)
		xids[snap->xcnt + i] = retl_widen_xid(snap->subxip[i], next);
	qsort(xids, nall, sizeof(uint64), cmp_u64);
	return result;
}

/*
 * Parses a stored snapshot; raises an error for a blob that is not one.
 */
static void
snap_parse(bytea *blob, RetlSnap *snap)
{
	Size		len = VARSIZE_ANY_EXHDR(blob);
	const char *data = VARDATA_ANY(blob);

	if (len < sizeof(RetlSnapHeader))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("invalid retl cursor snapshot")));
	memcpy(&snap->h, data, sizeof(RetlSnapHeader));
	snap->nall = snap->h.nxip + snap->h.nsubxip;
	if (snap->h.magic != RETL_SNAP_MAGIC ||
		len != sizeof(RetlSnapHeader) + snap->nall * sizeof(uint64))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("invalid retl cursor snapshot")));
	snap->xip = palloc(Max(snap->nall, 1) * sizeof(uint64));
	memcpy(snap->xip, data + sizeof(RetlSnapHeader),
		   snap->nall * sizeof(uint64));
}

/*
 * The rule: was a row version with this raw xmin invisible to the stored
 * snapshot?  Over-sends when subxip cannot be trusted, never misses.
 */
static bool
snap_xmin_is_new(RetlSnap *snap, TransactionId raw_xmin)
{
	uint64		x = retl_widen_xid(raw_xmin, snap->next);

	if (x >= snap->h.xmax)
		return true;
	if (x < snap->h.xmin)
		return false;
	if (snap->h.flags & (RETL_SNAP_OVERFLOWED | RETL_SNAP_RECOVERY))
		return true;
	return bsearch(&x, snap->xip, snap->nall, sizeof(uint64), cmp_u64) != NULL;
}

/*
 * SQL: retl._xmin_is_new(xid, bytea).  The reader's filter.  The parsed
 * snapshot and the widening reference are cached for the whole scan.
 */
Datum
retl_xmin_is_new(PG_FUNCTION_ARGS)
{
	RetlSnap   *snap = (RetlSnap *) fcinfo->flinfo->fn_extra;

	if (snap == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		snap = palloc0(sizeof(RetlSnap));
		snap_parse(PG_GETARG_BYTEA_PP(1), snap);
		snap->next = ReadNextFullTransactionId();
		MemoryContextSwitchTo(old);
		fcinfo->flinfo->fn_extra = snap;
	}
	PG_RETURN_BOOL(snap_xmin_is_new(snap, DatumGetTransactionId(PG_GETARG_DATUM(0))));
}

/*
 * SQL: retl.snapshot_text(bytea).  Shows a cursor as xmin:xmax:xip, the
 * format of pg_snapshot, so that DBAs can compare it with txid functions.
 */
Datum
retl_snapshot_text(PG_FUNCTION_ARGS)
{
	RetlSnap	snap;
	StringInfoData buf;

	snap_parse(PG_GETARG_BYTEA_PP(0), &snap);
	initStringInfo(&buf);
	appendStringInfo(&buf, UINT64_FORMAT ":" UINT64_FORMAT ":",
					 snap.h.xmin, snap.h.xmax);
	for (int i = 0; i < snap.nall; i++)
		appendStringInfo(&buf, "%s" UINT64_FORMAT, i > 0 ? "," : "",
						 snap.xip[i]);
	PG_RETURN_TEXT_P(cstring_to_text(buf.data));
}

/*
 * Checks whether an incremental run may trust the stored cursor.  Returns
 * NULL when it may, otherwise the reason the run must be full.
 */
const char *
retl_snapshot_guard(bytea *blob, Oid relid)
{
	RetlSnap	snap;
	uint64		next = U64FromFullTransactionId(ReadNextFullTransactionId());

	if (blob == NULL)
		return "no cursor yet";
	snap_parse(blob, &snap);
	if (snap.h.sysid != GetSystemIdentifier())
		return "cursor comes from another cluster (system identifier changed)";
	if (next < snap.h.xmax)
		return "next transaction id went backwards (point-in-time restore)";
	if (next - snap.h.xmin >= ((uint64) 1 << 31))
		return "cursor is older than 2^31 transactions";
	if (snap.h.relid != relid)
		return "source relation was replaced";
	if (snap.h.relfilenode != get_rel_relfilenode_safe(relid))
		return get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE ||
			has_subclass(relid)
			? "the set of partitions changed, or a partition was truncated or rewritten"
			: "source was truncated or rewritten (relfilenode changed)";
	return NULL;
}

/*
 * The relfilenode of one relation (0 for a partitioned table), or
 * InvalidOid when it is gone.
 */
static Oid
leaf_filenode(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			node;

	if (!HeapTupleIsValid(tup))
		return InvalidOid;
	node = ((Form_pg_class) GETSTRUCT(tup))->relfilenode;
	ReleaseSysCache(tup);
	return node;
}

/*
 * Returns a signature of the relation's storage: its relfilenode, or for a
 * partitioned table or a table with inheritance children a hash of every
 * leaf's oid and relfilenode, so that a TRUNCATE, a rewrite, or an attached
 * or detached partition or child changes it.
 * Views and relations that are gone give 0.
 */
static Oid
get_rel_relfilenode_safe(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Form_pg_class form;
	Oid			result;
	List	   *leaves;
	ListCell   *lc;
	uint32		h = 0;

	if (!HeapTupleIsValid(tup))
		return InvalidOid;
	form = (Form_pg_class) GETSTRUCT(tup);
	result = form->relfilenode;
	if (form->relkind != RELKIND_PARTITIONED_TABLE && !form->relhassubclass)
	{
		ReleaseSysCache(tup);
		return result;
	}
	ReleaseSysCache(tup);
	leaves = find_all_inheritors(relid, NoLock, NULL);
	/* a table whose children are all gone again: its relfilenode */
	if (list_length(leaves) == 1)
		return result;
	foreach(lc, leaves)
	{
		Oid			leaf = lfirst_oid(lc);
		Oid			node = leaf == relid ? result : leaf_filenode(leaf);
		uint32		pair[2] = {leaf, node};

		/* order-independent: the inheritor list's order is not guaranteed */
		h += hash_bytes((const unsigned char *) pair, sizeof(pair));
	}
	return (Oid) (h == 0 ? 1 : h);
}
