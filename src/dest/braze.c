/*-------------------------------------------------------------------------
 *
 * braze.c
 *	  Destination kind "braze": POST <url>/users/track with a Bearer key;
 *	  track events go in "events", identify traits in "attributes".
 *
 * Braze REST API, "Track users" (https://www.braze.com/docs/api/endpoints/
 * user_data/post_user_track/), summarized in src/README ("Destinations"):
 *	 - at most 75 events and 75 attributes per request (some contracts
 *	   allow only 50: batch_size lowers the cap);
 *	 - 201 with {"errors": [{"type", "input_array", "index"}]} rejects
 *	   single objects; entries missing from "errors" were processed;
 *	 - no dedupe key: every retry of an accepted event is a duplicate, so
 *	   only the rejected objects are ever recorded, never resent as a
 *	   batch -- except when the answer leaves the outcome unknown (a 2xx
 *	   that is not JSON or is cut short, an error pointing at no object):
 *	   unknown is never success, so the batch is sent again.
 * A user without a userId is addressed by user_alias {alias_name:
 * anonymousId, alias_label: "anonymous_id"}.
 *
 * Config: url (the REST endpoint of the instance), api_key, batch_size
 * (default and maximum 75), max_in_flight, timeout_ms, max_attempts,
 * max_backoff_ms.
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"

static const char *const braze_keys[] = {
	"url", "api_key", "batch_size", "max_batch_bytes", "max_in_flight",
	"timeout_ms", "max_attempts", "max_backoff_ms", NULL
};

/*
 * Checks a Braze config: url and api_key are required.
 */
static void
braze_validate(Jsonb *config)
{
	retl_dest_check_keys(config, "braze", braze_keys);
	(void) retl_dest_base_url(config, "url", NULL);
	(void) retl_dest_require_secret(config, "api_key",
									"A Braze REST API key with the users.track permission.");
}

/*
 * Fills the URL, Bearer auth, limits and the framing of the event type.
 */
static void
braze_open(RetlDest *dest, Jsonb *config)
{
	dest->url = psprintf("%s/users/track", retl_dest_base_url(config, "url", NULL));
	dest->prefix = dest->track ? "{\"events\":[" : "{\"attributes\":[";
	dest->suffix = "]}";
	retl_dest_read_common(dest, config, 75, 75, 4 * 1024 * 1024, 512 * 1024);
	retl_dest_add_header(dest, "Authorization",
						 psprintf("Bearer %s", retl_jsonb_get_text(config, "api_key")));
}

/*
 * Appends the user of an event: external_id, or a user alias.
 */
static void
append_user(StringInfo out, Jsonb *event)
{
	bool		anonymous;
	char	   *user = retl_std_user(event, &anonymous);

	if (user == NULL)
		appendStringInfoString(out, "\"external_id\":null");
	else if (!anonymous)
	{
		appendStringInfoString(out, "\"external_id\":");
		retl_json_escape(out, user, strlen(user));
	}
	else
	{
		appendStringInfoString(out, "\"user_alias\":{\"alias_name\":");
		retl_json_escape(out, user, strlen(user));
		appendStringInfoString(out, ",\"alias_label\":\"anonymous_id\"}");
	}
}

/*
 * One Braze event object, or one attributes object with the traits
 * flattened into it.
 */
static void
braze_encode(RetlDest *dest, StringInfo out, Jsonb *event)
{
	JsonbValue *traits;

	appendStringInfoChar(out, '{');
	append_user(out, event);
	if (dest->track)
	{
		appendStringInfoString(out, ",\"name\":");
		retl_json_append_value(out, retl_json_get(event, "event"));
		appendStringInfoString(out, ",\"time\":");
		retl_json_append_value(out, retl_json_get(event, "timestamp"));
		appendStringInfoString(out, ",\"properties\":");
		retl_json_append_value(out, retl_json_get(event, "properties"));
		appendStringInfoChar(out, '}');
		return;
	}
	traits = retl_json_get(event, "traits");
	if (traits != NULL && traits->type == jbvBinary)
	{
		StringInfoData obj;

		initStringInfo(&obj);
		retl_json_append_value(&obj, traits);
		/* splice the traits' members in: drop their braces */
		if (obj.len > 2)
		{
			appendStringInfoChar(out, ',');
			appendBinaryStringInfo(out, obj.data + 1, obj.len - 2);
		}
	}
	appendStringInfoChar(out, '}');
}

/*
 * Reads the "errors" array of a Braze answer: the listed objects of our
 * input array are rejected for good, the others were processed.  A 2xx
 * that is not a JSON object, or an error that does not point at an object
 * of the request (no input_array, an index that is not an integer within
 * the batch), is an unknown outcome.
 */
static bool
braze_parse(RetlDest *dest, const RetlRequest *req, long status,
			const char *body, RetlVerdicts *verdicts)
{
	Jsonb	   *resp;
	JsonbValue *errors;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	const char *ours = dest->track ? "events" : "attributes";

	if (status < 200 || status >= 300)
		return false;
	resp = retl_json_parse(body, strlen(body));
	if (resp == NULL || !JB_ROOT_IS_OBJECT(resp))
		return retl_dest_outcomes_unknown(req, verdicts,
										  "the Braze answer is not a JSON object");
	errors = retl_json_get(resp, "errors");
	if (errors == NULL)
		return false;
	if (errors->type != jbvBinary || !JsonContainerIsArray(errors->val.binary.data))
		return retl_dest_outcomes_unknown(req, verdicts,
										  "the Braze answer's errors is not an array");
	it = JsonbIteratorInit(errors->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		Jsonb	   *err;
		JsonbValue *array,
				   *index,
				   *type;
		int64		i;

		if (tok != WJB_ELEM)
			continue;
		err = v.type == jbvBinary ? JsonbValueToJsonb(&v) : NULL;
		array = retl_json_get(err, "input_array");
		index = retl_json_get(err, "index");
		type = retl_json_get(err, "type");
		if (array == NULL || array->type != jbvString)
			return retl_dest_outcomes_unknown(req, verdicts,
											  "a Braze error names no input_array");
		if ((size_t) array->val.string.len != strlen(ours) ||
			strncmp(array->val.string.val, ours, array->val.string.len) != 0)
			continue;
		if ((i = retl_json_index(index, req->nevents)) < 0)
		{
			StringInfoData shown;

			initStringInfo(&shown);
			retl_json_append_value(&shown, index);
			return retl_dest_outcomes_unknown(req, verdicts,
											  psprintf("a Braze error points at index %.40s, not at an object of the %d sent",
												  shown.data, req->nevents));
		}
		verdicts->outcomes[i] = RETL_OUTCOME_FAIL;
		verdicts->reasons[i] = type && type->type == jbvString
			? psprintf("Braze rejected the object: %.*s", type->val.string.len,
					   type->val.string.val)
			: "Braze rejected the object";
	}
	return true;
}

const RetlDestKind retl_dest_braze = {
	.name = "braze",
	.validate = braze_validate,
	.open = braze_open,
	.encode = braze_encode,
	.parse = braze_parse,
	/* an error is ~150 bytes: 1 KB each for 75 events and 75 attributes */
	.max_answer_bytes = 150 * 1024,
};
