// Seed 003's next hop, traced with zipkin-js: catalog-service receives the call (B3 ids from the
// story service: trace id and parent span id on the command line) and records its SERVER span,
// sent by zipkin-transport-http as Zipkin v2 JSON. Prints "sent" once the collector accepted it.
//
//   node catalog_service.js BASE_URL TRACE_ID PARENT_SPAN_ID
const { Tracer, BatchRecorder, ExplicitContext, TraceId, Annotation, jsonEncoder, option } = require('zipkin');
const { HttpLogger } = require('zipkin-transport-http');

const [base, traceId, parentId] = process.argv.slice(2);
const logger = new HttpLogger({
  endpoint: `${base}/api/v2/spans`,
  jsonEncoder: jsonEncoder.JSON_V2,
  httpInterval: 100,
});
logger.on('success', () => { console.log('sent'); process.exit(0); });
logger.on('error', (error) => { console.error(String(error)); process.exit(1); });
setTimeout(() => { console.error('not sent within 10 s'); process.exit(1); }, 10000);

const tracer = new Tracer({
  ctxImpl: new ExplicitContext(),
  recorder: new BatchRecorder({ logger }),
  localServiceName: 'catalog-service',
});
const child = new TraceId({
  traceId,
  parentId: new option.Some(parentId),
  spanId: tracer.createRootId().spanId,
  sampled: new option.Some(true),
});
tracer.setId(child);
tracer.recordServiceName('catalog-service');
tracer.recordRpc('GET /catalog');
tracer.recordAnnotation(new Annotation.ServerRecv());
tracer.recordBinary('http.method', 'GET');
tracer.recordAnnotation(new Annotation.ServerSend());
