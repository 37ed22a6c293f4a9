/*-------------------------------------------------------------------------
 *
 * dest.c
 *	  The registry of destination kinds, the config settings they share,
 *	  create-time validation and the redaction of secrets.
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"
#include "send.h"

#include "fmgr.h"
#include "common/base64.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "datatype/timestamp.h"

PG_FUNCTION_INFO_V1(retl_validate_destination);
PG_FUNCTION_INFO_V1(retl_redact_config);
PG_FUNCTION_INFO_V1(retl_check_event_type);

static const RetlDestKind *const kinds[] = {
	&retl_dest_webhook,
	&retl_dest_rudderstack,
	&retl_dest_segment,
	&retl_dest_braze,
	&retl_dest_iterable,
	&retl_dest_amplitude,
	&retl_dest_mixpanel,
	&retl_dest_kinesis,
	&retl_dest_kafka_rest,
	&retl_dest_statsig,
	NULL
};

/*
 * Finds a kind by name.  An unknown kind is an error that lists the known
 * ones, unless missing_ok.
 */
const RetlDestKind *
retl_dest_kind(const char *name, bool missing_ok)
{
	StringInfoData names;

	for (int i = 0; kinds[i]; i++)
		if (strcmp(kinds[i]->name, name) == 0)
			return kinds[i];
	if (missing_ok)
		return NULL;
	initStringInfo(&names);
	for (int i = 0; kinds[i]; i++)
		appendStringInfo(&names, "%s%s", i ? ", " : "", kinds[i]->name);
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("destination kind \"%s\" does not exist", name),
			 errhint("Known kinds: %s.", names.data)));
	return NULL;
}

/*
 * Returns an http(s) URL from the config, or raises a clear error.
 */
char *
retl_dest_require_url(Jsonb *config, const char *key)
{
	char	   *url = retl_jsonb_get_text(config, key);

	if (url == NULL || url[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination config needs \"%s\"", key),
				 errhint("For example {\"%s\": \"https://example.com/hook\"}.", key)));
	if (pg_strncasecmp(url, "http://", 7) != 0 &&
		pg_strncasecmp(url, "https://", 8) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination \"%s\" must be an http or https URL", key)));
	return url;
}

/*
 * Returns a base URL from the config (or the default when the key is
 * absent and a default exists), validated, without trailing slashes.
 */
char *
retl_dest_base_url(Jsonb *config, const char *key, const char *dflt)
{
	char	   *url = (dflt && retl_jsonb_get_text(config, key) == NULL)
		? pstrdup(dflt) : retl_dest_require_url(config, key);
	size_t		len = strlen(url);

	while (len > 0 && url[len - 1] == '/')
		url[--len] = '\0';
	return url;
}

/*
 * Returns a required secret (an API key, a write key) from the config, or
 * raises a clear error with a hint saying where to find it.
 */
char *
retl_dest_require_secret(Jsonb *config, const char *key, const char *hint)
{
	char	   *v = retl_jsonb_get_text(config, key);

	if (v == NULL || v[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination config needs \"%s\"", key),
				 errhint("%s", hint)));
	return v;
}

/*
 * Reads an integer setting within bounds, or returns the default.
 */
static int64
read_bounded(Jsonb *config, const char *key, int64 dflt, int64 lo, int64 hi)
{
	int64		v;

	if (!retl_jsonb_get_int(config, key, &v))
		return dflt;
	if (v < lo || v > hi)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination setting \"%s\" must be between " INT64_FORMAT
						" and " INT64_FORMAT, key, lo, hi)));
	return v;
}

/*
 * Reads the settings every kind shares.  The kind gives its API's limits;
 * the config may only lower them.
 */
void
retl_dest_read_common(RetlDest *dest, Jsonb *config, int batch_default,
					  int batch_max, int64 bytes_max, int64 event_max)
{
	dest->batch_size = read_bounded(config, "batch_size", batch_default,
									1, batch_max);
	dest->max_batch_bytes = read_bounded(config, "max_batch_bytes",
										 bytes_max, 1024, bytes_max);
	dest->max_event_bytes = Min(event_max, dest->max_batch_bytes);
	dest->max_in_flight = read_bounded(config, "max_in_flight", 4, 1, 64);
	dest->timeout_ms = read_bounded(config, "timeout_ms", 30000, 100, 3600000);
	dest->max_attempts = read_bounded(config, "max_attempts", 8, 1, 100);
	dest->max_backoff_ms = read_bounded(config, "max_backoff_ms", 30000, 10,
										3600000);
}

