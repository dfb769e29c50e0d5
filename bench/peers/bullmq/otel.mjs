// Tracing for the BullMQ peer, as a BullMQ user sets it up: a Node tracer
// provider exporting Zipkin v2 JSON in batches, the http and ioredis
// instrumentations, and bullmq-otel for the queue's PRODUCER and CONSUMER
// spans. Nothing is set up when BENCH_ZIPKIN_URL is empty (tracing off).
import { BullMQOtel } from "bullmq-otel";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { ZipkinExporter } from "@opentelemetry/exporter-zipkin";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { registerInstrumentations } from "@opentelemetry/instrumentation";
import { HttpInstrumentation } from "@opentelemetry/instrumentation-http";
import { IORedisInstrumentation } from "@opentelemetry/instrumentation-ioredis";

export function setupTracing(service) {
  const url = process.env.BENCH_ZIPKIN_URL;
  if (!url) return { telemetry: undefined, shutdown: async () => {} };
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ "service.name": service }),
    spanProcessors: [
      new BatchSpanProcessor(new ZipkinExporter({ url }), {
        maxQueueSize: 65536,
        maxExportBatchSize: 512,
        scheduledDelayMillis: 200,
      }),
    ],
  });
  provider.register();
  registerInstrumentations({
    instrumentations: [new HttpInstrumentation(), new IORedisInstrumentation()],
  });
  return {
    telemetry: new BullMQOtel({ tracerName: service }),
    shutdown: () => provider.shutdown(),
  };
}
