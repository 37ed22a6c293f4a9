/*-------------------------------------------------------------------------
 *
 * transport.c
 *	  HTTP transport: one persistent libcurl multi handle per worker, so
 *	  that connections are reused, driven from PostgreSQL's WaitEventSet.
 *
 * The worker waits on one WaitEventSet holding its latch, postmaster death
 * and curl's sockets, with curl's timer as the timeout, so retl_stop() and
 * SIGTERM interrupt at once (src/README, "Processes").  Curl callbacks only
 * record state in static arrays or malloc'd buffers: they never palloc and
 * never raise an error.
 *
 * An answer from which the kind reads per-event outcomes is kept whole, up
 * to the kind's max_answer_bytes, or not at all: a longer one ends its
 * transfer in an error, retried like a connection lost mid-answer, since
 * the events past a cut would have no known outcome.  Of other answers
 * the first RETL_ANSWER_HEAD_BYTES are kept, for error messages.
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "batch.h"
#include "send.h"

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#define MAX_SOCKETS 2048

typedef struct SockWatch
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN / OUT / INOUT */
	bool		changed;		/* what changed since the set was updated */
} SockWatch;

static CURLM *multi = NULL;
static SockWatch socks[MAX_SOCKETS];
static int	nsocks = 0;

/*
 * The wait set persists across waits: rebuilding it (one epoll_ctl per
 * socket) on every wait cost more than the HTTP work with many runs.  It is
 * rebuilt only when sockets come or go; a socket whose interest changes is
 * updated in place.  Position 0 is the latch, 1 postmaster death, and
 * socket i is at 2 + i.
 */
static WaitEventSet *wait_set = NULL;
static bool wait_set_stale = true;
static bool timer_set = false;
static TimestampTz timer_deadline = 0;

/*
 * Curl's socket callback: tracks which sockets to wait on, for what.
 */
static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *sockp)
{
	int			i;

	for (i = 0; i < nsocks && socks[i].fd != fd; i++)
		;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < nsocks)
			socks[i] = socks[--nsocks];
		wait_set_stale = true;
		return 0;
	}
	if (i == nsocks)
	{
		if (nsocks == MAX_SOCKETS)
			return -1;
		nsocks++;
		wait_set_stale = true;
	}
	socks[i].changed = socks[i].fd != fd || socks[i].what != what;
	socks[i].fd = fd;
	socks[i].what = what;
	if (what == CURL_POLL_NONE)
		wait_set_stale = true;
	return 0;
}

/*
 * Curl's timer callback: remembers when curl wants to be called again.
 */
static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	if (timeout_ms < 0)
		timer_set = false;
	else
	{
		timer_set = true;
		timer_deadline = GetCurrentTimestamp() + (int64) timeout_ms * 1000;
	}
	return 0;
}

/*
 * Ends the worker when curl refused an option of the multi handle: without
 * its callbacks no request would ever be driven.
 */
static void
multi_setopt(const char *option, CURLMcode rc)
{
	if (rc != CURLM_OK)
		ereport(FATAL,
				(errmsg("retl worker could not set libcurl option %s: %s",
						option, curl_multi_strerror(rc))));
}

/*
 * Creates the multi handle.  Called once when the worker starts.
 */
void
retl_transport_init(void)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK ||
		(multi = curl_multi_init()) == NULL)
		ereport(FATAL,
				(errmsg("retl worker could not initialise libcurl")));
	multi_setopt("CURLMOPT_SOCKETFUNCTION",
				 curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb));
	multi_setopt("CURLMOPT_TIMERFUNCTION",
				 curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb));
	/* keep-alive for every request in flight, even with many runs at once */
	multi_setopt("CURLMOPT_MAXCONNECTS",
				 curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) MAX_SOCKETS));
}

/*
 * Must this answer be read whole?  Kinds with a parse callback read the
 * outcomes of single events from 2xx answers and from 400s (Amplitude,
 * Mixpanel, Kinesis); other answers only feed error messages.  The status
 * is known once the headers are in, before the body.
 */
static bool
answer_read_whole(RetlBatch *b)
{
	long		status = 0;

	if (b->run->dest.kind->parse == NULL)
		return false;
	curl_easy_getinfo(b->easy, CURLINFO_RESPONSE_CODE, &status);
	return (status >= 200 && status < 300) || status == 400;
}

/*
 * How much of an answer is kept: the kind's max_answer_bytes for an answer
 * read whole, else its head, for error messages.
 */
