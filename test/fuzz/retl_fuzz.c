/*-------------------------------------------------------------------------
 *
 * retl_fuzz.c
 *	  libFuzzer harness for retl's mapping parser (src/build/mapping.c) and JSON
 *	  builder (src/build/jsonout.c, jsontype.c, jsontime.c, event.c), run
 *	  inside a PostgreSQL backend.
 *
 * The code under test needs the backend (palloc, jsonb, the catalogs, the
 * types' input and output functions), so the fuzzer runs in one: this file
 * and those three sources are built, instrumented for coverage, into the
 * loadable module retl_fuzz.so (test/fuzz/Makefile), whose SQL function
 * retl_fuzz() hands control to libFuzzer's LLVMFuzzerRunDriver().  libFuzzer
 * then calls fuzz_one() for every input until its time is up and exits the
 * process (0 when nothing was found); test/fuzz/run does that in a
 * single-user backend ("postgres --single") of a scratch cluster.
 *
 * An input is text, one part per line:
 *
 *	 line 1   "track" or "identify" (only the first byte counts: 't' is
 *			  track; a 'z' in the word, as in "track/z", stores long values
 *			  compressed), then optionally a TAB and the primary key column,
 *			  then optionally a TAB and the sync's name
 *	 line 2   the mapping, as JSON
 *	 line 3   the options, as JSON; an empty line means none (NULL)
 *	 line 4.. one value per line for the columns the compiled mapping reads,
 *			  in its select order, as the type's text input; \N is SQL NULL,
 *			  and so are a missing line and a value the type rejects;
 *			  \n \r \t \\ and \xHH are decoded
 *
 * The mapping is compiled against the relation passed to retl_fuzz() (a
 * table with columns of many types, test/fuzz/setup.sql), the values are
 * read with the column types' input functions and stored in a heap tuple
 * as a table would store them, and the row is built into an event.
 * ERRORs raised while the mapping is compiled or the row is read are
 * expected (bad mappings, bad values) and swallowed: each input runs in a
 * subtransaction that is rolled back on error, so that locks and relcache
 * references do not pile up, and in a memory context that is reset after
 * it.  An internal error (XX000), an ERROR raised after the row was read
 * and stored (other than the SQLSTATEs of build_sqlstates), a crash, an
 * abort or a FATAL is a bug, and so is
 * an event that is not valid JSON, has a duplicated key where retl writes
 * its own keys, or differs between two builds of the same row: those call
 * abort(), which libFuzzer reports like any crash.
 *
 *-------------------------------------------------------------------------
 */
/* dladdr() and Dl_info, for the crash stacks */
#define _GNU_SOURCE

#include "retl.h"
#include "build.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/toast_compression.h"
#include "access/toast_internals.h"
#include "access/tupdesc.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/typcache.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(retl_fuzz);

/* libFuzzer's entry point for a program that has its own main() */
extern int	LLVMFuzzerRunDriver(int *argc, char ***argv,
								int (*cb) (const uint8_t *data, size_t size));

/* libFuzzer calls this (a weak symbol there) to print a crash's stack */
extern void __sanitizer_print_stack_trace(void);

/* libFuzzer's hooks for the comparisons that decide the fuzzed code's path */
extern void __sanitizer_weak_hook_memcmp(void *pc, const void *a,
										 const void *b, size_t n, int result);
extern void __sanitizer_weak_hook_strcmp(void *pc, const char *a,
										 const char *b, int result);
extern void __sanitizer_weak_hook_strncmp(void *pc, const char *a,
										  const char *b, size_t n, int result);
extern void __sanitizer_weak_hook_strstr(void *pc, const char *haystack,
										 const char *needle, char *result);

/* cmp_hooks.h renames the fuzzed sources' calls to these */
extern int	retl_fuzz_memcmp(const void *a, const void *b, size_t n);
extern int	retl_fuzz_strcmp(const char *a, const char *b);
extern int	retl_fuzz_strncmp(const char *a, const char *b, size_t n);
extern char *retl_fuzz_strstr(const char *haystack, const char *needle);

