/**
 * Red team, cluster mode (issue 14): a hostile environment on real nodes sharing a real Redis:
 * an owner paused (SIGSTOP) with a request in flight while another node takes over, and the
 * shortest lease the configuration accepts on a loaded machine.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, test, type TestContext } from 'node:test';
import { decodeMemento } from '../src/contexts/memento.ts';
import { send, skipOrFailOnCi, waitFor } from './helpers.ts';
import { unavailableReason } from './stores/shared-helpers.ts';
import { TestCluster } from './cluster/harness.ts';

describe('red team: cluster faults (redis)', { timeout: 150_000 }, () => {
  const clusters: TestCluster[] = [];
  const open = async (t: TestContext): Promise<TestCluster | undefined> => {
    const reason = await unavailableReason('redis');
    if (reason !== undefined) {
      skipOrFailOnCi(t, reason);
      return undefined;
    }
    const cluster = await TestCluster.open('redis');
    clusters.push(cluster);
    return cluster;
  };
  after(async () => {
    for (const cluster of clusters) await cluster.close();
  });

  test('held: an owner paused past its lease with a request in flight: its late answer is withheld (503), the taker serves from the checkpoint, the paused copy never writes', async (t) => {
    const c = await open(t);
    if (!c) return;
    const options = { leaseTimeout: '2s', checkpointInterval: '200ms', forwardTimeout: '1s', threads: 1 };
    await Promise.all(['a', 'b'].map((name) => c.start(name, options)));
    const a = c.node('a').url;
    const b = c.node('b').url;
    const first = await send(`${a}/inc`);
    const id = first.json().id as string;
    const cookie = { cookie: `RSID=${id}` };
    for (let i = 0; i < 4; i++) await send(`${a}/inc`, { headers: cookie });
    const { store, close } = await c.inspect();
    t.after(close);
    const storedN = async () => {
      const record = await store.get(id);
      return { n: record?.memento ? (decodeMemento(record.memento) as { n: number }).n : null, owner: record?.owner, fence: record?.fence };
    };
    await waitFor(async () => (await storedN()).n === 5, 10_000, 'the checkpoint of n = 5');
    // A request in flight on a, then a is paused past its lease.
    const inFlight = send(`${a}/hang?ms=1500`, { headers: cookie });
    await sleep(300);
    await c.signal('a', 'SIGSTOP');
    await sleep(4_000);
    let taken;
    for (let i = 0; i < 40; i++) {
      taken = await send(`${b}/inc`, { headers: cookie });
      if (taken.status === 200) break;
      await sleep(250);
    }
    assert.equal(taken!.status, 200, taken!.text);
    assert.deepEqual([taken!.json().id, taken!.json().n, taken!.json().node], [id, 6, 'b']);
    await c.signal('a', 'SIGCONT');
    const late = await inFlight;
    assert.equal(late.status, 503, `the paused owner's late answer: ${late.status} ${late.text}`);
    // The paused copy's checkpoints and suspend are fenced: the store keeps b's count and owner.
    await sleep(1_500);
    for (let i = 0; i < 3; i++) {
      const again = await send(`${a}/inc`, { headers: cookie });
      if (again.status === 503) {
        await sleep(500);
        continue;
      }
      assert.deepEqual([again.status, again.json().node, again.json().n], [200, 'b', 7 + i], again.text);
    }
    const now = await storedN();
    assert.match(String(now.owner), /^b#/);
    assert.ok(now.n === null || now.n >= 6, `stored n ${now.n}`);
  });

  test('held: leaseTimeout at its minimum (1s) on a loaded machine: ordinary traffic without faults is served (503s counted)', async (t) => {
    const c = await open(t);
    if (!c) return;
    await Promise.all(['a', 'b'].map((name) => c.start(name, { leaseTimeout: '1s', threads: 1 })));
    const statuses = new Map<number, number>();
    const ids = [(await send(`${c.node('a').url}/inc`)).json().id as string, (await send(`${c.node('b').url}/inc`)).json().id as string];
    const until = performance.now() + 8_000;
    let i = 0;
    while (performance.now() < until) {
      const replies = await Promise.all(['a', 'b'].flatMap((node) => ids.map((id) => send(`${c.node(node).url}/state`, { headers: { cookie: `RSID=${id}` } }))));
      for (const reply of replies) statuses.set(reply.status, (statuses.get(reply.status) ?? 0) + 1);
      i++;
      await sleep(20);
    }
    t.diagnostic(`${i} rounds: ${JSON.stringify([...statuses])}`);
    const failed = [...statuses].filter(([status]) => status !== 200).reduce((sum, [, n]) => sum + n, 0);
    assert.ok(failed <= 0.01 * i * 4, `${failed} non-200 answers without any fault`);
  });
});
