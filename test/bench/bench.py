#!/usr/bin/python3
"""retl's benchmark: every case side by side on one cluster, one table.

Run through test/bench/run, which installs what is needed and runs this as
the postgres user.  Cases (issue "Benchmark and speed"):
  limit        COPY t TO '/dev/null': reading alone (the baseline)
  limit json   COPY (SELECT <the mapping as JSON> FROM t) TO '/dev/null'
               (information only: it builds less than retl does)
  script       a Python program: server-side cursor, same events encoded
               once, POSTs of 500 over 8 connections
  retl full    retl_force_full on a webhook sync, call to finished_at
  retl incr    10M-row table, 10,000 rows updated, vs SELECT count(*)
  latency      commit of retl_sync_now to the first request at the sink
  fan-out      50 syncs of 20,000 rows started at once
  diff         a view over t JOIN users with a primary key (content diff,
               read by key pages): first run, unchanged, 1% changed, the
               worker's memory at 100k rows and at the full view, and the
               first-event latency of a fresh view sync
Every case is counted: the sink is reset before it, and the events at the
sink and the run's events_succeeded must be the rows it sends (the
incremental run: kind incremental and exactly the updated rows); the memory
sampler must have found the worker (a peak of 0 is a miss).  A mismatch
makes the benchmark exit 1 after the table.
Sizes can be lowered with RETL_BENCH_ROWS and RETL_BENCH_BIG_ROWS.
"""
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = int(os.environ.get("RETL_BENCH_ROWS", "1000000"))
BIG_ROWS = int(os.environ.get("RETL_BENCH_BIG_ROWS", "10000000"))
SMALL_ROWS = min(100000, ROWS)
FAN_SYNCS, FAN_ROWS = 50, 20000
USERS = 1000                       # rows of the table the view joins
VIEW_SMALL_ROWS = SMALL_ROWS
VIEW_LAT_RUNS = 5
# test/lib/setup.sh's RETL_PG_BIN may name another PostgreSQL 15 installation
PG_BIN = os.environ.get("RETL_PG_BIN") or "/usr/lib/postgresql/15/bin"

COLUMNS = """id bigint PRIMARY KEY, user_id int, email text, amount numeric(12,2),
  qty int, price float8, active boolean, created_at timestamptz, day date,
  tags text[], meta jsonb, note text"""
GENERATE = """SELECT g, g %% 100000, 'user' || g || '@example.com',
  (g %% 10000) / 100.0, g %% 7, g * 0.25, g %% 2 = 0,
  '2024-01-01'::timestamptz + g * interval '1 second', '2024-01-01'::date + g %% 365,
  ARRAY['a', 'b' || g %% 10], jsonb_build_object('k', g %% 13, 'src', 'web'),
  CASE WHEN g %% 5 = 0 THEN NULL ELSE 'note ' || g END
  FROM generate_series(%d, %d) g"""
MAPPING = json.dumps({"userId": "user_id", "event": {"value": "Order Completed"},
                      "properties.revenue": "amount"})
RAW_COPY_SQL = "COPY %s TO '/dev/null'"
LIMIT_JSON_SQL = """COPY (SELECT json_build_object('type', 'track', 'event', 'Order Completed',
  'userId', user_id::text, 'properties', json_strip_nulls(json_build_object(
    'revenue', amount, 'id', id, 'email', email, 'qty', qty, 'price', price,
    'active', active, 'created_at', created_at, 'day', day, 'tags', tags,
    'meta', meta, 'note', note)),
  'context', json_build_object('library', json_build_object('name', 'retl', 'version', '0.2'),
    'sources', json_build_object('job_run_id', 1, 'sync', 'x')),
  'messageId', md5(id::text), 'originalTimestamp', now(), 'sentAt', now(),
  'timestamp', now()) FROM %s) TO '/dev/null'"""


def log(msg):
    """Progress on stderr; the table goes to stdout."""
    print("== " + msg, file=sys.stderr, flush=True)


FAILURES = []


def check(ok, msg):
    """Records a mismatch (a wrong count, detector or read method): the
    benchmark goes on, prints its table, then lists them and exits 1."""
    if not ok:
        FAILURES.append(msg)
        log("MISMATCH: " + msg)
    return ok


