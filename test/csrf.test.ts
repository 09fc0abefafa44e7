/**
 * `csrf.checkOrigin` (issue 15): a state-changing request whose Origin (else Referer) is
 * another origin than the server's own or an allowed one gets 403 RESIDENT_ERR_CSRF before any
 * hook runs. Driven through real servers with headers that lie: the hook's counter (/inc)
 * shows whether the hook ran.
 */
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { request, type Dispatcher } from 'undici';
import { resolveConfig } from '../src/config.ts';
import { ErrorCodes, ResidentError } from '../src/errors.ts';
import { Client, serverFactory, type TestServer } from './helpers.ts';

const BASE = join(tmpdir(), 'resident-config-base');
const server = serverFactory({ workers: { threads: 1 } });
const EVIL = 'http://evil.example';
const clients: Client[] = [];
after(() => Promise.all(clients.map((c) => c.close())));

/** A client with a session (its first request made it), and its server's origin. */
async function session(t: TestServer): Promise<{ client: Client; own: string }> {
  const client = new Client(t.url);
  clients.push(client);
  assert.equal((await client.get('/state')).status, 200);
  return { client, own: new URL(t.url).origin };
}

/** POSTs /inc with `headers` and answers the status and what the hook's counter says after it. */
async function inc(client: Client, headers: Record<string, string>, method = 'POST'): Promise<{ status: number; n: number; text: string }> {
  const reply = await client.get('/inc', { method, headers });
  const n = (await client.get('/state')).json<{ n: number }>().n;
  return { status: reply.status, n, text: reply.text };
}

describe('csrf: the config', () => {
  test('off by default; origins are normalized as browsers send them', () => {
    assert.deepEqual({ ...resolveConfig({}, BASE).csrf }, { checkOrigin: false, allowedOrigins: [], requireOrigin: false });
    const { csrf } = resolveConfig({ csrf: { checkOrigin: true, allowedOrigins: ['https://Pay.Example.com:443/', 'http://localhost:3000'] } }, BASE);
    assert.deepEqual(csrf.allowedOrigins, ['https://pay.example.com', 'http://localhost:3000']);
    assert.ok(Object.isFrozen(csrf) && Object.isFrozen(csrf.allowedOrigins));
  });

  test('invalid values stop startup naming the key', () => {
    const refused = (csrf: unknown, key: string) =>
      assert.throws(
        () => resolveConfig({ csrf }, BASE),
        (error: unknown) => error instanceof ResidentError && error.code === 'RESIDENT_ERR_INVALID_CONFIG' && error.message.includes(key),
        key,
      );
    for (const entry of ['pay.example.com', 'https://pay.example.com/path', 'ftp://pay.example.com', 'https://user@pay.example.com', '*', 42]) {
      refused({ checkOrigin: true, allowedOrigins: [entry] }, 'csrf.allowedOrigins');
    }
    refused({ checkOrigin: 'yes' }, 'csrf.checkOrigin');
    // Alone, either key checks nothing: the forgotten checkOrigin is named.
    refused({ allowedOrigins: ['https://pay.example.com'] }, 'csrf.allowedOrigins');
    refused({ requireOrigin: true }, 'csrf.requireOrigin');
  });
});