/* One live column of the fuzzed relation, and how to read its values. */
typedef struct FuzzColumn
{
	char	   *name;
	Oid			typid;
	int32		typmod;
	FmgrInfo	input;			/* the type's input function */
	Oid			ioparam;
	int32		record_typmod;	/* composites: a blessed anonymous copy of
								 * the row type, or -1 */
} FuzzColumn;

/* An input's lines, consumed front to back. */
typedef struct FuzzReader
{
	const char *p;
	const char *end;
} FuzzReader;

/* State of the key checks of one event (see check_json). */
typedef struct EventCheck
{
	int			depth;			/* objects and arrays open */
	char	   *field;			/* last top-level key */
	bool		in_context;		/* inside the top-level "context" object */
	List	   *top;			/* top-level keys seen */
	List	   *context;		/* keys of "context" seen */
	char	   *dup;			/* first duplicated key, or NULL */
} EventCheck;

static Oid	fuzz_relid;
static FuzzColumn *fuzz_cols;
static int	fuzz_ncols;
static MemoryContext fuzz_cxt;
static bool fuzz_verbose;
static const uint8_t *fuzz_data;	/* the input being run, for reports */
static size_t fuzz_size;
static uint64 fuzz_inputs;
static uint64 fuzz_rejected;
static uint64 fuzz_errors;
static uint64 fuzz_events;

/*
 * Set once the input's row was read and stored: from then on (encoding
 * the values, building the events) an ERROR is a bug unless its SQLSTATE
 * is one of build_sqlstates.
 */
static bool fuzz_row_stored;

/*
 * The SQLSTATEs the builder may raise on a row it was given: a value or
 * an event over PostgreSQL's 1 GB limits (54000), nesting deeper than the
 * stack allows (54001), memory that runs out (53200).
 */
static const int build_sqlstates[] = {
	ERRCODE_PROGRAM_LIMIT_EXCEEDED,
	ERRCODE_STATEMENT_TOO_COMPLEX,
	ERRCODE_OUT_OF_MEMORY,
};

/*
 * Reports a bug that is not a crash (an invalid event, say) with the
 * input and the offending text, then aborts: libFuzzer catches SIGABRT,
 * saves the input as a crash-* file and exits non-zero.
 */
static void
fuzz_fail(const char *what, const char *text, int len)
{
	fprintf(stderr, "\nretl fuzz: BUG: %s\n", what);
	if (text != NULL)
		fprintf(stderr, "retl fuzz: output (%d bytes): %.*s\n", len, len, text);
	fprintf(stderr, "retl fuzz: input (%zu bytes): %.*s\n", fuzz_size,
			(int) fuzz_size, (const char *) fuzz_data);
	fflush(stderr);
	abort();
}

/*
 * Prints the stack of a crash, one frame per line as "module+0xoffset", so
 * that test/fuzz/run can symbolize the frames of retl_fuzz.so with
 * addr2line.  Without a sanitizer runtime, libFuzzer has no stack printer
 * of its own; it finds this one through its weak reference.
 */
void
__sanitizer_print_stack_trace(void)
{
	void	   *frames[64];
	int			n = backtrace(frames, lengthof(frames));

	for (int i = 0; i < n; i++)
	{
		Dl_info		info;

		if (dladdr(frames[i], &info) != 0 && info.dli_fname != NULL)
			fprintf(stderr, "    #%d %p in %s (%s+0x%lx)\n", i, frames[i],
					info.dli_sname ? info.dli_sname : "??", info.dli_fname,
					(unsigned long) ((char *) frames[i] -
									 (char *) info.dli_fbase));
		else
			fprintf(stderr, "    #%d %p\n", i, frames[i]);
	}
}

/*
 * Prints the harness's own counters when libFuzzer exits normally, so that
 * a run shows how many inputs got as far as an event rather than an error.
 */
