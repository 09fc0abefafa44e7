/**
 * The demo's types, shared by its two hooks through defineHooks: `ctx.vars` is a DemoVars and
 * `ctx.saved` a DemoMemento, checked by tsc with no casts. Your app declares its own.
 */
import { defineHooks } from '../hooks-api.ts';
import type { Cart } from './cart.ts';

/** What a context holds while it lives. A new context's vars is `{}`: every field is optional. */
export interface DemoVars {
  hits?: number;
  cart?: Cart;
  employeeId?: number | null;
}

/** What onSessionSuspend saves and `ctx.saved` gives back: plain data (the Cart as its entries). */
export interface DemoMemento {
  hits: number;
  cart: Array<[string, number]>;
  employeeId: number | null;
}

export const hooks = defineHooks<DemoVars, DemoMemento>();
