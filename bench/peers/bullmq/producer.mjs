// The BullMQ peer's producer: adds BENCH_JOBS jobs one at a time from
// BENCH_PRODUCERS concurrent loops (Queue.add), then prints
// {"jobs": n, "ms": elapsed, "t0_ms": start since the epoch, "sent_ms": each
// job's send since the epoch, at a fixed rate} on one line. Job i asks for
// a place of its own, so every job misses the cache. With BENCH_RATE > 0,
// job i is sent when due: i / rate seconds after the start (timers wake up
// to a millisecond off, so latency counts from sent_ms).
import { setupTracing } from "./otel.mjs";
const { telemetry, shutdown } = setupTracing("bullmq-producer");
const { Queue } = await import("bullmq");

const jobs = Number(process.env.BENCH_JOBS);
const producers = Number(process.env.BENCH_PRODUCERS || 32);
const offset = Number(process.env.BENCH_OFFSET || 0);
const rate = Number(process.env.BENCH_RATE || 0);
const queue = new Queue("weather", {
  connection: { url: process.env.BENCH_REDIS_URL },
  telemetry,
});
await queue.waitUntilReady();
let next = 0;
const sent = rate > 0 ? new Array(jobs).fill(0) : [];
const start = process.hrtime.bigint();
const t0 = performance.timeOrigin + performance.now();
await Promise.all(
  Array.from({ length: producers }, async () => {
    for (let i = next++; i < jobs; i = next++) {
      if (rate > 0) {
        const wait = i * 1000 / rate - Number(process.hrtime.bigint() - start) / 1e6;
        if (wait > 0) await new Promise((done) => setTimeout(done, wait));
        sent[i] = performance.timeOrigin + performance.now();
      }
      const n = offset + i;
      // Place n: a point of its own on a 0.01° grid, as every producer.
      const latitude = (n % 10000) / 100 - 50;
      const longitude = Math.floor(n / 10000) / 100 - 170;
      await queue.add("weather", { latitude, longitude });
    }
  }),
);
const ms = Number(process.hrtime.bigint() - start) / 1e6;
console.log(JSON.stringify({ jobs, ms, t0_ms: t0, sent_ms: sent }));
await queue.close();
await shutdown();
process.exit(0);
