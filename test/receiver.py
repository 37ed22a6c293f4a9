#!/usr/bin/python3
"""Local HTTP receiver for retl's tests and demo.

Python 3 standard library only.  Run it with Debian's /usr/bin/python3.

    /usr/bin/python3 test/receiver.py --port 0 --port-file /tmp/recv.port

It listens on 127.0.0.1 only (--any-address: on every local address), speaks HTTP/1.1 with keep-alive, and always
sends Content-Length.

Deliveries
    Any POST (or PUT / PATCH) to a path that does not start with "/_" is a
    delivery.  It is recorded as {seq, time, method, path, query, headers,
    body, status, events} and the events in its body are parsed:
      - a JSON array                    -> its elements
      - an object with a "batch" list   -> that list (RudderStack / Segment)
      - any other JSON object           -> [object]
      - NDJSON (one JSON value a line)  -> each line, arrays flattened
    By default a delivery is answered 200 with the body "OK".

Control endpoints (always answered at once, even while deliveries hang)
    GET  /_requests    JSON list of the recorded deliveries; ?brief=1 leaves
                       out bodies and headers, giving "bytes" (the body's
                       length) and "authorization" instead
    GET  /_events      events of the deliveries answered 2xx, exactly as sent
    GET  /_all_events  events of every delivery, whatever its answer
                       Both take optional filters: ?path=/hook (request
                       path), ?run_id=N (context.sources.job_run_id),
                       ?sync=name (context.sources.sync)
    GET  /_stats       {"requests": n, "events": n, "all_events": n,
                        "answered": {status: count}}
    GET  /_config      the current fault configuration
    GET  /_health      200 OK
    POST /_reset       forget everything, configuration included
    POST /_config      merge a JSON object into the fault configuration:
        delay_ms            sleep this long before answering each delivery
        fail_first          answer the next N deliveries with fail_status
        fail_status         status of those answers (default 503)
        retry_after         string: failed answers carry "Retry-After: <value>"
        hang                deliveries are never answered: the handler waits
                            until the client disconnects, 600 s pass, or hang
                            is turned off (then it answers as configured)
        close_mid_response  send a status line and headers that claim
                            Content-Length 100, a few bytes, then close
        reject_match        a delivery whose body contains this string is
                            answered 400 {"error":"rejected","match":...}
        reject_status       the status of those answers instead of 400
        status              status of normal answers (default 200)
        redirect_to         answer deliveries 307 with this Location
        echo_headers        answers with a non-2xx status carry the request's
                            headers in their body, as some APIs echo a
                            request in their errors (credentials included)
        down                close the connection at once, without answering
        basic               "user:password": a delivery without that Basic
                            Authorization is answered 401
        max_body_bytes      a delivery whose body is longer is answered 413
        max_events          a delivery of more events is answered 413
        max_event_bytes     a delivery with a longer event (compact JSON, as
                            sent) is answered 413
                            (the caps of RudderStack and Segment: a test sets
                            them to the vendor's documented numbers)
    A null value removes a key.

"answered" keys are HTTP status codes as strings, or "down", "hang" (client
gave up while hanging) and "close_mid_response".
"""

import argparse
import base64
import gzip
import json
import os
import select
import socket
import ssl
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HANG_LIMIT_S = 600.0

DEFAULT_CONFIG = {
    "delay_ms": 0,
    "fail_status": 503,
    "status": 200,
}


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.resets = 0  # bumped by every reset
        self.clear()

    def clear(self):
        self.requests = []
        self.events = []
        self.all_events = []
        self.answered = {}
        self.config = dict(DEFAULT_CONFIG)
        self.fail_remaining = 0
        self.seq = 0

    def reset(self):
        with self.lock:
            self.clear()
            self.resets += 1

    def merge_config(self, cfg):
        with self.lock:
            for k, v in cfg.items():
                if v is None:
                    self.config.pop(k, None)
                    if k in DEFAULT_CONFIG:
                        self.config[k] = DEFAULT_CONFIG[k]
                else:
                    self.config[k] = v
            if "fail_first" in cfg:
                self.fail_remaining = int(cfg["fail_first"] or 0)
            return dict(self.config)

    def snapshot_config(self):
        with self.lock:
            return dict(self.config)


