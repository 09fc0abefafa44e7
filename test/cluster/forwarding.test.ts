/**
 * G1, G2, G3, G6 (RELIABILITY.md) on three real nodes, on Redis and on PostgreSQL: a request
 * that reaches a node which does not hold its session is forwarded to the owner and the client
 * sees exactly the owner's answer; the forwarding header is the cluster's alone; a forward that
 * goes round is stopped with 508; an owner that hangs costs 504, not the forwarding node.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { request } from 'undici';
import { ForwardAuth, FORWARD_HEADER } from '../../src/cluster/forward-auth.ts';
import { Client, waitFor } from '../helpers.ts';
import { SHARED } from '../stores/shared-helpers.ts';
import { CLUSTER_SECRET, clusterFor } from './harness.ts';

const routingCookie = (setCookies: string[]) => setCookies.find((line) => line.startsWith('resident_node='))?.split(';')[0];
const sessionCookie = (setCookies: string[]) => setCookies.find((line) => line.startsWith('RSID='));

for (const kind of SHARED) {
  describe(`cluster on ${kind}: forwarding to the owner (G1, G2, G3, G6)`, { timeout: 300_000 }, () => {
    const ready = clusterFor(kind, ['a', 'b', 'c'], { leaseTimeout: '10s', forwardTimeout: '1500ms' });

    test('G1: a request on a non-owner is answered by the owner: same status, body, headers and Set-Cookie', async (t) => {
      const c = ready(t);
      if (!c) return;
      const onA = c.client('a');
      const first = await onA.get('/inc');
      assert.equal(first.status, 200, first.text);
      assert.equal(first.json().node, 'a');
      assert.equal(routingCookie(first.setCookies), 'resident_node=a', 'the owner names itself for a balancer');
      const routing = first.setCookies.find((line) => line.startsWith('resident_node='))!;
      const session = sessionCookie(first.setCookies)!;
      assert.equal(routing.slice(routing.indexOf(';')), session.slice(session.indexOf(';')), 'the routing cookie has the session cookie’s attributes (Max-Age, SameSite, HttpOnly)');
      const id = onA.cookie!;
      for (const [name, expected] of [['b', 2], ['c', 3], ['b', 4]] as const) {
        const other = c.client(name, id);
        const reply = await other.get('/inc');
        assert.equal(reply.status, 200, `${name}: ${reply.text}`);
        assert.deepEqual({ id: reply.json().id, n: reply.json().n, node: reply.json().node }, { id, n: expected, node: 'a' }, `through ${name}: the owner's context`);
        assert.equal(routingCookie(reply.setCookies), 'resident_node=a', `through ${name}: the owner's routing cookie`);
        assert.match(sessionCookie(reply.setCookies) ?? '', new RegExp(`^RSID=${id};`), `through ${name}: the owner's session cookie`);
      }
      // Where the session lives is remembered a moment: the next forwards cost b no store lookup.
      const lookedUp = async () => Number(/resident_unknown_ids_total\{looked_up="true"\} (\d+)/.exec(String((await c.admin('b', 'metrics')).body))?.[1] ?? NaN);
      const before = await lookedUp();
      const again = c.client('b', id);
      for (let i = 0; i < 5; i++) assert.equal((await again.get('/state')).json().node, 'a');
      assert.equal(await lookedUp(), before, 'no store lookup for a session b found on a a moment ago');
      const direct = await c.client('a', id).get('/custom');
      const forwarded = await c.client('c', id).get('/custom');
      for (const reply of [direct, forwarded]) {
        assert.equal(reply.status, 207);
        assert.equal(reply.text, 'custom body');
        assert.equal(reply.headers['x-custom'], 'yes');
        assert.ok(reply.setCookies.includes('other=1; Path=/'), reply.setCookies.join(' | '));
      }
      assert.deepEqual(forwarded.setCookies.map((line) => line.split('=')[0]).sort(), direct.setCookies.map((line) => line.split('=')[0]).sort());
      // A body goes through too, also when it went to another thread of the forwarding node
      // first (a byte body is transferred there: its copy is what is forwarded).
      const poster = c.client('b', id);
      for (let i = 0; i < 8; i++) {
        const echoed = await poster.get('/echo', { method: 'POST', body: `payload ${i} ✓` });
        assert.equal(echoed.status, 200, echoed.text);
        assert.deepEqual(echoed.json(), { method: 'POST', body: `payload ${i} ✓` });
      }
    });

    test('G1: IP binding is judged on the original client address, carried by the forwarding node', async (t) => {
      const c = ready(t);
      if (!c) return;
      const owner = new Client(c.node('a').url, { localAddress: '127.0.0.1' });
      await owner.get('/inc');
      const id = owner.cookie!;
      // The same browser through node b: its address travels with the request, and matches.
      const sameClient = new Client(c.node('b').url, { localAddress: '127.0.0.1' });
      sameClient.cookie = id;
      const same = await sameClient.get('/state');
      assert.equal(same.status, 200, same.text);
      assert.equal(same.json().clientIp, '127.0.0.1');
      // Another address with the stolen cookie, through node c: refused by the owner (400).
      const thief = new Client(c.node('c').url, { localAddress: '127.0.0.2' });
      thief.cookie = id;
      const stolen = await thief.get('/state');
      assert.equal(stolen.status, 400, stolen.text);
      const after = await sameClient.get('/inc');
      assert.equal(after.json().n, 2, 'the bound session is untouched');
      for (const client of [owner, sameClient, thief]) await client.close();
    });

    test('G2: a forwarding header sent by a client is stripped on the public port and refused on the private one', async (t) => {
      const c = ready(t);
      if (!c) return;
      const auth = new ForwardAuth(CLUSTER_SECRET);
      const forward = (method: string, path: string, cookie: string, to: string) => ({ purpose: 'forward' as const, method, path, cookie, to });
      const forged = auth.sign({ clientIp: '127.0.0.1', secure: true, hops: 1 }, forward('GET', '/headers', '', c.node('a').owner));
      // Straight to the owner's public port: the hook never sees it, the real address counts.
      const client = new Client(c.node('a').url, { localAddress: '127.0.0.3' });
      const direct = await client.get('/headers', { headers: { [FORWARD_HEADER]: forged } });
      assert.equal(direct.status, 200, direct.text);
      assert.equal(direct.json().clientIp, '127.0.0.3', 'the client address is the connection’s');
      assert.ok(!direct.json().headers.some(([name]: [string]) => name === FORWARD_HEADER), 'the hook never sees the header');
      assert.match(direct.json().url, /^http:/, 'a forged TLS flag changes nothing');
      // Through a non-owner, with a forged header claiming the bound address: the forwarding node
      // signs what it saw itself, so IP binding holds.
      const id = client.cookie!;
      const thief = new Client(c.node('b').url, { localAddress: '127.0.0.4' });
      thief.cookie = id;
      const spoofed = await thief.get('/headers', { headers: { [FORWARD_HEADER]: auth.sign({ clientIp: '127.0.0.3', secure: false, hops: 0 }, forward('GET', '/headers', `RSID=${id}`, c.node('a').owner)) } });
      assert.equal(spoofed.status, 400, spoofed.text);
      // The private listener: nothing without a valid signature.
      const privateUrl = c.node('a').privateUrl;
      const a = c.node('a').owner;
      const cookie = `RSID=${id}`;
      const unsigned = await request(`${privateUrl}/state`, { headers: { cookie: `RSID=${id}` } });
      assert.equal(unsigned.statusCode, 403);
      await unsigned.body.text();
      const wrongSecret = new ForwardAuth('another-secret-of-at-least-32-characters!');
      const bad = await request(`${privateUrl}/state`, { headers: { cookie: `RSID=${id}`, [FORWARD_HEADER]: wrongSecret.sign({ clientIp: '127.0.0.3', secure: false, hops: 1 }, forward('GET', '/state', cookie, a)) } });
      assert.equal(bad.statusCode, 403);
      await bad.body.text();
      // Signed for another path, another cookie, another node, or as a peer call: refused (the
      // MAC covers purpose, method, path, cookie and the node it is for).
      const signedFor = (target: Parameters<ForwardAuth['sign']>[1]) => auth.sign({ clientIp: '127.0.0.3', secure: false, hops: 1 }, target);
      for (const [what, path, header] of [
        ['another path', '/inc', signedFor(forward('GET', '/state', cookie, a))],
        ['another cookie', '/state', signedFor(forward('GET', '/state', 'RSID=someone-else', a))],
        ['another node', '/state', signedFor(forward('GET', '/state', cookie, c.node('b').owner))],
        ['a peer call', '/state', signedFor({ ...forward('GET', '/state', cookie, a), purpose: 'peer' })],
      ] as const) {
        const refused = await request(`${privateUrl}${path}`, { headers: { cookie, [FORWARD_HEADER]: header } });
        assert.equal(refused.statusCode, 403, what);
        await refused.body.text();
      }
      // Signed for an earlier incarnation of this node (the sender's view is stale: restarted,
      // or rejoined after a lost lease): nothing runs, and the answer says to retry.
      const earlier = `${a.slice(0, a.lastIndexOf('#'))}#0earlier`;
      const stale = await request(`${privateUrl}/inc`, { headers: { cookie, [FORWARD_HEADER]: signedFor(forward('GET', '/inc', cookie, earlier)) } });
      assert.equal(stale.statusCode, 503, 'an earlier incarnation');
      assert.equal(stale.headers['retry-after'], '1');
      assert.equal(await stale.body.text(), 'This session moved to another server. Please retry.');
      const good = await request(`${privateUrl}/state`, { headers: { cookie, [FORWARD_HEADER]: signedFor(forward('GET', '/state', cookie, a)) } });
      assert.equal(good.statusCode, 200);
      assert.equal(((await good.body.json()) as { id: string }).id, id);
      await client.close();
      await thief.close();
    });

    test('G3: a request that has been forwarded twice already is not forwarded again: 508', async (t) => {
      const c = ready(t);
      if (!c) return;
      const onB = c.client('b');
      await onB.get('/inc');
      const auth = new ForwardAuth(CLUSTER_SECRET);
      // As if two nodes had passed it on already, reaching a node that does not hold it.
      const looped = await request(`${c.node('c').privateUrl}/inc`, { headers: { cookie: `RSID=${onB.cookie}`, [FORWARD_HEADER]: auth.sign({ clientIp: '127.0.0.1', secure: false, hops: 2 }, { purpose: 'forward', method: 'GET', path: '/inc', cookie: `RSID=${onB.cookie}`, to: c.node('c').owner }) } });
      assert.equal(looped.statusCode, 508);
      assert.match(await looped.body.text(), /Loop Detected/);
      const state = await onB.get('/state');
      assert.equal(state.json().n, 1, 'the looping request ran nowhere');
      await waitFor(() => c.node('c').logs().some((line) => line.event === 'forward-loop'), 5_000, 'the forward-loop log line');
    });

    test('G6: an owner that does not answer costs the client a 504 within forwardTimeout; the forwarding node goes on serving', async (t) => {
      const c = ready(t);
      if (!c) return;
      const onA = c.client('a');
      await onA.get('/inc');
      const bystander = c.client('b');
      await bystander.get('/inc');
      const viaB = c.client('b', onA.cookie);
      const started = performance.now();
      const hanging = viaB.get('/hang?ms=5000');
      // Node b keeps serving its own sessions while the forward waits.
      const served: number[] = [];
      while (performance.now() - started < 1_200) {
        const at = performance.now();
        const reply = await bystander.get('/inc');
        assert.equal(reply.status, 200);
        served.push(performance.now() - at);
      }
      const reply = await hanging;
      const took = performance.now() - started;
      assert.equal(reply.status, 504, reply.text);
      assert.ok(took >= 1_400 && took < 4_000, `504 after ${Math.round(took)} ms (forwardTimeout 1.5 s)`);
      assert.ok(served.length >= 5 && Math.max(...served) < 1_000, `node b answered ${served.length} bystander requests, slowest ${Math.round(Math.max(...served))} ms`);
    });
  });
}
