"""A fast HTTP sink for the benchmark: answers every POST with 200 at once.

It parses just enough HTTP/1.1 (keep-alive, Content-Length) to count
requests, bytes and events (occurrences of '"messageId"'), and records the
arrival time of the first delivery after each POST /_mark, so the benchmark
can measure first-event latency.  GET /_stats returns the counters as JSON.
Only 127.0.0.1.

The sink shares the machine with the worker it measures, so it must cost
little per byte: each connection receives straight into one buffer of its
own (asyncio.BufferedProtocol: no copy per read, reads as large as the
buffer), counts the events of a body where it lies, and writes each answer
in one write (asyncio turns Nagle off).  An earlier version, on asyncio
streams, copied every body twice and took as much CPU as the worker.
"""
import argparse
import asyncio
import json
import time

STATE = {"requests": 0, "bytes": 0, "events": 0, "mark": None, "first": None}
HEAD_MAX = 64 * 1024


def control(path):
    """Handles /_ endpoints; returns the JSON body."""
    if path == "/_reset":
        STATE.update(requests=0, bytes=0, events=0, mark=None, first=None)
    elif path == "/_mark":
        STATE["mark"] = time.time()
        STATE["first"] = None
    return json.dumps(STATE).encode()


def answer(body):
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


class Conn(asyncio.BufferedProtocol):
    """One keep-alive connection: requests one after the other."""

    def __init__(self):
        self.buf = bytearray(1 << 20)
        self.used = 0
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        if len(self.buf) - self.used < 65536:
            self.buf.extend(bytes(len(self.buf)))
        return memoryview(self.buf)[self.used:]

    def buffer_updated(self, nbytes):
        self.used += nbytes
        try:
            while self.serve_one():
                pass
        except (ValueError, IndexError):
            self.transport.close()

    def serve_one(self):
        """Answers the request at the start of the buffer if it is whole;
        returns whether one was answered."""
        head_end = self.buf.find(b"\r\n\r\n", 0, min(self.used, HEAD_MAX))
        if head_end < 0:
            if self.used >= HEAD_MAX:
                raise ValueError("header too long")
            return False
        lines = bytes(self.buf[:head_end]).decode("latin-1").split("\r\n")
        _, path, _ = lines[0].split(" ", 2)
        length = 0
        for h in lines[1:]:
            name, _, value = h.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        start = head_end + 4
        end = start + length
        if self.used < end:
            if len(self.buf) < end:
                self.buf.extend(bytes(end - len(self.buf)))
            return False
        if path.startswith("/_"):
            out = control(path)
        else:
            if STATE["mark"] is not None and STATE["first"] is None:
                STATE["first"] = time.time()
            STATE["requests"] += 1
            STATE["bytes"] += length
            STATE["events"] += self.buf.count(b'"messageId"', start, end)
            out = b"OK"
        self.transport.write(answer(out))
        rest = self.used - end
        if rest:
            self.buf[:rest] = self.buf[end:self.used]
        self.used = rest
        return rest > 0


async def main():
    """Listens on 127.0.0.1 and writes the port to --port-file."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    args = ap.parse_args()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, "127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        with open(args.port_file, "w") as f:
            f.write(str(port))
    print("PORT %d" % port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