STATE = State()


def brief_request(rec):
    """A recorded request without its body and headers: its length in
    bytes ("bytes") and the rest."""
    out = dict((k, v) for k, v in rec.items() if k not in ("body", "headers"))
    out["bytes"] = len(rec["body"].encode("utf-8"))
    out["authorization"] = rec.get("headers", {}).get("authorization")
    return out


def parse_events(body):
    """Return the list of events carried by a request body."""
    text = body.strip()
    if not text:
        return []
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
        events = []
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if isinstance(v, list):
                events.extend(v)
            else:
                events.append(v)
        return events
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        if isinstance(doc.get("batch"), list):
            return doc["batch"]
        return [doc]
    return [doc]


def filter_events(pairs, q):
    """Events of (path, event) pairs that match the query's filters."""
    want_path = q.get("path", [None])[0]
    want_run = q.get("run_id", [None])[0]
    want_sync = q.get("sync", [None])[0]
    out = []
    for path, ev in pairs:
        if want_path is not None and path != want_path:
            continue
        if want_run is not None or want_sync is not None:
            ctx = ev.get("context") if isinstance(ev, dict) else None
            src = ctx.get("sources") if isinstance(ctx, dict) else None
            if not isinstance(src, dict):
                src = {}
            if want_run is not None and str(src.get("job_run_id")) != want_run:
                continue
            if want_sync is not None and src.get("sync") != want_sync:
                continue
        out.append(ev)
    return out


class BaseHandler(BaseHTTPRequestHandler):
    """What test/receiver.py and test/vendors.py share: HTTP/1.1 with
    keep-alive, Expect: 100-continue, bodies read whole (chunked or not,
    gzip or deflate decoded), answers sent with Content-Length."""
    verbose = False  # set by serve() from --verbose
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY
    wbufsize = 65536  # headers and body leave in one write (see _send)
    server_version = "retl-test-receiver/1"
    log_name = "receiver"
    default_ctype = "text/plain; charset=utf-8"

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("%s: %s - %s\n" % (self.log_name, self.address_string(), fmt % args))

    def handle_expect_100(self):
        # wfile is buffered: push "100 Continue" out now, or the client
        # waits its expect timeout before it sends the body
        self.send_response_only(100)
        self.end_headers()
        self.wfile.flush()
        return True

    def _send(self, status, body=b"", ctype=None, headers=None):
        """Answers status with body: bytes, text, or an object sent as JSON."""
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            ctype = "application/json"
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype or self.default_ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks = []
            while True:
                line = self.rfile.readline()
                if not line:
                    break
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until an empty line
                    while True:
                        t = self.rfile.readline()
                        if not t or t in (b"\r\n", b"\n"):
                            break
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            raw = b"".join(chunks)
        else:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n > 0 else b""
        enc = (self.headers.get("Content-Encoding") or "").lower()
        try:
            if enc == "gzip":
                raw = gzip.decompress(raw)
            elif enc == "deflate":
                raw = zlib.decompress(raw)
        except Exception:
            pass
        return raw


