/*-------------------------------------------------------------------------
 *
 * dest.h
 *	  The interface between the worker and a destination kind.
 *
 * A kind is one small file (dest_webhook.c, dest_segment.c ...) that
 * validates its config at create time, turns the config into request
 * settings and batch limits, and frames a batch of events.  The worker and
 * the HTTP transport know nothing else about destinations.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_DEST_H
#define RETL_DEST_H

#include "retl.h"

#include <curl/curl.h>

typedef struct RetlDest RetlDest;

typedef struct RetlDestKind
{
	const char *name;
	/* raises an error for a bad config; runs in retl_create_destination */
	void		(*validate) (Jsonb *config);
	/* fills url, auth, headers and limits from the config */
	void		(*open) (RetlDest *dest, Jsonb *config);
} RetlDestKind;

/* Everything the worker needs to send batches to one destination. */
struct RetlDest
{
	const RetlDestKind *kind;
	char	   *url;			/* request URL */
	char	   *userpwd;		/* "user:password" for Basic auth, or NULL */
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
};

extern const RetlDestKind *retl_dest_kind(const char *name, bool missing_ok);
extern void retl_dest_open(RetlDest *dest, const char *kind, Jsonb *config);
extern void retl_dest_close(RetlDest *dest);

/* helpers shared by kinds */
extern char *retl_dest_require_url(Jsonb *config, const char *key);
extern void retl_dest_read_common(RetlDest *dest, Jsonb *config,
								  int batch_default, int batch_max,
								  int64 bytes_max, int64 event_max);
extern void retl_dest_add_header(RetlDest *dest, const char *name,
								 const char *value);
extern void retl_dest_check_keys(Jsonb *config, const char *kind,
								 const char *const *allowed);
extern bool retl_is_secret_key(const char *key);

extern const RetlDestKind retl_dest_webhook;
extern const RetlDestKind retl_dest_rudderstack;
extern const RetlDestKind retl_dest_segment;

#endif							/* RETL_DEST_H */
