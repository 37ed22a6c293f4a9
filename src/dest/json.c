/*-------------------------------------------------------------------------
 *
 * json.c
 *	  JSON helpers that the mapping (build/) and the destination kinds
 *	  share: typed getters of options and config settings, which raise
 *	  a clear error for a value of the wrong type, and readers of vendor
 *	  answers, which never raise.
 *
 *-------------------------------------------------------------------------
 */
#include "retl.h"
#include "build.h"
#include "json.h"

#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/numeric.h"

/*
 * Returns the value of an option, or NULL when it is absent or null;
 * raises invalid_parameter_value when it is not of the expected type.
 * The typed getters below share it.
 */
static JsonbValue *
option_value(Jsonb *jb, const char *key, enum jbvType type, const char *what)
{
	JsonbValue *v;

	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		return NULL;
	v = getKeyJsonValueFromContainer(&jb->root, key, strlen(key), NULL);
	if (v == NULL || v->type == jbvNull)
		return NULL;
	if (v->type != type ||
		(type == jbvBinary && !JsonContainerIsObject(v->val.binary.data)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" must be %s", key, what)));
	return v;
}

/*
 * Returns a string option, or NULL when absent.
 */
char *
retl_jsonb_get_text(Jsonb *jb, const char *key)
{
	JsonbValue *v = option_value(jb, key, jbvString, "a string");

	return v ? pnstrdup(v->val.string.val, v->val.string.len) : NULL;
}

/*
 * Reads an integer option; returns false when absent.
 */
bool
retl_jsonb_get_int(Jsonb *jb, const char *key, int64 *out)
{
	JsonbValue *v = option_value(jb, key, jbvNumeric, "a number");
	char	   *digits;
	char	   *end;

	if (v == NULL)
		return false;

	/*
	 * A count is a whole number: 1.5 is refused, not rounded (2.0 and 2e2
	 * are whole).  numeric_normalize writes plain digits without trailing
	 * zeros, so strtoi64 reads all of it exactly when it is an int64.
	 */
	digits = numeric_normalize(v->val.numeric);
	errno = 0;
	*out = strtoi64(digits, &end, 10);
	if (digits[0] == '\0' || *end != '\0' || errno != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" must be an integer, not %s", key, digits),
				 errhint("Write a whole number, such as {\"%s\": 100}.", key)));
	return true;
}

/*
 * Reads a boolean option; returns false when absent.
 */
bool
retl_jsonb_get_bool(Jsonb *jb, const char *key, bool *out)
{
	JsonbValue *v = option_value(jb, key, jbvBool, "true or false");

	if (v == NULL)
		return false;
	*out = v->val.boolean;
	return true;
}

/*
 * Returns a nested object option as its own Jsonb, or NULL when absent.
 */
Jsonb *
retl_jsonb_get_object(Jsonb *jb, const char *key)
{
	JsonbValue *v = option_value(jb, key, jbvBinary, "a JSON object");

	return v ? JsonbValueToJsonb(v) : NULL;
}

/*
 * Parses JSON text into jsonb, or returns NULL when it is not JSON.  Used
 * on response bodies, which a destination may fill with anything: the
 * text is checked first (retl_json_valid), so that jsonb_in never raises.
 */
Jsonb *
retl_parse_json(const char *text, int len)
{
	char	   *copy = pnstrdup(text, len);

	if (!retl_json_valid(copy, strlen(copy)))
		return NULL;
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(copy)));
}

/*
 * Returns the value of a top-level key of a jsonb object, or NULL.
 */
JsonbValue *
retl_json_get(Jsonb *jb, const char *key)
{
	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		return NULL;
	return getKeyJsonValueFromContainer(&jb->root, key, strlen(key), NULL);
}

/*
 * Reads a JSON number that is an integer within int64 (2.0 counts, 1.5,
 * 1e20 and -1e30 do not) into *result.  Returns false, and raises nothing,
 * for anything else: vendor answers may hold any number.
 */
bool
retl_json_int64(const JsonbValue *v, int64 *result)
{
	char	   *text;
	char	   *end;
	int64		i;

	if (v == NULL || v->type != jbvNumeric)
		return false;
	/* plain decimal digits, without trailing zeros ("NaN" for NaN) */
	text = numeric_normalize(v->val.numeric);
	errno = 0;
	i = strtoi64(text, &end, 10);
	if (text[0] == '\0' || *end != '\0' || errno != 0)
		return false;
	*result = i;
	return true;
}

/*
 * The event a vendor's answer points at by index (v, a JSON number), or -1
 * when v is missing, not an integer, or outside the batch of nevents: the
 * per-event answers of Braze, Amplitude and Mixpanel list indexes.  Never
 * raises an error.
 */
int64
retl_json_index(const JsonbValue *v, int nevents)
{
	int64		i;

	if (!retl_json_int64(v, &i))
		return -1;
	return i >= 0 && i < nevents ? i : -1;
}

/*
 * Appends a jsonb value (scalar or container) as JSON text.
 */
void
retl_append_jsonb_value(StringInfo out, JsonbValue *v)
{
	if (v == NULL)
	{
		appendStringInfoString(out, "null");
		return;
	}
	if (v->type == jbvString)
		retl_json_escape(out, v->val.string.val, v->val.string.len);
	else if (v->type == jbvBinary)
		(void) JsonbToCString(out, v->val.binary.data, v->val.binary.len);
	else
	{
		Jsonb	   *jb = JsonbValueToJsonb(v);

		(void) JsonbToCString(out, &jb->root, VARSIZE(jb));
	}
}

/*
 * Is key one of the strings of a NULL-terminated list?
 */
static bool
in_list(const char *const *list, const char *key)
{
	for (int i = 0; list[i]; i++)
		if (strcmp(list[i], key) == 0)
			return true;
	return false;
}

/*
 * The first top-level key of a jsonb object that is in neither
 * NULL-terminated list (also may be NULL), or NULL when every key is
 * known: sync options and destination configs refuse unknown keys, so
 * that typos are caught when they are created.
 */
char *
retl_json_unknown_key(Jsonb *obj, const char *const *known,
					  const char *const *also)
{
	JsonbIterator *it = JsonbIteratorInit(&obj->root);
	JsonbValue	v;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		if (!in_list(known, key) && (also == NULL || !in_list(also, key)))
			return key;
	}
	return NULL;
}