/*
 * Refuses a configured header that libcurl or retl sets itself: Host,
 * Content-Length and Transfer-Encoding frame the request (a second copy
 * makes servers read it differently), Connection, Expect and the other
 * hop-by-hop headers belong to the connection, and Content-Type and
 * X-Retl-Signature come from the format and the secret.
 */
void
retl_dest_check_header_name(const char *name)
{
	static const char *const owned[] = {
		"host", "content-length", "transfer-encoding", "connection",
		"expect", "keep-alive", "te", "trailer", "upgrade",
		"proxy-connection", "content-type", "x-retl-signature"
	};

	/* "Host " must not slip through: a name is a token, without blanks */
	if (name[0] == '\0' || strpbrk(name, " \t") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("header name \"%s\" is empty or contains blanks", name),
				 errhint("Write the header name alone, such as \"Authorization\".")));
	for (int i = 0; i < lengthof(owned); i++)
		if (pg_strcasecmp(name, owned[i]) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("header \"%s\" cannot be configured", name),
					 errhint("libcurl sets Host, Content-Length, Transfer-Encoding and the connection headers itself, and retl sets Content-Type (from \"format\") and X-Retl-Signature (from \"secret\").")));
}

/*
 * Adds a request header.  The list is allocated by curl, not palloc.
 */
void
retl_dest_add_header(RetlDest *dest, const char *name, const char *value)
{
	char	   *line = psprintf("%s: %s", name, value);
	struct curl_slist *l = curl_slist_append(dest->headers, line);

	pfree(line);
	if (l == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	dest->headers = l;
}

/*
 * Rejects config keys a kind does not know, so typos are caught early.
 */
void
retl_dest_check_keys(Jsonb *config, const char *kind,
					 const char *const *allowed)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (!JB_ROOT_IS_OBJECT(config))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination config must be a JSON object")));
	it = JsonbIteratorInit(&config->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		int			i;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		for (i = 0; allowed[i] && strcmp(allowed[i], key) != 0; i++)
			;
		if (allowed[i] == NULL && strcmp(key, "ca_file") != 0 &&
			strcmp(key, "insecure_skip_verify") != 0 &&
			strcmp(key, "url_is_secret") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown setting \"%s\" for a %s destination",
							key, kind)));
	}
}

/*
 * Frees the curl header list when the memory context that holds the
 * destination is reset or deleted, so an error cannot leak it.
 */
static void
dest_free_headers(void *arg)
{
	RetlDest   *dest = (RetlDest *) arg;

	if (dest->headers)
		curl_slist_free_all(dest->headers);
	dest->headers = NULL;
}

/*
 * Raises invalid_parameter_value, with curl's reason, for a URL that curl
 * cannot parse, and for a host name longer than DNS allows (253
 * characters), which could only fail at every request.  The URL itself is
 * not shown: it may carry credentials.
 */
static void
check_url_syntax(const char *url)
{
	CURLU	   *u = curl_url();
	char	   *host = NULL;
	CURLUcode	rc;
	size_t		hostlen = 0;

	if (u == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	rc = curl_url_set(u, CURLUPART_URL, url, 0);
	if (rc == CURLUE_OK && curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
		hostlen = strlen(host);
	curl_free(host);
	curl_url_cleanup(u);
	if (rc != CURLUE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination URL is not a valid URL: %s",
						curl_url_strerror(rc)),
				 errhint("Characters such as spaces must be percent-encoded.")));
	if (hostlen > 253)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination URL host name is %zu characters long, over the limit of 253",
						hostlen)));
}

/*
 * Prepares a destination for sending.  dest must be allocated in
 * CurrentMemoryContext: a reset callback there frees the header list.
 */