static void
print_counters(void)
{
	fprintf(stderr,
			"retl fuzz: " UINT64_FORMAT " inputs: " UINT64_FORMAT
			" events built, " UINT64_FORMAT " raised an error, " UINT64_FORMAT
			" rejected (not UTF-8 text)\n",
			fuzz_inputs, fuzz_events, fuzz_errors, fuzz_rejected);
}

/* ---------- comparison hooks (see cmp_hooks.h) ---------- */

/*
 * memcmp for the fuzzed sources: the real one, reported to libFuzzer so
 * that it can learn the bytes an input was compared with.
 */
int
retl_fuzz_memcmp(const void *a, const void *b, size_t n)
{
	int			r = memcmp(a, b, n);

	__sanitizer_weak_hook_memcmp(__builtin_return_address(0), a, b, n, r);
	return r;
}

/* strcmp for the fuzzed sources, reported to libFuzzer (as memcmp above) */
int
retl_fuzz_strcmp(const char *a, const char *b)
{
	int			r = strcmp(a, b);

	__sanitizer_weak_hook_strcmp(__builtin_return_address(0), a, b, r);
	return r;
}

/* strncmp for the fuzzed sources, reported to libFuzzer (as memcmp above) */
int
retl_fuzz_strncmp(const char *a, const char *b, size_t n)
{
	int			r = strncmp(a, b, n);

	__sanitizer_weak_hook_strncmp(__builtin_return_address(0), a, b, n, r);
	return r;
}

/* strstr for the fuzzed sources, reported to libFuzzer (as memcmp above) */
char *
retl_fuzz_strstr(const char *haystack, const char *needle)
{
	char	   *r = strstr(haystack, needle);

	__sanitizer_weak_hook_strstr(__builtin_return_address(0), haystack,
								 needle, r);
	return r;
}

/* ---------- reading an input ---------- */

/*
 * Returns the next line of the input (without its newline) in *line and
 * *len; false when the input is used up.
 */
static bool
next_line(FuzzReader *in, const char **line, int *len)
{
	const char *nl;

	if (in->p >= in->end)
		return false;
	nl = memchr(in->p, '\n', in->end - in->p);
	if (nl == NULL)
		nl = in->end;
	*line = in->p;
	*len = nl - in->p;
	in->p = nl < in->end ? nl + 1 : nl;
	return true;
}

/*
 * Returns the value of a hexadecimal digit, or -1.
 */
static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Decodes a value line into a palloc'd C string: \n \r \t \\ and \xHH
 * become the bytes they name, any other backslash stays as it is.  Raises
 * an error when the result is not valid in the database encoding, as the
 * server would for text coming from a client.
 */
static char *
decode_value(const char *s, int len)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < len; i++)
	{
		char		c = s[i];

		if (c == '\\' && i + 1 < len)
		{
			char		e = s[i + 1];

			if (e == 'n' || e == 'r' || e == 't' || e == '\\')
			{
				appendStringInfoChar(&buf, e == 'n' ? '\n' : e == 'r' ? '\r' :
									 e == 't' ? '\t' : '\\');
				i++;
				continue;
			}
			if (e == 'x' && i + 3 < len &&
				hex_value(s[i + 2]) >= 0 && hex_value(s[i + 3]) >= 0)
			{
				appendStringInfoChar(&buf, (char) (hex_value(s[i + 2]) * 16 +
												   hex_value(s[i + 3])));
				i += 3;
				continue;
			}
		}
		appendStringInfoChar(&buf, c);
	}
	(void) pg_verifymbstr(buf.data, buf.len, false);
	return buf.data;
}

/*
 * Parses a line of JSON text into a jsonb value (errors are the input's).
 */
static Jsonb *
parse_jsonb(const char *s, int len)
{
	char	   *text = pnstrdup(s, len);

	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
}

/*
 * Returns the fuzzed relation's column of that name.  The mapping compiler
 * only selects columns of the relation, so not finding it, or finding it
 * with another type, is a bug of the compiler.
 */
