#!/usr/bin/python3
"""Local emulator of the vendor APIs that retl's destination kinds call.

Python 3 standard library only.  Run it with Debian's /usr/bin/python3.

    /usr/bin/python3 test/vendors.py --port 0 --port-file /tmp/vendors.port

It listens on 127.0.0.1 only, speaks HTTP/1.1 with keep-alive, and always
sends Content-Length.  Each endpoint answers as the vendor documents it,
including its partial-failure answers; the fixtures below cite the doc they
follow.  Which records are rejected or throttled is decided by the user id
in the record (never at random), so tests are deterministic.

Size limits (each vendor's documented cap; a request over it is refused
whole, as the vendor refuses it): Amplitude /batch 20 MiB and /2/httpapi
1 MiB, 2,000 events (413); Iterable 4 MB (413); Mixpanel /import 2 MB,
2,000 events (413); Kinesis 500 records, 1 MiB per record and 5 MiB per
request, data and partition keys (decoded) counted (400
InvalidArgumentException).  The caps are SIZE_CAPS.

Endpoints (every one is POST)
    /users/track                         Braze
    /api/events/trackBulk                Iterable (track)
    /api/users/bulkUpdate                Iterable (identify)
    /batch, /2/httpapi                   Amplitude
    /import                              Mixpanel (track, strict mode)
    /engage                              Mixpanel (profile batch update)
    /topics/{topic}                      Kafka REST Proxy v2
    /v3/clusters/{id}/topics/{t}/records Kafka REST Proxy v3
    /v1/log_event                        Statsig
    /  with X-Amz-Target: Kinesis_20131202.PutRecords     Kinesis

Control endpoints (like test/receiver.py)
    GET  /_requests   every request to a vendor endpoint: {seq, time, vendor,
                      method, path, query, headers (names lowercase), body,
                      status, response}; ?brief=1 leaves out body and
                      response, giving "bytes", "response_bytes" and the
                      start of a non-2xx answer as "error"
    GET  /_records    the records each vendor accepted, in order:
                      {seq, vendor, kind, path, user, record}; filter with
                      ?vendor=braze (and &kind=events); ?brief=1 leaves out
                      "record"
    GET  /_stats      {"requests": n, "records": n}
    GET  /_config, GET /_health
    POST /_reset      forget everything, configuration included
    POST /_config     merge a JSON object into the configuration (null
                      removes a key):
        reject_users        records of these users are rejected for good,
                            in the vendor's own per-record way
        retry_users         records of these users get a retryable
                            per-record error once per user and vendor
                            (Kafka error_code 2 / 50003, Kinesis
                            ProvisionedThroughputExceededException); APIs
                            without retryable per-record errors ignore it
        invalid_data_users  Iterable: users listed under
                            failedUpdates.invalidDataUserIds
        v3_reject_code      Kafka v3 error_code of rejected records
                            (default 40002)
        fail_status         answer every vendor request with this status
        braze_throttle      answer this many Braze requests 429 with
                            X-RateLimit-Reset (epoch seconds, now + 3) and
                            no Retry-After, as Braze's rate limiter does
        api_key             the key Braze, Iterable, Amplitude and Statsig
                            requests must carry (else 401), when set
        basic               "user:password" that Mixpanel /import and
                            Kafka requests must carry in Basic auth, when set
    Answers that leave outcomes unknown or throttle whole calls (each is a
    budget, counted from the /_config that sets it):
        kinesis_throttle_all   the next N PutRecords calls answer every
                            record with ProvisionedThroughputExceededException
                            (a 200; 500 records make an answer of ~86 KB)
        kinesis_call_errors    a list of AWS error types: each PutRecords
                            call takes the first one and is refused whole with
                            it, {"__type", "message"}: 500 for InternalFailure,
                            503 for ServiceUnavailable, else 400 (as AWS
                            answers a throttled call)
        truncate_answers    the next N vendor answers are cut to half their
                            length (Content-Length is the cut length)
        pad_answers         the next N vendor answers that are JSON objects
                            carry "padding": pad_bytes (default 200000) x's
        throttle_calls      {vendor: N}: the next N requests to that vendor
                            are refused whole with its documented rate-limit
                            answer (THROTTLE_ANSWERS: Amplitude 429 with
                            throttled_users, Mixpanel 429, Iterable 429,
                            Kafka REST 429 error_code 429, Statsig 429),
                            none of them with Retry-After; Kinesis has
                            kinesis_call_errors
        omit_last_report    the next N per-record answers (Kinesis Records,
                            Kafka v2 offsets, Kafka v3 reports) lack their
                            last entry
        bad_number          a JSON number written instead of the index (Braze
                            errors, Mixpanel failed_records) or the
                            error_code (Kafka) of every rejected record, in
                            the next bad_number_answers answers (default 1)
                            that reject one
        raw_answers         a list of texts: each of the next vendor answers
                            is the first one left, sent as it is with the
                            status the vendor chose (for JSON that only looks
                            readable: numbers numeric cannot hold, deep
                            nesting); the records of those requests are not
                            kept
"""

import base64
import json
import re
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

