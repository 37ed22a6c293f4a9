/*-------------------------------------------------------------------------
 *
 * json.c
 *	  JSON helpers that the mapping (build/) and the destination kinds
 *	  share: typed getters of options and config settings, which raise
 *	  a clear error for a value of the wrong type, readers of vendor
 *	  answers, which never raise (their text is checked before jsonb_in
 *	  sees it, as build/noerror.c checks its input), and the writer of a
 *	  JSON string.
 *
 *-------------------------------------------------------------------------
 */
#include "retl.h"
#include "json.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
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
 * Nesting limit of answers parsed as JSON: far above any vendor's answer,
 * far below what would exhaust the stack (pg_parse_json and jsonb_in
 * recurse once per level and call check_stack_depth, which raises).
 */
#define JSON_MAX_DEPTH 1000

/*
 * Numbers that numeric_in (called by jsonb_in) accepts without raising
 * "value overflows numeric format": at most NUMERIC_DSCALE_MAX (16383)
 * digits after the point and a weight well under NUMERIC_WEIGHT_MAX
 * base-10000 digits.  Conservative bounds, in decimal digits.
 */
#define JSON_MAX_SCALE 16000
#define JSON_MAX_WEIGHT 100000

/* State of the scalar callback of retl_json_valid. */
typedef struct JsonCheck
{
	bool		bad_number;
} JsonCheck;

/*
 * Does the JSON text nest deeper than JSON_MAX_DEPTH?  Counts brackets
 * outside strings; the text is not assumed to be valid JSON.
 */
static bool
json_too_deep(const char *s, int len)
{
	int			depth = 0;
	bool		in_str = false;

	for (int i = 0; i < len; i++)
	{
		char		c = s[i];

		if (in_str)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = false;
		}
		else if (c == '"')
			in_str = true;
		else if (c == '{' || c == '[')
		{
			if (++depth > JSON_MAX_DEPTH)
				return true;
		}
		else if (c == '}' || c == ']')
			depth--;
	}
	return false;
}

/*
 * Would numeric_in take this JSON number (already checked as JSON syntax)
 * without an overflow error?  Computes its decimal weight and scale from
 * the digits and the exponent.
 */
static bool
json_number_fits(const char *num)
{
	const char *p = num;
	long		int_digits = 0;
	long		frac_digits = 0;
	long		exponent = 0;

	if (*p == '-')
		p++;
	while (*p >= '0' && *p <= '9')
		p++, int_digits++;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			frac_digits++;
	if (*p == 'e' || *p == 'E')
	{
		bool		negative = false;

		p++;
		if (*p == '+' || *p == '-')
			negative = *p++ == '-';
		for (; *p >= '0' && *p <= '9'; p++)
		{
			exponent = exponent * 10 + (*p - '0');
			if (exponent > JSON_MAX_WEIGHT + JSON_MAX_SCALE)
				return false;
		}
		if (negative)
			exponent = -exponent;
	}
	return int_digits + exponent <= JSON_MAX_WEIGHT &&
		frac_digits - exponent <= JSON_MAX_SCALE;
}

/*
 * Scalar callback of retl_json_valid: flags a number numeric_in would
 * refuse.
 */
static void
json_check_scalar(void *state, char *token, JsonTokenType type)
{
	JsonCheck  *check = (JsonCheck *) state;

	if (type == JSON_TOKEN_NUMBER && !json_number_fits(token))
		check->bad_number = true;
	pfree(token);
}

/*
 * Is text (len bytes, NUL-terminated) JSON that jsonb_in turns into jsonb
 * without raising an error?  Checks what jsonb_in would raise for: the
 * syntax and the escapes, by the same lexer (which reports problems as
 * return codes), the nesting (check_stack_depth), and numbers too large
 * or too precise for numeric.  Never raises an error but for lack of
 * memory.
 */
bool
retl_json_valid(char *text, int len)
{
	JsonLexContext *lex;
	JsonSemAction sem;
	JsonCheck	check = {false};

	if (json_too_deep(text, len))
		return false;
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &check;
	sem.scalar = json_check_scalar;
	lex = makeJsonLexContextCstringLen(text, len, GetDatabaseEncoding(), true);
	return pg_parse_json(lex, &sem) == JSON_SUCCESS && !check.bad_number;
}

/*
 * Parses JSON text into jsonb, or returns NULL when it is not JSON.  Used
 * on response bodies, which a destination may fill with anything: the
 * text is checked first (retl_json_valid), so that jsonb_in never raises.
 */
Jsonb *
retl_json_parse(const char *text, int len)
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
retl_json_append_value(StringInfo out, JsonbValue *v)
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

/* ---------- writing JSON strings ---------- */

/*
 * Append the JSON escape sequence for one byte that cannot appear raw in a
 * JSON string.  Written by hand: this runs for every control character.
 */
static void
append_escape(StringInfo buf, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";
	char		esc[6] = {'\\', 'u', '0', '0', 0, 0};

	switch (c)
	{
		case '"':
			retl_buf_append(buf, "\\\"", 2);
			return;
		case '\\':
			retl_buf_append(buf, "\\\\", 2);
			return;
		case '\n':
			retl_buf_append(buf, "\\n", 2);
			return;
		case '\t':
			retl_buf_append(buf, "\\t", 2);
			return;
		case '\r':
			retl_buf_append(buf, "\\r", 2);
			return;
		case '\b':
			retl_buf_append(buf, "\\b", 2);
			return;
		case '\f':
			retl_buf_append(buf, "\\f", 2);
			return;
	}
	esc[4] = hex[c >> 4];
	esc[5] = hex[c & 0xf];
	retl_buf_append(buf, esc, 6);
}

/*
 * Append s[0..len) as a quoted JSON string.  Runs of bytes that need no
 * escaping are copied in one go, which is the common case by far.
 */
void
retl_json_escape(StringInfo buf, const char *s, int len)
{
	const char *end = s + len;
	const char *run = s;
	const char *p;

	retl_buf_reserve(buf, len + 2);
	appendStringInfoCharMacro(buf, '"');
	for (p = s; p < end; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		if (p > run)
			retl_buf_append(buf, run, p - run);
		append_escape(buf, c);
		run = p + 1;
	}
	if (p > run)
		retl_buf_append(buf, run, p - run);
	appendStringInfoCharMacro(buf, '"');
}
