/**
 * The context runtime, inside each pool thread: holds the contexts homed here, serializes each
 * context's requests, and calls the hooks. Knows nothing of sockets or cookies: the thread's
 * edge (src/edge/thread.ts) hands it tasks of the protocol in ./protocol.ts.
 */
// First the builtins the edge's checks call, taken before anything can patch them; then the
// hooks' Request, Response and fetch(), in place before any module uses them.
import '../primordials.ts';
import './fetch-globals.ts';
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { ErrorCodes, ResidentError } from '../errors.ts';
import type { OnConnection, OnSessionSuspend, SuspendReason } from '../types.ts';
import { LiveContext, setIdSalt, setNodeId } from './context.ts';
import { HookContext, onRefusedEffect } from './hook-context.ts';
import { DeadlineSweep } from './deadline.ts';
import { cancelBody, pullBody } from './body-streams.ts';
import { abortRequest, fromResponse, toRequest } from './fetch-objects.ts';
import { decodeMemento, encodeMemento } from './memento.ts';
import { loadHook } from './hook-load.ts';
import { progressed, runMarked, startBeating } from './heartbeat.ts';
import {
  toWireError,
  type ConnectTask,
  type ContextInit,
  type HooksLoading,
  type WireError,
  type WorkerEvent,
  type WorkerReply,
  type WorkerTask,
} from './protocol.ts';

export interface WorkerSettings {
  onConnection: string;
  onSessionSuspend: string;
  connectionTimeout: number;
  suspendTimeout: number;
  maxMementoSize: number;
  /** The main thread's log salt (hex), for ctx.idHash. */
  idHashSalt: string;
  /** cluster.nodeId, for ctx.nodeId. */
  nodeId: string;
}

const settings = workerData as WorkerSettings;
setIdSalt(settings.idHashSalt);
setNodeId(settings.nodeId);

// The main thread times the hook modules' loading, and only that (./load-watch.ts): a module
// that loops as it loads is terminated after workers.stallTimeout.
// Each module is named as its import starts, so a stall names the module that did not finish.
parentPort?.postMessage({ type: 'hooks', threadId, loading: true, hook: 'onConnection', module: settings.onConnection } satisfies HooksLoading);
const onConnection = await loadHook<OnConnection>(settings.onConnection, 'onConnection');
parentPort?.postMessage({ type: 'hooks', threadId, loading: true, hook: 'onSessionSuspend', module: settings.onSessionSuspend } satisfies HooksLoading);
const onSessionSuspend = await loadHook<OnSessionSuspend>(settings.onSessionSuspend, 'onSessionSuspend');
parentPort?.postMessage({ type: 'hooks', threadId, loading: false } satisfies HooksLoading);

function report(event: WorkerEvent): void {
  parentPort?.postMessage(event);
}

// A hook's stray rejection must not take down the thread and every context on it
// (Node's default since v15 is to throw; RELIABILITY.md F6).
process.on('unhandledRejection', (reason) => {
  report({ type: 'log', level: 'error', msg: 'unhandled rejection in a hook', error: toWireError(reason) });
});
onRefusedEffect((message) => report({ type: 'log', level: 'warn', msg: 'a hook asked to change its session after its request was answered', error: { code: 'RESIDENT_ERR_EFFECT_REFUSED', message, type: 'ResidentError' } }));

const contexts = new Map<string, LiveContext>();
const connectionDeadline = new DeadlineSweep(settings.connectionTimeout, 'RESIDENT_ERR_HOOK_TIMEOUT', 'onConnection');
const suspendDeadline = new DeadlineSweep(settings.suspendTimeout, 'RESIDENT_ERR_HOOK_TIMEOUT', 'onSessionSuspend');

