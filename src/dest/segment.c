/*-------------------------------------------------------------------------
 *
 * segment.c
 *	  Destination kinds "rudderstack" and "segment": the HTTP batch API
 *	  POST <url>/v1/batch {"batch": [...]} with Basic auth, the write key
 *	  as user name and an empty password.
 *
 * Limits (src/README, "Destinations"; Segment HTTP Tracking API docs,
 * https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/
 * and RudderStack HTTP API docs,
 * https://www.rudderstack.com/docs/api/http-api/):
 *	 - Segment: 32 KB per event, 500 KB and 2,500 events per request;
 *	   oversize events can be dropped while the answer is still 200, so
 *	   retl never sends them.
 *	 - RudderStack: 32 KB per event, 4 MB per request
 *	   (rudder-server Gateway.maxReqSizeInKB).
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"

static const char *const batch_api_keys[] = {
	"url", "write_key", "batch_size", "max_batch_bytes", "max_in_flight",
	"timeout_ms", "max_attempts", "max_backoff_ms", NULL
};

/*
 * Checks a RudderStack or Segment config: url and write_key are required.
 */
static void
batch_api_validate(Jsonb *config)
{
	retl_dest_check_keys(config, "rudderstack or segment", batch_api_keys);
	(void) retl_dest_require_url(config, "url");
	(void) retl_dest_require_secret(config, "write_key",
									"The write key of the source, from the RudderStack or Segment dashboard.");
}

/*
 * Fills the common parts: the /v1/batch URL, Basic auth and framing.
 */
static void
batch_api_open(RetlDest *dest, Jsonb *config)
{
	dest->url = psprintf("%s/v1/batch", retl_dest_base_url(config, "url", NULL));
	dest->userpwd = psprintf("%s:", retl_jsonb_get_text(config, "write_key"));
	dest->prefix = "{\"batch\":[";
	dest->suffix = "]}";
}

static void
rudderstack_open(RetlDest *dest, Jsonb *config)
{
	batch_api_open(dest, config);
	retl_dest_read_common(dest, config, 500, 100000, 4 * 1024 * 1024,
						  32 * 1024);
}

static void
segment_open(RetlDest *dest, Jsonb *config)
{
	batch_api_open(dest, config);
	retl_dest_read_common(dest, config, 500, 2500, 500 * 1000, 32 * 1024);
}

const RetlDestKind retl_dest_rudderstack = {
	.name = "rudderstack",
	.validate = batch_api_validate,
	.open = rudderstack_open,
};

const RetlDestKind retl_dest_segment = {
	.name = "segment",
	.validate = batch_api_validate,
	.open = segment_open,
};
