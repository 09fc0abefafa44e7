/**
 * What a hook module imports at run time (the package's `resident/hooks`). It is loaded inside
 * every worker thread, so it imports nothing but types: never server code.
 */
import type { OnConnection, OnSessionSuspend } from './types.ts';

export type { Context, HookLog, LogLevel, LogMethod, OnConnection, OnSessionSuspend, SelectOptions, SuspendReason } from './types.ts';

/** The hooks of one application, typed by its `Vars` and `Memento`. */
export interface Hooks<Vars extends object, Memento> {
  /** Types `fn` as this application's onConnection; returns it unchanged (export it as default). */
  onConnection(fn: OnConnection<Vars, Memento>): OnConnection<Vars, Memento>;
  /** Types `fn` as this application's onSessionSuspend; returns it unchanged (export it as default). */
  onSessionSuspend(fn: OnSessionSuspend<Vars, Memento>): OnSessionSuspend<Vars, Memento>;
}

const identity = <T>(fn: T): T => fn;
const hooks = Object.freeze({ onConnection: identity, onSessionSuspend: identity });

/**
 * Ties both hooks to one `Vars` (the type of `ctx.vars`: declare its fields optional, a new
 * context's vars is `{}`) and one `Memento` (what onSessionSuspend returns and `ctx.saved` holds;
 * `undefined`, the default, for an application that keeps nothing).
 *
 * @example
 * // hooks/state.ts
 * export interface Vars { step?: number }
 * export interface Memento { step: number }
 * export const hooks = defineHooks<Vars, Memento>();
 * // hooks/onConnection.ts
 * export default hooks.onConnection((ctx) => new Response(`step ${ctx.vars.step ?? ctx.saved?.step ?? 0}`));
 */
export function defineHooks<Vars extends object, Memento = undefined>(): Hooks<Vars, Memento> {
  return hooks;
}
