/*-------------------------------------------------------------------------
 *
 * retl.h
 *	  Shared declarations of the retl extension: GUCs, shared memory,
 *	  snapshots and destination kinds (the JSON encoder, mappings and
 *	  events: build.h).
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_H
#define RETL_H

#include "postgres.h"

#include "access/transam.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#define RETL_VERSION "0.4"
#define RETL_MAX_DATABASES 64

/* GUCs (retl.c) */
extern int	retl_naptime_ms;
extern int	retl_drain_timeout_ms;
extern char *retl_history_retention;

/* ---------- shared memory and wake-ups (retl.c) ---------- */
extern void retl_request_wake_at_commit(void);
extern void retl_launcher_attach(void);
extern Oid	retl_next_requested_db(bool *crashed);
extern void retl_worker_attach(Oid dboid);
extern void retl_worker_detach(Oid dboid);
extern void retl_request_db(Oid dboid);
extern bool retl_release_db(Oid dboid);
extern bool retl_take_overflow(void);
extern void retl_set_db_waiting(Oid dboid, bool waiting);
extern int	retl_ask_idle_to_leave(void);
extern bool retl_worker_idle(Oid dboid, bool idle);

/* ---------- privileges (privileges.c) ---------- */
extern void retl_privileges_init(void);

/* ---------- launcher and worker entry points ---------- */
extern PGDLLEXPORT void retl_launcher_main(Datum arg);
extern PGDLLEXPORT void retl_worker_main(Datum arg);

/* ---------- JSON encoder, mappings and events: build.h ---------- */
#include "build.h"

extern int64 retl_diff_fingerprint(const char *message_id);	/* diff.c */
extern int64 retl_diff_version_of(int64 fp, int64 stored_fp,
								  int64 stored_previous);	/* diff.c */
extern Oid	retl_catalog_owner(void);	/* privileges.c */

/* ---------- snapshots and the xmin cursor (snapshot.c) ---------- */
extern bytea *retl_snapshot_capture(Oid relid);
extern const char *retl_snapshot_guard(bytea *blob, Oid relid);
extern uint64 retl_widen_xid(TransactionId xid, FullTransactionId next);
extern uint64 retl_xmin_version(Datum xmin, bool isnull, FullTransactionId next);

/* ---------- input that raises no error (noerror.c): build.h ---------- */

/* ---------- options helpers: dest/json.h ---------- */
#include "json.h"

#endif							/* RETL_H */
