/**
 * An edge thread's log: each line goes to the main thread's logger (pino), so every thread's
 * lines come out of one stream in one format, and the worker never loads the logger. Errors
 * are flattened the way pino's serializer shows them (type, message, stack, code).
 */
import { errorType } from '../contexts/protocol.ts';
import type { Log } from '../log.ts';
import type { RpcPort } from '../contexts/rpc.ts';
import type { LogLevel } from '../types.ts';

const RANK: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };

/** A log line as it crosses to the main thread. */
export interface LogCall {
  op: 'log';
  level: LogLevel;
  fields: Record<string, unknown>;
  msg: string;
}

/**
 * A thread's log, and a way to wait for its lines to be written: the edge waits before it sends
 * a response whose request logged something, so that what a request logged is in the log
 * before its client has the answer (an operator reading the log, a test reading its lines).
 * Requests that log nothing (the common hit) wait for nothing.
 */
export interface ThreadLog extends Log {
  /** Resolves once every line logged so far is written; undefined when none is on its way. */
  delivered(): Promise<void> | undefined;
  /** Whether a line at `level` passes `log.level` (one that does not is never sent). */
  enabled(level: LogLevel): boolean;
}

export function threadLog(main: RpcPort, level: string): ThreadLog {
  const floor = RANK[level] ?? RANK.info!;
  // Lines sent and lines settled, counted: a wait is for the lines sent before it, never for a
  // log that is never quiet (a session that keeps logging after its response would otherwise
  // hold back every answer on this thread). The main thread answers a port's calls in order.
  let sent = 0;
  let settledCount = 0;
  // In the order they waited, which is the order of what they wait for.
  const waiters: Array<{ upTo: number; resolve: () => void }> = [];
  const settled = () => {
    settledCount++;
    while (waiters.length > 0 && waiters[0]!.upTo <= settledCount) waiters.shift()!.resolve();
  };
  const enabled = (lineLevel: LogLevel) => RANK[lineLevel]! >= floor;
  const line = (lineLevel: LogLevel) => (fields: object, msg: string) => {
    if (!enabled(lineLevel)) return;
    const call: LogCall = { op: 'log', level: lineLevel, fields: flatten(fields), msg };
    sent++;
    // A closed port (the thread is stopping) drops the line.
    main.call(call).then(settled, settled);
  };
  return {
    debug: line('debug'),
    info: line('info'),
    warn: line('warn'),
    error: line('error'),
    enabled,
    delivered: () => (settledCount === sent ? undefined : new Promise<void>((resolve) => waiters.push({ upTo: sent, resolve }))),
  };
}

/**
 * As JSON sees it (pino writes JSON anyway): a field that cannot cross a thread (a function, a
 * socket) must not fail the batch of calls it would travel with. Fields whose JSON is longer
 * than `maxChars` are replaced by their length (`truncated`).
 */
export function flatten(fields: object, maxChars = Infinity): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  try {
    // Inside the try: a getter that throws is a field that cannot be logged, not a failed call.
    for (const [key, value] of Object.entries(fields)) out[key] = value instanceof Error ? serializeError(value) : value;
    // A BigInt (a database id, an amount) is written as its digits, as JSON has no such number.
    const json = JSON.stringify(out, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value));
    if (json.length > maxChars) return { truncated: json.length };
    return JSON.parse(json) as Record<string, unknown>;
  } catch {
    return { unloggable: Object.keys(out) };
  }
}

function serializeError(error: Error): Record<string, unknown> {
  const out: Record<string, unknown> = { type: errorType(error), message: error.message, stack: error.stack };
  const code = (error as { code?: unknown }).code;
  if (code !== undefined) out.code = code;
  if (error.cause instanceof Error) out.cause = serializeError(error.cause);
  return out;
}
