/**
 * How a batch of tasks or replies (./protocol.ts) travels through its MessagePort: one flat
 * array of plain values rather than an array of [id, object] pairs. Cloning an object costs
 * the serializer its keys and shape on both threads, and the main thread deserializes every
 * reply it gets; a request or a response, the common entries, go as a fixed run of values
 * instead (bench/worker-path.ts, "clone", measures both). Anything else goes as its object.
 *
 * This was the main thread's channel to each worker (issue 10). Since every worker thread is an
 * edge (issue 11) no request crosses from the main thread, and this layout lives on only as
 * the measurement in bench/worker-path.ts.
 */
import type { ContextInit, WorkerReply, WorkerTask } from '../../src/contexts/protocol.ts';

/** A batch as it crosses: entries one after another, each starting with its kind. */
export type WireBatch = unknown[];

const REQUEST = 0;
const RESPONSE = 0;
const OTHER = 1;

type RequestTask = Extract<WorkerTask, { type: 'request' }>;
type ResponseReply = Extract<WorkerReply, { type: 'response' }>;

/** Appends one task to `batch`. */
export function pushTask(batch: WireBatch, id: number, task: WorkerTask): void {
  if (task.type !== 'request') {
    batch.push(OTHER, id, task);
    return;
  }
  const { request } = task;
  batch.push(REQUEST, id, task.sessionId, task.expiresAt, request.method, request.url, request.headers, request.body, task.init ?? null, task.ephemeral === true);
}

/**
 * Calls `visit` with each entry of `batch`, in order: an OTHER entry is its object; the common
 * kind, `size` values long, is rebuilt by `decode` from its values after the ID.
 */
function forEachEntry<T>(batch: WireBatch, size: number, decode: (batch: WireBatch, at: number) => T, visit: (id: number, entry: T) => void): void {
  for (let i = 0; i < batch.length; ) {
    if (batch[i] === OTHER) {
      visit(batch[i + 1] as number, batch[i + 2] as T);
      i += 3;
    } else {
      visit(batch[i + 1] as number, decode(batch, i + 2));
      i += size;
    }
  }
}

function decodeRequest(batch: WireBatch, at: number): RequestTask {
  const task: RequestTask = {
    type: 'request',
    sessionId: batch[at] as string,
    expiresAt: batch[at + 1] as number | null,
    request: { method: batch[at + 2] as string, url: batch[at + 3] as string, headers: batch[at + 4] as string, body: batch[at + 5] as RequestTask['request']['body'] },
  };
  const init = batch[at + 6] as ContextInit | null;
  if (init !== null) task.init = init;
  if (batch[at + 7] === true) task.ephemeral = true;
  return task;
}

/** Calls `visit` with each task of `batch`, in order. */
export function forEachTask(batch: WireBatch, visit: (id: number, task: WorkerTask) => void): void {
  forEachEntry<WorkerTask>(batch, 10, decodeRequest, visit);
}

/** The fields of a response reply that are usually absent: sent as one object only when one is present. */
type ResponseExtras = Pick<ResponseReply, 'error' | 'closeError' | 'mementoError' | 'userId' | 'regenerate' | 'closeOthersOf'>;

function extrasOf(reply: ResponseReply): ResponseExtras | null {
  if (reply.error === undefined && reply.closeError === undefined && reply.mementoError === undefined && reply.userId === undefined && reply.regenerate === undefined && reply.closeOthersOf === undefined) return null;
  const extras: ResponseExtras = {};
  if (reply.error !== undefined) extras.error = reply.error;
  if (reply.closeError !== undefined) extras.closeError = reply.closeError;
  if (reply.mementoError !== undefined) extras.mementoError = reply.mementoError;
  if (reply.userId !== undefined) extras.userId = reply.userId;
  if (reply.regenerate !== undefined) extras.regenerate = reply.regenerate;
  if (reply.closeOthersOf !== undefined) extras.closeOthersOf = reply.closeOthersOf;
  return extras;
}

/** Appends one reply to `batch`. */
export function pushReply(batch: WireBatch, id: number, reply: WorkerReply): void {
  if (reply.type !== 'response') {
    batch.push(OTHER, id, reply);
    return;
  }
  batch.push(RESPONSE, id, reply.status, reply.headers, reply.body, reply.threadId, reply.closed, extrasOf(reply));
}

function decodeResponse(batch: WireBatch, at: number): ResponseReply {
  const reply: ResponseReply = {
    type: 'response',
    status: batch[at] as number,
    headers: batch[at + 1] as string[],
    body: batch[at + 2] as ResponseReply['body'],
    threadId: batch[at + 3] as number,
    closed: batch[at + 4] as boolean,
  };
  const extras = batch[at + 5] as ResponseExtras | null;
  if (extras !== null) Object.assign(reply, extras);
  return reply;
}

/** Calls `visit` with each reply of `batch`, in order. */
export function forEachReply(batch: WireBatch, visit: (id: number, reply: WorkerReply) => void): void {
  forEachEntry<WorkerReply>(batch, 8, decodeResponse, visit);
}