static FuzzColumn *
find_column(const char *name, Oid typid)
{
	for (int i = 0; i < fuzz_ncols; i++)
		if (strcmp(fuzz_cols[i].name, name) == 0)
		{
			if (fuzz_cols[i].typid != typid)
				fuzz_fail("the compiled mapping gives a column the wrong type",
						  name, strlen(name));
			return &fuzz_cols[i];
		}
	fuzz_fail("the compiled mapping selects a column that does not exist",
			  name, strlen(name));
	return NULL;				/* keep compiler quiet */
}

/*
 * Reads the value of select-list column i from the next line: NULL for a
 * missing line or \N, else the decoded text through the type's input
 * function (with the column's typmod, as an INSERT would).  A value that
 * its type rejects is NULL too, rather than the end of the input: the rest
 * of the row still reaches the builder, which matters to the fuzzer (most
 * mutations of a row break one value).  The input function runs in a
 * subtransaction of its own, rolled back when it fails.
 */
static void
read_value(FuzzReader *in, RetlMapping *map, int i, Datum *value, bool *isnull)
{
	FuzzColumn *col = find_column(map->colnames[i], map->coltypes[i]);
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	const char *line;
	int			len;

	*value = (Datum) 0;
	*isnull = true;
	if (!next_line(in, &line, &len) ||
		(len == 2 && memcmp(line, "\\N", 2) == 0))
		return;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		*value = InputFunctionCall(&col->input, decode_value(line, len),
								   col->ioparam, col->typmod);
		*isnull = false;
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		*value = (Datum) 0;
		*isnull = true;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
}

/*
 * Stores the row as the reader gets it from a table: formed into a heap
 * tuple (short values get 1-byte headers) and deformed again.  With
 * compress, every varlena of 32 bytes or more that compresses is stored
 * compressed inline first, as the toaster does with wide rows, so that the
 * builder's detoasting paths run too.
 */
static void
store_row(RetlMapping *map, Datum *values, bool *nulls, bool compress)
{
	TupleDesc	desc = CreateTemplateTupleDesc(map->ncolumns);
	HeapTuple	tuple;

	for (int i = 0; i < map->ncolumns; i++)
	{
		FuzzColumn *col = find_column(map->colnames[i], map->coltypes[i]);

		TupleDescInitEntry(desc, i + 1, NULL, map->coltypes[i], col->typmod, 0);
		if (compress && !nulls[i] && TupleDescAttr(desc, i)->attlen == -1 &&
			VARSIZE_ANY(DatumGetPointer(values[i])) >= 32)
		{
			Datum		z = toast_compress_datum(values[i],
												 TOAST_PGLZ_COMPRESSION);

			if (DatumGetPointer(z) != NULL)
				values[i] = z;
		}
	}
	tuple = heap_form_tuple(desc, values, nulls);
	heap_deform_tuple(tuple, desc, values, nulls);
}

/* ---------- checking what the builder writes ---------- */

/*
 * Records key name in *seen, noting it in st->dup if it was seen already.
 */
static void
note_key(EventCheck *st, List **seen, char *name)
{
	ListCell   *lc;

	foreach(lc, *seen)
		if (strcmp(lfirst(lc), name) == 0 && st->dup == NULL)
			st->dup = name;
	*seen = lappend(*seen, name);
}

/* JSON parser callback: an object starts ("context" at the top level?) */
static void
check_object_start(void *state)
{
	EventCheck *st = state;

	st->depth++;
	if (st->depth == 2 && st->field != NULL &&
		strcmp(st->field, "context") == 0)
		st->in_context = true;
}

/* JSON parser callback: an object ends */
static void
check_object_end(void *state)
{
	EventCheck *st = state;

	if (st->depth == 2)
		st->in_context = false;
	st->depth--;
}

/* JSON parser callback: an array starts */
static void
check_array_start(void *state)
{
	((EventCheck *) state)->depth++;
}

/* JSON parser callback: an array ends */
static void
check_array_end(void *state)
{
	((EventCheck *) state)->depth--;
}

