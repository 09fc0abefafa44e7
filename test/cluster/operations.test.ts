/**
 * Cluster-wide operations (issue 14, point 5) on three real nodes, on Redis and PostgreSQL:
 * signing a user out everywhere, sessions.maxPerUser, a regenerated ID, the admin view's
 * cluster page, /readyz and the per-node metrics.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { request } from 'undici';
import { describeChild, runMain, waitFor, writeTempConfig } from '../helpers.ts';
import { SHARED } from '../stores/shared-helpers.ts';
import { TestCluster, clusterFor } from './harness.ts';

for (const kind of SHARED) {
  describe(`cluster on ${kind}: cluster-wide operations`, { timeout: 300_000 }, () => {
    const ready = clusterFor(kind, ['a', 'b', 'c'], { leaseTimeout: '10s', sessions: { maxPerUser: 3 } });

    test('ctx.closeOtherSessions() on one node signs the user out of the sessions live on the others; the admin view closes a user everywhere', async (t) => {
      const c = ready(t);
      if (!c) return;
      const sessions = ['a', 'b', 'c'].map((name) => c.client(name));
      for (const client of sessions) {
        const reply = await client.get('/login?user=ann');
        assert.equal(reply.status, 200, reply.text);
        await client.get('/inc');
      }
      const [onA, onB, onC] = sessions as [typeof sessions[0], typeof sessions[0], typeof sessions[0]];
      const kept = onA.cookie;
      assert.equal((await onA.get('/close-others')).status, 200);
      // The sessions on b and c are closed by their own nodes: their cookies start afresh.
      // After the response (the close runs behind it), on each node.
      await waitFor(async () => (await c.client('b', onB.cookie).get('/state')).json().isNew === true, 10_000, 'the session on b closed');
      await waitFor(async () => (await c.client('c', onC.cookie).get('/state')).json().isNew === true, 10_000, 'the session on c closed');
      for (const [client, name] of [[onB, 'b'], [onC, 'c']] as const) {
        const reply = await client.get('/state');
        assert.equal(reply.json().isNew, true, `the session on ${name} was closed`);
        assert.equal(reply.json().userId, null);
      }
      const still = await onA.get('/state');
      assert.deepEqual({ id: still.json().id, n: still.json().n, user: still.json().userId }, { id: kept, n: 1, user: 'ann' }, 'the presser stays signed in');
      assert.ok(c.node('b').logs().some((line) => line.event === 'closed'), 'b ran the close');
      // The admin view of node c closes every session of a user, wherever it lives.
      const onB2 = c.client('b');
      await onB2.get('/login?user=bob');
      const onA2 = c.client('a');
      await onA2.get('/login?user=bob');
      const closed = await c.admin('c', 'api/users/bob/close', 'POST');
      assert.equal(closed.status, 200, JSON.stringify(closed.body));
      assert.equal(closed.body.closed, 2);
      for (const client of [onB2, onA2]) assert.equal((await client.get('/state')).json().isNew, true);
    });

    test('sessions.maxPerUser counts a user’s sessions on every node, and closes the oldest where it lives', async (t) => {
      const c = ready(t);
      if (!c) return;
      const logins: ReturnType<TestCluster['client']>[] = [];
      for (const name of ['a', 'b', 'c', 'b']) {
        const client = c.client(name);
        assert.equal((await client.get('/login?user=cat')).status, 200);
        logins.push(client);
      }
      // The fourth sign-in (maxPerUser 3) closed the first, which lives on a.
      await waitFor(async () => (await logins[0]!.get('/state')).json().isNew === true, 10_000, 'the oldest session closed');
      for (const client of logins.slice(1)) assert.equal((await client.get('/state')).json().userId, 'cat');
    });

    test('a regenerated ID is found by every node, the old one by none', async (t) => {
      const c = ready(t);
      if (!c) return;
      const onA = c.client('a');
      await onA.get('/inc');
      const old = onA.cookie!;
      const viaB = c.client('b', old);
      const renamed = await viaB.get('/regenerate');
      assert.equal(renamed.status, 200, renamed.text);
      const id = viaB.cookie!;
      assert.notEqual(id, old);
      const viaC = await c.client('c', id).get('/inc');
      assert.deepEqual({ id: viaC.json().id, n: viaC.json().n, node: viaC.json().node }, { id, n: 2, node: 'a' });
      const stale = await c.client('c', old).get('/state');
      assert.equal(stale.json().isNew, true, 'the old ID starts afresh');
      assert.notEqual(stale.json().id, old);
    });

    test('/readyz, the admin view’s cluster page and the metrics speak for each node', async (t) => {
      const c = ready(t);
      if (!c) return;
      const readyz = await request(`${c.node('b').url}/readyz`);
      const body = (await readyz.body.json()) as { cluster: { node: string; lease: string } };
      assert.equal(readyz.statusCode, 200);
      assert.deepEqual({ node: body.cluster.node, lease: body.cluster.lease }, { node: 'b', lease: 'held' });
      const page = await c.admin('a', 'api/cluster');
      assert.equal(page.status, 200);
      assert.deepEqual(page.body.nodes.map((node: { nodeId: string }) => node.nodeId), ['a', 'b', 'c']);
      assert.equal(page.body.node, 'a');
      const onC = c.client('c');
      await onC.get('/inc');
      await c.client('a', onC.cookie).get('/inc');
      const metrics = await c.admin('a', 'metrics');
      assert.match(String(metrics.body), /resident_cluster_forwards_total [1-9]/);
      assert.match(String(metrics.body), /resident_cluster_claims_total \d/);
      assert.match(String(metrics.body), /resident_cluster_fenced_writes_total \d/);
    });

    test('a node configured on a private port another node listens on (with SO_REUSEPORT) does not start: exit 2, cluster.port named; the other keeps its forwards', async (t) => {
      const c = ready(t);
      if (!c) return;
      const taken = Number(new URL(c.node('a').privateUrl).port);
      const second = runMain(['--config', writeTempConfig(c.config('d', { privatePort: taken }))]);
      assert.equal(await second.exited, 2, describeChild(second));
      assert.match(second.stderr(), new RegExp(`cluster\\.port ${taken} at 127\\.0\\.0\\.1: .*EADDRINUSE`), describeChild(second));
      // Every forward to a still reaches a (a node sharing the port would have refused half of them).
      const onA = c.client('a');
      await onA.get('/inc');
      const viaB = c.client('b', onA.cookie);
      for (let i = 0; i < 20; i++) assert.equal((await viaB.get('/inc')).status, 200);
    });
  });
}