void
retl_dest_open(RetlDest *dest, const char *kind, Jsonb *config, bool track)
{
	MemoryContextCallback *cb = palloc0(sizeof(MemoryContextCallback));
	bool		url_secret;

	memset(dest, 0, sizeof(RetlDest));
	dest->kind = retl_dest_kind(kind, false);
	dest->prefix = "[";
	dest->separator = ",";
	dest->suffix = "]";
	dest->track = track;
	cb->func = dest_free_headers;
	cb->arg = dest;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	dest->kind->validate(config);
	dest->kind->open(dest, config);
	dest->ca_file = retl_jsonb_get_text(config, "ca_file");
	(void) retl_jsonb_get_bool(config, "insecure_skip_verify", &dest->insecure);
	(void) retl_jsonb_get_bool(config, "url_is_secret", &url_secret);
	check_url_syntax(dest->url);
	retl_check_url_allowed(dest->url);
	retl_dest_add_header(dest, "Content-Type",
						 dest->content_type ? dest->content_type : "application/json");
	retl_dest_add_header(dest, "User-Agent", "retl/" RETL_VERSION);
	retl_dest_add_header(dest, "Expect", "");
}

/*
 * Frees what retl_dest_open allocated outside palloc.
 */
void
retl_dest_close(RetlDest *dest)
{
	dest_free_headers(dest);
}

/*
 * SQL: retl._validate_destination(kind, config).
 */
Datum
retl_validate_destination(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *config = PG_GETARG_JSONB_P(1);
	RetlDest   *dest = palloc(sizeof(RetlDest));

	if (!JB_ROOT_IS_OBJECT(config))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination config must be a JSON object")));
	retl_dest_open(dest, kind, config, true);
	retl_dest_close(dest);
	PG_RETURN_VOID();
}

/*
 * Does key end with suffix, ignoring case?
 */
static bool
ends_with_ci(const char *key, size_t len, const char *suffix)
{
	size_t		n = strlen(suffix);

	return len >= n && pg_strcasecmp(key + len - n, suffix) == 0;
}

/*
 * Is this config key a secret?  write_key, api_key, secret_access_key,
 * password, token, secret, anything ending in _key or _secret (or _token,
 * _password), and HTTP headers that carry credentials (Authorization,
 * Cookie, X-Api-Key, ...).  Case does not matter: header names are
 * case-insensitive.  Mixpanel's project_token is not a secret: Mixpanel
 * publishes it in web pages, and retl sends it in every /engage record.
 */
bool
retl_is_secret_key(const char *key)
{
	static const char *const exact[] = {
		"password", "token", "secret", "authorization", "proxy-authorization",
		"cookie", "api-key", "apikey"
	};
	static const char *const suffixes[] = {
		"_key", "-key", "_secret", "-secret", "_token", "-token",
		"_password", "-password"
	};
	size_t		len = strlen(key);

	/* Mixpanel's project token is public (sent in every /engage record) */
	if (strcmp(key, "project_token") == 0)
		return false;
	for (int i = 0; i < lengthof(exact); i++)
		if (pg_strcasecmp(key, exact[i]) == 0)
			return true;
	for (int i = 0; i < lengthof(suffixes); i++)
		if (ends_with_ci(key, len, suffixes[i]))
			return true;
	return false;
}

/*
 * Is this config key a URL (of any kind: "url", Kinesis' "endpoint")?
 */
static bool
is_url_key(const char *key, int len)
{
	return (len == 3 && strncmp(key, "url", 3) == 0) ||
		(len == 8 && strncmp(key, "endpoint", 8) == 0);
}

/*
 * Does the config say {"url_is_secret": true}?  Never raises an error:
 * redaction runs on any config (validation reports a wrong type).
 */
static bool
config_url_is_secret(Jsonb *config)
{
	JsonbValue *v = retl_json_get(config, "url_is_secret");

	return v != NULL && v->type == jbvBool && v->val.boolean;
}

/*
 * A URL as it may be shown.  The credentials of its userinfo are always
 * "***" (the password, or a user name that has none: a token used as
 * one); when the whole URL is a secret (token-in-path URLs), only its
 * scheme, host and port are left, then a path of "***".  A
 * URL curl cannot parse is shown as "***" when it could hold either.
 */