/*
 * JSON parser callback: a key.  Keys of the event object and of its
 * "context" are where retl writes its own fields next to the mapped ones,
 * so a duplicate there is a bug (deeper down, json column values may
 * legitimately repeat keys).
 */
static void
check_field(void *state, char *fname, bool isnull)
{
	EventCheck *st = state;

	if (st->depth == 1)
	{
		note_key(st, &st->top, fname);
		st->field = fname;
	}
	else if (st->depth == 2 && st->in_context)
		note_key(st, &st->context, fname);
}

/*
 * Returns whether a name is in a list of C strings.
 */
static bool
has_key(List *keys, const char *name)
{
	ListCell   *lc;

	foreach(lc, keys)
		if (strcmp(lfirst(lc), name) == 0)
			return true;
	return false;
}

/*
 * Returns a copy of valid JSON text whose \u escapes all de-escape: \u0000
 * becomes \u0001 and a surrogate \uD800-\uDFFF becomes \uE800-\uEFFF.
 * PostgreSQL's JSON parser cannot de-escape those when it de-escapes
 * (it makes UTF-8 C strings), though they are valid JSON and json columns
 * hold them; the key checks need de-escaped keys, and the keys retl writes
 * itself never have such escapes (it escapes only control characters, and
 * no key can hold a NUL).
 */
static char *
decodable_copy(const char *text, int len)
{
	char	   *copy = pnstrdup(text, len);

	for (char *p = copy; *p; p++)
	{
		if (*p != '\\' || p[1] == '\0')
			continue;
		p++;					/* the escaped character */
		if (*p != 'u' || strlen(p) < 5)
			continue;
		if (strncmp(p + 1, "0000", 4) == 0)
			p[4] = '1';
		else if ((p[1] == 'd' || p[1] == 'D') && strchr("89abcdefABCDEF", p[2]))
			p[1] = 'e';
	}
	return copy;
}

/*
 * Checks that text is one valid JSON value with no NUL byte in it; when
 * event is true, also that it is an object with retl's own fields, each
 * once.  A failure is a bug of the builder and aborts.
 */
static void
check_json(const char *text, int len, bool event)
{
	EventCheck	st = {0};
	JsonSemAction sem = {0};
	JsonLexContext *lex;
	JsonParseErrorType rc;
	static const char *const required[] = {
		"type", "messageId", "originalTimestamp", "sentAt", "context", NULL
	};

	if ((int) strlen(text) != len)
		fuzz_fail("the JSON text has a NUL byte, or a wrong length", text, len);

	/* the syntax, escapes left as they are */
	lex = makeJsonLexContextCstringLen(pstrdup(text), len,
									   GetDatabaseEncoding(), false);
	rc = pg_parse_json(lex, &nullSemAction);
	if (rc != JSON_SUCCESS)
		fuzz_fail(psprintf("the builder wrote invalid JSON: %s",
						   json_errdetail(rc, lex)), text, len);
	if (!event)
		return;

	/* the keys, de-escaped */
	sem.semstate = &st;
	sem.object_start = check_object_start;
	sem.object_end = check_object_end;
	sem.array_start = check_array_start;
	sem.array_end = check_array_end;
	sem.object_field_start = check_field;
	lex = makeJsonLexContextCstringLen(decodable_copy(text, len), len,
									   GetDatabaseEncoding(), true);
	rc = pg_parse_json(lex, &sem);
	if (rc != JSON_SUCCESS)
		fuzz_fail(psprintf("the event's escapes do not decode: %s",
						   json_errdetail(rc, lex)), text, len);
	if (text[0] != '{')
		fuzz_fail("the event is not a JSON object", text, len);
	if (st.dup != NULL)
		fuzz_fail(psprintf("the event has the key \"%s\" twice", st.dup),
				  text, len);
	for (int i = 0; required[i] != NULL; i++)
		if (!has_key(st.top, required[i]))
			fuzz_fail(psprintf("the event has no \"%s\"", required[i]),
					  text, len);
	if (!has_key(st.context, "library") || !has_key(st.context, "sources"))
		fuzz_fail("the event's context has no library or sources", text, len);
}

