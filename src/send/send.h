/*-------------------------------------------------------------------------
 *
 * send.h
 *	  Sending requests: the HTTP transport (transport.c), the guard on
 *	  where requests may go (netguard.c), and what a finished request
 *	  means (outcome.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_SEND_H
#define RETL_SEND_H

#include "dest.h"

#include <curl/curl.h>

/* a request's worth of events (worker.h) */
typedef struct RetlBatch RetlBatch;

/* transport.c */
extern void retl_transport_init(void);
extern CURLcode retl_transport_send(RetlBatch *batch, const char **failed);
extern void retl_transport_refused(RetlBatch *batch, const char *option,
								   CURLcode rc) pg_attribute_noreturn();
extern bool retl_transport_wait(long timeout_ms);
extern RetlBatch *retl_transport_next_done(void);
extern void retl_transport_release(RetlBatch *batch);

/*
 * Sets one option of a request, or returns curl's code from the calling
 * function, whose "const char **failed" gets the option's name, as
 * PostgreSQL's libpq-oauth checks every setopt: an option curl refused
 * silently (a CA bundle, the allowed protocols, a guard) would change what
 * the request does.
 */
#define RETL_SETOPT(e, opt, val) \
	do { \
		CURLcode	rc_ = curl_easy_setopt((e), (opt), (val)); \
		if (rc_ != CURLE_OK) \
		{ \
			*failed = #opt; \
			return rc_; \
		} \
	} while (0)

/* netguard.c */
extern CURLcode retl_guard_request(RetlBatch *b, CURL *easy,
								   const char **failed);

/* outcome.c */

/*
 * What a destination's answer says of each event of a batch
 * (retl_send_outcomes): the outcome of each event, the destination's
 * reason for each failed one (or NULL), and how many events have each
 * outcome.  The wait before the retried ones go again is the batch's
 * retry_after_s, which retl_send_outcomes sets from the kind's verdicts.
 */
typedef struct RetlSendOutcomes
{
	RetlOutcome *outcomes;		/* nevents */
	char	  **reasons;		/* nevents */
	int			count[RETL_OUTCOME_FAIL + 1];	/* events per RetlOutcome */
} RetlSendOutcomes;

extern RetlRequest retl_send_request(RetlBatch *b);
extern long retl_send_retry_delay_ms(RetlBatch *b);
extern char *retl_send_error(RetlBatch *b);
extern bool retl_send_rejects_events(long status);
extern bool retl_send_outcomes(RetlBatch *b, RetlSendOutcomes *res);

#endif							/* RETL_SEND_H */
