/**
 * In a cluster, a request for a session another node holds is an "unknown ID" on the node it
 * reaches: its store lookup counts against the source's sessions.maxUnknownIdsPerIp while it is
 * under way, and is given back once the store finds the session (src/sessions/guesses.ts).
 * More such requests in flight at once from one source than the budget (every client behind
 * one NAT, or a balancer without trustProxy) once made the surplus count as guesses: answered
 * with a NEW session whose Set-Cookie replaced the client's (here, with a budget of 5 and 20
 * concurrent requests, 14 then 5 of 20 in two runs). Now a source whose budget is spent by
 * lookups still under way waits for them before any of its IDs is taken for a guess.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Agent, request } from 'undici';
import { skipOrFailOnCi } from '../helpers.ts';
import { unavailableReason } from '../stores/shared-helpers.ts';
import { TestCluster } from './harness.ts';

test('forwarded requests in flight do not spend the unknown-ID budget: none is answered with a new session', { timeout: 120_000 }, async (t) => {
  const why = await unavailableReason('redis');
  if (why !== undefined) return skipOrFailOnCi(t, why);
  const c = await TestCluster.open('redis');
  after(() => c.close());
  const options = { leaseTimeout: '2s', sessions: { maxUnknownIdsPerIp: 5 } };
  await Promise.all(['a', 'b'].map((name) => c.start(name, options)));
  const ids: string[] = [];
  for (let i = 0; i < 20; i++) {
    const answer = await request(`${c.node('a').url}/inc`);
    ids.push(((await answer.body.json()) as { id: string }).id);
  }
  const agent = new Agent({ connections: 50 });
  try {
    const answers = await Promise.all(
      ids.map(async (id) => {
        const answer = await request(`${c.node('b').url}/inc`, { headers: { cookie: `RSID=${id}` }, dispatcher: agent });
        return { asked: id, got: ((await answer.body.json()) as { id: string }).id };
      }),
    );
    const replaced = answers.filter((a) => a.got !== a.asked);
    t.diagnostic(`${replaced.length} of ${ids.length} answered with another (new) session`);
    assert.equal(replaced.length, 0);
  } finally {
    await agent.close();
  }
});