class Cluster:
    """A throwaway cluster with retl preloaded and settings for speed."""

    def __init__(self, root):
        self.data = os.path.join(root, "data")
        self.port = free_port()
        log("cluster from %s" % PG_BIN)
        subprocess.run([PG_BIN + "/initdb", "-D", self.data, "-A", "trust",
                        "--no-sync"], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("""port = %d
listen_addresses = '127.0.0.1'
unix_socket_directories = '%s'
shared_preload_libraries = 'retl'
shared_buffers = '2GB'
max_wal_size = '16GB'
fsync = off
synchronous_commit = off
full_page_writes = off
autovacuum = off
max_worker_processes = 16
retl.naptime = '1s'
""" % (self.port, root))
        self.log = os.path.join(root, "server.log")
        subprocess.run([PG_BIN + "/pg_ctl", "-D", self.data, "-l", self.log,
                        "-w", "start"], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.postmaster = int(f.readline())
        self.dsn = "host=127.0.0.1 port=%d dbname=postgres" % self.port
        self.conn = psycopg2.connect(self.dsn)
        self.conn.autocommit = True

    def sql(self, query, *args):
        """Runs a statement; returns all rows (or None)."""
        with self.conn.cursor() as cur:
            cur.execute(query, args or None)
            return cur.fetchall() if cur.description else None

    def one(self, query, *args):
        return self.sql(query, *args)[0][0]

    def stop(self):
        self.conn.close()
        subprocess.run([PG_BIN + "/pg_ctl", "-D", self.data, "-m", "fast",
                        "-w", "stop"], stdout=subprocess.DEVNULL)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Sink:
    """The fast local sink (sink.py) in a subprocess."""

    def __init__(self, root):
        port_file = os.path.join(root, "sink.port")
        self.proc = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "sink.py"),
                                      "--port-file", port_file],
                                     stdout=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(port_file) and open(port_file).read():
                break
            time.sleep(0.05)
        self.url = "http://127.0.0.1:%s" % open(port_file).read()

    def call(self, path, post=False):
        req = urllib.request.Request(self.url + path, data=b"" if post else None)
        return json.load(urllib.request.urlopen(req))

    def cpu(self):
        """[the sink's user + system CPU ticks], for diagnostics."""
        f = open("/proc/%d/stat" % self.proc.pid).read().rsplit(")", 1)[1].split()
        return [int(f[11]) + int(f[12])]

    def stop(self):
        self.proc.terminate()


def retl_workers(postmaster):
    """The pids of the retl workers of one cluster (children of its postmaster):
    other clusters on the machine (other people's tests) run retl workers too."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if not f.read().startswith(b"postgres: retl worker"):
                    continue
            with open("/proc/%s/stat" % pid) as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) != postmaster:
                    continue
        except (OSError, ValueError, IndexError):
            continue
        pids.append(pid)
    return pids


class RssSampler(threading.Thread):
    """Samples the private memory (RssAnon) of the cluster's retl workers every 50 ms."""

    def __init__(self, postmaster):
        super().__init__(daemon=True)
        self.postmaster = postmaster
        self.peak = 0
        self.running = True
        self.start()

    def run(self):
        while self.running:
            for pid in retl_workers(self.postmaster):
                try:
                    with open("/proc/%s/status" % pid) as f:
                        for line in f:
                            if line.startswith("RssAnon:"):
                                self.peak = max(self.peak, int(line.split()[1]))
                except OSError:
                    pass
            time.sleep(0.05)

    def take(self):
        """Returns the peak in MB since the last take, and resets it."""
        peak, self.peak = self.peak, 0
        return peak / 1024.0


def make_table(pg, name, rows):
    """Creates and fills a table of the 12 benchmark columns."""
    log("creating %s (%d rows)" % (name, rows))
    pg.sql("CREATE TABLE %s (%s)" % (name, COLUMNS))
    step = 1000000
    for lo in range(1, rows + 1, step):
        pg.sql("INSERT INTO %s %s" % (name, GENERATE % (lo, min(rows, lo + step - 1))))
    pg.sql("VACUUM ANALYZE %s" % name)


