/**
 * The context runtime's tasks and replies (./worker.ts): what an edge thread's rooms ask of
 * the contexts they hold, and the piscina task that makes a worker an edge. The calls between
 * threads (hops, store, control) are typed where they are made: src/edge/mesh.ts (PeerCall),
 * src/edge/thread.ts (ControlCall, OpsCall), src/stores/remote.ts (StoreCall),
 * src/edge/thread-log.ts (LogCall), all over ./rpc.ts.
 */
import type { MessagePort } from 'node:worker_threads';
import type { SuspendReason } from '../types.ts';
import type { EdgeSetup } from '../edge/thread.ts';

/** How a context is born on its worker: sent with the first request of the context. */
export interface ContextInit {
  resumed: boolean;
  /** The encoded memento (see memento.ts), or null. */
  saved: string | null;
  savedVersion: number | null;
  userId: string | null;
  clientIp: string;
  /** Wall-clock ms when the session began. */
  createdAt: number;
}

export interface WireRequest {
  method: string;
  url: string;
  /**
   * The raw header list (name, value, name, value …) joined with newlines: one string
   * clones far cheaper than a dozen, and no header name or value can hold a newline.
   */
  headers: string;
  /** A UTF-8 text body as a string (see src/http/body.ts), any other as bytes; copied, never transferred. */
  body: ArrayBuffer | string | null;
  /**
   * Set when the request hopped from the edge thread that received it: that thread's slot and
   * its call id. The hook is marked with it (./heartbeat.ts), so when the hook stalls this
   * thread the watchdog tells the edge thread, which answers 504 (src/edge/mesh.ts).
   */
  hop?: [slot: number, call: number];
}

/**
 * A response body the worker keeps and the main thread pulls chunk by chunk (a stream, a Blob,
 * a fetch() body): see ./body-streams.ts and ../http/stream-response.ts.
 */
export interface StreamedBody {
  streamId: number;
  /** The thread that holds the stream: pulls go there and nowhere else. */
  threadId: number;
}

/**
 * A response body as it crosses: a string body as the string (written as UTF-8, its length
 * counted by the main thread), whole bytes (transferred), a stream to pull, or none.
 */
export type WireBody = string | ArrayBuffer | StreamedBody | null;

export interface WireError {
  code: string;
  message: string;
  stack?: string;
  /** What was thrown: the error's class (TypeError, SqliteError), or the kind of a value that is not an Error. */
  type?: string;
}

export type WorkerTask =
  | {
      type: 'request';
      sessionId: string;
      /** A throwaway context for this one request (sessions disabled): dropped after the response. */
      ephemeral?: true;
      /** Present on the first request of a context; absent means "the context must exist". */
      init?: ContextInit;
      /** Wall-clock ms when the cookie expires, or null for a browser-session cookie. */
      expiresAt: number | null;
      /** The client presented the session's cookie back (ctx.proven); absent: not yet. */
      proven?: true;
      request: WireRequest;
    }
  | { type: 'suspend'; sessionId: string; reason: SuspendReason }
  /** Drop a context without calling any hook. */
  | { type: 'discard'; sessionId: string }
  /** ctx.regenerate(): the context is known by `newId` from now on. */
  | { type: 'rename'; sessionId: string; newId: string }
  /** Report this worker's figures (sent to one worker through its route). */
  | { type: 'stats'; sessionId: ''; /** Collect garbage first, when the process runs with --expose-gc (benchmarks). */ gc?: boolean }
  /** The next chunk of a streamed response body (sent to the thread that holds it). */
  | { type: 'pull'; streamId: number }
  /** The client is gone: cancel the stream (its source's cancel() runs). */
  | { type: 'cancel'; streamId: number };

