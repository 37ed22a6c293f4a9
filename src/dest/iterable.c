/*-------------------------------------------------------------------------
 *
 * iterable.c
 *	  Destination kind "iterable": track events go to
 *	  /api/events/trackBulk, identify traits to /api/users/bulkUpdate, with
 *	  the Api-Key header.
 *
 * Iterable API reference (https://api.iterable.com/api/docs, "Bulk track
 * events" and "Bulk update users"), summarized in src/README:
 *	 - requests are capped at 4 MB; bulk endpoints are rate limited per
 *	   project (bulkUpdate: 5 requests/s), so 429s are retried with backoff;
 *	 - the event "id" (at most 512 bytes) deduplicates and updates: it is
 *	   the messageId;
 *	 - a 200 reports failCount and lists of failed users or emails
 *	   (invalidUserIds, invalidEmails, and under failedUpdates:
 *	   notFoundUserIds, forgottenUserIds, ...): events of those users fail;
 *	   an answer that cannot be read whole, or whose failCount its lists
 *	   do not account for, is an unknown outcome: the batch is sent again
 *	   (the event id deduplicates).
 * Users are addressed by userId; an "email" property or trait is passed
 * along too, for email-based projects.
 *
 * Config: url (default https://api.iterable.com), api_key, batch_size,
 * max_batch_bytes, max_in_flight, timeout_ms, max_attempts, max_backoff_ms.
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"

#include "nodes/pg_list.h"

#define ITERABLE_URL "https://api.iterable.com"

static const char *const iterable_keys[] = {
	"url", "api_key", "batch_size", "max_batch_bytes", "max_in_flight",
	"timeout_ms", "max_attempts", "max_backoff_ms", NULL
};

/*
 * Checks an Iterable config: api_key is required.
 */
static void
iterable_validate(Jsonb *config)
{
	retl_dest_check_keys(config, "iterable", iterable_keys);
	(void) retl_dest_base_url(config, "url", ITERABLE_URL);
	(void) retl_dest_require_secret(config, "api_key",
									"A server-side API key of the Iterable project.");
}

/*
 * Fills the endpoint of the event type, the key header, limits, framing.
 */
static void
iterable_open(RetlDest *dest, Jsonb *config)
{
	char	   *url = retl_dest_base_url(config, "url", ITERABLE_URL);

	dest->url = psprintf("%s%s", url, dest->track ? "/api/events/trackBulk"
						 : "/api/users/bulkUpdate");
	dest->prefix = dest->track ? "{\"events\":[" : "{\"users\":[";
	dest->suffix = "]}";
	retl_dest_read_common(dest, config, 500, 1000, 4 * 1000 * 1000, 1024 * 1024);
	retl_dest_add_header(dest, "Api-Key", retl_jsonb_get_text(config, "api_key"));
}

/*
 * Appends "email" when the payload object has one.
 */
static void
append_email(StringInfo out, JsonbValue *payload)
{
	JsonbValue *email;

	if (payload == NULL || payload->type != jbvBinary)
		return;
	email = getKeyJsonValueFromContainer(payload->val.binary.data, "email", 5, NULL);
	if (email == NULL || email->type != jbvString)
		return;
	appendStringInfoString(out, ",\"email\":");
	retl_json_append_value(out, email);
}

/*
 * One trackBulk event or bulkUpdate user.
 */
static void
iterable_encode(RetlDest *dest, StringInfo out, Jsonb *event)
{
	bool		anonymous;
	char	   *user = retl_std_user(event, &anonymous);
	JsonbValue *payload = retl_json_get(event, dest->track ? "properties" : "traits");

	appendStringInfoString(out, "{\"userId\":");
	if (user != NULL)
		retl_json_escape(out, user, strlen(user));
	else
		appendStringInfoString(out, "null");
	append_email(out, payload);
	if (dest->track)
	{
		appendStringInfoString(out, ",\"eventName\":");
		retl_json_append_value(out, retl_json_get(event, "event"));
		appendStringInfoString(out, ",\"id\":");
		retl_json_append_value(out, retl_json_get(event, "messageId"));
		appendStringInfo(out, ",\"createdAt\":" INT64_FORMAT,
						 retl_std_time_ms(event) / 1000);
	}
	else
		appendStringInfoString(out, ",\"preferUserId\":true");
	appendStringInfoString(out, ",\"dataFields\":");
	retl_json_append_value(out, payload);
	appendStringInfoChar(out, '}');
}

