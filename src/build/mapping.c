/*-------------------------------------------------------------------------
 *
 * mapping.c
 *	  Compiles a sync's mapping (jsonb) into the tree of event fields that
 *	  the JSON builder walks for every row, and validates it.
 *
 * Keys are event field paths in dot notation ("userId", "properties.x",
 * "context.campaign.source").  Values are a column name or a constant
 * written {"value": <json>}.  Columns the mapping does not name go under
 * "properties" (track) or "traits" (identify) unless {"unmapped": "drop"}.
 * Validation and the worker use this same code, so create-time errors and
 * run-time behaviour cannot disagree.
 *
 *-------------------------------------------------------------------------
 */
#include "retl.h"
#include "build.h"
#include "json.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/pg_attribute.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

PG_FUNCTION_INFO_V1(retl_validate_sync);

/* Levels of a mapping key ("properties.a.b" has 3): events nest no deeper. */
#define RETL_MAX_KEY_LEVELS 100

static const char *const known_options[] = {
	"unmapped", "nulls", "cursor", "xmin_column", "retry_failed", "on_delete",
	NULL
};

/*
 * Returns the select-list index of a column, adding it on first use.
 * Raises undefined_column, with the relation's columns as a hint, when it
 * does not exist.
 */
static int
use_column(RetlMapping *map, Relation rel, const char *name, int *allocated)
{
	TupleDesc	desc = RelationGetDescr(rel);
	StringInfoData cols;

	for (int i = 0; i < map->ncolumns; i++)
		if (strcmp(map->colnames[i], name) == 0)
			return i;
	for (int a = 0; a < desc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, a);

		if (att->attisdropped || strcmp(NameStr(att->attname), name) != 0)
			continue;
		if (map->ncolumns == *allocated)
		{
			*allocated *= 2;
			map->colnames = repalloc(map->colnames, *allocated * sizeof(char *));
			map->coltypes = repalloc(map->coltypes, *allocated * sizeof(Oid));
		}
		map->colnames[map->ncolumns] = pstrdup(name);
		map->coltypes[map->ncolumns] = att->atttypid;
		return map->ncolumns++;
	}
	initStringInfo(&cols);
	for (int a = 0; a < desc->natts; a++)
		if (!TupleDescAttr(desc, a)->attisdropped)
			appendStringInfo(&cols, "%s%s", cols.len ? ", " : "",
							 NameStr(TupleDescAttr(desc, a)->attname));
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("column \"%s\" of the mapping does not exist in \"%s\"",
					name, RelationGetRelationName(rel)),
			 errhint("Columns of \"%s\": %s.", RelationGetRelationName(rel),
					 cols.data)));
	return -1;					/* keep compiler quiet */
}

/*
 * Refuses a key with more levels than RETL_MAX_KEY_LEVELS.  The event would
 * nest that deep, which the JSON parsers of destinations refuse, and the
 * recursive event writer must not be able to exhaust the stack.
 */
static void
check_key_levels(const char *key)
{
	int			levels = 1;

	for (const char *p = key; *p; p++)
		levels += *p == '.';
	if (levels > RETL_MAX_KEY_LEVELS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("mapping key \"%.*s...\" has %d levels, over the limit of %d levels",
						pg_mbcliplen(key, strlen(key), 60), key, levels,
						RETL_MAX_KEY_LEVELS),
				 errhint("Nest event fields at most %d levels deep.",
						 RETL_MAX_KEY_LEVELS)));
}

/*
 * Refuses a constant that nests deeper than RETL_MAX_KEY_LEVELS, the limit
 * of keys: the event would nest that deep either way.  The depth is
 * counted by an iterator walk, which does not recurse.
 */
static void
check_constant_levels(const char *key, JsonbValue *c)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			depth = 0;

	if (c->type != jbvBinary)
		return;
	it = JsonbIteratorInit(c->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if (tok == WJB_BEGIN_ARRAY || tok == WJB_BEGIN_OBJECT)
			depth++;
		else if (tok == WJB_END_ARRAY || tok == WJB_END_OBJECT)
			depth--;
		if (depth > RETL_MAX_KEY_LEVELS)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the constant of mapping key \"%.*s\" nests over the limit of %d levels",
							pg_mbcliplen(key, strlen(key), 60), key,
							RETL_MAX_KEY_LEVELS),
					 errhint("Nest constant values at most %d levels deep, as keys.",
							 RETL_MAX_KEY_LEVELS)));
	}
}

/*
 * Checks that a mapping key names an event field this event type allows.
 */
