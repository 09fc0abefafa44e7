/**
 * G4, G7, G8 and a paused owner (RELIABILITY.md), on real node processes, on Redis and on
 * PostgreSQL: an owner killed with kill -9 has its sessions taken over from their last
 * checkpoint once its lease is gone; SIGTERM drains a node with no memento lost; a restarted
 * node never takes back what another owns; a paused owner's late writes are refused.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test, type TestContext } from 'node:test';
import { decodeMemento } from '../../src/contexts/memento.ts';
import { skipOrFailOnCi, waitFor, type Reply } from '../helpers.ts';
import { SHARED, unavailableReason } from '../stores/shared-helpers.ts';
import { TestCluster } from './harness.ts';

/** A forward to an owner that stopped answering gives up after 1 s (504) rather than the default 30 s. */
const LEASE = { leaseTimeout: '2s', checkpointInterval: '300ms', forwardTimeout: '1s' };

for (const kind of SHARED) {
  describe(`cluster on ${kind}: takeover, drain and stale owners (G4, G7, G8)`, { timeout: 600_000 }, () => {
    let cluster: TestCluster | undefined;
    let unavailable: string | undefined;
    const ready = (t: TestContext): TestCluster | undefined => {
      if (unavailable !== undefined) skipOrFailOnCi(t, unavailable);
      return cluster;
    };
    /** The memento's count as stored now, and the record's owner. */
    const stored = async (c: TestCluster, id: string) => {
      const { store, close } = await c.inspect();
      try {
        const record = await store.get(id);
        return record && { n: record.memento ? (decodeMemento(record.memento) as { n: number }).n : null, owner: record.owner, fence: record.fence };
      } finally {
        await close();
      }
    };

    before(async () => {
      unavailable = await unavailableReason(kind);
      if (unavailable !== undefined) return;
      cluster = await TestCluster.open(kind);
      await Promise.all(['a', 'b', 'c'].map((name) => cluster!.start(name, LEASE)));
    });
    after(() => cluster?.close());

    test('G4: kill -9 of the owner: once its lease is gone, the next request claims the session on another node, from its last checkpoint', async (t) => {
      const c = ready(t);
      if (!c) return;
      const onA = c.client('a');
      for (let i = 0; i < 5; i++) await onA.get('/inc');
      const id = onA.cookie!;
      // Checkpointed (checkpointInterval 300 ms): the store holds n = 5, owned by a.
      await waitFor(async () => (await stored(c, id))?.n === 5, 10_000, 'the checkpoint of n = 5');
      assert.match((await stored(c, id))!.owner!, /^a#/);
      const killedAt = performance.now();
      await c.signal('a', 'SIGKILL');
      const viaB = c.client('b', id);
      const early: number[] = [];
      let reply: Reply;
      for (;;) {
        reply = await viaB.get('/inc');
        if (reply.status === 200) break;
        early.push(reply.status);
        assert.equal(reply.status, 503, `until the lease expires: 503, not ${reply.status} ${reply.text}`);
        assert.equal(reply.headers['retry-after'], '1', 'the client is told to retry');
        assert.ok(performance.now() - killedAt < 15_000, 'taken over within 15 s');
        await sleep(100);
      }
      const tookMs = performance.now() - killedAt;
      assert.deepEqual({ id: reply.json().id, n: reply.json().n, node: reply.json().node, resumed: reply.json().resumed }, { id, n: 6, node: 'b', resumed: true }, 'resumed on b from the checkpoint');
      assert.ok(tookMs < 2_000 + 3_000, `served elsewhere ${Math.round(tookMs)} ms after the kill (lease 2 s)`);
      const record = (await stored(c, id))!;
      assert.match(record.owner!, /^b#/);
      const logs = c.node('b').logs();
      t.diagnostic(`taken over after ${Math.round(tookMs)} ms; ${early.length} answers before: ${[...new Set(early)].join(', ')}`);
      assert.ok(logs.some((line) => line.event === 'resumed'), 'b resumed it');
      // Through c too: forwarded to b, the new owner.
      const viaC = await c.client('c', id).get('/inc');
      assert.deepEqual({ n: viaC.json().n, node: viaC.json().node }, { n: 7, node: 'b' });
      await c.start('a', LEASE);
    });

    test('G8: a restarted node never takes back what another node owns now', async (t) => {
      const c = ready(t);
      if (!c) return;
      const onB = c.client('b');
      for (let i = 0; i < 3; i++) await onB.get('/inc');
      const id = onB.cookie!;
      await waitFor(async () => (await stored(c, id))?.n === 3, 10_000, 'the checkpoint');
      await c.signal('b', 'SIGKILL');
      // c takes it over once b's lease is gone.
      const viaC = c.client('c', id);
      await waitFor(async () => (await viaC.get('/inc')).status === 200, 15_000, 'the takeover by c');
      const taken = (await stored(c, id))!;
      assert.match(taken.owner!, /^c#/);
      // b comes back (a new incarnation, no memory of what it held): it forwards, never claims.
      await c.start('b', LEASE);
      for (let i = 0; i < 3; i++) {
        const reply = await c.client('b', id).get('/inc');
        assert.equal(reply.status, 200, reply.text);
        assert.equal(reply.json().node, 'c', 'answered by the owner, c');
      }
      const now = (await stored(c, id))!;
      assert.equal(now.owner, taken.owner, 'still c’s incarnation');
      assert.equal(now.fence, taken.fence, 'no change of owner');
    });

    test('paused owner (SIGSTOP past its lease): another node takes over; after SIGCONT its late writes are refused and its copy is dropped', async (t) => {
      const c = ready(t);
      if (!c) return;
      const onA = c.client('a');
      for (let i = 0; i < 4; i++) await onA.get('/inc');
      const id = onA.cookie!;
      await waitFor(async () => (await stored(c, id))?.n === 4, 10_000, 'the checkpoint');
      // More work on a that is not checkpointed yet when it stops.
      await onA.get('/inc');
      await c.signal('a', 'SIGSTOP');
      let taken: Reply | undefined;
      try {
        const viaB = c.client('b', id);
        await waitFor(async () => {
          const reply = await viaB.get('/inc');
          if (reply.status === 200) taken = reply;
          else assert.ok([503, 504].includes(reply.status), `${reply.status} ${reply.text}`);
          return reply.status === 200;
        }, 20_000, 'the takeover by b');
        for (let i = 0; i < 3; i++) assert.equal((await viaB.get('/inc')).status, 200);
      } finally {
        await c.signal('a', 'SIGCONT');
      }
      assert.equal(taken!.json().node, 'b');
      assert.equal(taken!.json().n, 5, 'from the checkpoint (n = 4): the fifth request on a was never saved');
      const after = taken!.json().n as number;
      // a finds its lease gone: it lets its contexts go (their writes fenced out) and rejoins.
      await waitFor(() => c.node('a').logs().some((line) => line.event === 'lease-acquired'), 20_000, 'a rejoining under a new incarnation');
      await sleep(1_000);
      const record = (await stored(c, id))!;
      assert.match(record.owner!, /^b#/, 'b still owns it');
      const viaA = await c.client('a', id).get('/inc');
      assert.equal(viaA.status, 200, viaA.text);
      assert.deepEqual({ node: viaA.json().node, n: viaA.json().n }, { node: 'b', n: after + 4 }, 'a forwards to b; b’s count goes on, nothing of a’s copy came back');
      assert.ok(c.node('a').logs().some((line) => line.event === 'lease-lost'), 'a said it lost its lease');
    });

    test('G7: SIGTERM drains a node: every context suspended and released, the lease deleted, no memento lost, at most one retry per client', async (t) => {
      const c = ready(t);
      if (!c) return;
      const clients = [];
      for (let i = 0; i < 20; i++) {
        const client = c.client('c');
        for (let k = 0; k <= i % 4; k++) await client.get('/inc');
        clients.push({ client, id: client.cookie!, n: (i % 4) + 1 });
      }
      const { registry, close } = await c.inspect();
      const owner = (await registry.nodes()).find((lease) => lease.nodeId === 'c')!.owner;
      // Clients keep going through a and b while c drains; a 503 is retried after Retry-After.
      const retries = new Map<string, number>();
      const draining = c.signal('c', 'SIGTERM');
      await Promise.all(
        clients.map(async (entry, i) => {
          const through = c.client(i % 2 ? 'a' : 'b', entry.id);
          for (;;) {
            const reply = await through.get('/inc');
            if (reply.status === 200) {
              entry.n++;
              assert.equal(reply.json().n, entry.n, `${entry.id}: no memento lost (${reply.text})`);
              break;
            }
            assert.ok([502, 503].includes(reply.status), `${reply.status} ${reply.text}`);
            retries.set(entry.id, (retries.get(entry.id) ?? 0) + 1);
            await sleep(Number(reply.headers['retry-after'] ?? 1) * 1000);
          }
        }),
      );
      assert.equal(await draining, 0, 'c exits 0');
      assert.ok([...retries.values()].every((count) => count <= 1), `retries per client: ${JSON.stringify([...retries.values()])}`);
      assert.ok(!(await registry.nodes()).some((lease) => lease.owner === owner), 'c’s lease is gone');
      await close();
      for (const entry of clients) {
        const reply = await c.client('a', entry.id).get('/state');
        assert.equal(reply.json().n, entry.n);
      }
    });
  });
}