def timed(fn):
    t0 = time.time()
    fn()
    return time.time() - t0


def wait_run(pg, run_id, timeout=3600, ok=("succeeded",)):
    """Waits for a run to end; returns (seconds from request to finish, row)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        row = pg.sql("SELECT status, extract(epoch FROM finished_at - requested_at),"
                     " events_sent, error FROM retl.runs WHERE id = %s", run_id)[0]
        if row[0] in ("succeeded", "failed", "stopped"):
            if row[0] not in ok:
                raise RuntimeError("run %s ended %s: %s" % (run_id, row[0], row[3]))
            return float(row[1]), row
        time.sleep(0.02)
    raise RuntimeError("run %s did not finish" % run_id)


def retl_full(pg, sink, sync, rows):
    """A full run (retl_force_full), counted at the sink and in retl.runs."""
    return counted_run(pg, sink, sync, "full", rows, call="retl_force_full")


def create_sync(pg, name, table, sink_url, batch=500, inflight=8):
    pg.sql("SELECT retl_create_destination(%s, 'webhook', %s)", "d_" + name,
           json.dumps({"url": sink_url + "/" + name, "batch_size": batch,
                       "max_in_flight": inflight}))
    pg.sql("SELECT retl_create_sync(%s, %s, %s, 'track', %s, primary_key => 'id')",
           name, table, "d_" + name, MAPPING)


def case_latency(pg, sink):
    """Median time from the commit of retl_sync_now to the first request."""
    pg.sql("CREATE TABLE t10 AS SELECT * FROM t WHERE id <= 10")
    create_sync(pg, "lat", "t10", sink.url)
    wait_run(pg, pg.one("SELECT retl_sync_now('lat')"))
    sink.call("/_reset", post=True)
    samples = []
    for _ in range(20):
        pg.sql("UPDATE t10 SET qty = qty + 1")
        sink.call("/_mark", post=True)
        t0 = time.time()
        run = pg.one("SELECT retl_sync_now('lat')")
        while sink.call("/_stats")["first"] is None:
            time.sleep(0.001)
        samples.append(sink.call("/_stats")["first"] - t0)
        wait_run(pg, run)
    at_sink = sink.call("/_stats")["events"]
    check(at_sink == 20 * 10, "latency: the sink received %d events, expected 200"
          " (20 runs of 10 updated rows)" % at_sink)
    return statistics.median(samples)


def worker_stat(pg):
    """(utime, stime, minflt) of the cluster's retl workers, for diagnostics."""
    tot = [0, 0, 0]
    for pid in retl_workers(pg.postmaster):
        try:
            f = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
            tot[0] += int(f[11]); tot[1] += int(f[12]); tot[2] += int(f[7])
        except OSError:
            pass
    return tot


def case_fanout(pg, sink):
    """50 syncs of 20,000 rows started in one transaction."""
    pg.sql("CREATE TABLE t20k AS SELECT * FROM t WHERE id <= %s", FAN_ROWS)
    pg.sql("VACUUM ANALYZE t20k")
    for i in range(FAN_SYNCS):
        create_sync(pg, "fan%d" % i, "t20k", sink.url, inflight=4)
    sink.call("/_reset", post=True)
    pg.conn.autocommit = False
    before = worker_stat(pg)
    ids = [pg.one("SELECT retl_sync_now(%s)", "fan%d" % i) for i in range(FAN_SYNCS)]
    pg.conn.commit()
    pg.conn.autocommit = True
    for run in ids:
        wait_run(pg, run)
    after = worker_stat(pg)
    total = FAN_SYNCS * pg.one("SELECT count(*) FROM t20k")
    succeeded = pg.one("SELECT sum(events_succeeded) FROM retl.runs WHERE id = ANY(%s)", ids)
    at_sink = sink.call("/_stats")["events"]
    check(succeeded == total and at_sink == total,
          "fan-out: events_succeeded %s, the sink received %d, expected %d"
          % (succeeded, at_sink, total))
    log("fan-out worker: utime %d, stime %d ticks, %d minor faults" %
        tuple(a - b for a, b in zip(after, before)))
    log("fan-out: first start %.3f s, last start %.3f s, first end %.3f s, last end %.3f s" %
        tuple(float(x) for x in pg.sql(
            "SELECT extract(epoch FROM min(started_at) - min(requested_at)),"
            " extract(epoch FROM max(started_at) - min(requested_at)),"
            " extract(epoch FROM min(finished_at) - min(requested_at)),"
            " extract(epoch FROM max(finished_at) - min(requested_at))"
            " FROM retl.runs WHERE id = ANY(%s)", ids)[0]))
    return float(pg.one("SELECT extract(epoch FROM max(finished_at) - min(requested_at))"
                        " FROM retl.runs WHERE id = ANY(%s)", ids))