describe('csrf: the answers', () => {
  test('off (the default): a POST from another origin reaches the hook', async () => {
    const { client } = await session(await server());
    const passed = await inc(client, { origin: EVIL });
    assert.deepEqual([passed.status, passed.n], [200, 1]);
  });

  test('on: unsafe methods from another origin get 403 before the hook; its own origin and safe methods pass', async () => {
    const t = await server({ csrf: { checkOrigin: true } });
    const { client, own } = await session(t);
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
      const refused = await inc(client, { origin: EVIL }, method);
      assert.deepEqual([refused.status, refused.n], [403, 0], method);
      assert.equal(refused.text, ErrorCodes.RESIDENT_ERR_CSRF.message);
    }
    await t.settle();
    const line = t.logs.find((l) => l.event === 'csrf-refused');
    assert.equal(line?.code, 'RESIDENT_ERR_CSRF');
    assert.equal((await inc(client, { origin: own })).n, 1, 'its own origin');
    assert.equal((await inc(client, { origin: EVIL }, 'GET')).n, 2, 'GET is never checked');
    assert.equal((await client.get('/state', { method: 'HEAD', headers: { origin: EVIL } })).status, 200);
  });

  test('another scheme, port or host is another origin; "null" and a list of origins match nothing', async () => {
    const t = await server({ csrf: { checkOrigin: true } });
    const { client, own } = await session(t);
    const { port, hostname } = new URL(own);
    for (const origin of [`https://${hostname}:${port}`, `http://${hostname}:${Number(port) + 1}`, `http://localhost:${port}`, 'null', `${own}, ${EVIL}`, 'not a url']) {
      assert.equal((await inc(client, { origin })).status, 403, origin);
    }
    assert.equal((await inc(client, {})).n, 1);
  });

  test('without an Origin the Referer decides; with neither the request passes unless requireOrigin', async () => {
    const t = await server({ csrf: { checkOrigin: true } });
    const { client, own } = await session(t);
    assert.equal((await inc(client, { referer: `${EVIL}/form.html` })).status, 403);
    assert.equal((await inc(client, { referer: `${own}/form.html?x=1` })).status, 200);
    // The Origin decides alone: a Referer of this server does not rescue a foreign Origin.
    assert.equal((await inc(client, { origin: EVIL, referer: `${own}/form.html` })).status, 403);
    const neither = await inc(client, {});
    assert.deepEqual([neither.status, neither.n], [200, 2], 'no browser sends neither: curl, a server, a test');

    const strict = await server({ csrf: { checkOrigin: true, requireOrigin: true } });
    const other = await session(strict);
    const refused = await inc(other.client, {});
    assert.deepEqual([refused.status, refused.n], [403, 0]);
    assert.equal((await inc(other.client, { origin: other.own })).status, 200);
  });

  test('allowedOrigins: listed origins pass, their subdomains and other origins do not', async () => {
    const t = await server({ csrf: { checkOrigin: true, allowedOrigins: ['https://pay.example.com'] } });
    const { client } = await session(t);
    assert.equal((await inc(client, { origin: 'https://pay.example.com' })).status, 200);
    assert.equal((await inc(client, { origin: 'https://evil.pay.example.com' })).status, 403);
    assert.equal((await inc(client, { origin: 'http://pay.example.com' })).status, 403);
  });

  test('forwarding headers from a client that is no trusted proxy are ignored', async () => {
    const t = await server({ csrf: { checkOrigin: true } });
    const { client, own } = await session(t);
    // Each header lies alone, so that honouring either one would let its request through.
    const host = await inc(client, { 'x-forwarded-host': 'evil.example', origin: EVIL });
    assert.deepEqual([host.status, host.n], [403, 0], 'X-Forwarded-Host');
    const proto = await inc(client, { 'x-forwarded-proto': 'https', origin: own.replace('http:', 'https:') });
    assert.deepEqual([proto.status, proto.n], [403, 0], 'X-Forwarded-Proto');
  });

  test('behind a trusted proxy its X-Forwarded-Host and X-Forwarded-Proto make the own origin', async () => {
    const t = await server({ csrf: { checkOrigin: true }, sessions: { trustProxy: ['loopback'] } });
    const own = new URL(t.url).origin;
    const proxied = { 'x-forwarded-host': 'shop.example, inner.example', 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.7' };
    // The session is bound to the forwarded client address: every request of it says the same.
    const asProxied = new Client(t.url);
    clients.push(asProxied);
    await asProxied.get('/state', { headers: proxied });
    const post = (origin: string) => asProxied.get('/inc', { method: 'POST', headers: { ...proxied, origin } }).then((r) => r.status);
    assert.equal(await post('https://shop.example'), 200);
    assert.equal(await post('http://shop.example'), 403, 'the proxy said https');
    assert.equal(await post(own), 403, 'the Host behind the proxy is not what the browser asked for');
  });

  test('a repeated Origin header is refused, and a refused request starts no session', async () => {
    const t = await server({ csrf: { checkOrigin: true } });
    const own = new URL(t.url).origin;
    const reply = await request(`${t.url}/inc`, { method: 'POST' as Dispatcher.HttpMethod, headers: ['origin', own, 'origin', own] });
    await reply.body.dump();
    assert.equal(reply.statusCode, 403);
    assert.equal(reply.headers['set-cookie'], undefined);
  });
});
