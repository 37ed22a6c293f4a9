/*-------------------------------------------------------------------------
 *
 * kinesis.c
 *	  Destination kind "kinesis": Amazon Kinesis Data Streams PutRecords,
 *	  signed with AWS Signature Version 4 by libcurl (CURLOPT_AWS_SIGV4).
 *
 * Kinesis API Reference, "PutRecords" (https://docs.aws.amazon.com/
 * kinesis/latest/APIReference/API_PutRecords.html), summarized in
 * src/README ("Destinations"):
 *	 - POST / with X-Amz-Target: Kinesis_20131202.PutRecords and
 *	   {"StreamName", "Records": [{"Data": base64, "PartitionKey"}]};
 *	 - 500 records and 5 MiB per request, 1 MiB per record;
 *	 - 200 with FailedRecordCount and a per-record ErrorCode:
 *	   ProvisionedThroughputExceededException and InternalFailure are
 *	   retried, record by record; other codes fail;
 *	 - a call throttled whole is answered 400 with an AWS JSON error,
 *	   {"__type": "ProvisionedThroughputExceededException"} (also
 *	   KMSThrottlingException, LimitExceededException, ThrottlingException;
 *	   "Common Errors" of the API reference): the whole call is sent
 *	   again, after at least 1 s (shard limits are per second), never
 *	   split as if its records were bad; InternalFailure comes as a 500,
 *	   retried as every 5xx is;
 *	 - no dedupe: the messageId travels inside the record's data.
 * A 200 whose Records do not account for every record sent (not JSON, cut
 * short, one entry too few or too many, FailedRecordCount that does not
 * match) is an unknown outcome: the batch is sent again.  An answer
 * listing 500 throttled records is about 86 KB: max_answer_bytes allows
 * 1 KB per record.
 * The partition key is the event's userId, else its anonymousId, cut to
 * 256 bytes at a character boundary.
 *
 * Config: region, stream, access_key_id, secret_access_key, endpoint
 * (default https://kinesis.<region>.amazonaws.com), batch_size,
 * max_batch_bytes, max_in_flight, timeout_ms, max_attempts,
 * max_backoff_ms.
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"

#include "common/base64.h"
#include "mb/pg_wchar.h"

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
	char	   *user = retl_std_user(event, &anonymous);
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
	{
		/*
		 * At most 256 bytes, cut at a character boundary: the event is
		 * still in the database encoding here, converted to UTF-8 later (a
		 * SQL_ASCII database's text must already be UTF-8).  AWS allows 256
		 * Unicode characters; 256 bytes are never more.
		 */
		int			enc = GetDatabaseEncoding();

		retl_json_escape(out, user,
						 pg_encoding_mbcliplen(enc == PG_SQL_ASCII ? PG_UTF8 : enc,
											   user, strlen(user), 256));
	}
	else
		retl_json_append_value(out, retl_json_get(event, "messageId"));
	appendStringInfoChar(out, '}');
}

/*
 * Is code one of the transient AWS error types, per record or for a whole
 * call?  The namespace of a JSON protocol type ("...#Type") and a suffix
 * ("Type:http://...") are ignored.
 */
static bool
transient_error(const char *code, int len)
{
	static const char *const transient[] = {
		"ProvisionedThroughputExceededException", "KMSThrottlingException",
		"LimitExceededException", "ThrottlingException", "Throttling",
		"RequestLimitExceeded", "TooManyRequestsException",
		"InternalFailure", "ServiceUnavailable", NULL
	};
	const char *hash = memrchr(code, '#', len);
	const char *colon;

	if (hash != NULL)
	{
		len -= hash + 1 - code;
		code = hash + 1;
	}
	if ((colon = memchr(code, ':', len)) != NULL)
		len = colon - code;
	for (int i = 0; transient[i]; i++)
		if (strlen(transient[i]) == (size_t) len &&
			strncmp(transient[i], code, len) == 0)
			return true;
	return false;
}

