/*-------------------------------------------------------------------------
 *
 * webhook.c
 *	  Destination kind "webhook": POSTs events to a URL as a JSON array
 *	  (default), as NDJSON, or one object per request, with optional extra
 *	  headers and an optional Stripe-style HMAC-SHA256 signature.
 *
 * Config: url, headers (object of strings), format ("array" | "ndjson" |
 * "object"), secret (signing key), batch_size (default 100),
 * max_batch_bytes, max_in_flight, timeout_ms, max_attempts,
 * max_backoff_ms.
 *
 * Signature (src/README, "Destinations"): the header
 *	 X-Retl-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>
 * lets the receiver check both the sender and the body, and reject replays
 * by the timestamp, as Stripe's webhook signatures do.
 *
 *-------------------------------------------------------------------------
 */
#include "dest.h"

#include "common/hmac.h"
#include "utils/resowner.h"

#define WEBHOOK_MAX_BATCH 10000
#define WEBHOOK_MAX_BYTES (16 * 1024 * 1024)

typedef struct WebhookPriv
{
	char	   *secret;			/* signing key, or NULL */
} WebhookPriv;

static const char *const webhook_keys[] = {
	"url", "headers", "format", "secret", "batch_size", "max_batch_bytes",
	"max_in_flight", "timeout_ms", "max_attempts", "max_backoff_ms", NULL
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
			if (v.type != jbvString || strpbrk(name, ":\r\n") != NULL ||
				memchr(v.val.string.val, '\n', v.val.string.len) != NULL ||
				memchr(v.val.string.val, '\r', v.val.string.len) != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("webhook header \"%s\" must have a string value and a name without ':' or line breaks",
								name)));
			retl_dest_check_header_name(name);
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
	char	   *format = retl_jsonb_get_text(config, "format");
	char	   *secret = retl_jsonb_get_text(config, "secret");

	retl_dest_check_keys(config, "webhook", webhook_keys);
	(void) retl_dest_require_url(config, "url");
	if (format && strcmp(format, "array") != 0 &&
		strcmp(format, "ndjson") != 0 && strcmp(format, "object") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid webhook format \"%s\"", format),
				 errhint("Use \"array\" (the default), \"ndjson\" or \"object\".")));
	if (secret && secret[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook \"secret\" must not be empty")));
}

/*
 * Fills the request settings of a webhook.
 */
static void
webhook_open(RetlDest *dest, Jsonb *config)
{
	char	   *format = retl_jsonb_get_text(config, "format");
	WebhookPriv *priv = palloc0(sizeof(WebhookPriv));

	dest->url = retl_dest_require_url(config, "url");
	priv->secret = retl_jsonb_get_text(config, "secret");
	dest->priv = priv;
	dest->per_request = priv->secret != NULL;
	if (format && strcmp(format, "ndjson") == 0)
	{
		dest->prefix = "";
		dest->separator = "\n";
		dest->suffix = "\n";
		dest->content_type = "application/x-ndjson";
	}
	else if (format && strcmp(format, "object") == 0)
	{
		dest->prefix = dest->separator = dest->suffix = "";
		retl_dest_read_common(dest, config, 1, 1, WEBHOOK_MAX_BYTES,
							  WEBHOOK_MAX_BYTES);
		add_config_headers(dest, config);
		return;
	}
	retl_dest_read_common(dest, config, 100, WEBHOOK_MAX_BATCH,
						  WEBHOOK_MAX_BYTES, WEBHOOK_MAX_BYTES);
	add_config_headers(dest, config);
}

/*
 * Computes HMAC-SHA256 of "<t>.<body>" as lowercase hex.  PostgreSQL's
 * HMAC registers with the current resource owner, which a worker outside
 * a transaction does not have: a private one serves the call.
 */
static char *
sign(const char *secret, const char *t, const char *body, size_t len)
{
	ResourceOwner save = CurrentResourceOwner;
	ResourceOwner owner = ResourceOwnerCreate(NULL, "retl signature");
	pg_hmac_ctx *ctx;
	uint8		mac[32];
	char	   *hex = palloc(65);
	bool		ok;

	CurrentResourceOwner = owner;
	ctx = pg_hmac_create(PG_SHA256);
	ok = ctx != NULL &&
		pg_hmac_init(ctx, (const uint8 *) secret, strlen(secret)) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) t, strlen(t)) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) ".", 1) == 0 &&
		pg_hmac_update(ctx, (const uint8 *) body, len) == 0 &&
		pg_hmac_final(ctx, mac, sizeof(mac)) == 0;
	if (ctx != NULL)
		pg_hmac_free(ctx);
	CurrentResourceOwner = save;
	ResourceOwnerRelease(owner, RESOURCE_RELEASE_BEFORE_LOCKS, false, true);
	ResourceOwnerRelease(owner, RESOURCE_RELEASE_LOCKS, false, true);
	ResourceOwnerRelease(owner, RESOURCE_RELEASE_AFTER_LOCKS, false, true);
	ResourceOwnerDelete(owner);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute the webhook signature")));
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", mac[i]);
	return hex;
}

/*
 * Adds X-Retl-Signature to a request of a webhook with a secret.  Each
 * attempt is signed anew, with its own timestamp.
 */
static void
webhook_prepare(RetlDest *dest, const RetlRequest *req, CURL *easy,
				struct curl_slist **headers)
{
	WebhookPriv *priv = (WebhookPriv *) dest->priv;
	char		t[32];
	char	   *line;
	struct curl_slist *l;

	if (priv->secret == NULL)
		return;
	snprintf(t, sizeof(t), "%ld", (long) time(NULL));
	line = psprintf("X-Retl-Signature: t=%s,v1=%s", t,
					sign(priv->secret, t, req->body, req->len));
	l = curl_slist_append(*headers, line);
	pfree(line);
	if (l == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	*headers = l;
}

const RetlDestKind retl_dest_webhook = {
	.name = "webhook",
	.validate = webhook_validate,
	.open = webhook_open,
	.prepare = webhook_prepare,
};
