/*-------------------------------------------------------------------------
 *
 * dest.h
 *	  The interface between the worker and a destination kind.
 *
 * A kind is one small file (webhook.c, segment.c ...) that validates its
 * config at create time, turns the config into request settings and batch
 * limits, frames a batch of events, and reads per-event verdicts from an
 * answer.  It sees a request (RetlRequest), never the batch behind it, and
 * returns what it read (RetlVerdicts); the worker and the HTTP transport
 * know nothing else about destinations.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_DEST_H
#define RETL_DEST_H

#include "retl.h"
#include "json.h"
#include "nodes/pg_list.h"

#include <curl/curl.h>

typedef struct RetlDest RetlDest;

/* What a destination said about one event of a request. */
typedef enum RetlOutcome
{
	RETL_OUTCOME_OK,			/* accepted */
	RETL_OUTCOME_RETRY,			/* rejected for now (throttled): send again */
	RETL_OUTCOME_FAIL			/* rejected for good: retl.failed_events */
} RetlOutcome;

/*
 * What a kind sees of one request: its body and where each event sits in
 * it, read-only.  The batch behind it belongs to the sender (send/).
 */
typedef struct RetlRequest
{
	const char *body;			/* prefix, events, separators, suffix */
	size_t		len;
	int			nevents;
	const int  *ev_start;		/* offset of each event in body */
	const int  *ev_len;
} RetlRequest;

/*
 * What a kind's parse callback says about a request's answer: one outcome
 * per event (and, for failed or retried ones, a reason or NULL), and the
 * least wait, in seconds, before the events to retry are sent again.
 * The sender sets retry_after_s to the wait the answer asked for
 * (Retry-After, or X-RateLimit-Reset on a 429) before the call; a kind may
 * raise it (an API's documented throttle wait) or clear it, and the
 * sender waits that long before any retry of the request, whole or in
 * part.
 */
typedef struct RetlVerdicts
{
	RetlOutcome *outcomes;		/* nevents, RETL_OUTCOME_OK on entry */
	char	  **reasons;		/* nevents, NULL on entry */
	long		retry_after_s;
} RetlVerdicts;

typedef struct RetlDestKind
{
	const char *name;
	bool		no_identify;	/* the API has no identify call */
	/* raises an error for a bad config; runs in retl_create_destination */
	void		(*validate) (Jsonb *config);
	/* fills url, auth, headers, limits and framing from the config */
	void		(*open) (RetlDest *dest, Jsonb *config);

	/*
	 * Optional: rewrites one standard event (RudderStack/Segment JSON) into
	 * the kind's own record, appended to out.
	 */
	void		(*encode) (RetlDest *dest, StringInfo out, Jsonb *event);

	/*
	 * Optional: per-request setup, e.g. a signature header computed over
	 * the body.  Headers appended here are freed with the request.
	 */
	void		(*prepare) (RetlDest *dest, const RetlRequest *req, CURL *easy,
							struct curl_slist **headers);

	/*
	 * Optional: reads per-event outcomes from a response (2xx or 4xx with
	 * a body that lists rejected records) into verdicts.  Returns false
	 * when the response carries no per-event information, so the
	 * whole-request rules apply (verdicts->retry_after_s still counts).
	 * reasons[i] may be set for failed events.  It never raises an error
	 * (the batch is already off the in-flight list): an answer it cannot
	 * read, or that does not account for every event, is an unknown
	 * outcome, which retl_dest_outcomes_unknown() turns into a retry of every
	 * event -- never into a success.
	 */
	bool		(*parse) (RetlDest *dest, const RetlRequest *req, long status,
						  const char *body, RetlVerdicts *verdicts);

	/*
	 * With parse: the longest answer the kind reads, sized for the largest
	 * documented answer to a full batch.  A 2xx or 400 answer longer than
	 * this is not read at all: the transfer ends in an error and is retried
	 * (an answer cut short would leave the outcome of the events past the
	 * cut unknown).  Kinds without parse keep the first
	 * RETL_ANSWER_HEAD_BYTES of any answer, for error messages.
	 */
	int64		max_answer_bytes;
} RetlDestKind;

/* what is kept of an answer whose events' outcomes are not read */
#define RETL_ANSWER_HEAD_BYTES (64 * 1024)

/* Everything the worker needs to send batches to one destination. */
struct RetlDest
{
	const RetlDestKind *kind;
	char	   *url;			/* request URL */
	char	   *userpwd;		/* "user:password" for Basic auth, or NULL */
	char	   *aws_sigv4;		/* "aws:amz:<region>:<service>": sign with
								 * userpwd as key:secret instead */
	struct curl_slist *headers; /* malloc'd by curl; freed by retl_dest_close */
	const char *prefix;			/* batch framing: prefix, separator, suffix */
	const char *separator;
	const char *suffix;
	int			batch_size;		/* events per request */
	int64		max_batch_bytes;	/* bytes per request */
	int64		max_event_bytes;	/* larger events are never sent */
	int			max_in_flight;
	int			timeout_ms;
	int			max_attempts;
	int			max_backoff_ms;
	bool		track;			/* the sync's event type */
	const char *content_type;	/* default application/json */
	bool		per_request;	/* call kind->prepare for every request */
	char	   *ca_file;		/* TLS: CA bundle, or NULL for the system's */
	bool		insecure;		/* TLS: insecure_skip_verify */
	void	   *priv;			/* the kind's own settings */
};

/* the registry and an open destination (dest.c) */
extern const RetlDestKind *retl_dest_kind(const char *name, bool missing_ok);
extern void retl_dest_open(RetlDest *dest, const char *kind, Jsonb *config,
						   bool track);
extern void retl_dest_close(RetlDest *dest);

/* helpers shared by kinds (dest.c) */
extern bool retl_dest_outcomes_unknown(const RetlRequest *req,
									   RetlVerdicts *verdicts, const char *why);
extern char *retl_dest_require_url(Jsonb *config, const char *key);
extern char *retl_dest_base_url(Jsonb *config, const char *key,
								const char *dflt);
extern char *retl_dest_require_secret(Jsonb *config, const char *key,
									  const char *hint);
extern void retl_dest_read_common(RetlDest *dest, Jsonb *config,
								  int batch_default, int batch_max,
								  int64 bytes_max, int64 event_max);
extern void retl_dest_check_header_name(const char *name);
extern void retl_dest_add_header(RetlDest *dest, const char *name,
								 const char *value);
extern void retl_dest_check_keys(Jsonb *config, const char *kind,
								 const char *const *allowed);

/* the standard event (std.c) */
extern int64 retl_std_time_ms(Jsonb *event);
extern char *retl_std_user(Jsonb *event, bool *anonymous);
extern bool retl_std_deleted(Jsonb *event);
extern void retl_std_append_trait_keys(StringInfo out, Jsonb *event,
									   const char *after);

/* secrets (secrets.c) */
extern List *retl_secrets_values(RetlDest *dest, Jsonb *config);
extern text *retl_secrets_scrub(List *secrets, const char *s, int len);

/* the kinds, one file each */
extern const RetlDestKind retl_dest_webhook;
extern const RetlDestKind retl_dest_rudderstack;
extern const RetlDestKind retl_dest_segment;
extern const RetlDestKind retl_dest_braze;
extern const RetlDestKind retl_dest_statsig;
extern const RetlDestKind retl_dest_iterable;
extern const RetlDestKind retl_dest_amplitude;
extern const RetlDestKind retl_dest_mixpanel;
extern const RetlDestKind retl_dest_kinesis;
extern const RetlDestKind retl_dest_kafka_rest;

#endif							/* RETL_DEST_H */