char *
retl_redact_url(const char *url, bool whole)
{
	CURLU	   *u = curl_url();
	char	   *part = NULL;
	char	   *result = NULL;

	if (u == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
		result = pstrdup((whole || strchr(url, '@') != NULL) ? "***" : url);
	else if (whole)
	{
		char	   *scheme = NULL;
		char	   *port = NULL;

		(void) curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
		(void) curl_url_get(u, CURLUPART_HOST, &part, 0);
		(void) curl_url_get(u, CURLUPART_PORT, &port, 0);
		result = psprintf("%s://%s%s%s/***", scheme ? scheme : "http",
						  part ? part : "", port ? ":" : "", port ? port : "");
		curl_free(scheme);
		curl_free(port);
	}
	else
	{
		char	   *user = NULL;

		if (curl_url_get(u, CURLUPART_PASSWORD, &part, 0) == CURLUE_OK)
			(void) curl_url_set(u, CURLUPART_PASSWORD, "***", 0);
		else if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK &&
				 user[0] != '\0')
			(void) curl_url_set(u, CURLUPART_USER, "***", 0);
		curl_free(user);
		curl_free(part);
		part = NULL;
		/* without userinfo the URL is shown exactly as written */
		if (strchr(url, '@') == NULL ||
			curl_url_get(u, CURLUPART_URL, &part, 0) != CURLUE_OK)
			result = pstrdup(strchr(url, '@') == NULL ? url : "***");
		else
			result = pstrdup(part);
	}
	curl_free(part);
	curl_url_cleanup(u);
	return result;
}

/*
 * Pushes container c into state with every secret shown as "***", at any
 * depth: a webhook's headers object holds credentials too.  The value of
 * a secret key is replaced whole, even when it is an object or an array;
 * a URL loses its credentials (or all but its host, with url_secret).
 */
static JsonbValue *
redact_container(JsonbParseState **state, JsonbContainer *c, bool url_secret)
{
	JsonbIterator *it = JsonbIteratorInit(c);
	JsonbValue	v;
	JsonbIteratorToken tok;
	JsonbValue *res = NULL;
	bool		redact_next = false;
	bool		url_next = false;

	/* a config nests as deep as jsonb lets it */
	check_stack_depth();
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			redact_next = retl_is_secret_key(pnstrdup(v.val.string.val,
													  v.val.string.len));
			url_next = is_url_key(v.val.string.val, v.val.string.len);
		}
		if (tok == WJB_VALUE && redact_next)
		{
			v.type = jbvString;
			v.val.string.val = "***";
			v.val.string.len = 3;
		}
		else if (tok == WJB_VALUE && url_next && v.type == jbvString)
		{
			v.val.string.val = retl_redact_url(pnstrdup(v.val.string.val,
														v.val.string.len),
											   url_secret);
			v.val.string.len = strlen(v.val.string.val);
		}
		if ((tok == WJB_VALUE || tok == WJB_ELEM) && v.type == jbvBinary)
		{
			/* a nested object or array: its tokens go into the same state */
			res = redact_container(state, v.val.binary.data, url_secret);
			continue;
		}
		res = pushJsonbValue(state, tok, tok < WJB_BEGIN_ARRAY ? &v : NULL);
	}
	return res;
}

/*
 * Adds value to *out, and the last word of a multi-word value ("Bearer
 * <token>"), so that a vendor echoing only the token is scrubbed too.
 */
static void
add_secret(List **out, const char *value, int len)
{
	int			word = len;

	if (len < 4)
		return;					/* scrubbing "ab" would mangle messages */
	*out = lappend(*out, pnstrdup(value, len));
	while (word > 0 && value[word - 1] != ' ')
		word--;
	if (word > 0 && len - word >= 8)
		*out = lappend(*out, pnstrdup(value + word, len - word));
}

/*
 * Collects the string values under secret keys of container c (all of
 * them when all is true: c is itself a secret's value).
 */
static void
collect_secrets(JsonbContainer *c, bool all, List **out)
{
	JsonbIterator *it = JsonbIteratorInit(c);
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		secret = all;

	check_stack_depth();
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			secret = all || retl_is_secret_key(pnstrdup(v.val.string.val,
														v.val.string.len));
		else if (tok == WJB_VALUE || tok == WJB_ELEM)
		{
			bool		s = tok == WJB_VALUE ? secret : all;

			if (v.type == jbvBinary)
				collect_secrets(v.val.binary.data, s, out);
			else if (s && v.type == jbvString)
				add_secret(out, v.val.string.val, v.val.string.len);
		}
	}
}

/*
 * The secret values of an open destination, at any depth of its config,
 * and its Basic auth credentials as they travel (base64): what must never
 * reach retl.runs, retl.failed_events or the server log, even when a
 * vendor echoes a credential back in its response.
 */
/*
 * Adds the secrets of a URL: its userinfo's password (or a user name that
 * has none), those credentials as Basic auth sends them (base64 of
 * "user:password"), and, when the whole URL is a secret, the URL and its
 * path and query (the token of a Slack- or Zapier-style hook).
 */