/** The generic answer to a failed hook: the details go to the log, never to the client (F1). */
function errorResponse(status: 400 | 500 | 504): { status: number; headers: string[]; body: string } {
  const code = status === 400 ? 'RESIDENT_ERR_BAD_REQUEST' : status === 504 ? 'RESIDENT_ERR_HOOK_TIMEOUT' : 'RESIDENT_ERR_HOOK_FAILED';
  return { status, headers: ['content-type', 'text/plain; charset=utf-8'], body: ErrorCodes[code].message };
}

function isHookTimeout(error: unknown): boolean {
  try {
    return error instanceof ResidentError && error.code === 'RESIDENT_ERR_HOOK_TIMEOUT';
  } catch {
    return false;
  }
}

/** Calls onSessionSuspend and encodes what it returns; throws when it cannot be saved. */
async function takeMemento(ctx: LiveContext, reason: SuspendReason): Promise<string> {
  // The suspend hook reads and saves; session effects belong to requests.
  const view = new HookContext(ctx, 'onSessionSuspend');
  progressed(heartbeat);
  const memento = await suspendDeadline.run(() => onSessionSuspend(view, reason), `onSessionSuspend(ctx, '${reason}')`);
  return encodeMemento(memento, settings.maxMementoSize);
}

/** A new context, with the memento decoded; a memento that cannot be read is reported, not fatal. */
function createContext(id: string, init: ContextInit): { ctx: LiveContext; mementoError?: WireError } {
  if (init.saved === null) return { ctx: new LiveContext(id, init, undefined) };
  try {
    return { ctx: new LiveContext(id, init, decodeMemento(init.saved)) };
  } catch (error) {
    // The client gets a fresh context; the main thread quarantines the record (E11).
    return {
      ctx: new LiveContext(id, { ...init, resumed: false }, undefined),
      mementoError: toWireError(error, 'RESIDENT_ERR_MEMENTO_CORRUPT'),
    };
  }
}

/** Shared with the main thread's watchdog once the thread becomes an edge. */
let heartbeat: Int32Array | undefined;

async function handleRequest(ctx: LiveContext, task: Extract<WorkerTask, { type: 'request' }>, taskId: number): Promise<WorkerReply> {
  // Closed by an earlier request: a request queued behind the close never runs on this
  // context; the main thread serves it afresh once the close has retired the ID.
  if (ctx.closed && !task.ephemeral) return { type: 'gone' };
  ctx.beginRequest(task.expiresAt, task.proven === true);
  let reply: Extract<WorkerReply, { type: 'response' }>;
  let request: Request;
  try {
    request = toRequest(task.request);
  } catch {
    // An unparseable URL or Host header: the client's fault, answered without the hook.
    return { type: 'response', ...errorResponse(400), closed: false, threadId };
  }
  const hookCtx = new HookContext(ctx);
  try {
    const response = await connectionDeadline.run(() => runMarked(heartbeat, taskId, () => onConnection(hookCtx, request), task.request.hop));
    reply = { type: 'response', ...(await fromResponse(response)), closed: false, threadId };
    // Only a request that succeeded ends the context's first request: when the hook throws
    // while restoring a memento, the next request sees isNew (and saved) again (H4).
    ctx.endRequest();
  } catch (error) {
    // Whatever was thrown (a revoked Proxy makes even `instanceof` throw), this answers.
    const timedOut = isHookTimeout(error);
    reply = { type: 'response', ...errorResponse(timedOut ? 504 : 500), closed: false, error: toWireError(error), threadId };
    // The hook runs on for nobody: what it passed request.signal to (a fetch, a stream) stops.
    if (timedOut) abortRequest(request, error);
  }
  // What the request asked of its session goes with its own reply, even an error's (a close
  // then a throw still closes, H6); anything a hook asks after this is refused.
  const effects = hookCtx.settle();
  if (ctx.kept) reply.kept = true;
  if (effects) {
    if (effects.userId !== undefined) reply.userId = effects.userId;
    if (effects.regenerate) reply.regenerate = true;
    if (effects.closeOthersOf !== undefined) reply.closeOthersOf = effects.closeOthersOf;
    reply.closed = effects.closed;
  }
  if (task.ephemeral && reply.closed) {
    try {
      await takeMemento(ctx, 'closed');
    } catch (error) {
      reply.closeError = toWireError(error, 'RESIDENT_ERR_SUSPEND_FAILED');
    }
  }
  return reply;
}

