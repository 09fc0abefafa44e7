/**
 * The demo's onSessionSuspend hook: the context is about to leave memory. What it returns is
 * the memento, kept while the session is suspended and handed back as `ctx.saved`.
 */
import { hooks } from './state.ts';

export default hooks.onSessionSuspend(async (ctx) => {
  // Cached selections are not saved: they are reloaded from the database on demand.
  return {
    hits: ctx.vars.hits ?? 0,
    cart: ctx.vars.cart?.entries() ?? [],
    employeeId: ctx.vars.employeeId ?? null,
  };
});
