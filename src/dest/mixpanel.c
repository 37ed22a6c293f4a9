/*-------------------------------------------------------------------------
 *
 * mixpanel.c
 *	  Destination kind "mixpanel": track events go to /import?strict=1,
 *	  identify traits to /engage (profile batch update, "$set").
 *
 * Mixpanel Ingestion API, "Import Events" (https://developer.mixpanel.com/
 * reference/import-events) and "Profile Batch Update"
 * (https://developer.mixpanel.com/reference/profile-batch-update),
 * summarized in src/README ("Destinations"):
 *	 - 2,000 events and 2 MB (uncompressed) per request; properties.time in ms;
 *	   $insert_id deduplicates (the messageId);
 *	 - strict mode: a 400 is a partial success with failed_records
 *	   [{index, field, message}]; never retry a 400;
 *	 - /engage answers 200 even on errors: {"status": 0, "error"} fails the
 *	   request;
 *	 - 429 has no Retry-After: back off from 2 s.
 * Auth of /import: a service account (username, secret, project_id) or the
 * project's api_secret; /engage takes the project_token in each record.
 *
 * Config: url (default https://api.mixpanel.com), project_token,
 * username + secret + project_id, or api_secret, batch_size,
 * max_batch_bytes, max_in_flight, timeout_ms, max_attempts, max_backoff_ms.
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"

typedef struct MixpanelPriv
{
	char	   *token;
} MixpanelPriv;

#define MIXPANEL_URL "https://api.mixpanel.com"

static const char *const mixpanel_keys[] = {
	"url", "project_token", "username", "secret", "project_id", "api_secret",
	"batch_size", "max_batch_bytes", "max_in_flight", "timeout_ms",
	"max_attempts", "max_backoff_ms", NULL
};

/*
 * Checks a Mixpanel config: a project token, and credentials for /import.
 */
static void
mixpanel_validate(Jsonb *config)
{
	bool		account = retl_jsonb_get_text(config, "username") != NULL;

	retl_dest_check_keys(config, "mixpanel", mixpanel_keys);
	(void) retl_dest_base_url(config, "url", MIXPANEL_URL);
	if (retl_jsonb_get_text(config, "project_token") == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination config needs \"project_token\"")));
	if (account && (retl_jsonb_get_text(config, "secret") == NULL ||
					retl_jsonb_get_text(config, "project_id") == NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a Mixpanel service account needs \"username\", \"secret\" and \"project_id\"")));
	if (!account && retl_jsonb_get_text(config, "api_secret") == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination config needs a service account or \"api_secret\""),
				 errhint("Set \"username\", \"secret\" and \"project_id\" of a service account, or the project's \"api_secret\".")));
}

/*
 * Fills the URL of the event type, auth and limits.
 */
static void
mixpanel_open(RetlDest *dest, Jsonb *config)
{
	char	   *url = retl_dest_base_url(config, "url", MIXPANEL_URL);
	char	   *project = retl_jsonb_get_text(config, "project_id");
	MixpanelPriv *priv = palloc0(sizeof(MixpanelPriv));

	priv->token = retl_jsonb_get_text(config, "project_token");
	dest->priv = priv;
	if (dest->track)
		dest->url = project
			? psprintf("%s/import?strict=1&project_id=%s", url, project)
			: psprintf("%s/import?strict=1", url);
	else
		dest->url = psprintf("%s/engage?verbose=1", url);
	if (retl_jsonb_get_text(config, "username") != NULL)
		dest->userpwd = psprintf("%s:%s", retl_jsonb_get_text(config, "username"),
								 retl_jsonb_get_text(config, "secret"));
	else
		dest->userpwd = psprintf("%s:", retl_jsonb_get_text(config, "api_secret"));
	retl_dest_read_common(dest, config, 1000, 2000, 2 * 1024 * 1024, 1024 * 1024);
}

/*
 * Appends the members of a jsonb object (without braces), after a comma
 * when there are any.
 */
static void
append_members(StringInfo out, JsonbValue *obj)
{
	StringInfoData buf;

	if (obj == NULL || obj->type != jbvBinary)
		return;
	initStringInfo(&buf);
	retl_json_append_value(&buf, obj);
	if (buf.len > 2)
	{
		appendStringInfoChar(out, ',');
		appendBinaryStringInfo(out, buf.data + 1, buf.len - 2);
	}
}

/*
 * An /import event, or an /engage "$set" record; a mirror deletion is an
 * "$unset" of the mapped traits (Mixpanel, "Profile Delete Property").
 */