/*
 * Encodes every non-NULL value on its own, as the column's encoder and,
 * for composites, also as an anonymous record (the RJ_RECORD path, which
 * no relation column can reach), and checks that each is valid JSON.
 */
static void
check_values(RetlMapping *map, Datum *values, bool *nulls)
{
	RetlJsonType *record = retl_json_type_get(RECORDOID, CurrentMemoryContext);
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < map->ncolumns; i++)
	{
		FuzzColumn *col;

		if (nulls[i])
			continue;
		resetStringInfo(&buf);
		retl_json_append_datum(&buf, values[i], map->coljson[i]);
		check_json(buf.data, buf.len, false);

		col = find_column(map->colnames[i], map->coltypes[i]);
		if (col->record_typmod >= 0)
		{
			HeapTupleHeader src = DatumGetHeapTupleHeader(values[i]);
			uint32		size = HeapTupleHeaderGetDatumLength(src);
			HeapTupleHeader td = palloc(size);

			memcpy(td, src, size);
			HeapTupleHeaderSetTypeId(td, RECORDOID);
			HeapTupleHeaderSetTypMod(td, col->record_typmod);
			resetStringInfo(&buf);
			retl_json_append_datum(&buf, PointerGetDatum(td), record);
			check_json(buf.data, buf.len, false);
		}
	}
}

/*
 * Builds the row's event twice, the second time after other text in the
 * buffer (as the worker appends events to a batch), and checks the event
 * and that both builds agree, messageId included.
 */
static void
build_events(RetlMapping *map, Datum *values, bool *nulls,
			 const char *sync_name)
{
	static const char prefix[] = "[{\"x\":1},";
	RetlEventCtx ctx;
	StringInfoData a,
				b;
	char		id_a[RETL_MESSAGE_ID_LEN + 1];
	char		id_b[RETL_MESSAGE_ID_LEN + 1];

	retl_event_ctx_init(&ctx, 42, sync_name, 7);
	/* 2024-01-02 03:04:05.678 UTC: a fixed time, for identical builds */
	retl_event_ctx_set_now(&ctx, INT64CONST(757479845678000));
	initStringInfo(&a);
	retl_event_build(&a, map, &ctx, values, nulls, id_a);
	initStringInfo(&b);
	appendStringInfoString(&b, prefix);
	retl_event_build(&b, map, &ctx, values, nulls, id_b);

	if (strlen(id_a) != RETL_MESSAGE_ID_LEN)
		fuzz_fail("the messageId has the wrong length", id_a, strlen(id_a));
	if (strcmp(id_a, id_b) != 0 || b.len - (int) strlen(prefix) != a.len ||
		memcmp(a.data, b.data + strlen(prefix), a.len) != 0)
		fuzz_fail("two builds of the same row differ", b.data, b.len);
	check_json(a.data, a.len, true);
	if (strstr(a.data, psprintf("\"messageId\":\"%s\"", id_a)) == NULL)
		fuzz_fail("the event does not carry its messageId", a.data, a.len);
	fuzz_events++;
	if (fuzz_verbose)
		fprintf(stderr, "retl fuzz: event: %s\n", a.data);
}

/*
 * Runs one input: header, mapping and options, compiled by the mapping
 * compiler; then the row, built into events.  Errors propagate to
 * fuzz_one().
 */