def make_view(pg):
    """users (USERS rows, key id), t_vsmall (the first VIEW_SMALL_ROWS rows
    of t, with its primary key) and the views v (t JOIN users: every row of t
    once) and v_small (t_vsmall JOIN users).  users.id is the join's primary
    key, so the page query of a view, "WHERE id > $1 ORDER BY id LIMIT n", is
    a nested loop of index scans that streams: read method keys.  (A view
    "v WHERE id <= 100000" would not do: the generic plan estimates the range
    "id > $1 AND id <= 100000" at 0.5% of t, and hashes the join.)"""
    log("creating users (%d rows), t_vsmall (%d rows) and the views v, v_small"
        % (USERS, VIEW_SMALL_ROWS))
    pg.sql("CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL)")
    pg.sql("INSERT INTO users SELECT g, 'name ' || g FROM generate_series(0, %s) g",
           USERS - 1)
    pg.sql("CREATE TABLE t_vsmall (LIKE t INCLUDING ALL)")
    pg.sql("INSERT INTO t_vsmall SELECT * FROM t WHERE id <= %s", VIEW_SMALL_ROWS)
    pg.sql("VACUUM ANALYZE users, t_vsmall, t")
    for view, table in (("v", "t"), ("v_small", "t_vsmall")):
        pg.sql("CREATE VIEW %s AS SELECT t.*, u.name FROM %s t JOIN users u"
               " ON u.id = t.user_id %% %d" % (view, table, USERS))
    n = pg.one("SELECT count(*) FROM v")
    check(n == ROWS, "view v has %d rows, expected %d (one per row of t)" % (n, ROWS))
    try:
        pg.sql("CREATE EXTENSION pg_prewarm")
    except psycopg2.Error as e:
        log("no pg_prewarm (%s): t may be read from the OS cache" % str(e).strip())
        return
    # the big table's scans went through shared buffers since t was created
    pg.sql("SELECT pg_prewarm(c) FROM unnest(ARRAY['t', 't_vsmall', 'users']::regclass[]) r,"
           " LATERAL (SELECT r UNION ALL SELECT indexrelid::regclass FROM pg_index"
           " WHERE indrelid = r) c(c)")


def view_plan(pg, view):
    """The generic plan of a view's key page, the one retl checks for
    read_method keys (it must stream: no hash, sort or sequential scan)."""
    pg.sql("PREPARE retl_bench_page(bigint) AS SELECT * FROM %s WHERE true"
           " AND id > $1 ORDER BY id LIMIT 500" % view)
    try:
        pg.sql("SET plan_cache_mode = force_generic_plan")
        return "\n".join(r[0] for r in pg.sql("EXPLAIN EXECUTE retl_bench_page(0)"))
    finally:
        pg.sql("RESET plan_cache_mode")
        pg.sql("DEALLOCATE retl_bench_page")


def check_diff_sync(pg, sync, view):
    """A view sync with a primary key must be a diff sync read by keys."""
    det, method = pg.sql("SELECT detector, read_method FROM retl.sync_status"
                         " WHERE sync = %s", sync)[0]
    if not check(det == "diff" and method == "keys",
                 "sync %s on view %s: detector %s, read_method %s; expected diff and keys"
                 % (sync, view, det, method)):
        log("plan of the key page of %s:\n%s" % (view, view_plan(pg, view)))


