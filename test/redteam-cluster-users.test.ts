/**
 * Red team, cluster mode (issue 14): sessions.maxPerUser across nodes, raced: one user signs in
 * on three nodes at once, on real nodes sharing a real Redis.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { send, skipOrFailOnCi } from './helpers.ts';
import { unavailableReason } from './stores/shared-helpers.ts';
import { TestCluster } from './cluster/harness.ts';

const NODES = ['a', 'b', 'c'];
const ROUNDS = 30;

describe('red team: one user on several nodes at once (redis)', { timeout: 150_000 }, () => {
  let cluster: TestCluster | undefined;
  let unavailable: string | undefined;
  const ready = (t: TestContext): TestCluster | undefined => {
    if (unavailable !== undefined) skipOrFailOnCi(t, unavailable);
    return cluster;
  };
  const get = (node: string, path: string, id?: string) => send(cluster!.node(node).url + path, { headers: id ? { cookie: `RSID=${id}` } : {} });
  /** Which of `ids` are still live sessions of `user` (asked through node a). */
  const alive = async (ids: string[], user: string) => {
    const live: string[] = [];
    for (const id of ids) {
      const reply = await get('a', '/state', id);
      if (reply.status === 200 && reply.json().id === id && reply.json().userId === user) live.push(id);
    }
    return live;
  };

  before(async () => {
    unavailable = await unavailableReason('redis');
    if (unavailable !== undefined) return;
    cluster = await TestCluster.open('redis');
    await Promise.all(NODES.map((name) => cluster!.start(name, { leaseTimeout: '10s', threads: 1, sessions: { maxPerUser: 1 } })));
  });
  after(() => cluster?.close());

  test(
    `hole 8, fixed (the test shows it closed): maxPerUser 1: ${ROUNDS} rounds of one user signing in on three nodes at once: exactly one session of the user remains`,
    async (t) => {
    const c = ready(t);
    if (!c) return;
    // The rule, signed in one node after the other: the last sign-in is the one that stays.
    for (let round = 0; round < 3; round++) {
      const ids: string[] = [];
      for (const node of NODES) ids.push((await get(node, '/inc')).json().id as string);
      for (const [i, node] of NODES.entries()) await get(node, `/login?user=seq${round}`, ids[i]);
      await sleep(300);
      assert.deepEqual(await alive(ids, `seq${round}`), [ids[2]], 'one after the other: the last one stays');
    }
    // The same race with the three sessions on one node: one stays (the rule holds there).
    const local = new Map<number, number>();
    for (let round = 0; round < 10; round++) {
      const ids = await Promise.all(NODES.map(async () => (await get('a', '/inc')).json().id as string));
      await Promise.all(ids.map((id) => get('a', `/login?user=local${round}`, id)));
      await sleep(300);
      const n = (await alive(ids, `local${round}`)).length;
      local.set(n, (local.get(n) ?? 0) + 1);
    }
    t.diagnostic(`the race on one node, rounds by sessions left: ${JSON.stringify([...local].sort())}`);
    assert.deepEqual([...local.keys()], [1], 'on one node the race leaves one session');
    const counts = new Map<number, number>();
    for (let round = 0; round < ROUNDS; round++) {
      const ids = await Promise.all(NODES.map(async (node) => (await get(node, '/inc')).json().id as string));
      const user = `u${round}`;
      await Promise.all(NODES.map((node, i) => get(node, `/login?user=${user}`, ids[i])));
      await sleep(300);
      const live = await alive(ids, user);
      counts.set(live.length, (counts.get(live.length) ?? 0) + 1);
    }
    t.diagnostic(`sessions of the user left after the race: ${JSON.stringify([...counts].sort())}`);
    assert.deepEqual([...counts.keys()], [1], `rounds by the number of sessions left: ${JSON.stringify([...counts])}`);
    },
  );
});