static size_t
answer_cap(RetlBatch *b, bool whole)
{
	return whole ? (size_t) Max(b->run->dest.kind->max_answer_bytes,
								RETL_ANSWER_HEAD_BYTES)
		: RETL_ANSWER_HEAD_BYTES;
}

/*
 * Collects the response body, up to a cap.  Past the cap, an answer that
 * must be read whole ends the transfer with CURLE_WRITE_ERROR, so that the
 * batch is retried: the outcome of the events past a cut would be unknown.
 * Of any other answer the rest is discarded.  Uses malloc: this runs inside
 * curl, where an ERROR would longjmp past it.
 */
static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	RetlBatch  *b = (RetlBatch *) userdata;
	size_t		n = size * nmemb;
	bool		whole = answer_read_whole(b);
	size_t		cap = answer_cap(b, whole);
	size_t		keep = b->resp_len < cap ? Min(n, cap - b->resp_len) : 0;
	char	   *grown;

	if (keep > 0)
	{
		grown = realloc(b->resp, b->resp_len + keep + 1);
		if (grown == NULL)
			return whole ? 0 : n;
		memcpy(grown + b->resp_len, ptr, keep);
		b->resp = grown;
		b->resp_len += keep;
		b->resp[b->resp_len] = '\0';
	}
	return keep < n && whole ? 0 : n;
}

/*
 * Reads X-RateLimit-Reset from the response headers: Braze sends it with a
 * 429 (epoch seconds, src/README "Destinations"); other APIs send seconds to
 * wait, so a small value counts from now.  Stored as the delay in seconds.
 * Runs inside curl: no palloc, no ERROR.
 */
static size_t
header_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	RetlBatch  *b = (RetlBatch *) userdata;
	size_t		n = size * nitems;
	static const char name[] = "x-ratelimit-reset:";
	char		value[32];
	size_t		len;
	long		v;

	if (n <= sizeof(name) - 1 || pg_strncasecmp(buffer, name, sizeof(name) - 1) != 0)
		return n;
	len = Min(n - (sizeof(name) - 1), sizeof(value) - 1);
	memcpy(value, buffer + sizeof(name) - 1, len);
	value[len] = '\0';
	v = strtol(value, NULL, 10);
	if (v > 1000000000L)
		v -= (long) time(NULL);
	if (v > 0)
		b->ratelimit_reset_s = Min(v, 3600);
	return n;
}

/*
 * Frees a batch's transfer: removes the easy handle from the multi handle
 * and frees the response buffer.  Called before each attempt, and by the
 * reset callback of the batch's memory context (batch.c) when it goes
 * away.
 */
void
retl_transport_release(RetlBatch *b)
{
	if (b->easy != NULL)
	{
		curl_multi_remove_handle(multi, b->easy);
		curl_easy_cleanup(b->easy);
		b->easy = NULL;
	}
	if (b->req_headers != NULL)
		curl_slist_free_all(b->req_headers);
	b->req_headers = NULL;
	free(b->resp);
	b->resp = NULL;
	b->resp_len = 0;
}

/*
 * Returns the headers of a request: the destination's, plus those the
 * kind's prepare callback adds (e.g. a signature over this body).
 */
static struct curl_slist *
request_headers(RetlBatch *b)
{
	RetlDest   *d = &b->run->dest;
	struct curl_slist *list = NULL;
	RetlRequest req;

	if (d->kind->prepare == NULL || !d->per_request)
		return d->headers;
	for (struct curl_slist *h = d->headers; h != NULL; h = h->next)
	{
		struct curl_slist *l = curl_slist_append(list, h->data);

		if (l == NULL)
		{
			curl_slist_free_all(list);
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
		}
		list = l;
	}
	b->req_headers = list;
	req = retl_send_request(b);
	d->kind->prepare(d, &req, b->easy, &b->req_headers);
	return b->req_headers;
}

/*
 * Sets the options of one request.  TLS verification stays on; redirects
 * are not followed; only http and https are allowed.  Returns CURLE_OK,
 * or the code of the first option curl refused, named in *failed.
 */