static void
check_key(const char *key, bool track)
{
	static const char *const reserved[] = {
		"type", "messageId", "sentAt", "originalTimestamp",
		"context.library", "context.sources", NULL
	};
	const char *dot = strchr(key, '.');
	size_t		head = dot ? (size_t) (dot - key) : strlen(key);

	check_key_levels(key);
	for (int i = 0; reserved[i]; i++)
		if (strcmp(key, reserved[i]) == 0 ||
			(strncmp(key, reserved[i], strlen(reserved[i])) == 0 &&
			 key[strlen(reserved[i])] == '.'))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("mapping key \"%s\" is set by retl and cannot be mapped", key)));
	if (dot == NULL && (strcmp(key, "userId") == 0 ||
						strcmp(key, "anonymousId") == 0 ||
						strcmp(key, "timestamp") == 0 ||
						(track && strcmp(key, "event") == 0)))
		return;
	if (dot != NULL && dot[1] != '\0' && strstr(key, "..") == NULL &&
		key[strlen(key) - 1] != '.' &&
		((head == 10 && strncmp(key, "properties", 10) == 0 && track) ||
		 (head == 6 && strncmp(key, "traits", 6) == 0 && !track) ||
		 (head == 7 && strncmp(key, "context", 7) == 0)))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid mapping key \"%s\" for %s sync", key,
					track ? "a track" : "an identify"),
			 errhint("%s", track
					 ? "Keys are userId, anonymousId, event, timestamp, properties.<name> and context.<name>."
					 : "Keys are userId, anonymousId, timestamp, traits.<name> and context.<name>.")));
}

/*
 * Finds or creates the child of an object node with the given key.
 */
static RetlMapNode *
node_child(RetlMapNode *parent, const char *key, int keylen, bool *created)
{
	RetlMapNode **link = &parent->children;
	RetlMapNode *n;

	for (n = parent->children; n != NULL; n = n->next)
	{
		if (strlen(n->key) == (size_t) keylen &&
			strncmp(n->key, key, keylen) == 0)
		{
			*created = false;
			return n;
		}
		link = &n->next;
	}
	n = palloc0(sizeof(RetlMapNode));
	n->key = pnstrdup(key, keylen);
	n->column = -1;
	initStringInfo(&n->key_json);
	appendStringInfoChar(&n->key_json, ',');
	retl_json_escape(&n->key_json, n->key, keylen);
	appendStringInfoChar(&n->key_json, ':');
	*link = n;
	*created = true;
	return n;
}

/*
 * Inserts a dotted path into the tree and returns its leaf, or NULL when
 * the path is already taken (by an explicit key or as an object).
 */
static RetlMapNode *
tree_insert(RetlMapNode *root, const char *path)
{
	RetlMapNode *node = root;
	const char *p = path;
	bool		created = false;

	for (;;)
	{
		const char *dot = strchr(p, '.');
		int			len = dot ? (int) (dot - p) : (int) strlen(p);

		if (node->column >= 0 || node->constant != NULL)
			return NULL;		/* a leaf cannot have children */
		node = node_child(node, p, len, &created);
		if (dot == NULL)
			break;
		p = dot + 1;
	}
	if (!created)
		return NULL;
	return node;
}

/*
 * Compiles one mapping entry: validates the key, resolves the value to a
 * column or a constant, and inserts it into the tree.
 */
static void
compile_entry(RetlMapping *map, Relation rel, const char *key, JsonbValue *v,
			  int *allocated)
{
	RetlMapNode *leaf;

	check_key(key, map->track);
	leaf = tree_insert(map->root, key);
	if (leaf == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("mapping key \"%s\" conflicts with another key", key),
				 errhint("A path cannot be both a value and an object.")));
	leaf->force_string = (strcmp(key, "userId") == 0 ||
						  strcmp(key, "anonymousId") == 0 ||
						  strcmp(key, "event") == 0);
	if (v->type == jbvString)
	{
		char	   *col = pnstrdup(v->val.string.val, v->val.string.len);

		leaf->column = use_column(map, rel, col, allocated);
		return;
	}
	if (v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data))
	{
		JsonbValue *c = getKeyJsonValueFromContainer(v->val.binary.data,
													 "value", 5, NULL);

		if (c != NULL && JsonContainerSize(v->val.binary.data) == 1)
		{
			check_constant_levels(key, c);
			leaf->constant = JsonbToCString(NULL, &JsonbValueToJsonb(c)->root, 0);
			return;
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value for mapping key \"%s\"", key),
			 errhint("A value is a column name, or a constant written {\"value\": <json>}.")));
}

/*
 * Validates option on_delete: "skip", "identify" or {"event": "<name>"}.
 */