static void
add_url_secrets(List **out, const char *url, bool whole)
{
	CURLU	   *u = curl_url();
	char	   *user = NULL;
	char	   *password = NULL;
	char	   *path = NULL;

	if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
	{
		curl_url_cleanup(u);
		if (whole || strchr(url, '@') != NULL)
			add_secret(out, url, strlen(url));
		return;
	}
	(void) curl_url_get(u, CURLUPART_USER, &user, CURLU_URLDECODE);
	(void) curl_url_get(u, CURLUPART_PASSWORD, &password, CURLU_URLDECODE);
	if (password != NULL)
		add_secret(out, password, strlen(password));
	else if (user != NULL)
		add_secret(out, user, strlen(user));
	if (user != NULL)
	{
		char	   *pair = psprintf("%s:%s", user, password ? password : "");
		int			len = strlen(pair);
		char	   *b64 = palloc(pg_b64_enc_len(len) + 1);
		int			n = pg_b64_encode(pair, len, b64, pg_b64_enc_len(len));

		if (n > 0)
			add_secret(out, b64, n);
	}
	if (whole)
	{
		add_secret(out, url, strlen(url));
		if (curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK &&
			strlen(path) > 1)
			add_secret(out, path, strlen(path));
	}
	curl_free(user);
	curl_free(password);
	curl_free(path);
	curl_url_cleanup(u);
}

List *
retl_secret_values(RetlDest *dest, Jsonb *config)
{
	List	   *out = NIL;
	bool		whole = config != NULL && config_url_is_secret(config);

	if (config != NULL && !JB_ROOT_IS_SCALAR(config))
	{
		const char *keys[2] = {"url", "endpoint"};

		collect_secrets(&config->root, false, &out);
		for (int i = 0; i < 2; i++)
		{
			JsonbValue *v = retl_json_get(config, keys[i]);

			if (v != NULL && v->type == jbvString)
				add_url_secrets(&out, pnstrdup(v->val.string.val,
											   v->val.string.len), whole);
		}
	}
	if (dest->url != NULL)
		add_url_secrets(&out, dest->url, whole);
	if (dest->userpwd != NULL)
	{
		int			len = strlen(dest->userpwd);
		char	   *b64 = palloc(pg_b64_enc_len(len) + 1);
		int			n = pg_b64_encode(dest->userpwd, len, b64, pg_b64_enc_len(len));

		if (n > 0)
			add_secret(&out, b64, n);
	}
	return out;
}

/*
 * s (len bytes, or up to its NUL when len < 0) as text, with every secret
 * value replaced by "***".  s is copied once when it holds no secret, as
 * it almost always does: failed payloads can be large.
 */
text *
retl_scrub(List *secrets, const char *s, int len)
{
	const char *src = s;
	size_t		srclen = len < 0 ? strlen(s) : (size_t) len;
	ListCell   *lc;

	foreach(lc, secrets)
	{
		const char *secret = lfirst(lc);
		size_t		slen = strlen(secret);
		const char *from = src,
				   *end = src + srclen,
				   *hit;
		StringInfoData out;

		if (memmem(src, srclen, secret, slen) == NULL)
			continue;
		initStringInfo(&out);
		while ((hit = memmem(from, end - from, secret, slen)) != NULL)
		{
			appendBinaryStringInfo(&out, from, hit - from);
			appendStringInfoString(&out, "***");
			from = hit + slen;
		}
		appendBinaryStringInfo(&out, from, end - from);
		src = out.data;
		srclen = out.len;
	}
	return cstring_to_text_with_len(src, srclen);
}

/*
 * SQL: retl._redact(config).  The config with every secret shown as "***".
 */
Datum
retl_redact_config(PG_FUNCTION_ARGS)
{
	Jsonb	   *config = PG_GETARG_JSONB_P(0);
	JsonbParseState *state = NULL;

	if (JB_ROOT_IS_SCALAR(config))
		PG_RETURN_JSONB_P(config);
	PG_RETURN_JSONB_P(JsonbValueToJsonb(redact_container(&state, &config->root,
														 config_url_is_secret(config))));
}

/*
 * SQL: retl._check_event_type(kind, event_type).  A kind whose API has no
 * identify says so when the sync is created, not by dropping events.
 */
