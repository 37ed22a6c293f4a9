#!/usr/bin/python3
"""A fast HTTP sink for the benchmark: answers every POST with 200 at once.

It parses just enough HTTP/1.1 (keep-alive, Content-Length) to count
requests, bytes and events (occurrences of '"messageId"'), and records the
arrival time of the first delivery after each POST /_mark, so the benchmark
can measure first-event latency.  GET /_stats returns the counters as JSON.
Only 127.0.0.1.
"""
import argparse
import asyncio
import json
import time

STATE = {"requests": 0, "bytes": 0, "events": 0, "mark": None, "first": None}


def control(method, path):
    """Handles /_ endpoints; returns the JSON body."""
    if path == "/_reset":
        STATE.update(requests=0, bytes=0, events=0, mark=None, first=None)
    elif path == "/_mark":
        STATE["mark"] = time.time()
        STATE["first"] = None
    return json.dumps(STATE).encode()


async def handle(reader, writer):
    """Serves one keep-alive connection."""
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
                out = control(method, path)
            else:
                now = time.time()
                if STATE["mark"] is not None and STATE["first"] is None:
                    STATE["first"] = now
                STATE["requests"] += 1
                STATE["bytes"] += len(body)
                STATE["events"] += body.count(b'"messageId"')
                out = b"OK"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(out), out))
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
