/**
 * The demo's onSessionSuspend hook: the context is about to leave memory. What it returns is
 * the memento, kept while the session is suspended and handed back as `ctx.saved`.
 */
import type { Context, SuspendReason } from '../types.ts';
import type { Cart } from './cart.ts';

export interface DemoMemento {
  hits: number;
  cart: Array<[string, number]>;
  employeeId: number | null;
}

export default async function onSessionSuspend(ctx: Context, _reason: SuspendReason): Promise<DemoMemento> {
  // Cached selections are not saved: they are reloaded from the database on demand.
  return {
    hits: ctx.vars.hits ?? 0,
    cart: (ctx.vars.cart as Cart | undefined)?.entries() ?? [],
    employeeId: ctx.vars.employeeId ?? null,
  };
}
