import type { Context } from '../../src/types.ts';

export default async function onSessionSuspend(ctx: Context): Promise<unknown> {
  return { n: ctx.vars.n ?? 0 };
}
