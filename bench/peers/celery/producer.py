"""The Celery peer's producer: sends BENCH_JOBS tasks one at a time
(apply_async) from BENCH_PRODUCERS threads, then prints
{"jobs": n, "ms": elapsed, "t0_ms": start since the epoch, "sent_ms": each
task's send since the epoch, at a fixed rate} on one line. Task i asks for
a place of its own, so every task misses the cache. With BENCH_RATE > 0,
task i is sent when due: i / rate seconds after the start (sleeps wake
late, so latency counts from sent_ms)."""

import json
import os
import threading
import time

import tasks

tasks.setup_tracing("celery-producer")
jobs = int(os.environ["BENCH_JOBS"])
producers = int(os.environ.get("BENCH_PRODUCERS", "32"))
offset = int(os.environ.get("BENCH_OFFSET", "0"))
rate = float(os.environ.get("BENCH_RATE", "0"))
lock = threading.Lock()
counter = iter(range(jobs))
sent = [0.0] * jobs if rate > 0 else []


def produce():
    while True:
        with lock:
            i = next(counter, None)
        if i is None:
            return
        if rate > 0:
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            sent[i] = time.time() * 1000
        n = offset + i
        # Place n: a point of its own on a 0.01 degree grid, as every producer.
        tasks.weather.apply_async(((n % 10000) / 100 - 50, (n // 10000) / 100 - 170))


# Connect once before timing.
with tasks.app.connection_for_write() as conn:
    conn.ensure_connection()
start = time.monotonic()
t0 = time.time() * 1000
threads = [threading.Thread(target=produce) for _ in range(producers)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ms = (time.monotonic() - start) * 1000
print(json.dumps({"jobs": jobs, "ms": ms, "t0_ms": t0, "sent_ms": sent}), flush=True)
if tasks.ZIPKIN:
    from opentelemetry import trace

    trace.get_tracer_provider().shutdown()
