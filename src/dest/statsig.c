/*-------------------------------------------------------------------------
 *
 * statsig.c
 *	  Destination kind "statsig": POST <url>/v1/log_event with the
 *	  statsig-api-key header, {"events": [{eventName, user: {userID},
 *	  metadata, time}]}.
 *
 * Statsig HTTP API, "Log Event" (https://docs.statsig.com/http-api) and
 * src/README ("Destinations"): track only (there is no identify call, which
 * retl_create_sync reports), whole-request status, no dedupe key.  The
 * request size is not documented as a hard limit: batches default to 500
 * events and 1 MB.
 *
 * Config: url (default https://events.statsigapi.net), api_key,
 * batch_size, max_batch_bytes, max_in_flight, timeout_ms, max_attempts,
 * max_backoff_ms.
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"

#define STATSIG_URL "https://events.statsigapi.net"

static const char *const statsig_keys[] = {
	"url", "api_key", "batch_size", "max_batch_bytes", "max_in_flight",
	"timeout_ms", "max_attempts", "max_backoff_ms", NULL
};

/*
 * Checks a Statsig config: api_key is required.
 */
static void
statsig_validate(Jsonb *config)
{
	retl_dest_check_keys(config, "statsig", statsig_keys);
	(void) retl_dest_base_url(config, "url", STATSIG_URL);
	(void) retl_dest_require_secret(config, "api_key",
									"The server secret key of the Statsig project.");
}

/*
 * Fills the URL, the key header and the framing.
 */
static void
statsig_open(RetlDest *dest, Jsonb *config)
{
	dest->url = psprintf("%s/v1/log_event",
						 retl_dest_base_url(config, "url", STATSIG_URL));
	dest->prefix = "{\"events\":[";
	dest->suffix = "]}";
	retl_dest_read_common(dest, config, 500, 1000, 1024 * 1024, 64 * 1024);
	retl_dest_add_header(dest, "statsig-api-key",
						 retl_jsonb_get_text(config, "api_key"));
}

/*
 * One Statsig event from a standard track event.
 */
static void
statsig_encode(RetlDest *dest, StringInfo out, Jsonb *event)
{
	bool		anonymous;
	char	   *user = retl_std_user(event, &anonymous);

	appendStringInfoString(out, "{\"eventName\":");
	retl_json_append_value(out, retl_json_get(event, "event"));
	appendStringInfoString(out, ",\"user\":{\"userID\":");
	if (user != NULL)
		retl_json_escape(out, user, strlen(user));
	else
		appendStringInfoString(out, "null");
	appendStringInfoString(out, "},\"metadata\":");
	retl_json_append_value(out, retl_json_get(event, "properties"));
	appendStringInfo(out, ",\"time\":" INT64_FORMAT "}", retl_std_time_ms(event));
}

const RetlDestKind retl_dest_statsig = {
	.name = "statsig",
	.no_identify = true,
	.validate = statsig_validate,
	.open = statsig_open,
	.encode = statsig_encode,
};