/*
 * A 400 whose AWS error type is transient throttles the whole call: every
 * record is sent again, after at least 1 s.  Returns false for other
 * answers, which the whole-request rules handle (a 500 InternalFailure is
 * retried as every 5xx is).
 */
static bool
throttled_call(const RetlRequest *req, const char *body, RetlVerdicts *verdicts)
{
	JsonbValue *type = retl_json_get(retl_json_parse(body, strlen(body)), "__type");
	char	   *reason;

	if (type == NULL || type->type != jbvString ||
		!transient_error(type->val.string.val, type->val.string.len))
		return false;
	reason = psprintf("Kinesis: %.*s (the whole call)", type->val.string.len,
					  type->val.string.val);
	for (int i = 0; i < req->nevents; i++)
	{
		verdicts->outcomes[i] = RETL_OUTCOME_RETRY;
		verdicts->reasons[i] = reason;
	}
	verdicts->retry_after_s = Max(verdicts->retry_after_s, 1);
	return true;
}

/*
 * Reads the per-record results of a 200: records with a transient
 * ErrorCode are retried, other codes fail.  The answer must account for
 * every record, in order, or the outcome of the batch is unknown.  A call
 * throttled whole is retried whole.
 */
static bool
kinesis_parse(RetlDest *dest, const RetlRequest *req, long status,
			  const char *body, RetlVerdicts *verdicts)
{
	Jsonb	   *resp;
	JsonbValue *records;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			n = 0;
	int			nfailed = 0;
	int64		count;

	if (status == 400)
		return throttled_call(req, body, verdicts);
	if (status != 200)
		return false;
	resp = retl_json_parse(body, strlen(body));
	records = retl_json_get(resp, "Records");
	if (records == NULL || records->type != jbvBinary ||
		!JsonContainerIsArray(records->val.binary.data))
		return retl_dest_outcomes_unknown(req, verdicts,
										  "the PutRecords answer has no Records array");
	it = JsonbIteratorInit(records->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		Jsonb	   *rec;
		JsonbValue *code;

		if (tok != WJB_ELEM)
			continue;
		if (n >= req->nevents)
			return retl_dest_outcomes_unknown(req, verdicts,
											  "the PutRecords answer lists more records than were sent");
		rec = v.type == jbvBinary ? JsonbValueToJsonb(&v) : NULL;
		code = retl_json_get(rec, "ErrorCode");
		if (code != NULL && code->type == jbvString)
		{
			verdicts->outcomes[n] = transient_error(code->val.string.val,
													code->val.string.len)
				? RETL_OUTCOME_RETRY : RETL_OUTCOME_FAIL;
			verdicts->reasons[n] = psprintf("Kinesis: %.*s",
											code->val.string.len,
											code->val.string.val);
			nfailed++;
		}
		else if (retl_json_get(rec, "SequenceNumber") == NULL)
			return retl_dest_outcomes_unknown(req, verdicts,
											  psprintf("record %d of the PutRecords answer has neither an ErrorCode nor a SequenceNumber", n));
		n++;
	}
	if (n < req->nevents)
		return retl_dest_outcomes_unknown(req, verdicts,
										  psprintf("the PutRecords answer lists %d of the %d records sent",
											  n, req->nevents));
	if (retl_json_get(resp, "FailedRecordCount") != NULL &&
		(!retl_json_int64(retl_json_get(resp, "FailedRecordCount"), &count) ||
		 count != nfailed))
		return retl_dest_outcomes_unknown(req, verdicts,
										  "the PutRecords answer's FailedRecordCount does not match its records");
	return true;
}

const RetlDestKind retl_dest_kinesis = {
	.name = "kinesis",
	.validate = kinesis_validate,
	.open = kinesis_open,
	.encode = kinesis_encode,
	.parse = kinesis_parse,
	.max_answer_bytes = 500 * 1024,
};