static void
mixpanel_encode(RetlDest *dest, StringInfo out, Jsonb *event)
{
	MixpanelPriv *priv = (MixpanelPriv *) dest->priv;
	bool		anonymous;
	char	   *user = retl_std_user(event, &anonymous);

	if (dest->track)
	{
		appendStringInfoString(out, "{\"event\":");
		retl_json_append_value(out, retl_json_get(event, "event"));
		appendStringInfo(out, ",\"properties\":{\"time\":" INT64_FORMAT ",\"distinct_id\":",
						 retl_std_time_ms(event));
		retl_json_escape(out, user ? user : "", user ? strlen(user) : 0);
		appendStringInfoString(out, ",\"$insert_id\":");
		retl_json_append_value(out, retl_json_get(event, "messageId"));
		append_members(out, retl_json_get(event, "properties"));
		appendStringInfoString(out, "}}");
		return;
	}
	appendStringInfoString(out, "{\"$token\":");
	retl_json_escape(out, priv->token, strlen(priv->token));
	appendStringInfoString(out, ",\"$distinct_id\":");
	retl_json_escape(out, user ? user : "", user ? strlen(user) : 0);
	if (retl_std_deleted(event))
	{
		/* a deletion removes the mapped properties ("profile-unset") */
		appendStringInfoString(out, ",\"$unset\":[");
		retl_std_append_trait_keys(out, event, "");
		appendStringInfoString(out, "]}");
		return;
	}
	appendStringInfoString(out, ",\"$set\":");
	retl_json_append_value(out, retl_json_get(event, "traits"));
	appendStringInfoChar(out, '}');
}

/*
 * Fails every event of a rejected /engage batch.
 */
static bool
engage_rejected(const RetlRequest *req, RetlVerdicts *verdicts,
				const char *reason)
{
	for (int i = 0; i < req->nevents; i++)
	{
		verdicts->outcomes[i] = RETL_OUTCOME_FAIL;
		verdicts->reasons[i] = (char *) reason;
	}
	return true;
}

/*
 * /engage: a 200 whose status is 0 (or a bare 0) failed as a whole, 1 was
 * applied; any other answer is an unknown outcome.
 */
static bool
engage_parse(const RetlRequest *req, const char *body, RetlVerdicts *verdicts)
{
	Jsonb	   *resp;
	JsonbValue *err;
	int64		st;
	const char *text = body + strspn(body, " \r\n");
	int			len = strcspn(text, " \r\n");

	/* without verbose, /engage answers a bare 1 or 0 */
	if (len == 1 && text[len + strspn(text + len, " \r\n")] == '\0' &&
		(text[0] == '0' || text[0] == '1'))
		return text[0] == '0'
			? engage_rejected(req, verdicts, "Mixpanel rejected the profile update")
			: false;
	resp = retl_json_parse(body, strlen(body));
	if (!retl_json_int64(retl_json_get(resp, "status"), &st) || (st != 0 && st != 1))
		return retl_dest_outcomes_unknown(req, verdicts,
										  "the /engage answer has no status 0 or 1");
	if (st == 1)
		return false;
	err = retl_json_get(resp, "error");
	return engage_rejected(req, verdicts,
						   err && err->type == jbvString
						   ? psprintf("Mixpanel: %.*s", err->val.string.len, err->val.string.val)
						   : "Mixpanel rejected the profile update");
}

/*
 * /import: a 400 lists failed_records, the others were imported; a failed
 * record whose index is not an integer within the batch leaves the
 * outcome unknown.  /engage: see engage_parse.  429: wait 2 s.
 */
static bool
mixpanel_parse(RetlDest *dest, const RetlRequest *req, long status,
			   const char *body, RetlVerdicts *verdicts)
{
	Jsonb	   *resp;
	JsonbValue *failed;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (status == 429)
		verdicts->retry_after_s = Max(verdicts->retry_after_s, 2);
	if (!dest->track && status == 200)
		return engage_parse(req, body, verdicts);
	if (!dest->track || status != 400)
		return false;
	resp = retl_json_parse(body, strlen(body));
	failed = retl_json_get(resp, "failed_records");
	if (failed == NULL || failed->type != jbvBinary)
		return false;
	it = JsonbIteratorInit(failed->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		Jsonb	   *rec;
		JsonbValue *msg;
		int64		i;

		if (tok != WJB_ELEM)
			continue;
		rec = v.type == jbvBinary ? JsonbValueToJsonb(&v) : NULL;
		msg = retl_json_get(rec, "message");
		if ((i = retl_json_index(retl_json_get(rec, "index"), req->nevents)) < 0)
			return retl_dest_outcomes_unknown(req, verdicts,
											  "a Mixpanel failed record points at no record of the request");
		verdicts->outcomes[i] = RETL_OUTCOME_FAIL;
		verdicts->reasons[i] = msg && msg->type == jbvString
			? psprintf("Mixpanel: %.*s", msg->val.string.len, msg->val.string.val)
			: "Mixpanel rejected the record";
	}
	return true;
}

const RetlDestKind retl_dest_mixpanel = {
	.name = "mixpanel",
	.validate = mixpanel_validate,
	.open = mixpanel_open,
	.encode = mixpanel_encode,
	.parse = mixpanel_parse,
	/* a failed record echoes its insert_id: 1 KB each, for 2,000 */
	.max_answer_bytes = 2000 * 1024,
};
