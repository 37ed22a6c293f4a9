/*-------------------------------------------------------------------------
 *
 * build.h
 *	  What the build layer exports: the JSON encoder (jsonout.c,
 *	  jsontype.c, jsontime.c), mappings (mapping.c), events (event.c),
 *	  their encoding for the destination and UTF-8 (encode.c), and text
 *	  converted to UTF-8 without an error (noerror.c).
 *
 * Includes retl.h (and so postgres.h) itself.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_BUILD_H
#define RETL_BUILD_H

#include "retl.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

struct RetlRun;

/* ---------- JSON encoder (jsonout.c, jsontype.c, jsontime.c) ---------- */

/*
 * How one SQL type is written as JSON.  Looked up once per column, then
 * reused for every row, so that the per-row path does no catalog access.
 */
typedef struct RetlJsonType RetlJsonType;

extern RetlJsonType *retl_json_type_get(Oid typid, MemoryContext cxt);
extern void retl_json_append_datum(StringInfo buf, Datum value,
								   RetlJsonType *type);
extern void retl_json_append_timestamptz(StringInfo buf, TimestampTz ts);

/* ---------- mappings and event building (mapping.c, event.c) ---------- */

/*
 * One field of the event tree: a leaf reads a column or writes a constant;
 * an inner node is a JSON object.  key_json is the pre-escaped ',"key":'.
 */
typedef struct RetlMapNode
{
	char	   *key;
	StringInfoData key_json;
	int			column;			/* select-list index, or -1 */
	char	   *constant;		/* JSON text of a constant, or NULL */
	bool		force_string;	/* userId, anonymousId, event: always strings */
	struct RetlMapNode *children;
	struct RetlMapNode *next;
} RetlMapNode;

/*
 * A compiled mapping: which columns of the source are read, and the tree of
 * event fields that the JSON builder walks for every row.
 */
typedef struct RetlMapping
{
	bool		track;			/* event_type = 'track' */
	bool		keep_nulls;		/* option nulls = keep */
	int			ncolumns;		/* columns selected from the source */
	char	  **colnames;		/* their names, in select order */
	Oid		   *coltypes;
	RetlJsonType **coljson;
	int16	   *coltyplen;		/* their types' typlen and typbyval, for */
	bool	   *colbyval;		/* fingerprints of column values */
	int			pk_column;		/* index into colnames, or -1 */
	FmgrInfo	pk_out;			/* output function of the primary key */
	bool		has_timestamp;	/* mapping sets "timestamp" */
	bool		has_event;
	bool		drop_unmapped;
	int			xmin_column;	/* option xmin_column's index, or -1 */
	char		relkind;
	char	   *relname;		/* quoted, schema-qualified */
	RetlMapNode *root;			/* the event object */
	RetlMapNode *traits;		/* its "traits" object, or NULL */
	RetlMapNode *context;		/* its "context" object, or NULL */
} RetlMapping;

extern RetlMapping *retl_mapping_compile(Oid relid, bool track,
										 Jsonb *mapping, const char *pk,
										 Jsonb *options);
extern char *retl_mapping_select_list(RetlMapping *map);
extern int	retl_mapping_version_column(RetlMapping *map, bool diff,
										char **select_list);

/* Per-run values that every event of the run carries. */
typedef struct RetlEventCtx
{
	int64		sync_id;
	char	   *tail;			/* ,"library":...,"sources":{...}} */
	int			tail_len;
	char		now[32];		/* quoted originalTimestamp and sentAt */
	char		stamps[2 * 32 + 40];	/* ","originalTimestamp":now,"sentAt":now */
	int			stamps_len;
	char		stamp_ts[32 + 16];	/* ,"timestamp":now */
	int			stamp_ts_len;
	StringInfoData scratch;		/* for primary keys and forced strings */
} RetlEventCtx;

#define RETL_MESSAGE_ID_LEN 36

extern void retl_event_ctx_init(RetlEventCtx *ctx, int64 sync_id,
								const char *sync_name, int64 run_id);
extern void retl_event_ctx_set_now(RetlEventCtx *ctx, TimestampTz now);

extern int	retl_event_build(StringInfo buf, RetlMapping *map,
							 RetlEventCtx *ctx, Datum *values, bool *nulls,
							 char *message_id);
extern void retl_event_version_id(char *message_id, uint64 version);
extern int64 retl_event_fingerprint(RetlMapping *map, int64 sync_id,
									Datum *values, bool *nulls);
extern void retl_event_identity(StringInfo buf, RetlMapping *map,
								RetlEventCtx *ctx, Datum *values, bool *nulls);

/* ---------- a run's events: encoded, then batched (encode.c) ---------- */
extern void retl_encode_event(struct RetlRun *run);
extern void retl_encode_close_batch(struct RetlRun *run);
extern void retl_encode_reject(struct RetlRun *run, const char *pk,
							   const char *payload, int len,
							   const char *error);
extern bool retl_encode_add(struct RetlRun *run, const char *pk,
							int64 failed_id);
extern void retl_encode_add_diff(struct RetlRun *run, const char *pk,
								 int64 failed_id, int64 fp, bool deletion);

/* ---------- UTF-8 without an error (noerror.c) ---------- */
extern char *retl_describe_char(const char *s, int len, int at, int encoding);
extern char *retl_to_utf8(const char *s, int len, StringInfo out);

#endif							/* RETL_BUILD_H */
