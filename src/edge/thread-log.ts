/**
 * An edge thread's log: each line goes to the main thread's logger (pino), so every thread's
 * lines come out of one stream in one format, and the worker never loads the logger. Errors
 * are flattened the way pino's serializer shows them (type, message, stack, code).
 */
import type { Log } from '../log.ts';
import type { RpcPort } from '../contexts/rpc.ts';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const RANK: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };

/** A log line as it crosses to the main thread. */
export interface LogCall {
  op: 'log';
  level: LogLevel;
  fields: Record<string, unknown>;
  msg: string;
}

export function threadLog(main: RpcPort, level: string): Log {
  const floor = RANK[level] ?? RANK.info!;
  const line = (lineLevel: LogLevel) => (fields: object, msg: string) => {
    if (RANK[lineLevel]! < floor) return;
    const call: LogCall = { op: 'log', level: lineLevel, fields: flatten(fields), msg };
    // Nobody waits for a log line; a closed port (the thread is stopping) drops it.
    main.call(call).catch(() => {});
  };
  return { debug: line('debug'), info: line('info'), warn: line('warn'), error: line('error') };
}

/**
 * As JSON sees it (pino writes JSON anyway): a field that cannot cross a thread (a function, a
 * socket) must not fail the batch of calls it would travel with.
 */
function flatten(fields: object): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(fields)) out[key] = value instanceof Error ? serializeError(value) : value;
  try {
    return JSON.parse(JSON.stringify(out)) as Record<string, unknown>;
  } catch {
    return { unloggable: Object.keys(out) };
  }
}

function serializeError(error: Error): Record<string, unknown> {
  const out: Record<string, unknown> = { type: error.name, message: error.message, stack: error.stack };
  const code = (error as { code?: unknown }).code;
  if (code !== undefined) out.code = code;
  if (error.cause instanceof Error) out.cause = serializeError(error.cause);
  return out;
}
