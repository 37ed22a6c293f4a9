/*-------------------------------------------------------------------------
 *
 * event.c
 *	  Builds one event (RudderStack / Segment spec) from one row, straight
 *	  into a StringInfo, by walking the compiled mapping tree.
 *
 * The event is written in this order: type, the mapped fields, then the
 * context object.  Everything up to the mapped part of the context is
 * deterministic, so it is hashed (with the sync id and the primary key)
 * into the messageId; the run-specific parts (context.library,
 * context.sources, messageId, originalTimestamp, sentAt and the default
 * timestamp) are appended after the hash.  The same row therefore always
 * gets the same content id, whatever run sends it; the reader then makes
 * it the id of the row version (retl_event_version_id), mixing in the
 * row's xmin or the fingerprint of the version the destination had.
 *
 *-------------------------------------------------------------------------
 */
#include "retl.h"
#include "build.h"
#include "json.h"

#include "common/hashfn.h"


/*
 * Prepares the per-run parts of every event: context.library and
 * context.sources.  A run id of 0 (previews) is written as null.
 */
void
retl_event_ctx_init(RetlEventCtx *ctx, int64 sync_id, const char *sync_name,
					int64 run_id)
{
	StringInfoData tail;

	initStringInfo(&tail);
	appendStringInfoString(&tail,
						   "\"library\":{\"name\":\"retl\",\"version\":\""
						   RETL_VERSION "\"},\"sources\":{\"job_run_id\":");
	if (run_id > 0)
		appendStringInfo(&tail, INT64_FORMAT, run_id);
	else
		appendStringInfoString(&tail, "null");
	appendStringInfoString(&tail, ",\"sync\":");
	retl_json_escape(&tail, sync_name, strlen(sync_name));
	appendStringInfoString(&tail, "}}");
	ctx->tail = tail.data;
	ctx->tail_len = tail.len;
	ctx->sync_id = sync_id;
	initStringInfo(&ctx->scratch);
	retl_event_ctx_set_now(ctx, GetCurrentTimestamp());
}

/*
 * Sets the time written as originalTimestamp and sentAt.  Called once per
 * page of rows rather than per row: a clock read per row costs more than
 * the precision is worth.
 */
void
retl_event_ctx_set_now(RetlEventCtx *ctx, TimestampTz now)
{
	StringInfoData buf;

	initStringInfo(&buf);
	retl_json_append_timestamptz(&buf, now);
	strlcpy(ctx->now, buf.data, sizeof(ctx->now));
	pfree(buf.data);
	/* the event's ending, written whole for every event */
	ctx->stamps_len = snprintf(ctx->stamps, sizeof(ctx->stamps),
							   "\",\"originalTimestamp\":%s,\"sentAt\":%s",
							   ctx->now, ctx->now);
	ctx->stamp_ts_len = snprintf(ctx->stamp_ts, sizeof(ctx->stamp_ts),
								 ",\"timestamp\":%s", ctx->now);
}

/* Appends a string literal, whose length the compiler knows. */
#define APPEND_LITERAL(buf, lit) \
	retl_buf_append((buf), (lit), sizeof(lit) - 1)

/*
 * Writes a leaf value.  userId, anonymousId and event are always strings,
 * as the Segment spec requires, even when the column is a number.
 */
static void
write_leaf_value(StringInfo buf, RetlMapping *map, RetlEventCtx *ctx,
				 RetlMapNode *n, Datum *values, bool *nulls)
{
	if (n->constant != NULL)
	{
		appendStringInfoString(buf, n->constant);
		return;
	}
	if (nulls[n->column])
	{
		appendStringInfoString(buf, "null");
		return;
	}
	if (!n->force_string)
	{
		retl_json_append_datum(buf, values[n->column], map->coljson[n->column]);
		return;
	}
	resetStringInfo(&ctx->scratch);
	retl_json_append_datum(&ctx->scratch, values[n->column],
						   map->coljson[n->column]);
	if (ctx->scratch.len > 0 && ctx->scratch.data[0] == '"')
		retl_buf_append(buf, ctx->scratch.data, ctx->scratch.len);
	else
		retl_json_escape(buf, ctx->scratch.data, ctx->scratch.len);
}

/*
 * Writes the members of an object node; *first tells whether a comma is
 * due.  NULL columns are omitted unless the sync keeps nulls.
 */