Datum
retl_check_event_type(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *event_type = text_to_cstring(PG_GETARG_TEXT_PP(1));
	const RetlDestKind *k = retl_dest_kind(kind, false);

	if (k->no_identify && strcmp(event_type, "identify") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("destination kind \"%s\" has no identify call", kind),
				 errhint("Use event_type 'track' with this destination.")));
	PG_RETURN_VOID();
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
 * Marks every event of a request to be sent again, for an answer whose
 * per-event outcomes cannot be read: not JSON, cut short, a list that
 * misses events, an index or a code that is not an integer.  Unknown is
 * never success; the retry keeps the events' ids, the backoff and the
 * attempt limit.  Returns true, for the kind's parse callback to return.
 */
bool
retl_outcomes_unknown(const RetlRequest *req, RetlVerdicts *verdicts,
					  const char *why)
{
	char	   *reason = psprintf("the outcome is unknown: %s", why);

	for (int i = 0; i < req->nevents; i++)
	{
		verdicts->outcomes[i] = RETL_OUTCOME_RETRY;
		verdicts->reasons[i] = reason;
	}
	return true;
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
 * The event's time in milliseconds since the Unix epoch: its "timestamp"
 * when that parses as a timestamp, else its "originalTimestamp".  APIs such
 * as Amplitude, Mixpanel and Statsig want epoch milliseconds.  ISO 8601
 * timestamps, which retl writes, are read without timestamptz_in (this
 * runs for every event); other forms go through it in a subtransaction
 * (retl_try_input), so that a string it refuses raises nothing.
 */
int64
retl_event_time_ms(Jsonb *event)
{
	const char *keys[2] = {"timestamp", "originalTimestamp"};

	for (int k = 0; k < 2; k++)
	{
		JsonbValue *v = retl_json_get(event, keys[k]);
		char	   *str;
		TimestampTz ts = 0;
		Datum		d;
		bool		ok;

		if (v == NULL || v->type != jbvString)
			continue;
		str = pnstrdup(v->val.string.val, v->val.string.len);
		ok = retl_iso_timestamptz(str, &ts);
		if (!ok && retl_try_input(timestamptz_in, str, &d))
		{
			ts = DatumGetTimestampTz(d);
			ok = true;
		}
		pfree(str);
		if (ok && !TIMESTAMP_NOT_FINITE(ts))
			return ts / 1000 + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
	}
	return (GetCurrentTimestamp() / 1000) +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
}

/*
 * The event's user: its userId when present, else its anonymousId, as
 * text; NULL when it has neither.
 */
char *
retl_event_user(Jsonb *event, bool *anonymous)
{
	JsonbValue *v = retl_json_get(event, "userId");

	*anonymous = false;
	if (v == NULL || v->type != jbvString)
	{
		v = retl_json_get(event, "anonymousId");
		*anonymous = true;
	}
	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * Is the event a mirror deletion (context.retl.deleted = true, diff.c)?
 * Kinds whose API removes properties with an operation of its own
 * (Amplitude, Mixpanel) encode its null traits as that operation.
 */
bool
retl_event_deleted(Jsonb *event)
{
	JsonbValue *ctx = retl_json_get(event, "context");
	JsonbValue *retl;
	JsonbValue *deleted;

	if (ctx == NULL || ctx->type != jbvBinary)
		return false;
	retl = getKeyJsonValueFromContainer(ctx->val.binary.data, "retl", 4, NULL);
	if (retl == NULL || retl->type != jbvBinary)
		return false;
	deleted = getKeyJsonValueFromContainer(retl->val.binary.data, "deleted", 7, NULL);
	return deleted != NULL && deleted->type == jbvBool && deleted->val.boolean;
}

/*
 * Appends the keys of the event's traits as JSON strings, separated by
 * commas, each followed by after (e.g. ":\"-\""): the properties a
 * deletion removes.
 */
void
retl_append_trait_keys(StringInfo out, Jsonb *event, const char *after)
{
	JsonbValue *traits = retl_json_get(event, "traits");
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		first = true;

	if (traits == NULL || traits->type != jbvBinary)
		return;
	it = JsonbIteratorInit(traits->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		if (!first)
			appendStringInfoChar(out, ',');
		first = false;
		retl_json_escape(out, v.val.string.val, v.val.string.len);
		appendStringInfoString(out, after);
	}
}
