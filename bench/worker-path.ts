/**
 * What one request costs a worker thread, in-process, without sockets or the main thread
 * (issue 10): µs per request for a hook that returns `new Response('hello')`.
 *
 *   npm exec -- node --import tsx bench/worker-path.ts [--requests N] [--batch N]
 *
 * conversions: wire request → Request → hook → wire reply, in this thread: the way the worker
 *   did it before issue 10 (`new Request()`, the body read back through its stream) beside
 *   the way it does now (src/contexts/fetch-objects.ts: a lazy request, a light response).
 * dispatch: the worker's whole path, src/contexts/worker.ts's task handler called directly in
 *   a worker thread (contexts, queue, deadline, hook context and the conversions), with
 *   `--batch` requests in flight at once as a channel batch delivers them.
 * clone: what a batch of `--batch` requests costs to clone (structuredClone: the serializer
 *   and deserializer a MessagePort runs) and read back, laid out as [id, task] pairs (before
 *   issue 10) or flat (bench/lib/batches.ts).
 */
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { resolve } from 'node:path';
import { readReady } from '../src/contexts/body-streams.ts';
import { fromResponse, toRequest } from '../src/contexts/fetch-objects.ts';
import { WorkerResponse } from '../src/contexts/light-response.ts';
import type { WireRequest, WorkerReply, WorkerTask } from '../src/contexts/protocol.ts';
import { forEachTask, pushTask, type WireBatch } from './lib/batches.ts';
import { wireHeaders } from '../src/contexts/response-headers.ts';
import type { WorkerSettings } from '../src/contexts/worker.ts';

const { values } = parseArgs({ options: { requests: { type: 'string', default: '200000' }, batch: { type: 'string', default: '32' } } });
const REQUESTS = Number(values.requests);
const BATCH = Number(values.batch);
const ROUNDS = 5;

/** What a browser's GET looks like on the wire (src/server.ts joins rawHeaders with newlines). */
const WIRE: WireRequest = {
  method: 'GET',
  url: 'http://localhost:8080/hello?n=1',
  headers: 'Host\nlocalhost:8080\nUser-Agent\nMozilla/5.0 (X11; Linux x86_64)\nAccept\ntext/html,*/*;q=0.8\nAccept-Encoding\ngzip, br\nCookie\nRSID=Xb2k9Qz8vT1mN4pL7rW3yA5cE6',
  body: null,
};

/** µs per request of `each`, run `requests` times in batches of `batch` (a turn of the event loop between batches); the median of ROUNDS. */
async function measure(each: () => Promise<unknown>, requests: number, batch: number): Promise<number> {
  const run = async (count: number) => {
    for (let done = 0; done < count; done += batch) {
      const inFlight: Array<Promise<unknown>> = [];
      for (let i = 0; i < batch; i++) inFlight.push(each());
      await Promise.all(inFlight);
      await new Promise((next) => setImmediate(next));
    }
  };
  await run(Math.min(requests, 20_000));
  const figures: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const started = performance.now();
    await run(requests);
    figures.push(((performance.now() - started) * 1000) / requests);
  }
  return figures.sort((a, b) => a - b)[ROUNDS >> 1]!;
}

const NativeRequest = globalThis.Request;
const NativeResponse = globalThis.Response;

/** Before issue 10: a real Request per request, and a string body read back through its stream. */
async function oldPath(): Promise<unknown> {
  const raw = WIRE.headers.split('\n');
  const headers: Array<[string, string]> = [];
  for (let i = 0; i < raw.length; i += 2) headers.push([raw[i]!, raw[i + 1]!]);
  const request = new NativeRequest(WIRE.url, { method: WIRE.method, headers, body: WIRE.body });
  const response = await hook(request, NativeResponse);
  const wire = wireHeaders(response);
  const ready = await readReady(response);
  return { status: response.status, headers: wire, body: 'whole' in ready ? ready.whole : null };
}

async function newPath(): Promise<unknown> {
  return fromResponse(await hook(toRequest(WIRE), WorkerResponse));
}

async function hook(request: Request, Response: typeof globalThis.Response): Promise<Response> {
  return new Response(request.method === 'GET' ? 'hello' : '');
}

