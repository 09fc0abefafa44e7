/** The bench's hook: a hit counter, and a cached selection read back on every request. */
import type { Context } from '../../src/types.ts';

const emptyVars = process.env.EMPTY_VARS === '1';

export default async function onConnection(ctx: Context, request: Request): Promise<Response> {
  // Memory workload: measure the bookkeeping of a context, not what a hook keeps in it.
  if (emptyVars) return new Response('ok');
  if (request.url.endsWith('/select')) {
    const rows = await ctx.select('rows', () => Array.from({ length: 100 }, (_, i) => i));
    return new Response(String(rows.length));
  }
  if (ctx.isNew && ctx.saved) ctx.vars.n = (ctx.saved as { n: number }).n;
  ctx.vars.n = (ctx.vars.n ?? 0) + 1;
  return new Response(String(ctx.vars.n));
}
