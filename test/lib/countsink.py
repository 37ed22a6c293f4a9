#!/usr/bin/python3
"""A fast counting HTTP sink for retl's high-throughput tests (106-108).

Python 3 standard library only; 127.0.0.1 only; HTTP/1.1 keep-alive,
TCP_NODELAY.  Unlike test/receiver.py it keeps no events: it counts each
messageId it acknowledged, per run (context.sources.job_run_id), so that a
test can check "every row once, plus at most N copies" over 200,000 rows.

    /usr/bin/python3 test/lib/countsink.py --port 0 --port-file FILE

Deliveries: any POST to a path not starting with "/_".  Events are found
by the pattern "messageId":"..." and "job_run_id":N, in the order they
appear in the body (one of each per event).

Control endpoints
    GET  /_ids                {run: {messageId: [copies, properties.id]}}
    GET  /_stats[?run_id=N]  {"requests", "events", "distinct",
                              "duplicates", "max_copies", "answered"}:
                              events acknowledged 2xx (of that run)
    POST /_reset              forget counts and configuration
    POST /_config             merge a JSON object into the configuration:
        delays_ms   list of delays, used in turn, one per delivery (the
                    1st delivery waits delays_ms[0], the 2nd delays_ms[1]
                    ...), so that answers arrive out of order
        status      answer status (default 200)
        down        close each delivery's connection without answering
"""
import argparse
import asyncio
import json
import re
import socket

MSG = re.compile(rb'"messageId":\s*"([^"]*)"')
RUN = re.compile(rb'"job_run_id":\s*(\d+)')
ROWID = re.compile(rb'[{,]"id":\s*(\d+)')


class State:
    """Counters and the fault configuration."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.config = {"status": 200}
        self.requests = 0
        self.answered = {}
        self.counts = {}        # run id (bytes) -> {messageId: copies}
        self.turn = 0
        self.rowids = {}        # messageId -> properties.id (bytes), if any

    def stats(self, run_id):
        runs = [run_id.encode()] if run_id else list(self.counts)
        total = {}
        for r in runs:
            for mid, n in self.counts.get(r, {}).items():
                total[mid] = total.get(mid, 0) + n
        events = sum(total.values())
        distinct = len(total)
        max_copies = max(total.values(), default=0)
        return {"requests": self.requests, "events": events,
                "distinct": distinct, "duplicates": events - distinct,
                "max_copies": max_copies, "answered": self.answered}


STATE = State()


def control(method, path, body):
    """Handles /_ endpoints; returns the JSON answer."""
    base, _, query = path.partition("?")
    if base == "/_reset":
        STATE.reset()
    elif base == "/_config" and method == "POST":
        STATE.config.update(json.loads(body or b"{}"))
        return STATE.config
    elif base == "/_stats":
        q = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        return STATE.stats(q.get("run_id"))
    elif base == "/_ids":
        # properties.id of each messageId and its copies, for diagnostics
        return {r.decode(): {m.decode(): [n, STATE.rowids.get(m)]
                             for m, n in c.items()}
                for r, c in STATE.counts.items()}
    return {"ok": True}


def count(body):
    """Counts the events of an acknowledged delivery."""
    mids = MSG.findall(body)
    rowids = ROWID.findall(body)
    for mid, run in zip(mids, RUN.findall(body)):
        c = STATE.counts.setdefault(run, {})
        c[mid] = c.get(mid, 0) + 1
    if len(rowids) == len(mids):
        for mid, rowid in zip(mids, rowids):
            STATE.rowids[mid] = rowid.decode()


async def deliver(body):
    """Answers one delivery: returns the status, or None to hang up."""
    cfg = STATE.config
    STATE.requests += 1
    delays = cfg.get("delays_ms") or []
    turn = STATE.turn
    STATE.turn += 1
    if cfg.get("down"):
        STATE.answered["down"] = STATE.answered.get("down", 0) + 1
        return None
    if delays:
        await asyncio.sleep(delays[turn % len(delays)] / 1000.0)
    status = int(cfg.get("status") or 200)
    STATE.answered[str(status)] = STATE.answered.get(str(status), 0) + 1
    if 200 <= status < 300:
        count(body)
    return status


async def handle(reader, writer):
    """Serves one keep-alive connection."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            method, path, _ = line.decode("latin-1").split(" ", 2)
            length = 0
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            if path.startswith("/_"):
                out = json.dumps(control(method, path, body)).encode()
                status = 200
            else:
                status = await deliver(body)
                if status is None:
                    break
                out = b"OK" if status < 300 else b'{"error":"configured status"}'
            writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (status, len(out), out))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main():
    """Listens on 127.0.0.1 and writes the port to --port-file."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    args = ap.parse_args()
    server = await asyncio.start_server(handle, "127.0.0.1", args.port,
                                        limit=1 << 24)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        with open(args.port_file, "w") as f:
            f.write(str(port))
    print("PORT %d" % port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
