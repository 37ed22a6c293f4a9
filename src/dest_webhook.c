/*-------------------------------------------------------------------------
 *
 * dest_webhook.c
 *	  Destination kind "webhook": POSTs each batch as a JSON array of
 *	  events to a URL, with optional extra headers.
 *
 * Config: url, headers (object of strings), batch_size (default 100),
 * max_batch_bytes, max_in_flight, timeout_ms, max_attempts,
 * max_backoff_ms.
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"

#define WEBHOOK_MAX_BATCH 10000
#define WEBHOOK_MAX_BYTES (16 * 1024 * 1024)

static const char *const webhook_keys[] = {
	"url", "headers", "batch_size", "max_batch_bytes", "max_in_flight",
	"timeout_ms", "max_attempts", "max_backoff_ms", NULL
};

/*
 * Adds the configured headers; each value must be a string.
 */
static void
add_config_headers(RetlDest *dest, Jsonb *config)
{
	Jsonb	   *headers = retl_jsonb_get_object(config, "headers");
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *name = NULL;

	if (headers == NULL)
		return;
	it = JsonbIteratorInit(&headers->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			name = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE)
		{
			if (v.type != jbvString || strpbrk(name, ":\r\n") != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("webhook header \"%s\" must have a string value and a name without ':' or line breaks",
								name)));
			retl_dest_add_header(dest, name,
								 pnstrdup(v.val.string.val, v.val.string.len));
		}
	}
}

/*
 * Checks a webhook config.
 */
static void
webhook_validate(Jsonb *config)
{
	retl_dest_check_keys(config, "webhook", webhook_keys);
	(void) retl_dest_require_url(config, "url");
}

/*
 * Fills the request settings of a webhook.
 */
static void
webhook_open(RetlDest *dest, Jsonb *config)
{
	dest->url = retl_dest_require_url(config, "url");
	retl_dest_read_common(dest, config, 100, WEBHOOK_MAX_BATCH,
						  WEBHOOK_MAX_BYTES, WEBHOOK_MAX_BYTES);
	add_config_headers(dest, config);
}

const RetlDestKind retl_dest_webhook = {
	.name = "webhook",
	.validate = webhook_validate,
	.open = webhook_open,
};
