// Submit a tunewright pipeline from Node.js and stream its events until it ends.
//
//   node submit.mjs --registry 127.0.0.1:50055 --via grpc pipeline.yaml [name=value ...]
//   node submit.mjs --registry 127.0.0.1:50055 --via nats --nats nats://127.0.0.1:4322 pipeline.yaml
//
// --via grpc: RegistryService.SubmitPipelineRun. --via nats: publish the event
// tw.pipeline.run.requested (a tunewright.events.v1.PipelineRunRequested, protobuf-encoded,
// with the Nats-Msg-Id and Tw-Event-Type headers) exactly as any other system would; the
// registry starts the run the same way. Either way the run's events then stream over gRPC
// (RegistryService.StreamPipelineRunEvents). Exit code: 0 if the pipeline succeeded, 1 if not.
// The .proto files are read from the repository's protos/ folder: the API is the contract.
import { readFileSync } from "node:fs";
import { createHash, randomUUID } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import { connect, headers as natsHeaders } from "nats";

const PROTOS = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "protos");
const SUBJECT = "tw.pipeline.run.requested";
const EVENT_TYPE = "tunewright.events.v1.PipelineRunRequested";

function parseArgs(argv) {
  const opts = { registry: "127.0.0.1:50055", via: "grpc", nats: "nats://127.0.0.1:4322", params: {} };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--registry" || a === "--via" || a === "--nats") opts[a.slice(2)] = argv[++i];
    else if (a.includes("=")) { const [k, ...v] = a.split("="); opts.params[k] = v.join("="); }
    else rest.push(a);
  }
  if (rest.length !== 1 || !["grpc", "nats"].includes(opts.via)) {
    console.error("usage: node submit.mjs [--registry HOST:PORT] [--via grpc|nats] [--nats URL] PIPELINE.yaml [name=value ...]");
    process.exit(2);
  }
  opts.spec = rest[0];
  return opts;
}

function registryClient(address) {
  const definition = protoLoader.loadSync("tunewright/registry/v1/registry.proto", {
    includeDirs: [PROTOS], keepCase: true, longs: String, enums: String, defaults: true,
  });
  const { RegistryService } = grpc.loadPackageDefinition(definition).tunewright.registry.v1;
  return new RegistryService(address, grpc.credentials.createInsecure());
}

function submitByGrpc(client, specYaml, parameters) {
  return new Promise((resolve, reject) => {
    client.SubmitPipelineRun({ spec_yaml: specYaml, parameters, requested_by: "node-example" }, (err, reply) => {
      if (err) reject(new Error(`${err.details} (${grpc.status[err.code]})`));
      else resolve(reply.run.id);
    });
  });
}

async function submitByNats(url, specYaml, parameters) {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => join(PROTOS, target);
  await root.load("tunewright/events/v1/events.proto", { keepCase: true });
  const Requested = root.lookupType(EVENT_TYPE);
  const runId = `pipe_node_${randomUUID().replaceAll("-", "")}`;
  const message = Requested.create({
    meta: { event_id: randomUUID(), producer: "node-example", workspace: "default" },
    run_id: runId, spec_yaml: specYaml, parameters, requested_by: "node-example",
  });
  const nc = await connect({ servers: url });
  const h = natsHeaders();
  // deterministic id: a retried publish of the same request is stored once by JetStream
  h.set("Nats-Msg-Id", createHash("sha256").update(`${SUBJECT}\n${runId}`).digest("hex").slice(0, 40));
  h.set("Tw-Event-Type", EVENT_TYPE);
  const ack = await nc.jetstream().publish(SUBJECT, Requested.encode(message).finish(), { headers: h });
  await nc.drain();
  console.log(`published ${SUBJECT} (stream ${ack.stream}, seq ${ack.seq})`);
  return runId;
}

function follow(client, runId) {
  return new Promise((resolve, reject) => {
    const stream = client.StreamPipelineRunEvents({ run_id: runId });
    let last = "";
    stream.on("data", ({ event, stage }) => {
      last = event.status;
      console.log(`${event.created_at ? new Date(Number(event.created_at.seconds) * 1000).toISOString() : ""} ${stage ? `[${stage}] ` : ""}${event.message}`);
    });
    stream.on("error", (err) => {
      // the run may not exist yet right after a NATS submission: the caller retries
      if (err.code === grpc.status.NOT_FOUND) resolve(null); else reject(err);
    });
    stream.on("end", () => resolve(last));
  });
}

const opts = parseArgs(process.argv.slice(2));
const specYaml = readFileSync(opts.spec, "utf8");
const client = registryClient(opts.registry);
const runId = opts.via === "grpc"
  ? await submitByGrpc(client, specYaml, opts.params)
  : await submitByNats(opts.nats, specYaml, opts.params);
console.log(`pipeline run ${runId}`);
let status = null;
for (let attempt = 0; status === null && attempt < 100; attempt++) {
  status = await follow(client, runId);
  if (status === null) await new Promise((r) => setTimeout(r, 200));
}
console.log(`pipeline ${runId} ended: ${status}`);
client.close();
process.exit(status === "JOB_STATUS_SUCCEEDED" ? 0 : 1);
