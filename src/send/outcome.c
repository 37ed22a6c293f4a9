/*-------------------------------------------------------------------------
 *
 * outcome.c
 *	  What a finished request means: the delay before its next attempt,
 *	  the reason it failed, whether its status rejects single events, and
 *	  the per-event verdicts the destination kind read from its answer.
 *
 * These run in the worker's loop, outside any transaction, in the caller's
 * memory context.  They only read a finished request and return what it
 * means; the run applies it (run/run.c, batch_done).
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "batch.h"
#include "send.h"

#include <math.h>

#include "common/pg_prng.h"

#define RETRY_BASE_MS 250

/*
 * The read-only view of a batch that a kind's prepare and parse callbacks
 * get: the request's body and events, never the batch itself.
 */
RetlRequest
retl_send_request(RetlBatch *b)
{
	RetlRequest req = {
		.body = b->body.data,
		.len = b->body.len,
		.nevents = b->nevents,
		.ev_start = b->ev_start,
		.ev_len = b->ev_len,
	};

	return req;
}

/*
 * Computes the delay before the next attempt: exponential backoff with
 * full jitter, but never less than the Retry-After the server asked for.
 */
long
retl_send_retry_delay_ms(RetlBatch *b)
{
	double		cap = Min((double) b->run->dest.max_backoff_ms,
						  RETRY_BASE_MS * pow(2.0, Min(b->attempts, 20)));
	long		delay = (long) (pg_prng_double(&pg_global_prng_state) * cap);

	if (b->retry_after_s > 0)
		delay = Max(delay, b->retry_after_s * 1000);
	return Max(delay, 10);
}

/*
 * A readable reason for a failed request, without the URL (it may carry
 * credentials).
 */
char *
retl_send_error(RetlBatch *b)
{
	if (b->blocked && b->blocked_by &&
		strcmp(b->blocked_by, "retl.deny_networks") == 0)
		return psprintf("the destination resolved to %s, in a network that retl.deny_networks refuses",
						b->blocked_addr[0] ? b->blocked_addr : "an address");
	if (b->blocked)
		return psprintf("the destination resolved to %s, a link-local or metadata address, which retl.deny_private_networks refuses",
						b->blocked_addr[0] ? b->blocked_addr : "an address");
	if (b->result != CURLE_OK)
		return psprintf("request failed after %d attempt(s): %s", b->attempts,
						b->errbuf[0] ? b->errbuf : curl_easy_strerror(b->result));
	if (b->http_status >= 300 && b->http_status < 400)
		return psprintf("destination answered HTTP %ld, a redirect to \"%s\", which retl does not follow: set the destination's url to the final address",
						b->http_status, b->redirect[0] ? b->redirect : "(no Location)");
	return psprintf("destination answered HTTP %ld after %d attempt(s)%s%.200s",
					b->http_status, b->attempts, b->resp ? ": " : "",
					b->resp ? b->resp : "");
}

/*
 * Does this status reject some events of the batch (so that splitting the
 * batch isolates them), rather than the whole destination?
 */
bool
retl_send_rejects_events(long status)
{
	return status == 400 || status == 413 || status == 422;
}

/*
 * Reads the per-event outcomes that the destination kind found in the
 * response into *res: accepted events are done, throttled ones are to be
 * sent again later (only them: Braze and Kinesis have no dedupe), rejected
 * ones go to retl.failed_events with the destination's reason.  Throttled
 * events of a batch out of attempts are rejected instead.  The kind's wait
 * becomes the batch's retry_after_s, which the retried part (or a retry of
 * the whole request) waits at least.  Returns false when the kind
 * found no per-event information in the response.  Applying them is the
 * run's business (run/run.c): this only reads the answer.
 */
bool
retl_send_outcomes(RetlBatch *b, RetlSendOutcomes *res)
{
	RetlDest   *d = &b->run->dest;
	RetlOutcome *out;
	char	  **reasons;
	int		   *n = res->count;
	RetlRequest req;
	RetlVerdicts verdicts;
	bool		read;

	if (d->kind->parse == NULL || b->result != CURLE_OK)
		return false;
	out = palloc0(b->nevents * sizeof(RetlOutcome));
	reasons = palloc0(b->nevents * sizeof(char *));
	req = retl_send_request(b);
	verdicts = (RetlVerdicts) {
		.outcomes = out,
		.reasons = reasons,
		.retry_after_s = b->retry_after_s,	/* the answer's Retry-After */
	};
	read = d->kind->parse(d, &req, b->http_status, b->resp ? b->resp : "",
						  &verdicts);
	/* the kind's wait holds for a retry of the whole request too */
	b->retry_after_s = verdicts.retry_after_s;
	if (!read)
		return false;
	memset(n, 0, sizeof(res->count));
	for (int i = 0; i < b->nevents; i++)
		n[out[i]]++;
	if (n[RETL_OUTCOME_RETRY] > 0 && b->attempts >= d->max_attempts)
	{
		for (int i = 0; i < b->nevents; i++)
			if (out[i] == RETL_OUTCOME_RETRY)
			{
				out[i] = RETL_OUTCOME_FAIL;
				reasons[i] = psprintf("still throttled after %d attempts%s%s",
									  b->attempts, reasons[i] ? ": " : "",
									  reasons[i] ? reasons[i] : "");
			}
		n[RETL_OUTCOME_FAIL] += n[RETL_OUTCOME_RETRY];
		n[RETL_OUTCOME_RETRY] = 0;
	}
	res->outcomes = out;
	res->reasons = reasons;
	return true;
}
