/*-------------------------------------------------------------------------
 *
 * secrets.c
 *	  Which config settings are secrets, and keeping them out of what retl
 *	  shows and stores: the redacted config (retl._redact), URLs without
 *	  their credentials, and the scrubbing of messages and payloads
 *	  written to retl.runs and retl.failed_events.
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"

#include "common/base64.h"
#include "miscadmin.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(retl_redact_config);

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
static bool
retl_secrets_is_key(const char *key)
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
static char *
retl_secrets_redact_url(const char *url, bool whole)
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
			redact_next = retl_secrets_is_key(pnstrdup(v.val.string.val,
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
			v.val.string.val = retl_secrets_redact_url(pnstrdup(v.val.string.val,
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
			secret = all || retl_secrets_is_key(pnstrdup(v.val.string.val,
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

/*
 * The secret values of an open destination, at any depth of its config,
 * and its Basic auth credentials as they travel (base64): what must never
 * reach retl.runs, retl.failed_events or the server log, even when a
 * vendor echoes a credential back in its response.
 */
List *
retl_secrets_values(RetlDest *dest, Jsonb *config)
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
retl_secrets_scrub(List *secrets, const char *s, int len)
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