static void
run_input(const char *data, size_t size)
{
	FuzzReader	in = {data, data + size};
	const char *line;
	int			len;
	bool		track;
	bool		compress;
	char	   *pk = NULL;
	const char *sync_name = "fuzz";
	Jsonb	   *mapping;
	Jsonb	   *options = NULL;
	RetlMapping *map;
	Datum	   *values;
	bool	   *nulls;
	const char *tab;
	char	   *select_list;

	/* line 1: event type, primary key, sync name */
	if (!next_line(&in, &line, &len) || len == 0)
		return;
	track = line[0] == 't';
	tab = memchr(line, '\t', len);
	compress = memchr(line, 'z', tab ? tab - line : len) != NULL;
	if (tab != NULL)
	{
		const char *rest = tab + 1;
		int			restlen = len - (rest - line);
		const char *tab2 = memchr(rest, '\t', restlen);
		int			pklen = tab2 ? tab2 - rest : restlen;

		if (pklen > 0)
			pk = pnstrdup(rest, pklen);
		if (tab2 != NULL)
			sync_name = pnstrdup(tab2 + 1, len - (tab2 + 1 - line));
	}

	/* lines 2 and 3: mapping and options */
	if (!next_line(&in, &line, &len))
		return;
	mapping = parse_jsonb(line, len);
	if (next_line(&in, &line, &len) && len > 0)
		options = parse_jsonb(line, len);

	map = retl_mapping_compile(fuzz_relid, track, mapping, pk, options);
	select_list = retl_mapping_select_list(map);
	if (fuzz_verbose)
		fprintf(stderr, "retl fuzz: values are read for: %s\n", select_list);

	/* the row, then the events */
	values = palloc0(Max(map->ncolumns, 1) * sizeof(Datum));
	nulls = palloc0(Max(map->ncolumns, 1) * sizeof(bool));
	for (int i = 0; i < map->ncolumns; i++)
		read_value(&in, map, i, &values[i], &nulls[i]);
	store_row(map, values, nulls, compress);
	fuzz_row_stored = true;
	check_values(map, values, nulls);
	build_events(map, values, nulls, sync_name);
}

/*
 * Decides whether an ERROR that an input raised is a bug: any internal
 * error (XX000, an elog() that should be unreachable), and any error
 * raised after the row was read and stored whose SQLSTATE is not in
 * build_sqlstates.  A bug aborts, with the error, through fuzz_fail().
 */
static void
check_error(ErrorData *edata)
{
	const char *what = NULL;

	if (edata->sqlerrcode == ERRCODE_INTERNAL_ERROR)
		what = "an internal error (XX000)";
	else if (fuzz_row_stored)
	{
		what = "an error while building a stored row";
		for (int i = 0; i < lengthof(build_sqlstates); i++)
			if (edata->sqlerrcode == build_sqlstates[i])
				what = NULL;
	}
	if (what != NULL)
		fuzz_fail(psprintf("%s: SQLSTATE %s: %s", what,
						   unpack_sql_state(edata->sqlerrcode),
						   edata->message),
				  NULL, 0);
}

/*
 * libFuzzer's callback: runs one input in a subtransaction and a fresh
 * memory context.  An ERROR raised while the mapping is compiled or the
 * row is read (a bad mapping or value) is an expected outcome: it is
 * flushed and the subtransaction rolled back, releasing whatever the
 * failed code held; check_error() says which ERRORs are bugs.  Inputs
 * that are not valid
 * UTF-8 are rejected (-1: libFuzzer keeps them out of the corpus), as the
 * server never hands such text to retl.
 */
static int
fuzz_one(const uint8_t *data, size_t size)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;

	fuzz_inputs++;
	if (!pg_verifymbstr((const char *) data, size, true))
	{
		fuzz_rejected++;
		return -1;
	}
	fuzz_data = data;
	fuzz_size = size;
	fuzz_row_stored = false;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(fuzz_cxt);
	PG_TRY();
	{
		run_input((const char *) data, size);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(fuzz_cxt);
		fuzz_errors++;
		edata = CopyErrorData();
		if (fuzz_verbose)
			fprintf(stderr, "retl fuzz: error: %s: %s\n",
					unpack_sql_state(edata->sqlerrcode), edata->message);
		check_error(edata);
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	MemoryContextReset(fuzz_cxt);
	fuzz_data = NULL;
	fuzz_size = 0;
	return 0;
}

/* ---------- setup and the SQL entry point ---------- */

/*
 * Reads the live columns of the fuzzed relation, their input functions,
 * and, for composite columns, registers an anonymous (blessed) copy of the
 * row type, so that their values can also be encoded as records.
 */