static void
write_members(StringInfo buf, RetlMapping *map, RetlEventCtx *ctx,
			  RetlMapNode *parent, Datum *values, bool *nulls, bool *first,
			  RetlMapNode *skip)
{
	for (RetlMapNode *n = parent->children; n != NULL; n = n->next)
	{
		bool		leaf = n->column >= 0 || n->constant != NULL;
		bool		child_first = true;

		if (n == skip)
			continue;
		if (leaf && n->column >= 0 && nulls[n->column] && !map->keep_nulls)
			continue;
		/* key_json starts with a comma; drop it for the first member */
		retl_buf_append(buf, n->key_json.data + (*first ? 1 : 0),
						n->key_json.len - (*first ? 1 : 0));
		*first = false;
		if (leaf)
			write_leaf_value(buf, map, ctx, n, values, nulls);
		else
		{
			appendStringInfoCharMacro(buf, '{');
			write_members(buf, map, ctx, n, values, nulls, &child_first, NULL);
			appendStringInfoCharMacro(buf, '}');
		}
	}
}

/*
 * Formats 128 bits of hash as a UUID-shaped messageId.
 */
static void
format_message_id(char *out, uint64 hi, uint64 lo)
{
	static const char digits[] = "0123456789abcdef";
	/* where each byte's two digits go in 8-4-4-4-12 */
	static const uint8 at[16] = {0, 2, 4, 6, 9, 11, 14, 16,
	19, 21, 24, 26, 28, 30, 32, 34};

	for (int i = 0; i < 8; i++)
	{
		uint8		h = (uint8) (hi >> (56 - 8 * i));
		uint8		l = (uint8) (lo >> (56 - 8 * i));

		out[at[i]] = digits[h >> 4];
		out[at[i] + 1] = digits[h & 0xf];
		out[at[i + 8]] = digits[l >> 4];
		out[at[i + 8] + 1] = digits[l & 0xf];
	}
	out[8] = out[13] = out[18] = out[23] = '-';
	out[36] = '\0';
}

#define ROTL64(x, r) (((x) << (r)) | ((x) >> (64 - (r))))

/*
 * Final avalanche of a 64-bit lane (MurmurHash3's fmix64).
 */
static inline uint64
fmix64(uint64 k)
{
	k ^= k >> 33;
	k *= UINT64CONST(0xff51afd7ed558ccd);
	k ^= k >> 33;
	k *= UINT64CONST(0xc4ceb9fe1a85ec53);
	k ^= k >> 33;
	return k;
}

/*
 * Mixes bytes into a two-lane 128-bit state in one pass, eight bytes at a
 * time (MurmurHash3 x64-style lanes).  Not cryptographic: it only has to
 * make distinct events get distinct messageIds, and it is on the hot path.
 */
static void
hash128_update(uint64 *h1, uint64 *h2, const char *data, int len)
{
	const uint64 c1 = UINT64CONST(0x87c37b91114253d5);
	const uint64 c2 = UINT64CONST(0x4cf5ad432745937f);
	uint64		tail = 0;
	int			i = 0;

	for (; i + 8 <= len; i += 8)
	{
		uint64		k;

		memcpy(&k, data + i, 8);
		k *= c1;
		k = ROTL64(k, 31);
		k *= c2;
		*h1 ^= k;
		*h1 = ROTL64(*h1, 27) + *h2;
		*h1 = *h1 * 5 + 0x52dce729;
		*h2 ^= ROTL64(k * c2, 33) * c1;
		*h2 = ROTL64(*h2, 31) + *h1;
		*h2 = *h2 * 5 + 0x38495ab5;
	}
	for (int j = 0; i < len; i++, j++)
		tail |= ((uint64) (unsigned char) data[i]) << (8 * j);
	tail ^= (uint64) len << 56;
	*h1 ^= ROTL64(tail * c1, 31) * c2;
	*h2 ^= ROTL64(tail * c2, 33) * c1;
	*h1 += *h2;
	*h2 += *h1;
}

/*
 * Hashes the deterministic part of the event, plus the sync id and the
 * primary key, into the messageId.
 */
static void
compute_message_id(StringInfo buf, int start, RetlMapping *map,
				   RetlEventCtx *ctx, Datum *values, bool *nulls,
				   char *message_id)
{
	uint64		h1 = (uint64) ctx->sync_id;
	uint64		h2 = fmix64((uint64) ctx->sync_id + 1);

	hash128_update(&h1, &h2, buf->data + start, buf->len - start);
	if (map->pk_column >= 0 && !nulls[map->pk_column])
	{
		resetStringInfo(&ctx->scratch);
		retl_json_append_datum(&ctx->scratch, values[map->pk_column],
							   map->coljson[map->pk_column]);
		hash128_update(&h1, &h2, ctx->scratch.data, ctx->scratch.len);
	}
	h1 = fmix64(h1);
	h2 = fmix64(h2);
	h1 += h2;
	h2 += h1;
	format_message_id(message_id, h1, h2);
}

/*
 * Turns the content messageId of an event into the messageId of one row
 * version: a version of 0 (the first one a destination sees, or none
 * known) keeps it, another version hashes it with the content id, so
 * that a row going back to earlier content gets an id of its own.
 */
