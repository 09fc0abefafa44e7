/**
 * G5 between nodes (RELIABILITY.md): the nodes cannot reach each other (a TCP proxy in front of
 * node a's private listener, which node b forwards to, is cut) while both reach the store. The
 * store still names a as the owner, so b refuses (503) rather than fork a copy; a goes on
 * serving the clients that reach it; after the heal b forwards again and the count goes on from
 * what a acknowledged: nothing lost, no second copy. (The partition between a node and the store
 * is in jepsen.test.ts.)
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, test } from 'node:test';
import { freePort, skipOrFailOnCi } from '../helpers.ts';
import { SHARED, unavailableReason } from '../stores/shared-helpers.ts';
import { TcpProxy } from '../stores/tcp-proxy.ts';
import { TestCluster } from './harness.ts';

for (const kind of SHARED) {
  describe(`cluster on ${kind}: a partition between nodes (G5)`, { timeout: 180_000 }, () => {
    const opened: Array<{ close(): Promise<void> }> = [];
    after(async () => {
      for (const thing of opened.reverse()) await thing.close();
    });

    test('the node cut off from the owner refuses (503) and never serves the session itself; after the heal nothing is lost', async (t) => {
      const why = await unavailableReason(kind);
      if (why !== undefined) return skipOrFailOnCi(t, why);
      const c = await TestCluster.open(kind);
      opened.push(c);
      const privatePort = await freePort();
      const link = await TcpProxy.start({ host: '127.0.0.1', port: privatePort });
      opened.push(link);
      const lease = { leaseTimeout: '2s', forwardTimeout: '1s' };
      await c.start('a', { ...lease, privatePort, advertise: `http://127.0.0.1:${link.port}` });
      await c.start('b', lease);
      const onA = c.client('a');
      for (let i = 0; i < 3; i++) await onA.get('/inc');
      const viaB = c.client('b', onA.cookie);
      assert.equal((await viaB.get('/inc')).json().node, 'a', 'forwarded before the partition');
      link.cut();
      // Several leases long: b never takes the session (a renews its lease all along).
      const startedAt = performance.now();
      let refused = 0;
      let servedOnA = 4;
      while (performance.now() - startedAt < 6_000) {
        const reply = await viaB.get('/inc');
        assert.ok([503, 504].includes(reply.status), `through b during the partition: ${reply.status} ${reply.text}`);
        refused++;
        const direct = await onA.get('/inc');
        assert.equal(direct.status, 200, direct.text);
        assert.equal(direct.json().n, ++servedOnA, 'a goes on serving, alone');
        await sleep(200);
      }
      link.restore();
      const healed = await viaB.get('/inc');
      assert.equal(healed.status, 200, healed.text);
      assert.deepEqual({ node: healed.json().node, n: healed.json().n }, { node: 'a', n: servedOnA + 1 }, 'after the heal: the same copy, nothing lost');
      t.diagnostic(`${refused} requests through b refused during 6 s of partition; a served ${servedOnA - 4} meanwhile`);
    });
  });
}