/** µs per request to clone a batch of `batch` requests and walk it on the other side. */
function cloneCost(batch: number, flat: boolean): number {
  const tasks: WorkerTask[] = Array.from({ length: batch }, (_, i) => ({ type: 'request', sessionId: `session-${i}-Xb2k9Qz8vT1mN4pL7rW3yA5cE6`, expiresAt: Date.now() + 8 * 3_600_000, request: WIRE }));
  const once = () => {
    if (flat) {
      const wire: WireBatch = [];
      tasks.forEach((task, id) => pushTask(wire, id, task));
      let seen = 0;
      forEachTask(structuredClone(wire), () => seen++);
      return seen;
    }
    return structuredClone(tasks.map((task, id) => [id, task] as const)).length;
  };
  const rounds = Math.max(1, Math.floor(REQUESTS / batch));
  for (let i = 0; i < Math.min(rounds, 2_000); i++) once();
  const figures: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const started = performance.now();
    for (let i = 0; i < rounds; i++) once();
    figures.push(((performance.now() - started) * 1000) / (rounds * batch));
  }
  return figures.sort((a, b) => a - b)[ROUNDS >> 1]!;
}

function runDispatch(batch: number): Promise<number> {
  const settings: WorkerSettings = {
    onConnection: resolve(import.meta.dirname, 'hooks/hello.ts'),
    onSessionSuspend: resolve(import.meta.dirname, 'hooks/onSessionSuspend.ts'),
    connectionTimeout: 30_000,
    suspendTimeout: 30_000,
    maxMementoSize: 1 << 20,
    idHashSalt: '00',
    nodeId: 'bench',
  };
  const worker = new Worker(new URL(import.meta.url), { workerData: { ...settings, batch }, argv: process.argv.slice(2) });
  return new Promise((done, failed) => {
    worker.once('message', (figure: number) => done(figure));
    worker.once('error', failed);
  }).finally(() => worker.terminate()) as Promise<number>;
}

/** In the worker thread: worker.ts reads its settings from workerData, as a pool thread does. */
async function dispatchInThisThread(): Promise<void> {
  const { batch } = workerData as { batch: number };
  const { default: handle } = await import('../src/contexts/worker.ts');
  const init = { resumed: false, saved: null, savedVersion: null, userId: null, clientIp: '127.0.0.1', createdAt: Date.now() };
  // One context per request in a batch, each created by its first request.
  const ids = Array.from({ length: batch }, (_, i) => `session-${i}`);
  for (const sessionId of ids) await handle({ type: 'request', sessionId, expiresAt: null, init, request: WIRE });
  let next = 0;
  const each = async () => {
    const task: WorkerTask = { type: 'request', sessionId: ids[next++ % batch]!, expiresAt: null, request: WIRE };
    const reply = (await handle(task)) as WorkerReply;
    if (reply.type !== 'response' || reply.status !== 200) throw new Error(`unexpected reply ${JSON.stringify(reply)}`);
  };
  parentPort!.postMessage(await measure(each, REQUESTS, batch));
}

if (!isMainThread) {
  await dispatchInThisThread();
} else {
  console.log(`Node ${process.version}, ${REQUESTS} requests a round, median of ${ROUNDS} rounds, µs per request`);
  const oldFigure = await measure(oldPath, REQUESTS, BATCH);
  const newFigure = await measure(newPath, REQUESTS, BATCH);
  console.log(`conversions, old (new Request, stream read): ${oldFigure.toFixed(2)}`);
  console.log(`conversions, new (lazy request, light response): ${newFigure.toFixed(2)}`);
  // What the loop itself costs a batch of 1 (a turn of the event loop per request): part of every figure below.
  console.log(`floor (an empty request, batch of 1): ${(await measure(async () => {}, REQUESTS, 1)).toFixed(2)}`);
  for (const batch of [1, BATCH]) console.log(`dispatch (worker.ts, batch of ${batch}): ${(await runDispatch(batch)).toFixed(2)}`);
  for (const batch of [1, BATCH]) {
    console.log(`clone, batch of ${batch}: [id, task] pairs ${cloneCost(batch, false).toFixed(2)}, flat ${cloneCost(batch, true).toFixed(2)}`);
  }
}
