/**
 * Red team, cluster mode (issue 14): the forwarder's connection pool to one owner (undici
 * Agent, 128 connections per origin), on real nodes sharing a real Redis. Long requests (a
 * long poll, a server-sent-events stream) forwarded from one node to another each hold one
 * connection for their whole life, and a client that goes away does not give its back.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test, type TestContext } from 'node:test';
import { Agent, request } from 'undici';
import { send, skipOrFailOnCi } from './helpers.ts';
import { unavailableReason } from './stores/shared-helpers.ts';
import { TestCluster } from './cluster/harness.ts';

const LONG = 140;

describe('red team: the forwarder pool (redis)', { timeout: 120_000 }, () => {
  let cluster: TestCluster | undefined;
  let unavailable: string | undefined;
  const ready = (t: TestContext): TestCluster | undefined => {
    if (unavailable !== undefined) skipOrFailOnCi(t, unavailable);
    return cluster;
  };

  before(async () => {
    unavailable = await unavailableReason('redis');
    if (unavailable !== undefined) return;
    cluster = await TestCluster.open('redis');
    const options = { leaseTimeout: '10s', forwardTimeout: '30s', threads: 1, sessions: { maxContexts: 1000, maxUnprovenPerIp: 1000 } };
    await Promise.all(['a', 'b'].map((name) => cluster!.start(name, options)));
  });
  after(() => cluster?.close());

  test(
    `hole 6: ${LONG} long requests forwarded from b to a (clients gone) stall every other forward from b to a`,
    async (t) => {
      const c = ready(t);
      if (!c) return;
      const a = c.node('a').url;
      const b = c.node('b').url;
      const ids: string[] = [];
      for (let i = 0; i < LONG + 1; i++) ids.push((await send(`${a}/inc`)).json().id);
      // Each long request from a client of its own, which goes away after 200 ms.
      const clients = ids.slice(0, LONG).map(() => new Agent());
      t.after(() => Promise.all(clients.map((agent) => agent.destroy())));
      await Promise.all(
        ids.slice(0, LONG).map(async (id, i) => {
          const abort = new AbortController();
          const pending = request(`${b}/hang?ms=20000`, { headers: { cookie: `RSID=${id}` }, dispatcher: clients[i], signal: abort.signal }).catch(() => undefined);
          setTimeout(() => abort.abort(), 200);
          await pending;
        }),
      );
      const started = performance.now();
      const reply = await send(`${b}/state`, { headers: { cookie: `RSID=${ids[LONG]}` } });
      const took = performance.now() - started;
      assert.equal(reply.status, 200, reply.text);
      assert.ok(took < 2_000, `an ordinary forward from b to a waited ${Math.round(took)} ms behind the long ones whose clients left`);
    },
  );

  test('held: a non-owner that forwards requests of 800 sessions keeps nothing of them (overview: no live, no known, no unproven)', async (t) => {
    const c = ready(t);
    if (!c) return;
    const a = c.node('a').url;
    const b = c.node('b').url;
    const before = (await c.admin('b', 'api/overview')).body.sessions;
    const ids: string[] = [];
    for (let i = 0; i < 800; i += 50) ids.push(...(await Promise.all(Array.from({ length: 50 }, async () => (await send(`${a}/inc`)).json().id as string))));
    for (let i = 0; i < ids.length; i += 50) {
      const replies = await Promise.all(ids.slice(i, i + 50).map((id) => send(`${b}/state`, { headers: { cookie: `RSID=${id}` } })));
      for (const [j, reply] of replies.entries()) {
        const got = reply.json();
        assert.deepEqual([got.node, got.id], ['a', ids[i + j]], `session ${i + j} through b: ${reply.status} ${reply.text.slice(0, 200)}`);
      }
    }
    const afterwards = (await c.admin('b', 'api/overview')).body;
    t.diagnostic(`b before ${JSON.stringify(before)}, after ${JSON.stringify(afterwards.sessions)}, forwards ${afterwards.counters.forwards}`);
    assert.deepEqual(afterwards.sessions, before);
    assert.ok(afterwards.counters.forwards >= 800);
  });
});