export type WorkerReply =
  | {
      type: 'response';
      status: number;
      headers: string[];
      body: WireBody;
      /**
       * This request called ctx.close(): the context runs no further request, and waits for the
       * main thread's 'suspend' ('closed') and 'discard', which the main thread sends only after
       * retiring the ID.
       */
      closed: boolean;
      /** The hook failed; status/body are the generic error response. */
      error?: WireError;
      /** onSessionSuspend(ctx, 'closed') failed after a close (a throwaway context only: a session's close runs as a 'suspend' task). */
      closeError?: WireError;
      /** The memento in `init` could not be read: the context started without it. */
      mementoError?: WireError;
      /** ctx.userId, when the hook changed it during this request. */
      userId?: string | null;
      /** The hook called ctx.regenerate(). */
      regenerate?: true;
      /** A hook has called ctx.keep() on this context: an unproven session is saved like a proven one. */
      kept?: true;
      /** The hook called ctx.closeOtherSessions() while the session belonged to this user. */
      closeOthersOf?: string;
      threadId: number;
    }
  /** The request named a context this worker does not hold (closed, or its worker died). */
  | { type: 'gone' }
  /** The encoded memento. For a checkpoint the context stays; otherwise it awaits 'discard'. */
  | {
      type: 'suspended';
      memento: string;
      /** A hook called ctx.keep(): an unproven session is saved like a proven one. */
      kept?: true;
    }
  | { type: 'suspend-failed'; error: WireError }
  | { type: 'discarded' }
  | { type: 'renamed' }
  | { type: 'stats'; threadId: number; contexts: number; heapUsed: number }
  /** A pulled chunk (transferred); null once the stream ended, or with `error` when it failed. */
  | { type: 'chunk'; bytes: ArrayBuffer | null; error?: WireError }
  | { type: 'cancelled' }
  /** The worker failed the task itself (a bug, not a hook error). */
  | { type: 'failed'; error: WireError };


/**
 * The piscina task that makes a worker an edge thread (the only other piscina task is the
 * readiness probe): its slot, its port to the main thread, and what every edge shares.
 */
export interface ConnectTask {
  type: 'connect';
  port: MessagePort;
  slot: number;
  edge: EdgeSetup;
  /** Shared with the main thread's watchdog (./heartbeat.ts). */
  heartbeat: Int32Array;
}

/** Messages a worker sends outside of task replies (through parentPort). */
export type WorkerEvent = { type: 'log'; level: 'warn' | 'error'; msg: string; error?: WireError };
/** A thread starts (`loading`) or has finished loading the hook modules: the main thread times it (./load-watch.ts). */
/** A thread starts (`hook` and `module`: which one it imports now) or has finished loading its hook modules. */
export type HooksLoading = { type: 'hooks'; threadId: number; loading: boolean; hook?: 'onConnection' | 'onSessionSuspend'; module?: string };

/**
 * Any thrown value, in words. Total: a hook may throw (or reject with) anything, including an
 * object whose String() throws (`Object.create(null)`), and describing it must never fail:
 * a failure here once cost a whole worker thread (issue 9, finding 9).
 */
export function toWireError(error: unknown, code = 'RESIDENT_ERR_HOOK_FAILED'): WireError {
  try {
    const type = errorType(error);
    if (error instanceof Error) {
      const withCode = (error as { code?: unknown }).code;
      const { stack } = error;
      return { code: typeof withCode === 'string' ? withCode : code, message: describeThrown(error.message), stack: typeof stack === 'string' ? stack : undefined, type };
    }
    return { code, message: describeThrown(error), type };
  } catch {
    // A Proxy or getters that throw: nothing more can be said safely.
    return { code, message: 'a value that cannot be described was thrown' };
  }
}

function describeThrown(value: unknown): string {
  if (typeof value === 'string') return value;
  try {
    return String(value);
  } catch {
    // No toString, or one that throws: name the kind of value instead.
    return Object.prototype.toString.call(value);
  }
}

/**
 * The class of what was thrown, as a log shows it: the constructor's name (a subclass that does
 * not set `name` still says what it is), else the error's `name` (esbuild's TransformError is
 * an Error named so), else the kind of value ('string', 'null'). Total, like toWireError.
 */
export function errorType(thrown: unknown): string {
  try {
    if (thrown === null) return 'null';
    if (typeof thrown !== 'object' && typeof thrown !== 'function') return typeof thrown;
    const constructorName = (thrown as { constructor?: { name?: unknown } }).constructor?.name;
    const name = (thrown as { name?: unknown }).name;
    if (typeof constructorName === 'string' && constructorName !== '' && constructorName !== 'Error' && constructorName !== 'Object') return constructorName;
    if (typeof name === 'string' && name !== '') return name;
    return typeof constructorName === 'string' && constructorName !== '' ? constructorName : 'Object';
  } catch {
    return 'Object';
  }
}

/**
 * A WireError as a log line's `err`: a plain object with its type (the logger keeps a plain
 * object's `type`; pino alone would say "Object"), code and stack.
 */
export function loggedError(error: WireError): { type: string; message: string; code?: string; stack?: string } {
  return { type: error.type ?? 'Error', message: error.message, ...(error.code !== '' && { code: error.code }), ...(error.stack !== undefined && { stack: error.stack }) };
}
