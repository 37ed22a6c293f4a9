/*-------------------------------------------------------------------------
 *
 * dest.c
 *	  The registry of destination kinds, the config settings they share,
 *	  create-time validation, and the unknown outcome kinds report.  The
 *	  JSON helpers are in json.c, the standard-event readers in std.c,
 *	  secrets and redaction in secrets.c.
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"
#include "urlpolicy.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(retl_validate_destination);
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
 * Every kind takes the TLS settings and url_is_secret (retl_dest_open).
 */
void
retl_dest_check_keys(Jsonb *config, const char *kind,
					 const char *const *allowed)
{
	static const char *const common[] = {
		"ca_file", "insecure_skip_verify", "url_is_secret", NULL
	};
	char	   *key;

	if (!JB_ROOT_IS_OBJECT(config))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination config must be a JSON object")));
	key = retl_json_unknown_key(config, allowed, common);
	if (key != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown setting \"%s\" for a %s destination",
						key, kind)));
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
	retl_urlpolicy_check(dest->url);
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
 * Marks every event of a request to be sent again, for an answer whose
 * per-event outcomes cannot be read: not JSON, cut short, a list that
 * misses events, an index or a code that is not an integer.  Unknown is
 * never success; the retry keeps the events' ids, the backoff and the
 * attempt limit.  Returns true, for the kind's parse callback to return.
 */
bool
retl_dest_outcomes_unknown(const RetlRequest *req, RetlVerdicts *verdicts,
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

