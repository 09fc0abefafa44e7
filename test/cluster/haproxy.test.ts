/**
 * deploy/haproxy.cfg as shipped (only its ports replaced) in front of three real nodes, on
 * Redis and on PostgreSQL: the routing cookie sends every client straight to the node that owns
 * its session (no forwarding); a node drained with SIGTERM mid-traffic costs each client at most
 * one failed request and no count; a client whose cookie names a node killed with kill -9 is
 * redispatched and its session taken over from the last checkpoint once the lease is gone.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test, type TestContext } from 'node:test';
import { decodeMemento } from '../../src/contexts/memento.ts';
import { skipOrFailOnCi, waitFor } from '../helpers.ts';
import { SHARED, unavailableReason } from '../stores/shared-helpers.ts';
import { TestCluster } from './harness.ts';
import { BalancedClient, TestHaproxy, haproxyUnavailable, type BalancedReply } from './haproxy-harness.ts';

/** Short lease and checkpoints, so a kill -9 is taken over within seconds (test c). */
const NODE = { leaseTimeout: '2s', checkpointInterval: '300ms', forwardTimeout: '1s', sessions: { trustProxy: ['loopback'] } };
const NAMES = ['a', 'b', 'c'];
const CLIENTS = 30;
const REQUESTS = 10;

/**
 * The requests of HAProxy's log (option httplog) that needed a retry: the 5th field of
 * actconn/feconn/beconn/srv_conn/retries is non-zero, "+N" when the last one was redispatched.
 */
