/**
 * The public hook contract. Hook modules type their context through `defineHooks`
 * (./hooks-api.ts, the package's `resident/hooks`), or with these types directly:
 *
 * @example
 * import { defineHooks } from 'resident/hooks';
 * interface Vars { hits?: number }   // absent on a new context: optional
 * export default defineHooks<Vars>().onConnection((ctx, request) => {
 *   ctx.vars.hits = (ctx.vars.hits ?? 0) + 1;
 *   return new Response(`hit ${ctx.vars.hits}`);
 * });
 */

/**
 * Why onSessionSuspend is called. All but 'checkpoint' mean the context leaves memory;
 * 'checkpoint' asks for a memento to save while the context stays live. 'admin': an operator
 * suspended it from the admin view. 'closed' and 'expired' end the session (the memento is
 * not kept). 'dropped': an unproven session (see `Context.proven`) pushed out by its source's
 * budget (`sessions.maxUnprovenPerIp`); its memento is not kept.
 */
export type SuspendReason = 'idle' | 'evicted' | 'admin' | 'closed' | 'shutdown' | 'expired' | 'checkpoint' | 'dropped';

/**
 * A client's private, living state on one worker thread. `Vars` types `ctx.vars` (a new
 * context's vars is `{}`: declare its fields optional); `Memento` is what `onSessionSuspend`
 * returns, and so the type of `ctx.saved`. The defaults type nothing.
 */
export interface Context<Vars extends object = Record<string, any>, Memento = unknown> {
  /** The session ID (the cookie value). Never log it: see `idHash`. */
  readonly id: string;
  /** A salted hash of the ID, safe for logs. */
  readonly idHash: string;
  /**
   * True while this context handles its first request (new session, or resumed one), and
   * until one of its requests succeeds: a hook that throws while restoring gets another go.
   */
  readonly isNew: boolean;
  /** True when this context was rebuilt for a suspended session (stays true for its life). */
  readonly resumed: boolean;
  /** The memento `onSessionSuspend` returned when the session was suspended, or undefined. */
  readonly saved: Memento | undefined;
  /** `sessions.mementoVersion` when `saved` was written (undefined without a memento): migrate on it. */
  readonly savedVersion: number | undefined;
  /**
   * The user this session belongs to (null: none). Saved with the session record, so a
   * user's sessions can be found and closed. Set it at login.
   */
  userId: string | null;
  /** The context's variables: ordinary objects in the worker heap (class instances, Maps, closures). */
  vars: Vars;
  /**
   * Runs `load` once per context and caches its result under `name`; concurrent calls share
   * one load, and a failed load is not cached. With `ttl`, a cached value older than that is
   * loaded again.
   */
  select<T>(name: string, load: () => T | Promise<T>, options?: SelectOptions): Promise<T>;
  /**
   * Drops the selection cached under `name` (and detaches a load under way, whose result is
   * then not cached): the next `select(name, …)` loads again. True when there was one to drop.
   */
  forget(name: string): boolean;
  /** The cached selections by name. */
  readonly selections: ReadonlyMap<string, unknown>;
  /** The client IP the session is bound to. */
  readonly clientIp: string;
  /** When the session began (kept across suspensions). */
  readonly createdAt: Date;
  /** When the cookie expires if the client makes no further request; null for a browser-session cookie. */
  readonly expiresAt: Date | null;
  /**
   * A logger for hooks, writing through the server's log with this session's `idHash`
   * (`session`), `threadId` and the hook's name on every line.
   */
  readonly log: HookLog;
  /** The worker thread hosting this context. */
  readonly threadId: number;
  /** The node hosting this context: cluster.nodeId (by default the host name and port). */
  readonly nodeId: string;
  /**
   * False until the client presents this session's cookie back: during the first request of a
   * new session, and for a session no request has come back to. An unproven session that
   * leaves memory (idle, the cap, shutdown) is not written to the store, unless `keep()` was
   * called: a client that never returns a cookie (a crawler, a flood) costs no record.
   */
  readonly proven: boolean;
  /** Keeps this session when it leaves memory even while unproven (its memento is saved as for any other). */
  keep(): void;
  /** True once `close()` was called. */
  readonly closed: boolean;
  /** Ends the session after the current request (4D's WEB CLOSE SESSION). */
  close(): void;
  /**
   * Gives the session a new ID when this response is sent, keeping this context and its
   * variables: call it at login and at every change of privilege (OWASP). The response sets
   * the new cookie; the old ID is dead from the next request on. `id` and `idHash` read the
   * new ID from the next request on.
   */
  regenerate(): void;
  /**
   * After this response, closes every other session of this context's userId, live or
   * suspended, on every worker and in the store ("sign out everywhere else", e.g. after a
   * password change). Does nothing while userId is null.
   */
  closeOtherSessions(): void;
}

export interface SelectOptions {
  /** How long a loaded value serves: milliseconds, or a duration such as "90s" or "5m". */
  ttl?: number | string;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/**
 * Logs one line: `(msg)`, `(fields, msg)` or `(error, msg)` (an Error goes under `err`, and
 * without `msg` its message is the line's). No interpolation.
 */
export interface LogMethod {
  (msg: string): void;
  (fields: object, msg?: string): void;
}

/**
 * pino's methods for a hook: lines below `log.level` are dropped before anything is sent to the
 * main thread. A line carries at most 4,096 characters of message and 16,384 of fields (as JSON).
 */
export interface HookLog {
  debug: LogMethod;
  info: LogMethod;
  warn: LogMethod;
  error: LogMethod;
  /** Whether a line at `level` would be written (to skip building costly fields). */
  isLevelEnabled(level: LogLevel): boolean;
}

export type OnConnection<Vars extends object = Record<string, any>, Memento = unknown> = (
  ctx: Context<Vars, Memento>,
  request: Request,
) => Promise<Response | undefined> | Response | undefined;
/** Returns the memento: what `ctx.saved` holds when the session resumes (undefined: none). */
export type OnSessionSuspend<Vars extends object = Record<string, any>, Memento = unknown> = (
  ctx: Context<Vars, Memento>,
  reason: SuspendReason,
) => Promise<Memento | undefined> | Memento | undefined;
