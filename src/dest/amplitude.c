/*-------------------------------------------------------------------------
 *
 * amplitude.c
 *	  Destination kind "amplitude": POST <url>/batch (or /2/httpapi) with
 *	  {"api_key", "events": [...]}; identify becomes an "$identify" event
 *	  with user_properties {"$set": traits}.
 *
 * Amplitude Batch Event Upload API (https://amplitude.com/docs/apis/
 * analytics/batch-event-upload) and HTTP V2 API (https://amplitude.com/
 * docs/apis/analytics/http-v2), summarized in src/README ("Destinations"):
 *	 - /batch: 2,000 events and 20 MB per request; /2/httpapi: 1 MB;
 *	 - insert_id deduplicates: it is the event's messageId;
 *	 - user_id or device_id must be at least 5 characters;
 *	 - a 400 rejects the whole request and lists the bad events in
 *	   events_with_invalid_fields / events_with_missing_fields: those fail,
 *	   the rest are sent again;
 *	 - 413: split the batch (the default rule does);
 *	 - 429 lists throttled users and devices: pause for about 30 s.
 *
 * Config: url (default https://api2.amplitude.com), api_key, endpoint
 * ("batch" default, or "httpapi"), batch_size, max_batch_bytes,
 * max_in_flight, timeout_ms, max_attempts, max_backoff_ms.
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"

#define AMPLITUDE_URL "https://api2.amplitude.com"

static const char *const amplitude_keys[] = {
	"url", "api_key", "endpoint", "batch_size", "max_batch_bytes",
	"max_in_flight", "timeout_ms", "max_attempts", "max_backoff_ms", NULL
};

/*
 * Checks an Amplitude config.
 */
static void
amplitude_validate(Jsonb *config)
{
	char	   *endpoint = retl_jsonb_get_text(config, "endpoint");

	retl_dest_check_keys(config, "amplitude", amplitude_keys);
	(void) retl_dest_base_url(config, "url", AMPLITUDE_URL);
	(void) retl_dest_require_secret(config, "api_key",
									"The API key of the Amplitude project.");
	if (endpoint && strcmp(endpoint, "batch") != 0 && strcmp(endpoint, "httpapi") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid Amplitude endpoint \"%s\"", endpoint),
				 errhint("Use \"batch\" (the default) or \"httpapi\".")));
}

/*
 * Fills the URL, limits and the framing, which carries the API key.
 */
static void
amplitude_open(RetlDest *dest, Jsonb *config)
{
	char	   *url = retl_dest_base_url(config, "url", AMPLITUDE_URL);
	char	   *endpoint = retl_jsonb_get_text(config, "endpoint");
	bool		httpapi = endpoint && strcmp(endpoint, "httpapi") == 0;
	StringInfoData prefix;

	dest->url = psprintf("%s%s", url, httpapi ? "/2/httpapi" : "/batch");
	initStringInfo(&prefix);
	appendStringInfoString(&prefix, "{\"api_key\":");
	retl_json_escape(&prefix, retl_jsonb_get_text(config, "api_key"),
					 strlen(retl_jsonb_get_text(config, "api_key")));
	appendStringInfoString(&prefix, ",\"events\":[");
	dest->prefix = prefix.data;
	dest->suffix = "]}";
	retl_dest_read_common(dest, config, 1000, 2000,
						  httpapi ? 1024 * 1024 : 20 * 1024 * 1024, 1024 * 1024);
}

/*
 * One Amplitude event from a standard event.  Whether it is a track event
 * is the event's own type: a mirror identify sync's deletions may be
 * track events (on_delete {"event": ...}).  A deletion identify removes
 * the mapped user properties with "$unset" (Amplitude ignores null
 * values), each set to "-" as the Identify API asks.
 */