def counted_run(pg, sink, sync, kind, expected, call="retl_sync_now"):
    """Runs a sync (retl_sync_now, or call), its events counted at the sink
    (reset first); checks the run's kind, events_sent, events_succeeded and
    the sink's count against expected.  Returns the seconds from request to
    finish."""
    sink.call("/_reset", post=True)
    before = worker_stat(pg) + sink.cpu()
    run = pg.one("SELECT %s(%%s)" % call, sync)
    secs, _ = wait_run(pg, run)
    after = worker_stat(pg) + sink.cpu()
    got_kind, sent, succeeded, failed = pg.sql(
        "SELECT kind, events_sent, events_succeeded, events_failed FROM retl.runs"
        " WHERE id = %s", run)[0]
    at_sink = sink.call("/_stats")["events"]
    what = "sync %s, run %d" % (sync, run)
    check(got_kind == kind, "%s: retl.runs.kind is %s, expected %s" % (what, got_kind, kind))
    check(succeeded == expected and sent == expected and failed == 0,
          "%s: events_succeeded %d (events_sent %d, events_failed %d), expected %d"
          % (what, succeeded, sent, failed, expected))
    check(at_sink == expected, "%s: the sink received %d events, expected %d"
          % (what, at_sink, expected))
    log("%s: %s, %d events in %.3f s (CPU ticks: worker %d user %d system,"
        " sink %d)" % (what, got_kind, at_sink, secs, after[0] - before[0],
                       after[1] - before[1], after[3] - before[3]))
    return secs


def wait_no_worker(pg, timeout=150):
    """Waits until the cluster has no retl worker (an idle one exits after a
    minute), so that the next peak is a fresh worker's, as for retl full
    (100k): the worker's heap keeps what earlier cases grew it to."""
    log("waiting for the idle retl worker to exit")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not retl_workers(pg.postmaster):
            return
        time.sleep(0.5)
    log("the retl worker did not exit: the diff peaks include earlier cases' memory")


def case_view_latency(pg, sink):
    """Median time from the commit of retl_sync_now to the first request of a
    fresh diff sync on v (its first run is full and reads by keys: the first
    page leaves at once); each run is stopped after its first request and
    waited for before the next."""
    pg.sql("SELECT retl_create_destination('d_vlat', 'webhook', %s)",
           json.dumps({"url": sink.url + "/vlat", "batch_size": 500, "max_in_flight": 8}))
    samples = []
    for i in range(VIEW_LAT_RUNS):
        sync = "vlat%d" % i
        pg.sql("SELECT retl_create_sync(%s, 'v', 'd_vlat', 'track', %s, primary_key => 'id')",
               sync, MAPPING)
        sink.call("/_mark", post=True)
        t0 = time.time()
        run = pg.one("SELECT retl_sync_now(%s)", sync)
        first = None
        while first is None:
            if time.time() > t0 + 120:
                raise RuntimeError("view latency: no request of run %d after 120 s" % run)
            time.sleep(0.001)
            first = sink.call("/_stats")["first"]
        samples.append(first - t0)
        pg.sql("SELECT retl_stop(%s)", sync)
        wait_run(pg, run, ok=("stopped", "succeeded"))
        method, started = pg.sql("SELECT read_method, extract(epoch FROM started_at)"
                                 " FROM retl.runs WHERE id = %s", run)[0]
        check(method == "keys", "view latency: run %d of %s read by %s, expected keys"
              % (run, sync, method))
        log("view latency: %.1f ms to the run's start, %.1f ms from there to the first"
            " request" % ((float(started) - t0) * 1000, (first - float(started)) * 1000))
    log("view latency samples (ms): %s" % " ".join("%.1f" % (x * 1000) for x in samples))
    return statistics.median(samples)