static void
check_on_delete(Jsonb *options)
{
	JsonbValue *v = getKeyJsonValueFromContainer(&options->root, "on_delete",
												 9, NULL);
	Jsonb	   *obj;

	if (v == NULL)
		return;
	if (v->type == jbvString &&
		((v->val.string.len == 4 && strncmp(v->val.string.val, "skip", 4) == 0) ||
		 (v->val.string.len == 8 && strncmp(v->val.string.val, "identify", 8) == 0)))
		return;
	if (v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data))
	{
		obj = JsonbValueToJsonb(v);
		if (retl_jsonb_get_text(obj, "event") != NULL &&
			JsonContainerSize(&obj->root) == 1)
			return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value for option \"on_delete\""),
			 errhint("Use \"identify\" (the default), \"skip\", or {\"event\": \"<name>\"}.")));
}

/*
 * Validates the sync options against the known keys and values.
 */
static void
check_options(RetlMapping *map, Jsonb *options)
{
	char	   *s;

	if (options == NULL)
		return;
	if (!JB_ROOT_IS_OBJECT(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options must be a JSON object")));
	s = retl_json_unknown_key(options, known_options, NULL);
	if (s != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown sync option \"%s\"", s),
				 errhint("Options are unmapped, nulls, cursor, xmin_column, retry_failed and on_delete.")));
	s = retl_jsonb_get_text(options, "unmapped");
	if (s && strcmp(s, "drop") != 0 && strcmp(s, "include") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for option \"unmapped\"", s),
				 errhint("Use \"include\" (the default) or \"drop\".")));
	map->drop_unmapped = s && strcmp(s, "drop") == 0;
	s = retl_jsonb_get_text(options, "nulls");
	if (s && strcmp(s, "keep") != 0 && strcmp(s, "omit") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for option \"nulls\"", s),
				 errhint("Use \"omit\" (the default) or \"keep\".")));
	map->keep_nulls = s && strcmp(s, "keep") == 0;
	s = retl_jsonb_get_text(options, "cursor");
	if (s && strcmp(s, "xmin") != 0 && strcmp(s, "diff") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for option \"cursor\"", s),
				 errhint("Use \"xmin\" or \"diff\"; by default retl chooses.")));
	check_on_delete(options);
}

/*
 * Adds the columns the mapping does not name under properties or traits,
 * each under its own name taken literally: a column "a.b" is the key
 * "a.b", not a path.  A name the mapping already uses there is left out.
 */
static void
add_unmapped(RetlMapping *map, Relation rel, const char *skip, int *allocated)
{
	TupleDesc	desc = RelationGetDescr(rel);
	const char *under = map->track ? "properties" : "traits";
	bool		created;
	RetlMapNode *parent = NULL;

	for (int a = 0; a < desc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, a);
		const char *name = NameStr(att->attname);
		bool		used = false;
		RetlMapNode *leaf;

		if (att->attisdropped || (skip && strcmp(name, skip) == 0))
			continue;
		for (int i = 0; i < map->ncolumns && !used; i++)
			used = strcmp(map->colnames[i], name) == 0;
		if (used)
			continue;
		/* created on first use: no unmapped column, no empty object */
		if (parent == NULL)
			parent = node_child(map->root, under, strlen(under), &created);
		if (parent->column >= 0 || parent->constant != NULL)
			return;				/* mapped whole: nothing goes under it */
		leaf = node_child(parent, name, strlen(name), &created);
		if (created)
			leaf->column = use_column(map, rel, name, allocated);
	}
}

/*
 * Opens the source relation, with a clear error when it was dropped (a
 * sync stores its source's OID, which DROP TABLE does not touch).
 */
static Relation
open_source(Oid relid)
{
	Relation	rel = try_relation_open(relid, AccessShareLock);

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the source relation of the sync (OID %u) no longer exists",
						relid),
				 errhint("Drop the sync with retl_drop_sync() and create it again on the new source.")));
	return rel;
}

/*
 * Compiles and validates a mapping against a relation.  Errors carry the
 * SQLSTATE and hint that retl_create_sync shows to the user.
 */