static void
amplitude_encode(RetlDest *dest, StringInfo out, Jsonb *event)
{
	bool		anonymous;
	char	   *user = retl_std_user(event, &anonymous);
	JsonbValue *type = retl_json_get(event, "type");
	bool		track = type != NULL && type->type == jbvString &&
		type->val.string.len == 5 && strncmp(type->val.string.val, "track", 5) == 0;

	appendStringInfoString(out, anonymous ? "{\"device_id\":" : "{\"user_id\":");
	if (user != NULL)
		retl_json_escape(out, user, strlen(user));
	else
		appendStringInfoString(out, "null");
	appendStringInfoString(out, ",\"event_type\":");
	if (track)
		retl_json_append_value(out, retl_json_get(event, "event"));
	else
		appendStringInfoString(out, "\"$identify\"");
	appendStringInfo(out, ",\"time\":" INT64_FORMAT ",\"insert_id\":",
					 retl_std_time_ms(event));
	retl_json_append_value(out, retl_json_get(event, "messageId"));
	if (track)
	{
		appendStringInfoString(out, ",\"event_properties\":");
		retl_json_append_value(out, retl_json_get(event, "properties"));
	}
	else if (retl_std_deleted(event))
	{
		appendStringInfoString(out, ",\"user_properties\":{\"$unset\":{");
		retl_std_append_trait_keys(out, event, ":\"-\"");
		appendStringInfoString(out, "}}");
	}
	else
	{
		appendStringInfoString(out, ",\"user_properties\":{\"$set\":");
		retl_json_append_value(out, retl_json_get(event, "traits"));
		appendStringInfoChar(out, '}');
	}
	appendStringInfoChar(out, '}');
}

/*
 * Marks the events listed under every key of an object of index arrays,
 * e.g. {"user_id": [0, 3]}, as failed with that key as the reason.  An
 * index that is not an integer within the batch marks nothing: nothing of
 * a 400 was ingested, so every event not marked is sent again.
 */
static int
mark_listed(JsonbValue *lists, const char *what, const RetlRequest *req,
			RetlVerdicts *verdicts)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *field = NULL;
	int			marked = 0;

	if (lists == NULL || lists->type != jbvBinary)
		return 0;
	it = JsonbIteratorInit(lists->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		int64		i;

		if (tok == WJB_KEY)
			field = pnstrdup(v.val.string.val, v.val.string.len);
		if (tok != WJB_ELEM || field == NULL ||
			(i = retl_json_index(&v, req->nevents)) < 0)
			continue;
		verdicts->outcomes[i] = RETL_OUTCOME_FAIL;
		verdicts->reasons[i] = psprintf("Amplitude: %s field \"%s\"", what,
										field);
		marked++;
	}
	return marked;
}

/*
 * A 400 rejects the whole request: the listed events fail, the others are
 * sent again.  A 429 throttles: everything waits about 30 s.
 */
static bool
amplitude_parse(RetlDest *dest, const RetlRequest *req, long status,
				const char *body, RetlVerdicts *verdicts)
{
	Jsonb	   *resp;
	int			marked;

	if (status == 429)
	{
		for (int i = 0; i < req->nevents; i++)
			verdicts->outcomes[i] = RETL_OUTCOME_RETRY;
		verdicts->retry_after_s = Max(verdicts->retry_after_s, 30);
		return true;
	}
	if (status != 400)
		return false;
	resp = retl_json_parse(body, strlen(body));
	if (resp == NULL)
		return false;
	for (int i = 0; i < req->nevents; i++)
		verdicts->outcomes[i] = RETL_OUTCOME_RETRY;
	marked = mark_listed(retl_json_get(resp, "events_with_invalid_fields"),
						 "invalid", req, verdicts) +
		mark_listed(retl_json_get(resp, "events_with_missing_fields"),
					"missing", req, verdicts) +
		mark_listed(retl_json_get(resp, "events_with_invalid_id_lengths"),
					"too short", req, verdicts);
	if (marked == 0)
		return false;			/* nothing listed: the whole request is bad */
	verdicts->retry_after_s = 0;
	return true;
}

const RetlDestKind retl_dest_amplitude = {
	.name = "amplitude",
	.validate = amplitude_validate,
	.open = amplitude_open,
	.encode = amplitude_encode,
	.parse = amplitude_parse,
	/* index lists of a 400, users and devices of a 429: 1 KB an event */
	.max_answer_bytes = 2000 * 1024,
};