def cases_diff(pg, sink, rss, results, m):
    """The content-diff cases on the views v and v_small."""
    make_view(pg)
    wait_no_worker(pg)
    create_sync(pg, "diff_small", "v_small", sink.url)
    create_sync(pg, "diff", "v", sink.url)

    log("diff first run (100k)")
    rss.take()
    secs = counted_run(pg, sink, "diff_small", "full", VIEW_SMALL_ROWS)
    m["rss_diff_small"] = rss.take()
    check_diff_sync(pg, "diff_small", "v_small")
    results.append(("diff first run (100k)", VIEW_SMALL_ROWS, secs, m["rss_diff_small"]))

    log("diff first run")
    m["diff_first"] = counted_run(pg, sink, "diff", "full", ROWS)
    m["rss_diff"] = rss.take()
    check_diff_sync(pg, "diff", "v")
    check(m["rss_diff_small"] > 0 and m["rss_diff"] > 0,
          "the memory sampler found no retl worker of this cluster during the diff first"
          " runs (peaks %.1f and %.1f MB)" % (m["rss_diff_small"], m["rss_diff"]))
    results.append(("diff first run", ROWS, m["diff_first"], m["rss_diff"]))

    log("diff unchanged")
    m["diff_unchanged"] = counted_run(pg, sink, "diff", "incremental", 0)
    results.append(("diff unchanged", 0, m["diff_unchanged"], rss.take()))

    log("diff 1% changed")
    changed = pg.one("WITH u AS (UPDATE t SET qty = qty + 1 WHERE id % 100 = 0"
                     " RETURNING 1) SELECT count(*) FROM u")
    check(changed == ROWS // 100, "updated %d rows of t, expected %d" % (changed, ROWS // 100))
    pg.sql("VACUUM t")
    m["diff_changed"] = counted_run(pg, sink, "diff", "incremental", changed)
    results.append(("diff 1% changed", changed, m["diff_changed"], rss.take()))

    log("view first event latency")
    m["view_latency"] = case_view_latency(pg, sink)
    results.append(("view latency (median %d)" % VIEW_LAT_RUNS, ROWS, m["view_latency"], None))


def main():
    root = os.environ.get("RETL_BENCH_DIR") or os.getcwd()
    pg = Cluster(root)
    sink = Sink(root)
    rss = RssSampler(pg.postmaster)
    results = []
    m = {}
    try:
        pg.sql("CREATE EXTENSION retl")
        make_table(pg, "t", ROWS)
        pg.sql("CREATE TABLE t_small AS SELECT * FROM t WHERE id <= %s", SMALL_ROWS)

        log("limit (raw COPY)")
        limit = min(timed(lambda: pg.sql(RAW_COPY_SQL % "t")) for _ in range(2))
        results.append(("limit (raw COPY)", ROWS, limit, None))
        log("limit json")
        limit_json = min(timed(lambda: pg.sql(LIMIT_JSON_SQL % "t")) for _ in range(2))
        results.append(("limit json (info)", ROWS, limit_json, None))

        log("script (8 connections)")
        sink.call("/_reset", post=True)
        out = []
        script = timed(lambda: out.append(subprocess.run(
            ["/usr/bin/python3", os.path.join(HERE, "script.py"), "--dsn", pg.dsn,
             "--table", "t", "--url", sink.url + "/script"], check=True,
            stdout=subprocess.PIPE).stdout))
        at_sink = sink.call("/_stats")["events"]
        check(int(out[0]) == ROWS and at_sink == ROWS,
              "script: sent %s events, the sink received %d, expected %d"
              % (out[0].strip().decode(), at_sink, ROWS))
        results.append(("script (8 connections)", ROWS, script, None))

        log("retl full")
        create_sync(pg, "full", "t", sink.url)
        create_sync(pg, "small", "t_small", sink.url)
        secs_small = retl_full(pg, sink, "small", SMALL_ROWS)
        rss_small = rss.take()
        rss.take()
        full = retl_full(pg, sink, "full", ROWS)
        rss_full = rss.take()
        results.append(("retl full (100k)", SMALL_ROWS, secs_small, rss_small))
        results.append(("retl full", ROWS, full, rss_full))

        make_table(pg, "big", BIG_ROWS)
        create_sync(pg, "big", "big", sink.url)
        log("retl full of the big table")
        big_full = retl_full(pg, sink, "big", BIG_ROWS)
        rss_big = rss.take()
        check(rss_small > 0 and rss_full > 0 and rss_big > 0,
              "the memory sampler found no retl worker of this cluster during a full run"
              " (peaks %.1f, %.1f and %.1f MB)" % (rss_small, rss_full, rss_big))
        results.append(("retl full (big)", BIG_ROWS, big_full, rss_big))
        log("retl incremental")
        changed = pg.one("WITH u AS (UPDATE big SET qty = qty + 1 WHERE id %% %s = 0"
                         " RETURNING 1) SELECT count(*) FROM u", max(BIG_ROWS // 10000, 1))
        pg.sql("VACUUM big")
        count = min(timed(lambda: pg.sql("SELECT count(*) FROM big")) for _ in range(2))
        inc = counted_run(pg, sink, "big", "incremental", changed)
        results.append(("count(*) big", BIG_ROWS, count, None))
        results.append(("retl incremental", changed, inc, rss.take()))

        log("first event latency")
        latency = case_latency(pg, sink)
        results.append(("latency (median of 20)", 10, latency, None))
        log("fan-out")
        fan = case_fanout(pg, sink)
        results.append(("fan-out 50 x 20k", FAN_SYNCS * min(FAN_ROWS, ROWS), fan, rss.take()))

        # last: they wait for the worker to exit, and update t
        cases_diff(pg, sink, rss, results, m)
    finally:
        rss.running = False
        sink.stop()
        pg.stop()

    m.update(limit_json=limit_json, rss_sampled=rss_small > 0 and rss_big > 0)
    print_table(results, limit, script, full, count, inc, rss_small, rss_big,
                latency, fan, m)
    if FAILURES:
        print()
        for msg in FAILURES:
            print("FAILED: " + msg)
        log("%d mismatch(es): the counts above are not what the cases expect" % len(FAILURES))
        sys.exit(1)


def print_table(results, limit, script, full, count, inc, rss_small, rss_big,
                latency, fan, m):
    """Prints the results and the target ratios."""
    print("%-24s %10s %9s %12s %10s" % ("case", "rows", "seconds", "events/s", "peak MB"))
    for name, rows, secs, mb in results:
        rate = "-" if "latency" in name else "%.0f" % (rows / secs if secs else 0)
        print("%-24s %10d %9.3f %12s %10s" % (name, rows, secs, rate,
                                             "%.1f" % mb if mb is not None else "-"))
    diff_growth = m["rss_diff"] - m["rss_diff_small"]
    diff_sampled = m["rss_diff"] > 0 and m["rss_diff_small"] > 0
    checks = [
        ("retl full / raw COPY speed", limit / full, ">= 0.4", limit / full >= 0.4),
        ("retl full / JSON COPY speed (info)", m["limit_json"] / full, "-", True),
        ("retl full / script (8 conn) speed", script / full, ">= 2", script / full >= 2),
        ("retl incremental / count(*) time", inc / count, "<= 1.5", inc / count <= 1.5),
        # a peak of 0 means the sampler missed the worker: not met
        ("worker RSS growth 100k -> big (MB)", rss_big - rss_small, "< 32",
         m["rss_sampled"] and rss_big - rss_small < 32),
        ("first event latency (ms)", latency * 1000, "< 50", latency < 0.05),
        ("fan-out / retl full time", fan / full, "<= 1.5", fan / full <= 1.5),
        ("diff first run / retl full time", m["diff_first"] / full, "<= 2",
         m["diff_first"] / full <= 2),
        ("diff unchanged / retl full time", m["diff_unchanged"] / full, "<= 1",
         m["diff_unchanged"] / full <= 1),
        ("diff 1% changed / retl full time", m["diff_changed"] / full, "<= 1.2",
         m["diff_changed"] / full <= 1.2),
        # a peak of 0 means the sampler missed the worker: not met
        ("diff worker RSS 100k -> view (MB)", diff_growth, "< 32",
         diff_sampled and diff_growth < 32),
        ("view first event latency (ms)", m["view_latency"] * 1000, "< 100",
         m["view_latency"] < 0.1),
    ]
    print()
    print("%-36s %10s %8s %s" % ("ratio", "value", "target", "met"))
    for name, value, target, ok in checks:
        print("%-36s %10.2f %8s %s" % (name, value, target, "yes" if ok else "NO"))


if __name__ == "__main__":
    main()