static void
setup_columns(Oid relid)
{
	Relation	rel = relation_open(relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	fuzz_relid = relid;
	fuzz_cols = palloc0(desc->natts * sizeof(FuzzColumn));
	fuzz_ncols = 0;
	for (int a = 0; a < desc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, a);
		FuzzColumn *col = &fuzz_cols[fuzz_ncols];
		Oid			infunc;
		Oid			base;

		if (att->attisdropped)
			continue;
		col->name = pstrdup(NameStr(att->attname));
		col->typid = att->atttypid;
		col->typmod = att->atttypmod;
		getTypeInputInfo(att->atttypid, &infunc, &col->ioparam);
		fmgr_info_cxt(infunc, &col->input, TopMemoryContext);
		col->record_typmod = -1;
		base = getBaseType(att->atttypid);
		if (get_typtype(base) == TYPTYPE_COMPOSITE)
		{
			TupleDesc	named = lookup_rowtype_tupdesc(base, -1);
			TupleDesc	anon = CreateTupleDescCopy(named);

			ReleaseTupleDesc(named);
			anon->tdtypeid = RECORDOID;
			anon->tdtypmod = -1;
			col->record_typmod = BlessTupleDesc(anon)->tdtypmod;
		}
		fuzz_ncols++;
	}
	MemoryContextSwitchTo(old);
	relation_close(rel, AccessShareLock);
}

/*
 * Gives the process's signals to libFuzzer: it installs its handlers only
 * where none is set, and the backend's handlers would otherwise keep it
 * from seeing Ctrl-C (SIGINT, SIGTERM, SIGQUIT), its per-input timeout
 * (SIGALRM) and arithmetic faults (SIGFPE, which the backend turns into an
 * ERROR that the harness would swallow).  The backend is thrown away when
 * libFuzzer exits, so nothing needs them back.
 */
static void
release_signals(void)
{
	pqsignal(SIGINT, SIG_DFL);
	pqsignal(SIGTERM, SIG_DFL);
	pqsignal(SIGQUIT, SIG_DFL);
	pqsignal(SIGALRM, SIG_DFL);
	pqsignal(SIGFPE, SIG_DFL);
}

/*
 * SQL: retl_fuzz(source regclass, args text[]) RETURNS int.  Fuzzes the
 * mapping compiler and the JSON builder against source, passing args to
 * libFuzzer as its command line (options such as -max_total_time=30, then
 * corpus directories or input files).  libFuzzer normally ends the process
 * itself: with status 0 when its time is up, or non-zero with a report on
 * stderr when it found a bug; the return value is only seen when it
 * returns on its own (e.g. -help=1).
 */
Datum
retl_fuzz(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	ArrayType  *args = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *elems;
	bool	   *elemnulls;
	int			nelems;
	int			argc = 0;
	char	  **argv;
	int			rc;

	if (fuzz_cxt != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("retl_fuzz() can run only once per session")));
	deconstruct_array(args, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &elemnulls, &nelems);
	argv = MemoryContextAlloc(TopMemoryContext, (nelems + 2) * sizeof(char *));
	argv[argc++] = MemoryContextStrdup(TopMemoryContext, "retl_fuzz");
	for (int i = 0; i < nelems; i++)
		if (!elemnulls[i])
			argv[argc++] = MemoryContextStrdup(TopMemoryContext,
											   TextDatumGetCString(elems[i]));
	argv[argc] = NULL;

	setup_columns(relid);
	fuzz_cxt = AllocSetContextCreate(TopMemoryContext, "retl fuzz input",
									 ALLOCSET_DEFAULT_SIZES);
	fuzz_verbose = getenv("RETL_FUZZ_VERBOSE") != NULL;
	release_signals();
	atexit(print_counters);
	fflush(stdout);
	fflush(stderr);

	rc = LLVMFuzzerRunDriver(&argc, &argv, fuzz_one);
	PG_RETURN_INT32(rc);
}
