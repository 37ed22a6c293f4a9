#!/usr/bin/python3
"""The benchmark's "script" case: what a user would write without retl.

Reads the table through a server-side cursor (psycopg2), builds the same
track events as retl's mapping in Python, each encoded to JSON once (its
properties' JSON is both hashed for the messageId and spliced into the
event), and POSTs them as JSON arrays of 500 over 8 keep-alive connections
(http.client, one per sender thread), as retl keeps 8 requests in flight.
Prints the events sent.
"""
import argparse
import datetime
import decimal
import hashlib
import http.client
import json
import queue
import threading
import urllib.parse

import psycopg2

CONNECTIONS = 8
BATCH = 500


def default(o):
    """JSON for the types psycopg2 returns that json does not know."""
    if isinstance(o, datetime.datetime):
        return o.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if isinstance(o, datetime.date):
        return o.isoformat()
    if isinstance(o, decimal.Decimal):
        return float(o)
    raise TypeError(type(o))


def sender(url, bodies, sent, errors):
    """One connection: POSTs the bodies of the queue until it gets None."""
    conn = http.client.HTTPConnection(url.hostname, url.port)
    while True:
        item = bodies.get()
        if item is None:
            return
        body, n = item
        try:
            conn.request("POST", url.path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError("sink answered %d" % resp.status)
            with sent[1]:
                sent[0] += n
        except Exception as e:  # reported by main, after the threads end
            errors.append(e)


def main():
    """Reads and builds every row of the table; the senders post them."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--url", required=True)
    args = ap.parse_args()
    url = urllib.parse.urlparse(args.url)
    bodies = queue.Queue(maxsize=2 * CONNECTIONS)
    sent = [0, threading.Lock()]
    errors = []
    threads = [threading.Thread(target=sender, args=(url, bodies, sent, errors))
               for _ in range(CONNECTIONS)]
    for t in threads:
        t.start()
    db = psycopg2.connect(args.dsn)
    cur = db.cursor(name="bench")
    cur.itersize = 5000
    cur.execute("SELECT * FROM %s" % args.table)
    cols = None
    batch = []
    now = json.dumps(default(datetime.datetime.now(datetime.timezone.utc)))
    head = '{"type":"track","event":"Order Completed","userId":'
    tail = (',"context":{"library":{"name":"script","version":"1"}},'
            '"originalTimestamp":%s,"sentAt":%s,"timestamp":%s}' % (now, now, now))
    for row in cur:
        if cols is None:
            cols = [d[0] for d in cur.description]
        props = {c: v for c, v in zip(cols, row) if v is not None}
        content = json.dumps(props, default=default, sort_keys=True)
        batch.append('%s%s,"properties":%s,"messageId":"%s"%s'
                     % (head, json.dumps(str(props.get("user_id"))), content,
                        hashlib.md5(content.encode()).hexdigest(), tail))
        if len(batch) == BATCH:
            bodies.put((("[" + ",".join(batch) + "]").encode(), len(batch)))
            batch = []
    if batch:
        bodies.put((("[" + ",".join(batch) + "]").encode(), len(batch)))
    for _ in threads:
        bodies.put(None)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    print(sent[0])


if __name__ == "__main__":
    main()