async function handleSuspend(ctx: LiveContext, reason: SuspendReason): Promise<WorkerReply> {
  // A closed context has one memento left to give: its 'closed' one, which is discarded. A
  // checkpoint queued behind the close must not write the session back into the store.
  if (ctx.closed && reason !== 'closed') return { type: 'gone' };
  try {
    // The context stays until the main thread has stored the memento and sends 'discard', so
    // a store that refuses the write leaves the context live (E4).
    const memento = await takeMemento(ctx, reason);
    return ctx.kept ? { type: 'suspended', memento, kept: true } : { type: 'suspended', memento };
  } catch (error) {
    // The context stays: an idle suspend is retried later; the main thread decides (H1).
    return { type: 'suspend-failed', error: toWireError(error, 'RESIDENT_ERR_SUSPEND_FAILED') };
  }
}

/** @param taskId the host's number for the task, for the heartbeat (-1 for piscina's probes) */
export async function dispatch(task: WorkerTask, taskId = -1): Promise<WorkerReply> {
  if (task.type === 'stats') {
    if (task.gc) (globalThis as { gc?: () => void }).gc?.();
    return { type: 'stats', threadId, contexts: contexts.size, heapUsed: process.memoryUsage().heapUsed };
  }
  if (task.type === 'pull') {
    // A stream's pull() is hook code too: each one started is progress (./heartbeat.ts).
    progressed(heartbeat);
    return pullBody(task.streamId);
  }
  if (task.type === 'cancel') {
    cancelBody(task.streamId);
    return { type: 'cancelled' };
  }
  let hosted = contexts.get(task.sessionId);
  if (task.type === 'request') {
    let mementoError: WireError | undefined;
    if (task.init) {
      const created = createContext(task.sessionId, task.init);
      mementoError = created.mementoError;
      hosted = created.ctx;
      if (!task.ephemeral) contexts.set(task.sessionId, hosted);
    }
    if (!hosted) return { type: 'gone' };
    const target = hosted;
    const reply = await target.queue.run(() => handleRequest(target, task, taskId));
    if (mementoError && reply.type === 'response') reply.mementoError = mementoError;
    return reply;
  }
  if (!hosted) return task.type === 'discard' ? { type: 'discarded' } : { type: 'gone' };
  const target = hosted;
  if (task.type === 'suspend') return target.queue.run(() => handleSuspend(target, task.reason));
  if (task.type === 'rename') {
    // Tasks already dispatched hold the context itself; later ones arrive under the new ID
    // (the rename runs as it is called, before any later task), so nothing is looked up
    // under the old one again.
    contexts.delete(task.sessionId);
    target.id = task.newId;
    contexts.set(task.newId, target);
    return { type: 'renamed' };
  }
  contexts.delete(task.sessionId);
  return { type: 'discarded' };
}

/**
 * The piscina entry: the readiness probe, and the hand-over that makes this thread an edge
 * (src/edge/thread.ts). Every other task comes from this thread's own edge or over the mesh.
 */
export default async function handle(task: WorkerTask | ConnectTask): Promise<WorkerReply | { type: 'connected'; port: number }> {
  if (task.type === 'connect') {
    heartbeat = task.heartbeat;
    startBeating(heartbeat);
    // Loaded here, not at the top: the readiness probe (and bench/worker-path.ts) needs only
    // the context runtime.
    const { startEdge } = await import('../edge/thread.ts');
    const port = await startEdge(task.port, task.slot, task.edge, { dispatch, contexts: () => contexts.size });
    return { type: 'connected', port };
  }
  return dispatch(task);
}
