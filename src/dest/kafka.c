/*-------------------------------------------------------------------------
 *
 * kafka.c
 *	  Destination kind "kafka_rest": produces records to a Kafka topic
 *	  through the Confluent REST Proxy, API v2 or v3.
 *
 * Confluent REST Proxy API reference (https://docs.confluent.io/platform/
 * current/kafka-rest/api.html), summarized in src/README:
 *	 - v2: POST /topics/{topic}, Content-Type
 *	   application/vnd.kafka.json.v2+json, {"records": [{"key", "value"}]};
 *	   the answer's offsets[i].error_code is null (ok), 1 (not retriable)
 *	   or 2 (retriable);
 *	 - v3: POST /v3/clusters/{id}/topics/{topic}/records, one JSON record
 *	   per line ({"key": {"type": "JSON", "data"}, "value": {...}}), one
 *	   delivery report per record, each with its own error_code (200 ok),
 *	   under an HTTP 200;
 *	 - an answer that does not report on every record (not JSON, cut
 *	   short, too few or too many reports, an error_code that is not an
 *	   integer) is an unknown outcome: the batch is sent again;
 *	 - the record key is the event's userId, else its anonymousId: a
 *	   user's events stay in one partition, in order; the value is the
 *	   whole event, with its messageId.
 *
 * Config: url, topic, api_version ("v2" default, or "v3"), cluster_id
 * (v3), username and password (Basic auth, optional), batch_size,
 * max_batch_bytes, max_in_flight, timeout_ms, max_attempts,
 * max_backoff_ms.
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"

#include "nodes/pg_list.h"

typedef struct KafkaPriv
{
	bool		v3;
} KafkaPriv;

static const char *const kafka_keys[] = {
	"url", "topic", "api_version", "cluster_id", "username", "password",
	"batch_size", "max_batch_bytes", "max_in_flight", "timeout_ms",
	"max_attempts", "max_backoff_ms", NULL
};

/*
 * Checks a Kafka REST config.
 */
static void
kafka_validate(Jsonb *config)
{
	char	   *version = retl_jsonb_get_text(config, "api_version");
	char	   *topic = retl_jsonb_get_text(config, "topic");

	retl_dest_check_keys(config, "kafka_rest", kafka_keys);
	(void) retl_dest_require_url(config, "url");
	if (topic == NULL || topic[0] == '\0' || strpbrk(topic, "/?#%") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("kafka_rest destination config needs a valid \"topic\"")));
	if (version && strcmp(version, "v2") != 0 && strcmp(version, "v3") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid api_version \"%s\"", version),
				 errhint("Use \"v2\" (the default) or \"v3\".")));
	if (version && strcmp(version, "v3") == 0 &&
		retl_jsonb_get_text(config, "cluster_id") == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("kafka_rest v3 needs \"cluster_id\"")));
}

/*
 * Fills the produce URL of the API version, auth, limits and framing.
 */
static void
kafka_open(RetlDest *dest, Jsonb *config)
{
	char	   *url = retl_dest_base_url(config, "url", NULL);
	char	   *version = retl_jsonb_get_text(config, "api_version");
	char	   *topic = retl_jsonb_get_text(config, "topic");
	KafkaPriv  *priv = palloc0(sizeof(KafkaPriv));

	priv->v3 = version && strcmp(version, "v3") == 0;
	dest->priv = priv;
	if (priv->v3)
	{
		dest->url = psprintf("%s/v3/clusters/%s/topics/%s/records", url,
							 retl_jsonb_get_text(config, "cluster_id"), topic);
		dest->prefix = "";
		dest->separator = "\n";
		dest->suffix = "";
	}
	else
	{
		dest->url = psprintf("%s/topics/%s", url, topic);
		dest->prefix = "{\"records\":[";
		dest->suffix = "]}";
		dest->content_type = "application/vnd.kafka.json.v2+json";
	}
	if (retl_jsonb_get_text(config, "username") != NULL)
		dest->userpwd = psprintf("%s:%s", retl_jsonb_get_text(config, "username"),
								 retl_jsonb_get_text(config, "password")
								 ? retl_jsonb_get_text(config, "password") : "");
	retl_dest_read_common(dest, config, 500, 10000, 8 * 1024 * 1024, 1024 * 1024);
}

/*
 * One record: key = the user, value = the whole event.
 */
static void
kafka_encode(RetlDest *dest, StringInfo out, Jsonb *event)
{
	KafkaPriv  *priv = (KafkaPriv *) dest->priv;
	bool		anonymous;
	char	   *user = retl_std_user(event, &anonymous);

	appendStringInfoString(out, priv->v3 ? "{\"key\":{\"type\":\"JSON\",\"data\":"
						   : "{\"key\":");
	if (user != NULL)
		retl_json_escape(out, user, strlen(user));
	else
		appendStringInfoString(out, "null");
	appendStringInfoString(out, priv->v3 ? "},\"value\":{\"type\":\"JSON\",\"data\":"
						   : ",\"value\":");
	(void) JsonbToCString(out, &event->root, VARSIZE(event));
	appendStringInfoString(out, priv->v3 ? "}}" : "}");
}

