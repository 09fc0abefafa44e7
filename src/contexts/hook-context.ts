/**
 * What a hook receives as `ctx`: a view of the context for one hook call. The context's state
 * (vars, selections) is shared by every call; session effects (close, regenerate, userId,
 * closeOtherSessions) belong to the call that asked for them. Once its request has been
 * answered (the hook timed out, threw, or returned), the view refuses them: a hook still
 * running after a 504 can never hand a new ID, a user or a close to another request's
 * response (issue 9, finding 3: session fixation through a late regenerate).
 */
import { ResidentError } from '../errors.ts';
import type { Context, HookLog, SelectOptions } from '../types.ts';
import type { LiveContext } from './context.ts';
import { hookLog, type HookName } from './hook-log.ts';

/** What one request asked of its session, delivered with that request's reply and never later. */
export interface SessionEffects {
  closed: boolean;
  regenerate: boolean;
  /** closeOtherSessions() was called while the session belonged to this user. */
  closeOthersOf?: string;
  /** Present when the request changed ctx.userId. */
  userId?: string | null;
}

/** Told of every refused effect, so the log says why a late hook call threw. */
let reportRefusal: (message: string) => void = () => {};

export function onRefusedEffect(report: (message: string) => void): void {
  reportRefusal = report;
}

export class HookContext implements Context {
  readonly #live: LiveContext;
  /** Why effects are refused; null while the request is unanswered. */
  #refusal: string | null;
  #effects: SessionEffects | null = null;
  readonly #hook: HookName;
  /** Made on first use (private fields stay writable in a frozen object). */
  #log: HookLog | null = null;

  /** onSessionSuspend's view refuses every effect: it reads and saves, effects belong to requests. */
  constructor(live: LiveContext, hook: HookName = 'onConnection') {
    this.#live = live;
    this.#hook = hook;
    this.#refusal = hook === 'onSessionSuspend' ? 'onSessionSuspend cannot change the session (only onConnection can)' : null;
    // Read-only for what a hook may only read (id, isNew, …): a hook written in plain
    // JavaScript that assigns or defines one gets a TypeError instead of a view that lies,
    // and the worker's own context object is never handed out. vars and selections stay
    // mutable through their own objects.
    Object.freeze(this);
  }

  /** The request was answered: returns what it asked for; every later effect is refused. */
  settle(): SessionEffects | null {
    this.#refusal ??= 'its request was already answered (timed out, failed or returned)';
    return this.#effects;
  }

  #accept(what: string): SessionEffects {
    if (this.#refusal !== null) {
      const message = `${what} refused: ${this.#refusal}`;
      reportRefusal(message);
      throw new ResidentError('RESIDENT_ERR_EFFECT_REFUSED', message);
    }
    return (this.#effects ??= { closed: false, regenerate: false });
  }

  get id(): string {
    return this.#live.id;
  }

  get idHash(): string {
    return this.#live.idHash;
  }

  get isNew(): boolean {
    return this.#live.isNew;
  }

  get resumed(): boolean {
    return this.#live.resumed;
  }

  get saved(): unknown {
    return this.#live.saved;
  }

  get savedVersion(): number | undefined {
    return this.#live.savedVersion;
  }

  get userId(): string | null {
    return this.#live.userId;
  }

  set userId(value: string | null) {
    const effects = this.#accept('setting ctx.userId');
    if (this.#live.changeUser(value)) effects.userId = value;
  }

  get vars(): Record<string, any> {
    return this.#live.vars;
  }

  set vars(value: Record<string, any>) {
    if (typeof value !== 'object' || value === null) throw new TypeError('ctx.vars must be an object');
    this.#live.vars = value;
  }

  select<T>(name: string, load: () => T | Promise<T>, options?: SelectOptions): Promise<T> {
    return this.#live.select(name, load, options);
  }

  forget(name: string): boolean {
    return this.#live.forget(name);
  }

  /** Usable at any time, even after the request was answered: a line changes nothing. */
  get log(): HookLog {
    const live = this.#live;
    return (this.#log ??= hookLog(this.#hook, () => live.idHash));
  }

  get selections(): ReadonlyMap<string, unknown> {
    return this.#live.selections;
  }

  get clientIp(): string {
    return this.#live.clientIp;
  }

  get createdAt(): Date {
    return this.#live.createdAt;
  }

  get expiresAt(): Date | null {
    return this.#live.expiresAt;
  }

  get threadId(): number {
    return this.#live.threadId;
  }

  get nodeId(): string {
    return this.#live.nodeId;
  }

  get closed(): boolean {
    return this.#live.closed;
  }

  get proven(): boolean {
    return this.#live.proven;
  }

  /** A wish about the context, not an effect of one request: allowed in either hook, at any time. */
  keep(): void {
    this.#live.keep();
  }

  close(): void {
    this.#accept('ctx.close()').closed = true;
    this.#live.markClosed();
  }

  regenerate(): void {
    this.#accept('ctx.regenerate()').regenerate = true;
  }

  /**
   * Names the user at the time of the call, so "sign out everywhere" followed by a sign-out
   * (userId = null) or a close in the same request still reaches the user's other sessions.
   */
  closeOtherSessions(): void {
    const effects = this.#accept('ctx.closeOtherSessions()');
    const userId = this.#live.userId;
    if (userId !== null) effects.closeOthersOf = userId;
  }
}

// The class's accessors are shared by every view on the thread: frozen too, so one hook cannot
// redefine what every other session's ctx answers.
Object.freeze(HookContext.prototype);
