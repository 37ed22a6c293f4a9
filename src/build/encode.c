/*-------------------------------------------------------------------------
 *
 * encode.c
 *	  Finishes the events a run builds and hands them to its batches: the
 *	  destination kind's encoding, the conversion to UTF-8, the per-event
 *	  limit, and when a batch is full and queued for sending (the batch
 *	  itself: batch/batch.c).
 *
 * An event that cannot be sent (over the destination's per-event limit,
 * or not UTF-8) goes to retl.failed_events and counts as sent and failed.
 * Runs in the reader's page transaction, in the run's row memory for the
 * event and in the batch's memory for what the batch keeps.
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "batch.h"
#include "checkpoint.h"
#include "store.h"

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"

/*
 * Describes the first invalid UTF-8 sequence of an event built in a
 * SQL_ASCII database, which stores whatever bytes it is given: its bytes
 * as PostgreSQL shows them, and where it is.
 */
static char *
invalid_utf8_reason(const char *s, int len, int bad)
{
	return psprintf("event is not valid UTF-8: invalid byte sequence %s at byte %d; "
					"a SQL_ASCII database stores any bytes, but JSON must be UTF-8",
					retl_describe_char(s, len, bad, PG_UTF8), bad);
}

/*
 * Converts the event in run->event_buf from the database encoding to
 * UTF-8, which JSON requires.  Returns NULL, or why it cannot be converted
 * (then the event is left as it was).  A UTF-8 database has nothing to do;
 * a SQL_ASCII one cannot convert, only check.  Nothing raises an error: a
 * character without an equivalent in UTF-8 makes a failed event
 * (retl_to_utf8 converts with noError), not a caught error.
 */
static char *
event_to_utf8(RetlRun *run)
{
	StringInfo	ev = &run->event_buf;
	int			enc = GetDatabaseEncoding();
	int			valid;

	if (enc == PG_UTF8)
		return NULL;
	if (enc == PG_SQL_ASCII)
	{
		valid = pg_encoding_verifymbstr(PG_UTF8, ev->data, ev->len);
		return valid == ev->len ? NULL
			: invalid_utf8_reason(ev->data, ev->len, valid);
	}
	return retl_to_utf8(ev->data, ev->len, ev);
}

/*
 * Finishes a freshly built event in run->event_buf: rewrites it into the
 * destination kind's own record, for kinds that have one (Braze,
 * Amplitude ...), then into UTF-8.  Sets run->event_reject when it cannot
 * be sent.  Stored failed payloads were finished before and skip this.
 */
void
retl_encode_event(RetlRun *run)
{
	Jsonb	   *event;

	if (run->dest.kind->encode != NULL)
	{
		event = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
												   CStringGetDatum(run->event_buf.data)));
		resetStringInfo(&run->encode_buf);
		run->dest.kind->encode(&run->dest, &run->encode_buf, event);
		resetStringInfo(&run->event_buf);
		appendBinaryStringInfo(&run->event_buf, run->encode_buf.data,
							   run->encode_buf.len);
	}
	run->event_reject = event_to_utf8(run);
}

/*
 * Records an event that is never sent (over the destination's limit, not
 * UTF-8, an invalid or duplicate key) in retl.failed_events.  The owner's
 * scope, when the event was built in it, is suspended meanwhile: the owner
 * may not write retl.failed_events, the worker does.  The event counts as
 * sent and failed, so that events_succeeded + events_failed = events_sent.
 */
void
retl_encode_reject(RetlRun *run, const char *pk, const char *payload,
				   int len, const char *error)
{
	retl_owner_suspend(run);
	retl_store_fail_event(run, pk, payload, len, error);
	retl_owner_resume(run);
	run->events_sent++;
	run->events_failed++;
	run->dirty = true;
}

/*
 * Why the event in run->event_buf must not be sent (over the destination's
 * per-event limit, or not UTF-8), or NULL.  Consumes run->event_reject.
 */
static char *
event_reject(RetlRun *run)
{
	char	   *reject = run->event_reject;

	run->event_reject = NULL;
	if (run->event_buf.len > run->dest.max_event_bytes)
		return psprintf("event is %d bytes, over the destination's limit of " INT64_FORMAT " bytes",
						run->event_buf.len, run->dest.max_event_bytes);
	return reject;
}

/*
 * Closes the batch being built, if there is one, and queues it for
 * sending.  A batch without events (only oversize ones, already recorded
 * as failed) is done at once.  The run's usual batch size sizes the next
 * batch's body (retl_batch_create).
 */
void
retl_encode_close_batch(RetlRun *run)
{
	RetlBatch  *b = run->building;

	if (b == NULL)
		return;
	run->building = NULL;
	if (!retl_batch_close(b))
	{
		retl_ckpt_ack_done(run, b->ack, 0, 0);
		retl_batch_free(b);
		return;
	}
	run->avg_batch_bytes = run->avg_batch_bytes == 0 ? (Size) b->body.len
		: (run->avg_batch_bytes * 7 + b->body.len) / 8;
	dlist_push_tail(&run->ready, &b->node);
	run->nready++;
}

/*
 * Adds the event in run->event_buf to the batch being built, closing the
 * batch first when the event would exceed its count or byte limit.  An
 * event that cannot be sent (over the destination's per-event limit, or
 * not UTF-8) is never sent: it goes to retl.failed_events with the reason,
 * and counts as sent and failed.  ev carries what the batch keeps of the
 * event besides its text.  Returns whether the event went into the batch.
 */
static bool
add_event(RetlRun *run, RetlBatchEvent *ev)
{
	StringInfo	buf = &run->event_buf;
	RetlBatch  *b = run->building;
	char	   *reject = event_reject(run);
	bool		rejected = reject != NULL;

	if (b != NULL && !rejected && !retl_batch_fits(b, buf->len))
	{
		retl_encode_close_batch(run);
		b = NULL;
	}
	if (b == NULL)
		b = run->building = retl_batch_create(run, retl_ckpt_new_ack(run));
	retl_ckpt_event(run, b->ack, rejected);
	if (rejected)
	{
		retl_encode_reject(run, ev->pk, buf->data, buf->len, reject);
		return false;
	}
	ev->text = buf->data;
	ev->len = buf->len;
	ev->message_id = run->message_id;
	retl_batch_append(b, ev);
	return true;
}

/*
 * Adds the event in run->event_buf to the batch being built (add_event).
 * failed_id is the retl.failed_events row the event retries, or 0.
 * Returns whether the event went into the batch.
 */
bool
retl_encode_add(RetlRun *run, const char *pk, int64 failed_id)
{
	RetlBatchEvent ev = {
		.pk = pk,
		.failed_id = failed_id,
	};

	return add_event(run, &ev);
}

/*
 * Adds the event in run->event_buf of a diff run, with what storing its
 * fingerprint needs once it is acknowledged: the fingerprint, the
 * identity a later deletion event carries (run->ident_buf), and whether
 * it is itself a deletion.
 */
void
retl_encode_add_diff(RetlRun *run, const char *pk, int64 failed_id,
					 int64 fp, bool deletion)
{
	RetlBatchEvent ev = {
		.pk = pk,
		.failed_id = failed_id,
		.fp = fp,
		.ident = run->ident_buf.len > 0 ? run->ident_buf.data : NULL,
		.deletion = deletion,
	};

	(void) add_event(run, &ev);
}
