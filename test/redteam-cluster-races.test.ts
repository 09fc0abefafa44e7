/**
 * Red team, cluster mode (issue 14): hundreds of races on real nodes (CLI processes, 2 threads
 * each) sharing a real Redis, then a real PostgreSQL: concurrent first requests for one idle (unowned) session through
 * every node at once, and close/regenerate racing with requests on other nodes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { decodeMemento } from '../src/contexts/memento.ts';
import { send, skipOrFailOnCi, type Reply } from './helpers.ts';
import { SHARED, unavailableReason } from './stores/shared-helpers.ts';
import { TestCluster } from './cluster/harness.ts';

const NODES = ['a', 'b', 'c'];
const SESSIONS = 40;
const ROUNDS = 6;

for (const kind of SHARED) describe(`red team: cluster claim races (${kind})`, { timeout: 180_000 }, () => {
  let cluster: TestCluster | undefined;
  let unavailable: string | undefined;
  const ready = (t: TestContext): TestCluster | undefined => {
    if (unavailable !== undefined) skipOrFailOnCi(t, unavailable);
    return cluster;
  };
  const get = (node: string, path: string, id?: string): Promise<Reply> => send(cluster!.node(node).url + path, { headers: id ? { cookie: `RSID=${id}` } : {} });
  const newId = (reply: Reply) => reply.setCookies.find((line) => line.startsWith('RSID='))?.split(';')[0]!.slice(5);

  /** Waits until every one of `ids` is suspended and released in the store (owner null). */
  async function idle(ids: string[]): Promise<Map<string, number>> {
    const { store, close } = await cluster!.inspect();
    try {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const records = await Promise.all(ids.map((id) => store.get(id)));
        if (records.every((r) => r && r.owner === null)) {
          return new Map(records.map((r) => [r!.id, r!.memento ? (decodeMemento(r!.memento) as { n: number }).n : 0]));
        }
        if (Date.now() > deadline) throw new Error(`not released: ${records.filter((r) => r?.owner !== null).length}`);
        await sleep(200);
      }
    } finally {
      await close();
    }
  }

  before(async () => {
    unavailable = await unavailableReason(kind);
    if (unavailable !== undefined) return;
    cluster = await TestCluster.open(kind);
    // Every request of this file comes from 127.0.0.1, and its closes and regenerates leave
    // hundreds of dead IDs that the nodes look up within a minute: past sessions.maxUnknownIdsPerIp
    // (100 a minute) that one address is taken for a guesser and its live IDs for none, by
    // design (issue 12), and the races under test would be hidden behind new sessions. Off here.
    await Promise.all(NODES.map((name) => cluster!.start(name, { leaseTimeout: '10s', processTimeout: '1200ms', threads: 2, sessions: { maxUnknownIdsPerIp: 0 } })));
  });
  after(() => cluster?.close());

  test(`held: ${SESSIONS * ROUNDS} rounds of 6 concurrent first requests (2 per node) for one idle session: one context, the counter never forks`, async (t) => {
    const c = ready(t);
    if (!c) return;
    const ids: string[] = [];
    for (let i = 0; i < SESSIONS; i++) {
      const reply = await get(NODES[i % 3]!, '/inc');
      assert.equal(reply.status, 200, reply.text);
      ids.push(reply.json().id);
    }
    const problems: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const base = await idle(ids);
      await Promise.all(
        ids.map(async (id) => {
          const replies = await Promise.all([...NODES, ...NODES].map((node) => get(node, '/inc', id)));
          const ok = replies.filter((r) => r.status === 200).map((r) => r.json() as { id: string; n: number; node: string; epoch: string });
          const bad = replies.filter((r) => r.status !== 200);
          if (bad.length) problems.push(`${id.slice(0, 4)} round ${round}: statuses ${bad.map((r) => `${r.status} ${r.text.slice(0, 60)}`).join(', ')}`);
          if (ok.some((r) => r.id !== id)) problems.push(`${id.slice(0, 4)} round ${round}: answered by another session ${ok.map((r) => r.id.slice(0, 4)).join(',')}`);
          if (new Set(ok.map((r) => r.epoch)).size > 1) problems.push(`${id.slice(0, 4)} round ${round}: ${new Set(ok.map((r) => r.epoch)).size} live copies on ${[...new Set(ok.map((r) => r.node))].join(',')}`);
          const ns = ok.map((r) => r.n).sort((x, y) => x - y);
          const expected = ok.map((_, i) => base.get(id)! + i + 1);
          if (JSON.stringify(ns) !== JSON.stringify(expected)) problems.push(`${id.slice(0, 4)} round ${round}: n ${ns.join(',')} from ${base.get(id)} (fork)`);
        }),
      );
    }
    assert.deepEqual(problems, []);
  });

  test('held: close on one node racing requests on the two others, 40 sessions: a closed session never comes back', async (t) => {
    const c = ready(t);
    if (!c) return;
    const ids: string[] = [];
    for (let i = 0; i < SESSIONS; i++) ids.push((await get(NODES[i % 3]!, '/inc')).json().id);
    await idle(ids);
    await Promise.all(ids.map((id, i) => Promise.all([get(NODES[i % 3]!, '/close', id), get(NODES[(i + 1) % 3]!, '/inc', id), get(NODES[(i + 2) % 3]!, '/inc', id)])));
    await sleep(500);
    const { store, close } = await c.inspect();
    const problems: string[] = [];
    try {
      for (const id of ids) {
        for (const node of NODES) {
          const reply = await get(node, '/state', id);
          if (reply.status === 200 && reply.json().id === id) problems.push(`${id.slice(0, 4)} alive on ${reply.json().node} after its close (n ${reply.json().n})`);
        }
        // The /state above made new sessions of their own; the closed ID's record must be gone.
        if (await store.get(id)) problems.push(`${id.slice(0, 4)}: record still stored after the close`);
      }
    } finally {
      await close();
    }
    assert.deepEqual(problems, []);
  });

  test('held: regenerate on one node racing requests on the two others: the old ID is never served again, the new one carries the count', async (t) => {
    const c = ready(t);
    if (!c) return;
    const ids: string[] = [];
    for (let i = 0; i < SESSIONS; i++) ids.push((await get(NODES[i % 3]!, '/inc')).json().id);
    await idle(ids);
    const fresh = new Map<string, string>();
    await Promise.all(
      ids.map(async (id, i) => {
        const [regen] = await Promise.all([get(NODES[i % 3]!, '/regenerate', id), get(NODES[(i + 1) % 3]!, '/inc', id), get(NODES[(i + 2) % 3]!, '/inc', id)]);
        if (regen.status === 200) fresh.set(id, newId(regen) ?? regen.json().id);
      }),
    );
    await sleep(300);
    const problems: string[] = [];
    for (const id of ids) {
      for (const node of NODES) {
        const reply = await get(node, '/state', id);
        if (reply.status === 200 && reply.json().id === id) problems.push(`${id.slice(0, 4)} served under its old ID on ${reply.json().node}`);
      }
      const moved = fresh.get(id);
      if (!moved) {
        problems.push(`${id.slice(0, 4)}: regenerate not answered 200`);
        continue;
      }
      const states = await Promise.all(NODES.map((node) => get(node, '/state', moved)));
      const ns = new Set(states.map((s) => (s.status === 200 && s.json().id === moved ? s.json().n : `lost ${s.status}`)));
      if (ns.size !== 1 || [...ns][0]! < 1) problems.push(`${id.slice(0, 4)}→${moved.slice(0, 4)}: ${[...ns].join(',')}`);
    }
    assert.deepEqual(problems, []);
  });
});