/*
 * Classifies one v2 offset or v3 delivery report.  Returns false when it
 * cannot be read: not an object, or an error_code that is not an integer
 * (a v3 report always carries one; a v2 offset's null means delivered).
 */
static bool
classify(Jsonb *rec, bool v3, RetlOutcome *outcome, char **reason)
{
	JsonbValue *code = retl_json_get(rec, "error_code");
	JsonbValue *msg = retl_json_get(rec, v3 ? "message" : "error");
	int64		c;
	int64		http;

	if (rec == NULL || !JB_ROOT_IS_OBJECT(rec))
		return false;
	if (!v3 && (code == NULL || code->type == jbvNull))
		return true;			/* delivered */
	if (!retl_json_int64(code, &c))
		return false;
	if (v3 && c >= 200 && c < 300)
		return true;
	/* v3 codes are HTTP status x 100 + a sub-code: 50003 is retriable */
	http = (v3 && c >= 10000) ? c / 100 : c;
	*outcome = (v3 ? (http == 429 || http >= 500) : c == 2)
		? RETL_OUTCOME_RETRY : RETL_OUTCOME_FAIL;
	*reason = msg && msg->type == jbvString
		? psprintf("Kafka REST error %lld: %.*s", (long long) c,
				   msg->val.string.len, msg->val.string.val)
		: psprintf("Kafka REST error %lld", (long long) c);
	return true;
}

/*
 * Splits a v3 answer, a sequence of JSON objects, into its objects; an
 * object that does not parse, or is cut short, is left out (so the count
 * shows it).
 */
static List *
split_objects(const char *body)
{
	List	   *objs = NIL;
	int			depth = 0;
	bool		in_str = false;
	const char *start = NULL;

	for (const char *p = body; *p; p++)
	{
		if (in_str)
		{
			if (*p == '\\' && p[1])
				p++;
			else if (*p == '"')
				in_str = false;
			continue;
		}
		if (*p == '"')
			in_str = true;
		else if (*p == '{' && depth++ == 0)
			start = p;
		else if (*p == '}' && depth > 0 && --depth == 0)
		{
			Jsonb	   *jb = retl_json_parse(start, p - start + 1);

			if (jb != NULL)
				objs = lappend(objs, jb);
		}
	}
	return objs;
}

/*
 * Reads the per-record results of a 200: one v2 offset or v3 delivery
 * report per record, in order.  An answer that does not account for every
 * record, or an error_code that is not an integer, is an unknown outcome.
 */
static bool
kafka_parse(RetlDest *dest, const RetlRequest *req, long status,
			const char *body, RetlVerdicts *verdicts)
{
	KafkaPriv  *priv = (KafkaPriv *) dest->priv;
	List	   *recs = NIL;
	ListCell   *lc;
	int			i = 0;

	if (status != 200)
		return false;
	if (priv->v3)
		recs = split_objects(body);
	else
	{
		JsonbValue *offsets = retl_json_get(retl_json_parse(body, strlen(body)), "offsets");
		JsonbIterator *it;
		JsonbValue	v;
		JsonbIteratorToken tok;

		if (offsets == NULL || offsets->type != jbvBinary ||
			!JsonContainerIsArray(offsets->val.binary.data))
			return retl_dest_outcomes_unknown(req, verdicts,
											  "the Kafka REST answer has no offsets array");
		it = JsonbIteratorInit(offsets->val.binary.data);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
			if (tok == WJB_ELEM)
				recs = lappend(recs, v.type == jbvBinary ? JsonbValueToJsonb(&v) : NULL);
	}
	if (list_length(recs) != req->nevents)
		return retl_dest_outcomes_unknown(req, verdicts,
										  psprintf("the Kafka REST answer reports on %d of the %d records sent",
											  list_length(recs), req->nevents));
	foreach(lc, recs)
	{
		if (!classify((Jsonb *) lfirst(lc), priv->v3, &verdicts->outcomes[i],
					  &verdicts->reasons[i]))
			return retl_dest_outcomes_unknown(req, verdicts,
											  psprintf("report %d of the Kafka REST answer has no integer error_code", i));
		i++;
	}
	return true;
}

const RetlDestKind retl_dest_kafka_rest = {
	.name = "kafka_rest",
	.validate = kafka_validate,
	.open = kafka_open,
	.encode = kafka_encode,
	.parse = kafka_parse,
	/* v3 reports are ~230 bytes a record: 1 KB each, for 10,000 records */
	.max_answer_bytes = 10000 * 1024,
};