/*
 * Adds the strings of a jsonb array to a list of failed identities.
 */
static void
collect(JsonbValue *arr, const char *list, List **names, List **reasons)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (arr == NULL || arr->type != jbvBinary)
		return;
	it = JsonbIteratorInit(arr->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		if (tok == WJB_ELEM && v.type == jbvString)
		{
			*names = lappend(*names, pnstrdup(v.val.string.val, v.val.string.len));
			*reasons = lappend(*reasons, psprintf("Iterable: %s", list));
		}
}

/*
 * Is a jsonb string value equal to a C string?
 */
static bool
same(JsonbValue *v, const char *s)
{
	return v != NULL && v->type == jbvString &&
		(size_t) v->val.string.len == strlen(s) &&
		strncmp(v->val.string.val, s, v->val.string.len) == 0;
}

/*
 * Reads failCount and the lists of failed users of a 200: events of the
 * listed users (by userId or email) fail, the others were accepted.  An
 * answer that is not a JSON object, a failCount that is not an integer,
 * or failures that the lists do not attribute to events of the batch, are
 * an unknown outcome.
 */
static bool
iterable_parse(RetlDest *dest, const RetlRequest *req, long status,
			   const char *body, RetlVerdicts *verdicts)
{
	static const char *const lists[] = {
		"invalidUserIds", "invalidEmails", "notFoundUserIds", "notFoundEmails",
		"forgottenUserIds", "forgottenEmails", "conflictUserIds",
		"conflictEmails", "invalidDataUserIds", "invalidDataEmails", NULL
	};
	Jsonb	   *resp;
	int64		nfail;
	int			marked = 0;
	JsonbValue *updates;
	List	   *names = NIL;
	List	   *why = NIL;

	if (status != 200)
		return false;
	resp = retl_json_parse(body, strlen(body));
	if (resp == NULL || !JB_ROOT_IS_OBJECT(resp))
		return retl_dest_outcomes_unknown(req, verdicts,
										  "the Iterable answer is not a JSON object");
	if (!retl_json_int64(retl_json_get(resp, "failCount"), &nfail) || nfail < 0)
		return retl_dest_outcomes_unknown(req, verdicts,
										  "the Iterable answer has no integer failCount");
	if (nfail == 0)
		return false;
	updates = retl_json_get(resp, "failedUpdates");
	for (int l = 0; lists[l]; l++)
	{
		collect(retl_json_get(resp, lists[l]), lists[l], &names, &why);
		if (updates != NULL && updates->type == jbvBinary)
			collect(getKeyJsonValueFromContainer(updates->val.binary.data, lists[l],
												 strlen(lists[l]), NULL),
					lists[l], &names, &why);
	}
	collect(retl_json_get(resp, "disallowedEventNames"), "disallowedEventNames",
			&names, &why);
	for (int i = 0; i < req->nevents; i++)
	{
		Jsonb	   *ev = retl_json_parse(req->body + req->ev_start[i], req->ev_len[i]);
		JsonbValue *uid = retl_json_get(ev, "userId");
		JsonbValue *email = retl_json_get(ev, "email");
		JsonbValue *name_v = retl_json_get(ev, "eventName");
		ListCell   *n,
				   *r;

		forboth(n, names, r, why)
		{
			const char *name = lfirst(n);

			if (same(uid, name) || same(email, name) ||
				(strcmp(lfirst(r), "Iterable: disallowedEventNames") == 0 &&
				 same(name_v, name)))
			{
				verdicts->outcomes[i] = RETL_OUTCOME_FAIL;
				verdicts->reasons[i] = lfirst(r);
			}
		}
		if (verdicts->outcomes[i] == RETL_OUTCOME_FAIL)
			marked++;
	}
	if (marked < nfail)
		return retl_dest_outcomes_unknown(req, verdicts,
										  psprintf("the Iterable answer counts " INT64_FORMAT " failures, its lists name %d of the events sent",
											  nfail, marked));
	return true;
}

const RetlDestKind retl_dest_iterable = {
	.name = "iterable",
	.validate = iterable_validate,
	.open = iterable_open,
	.encode = iterable_encode,
	.parse = iterable_parse,
	/* the lists echo userIds and emails, each at most twice: 2 x 4 MB */
	.max_answer_bytes = 8 * 1000 * 1000,
};
