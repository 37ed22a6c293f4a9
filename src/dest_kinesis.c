/*-------------------------------------------------------------------------
 *
 * dest_kinesis.c
 *	  Destination kind "kinesis": Amazon Kinesis Data Streams PutRecords,
 *	  signed with AWS Signature Version 4 by libcurl (CURLOPT_AWS_SIGV4).
 *
 * Kinesis API Reference, "PutRecords" (https://docs.aws.amazon.com/
 * kinesis/latest/APIReference/API_PutRecords.html) and
 * shared/DESTINATIONS.md:
 *	 - POST / with X-Amz-Target: Kinesis_20131202.PutRecords and
 *	   {"StreamName", "Records": [{"Data": base64, "PartitionKey"}]};
 *	 - 500 records and 5 MiB per request, 1 MiB per record;
 *	 - 200 with FailedRecordCount and a per-record ErrorCode:
 *	   ProvisionedThroughputExceededException and InternalFailure are
 *	   retried, record by record; other codes fail;
 *	 - no dedupe: the messageId travels inside the record's data.
 * The partition key is the event's userId, else its anonymousId.
 *
 * Config: region, stream, access_key_id, secret_access_key, endpoint
 * (default https://kinesis.<region>.amazonaws.com), batch_size,
 * max_batch_bytes, max_in_flight, timeout_ms, max_attempts,
 * max_backoff_ms.
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "common/base64.h"

static const char *const kinesis_keys[] = {
	"region", "stream", "access_key_id", "secret_access_key", "endpoint",
	"batch_size", "max_batch_bytes", "max_in_flight", "timeout_ms",
	"max_attempts", "max_backoff_ms", NULL
};

/*
 * Raises a clear error for a missing string setting.
 */
static char *
require(Jsonb *config, const char *key)
{
	char	   *v = retl_jsonb_get_text(config, key);

	if (v == NULL || v[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("kinesis destination config needs \"%s\"", key)));
	return v;
}

/*
 * Checks a Kinesis config: region, stream and credentials are required.
 */
static void
kinesis_validate(Jsonb *config)
{
	char	   *region;

	retl_dest_check_keys(config, "kinesis", kinesis_keys);
	region = require(config, "region");
	(void) require(config, "stream");
	(void) require(config, "access_key_id");
	(void) require(config, "secret_access_key");
	if (retl_jsonb_get_text(config, "endpoint") != NULL)
		(void) retl_dest_require_url(config, "endpoint");
	if (strspn(region, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(region))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid AWS region \"%s\"", region)));
}

/*
 * Fills the endpoint, SigV4 signing, headers, limits and framing.
 */
static void
kinesis_open(RetlDest *dest, Jsonb *config)
{
	char	   *region = require(config, "region");
	char	   *endpoint = retl_jsonb_get_text(config, "endpoint");
	StringInfoData prefix;

	dest->url = endpoint ? endpoint
		: psprintf("https://kinesis.%s.amazonaws.com/", region);
	dest->aws_sigv4 = psprintf("aws:amz:%s:kinesis", region);
	dest->userpwd = psprintf("%s:%s", require(config, "access_key_id"),
							 require(config, "secret_access_key"));
	dest->content_type = "application/x-amz-json-1.1";
	initStringInfo(&prefix);
	appendStringInfoString(&prefix, "{\"StreamName\":");
	retl_json_escape(&prefix, require(config, "stream"),
					 strlen(require(config, "stream")));
	appendStringInfoString(&prefix, ",\"Records\":[");
	dest->prefix = prefix.data;
	dest->suffix = "]}";
	/* a record's base64 data is 4/3 of the 1 MiB the API allows */
	retl_dest_read_common(dest, config, 500, 500, 5 * 1024 * 1024,
						  1024 * 1024 * 4 / 3);
	retl_dest_add_header(dest, "X-Amz-Target", "Kinesis_20131202.PutRecords");
}

/*
 * One record: the whole standard event, base64, keyed by its user.
 */
static void
kinesis_encode(RetlDest *dest, StringInfo out, Jsonb *event)
{
	StringInfoData json;
	bool		anonymous;
	char	   *user = retl_event_user(event, &anonymous);
	char	   *b64;
	int			len;

	initStringInfo(&json);
	(void) JsonbToCString(&json, &event->root, VARSIZE(event));
	b64 = palloc(pg_b64_enc_len(json.len) + 1);
	len = pg_b64_encode(json.data, json.len, b64, pg_b64_enc_len(json.len));
	if (len < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not encode a Kinesis record")));
	appendStringInfoString(out, "{\"Data\":\"");
	appendBinaryStringInfo(out, b64, len);
	appendStringInfoString(out, "\",\"PartitionKey\":");
	if (user != NULL && user[0] != '\0')
		retl_json_escape(out, user, Min(strlen(user), 256));
	else
		retl_append_jsonb_value(out, retl_json_get(event, "messageId"));
	appendStringInfoChar(out, '}');
}

/*
 * Reads the per-record results of a 200: records with an ErrorCode are
 * retried when the code is transient, failed otherwise.
 */
static bool
kinesis_parse(RetlDest *dest, RetlBatch *b, long status, const char *body,
			  RetlOutcome *outcomes, char **reasons)
{
	Jsonb	   *resp;
	JsonbValue *records;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			i = 0;

	if (status != 200)
		return false;
	resp = retl_parse_json(body, strlen(body));
	records = retl_json_get(resp, "Records");
	if (records == NULL || records->type != jbvBinary)
		return false;
	it = JsonbIteratorInit(records->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE && i < b->nevents)
	{
		JsonbValue *code;
		Jsonb	   *rec;

		if (tok != WJB_ELEM)
			continue;
		rec = v.type == jbvBinary ? JsonbValueToJsonb(&v) : NULL;
		code = retl_json_get(rec, "ErrorCode");
		if (code != NULL && code->type == jbvString)
		{
			char	   *c = pnstrdup(code->val.string.val, code->val.string.len);

			outcomes[i] = strcmp(c, "ProvisionedThroughputExceededException") == 0 ||
				strcmp(c, "InternalFailure") == 0
				? RETL_OUTCOME_RETRY : RETL_OUTCOME_FAIL;
			reasons[i] = psprintf("Kinesis: %s", c);
		}
		i++;
	}
	return true;
}

const RetlDestKind retl_dest_kinesis = {
	.name = "kinesis",
	.validate = kinesis_validate,
	.open = kinesis_open,
	.encode = kinesis_encode,
	.parse = kinesis_parse,
};