void
retl_event_version_id(char *message_id, uint64 version)
{
	uint64		hi,
				lo;

	if (version == 0)
		return;
	hi = hash_bytes_extended((const unsigned char *) message_id,
							 RETL_MESSAGE_ID_LEN, version);
	lo = hash_bytes_extended((const unsigned char *) message_id,
							 RETL_MESSAGE_ID_LEN, ~version);
	format_message_id(message_id, hi, lo);
}

/*
 * The fingerprint of a row's column values, with which a content-diff
 * sync finds the rows that changed: a hash of the values' binary forms
 * (detoasted), not of the event, so that an unchanged row costs no event
 * building -- a run over an unchanged source then costs about its read.
 * The mapping is not hashed: a new mapping makes the next run full, which
 * sends every row.  A change of presentation only (an enum label renamed)
 * leaves the values alike: a forced full run sends it.  Runs in the row's
 * memory context (detoasted copies are left to its reset).
 */
int64
retl_event_fingerprint(RetlMapping *map, int64 sync_id, Datum *values,
					   bool *nulls)
{
	uint64		h = hash_bytes_uint32_extended((uint32) sync_id,
											   (uint64) (sync_id >> 32));

	for (int i = 0; i < map->ncolumns; i++)
	{
		const unsigned char *p;
		Size		len;
		Datum		v = values[i];

		if (nulls[i])
		{
			h = hash_combine64(h, UINT64CONST(0x6e756c6c) + i);
			continue;
		}
		if (map->colbyval[i])
		{
			p = (const unsigned char *) &v;
			len = sizeof(Datum);
		}
		else if (map->coltyplen[i] == -1)
		{
			struct varlena *d = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(v));

			p = (const unsigned char *) VARDATA_ANY(d);
			len = VARSIZE_ANY_EXHDR(d);
		}
		else if (map->coltyplen[i] == -2)
		{
			p = (const unsigned char *) DatumGetCString(v);
			len = strlen((const char *) p);
		}
		else
		{
			p = (const unsigned char *) DatumGetPointer(v);
			len = map->coltyplen[i];
		}
		h = hash_combine64(hash_bytes_extended(p, len, h), i);
	}
	return (int64) h;
}

/*
 * Appends the event of one row to buf and returns the content messageId,
 * and where in buf it is written (retl_event_version_id may change it in
 * place once the row's version is known).
 */
int
retl_event_build(StringInfo buf, RetlMapping *map, RetlEventCtx *ctx,
				 Datum *values, bool *nulls, char *message_id)
{
	int			id_at;
	int			start = buf->len;
	bool		first = false;
	bool		ctx_first = true;
	RetlMapNode *context = map->context;

	if (map->track)
		APPEND_LITERAL(buf, "{\"type\":\"track\"");
	else
		APPEND_LITERAL(buf, "{\"type\":\"identify\"");
	write_members(buf, map, ctx, map->root, values, nulls, &first, context);
	APPEND_LITERAL(buf, ",\"context\":{");
	if (context != NULL)
		write_members(buf, map, ctx, context, values, nulls, &ctx_first, NULL);
	compute_message_id(buf, start, map, ctx, values, nulls, message_id);
	if (!ctx_first)
		appendStringInfoCharMacro(buf, ',');
	retl_buf_append(buf, ctx->tail, ctx->tail_len);
	APPEND_LITERAL(buf, ",\"messageId\":\"");
	id_at = buf->len;
	retl_buf_append(buf, message_id, RETL_MESSAGE_ID_LEN);
	retl_buf_append(buf, ctx->stamps, ctx->stamps_len);
	if (!map->has_timestamp)
		retl_buf_append(buf, ctx->stamp_ts, ctx->stamp_ts_len);
	appendStringInfoCharMacro(buf, '}');
	return id_at;
}

/*
 * Appends the identity of a row's event, as a deletion event of its key
 * carries it later: its "userId" and "anonymousId" members, in that order,
 * as they are in the event (a NULL column is left out unless the sync
 * keeps nulls).  Nothing when the mapping sets neither.
 */
void
retl_event_identity(StringInfo buf, RetlMapping *map, RetlEventCtx *ctx,
					Datum *values, bool *nulls)
{
	static const char *const keys[2] = {"userId", "anonymousId"};

	for (int k = 0; k < 2; k++)
		for (RetlMapNode *n = map->root->children; n != NULL; n = n->next)
		{
			if (strcmp(n->key, keys[k]) != 0 ||
				(n->column < 0 && n->constant == NULL))
				continue;
			if (n->column >= 0 && nulls[n->column] && !map->keep_nulls)
				continue;
			if (buf->len > 0)
				appendStringInfoCharMacro(buf, ',');
			retl_buf_append(buf, n->key_json.data + 1, n->key_json.len - 1);
			write_leaf_value(buf, map, ctx, n, values, nulls);
		}
}
