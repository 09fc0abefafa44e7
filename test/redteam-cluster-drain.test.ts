/**
 * Red team, cluster mode (issue 14): SIGTERM drain racing a steady stream of requests through
 * both nodes, on real nodes sharing a real Redis: no increment lost, none applied twice, the
 * counter never goes back, and every session is served again by the remaining node.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { send } from './helpers.ts';
import { clusterFor } from './cluster/harness.ts';

const SESSIONS = 30;

describe('red team: drain under load (redis)', { timeout: 150_000 }, () => {
  const ready = clusterFor('redis', ['a', 'b'], { leaseTimeout: '3s', forwardTimeout: '2s', threads: 2 });

  test('held: SIGTERM of the owner of 30 busy sessions: the counter never goes back or repeats, and all are served by b after', async (t) => {
    const c = ready(t);
    if (!c) return;
    const a = c.node('a').url;
    const b = c.node('b').url;
    const ids: string[] = [];
    for (let i = 0; i < SESSIONS; i++) ids.push((await send(`${a}/inc`)).json().id);
    let stop = false;
    const problems: string[] = [];
    const statuses = new Map<string, number>();
    const loops = ids.map(async (id, i) => {
      let last = 1;
      let ambiguous = false;
      for (let k = 0; !stop; k++) {
        const via = (i + k) % 2 === 0 || !c.nodes.has('a') ? b : a;
        let status: string;
        try {
          const reply = await send(`${via}/inc`, { headers: { cookie: `RSID=${id}` } });
          status = String(reply.status);
          if (reply.status === 200) {
            const { n, id: got } = reply.json() as { n: number; id: string };
            if (got !== id) problems.push(`${id.slice(0, 4)}: answered by ${got.slice(0, 4)}`);
            else if (n <= last || (n !== last + 1 && !ambiguous)) problems.push(`${id.slice(0, 4)}: n ${last} then ${n}${ambiguous ? ' (after an ambiguous failure)' : ''}`);
            last = Math.max(last, n);
            ambiguous = false;
          } else ambiguous = true;
        } catch (error) {
          status = (error as { code?: string }).code ?? 'error';
          ambiguous = true;
        }
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        await sleep(5);
      }
      return last;
    });
    await sleep(1_500);
    await c.signal('a', 'SIGTERM', 60_000);
    await sleep(2_000);
    stop = true;
    const lasts = await Promise.all(loops);
    t.diagnostic(`statuses: ${JSON.stringify([...statuses])}`);
    for (const [i, id] of ids.entries()) {
      const state = await send(`${b}/state`, { headers: { cookie: `RSID=${id}` } });
      if (state.status !== 200 || state.json().id !== id || (state.json().n !== lasts[i] && state.json().n !== lasts[i]! + 1)) problems.push(`${id.slice(0, 4)}: after the drain ${state.status} n ${state.status === 200 ? state.json().n : '-'} (last seen ${lasts[i]})`);
    }
    assert.deepEqual(problems, []);
  });
});
