/**
 * `ctx.log`: a hook's lines go through the thread's log to the main thread's pino, so they come
 * out in the server's format (JSON, or readable in a terminal) with the session's hash on each.
 * A line below `log.level` stops at the first check: its fields are not even read.
 */
import { threadId } from 'node:worker_threads';
import { flatten, type ThreadLog } from '../edge/thread-log.ts';
import type { HookLog, LogLevel, LogMethod } from '../types.ts';

/** Bounds of one line, so a hook logging a whole response or a runaway loop's state cannot flood the log. */
export const MAX_LOG_MESSAGE = 4096;
export const MAX_LOG_FIELDS = 16_384;

/** The fields Resident writes on a hook's line; a hook's own field of that name gets a `_` prefix. */
const RESERVED = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name', 'session', 'threadId', 'hook']);

/** The thread's log, once the thread is an edge; until then (a readiness probe) lines are dropped. */
let sink: ThreadLog | null = null;

export function setHookLogSink(log: ThreadLog): void {
  sink = log;
}

export type HookName = 'onConnection' | 'onSessionSuspend';

/** `session` is read per line: a regenerated ID's hash shows from the next request on, like ctx.idHash. */
export function hookLog(hook: HookName, session: () => string): HookLog {
  const method =
    (level: LogLevel): LogMethod =>
    (first: object | string, msg?: string) => {
      const log = sink;
      if (!log?.enabled(level)) return;
      // A logger never throws into the hook: fields it cannot read (a Proxy that refuses its
      // keys) or a message it cannot turn into text are said so on the line instead.
      let own: object;
      try {
        own = typeof first === 'string' ? {} : first instanceof Error ? { err: first } : renamed(first);
      } catch {
        own = { unloggable: 'fields whose keys cannot be read' };
      }
      let text: string;
      try {
        // As pino does: an Error logged without a message is described by its own.
        text = typeof first === 'string' ? first : msg !== undefined ? String(msg) : first instanceof Error ? String(first.message) : '';
      } catch {
        text = '(a message that cannot be turned into text)';
      }
      log[level]({ ...flatten(own, MAX_LOG_FIELDS), hook, session: session(), threadId }, bounded(text));
    };
  return Object.freeze({ debug: method('debug'), info: method('info'), warn: method('warn'), error: method('error'), isLevelEnabled: (level: LogLevel) => sink?.enabled(level) === true });
}

function renamed(fields: object): object {
  if (typeof fields !== 'object' || fields === null) return { value: fields };
  if (!Object.keys(fields).some((key) => RESERVED.has(key))) return fields;
  const out: Record<string, unknown> = {};
  try {
    for (const [key, value] of Object.entries(fields)) out[RESERVED.has(key) ? `_${key}` : key] = value;
  } catch {
    // A getter that throws: flatten() says the fields are unloggable.
    return fields;
  }
  return out;
}

function bounded(text: string): string {
  return text.length <= MAX_LOG_MESSAGE ? text : `${text.slice(0, MAX_LOG_MESSAGE - 1)}…`;
}
