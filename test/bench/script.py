#!/usr/bin/python3
"""The benchmark's "script" case: what a user would write without retl.

Reads the table through a server-side cursor (psycopg2), builds the same
track events as retl's mapping in Python, and POSTs them as JSON arrays of
500 over one keep-alive connection (http.client).  Prints the events sent.
"""
import argparse
import datetime
import decimal
import hashlib
import http.client
import json
import urllib.parse

import psycopg2


def default(o):
    """JSON for the types psycopg2 returns that json does not know."""
    if isinstance(o, datetime.datetime):
        return o.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if isinstance(o, datetime.date):
        return o.isoformat()
    if isinstance(o, decimal.Decimal):
        return float(o)
    raise TypeError(type(o))


def main():
    """Reads, builds and posts every row of the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--url", required=True)
    args = ap.parse_args()
    url = urllib.parse.urlparse(args.url)
    conn = http.client.HTTPConnection(url.hostname, url.port)
    db = psycopg2.connect(args.dsn)
    cur = db.cursor(name="bench")
    cur.itersize = 5000
    cur.execute("SELECT * FROM %s" % args.table)
    cols = None
    batch, sent = [], 0
    now = datetime.datetime.now(datetime.timezone.utc)
    for row in cur:
        if cols is None:
            cols = [d[0] for d in cur.description]
        props = {c: v for c, v in zip(cols, row) if v is not None}
        content = json.dumps(props, default=default, sort_keys=True)
        batch.append({
            "type": "track", "event": "Order Completed",
            "userId": str(props.get("user_id")),
            "properties": props,
            "context": {"library": {"name": "script", "version": "1"}},
            "messageId": hashlib.md5(content.encode()).hexdigest(),
            "originalTimestamp": now, "sentAt": now, "timestamp": now,
        })
        if len(batch) == 500:
            sent += post(conn, url.path, batch)
            batch = []
    if batch:
        sent += post(conn, url.path, batch)
    print(sent)


def post(conn, path, batch):
    """POSTs one batch and checks the answer."""
    body = json.dumps(batch, default=default).encode()
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise RuntimeError("sink answered %d" % resp.status)
    return len(batch)


if __name__ == "__main__":
    main()
