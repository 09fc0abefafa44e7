/**
 * Builtins taken before any hook module loads, as Node's own internals do (its `primordials`).
 * A hook runs on the same thread as the HTTP edge and may patch String.prototype or
 * Set.prototype (red team 2, F9); the checks that decide the framing and the session cookie
 * call these instead. The worker imports this module first (./contexts/worker.ts), so they are
 * the originals even though the edge's own modules load after the hooks.
 *
 * Bound, not looked up at call time: a bound function does not go through
 * Function.prototype.call when called, so patching that does not reach them either.
 */
const { call } = Function.prototype;

export const lowerCase: (text: string) => string = call.bind(String.prototype.toLowerCase);
export const indexOf: (text: string, search: string) => number = call.bind(String.prototype.indexOf);
export const slice: (text: string, start: number, end?: number) => string = call.bind(String.prototype.slice);
export const trim: (text: string) => string = call.bind(String.prototype.trim);
