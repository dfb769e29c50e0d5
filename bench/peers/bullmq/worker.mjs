// The BullMQ peer's worker: the same job as ours (a cache GET, the
// forecast call to the weather stub, a cache SET EX) at BENCH_CONCURRENCY.
// Env: BENCH_REDIS_URL (the queue), BENCH_CACHE_URL (the cache),
// BENCH_STUB_URL, BENCH_CONCURRENCY, BENCH_ZIPKIN_URL (tracing on when set).
import { setupTracing } from "./otel.mjs";
const { telemetry, shutdown } = setupTracing("bullmq-worker");
// Loaded after the instrumentations, so they see these modules.
const { Worker } = await import("bullmq");
const { default: IORedis } = await import("ioredis");
const http = await import("node:http");

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const stub = new URL(process.env.BENCH_STUB_URL);
const cache = new IORedis(process.env.BENCH_CACHE_URL);

function forecast(lat, lon) {
  const path = `/v1/forecast?latitude=${lat}&longitude=${lon}` +
    "&current=temperature_2m,wind_speed_10m,wind_direction_10m,weather_code" +
    "&temperature_unit=celsius&wind_speed_unit=kmh";
  return new Promise((resolve, reject) => {
    const req = http.get({ host: stub.hostname, port: stub.port, path, agent }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () =>
        res.statusCode === 200 ? resolve(JSON.parse(body)) : reject(new Error(`HTTP ${res.statusCode}`)));
    });
    req.on("error", reject);
  });
}

async function weather(job) {
  const { latitude, longitude } = job.data;
  const key = `bench:weather:${latitude.toFixed(2)},${longitude.toFixed(2)}:metric`;
  const hit = await cache.get(key);
  if (hit) return JSON.parse(hit);
  const answer = await forecast(latitude, longitude);
  const result = { latitude, longitude, current: answer.current };
  await cache.set(key, JSON.stringify(result), "EX", 600);
  return result;
}

const worker = new Worker("weather", weather, {
  connection: { url: process.env.BENCH_REDIS_URL, maxRetriesPerRequest: null },
  concurrency: Number(process.env.BENCH_CONCURRENCY || 50),
  telemetry,
});
worker.on("ready", () => console.log("ready"));
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, async () => {
    await worker.close();
    await cache.quit();
    await shutdown();
    process.exit(0);
  });
}
