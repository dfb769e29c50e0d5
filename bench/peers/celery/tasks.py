"""The Celery peer of the benchmark: the same job as ours (a cache GET, the
forecast call to the weather stub, a cache SET EX), with tracing set up as
a Celery user does it: a tracer provider in each worker process, exporting
Zipkin v2 JSON in batches, and the Celery, redis and requests
instrumentations. Tracing is off when BENCH_ZIPKIN_URL is empty.

Env: BENCH_REDIS_URL (the broker), BENCH_CACHE_URL, BENCH_STUB_URL,
BENCH_ZIPKIN_URL.
"""

import json
import os

import redis
import requests
from celery import Celery
from celery.signals import worker_process_init

app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"])
app.conf.update(
    task_ignore_result=True,
    worker_prefetch_multiplier=int(os.environ.get("BENCH_PREFETCH", "16")),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

ZIPKIN = os.environ.get("BENCH_ZIPKIN_URL", "")
STUB = os.environ.get("BENCH_STUB_URL", "http://127.0.0.1:8090/").rstrip("/")
cache = None
http = None


def setup_tracing(service):
    """A tracer provider exporting to BENCH_ZIPKIN_URL, with the
    instrumentations; nothing when tracing is off."""
    if not ZIPKIN:
        return
    from opentelemetry import trace
    from opentelemetry.exporter.zipkin.json import ZipkinExporter
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        BatchSpanProcessor(
            ZipkinExporter(endpoint=ZIPKIN),
            max_queue_size=65536,
            max_export_batch_size=512,
            schedule_delay_millis=200,
        )
    )
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument()
    RedisInstrumentor().instrument()
    RequestsInstrumentor().instrument()


@worker_process_init.connect(weak=False)
def init_worker(*args, **kwargs):
    global cache, http
    setup_tracing("celery-worker")
    cache = redis.Redis.from_url(os.environ["BENCH_CACHE_URL"])
    http = requests.Session()


@app.task(name="weather")
def weather(latitude, longitude):
    key = f"bench:weather:{latitude:.2f},{longitude:.2f}:metric"
    hit = cache.get(key)
    if hit:
        return json.loads(hit)
    res = http.get(
        f"{STUB}/v1/forecast",
        params={
            "latitude": latitude,
            "longitude": longitude,
            "current": "temperature_2m,wind_speed_10m,wind_direction_10m,weather_code",
            "temperature_unit": "celsius",
            "wind_speed_unit": "kmh",
        },
        timeout=10,
    )
    res.raise_for_status()
    result = {"latitude": latitude, "longitude": longitude, "current": res.json()["current"]}
    cache.set(key, json.dumps(result), ex=600)
    return result