static CURLcode
setup_easy(RetlBatch *b, const char **failed)
{
	RetlDest   *d = &b->run->dest;
	CURL	   *e = b->easy;

	RETL_SETOPT(e, CURLOPT_URL, d->url);
	RETL_SETOPT(e, CURLOPT_NOSIGNAL, 1L);
	RETL_SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
	RETL_SETOPT(e, CURLOPT_FOLLOWLOCATION, 0L);
	RETL_SETOPT(e, CURLOPT_POST, 1L);
	RETL_SETOPT(e, CURLOPT_POSTFIELDS, b->body.data);
	RETL_SETOPT(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) b->body.len);
	RETL_SETOPT(e, CURLOPT_HTTPHEADER, request_headers(b));
	RETL_SETOPT(e, CURLOPT_TIMEOUT_MS, (long) d->timeout_ms);
	RETL_SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(d->timeout_ms, 10000));
	RETL_SETOPT(e, CURLOPT_ERRORBUFFER, b->errbuf);
	RETL_SETOPT(e, CURLOPT_WRITEFUNCTION, write_cb);
	RETL_SETOPT(e, CURLOPT_WRITEDATA, b);
	RETL_SETOPT(e, CURLOPT_HEADERFUNCTION, header_cb);
	RETL_SETOPT(e, CURLOPT_HEADERDATA, b);
	RETL_SETOPT(e, CURLOPT_PRIVATE, b);
	RETL_SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
	if (d->ca_file != NULL)
		RETL_SETOPT(e, CURLOPT_CAINFO, d->ca_file);
	if (d->insecure)
	{
		RETL_SETOPT(e, CURLOPT_SSL_VERIFYPEER, 0L);
		RETL_SETOPT(e, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (d->aws_sigv4 != NULL)
	{
		/* libcurl >= 7.75 signs the request with AWS Signature Version 4 */
		RETL_SETOPT(e, CURLOPT_AWS_SIGV4, d->aws_sigv4);
		RETL_SETOPT(e, CURLOPT_USERPWD, d->userpwd);
	}
	else if (d->userpwd != NULL)
	{
		RETL_SETOPT(e, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
		RETL_SETOPT(e, CURLOPT_USERPWD, d->userpwd);
	}
	return CURLE_OK;
}

/*
 * Raises the error of an option curl refused (retl_transport_send): its
 * name and curl's reason, never its value (it may be a credential).  The
 * run fails with it.  The batch is never sent: the caller stops counting
 * it in retl_pending_bytes before (its memory goes with the run's), and
 * its acknowledgement stays open, so the checkpoint stops before its
 * events and the next run sends them.
 */
void
retl_transport_refused(RetlBatch *b, const char *option, CURLcode rc)
{
	const char *kind = b->run->dest.kind->name;

	if (rc == CURLE_UNKNOWN_OPTION || rc == CURLE_NOT_BUILT_IN)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("libcurl refused option %s of a request to a %s destination: %s",
						option, kind, curl_easy_strerror(rc)),
				 errhint("retl needs libcurl 7.85 or later, built with the features the destination uses (libcurl %s is loaded).",
						 curl_version_info(CURLVERSION_NOW)->version)));
	ereport(ERROR,
			(errcode(rc == CURLE_OUT_OF_MEMORY ? ERRCODE_OUT_OF_MEMORY
					 : ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("libcurl refused option %s of a request to a %s destination: %s",
					option, kind, curl_easy_strerror(rc)),
			 errhint("libcurl refuses strings longer than 8 MB; check the destination's settings.")));
}

/*
 * Starts sending a batch.  The body stays in the batch's context until the
 * transfer ends, as CURLOPT_POSTFIELDS requires.  Returns CURLE_OK, or the
 * code of the first option curl refused, named in *failed: then nothing
 * is sent, and the caller raises the error (retl_transport_refused).
 */
CURLcode
retl_transport_send(RetlBatch *b, const char **failed)
{
	CURLcode	rc;

	retl_transport_release(b);
	b->errbuf[0] = '\0';
	b->http_status = 0;
	b->retry_after_s = 0;
	b->ratelimit_reset_s = 0;
	b->easy = curl_easy_init();
	if (b->easy == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a curl handle")));
	if ((rc = setup_easy(b, failed)) != CURLE_OK ||
		(rc = retl_guard_request(b, b->easy, failed)) != CURLE_OK)
		return rc;
	b->attempts++;
	if (curl_multi_add_handle(multi, b->easy) != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not add a request to the curl multi handle")));
	return CURLE_OK;
}

/*
 * The events a socket waits for, as WaitEventSet flags.
 */
static uint32
socket_events(int what)
{
	return ((what & CURL_POLL_IN) ? WL_SOCKET_READABLE : 0) |
		((what & CURL_POLL_OUT) ? WL_SOCKET_WRITEABLE : 0);
}

/*
 * Returns the wait set, rebuilt when sockets came or went, otherwise with
 * the changed sockets updated in place.
 */
static WaitEventSet *
current_wait_set(void)
{
	if (wait_set != NULL && !wait_set_stale)
	{
		for (int i = 0; i < nsocks; i++)
			if (socks[i].changed)
			{
				ModifyWaitEvent(wait_set, 2 + i, socket_events(socks[i].what), NULL);
				socks[i].changed = false;
			}
		return wait_set;
	}
	if (wait_set != NULL)
		FreeWaitEventSet(wait_set);
	wait_set = CreateWaitEventSet(TopMemoryContext, nsocks + 2);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < nsocks; i++)
	{
		AddWaitEventToSet(wait_set, socket_events(socks[i].what), socks[i].fd,
						  NULL, NULL);
		socks[i].changed = false;
	}
	wait_set_stale = false;
	return wait_set;
}

/*
 * Waits for the latch, a socket or curl's timer, at most timeout_ms, then
 * lets curl make progress on whatever is ready.  Returns whether the latch
 * was set, i.e. whether somebody asked the worker to look at its queue.
 */
bool
retl_transport_wait(long timeout_ms)
{
	bool		latch_set = false;
	WaitEventSet *set;
	WaitEvent	events[MAX_SOCKETS + 2];
	curl_socket_t fired_fd[MAX_SOCKETS];
	int			fired_ev[MAX_SOCKETS];
	int			nfired = 0;
	int			n;
	int			running;

	if (timer_set)
	{
		long		left = (long) ((timer_deadline - GetCurrentTimestamp()) / 1000);

		timeout_ms = Max(0, Min(timeout_ms, left));
	}
	set = current_wait_set();
	n = WaitEventSetWait(set, timeout_ms, events, lengthof(events),
						 PG_WAIT_EXTENSION);
	for (int i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			latch_set = true;
		}
		else if (events[i].events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
		{
			fired_fd[nfired] = events[i].fd;
			fired_ev[nfired++] =
				((events[i].events & WL_SOCKET_READABLE) ? CURL_CSELECT_IN : 0) |
				((events[i].events & WL_SOCKET_WRITEABLE) ? CURL_CSELECT_OUT : 0);
		}
	}
	for (int i = 0; i < nfired; i++)
		curl_multi_socket_action(multi, fired_fd[i], fired_ev[i], &running);
	if (timer_set && GetCurrentTimestamp() >= timer_deadline)
	{
		timer_set = false;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	return latch_set;
}

/*
 * Returns the next finished batch, with its outcome recorded, or NULL.
 */
RetlBatch *
retl_transport_next_done(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		RetlBatch  *b = NULL;
		curl_off_t	retry_after = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &b);
		b->result = msg->data.result;
		curl_easy_getinfo(b->easy, CURLINFO_RESPONSE_CODE, &b->http_status);
		curl_easy_getinfo(b->easy, CURLINFO_RETRY_AFTER, &retry_after);
		b->retry_after_s = (long) retry_after;
		/* a 429 without Retry-After may say when the limit resets */
		if (b->retry_after_s == 0 && b->http_status == 429)
			b->retry_after_s = b->ratelimit_reset_s;
		if (b->result == CURLE_WRITE_ERROR)
		{
			/* write_cb refused the answer: say why instead of curl */
			bool		over = b->resp_len >= answer_cap(b, true);

			snprintf(b->errbuf, sizeof(b->errbuf),
					 "the answer (HTTP %ld) %s, so the outcome of its events is unknown",
					 b->http_status,
					 over ? psprintf("is longer than the %zu bytes retl reads from a %s destination",
									 answer_cap(b, true), b->run->dest.kind->name)
					 : "could not be kept (out of memory)");
		}
		b->redirect[0] = '\0';
		if (b->http_status >= 300 && b->http_status < 400)
		{
			char	   *location = NULL;

			curl_easy_getinfo(b->easy, CURLINFO_REDIRECT_URL, &location);
			if (location != NULL)
				strlcpy(b->redirect, location, sizeof(b->redirect));
		}
		curl_multi_remove_handle(multi, b->easy);
		curl_easy_cleanup(b->easy);
		b->easy = NULL;
		return b;
	}
	return NULL;
}