# the same HTTP plumbing, server loop and CLI as test/receiver.py
from receiver import BaseHandler, serve


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.clear()

    def clear(self):
        self.requests = []
        self.records = []
        self.config = {}
        self.retried = set()  # (vendor, user) given a retryable error once
        self.throttled = 0  # Braze requests answered 429 so far
        self.seq = 0
        self.offsets = {}  # Kafka topic -> next offset
        self.kinesis_seq = 0
        self.budget = {}  # BUDGETS key -> answers still to affect
        self.call_errors = []  # kinesis_call_errors still to answer
        self.throttle_left = {}  # vendor -> throttle_calls answers still to give
        self.raw_answers = []  # raw_answers still to send


STATE = State()

# Config keys that are budgets of answers (see the module doc).
BUDGETS = ("kinesis_throttle_all", "truncate_answers", "pad_answers", "omit_last_report",
           "bad_number_answers")


def take(key):
    """True, once for each unit of the budget key (BUDGETS)."""
    with STATE.lock:
        if STATE.budget.get(key, 0) <= 0:
            return False
        STATE.budget[key] -= 1
        return True


def set_budgets(cfg):
    """Starts the budgets that a /_config sets (under STATE.lock)."""
    for k in BUDGETS:
        if k in cfg:
            STATE.budget[k] = int(cfg[k] or 0)
    if "bad_number" in cfg and "bad_number_answers" not in cfg:
        STATE.budget["bad_number_answers"] = 1 if cfg["bad_number"] is not None else 0
    if "kinesis_call_errors" in cfg:
        STATE.call_errors = list(cfg["kinesis_call_errors"] or [])
    if "throttle_calls" in cfg:
        STATE.throttle_left = dict((k, int(v or 0))
                                   for k, v in (cfg["throttle_calls"] or {}).items())
    if "raw_answers" in cfg:
        STATE.raw_answers = list(cfg["raw_answers"] or [])


# Each vendor's documented answer to a request throttled whole (without
# Retry-After: none of these vendors documents one):
#   - Amplitude, https://amplitude.com/docs/apis/analytics/batch-event-upload
#     ("429 Too many requests for a device or user"): throttled_users and
#     throttled_events; a client should pause about 30 s;
#   - Mixpanel, https://developer.mixpanel.com/reference/import-events
#     (429 "rate limit exceeded"): back off from 2 s;
#   - Iterable, https://api.iterable.com/api/docs (429 per-project rate
#     limits of the bulk endpoints);
#   - Confluent REST Proxy (its rate limiter: 429, error_code 429);
#   - Statsig log_event (429).
THROTTLE_ANSWERS = {
    "amplitude": lambda users: {
        "code": 429, "error": "Too many requests for some devices and users",
        "eps_threshold": 30, "throttled_devices": {},
        "throttled_users": dict((str(u), 31) for u in users),
        "throttled_events": list(range(len(users)))},
    "mixpanel": lambda users: {"code": 429, "error": "rate limit exceeded",
                               "status": "Too Many Requests"},
    "iterable": lambda users: {"msg": "Rate limit exceeded for this project",
                               "code": "RateLimitExceeded", "params": None},
    "kafka": lambda users: {"error_code": 429, "message": "Request rate limit exceeded"},
    "statsig": lambda users: {"success": False, "message": "Too many requests"},
}


def throttle_call(c):
    """Raises the vendor's whole-request 429 while its throttle_calls
    budget lasts."""
    with STATE.lock:
        left = STATE.throttle_left.get(c.vendor, 0)
        if left <= 0:
            return
        STATE.throttle_left[c.vendor] = left - 1
    users = []
    doc = json_body(c.raw)
    if isinstance(doc, dict) and isinstance(doc.get("events"), list):
        users = [e.get("user_id") for e in doc["events"] if isinstance(e, dict)]
    raise VendorError(429, THROTTLE_ANSWERS[c.vendor](users))


# The documented size caps (see the module doc), in bytes.
SIZE_CAPS = {
    "/batch": 20 * 1024 * 1024,
    "/2/httpapi": 1024 * 1024,
    "iterable": 4 * 1000 * 1000,
    "kinesis_record": 1024 * 1024,
    "kinesis_request": 5 * 1024 * 1024,
}


def brief_request(rec):
    """A recorded request without its body and response: their lengths in
    bytes ("bytes", "response_bytes") and the rest."""
    out = dict((k, v) for k, v in rec.items() if k not in ("body", "response"))
    out["bytes"] = len(rec["body"].encode("utf-8"))
    out["response_bytes"] = len((rec["response"] or "").encode("utf-8"))
    out["error"] = None
    if rec["status"] is not None and not 200 <= rec["status"] < 300:
        out["error"] = (rec["response"] or "")[:300]
    return out


def omit_last(body):
    """body (a per-record answer) without its last entry, or None."""
    if isinstance(body, dict):
        for key in ("Records", "offsets"):
            if isinstance(body.get(key), list) and body[key]:
                out = dict(body)
                out[key] = body[key][:-1]
                return out
        return None
    if isinstance(body, str) and body.strip():
        lines = body.rstrip("\n").split("\n")
        return "\n".join(lines[:-1]) + "\n"
    return None


class VendorError(Exception):
    """An answer that ends the request: status, JSON body, headers."""

    def __init__(self, status, body, headers=None, accept_partial=False):
        Exception.__init__(self, status)
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.accept_partial = accept_partial  # the records taken so far count


def cfg_list(cfg, key):
    v = cfg.get(key) or []
    return set(str(x) for x in v)