function retried(log: string): number {
  return [...log.matchAll(/ \d+\/\d+\/\d+\/\d+\/(\+?\d+) \d+\/\d+ "/g)].filter((match) => match[1] !== '0').length;
}

for (const kind of SHARED) {
  describe(`HAProxy (deploy/haproxy.cfg) in front of three nodes on ${kind}`, { timeout: 600_000 }, () => {
    let cluster: TestCluster | undefined;
    let haproxy: TestHaproxy | undefined;
    let unavailable: string | undefined;
    const clients: BalancedClient[] = [];
    const ready = (t: TestContext): { c: TestCluster; lb: TestHaproxy } | undefined => {
      if (unavailable !== undefined) skipOrFailOnCi(t, unavailable);
      return cluster && haproxy && { c: cluster, lb: haproxy };
    };
    /** A client of the balancer from its own loopback address (127.0.0.<10+i>). */
    const client = (lb: TestHaproxy, i: number) => {
      const one = new BalancedClient(lb.url, `127.0.0.${10 + i}`);
      clients.push(one);
      return one;
    };
    /** resident_cluster_forwards_total of each running node. */
    const forwards = async (c: TestCluster) => {
      const out: Record<string, number> = {};
      for (const name of c.nodes.keys()) {
        const { body } = await c.admin(name, 'metrics');
        out[name] = Number(/^resident_cluster_forwards_total (\d+)$/m.exec(String(body))?.[1]);
      }
      return out;
    };
    const stored = async (c: TestCluster, id: string) => {
      const { store, close } = await c.inspect();
      try {
        const record = await store.get(id);
        return record && { n: record.memento ? (decodeMemento(record.memento) as { n: number }).n : null, owner: record.owner };
      } finally {
        await close();
      }
    };
    /** One request that must succeed and go on from `n`; on any other answer, says why. */
    const expectNext = (reply: BalancedReply, n: number, what: string) => {
      assert.equal(reply.status, 200, `${what}: ${reply.status} ${reply.text}`);
      assert.equal(reply.body.n, n + 1, `${what}: the count goes on from ${n} (${reply.text})`);
    };

    before(async () => {
      unavailable = haproxyUnavailable() ?? (await unavailableReason(kind));
      if (unavailable !== undefined) return;
      cluster = await TestCluster.open(kind);
      await Promise.all(NAMES.map((name) => cluster!.start(name, NODE)));
      haproxy = await TestHaproxy.start(Object.fromEntries(NAMES.map((name) => [name, cluster!.node(name).url])));
    });
    after(async () => {
      for (const one of clients.splice(0)) await one.close().catch(() => {});
      await haproxy?.stop();
      await cluster?.close();
    });

    /** Filled by test (a), used by (b): each client and its count so far. */
    const fleet: Array<{ client: BalancedClient; n: number; node: string; ip: string }> = [];

    test('(a) the routing cookie routes: 30 clients × 10 requests, every answer from the owner, counts 1..10, no forward', async (t) => {
      const r = ready(t);
      if (!r) return;
      const { c, lb } = r;
      const before = await forwards(c);
      await Promise.all(
        Array.from({ length: CLIENTS }, async (_, i) => {
          const one = client(lb, i);
          const ip = `127.0.0.${10 + i}`;
          // A forged X-Forwarded-For: HAProxy drops it, so the node sees the address HAProxy saw.
          const first = await one.get('/inc', { 'x-forwarded-for': '203.0.113.9' });
          expectNext(first, 0, `client ${i}, request 1`);
          const node = first.body.node as string;
          assert.equal(first.body.clientIp, ip, 'the client address through forwardfor and sessions.trustProxy');
          for (let k = 1; k < REQUESTS; k++) {
            const reply = await one.get('/inc');
            expectNext(reply, k, `client ${i}, request ${k + 1}`);
            assert.equal(reply.body.node, node, `client ${i}: every answer from the owner`);
            assert.equal(reply.body.id, first.body.id, `client ${i}: one session`);
          }
          assert.equal(one.cookies.get('resident_node'), node, 'the routing cookie names the owner');
          fleet[i] = { client: one, n: REQUESTS, node, ip };
        }),
      );
      const owners = new Map<string, number>();
      for (const entry of fleet) owners.set(entry.node, (owners.get(entry.node) ?? 0) + 1);
      t.diagnostic(`sessions per node: ${JSON.stringify(Object.fromEntries(owners))}`);
      assert.deepEqual([...owners.keys()].sort(), NAMES, 'round robin gave every node new visitors');
      assert.deepEqual(await forwards(c), before, 'no request was forwarded: HAProxy sent each to its owner');
    });

    test('(b) SIGTERM of a node mid-traffic: every count goes on, at most one failed request per client', async (t) => {
      const r = ready(t);
      if (!r) return;
      const { c, lb } = r;
      assert.equal(fleet.length, CLIENTS, 'test (a) ran');
      const victim = 'c';
      const onVictim = fleet.filter((entry) => entry.node === victim).length;
      const failures = new Map<number, string[]>();
      let done = 0;
      let draining: Promise<number | null | undefined> | undefined;
      const run = Promise.all(
        fleet.map(async (entry, i) => {
          for (let k = 0; k < REQUESTS; ) {
            const reply = await entry.client.get('/inc');
            if (reply.status !== 200) {
              failures.set(i, [...(failures.get(i) ?? []), `${reply.status} ${reply.text.slice(0, 80)}`]);
              // The client honours Retry-After (1 s when the answer had none, or there was no answer).
              await sleep((reply.retryAfter ?? 1) * 1000);
              continue;
            }
            expectNext(reply, entry.n, `client ${i} (was on ${entry.node})`);
            entry.n++;
            entry.node = reply.body.node;
            assert.equal(entry.client.cookies.get('resident_node'), entry.node, `client ${i}: the routing cookie follows the owner`);
            k++;
            done++;
            await sleep(50);
          }
        }),
      );
      // The drain starts once the traffic is under way.
      await waitFor(() => done >= CLIENTS * 2, 60_000, 'traffic through HAProxy');
      const startedAt = performance.now();
      const forwardsBefore = await forwards(c);
      const logMark = lb.output().length;
      draining = c.signal(victim, 'SIGTERM');
      await run;
      assert.equal(await draining, 0, `${victim} exits 0 after its drain`);
      const forwardsAfter = await forwards(c);
      const forwarded = Object.keys(forwardsAfter).map((name) => `${name}: ${forwardsAfter[name]! - forwardsBefore[name]!}`);
      t.diagnostic(`HAProxy retried ${retried(lb.output().slice(logMark))} requests; forwarded meanwhile: ${forwarded.join(', ')}`);
      t.diagnostic(`${onVictim} sessions were on ${victim}; failures: ${JSON.stringify(Object.fromEntries(failures))}; the drain took ${Math.round(performance.now() - startedAt)} ms`);
      assert.ok([...failures.values()].every((list) => list.length <= 1), `at most one failed request per client: ${JSON.stringify(Object.fromEntries(failures))}`);
      assert.ok(fleet.every((entry) => entry.node !== victim), 'every session lives on a running node now');
      assert.ok(fleet.every((entry) => entry.n === 2 * REQUESTS), 'every client made its requests');
      await lb.waitStatus({ [victim]: 'DOWN' }, 5_000);
    });

    test('(c) a routing cookie naming a node killed with kill -9: redispatched, and taken over from the last checkpoint after the lease', async (t) => {
      const r = ready(t);
      if (!r) return;
      const { c, lb } = r;
      // A session on b: new visitors go round robin until one lands there.
      let one: BalancedClient | undefined;
      for (let i = 0; !one; i++) {
        const candidate = client(lb, 50 + i);
        const reply = await candidate.get('/inc');
        assert.equal(reply.status, 200, reply.text);
        if (reply.body.node === 'b') one = candidate;
        assert.ok(i < 20, 'round robin reaches b');
      }
      for (let k = 1; k < 5; k++) expectNext(await one.get('/inc'), k, `request ${k + 1}`);
      const id = one.cookies.get('RSID')!;
      await waitFor(async () => (await stored(c, id))?.n === 5, 10_000, 'the checkpoint of n = 5');
      const killedAt = performance.now();
      await c.signal('b', 'SIGKILL');
      assert.equal(one.cookies.get('resident_node'), 'b', 'the cookie still names b');
      const early: string[] = [];
      const texts = new Set<string>();
      let reply: BalancedReply;
      for (;;) {
        reply = await one.get('/inc');
        if (reply.status === 200) break;
        early.push(`${reply.status}`);
        texts.add(reply.text.slice(0, 100));
        assert.ok([502, 503].includes(reply.status), `until the lease is gone: 502 or 503, not ${reply.status} ${reply.text}`);
        assert.ok(performance.now() - killedAt < 15_000, 'taken over within 15 s');
        await sleep((reply.retryAfter ?? 0.2) * 1000);
      }
      const tookMs = performance.now() - killedAt;
      t.diagnostic(`taken over after ${Math.round(tookMs)} ms; answers before: ${early.join(', ') || 'none'} (${[...texts].join(' | ')})`);
      assert.deepEqual({ n: reply.body.n, node: reply.body.node, resumed: reply.body.resumed }, { n: 6, node: 'a', resumed: true }, 'resumed on a from the checkpoint');
      assert.equal(one.cookies.get('resident_node'), 'a', 'the new owner’s routing cookie');
      assert.ok(tookMs < 2_000 + 5_000, `served ${Math.round(tookMs)} ms after the kill (lease 2 s)`);
      await lb.waitStatus({ b: 'DOWN' }, 5_000);
      // From now on straight to a: no forward.
      const before = await forwards(c);
      for (let k = 6; k < 10; k++) expectNext(await one.get('/inc'), k, `after the takeover, request ${k + 1}`);
      assert.deepEqual(await forwards(c), before, 'routed to the new owner');
    });
  });
}
