/*-------------------------------------------------------------------------
 *
 * store_internal.h
 *	  What the files of the store share: a statement and its saved plan.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_STORE_INTERNAL_H
#define RETL_STORE_INTERNAL_H

#include "store.h"

#include "executor/spi.h"
#include "utils/array.h"

#define RETL_STORE_MAX_ARGS 11

/*
 * One statement against the catalog and its plan, prepared at its first
 * use and kept for the worker's life (SPI_keepplan).  The plan cache
 * checks it before each use: after DDL on the tables (an extension
 * update, or a drop and create), it is parsed and planned again.
 * cursor_options CURSOR_OPT_CUSTOM_PLAN plans each call with its
 * arguments, keeping only the parse.
 */
typedef struct RetlStoreStmt
{
	const char *sql;
	int			nargs;
	Oid			types[RETL_STORE_MAX_ARGS];
	int			cursor_options;
	bool		read_only;
	SPIPlanPtr	plan;
} RetlStoreStmt;

extern SPIPlanPtr retl_store_prepare(RetlStoreStmt *stmt);
extern void retl_store_exec(RetlStoreStmt *stmt, Datum *values,
							const char *nulls, int expect);
extern void retl_store_exec_id(RetlStoreStmt *stmt, int64 id, int expect);
extern int	retl_store_result_ids(int64 *ids);
extern ArrayType *retl_store_text_array(char **strs, int n, bool allow_nulls);
extern ArrayType *retl_store_int8_array(const int64 *vals, int n);

#endif							/* RETL_STORE_INTERNAL_H */