def json_body(raw):
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def basic_auth(headers):
    """The "user:password" of a Basic Authorization header, or None."""
    h = headers.get("authorization", "")
    if not h.lower().startswith("basic "):
        return None
    try:
        return base64.b64decode(h[6:].strip()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


class Ctx:
    """What a vendor handler needs: the request, the config, the verdicts."""

    def __init__(self, handler, vendor, raw, cfg):
        self.handler = handler
        self.vendor = vendor
        self.raw = raw
        self.cfg = cfg
        self.headers = handler.lower_headers
        self.path = handler.parts.path
        self.query = parse_qs(handler.parts.query)
        self.accepted = []  # (kind, user, record) to record on success
        self.reject = cfg_list(cfg, "reject_users")
        self.retry = cfg_list(cfg, "retry_users")

    def rejected(self, user):
        return user is not None and str(user) in self.reject

    def retry_once(self, user):
        """True the first time a retry user is seen by this vendor."""
        if user is None or str(user) not in self.retry:
            return False
        key = (self.vendor, str(user))
        with STATE.lock:
            if key in STATE.retried:
                return False
            STATE.retried.add(key)
        return True

    def accept(self, kind, user, record):
        self.accepted.append((kind, user, record))

    def number(self, good):
        """The index or code of a rejected record: good, or bad_number
        while its budget lasts (taken once per answer)."""
        if "bad_number" not in self.cfg:
            return good
        if not hasattr(self, "bad"):
            self.bad = take("bad_number_answers")
        return self.cfg["bad_number"] if self.bad else good


# ---------------------------------------------------------------------------
# Braze: POST /users/track
# https://www.braze.com/docs/api/endpoints/user_data/post_user_track/
#   - Authorization: Bearer <REST API key>; at most 75 objects in each of
#     attributes, events and purchases per request.
#   - 201 {"message": "success", "errors": [{"type", "input_array", "index"}]}
#     when some objects were rejected: the others were processed
#     (https://www.braze.com/docs/api/errors/#server-responses, "non-fatal
#     errors"); 400 with the same errors array when no object was valid.
#   - 401 for an unknown or missing REST API key (api/errors, fatal errors).
# ---------------------------------------------------------------------------
BRAZE_MAX = 75


def braze_user(obj):
    if not isinstance(obj, dict):
        return None
    if obj.get("external_id") is not None:
        return obj.get("external_id")
    alias = obj.get("user_alias")
    if isinstance(alias, dict):
        return alias.get("alias_name")
    return None


def braze_throttle(c):
    """Raises Braze's 429 while the braze_throttle budget lasts: the reset
    time is in X-RateLimit-Reset, in UTC epoch seconds
    (https://www.braze.com/docs/api/api_limits/, shared/DESTINATIONS.md)."""
    with STATE.lock:
        if STATE.throttled >= int(c.cfg.get("braze_throttle") or 0):
            return
        STATE.throttled += 1
    raise VendorError(429, {"message": "Too many requests"},
                      {"X-RateLimit-Reset": str(int(time.time()) + 3)})


def handle_braze(c):
    braze_throttle(c)
    auth = c.headers.get("authorization", "")
    key = c.cfg.get("api_key")
    if not auth.startswith("Bearer ") or len(auth) <= 7 or (key and auth[7:] != key):
        raise VendorError(401, {"message": "Unknown or missing REST API Key."})
    doc = json_body(c.raw)
    if not isinstance(doc, dict):
        raise VendorError(400, {"message": "Invalid JSON in request body."})
    errors = []
    total = 0
    processed = {}
    for arr in ("attributes", "events", "purchases"):
        objs = doc.get(arr)
        if objs is None:
            continue
        if not isinstance(objs, list):
            raise VendorError(400, {"message": "'%s' must be an array" % arr})
        if len(objs) > BRAZE_MAX:
            # the documented cap: a request over it is refused whole
            raise VendorError(400, {"message": "Exceeded the maximum of %d '%s' objects per request"
                                    % (BRAZE_MAX, arr)})
        total += len(objs)
        n = 0
        for i, obj in enumerate(objs):
            user = braze_user(obj)
            if user is None:
                errors.append({"type": "'external_id', 'braze_id', 'user_alias', 'email' or "
                               "'phone' is required", "input_array": arr, "index": i})
            elif arr == "events" and (not obj.get("name") or not obj.get("time")):
                errors.append({"type": "'name' and 'time' are required", "input_array": arr,
                               "index": i})
            elif c.rejected(user):
                errors.append({"type": "'external_id' is invalid", "input_array": arr,
                               "index": c.number(i)})
            else:
                c.accept(arr, user, obj)
                n += 1
        processed[arr + "_processed"] = n
    if total == 0 or (errors and not c.accepted):
        raise VendorError(400, {"message": "Valid data must be provided in the 'attributes', "
                                "'events', or 'purchases' fields.", "errors": errors})
    body = {"message": "success"}
    body.update(processed)
    if errors:
        body["errors"] = errors
    return 201, body


# ---------------------------------------------------------------------------
# Iterable: POST /api/events/trackBulk, POST /api/users/bulkUpdate
# https://api.iterable.com/api/docs#events_trackBulk and
# https://api.iterable.com/api/docs#users_bulkUpdateUser
#   - Api-Key header (server-side key); 401 {"msg", "code": "BadApiKey"}.
#   - 200 {"successCount", "failCount", "invalidEmails", "invalidUserIds",
#     "failedUpdates": {"invalidEmails", "invalidUserIds", "notFoundEmails",
#     "notFoundUserIds", "forgottenEmails", "forgottenUserIds",
#     "conflictEmails", "conflictUserIds", "invalidDataEmails",
#     "invalidDataUserIds"}}: the listed users' items were not processed.
#     trackBulk adds "disallowedEventNames".  (Field names as in Iterable's
#     API reference and in the Iterable clients of RudderStack and
#     Census/segmentio.)
#   - Iterable has no per-item retryable error: retry_users is ignored.
# ---------------------------------------------------------------------------
ITERABLE_LISTS = ("invalidEmails", "invalidUserIds", "notFoundEmails", "notFoundUserIds",
                  "forgottenEmails", "forgottenUserIds", "conflictEmails", "conflictUserIds",
                  "invalidDataEmails", "invalidDataUserIds")


def handle_iterable(c):
    key = c.cfg.get("api_key")
    got = c.headers.get("api-key")
    if not got or (key and got != key):
        raise VendorError(401, {"msg": "Invalid API key", "code": "BadApiKey", "params": None})
    if len(c.raw) > SIZE_CAPS["iterable"]:
        raise VendorError(413, {"msg": "Request body is over %d bytes" % SIZE_CAPS["iterable"],
                                "code": "RequestTooLarge", "params": None})
    doc = json_body(c.raw)
    track = c.path.endswith("/trackBulk")
    arr = "events" if track else "users"
    items = doc.get(arr) if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise VendorError(400, {"msg": "Invalid JSON body: '%s' is required" % arr,
                                "code": "InvalidJsonBody", "params": None})
    invalid_data = cfg_list(c.cfg, "invalid_data_users")
    failed = {k: [] for k in ITERABLE_LISTS}
    top_invalid_user_ids = []
    ok = 0
    for item in items:
        user = item.get("userId") if isinstance(item, dict) else None
        if user is None and isinstance(item, dict):
            user = item.get("email")
        if user is None or c.rejected(user):
            failed["invalidUserIds"].append(user)
            top_invalid_user_ids.append(user)
        elif str(user) in invalid_data:
            failed["invalidDataUserIds"].append(user)
        else:
            c.accept(arr, user, item)
            ok += 1
    fail = len(items) - ok
    body = {"successCount": ok, "failCount": fail, "invalidEmails": [],
            "invalidUserIds": top_invalid_user_ids, "filteredOutFields": [],
            "createdFields": [], "failedUpdates": failed}
    if track:
        body["disallowedEventNames"] = []
    return 200, body


# ---------------------------------------------------------------------------
# Amplitude: POST /batch (Batch Event Upload) and POST /2/httpapi (HTTP V2)
# https://amplitude.com/docs/apis/analytics/batch-event-upload
# https://amplitude.com/docs/apis/analytics/http-v2
#   - {"api_key", "events": [...]}; the key travels in the body.
#   - 200 {"code": 200, "events_ingested", "payload_size_bytes",
#     "server_upload_time"}.
#   - 400 rejects the *whole* request and lists the bad events:
#     {"code": 400, "error", "events_with_invalid_fields": {"user_id": [i]}};
#     a missing key is {"code": 400, "error": "Request missing required
#     field", "missing_field": "api_key"}.
#   - Amplitude's 429 (throttled users) makes a client wait 30 s: see
#     throttle_calls; retry_users is ignored.
# ---------------------------------------------------------------------------
def handle_amplitude(c):
    if len(c.raw) > SIZE_CAPS[c.path]:
        raise VendorError(413, {"code": 413, "error": "Payload too large: over %d bytes"
                                % SIZE_CAPS[c.path]})
    doc = json_body(c.raw)
    if not isinstance(doc, dict):
        raise VendorError(400, {"code": 400, "error": "Invalid JSON request body"})
    key = doc.get("api_key")
    if not key:
        raise VendorError(400, {"code": 400, "error": "Request missing required field",
                                "missing_field": "api_key"})
    if c.cfg.get("api_key") and key != c.cfg["api_key"]:
        raise VendorError(400, {"code": 400, "error": "Invalid API key: the key does not "
                                "belong to any project"})
    events = doc.get("events")
    if not isinstance(events, list) or not events:
        raise VendorError(400, {"code": 400, "error": "Request missing required field",
                                "missing_field": "events"})
    limit = 2000
    if len(events) > limit:
        raise VendorError(413, {"code": 413, "error": "Payload too large"})
    invalid = []
    missing = []
    for i, ev in enumerate(events):
        if not isinstance(ev, dict) or not ev.get("event_type"):
            missing.append(i)
            continue
        user = ev.get("user_id") if ev.get("user_id") is not None else ev.get("device_id")
        if c.rejected(user):
            invalid.append(i)
    if invalid or missing:
        body = {"code": 400, "error": "Request contains events with invalid or missing fields"}
        if invalid:
            body["events_with_invalid_fields"] = {"user_id": invalid}
        if missing:
            body["events_with_missing_fields"] = {"event_type": missing}
        raise VendorError(400, body)
    for ev in events:
        user = ev.get("user_id") if ev.get("user_id") is not None else ev.get("device_id")
        c.accept("events", user, ev)
    return 200, {"code": 200, "events_ingested": len(events),
                 "payload_size_bytes": len(c.raw),
                 "server_upload_time": int(time.time() * 1000)}


# ---------------------------------------------------------------------------
# Mixpanel
# POST /import?strict=1 -- https://developer.mixpanel.com/reference/import-events,
# https://docs.mixpanel.com/troubleshooting/errors/400-bad-request and the
# Ingestion API's OpenAPI spec (github.com/mixpanel/docs,
# openapi/ingestion.openapi.yaml):
#   - Basic auth: a service account (user:secret, with ?project_id=) or the
#     project secret as user name; 401 {"code": 401, "error": "Invalid
#     credentials", "status": "Unauthorized"}.
#   - up to 2000 events and 2 MB (2097152 bytes, uncompressed) per request:
#     413 {"code": 413, "error": "request exceeds max limit of 2097152
#     bytes", "status": "Request Entity Too Large"}.
#   - strict mode: 200 {"code": 200, "num_records_imported", "status": "OK"};
#     400 is a partial success: {"code": 400, "error", "status": "Bad
#     Request", "num_records_imported", "failed_records": [{"index",
#     "insert_id", "field", "message"}]}; the other records were imported.
# POST /engage -- https://docs.mixpanel.com/reference/profile-batch-update
#   - a JSON list of {"$token", "$distinct_id", "$set"}; 200 even on
#     validation errors: the body says it.  Without ?verbose=1 the body is
#     text/plain "1" (one or more objects valid) or "0" (none valid); with
#     verbose=1 it is {"status": 1, "error": null} or {"status": 0, "error"}.
# ---------------------------------------------------------------------------
MIXPANEL_MAX_BYTES = 2097152
MIXPANEL_MAX_EVENTS = 2000


def mixpanel_check_basic(c):
    want = c.cfg.get("basic")
    got = basic_auth(c.headers)
    if got is None or (want and got != want):
        raise VendorError(401, {"code": 401, "error": "Invalid credentials",
                                "status": "Unauthorized"})


def handle_mixpanel_import(c):
    mixpanel_check_basic(c)
    if len(c.raw) > MIXPANEL_MAX_BYTES:
        raise VendorError(413, {"code": 413, "error": "request exceeds max limit of %d bytes"
                                % MIXPANEL_MAX_BYTES, "status": "Request Entity Too Large"})
    doc = json_body(c.raw)
    if not isinstance(doc, list):
        raise VendorError(400, {"code": 400, "error": "unable to parse request body",
                                "status": "Bad Request"})
    if len(doc) > MIXPANEL_MAX_EVENTS:
        raise VendorError(400, {"code": 400, "error": "too many events: at most %d per request"
                                % MIXPANEL_MAX_EVENTS, "status": "Bad Request"})
    failed = []
    for i, ev in enumerate(doc):
        props = ev.get("properties") if isinstance(ev, dict) else None
        if not isinstance(props, dict):
            failed.append({"index": i, "insert_id": None, "field": "properties",
                           "message": "'properties' must be an object"})
            continue
        insert_id = props.get("$insert_id")
        user = props.get("distinct_id")
        t = props.get("time")
        if not insert_id:
            failed.append({"index": i, "insert_id": None, "field": "properties.$insert_id",
                           "message": "'properties.$insert_id' is required"})
        elif not isinstance(t, int) or t < 31536000:
            failed.append({"index": i, "insert_id": insert_id, "field": "properties.time",
                           "message": "'properties.time' is invalid: must be specified as "
                           "seconds since epoch"})
        elif c.rejected(user):
            failed.append({"index": c.number(i), "insert_id": insert_id,
                           "field": "properties.distinct_id",
                           "message": "'properties.distinct_id' is invalid: %s is a reserved "
                           "value" % json.dumps(user)})
        else:
            c.accept("import", user, ev)
    if failed:
        raise VendorError(400, {"code": 400,
                                "error": "some data points in the request failed validation",
                                "status": "Bad Request",
                                "num_records_imported": len(doc) - len(failed),
                                "failed_records": failed}, accept_partial=True)
    return 200, {"code": 200, "num_records_imported": len(doc), "status": "OK"}


def handle_mixpanel_engage(c):
    verbose = c.query.get("verbose", ["0"])[0] == "1"
    doc = json_body(c.raw)
    if not isinstance(doc, list):
        doc = [doc] if isinstance(doc, dict) else []
    bad = []
    good = []
    for upd in doc:
        user = upd.get("$distinct_id") if isinstance(upd, dict) else None
        if not isinstance(upd, dict) or not upd.get("$token") or user is None:
            bad.append("missing $token or $distinct_id")
        elif c.rejected(user):
            bad.append("invalid $distinct_id %s" % json.dumps(user))
        else:
            good.append((user, upd))
    if verbose:
        # one status for the whole batch: nothing is applied when it is 0
        if bad or not doc:
            return 200, {"status": 0, "error": bad[0] if bad else "no data"}
        for user, upd in good:
            c.accept("engage", user, upd)
        return 200, {"status": 1, "error": None}
    for user, upd in good:
        c.accept("engage", user, upd)
    return 200, ("1" if good else "0")


# ---------------------------------------------------------------------------
# Kafka REST Proxy (Confluent)
# v2: POST /topics/{topic} -- https://docs.confluent.io/platform/current/
# kafka-rest/api.html#post--topics-(string-topic_name)
#   - Content-Type application/vnd.kafka.json.v2+json (else 415), body
#     {"records": [{"key", "value"}]}.
#   - 200 {"key_schema_id": null, "value_schema_id": null, "offsets":
#     [{"partition", "offset", "error_code", "error"}]}: error_code null when
#     the record was written, 1 for a non-retriable Kafka exception, 2 for a
#     retriable one.
# v3: POST /v3/clusters/{cluster_id}/topics/{topic}/records -- same page,
# "Produce records", and kafka-rest's ProduceAction / StreamingResponse:
#   - Content-Type application/json; concatenated JSON records
#     {"key": {"type": "JSON", "data"}, "value": {"type": "JSON", "data"}}.
#   - HTTP 200 with one delivery report per record, in order:
#     {"error_code": 200, "cluster_id", "topic_name", "partition_id",
#     "offset", "timestamp", "key": {"type", "size"}, "value": {...}} or
#     {"error_code": <code>, "message"}, where codes come from rest-utils'
#     KafkaExceptionMapper: 40002 bad request (not retriable), 50002 Kafka
#     error, 50003 retriable Kafka error, 50302 broker not available.
#   - Basic auth when the proxy is set up for it: 401 {"error_code": 401,
#     "message": "Unauthorized"}.
# ---------------------------------------------------------------------------
def kafka_check_basic(c):
    want = c.cfg.get("basic")
    if not want:
        return
    if basic_auth(c.headers) != want:
        raise VendorError(401, {"error_code": 401, "message": "Unauthorized"})


def kafka_offset(topic):
    with STATE.lock:
        n = STATE.offsets.get(topic, 0)
        STATE.offsets[topic] = n + 1
    return n


def handle_kafka_v2(c, topic):
    kafka_check_basic(c)
    ctype = c.headers.get("content-type", "").split(";")[0].strip()
    if ctype != "application/vnd.kafka.json.v2+json":
        raise VendorError(415, {"error_code": 415, "message": "HTTP 415 Unsupported Media Type"})
    doc = json_body(c.raw)
    records = doc.get("records") if isinstance(doc, dict) else None
    if not isinstance(records, list):
        raise VendorError(422, {"error_code": 422, "message": "Unrecognized field or missing "
                                "'records'"})
    offsets = []
    for rec in records:
        user = rec.get("key") if isinstance(rec, dict) else None
        if c.rejected(user):
            offsets.append({"partition": None, "offset": None, "error_code": c.number(1),
                            "error": "This record is rejected by the broker (non-retriable)"})
        elif c.retry_once(user):
            offsets.append({"partition": None, "offset": None, "error_code": 2,
                            "error": "NOT_ENOUGH_REPLICAS: retriable, try again"})
        else:
            c.accept(topic, user, rec)
            offsets.append({"partition": 0, "offset": kafka_offset(topic), "error_code": None,
                            "error": None})
    return 200, {"key_schema_id": None, "value_schema_id": None, "offsets": offsets}


def split_concatenated_json(text):
    """The JSON values of a concatenated JSON stream (newlines or not)."""
    dec = json.JSONDecoder()
    out = []
    i = 0
    n = len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            break
        v, i = dec.raw_decode(text, i)
        out.append(v)
    return out


def handle_kafka_v3(c, cluster, topic):
    kafka_check_basic(c)
    ctype = c.headers.get("content-type", "").split(";")[0].strip()
    if ctype != "application/json":
        raise VendorError(415, {"error_code": 415, "message": "HTTP 415 Unsupported Media Type"})
    try:
        records = split_concatenated_json(c.raw.decode("utf-8"))
    except ValueError as e:
        raise VendorError(400, {"error_code": 400, "message": "Error processing JSON: %s" % e})
    reject_code = int(c.cfg.get("v3_reject_code") or 40002)
    reports = []
    for rec in records:
        key = rec.get("key") if isinstance(rec, dict) else None
        user = key.get("data") if isinstance(key, dict) else None
        if c.rejected(user):
            reports.append({"error_code": c.number(reject_code),
                            "message": "This record is rejected by the broker"})
        elif c.retry_once(user):
            reports.append({"error_code": 50003,
                            "message": "NOT_ENOUGH_REPLICAS: retriable Kafka error"})
        else:
            c.accept(topic, user, rec)
            reports.append({"error_code": 200, "cluster_id": cluster, "topic_name": topic,
                            "partition_id": 0, "offset": kafka_offset(topic),
                            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                            "key": {"type": "JSON", "size": len(json.dumps(user))},
                            "value": {"type": "JSON", "size": len(json.dumps(rec.get("value")))}})
    return 200, "\n".join(json.dumps(r) for r in reports) + "\n"


# ---------------------------------------------------------------------------
# Statsig: POST /v1/log_event
# https://docs.statsig.com/api-reference/events/log-custom-events
#   - statsig-api-key header (a server secret key); {"events": [{"eventName",
#     "user": {"userID"}, "value", "metadata", "time"}]}.
#   - 202 {"success": true}; the status is for the whole request: a request
#     with an invalid event is refused whole (400), there is no per-event
#     answer, so retl isolates bad events by splitting the batch.
# ---------------------------------------------------------------------------
def handle_statsig(c):
    key = c.cfg.get("api_key")
    got = c.headers.get("statsig-api-key")
    if not got or (key and got != key):
        raise VendorError(401, {"success": False, "message": "Invalid SDK key"})
    doc = json_body(c.raw)
    events = doc.get("events") if isinstance(doc, dict) else None
    if not isinstance(events, list) or not events:
        raise VendorError(400, {"success": False, "message": "'events' must be a non-empty "
                                "array"})
    for ev in events:
        user = (ev.get("user") or {}).get("userID") if isinstance(ev, dict) else None
        if not isinstance(ev, dict) or not ev.get("eventName"):
            raise VendorError(400, {"success": False, "message": "eventName is required"})
        if c.rejected(user):
            raise VendorError(400, {"success": False, "message": "invalid user %s"
                                    % json.dumps(user)})
    for ev in events:
        c.accept("events", ev["user"].get("userID"), ev)
    return 202, {"success": True}


# ---------------------------------------------------------------------------
# Kinesis: POST / with X-Amz-Target: Kinesis_20131202.PutRecords
# https://docs.aws.amazon.com/kinesis/latest/APIReference/API_PutRecords.html
#   - Content-Type application/x-amz-json-1.1; AWS SigV4 Authorization
#     (recorded here, checked by the test); {"StreamName", "Records":
#     [{"Data": base64, "PartitionKey"}]}, at most 500 records.
#   - 200 {"FailedRecordCount", "Records": [{"SequenceNumber", "ShardId"} or
#     {"ErrorCode", "ErrorMessage"}]}, in request order; ErrorCode is
#     ProvisionedThroughputExceededException or InternalFailure.
#   - 400 {"__type": "MissingAuthenticationTokenException"} without a
#     signature.  Real Kinesis behaviour is tested against kinesalite.
# ---------------------------------------------------------------------------
def handle_kinesis(c):
    target = c.headers.get("x-amz-target", "")
    if not c.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 "):
        raise VendorError(400, {"__type": "MissingAuthenticationTokenException",
                                "message": "Missing Authentication Token"})
    if target != "Kinesis_20131202.PutRecords":
        raise VendorError(400, {"__type": "UnknownOperationException"})
    doc = json_body(c.raw)
    records = doc.get("Records") if isinstance(doc, dict) else None
    if not isinstance(records, list) or not 1 <= len(records) <= 500:
        raise VendorError(400, {"__type": "ValidationException",
                                "message": "Records must have length between 1 and 500"})
    total = 0
    for i, rec in enumerate(records):
        try:
            size = len(base64.b64decode(rec.get("Data") or "", validate=True)) + \
                len((rec.get("PartitionKey") or "").encode("utf-8"))
        except (ValueError, AttributeError):
            raise VendorError(400, {"__type": "SerializationException",
                                    "message": "Data of record %d is not base64" % i})
        if size > SIZE_CAPS["kinesis_record"]:
            raise VendorError(400, {"__type": "ValidationException",
                                    "message": "Record %d: data and partition key are %d "
                                    "bytes, over 1 MiB" % (i, size)})
        total += size
    if total > SIZE_CAPS["kinesis_request"]:
        raise VendorError(400, {"__type": "InvalidArgumentException",
                                "message": "Records size exceeds 5 MB limit (%d bytes)" % total})
    with STATE.lock:
        call_error = STATE.call_errors.pop(0) if STATE.call_errors else None
    if call_error:
        status = {"InternalFailure": 500, "ServiceUnavailable": 503}.get(call_error, 400)
        raise VendorError(status, {"__type": call_error,
                                   "message": "Rate exceeded for stream %s under account "
                                   "000000000000." % doc.get("StreamName")})
    throttle_all = take("kinesis_throttle_all")
    out = []
    failed = 0
    for rec in records:
        user = rec.get("PartitionKey")
        if throttle_all or c.rejected(user) or c.retry_once(user):
            failed += 1
            out.append({"ErrorCode": "ProvisionedThroughputExceededException",
                        "ErrorMessage": "Rate exceeded for shard shardId-000000000000 in "
                        "stream %s under account 000000000000." % doc.get("StreamName")})
        else:
            with STATE.lock:
                STATE.kinesis_seq += 1
                seqno = STATE.kinesis_seq
            c.accept("records", user, rec)
            out.append({"SequenceNumber": "%056d" % seqno, "ShardId": "shardId-000000000000"})
    return 200, {"FailedRecordCount": failed, "Records": out}


# ---------------------------------------------------------------------------

KAFKA_V2 = re.compile(r"^/topics/([^/]+)$")
KAFKA_V3 = re.compile(r"^/v3/clusters/([^/]+)/topics/([^/]+)/records$")


def route(handler):
    """The vendor of a request and its handler, or (None, None)."""
    path = handler.parts.path
    if path == "/users/track":
        return "braze", handle_braze
    if path in ("/api/events/trackBulk", "/api/users/bulkUpdate"):
        return "iterable", handle_iterable
    if path in ("/batch", "/2/httpapi"):
        return "amplitude", handle_amplitude
    if path == "/import":
        return "mixpanel", handle_mixpanel_import
    if path == "/engage":
        return "mixpanel", handle_mixpanel_engage
    if path == "/v1/log_event":
        return "statsig", handle_statsig
    if path == "/" and handler.lower_headers.get("x-amz-target"):
        return "kinesis", handle_kinesis
    m = KAFKA_V2.match(path)
    if m:
        return "kafka", lambda c: handle_kafka_v2(c, m.group(1))
    m = KAFKA_V3.match(path)
    if m:
        return "kafka", lambda c: handle_kafka_v3(c, m.group(1), m.group(2))
    return None, None


class Handler(BaseHandler):
    """The vendor endpoints; the HTTP plumbing is the receiver's."""
    server_version = "retl-test-vendors/1"
    log_name = "vendors"
    default_ctype = "application/json"

    def do_GET(self):
        parts = urlsplit(self.path)
        q = parse_qs(parts.query)
        if parts.path == "/_requests":
            with STATE.lock:
                data = json.dumps([brief_request(r) for r in STATE.requests]
                                  if "brief" in q else STATE.requests)
            self._send(200, data)
        elif parts.path == "/_records":
            vendor = q.get("vendor", [None])[0]
            kind = q.get("kind", [None])[0]
            with STATE.lock:
                recs = [r for r in STATE.records
                        if (vendor is None or r["vendor"] == vendor)
                        and (kind is None or r["kind"] == kind)]
                if "brief" in q:
                    recs = [dict((k, v) for k, v in r.items() if k != "record") for r in recs]
                data = json.dumps(recs)
            self._send(200, data)
        elif parts.path == "/_stats":
            with STATE.lock:
                obj = {"requests": len(STATE.requests), "records": len(STATE.records)}
            self._send(200, obj)
        elif parts.path == "/_config":
            with STATE.lock:
                obj = dict(STATE.config)
            self._send(200, obj)
        elif parts.path == "/_health":
            self._send(200, "OK", "text/plain")
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        self.parts = urlsplit(self.path)
        raw = self._read_body()
        if self.parts.path.startswith("/_"):
            self._control(raw)
            return
        self.lower_headers = {}
        for k, v in self.headers.items():
            k = k.lower()
            self.lower_headers[k] = (self.lower_headers[k] + ", " + v
                                     if k in self.lower_headers else v)
        vendor, fn = route(self)
        with STATE.lock:
            STATE.seq += 1
            rec = {"seq": STATE.seq, "time": time.time(), "vendor": vendor,
                   "method": self.command, "path": self.parts.path, "query": self.parts.query,
                   "headers": self.lower_headers, "body": raw.decode("utf-8", "replace"),
                   "status": None, "response": None}
            STATE.requests.append(rec)
            cfg = json.loads(json.dumps(STATE.config))
        if fn is None:
            self._answer(rec, None, 404, {"error": "no such endpoint"})
            return
        c = Ctx(self, vendor, raw, cfg)
        if cfg.get("fail_status"):
            self._answer(rec, None, int(cfg["fail_status"]),
                         {"error": "injected failure", "code": int(cfg["fail_status"])})
            return
        try:
            if vendor in THROTTLE_ANSWERS:
                throttle_call(c)
            status, body = fn(c)
        except VendorError as e:
            # Mixpanel's strict 400 is a partial success: keep what it took
            self._answer(rec, c if e.accept_partial else None, e.status, e.body, e.headers)
            return
        self._answer(rec, c, status, body)

    do_PUT = do_POST

    def _answer(self, rec, ctx, status, body, headers=None):
        if status == 200 and rec["vendor"] in ("kinesis", "kafka") \
                and omit_last(body) is not None and take("omit_last_report"):
            body = omit_last(body)
        if isinstance(body, dict) and take("pad_answers"):
            body = dict(body, padding="x" * int(self.config_value("pad_bytes", 200000)))
        text = body if isinstance(body, str) else json.dumps(body)
        with STATE.lock:
            raw = STATE.raw_answers.pop(0) if STATE.raw_answers else None
        if raw is not None:
            text, ctx = raw, None
        if take("truncate_answers"):
            text = text[:len(text) // 2]
        with STATE.lock:
            rec["status"] = status
            rec["response"] = text
            if ctx is not None:
                for kind, user, record in ctx.accepted:
                    STATE.records.append({"seq": rec["seq"], "vendor": ctx.vendor, "kind": kind,
                                          "path": rec["path"], "user": user, "record": record})
        if self.verbose:
            sys.stderr.write("vendors: #%d %s %s -> %d\n"
                             % (rec["seq"], self.command, self.path, status))
        ctype = "application/json"
        if isinstance(body, str):
            ctype = "text/plain; charset=utf-8"
            if rec["vendor"] == "kafka":
                ctype = "application/json"
        self._send(status, text, ctype, headers)

    def config_value(self, key, default):
        """The configured value of key, or default."""
        with STATE.lock:
            return STATE.config.get(key, default)

    def _control(self, raw):
        if self.parts.path == "/_reset":
            with STATE.lock:
                STATE.clear()
            self._send(200, {"reset": True})
        elif self.parts.path == "/_config":
            try:
                cfg = json.loads(raw.decode("utf-8") or "{}")
                if not isinstance(cfg, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                self._send(400, {"error": "bad config: %s" % e})
                return
            with STATE.lock:
                for k, v in cfg.items():
                    if v is None:
                        STATE.config.pop(k, None)
                    else:
                        STATE.config[k] = v
                set_budgets(cfg)
                out = dict(STATE.config)
            self._send(200, out)
        else:
            self._send(404, {"error": "not found"})


def main():
    serve(Handler, __doc__.split("\n")[0])


if __name__ == "__main__":
    main()
