/*-------------------------------------------------------------------------
 *
 * retl.h
 *	  What every part of retl shares: the version, the GUCs, shared memory
 *	  and wake-ups (retl.c), the privileges module and the processes'
 *	  entry points.  Each layer of the data path has its own header
 *	  (src/README, "Layers").
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

#define RETL_VERSION "0.5"
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
extern Oid	retl_privileges_catalog_owner(void);

/* ---------- launcher and worker entry points ---------- */
extern PGDLLEXPORT void retl_launcher_main(Datum arg);
extern PGDLLEXPORT void retl_worker_main(Datum arg);

#endif							/* RETL_H */