class Handler(BaseHandler):
    # ----- helpers -------------------------------------------------------

    def _send_json(self, status, obj, headers=None):
        self._send(status, json.dumps(obj), "application/json", headers)

    def _drop_connection(self):
        self.close_connection = True
        try:
            self.wfile.flush()
        except Exception:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _client_gone(self):
        """True when the client has closed its end of the connection."""
        try:
            r, _, _ = select.select([self.connection], [], [], 0.1)
        except (OSError, ValueError):
            return True
        if not r:
            return False
        try:
            data = self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        if data == b"":
            return True
        # the client sent more (pipelining): nothing to learn, do not spin
        time.sleep(0.1)
        return False

    # ----- dispatch -------------------------------------------------------

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/_requests":
            brief = "brief" in parse_qs(urlsplit(self.path).query)
            with STATE.lock:
                data = json.dumps([brief_request(r) for r in STATE.requests] if brief
                                  else STATE.requests)
            self._send(200, data, "application/json")
        elif path in ("/_events", "/_all_events"):
            q = parse_qs(urlsplit(self.path).query)
            with STATE.lock:
                pairs = list(STATE.events if path == "/_events" else STATE.all_events)
            data = json.dumps(filter_events(pairs, q))
            self._send(200, data, "application/json")
        elif path == "/_stats":
            with STATE.lock:
                obj = {
                    "requests": len(STATE.requests),
                    "events": len(STATE.events),
                    "all_events": len(STATE.all_events),
                    "answered": dict(STATE.answered),
                }
            self._send_json(200, obj)
        elif path == "/_config":
            self._send_json(200, STATE.snapshot_config())
        elif path == "/_health":
            self._send(200, "OK")
        else:
            self._send(404, "not found")

    do_HEAD = do_GET

    def do_POST(self):
        path = urlsplit(self.path).path
        if path.startswith("/_"):
            self._control_post(path)
        else:
            self._delivery()

    def do_PUT(self):
        path = urlsplit(self.path).path
        if path.startswith("/_"):
            self._read_body()
            self._send(405, "method not allowed")
        else:
            self._delivery()

    do_PATCH = do_PUT

    def _control_post(self, path):
        raw = self._read_body()
        if path == "/_reset":
            STATE.reset()
            self._send_json(200, {"reset": True})
        elif path == "/_config":
            try:
                cfg = json.loads(raw.decode("utf-8") or "{}")
                if not isinstance(cfg, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                self._send_json(400, {"error": "bad config: %s" % e})
                return
            self._send_json(200, STATE.merge_config(cfg))
        else:
            self._send(404, "not found")

    # ----- deliveries -----------------------------------------------------

    def _refusal(self, cfg, raw, events):
        """(status, reason) when the delivery breaks the configured Basic
        auth or size caps, else None."""
        if cfg.get("basic") is not None:
            want = "Basic " + base64.b64encode(cfg["basic"].encode("utf-8")).decode("ascii")
            if self.headers.get("Authorization", "") != want:
                return 401, "bad or missing Basic auth"
        if cfg.get("max_body_bytes") and len(raw) > int(cfg["max_body_bytes"]):
            return 413, "body of %d bytes, over %d" % (len(raw), int(cfg["max_body_bytes"]))
        if cfg.get("max_events") and len(events) > int(cfg["max_events"]):
            return 413, "%d events, over %d" % (len(events), int(cfg["max_events"]))
        if cfg.get("max_event_bytes"):
            for e in events:
                n = len(json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
                if n > int(cfg["max_event_bytes"]):
                    return 413, "an event of %d bytes, over %d" % (n, int(cfg["max_event_bytes"]))
        return None

    def _delivery(self):
        arrived = time.time()
        raw = self._read_body()
        body = raw.decode("utf-8", errors="replace")
        events = parse_events(body)
        parts = urlsplit(self.path)
        headers = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = headers[k] + ", " + v if k in headers else v

        with STATE.lock:
            STATE.seq += 1
            rec = {
                "seq": STATE.seq,
                "time": arrived,
                "method": self.command,
                "path": parts.path,
                "query": parts.query,
                "headers": headers,
                "body": body,
                "status": None,
                "events": len(events),
            }
            STATE.requests.append(rec)
            STATE.all_events.extend((parts.path, e) for e in events)
            resets = STATE.resets
            cfg = dict(STATE.config)

        if self.verbose:
            sys.stderr.write("receiver: #%d %s %s %d events\n"
                             % (rec["seq"], self.command, self.path, len(events)))

        def finish(outcome, ok=False):
            with STATE.lock:
                # a reset in the meantime forgot this request: do not count it
                if STATE.resets == resets:
                    rec["status"] = outcome
                    key = str(outcome)
                    STATE.answered[key] = STATE.answered.get(key, 0) + 1
                    if ok:
                        STATE.events.extend((parts.path, e) for e in events)

        if cfg.get("down"):
            finish("down")
            self._drop_connection()
            return

        if cfg.get("hang"):
            deadline = time.time() + HANG_LIMIT_S
            while True:
                if self._client_gone():
                    finish("hang")
                    self._drop_connection()
                    return
                if time.time() >= deadline:
                    finish("hang")
                    self._drop_connection()
                    return
                if not STATE.snapshot_config().get("hang"):
                    break
            cfg = STATE.snapshot_config()

        delay = float(cfg.get("delay_ms") or 0) / 1000.0
        if delay > 0:
            time.sleep(delay)

        if cfg.get("close_mid_response"):
            finish("close_mid_response")
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\n"
                                 b"Content-Type: text/plain\r\n"
                                 b"Content-Length: 100\r\n\r\nOK, part")
                self.wfile.flush()
            except OSError:
                pass
            self._drop_connection()
            return

        fail_headers = {}
        if cfg.get("retry_after") is not None:
            fail_headers["Retry-After"] = str(cfg["retry_after"])

        failing = False
        with STATE.lock:
            if STATE.fail_remaining > 0:
                STATE.fail_remaining -= 1
                failing = True
        if failing:
            status = int(cfg.get("fail_status") or 503)
            finish(status)
            self._send_json(status, {"error": "injected failure", "status": status},
                            fail_headers)
            return

        if cfg.get("redirect_to"):
            finish(307)
            self._send(307, "moved", headers={"Location": cfg["redirect_to"]})
            return

        refusal = self._refusal(cfg, raw, events)
        if refusal is not None:
            finish(refusal[0])
            self._send_json(refusal[0], {"error": refusal[1]})
            return

        match = cfg.get("reject_match")
        if match and match in body:
            rstatus = int(cfg.get("reject_status") or 400)
            finish(rstatus)
            self._send_json(rstatus, {"error": "rejected", "match": match})
            return

        status = int(cfg.get("status") or 200)
        if 200 <= status < 300:
            finish(status, ok=True)
            self._send(status, "OK")
        else:
            finish(status)
            answer = {"error": "configured status", "status": status}
            if cfg.get("echo_headers"):
                answer["headers"] = dict(self.headers.items())
            self._send(status, json.dumps(answer), "application/json", fail_headers)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class AnyAddressServer(Server):
    """Listens on [::] with IPV6_V6ONLY off: every local address, IPv4 ones
    included, answers (for tests that put other addresses on lo)."""
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def write_port(path, port):
    """Writes port to path atomically (a reader never sees half a file)."""
    tmp = path + ".tmp.%d" % os.getpid()
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.rename(tmp, path)


def serve_tls(handler, cert, key, port_file):
    """Serves handler over TLS (cert and key: PEM files) on a second port
    of 127.0.0.1, in a thread; the same state answers both ports."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = Server(("127.0.0.1", 0), handler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    write_port(port_file, srv.server_address[1])
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                     daemon=True).start()


def serve(handler, description):
    """Parses --port, --port-file and --verbose, serves handler on
    127.0.0.1 until interrupted.  Shared with test/vendors.py.  Returns
    nothing; the parsed --verbose goes to handler.verbose.  With
    --tls-cert, --tls-key and --tls-port-file it also serves HTTPS."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--port", type=int, default=0, help="port (0: pick a free one)")
    ap.add_argument("--port-file", help="write the chosen port to this file")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    ap.add_argument("--tls-cert", help="PEM certificate of the HTTPS port")
    ap.add_argument("--tls-key", help="PEM private key of the HTTPS port")
    ap.add_argument("--tls-port-file", help="write the HTTPS port to this file")
    ap.add_argument("--any-address", action="store_true",
                    help="listen on every local address, not only 127.0.0.1")
    args = ap.parse_args()
    handler.verbose = args.verbose
    if args.tls_cert:
        serve_tls(handler, args.tls_cert, args.tls_key, args.tls_port_file)
    if args.any_address:
        srv = AnyAddressServer(("::", args.port), handler)
    else:
        srv = Server(("127.0.0.1", args.port), handler)
    port = srv.server_address[1]
    if args.port_file:
        write_port(args.port_file, port)
    sys.stdout.write("PORT %d\n" % port)
    sys.stdout.flush()
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


def main():
    serve(Handler, __doc__.split("\n")[0])


if __name__ == "__main__":
    main()