RetlMapping *
retl_mapping_compile(Oid relid, bool track, Jsonb *mapping, const char *pk,
					 Jsonb *options)
{
	RetlMapping *map = palloc0(sizeof(RetlMapping));
	Relation	rel = open_source(relid);
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			allocated = 16;
	char	   *key = NULL;
	char	   *xmin_column;
	bool		has_user = false;

	map->track = track;
	map->pk_column = -1;
	map->xmin_column = -1;
	map->colnames = palloc(allocated * sizeof(char *));
	map->coltypes = palloc(allocated * sizeof(Oid));
	map->root = palloc0(sizeof(RetlMapNode));
	map->root->column = -1;
	check_options(map, options);
	if (mapping == NULL || !JB_ROOT_IS_OBJECT(mapping))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("mapping must be a JSON object")));
	it = JsonbIteratorInit(&mapping->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE)
		{
			compile_entry(map, rel, key, &v, &allocated);
			has_user |= strcmp(key, "userId") == 0 ||
				strcmp(key, "anonymousId") == 0;
			map->has_timestamp |= strcmp(key, "timestamp") == 0;
			map->has_event |= strcmp(key, "event") == 0;
		}
	}
	if (track && !map->has_event)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a track mapping needs an event name"),
				 errhint("Map \"event\" to a column, or to a constant such as {\"value\": \"Order Completed\"}.")));
	if (!has_user)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the mapping has neither userId nor anonymousId"),
				 errhint("Map \"userId\" or \"anonymousId\" to a column, e.g. {\"userId\": \"user_id\"}.")));
	xmin_column = retl_jsonb_get_text(options, "xmin_column");
	if (xmin_column)
		map->xmin_column = use_column(map, rel, xmin_column, &allocated);
	if (!map->drop_unmapped)
		add_unmapped(map, rel, xmin_column, &allocated);
	for (RetlMapNode *n = map->root->children; n != NULL; n = n->next)
	{
		if (strcmp(n->key, "traits") == 0)
			map->traits = n;
		if (strcmp(n->key, "context") == 0)
			map->context = n;
	}
	if (pk != NULL)
	{
		Oid			outfunc;
		bool		varlena;

		map->pk_column = use_column(map, rel, pk, &allocated);
		getTypeOutputInfo(map->coltypes[map->pk_column], &outfunc, &varlena);
		fmgr_info(outfunc, &map->pk_out);
	}
	map->relkind = rel->rd_rel->relkind;
	map->relname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
											  RelationGetRelationName(rel));
	relation_close(rel, AccessShareLock);
	map->coljson = palloc(map->ncolumns * sizeof(RetlJsonType *));
	map->coltyplen = palloc(map->ncolumns * sizeof(int16));
	map->colbyval = palloc(map->ncolumns * sizeof(bool));
	for (int i = 0; i < map->ncolumns; i++)
	{
		map->coljson[i] = retl_json_type_get(map->coltypes[i], CurrentMemoryContext);
		get_typlenbyval(map->coltypes[i], &map->coltyplen[i], &map->colbyval[i]);
	}
	return map;
}

/*
 * The column that versions an xmin sync's rows, whose messageIds name row
 * versions (a row that goes back to earlier content gets a new id): a
 * view's xmin_column, or a table's own xmin, which *select_list then reads
 * after the mapped columns.  -1 when there is none: a diff sync versions
 * by fingerprint, and foreign tables and other views have no versions.
 * Sets *select_list to what reads a row, for the reader and the preview.
 */
int
retl_mapping_version_column(RetlMapping *map, bool diff, char **select_list)
{
	*select_list = retl_mapping_select_list(map);
	if (diff)
		return -1;
	if (map->xmin_column >= 0)
		return map->xmin_column;
	if (map->relkind == RELKIND_RELATION || map->relkind == RELKIND_MATVIEW ||
		map->relkind == RELKIND_PARTITIONED_TABLE)
	{
		*select_list = psprintf("%s, xmin", *select_list);
		return map->ncolumns;
	}
	return -1;
}

/*
 * Returns the select list that reads the mapping's columns, in order.
 */
char *
retl_mapping_select_list(RetlMapping *map)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < map->ncolumns; i++)
		appendStringInfo(&buf, "%s%s", i ? ", " : "",
						 quote_identifier(map->colnames[i]));
	return buf.data;
}

/*
 * SQL: retl._validate_sync(source, event_type, mapping, primary_key,
 * options).  Compiles the mapping and throws it away: the errors are what
 * retl_create_sync and retl_alter_sync report.
 */
Datum
retl_validate_sync(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *event_type = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Jsonb	   *mapping = PG_GETARG_JSONB_P(2);
	char	   *pk = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	Jsonb	   *options = PG_ARGISNULL(4) ? NULL : PG_GETARG_JSONB_P(4);
	char		relkind = get_rel_relkind(relid);

	if (relkind != RELKIND_RELATION && relkind != RELKIND_VIEW &&
		relkind != RELKIND_MATVIEW && relkind != RELKIND_PARTITIONED_TABLE &&
		relkind != RELKIND_FOREIGN_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" cannot be the source of a sync", get_rel_name(relid)),
				 errhint("A source is a table, a view, a materialized view or a foreign table.")));
	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for \"%s\"", get_rel_name(relid)),
				 errdetail("A sync reads its source with the privileges of its owner, the role that creates it."),
				 errhint("GRANT SELECT ON %s TO %s;",
						 quote_identifier(get_rel_name(relid)),
						 quote_identifier(GetUserNameFromId(GetUserId(), false)))));
	(void) retl_mapping_compile(relid, strcmp(event_type, "track") == 0,
								mapping, pk, options);
	PG_RETURN_VOID();
}
