/**
 * A real Resident on the Redis store: a session suspended at shutdown resumes after a restart,
 * with its memento, its IP binding and its user; /readyz names the store; a Redis that stops
 * answering mid-run (a TCP proxy that holds the bytes) turns /readyz 503 and a resume into a
 * prompt 503, and all is well again once it answers; keys lost while a session is suspended
 * give a fresh context and a warning; startup against a port where no Redis
 * listens stops with RESIDENT_ERR_STORE_OPEN, never showing the password.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { redactUrl } from '../../src/config.ts';
import { REDIS_EXPIRY_GRACE_MS } from '../../src/stores/redis.ts';
import { freePort, runMain, send, serverFactory, skipOrFailOnCi, startTestServer, waitFor, writeTempConfig } from '../helpers.ts';
import { STORE_HOOKS, cleanup, cliConfig, cliExit, clientWith, savedOf, state } from './server-helpers.ts';
import { REDIS_URL, rawClient, redisUnavailable, removePrefixes, uniquePrefix } from './redis-helpers.ts';
import { TcpProxy } from './tcp-proxy.ts';

after(cleanup);

const TEST = { timeout: 30_000 };
const unavailable = await redisUnavailable();
const prefixes: string[] = [];
const startServer = serverFactory({ workers: { threads: 2 }, hooks: STORE_HOOKS });
// After the factory's own hook, which shuts the servers down (a shutdown writes what is live).
after(() => (unavailable === undefined ? removePrefixes(prefixes) : undefined));
const startOnRedis = (prefix: string) => startServer({ store: { kind: 'redis', url: REDIS_URL, prefix } });

test('a session suspended into Redis at shutdown resumes on the next server, with its memento, user and IP binding', TEST, async (t) => {
  if (unavailable !== undefined) return skipOrFailOnCi(t, unavailable);
  const prefix = uniquePrefix();
  prefixes.push(prefix);
  let server = await startOnRedis(prefix);
  const client = clientWith(server.url, undefined);
  await state(client, '/inc');
  await state(client, '/put?key=name&value=ada');
  await state(client, '/user?id=user-ada');
  const id = client.cookie!;
  assert.ok(id, 'a session cookie');

  const ready = await send(`${server.url}/readyz`);
  assert.equal(ready.status, 200, ready.text);
  assert.deepEqual(ready.json().store, { kind: 'redis', status: 'ok' });

  assert.deepEqual(await server.server.shutdown(), { suspended: 1, lost: 0 });
  // The record as Redis holds it: a hash under the prefix, indexed, dropped by Redis itself
  // only a grace period after it expires.
  const redis = await rawClient();
  try {
    const key = `${prefix}s:${id}`;
    const hash = await redis.hGetAll(key);
    assert.equal(hash.clientIp, '127.0.0.1');
    assert.equal(hash.userId, 'user-ada');
    assert.ok(hash.memento, 'a memento');
    const expiresAt = Number(hash.expiresAt);
    assert.ok(expiresAt > Date.now(), 'expires in the future');
    assert.equal(await redis.pExpireTime(key), Math.ceil(expiresAt + REDIS_EXPIRY_GRACE_MS));
    assert.equal(await redis.zScore(`${prefix}exp`, id), expiresAt);
    assert.equal(await redis.zScore(`${prefix}ids`, id), 0);
    assert.equal(await redis.zScore(`${prefix}u:user-ada`, id), 0);
  } finally {
    redis.destroy();
  }

  server = await startOnRedis(prefix);
  const thief = clientWith(server.url, id, { localAddress: '127.0.0.2' });
  assert.equal((await thief.get('/state')).status, 400, 'another address is refused (B1)');
  await thief.close();

  const back = clientWith(server.url, id);
  const s = await state(back);
  assert.equal(s.id, id, 'same ID');
  assert.equal(s.resumed, true);
  assert.equal(s.userId, 'user-ada');
  assert.deepEqual(savedOf(s), { data: { n: 1, name: 'ada' }, mode: null });
  assert.equal((await state(back, '/inc')).data.n, 2, 'the counter continues');
  await back.close();
  await client.close();
  await server.close();
});

/** A server on Redis at `url` under a new prefix, with one session (n = 2) suspended for idleness. */
async function idleSuspended(url: string, store: { callTimeout?: string } = {}) {
  const prefix = uniquePrefix();
  prefixes.push(prefix);
  const server = await startServer({ sessions: { processTimeout: '1s' }, store: { kind: 'redis', url, prefix, ...store } });
  const client = clientWith(server.url, undefined);
  await state(client, '/inc');
  const id = (await state(client, '/inc')).id;
  await waitFor(async () => (await server.server.sessions.info(id))?.state === 'suspended', 5000, 'the idle suspend');
  return { prefix, server, client, id };
}

test('E7/E12: Redis stops answering mid-run: /readyz 503, a resume gets 503 within 2 s; it answers again: /readyz 200 and the session resumes', TEST, async (t) => {
  if (unavailable !== undefined) return skipOrFailOnCi(t, unavailable);
  const redis = new URL(REDIS_URL);
  const proxy = await TcpProxy.start({ host: redis.hostname, port: Number(redis.port || 6379) });
  t.after(() => proxy.close());
  redis.host = `127.0.0.1:${proxy.port}`;
  const { server, client, id } = await idleSuspended(redis.toString(), { callTimeout: '500ms' });
  const readyz = async () => (await send(`${server.url}/readyz`)).status;

  proxy.stall();
  await waitFor(async () => (await readyz()) === 503, 4000, '/readyz 503');
  const started = Date.now();
  const during = await client.get('/state');
  assert.equal(during.status, 503, during.text);
  assert.ok(Date.now() - started < 2000, `answered after ${Date.now() - started} ms`);
  assert.equal((await server.server.sessions.info(id))?.state, 'suspended', 'still suspended, not forgotten');

  proxy.flow();
  await waitFor(async () => (await readyz()) === 200, 5000, '/readyz 200 again');
  const back = await state(client);
  assert.deepEqual({ id: back.id, resumed: back.resumed, n: back.data.n }, { id, resumed: true, n: 2 });
  await client.close();
  await server.close();
});

test('E8: Redis loses the keys (a restart without persistence) while a session is suspended: a fresh context and a warning, no crash', TEST, async (t) => {
  if (unavailable !== undefined) return skipOrFailOnCi(t, unavailable);
  const { prefix, server, client } = await idleSuspended(REDIS_URL);
  // What a Redis restart without persistence leaves: none of the keys, none of the scripts.
  await removePrefixes([prefix]);
  const redis = await rawClient();
  await redis.scriptFlush().finally(() => redis.destroy());
  const mark = server.logs.length;

  const after = await state(client, '/state');
  assert.equal(after.resumed, false, 'nothing to resume from');
  assert.equal(after.data.n, undefined, 'a fresh context');
  await server.settle();
  const since = server.logs.slice(mark);
  assert.ok(
    since.some((line) => line.level === 40 && line.event === 'memento-missing'),
    `a memento-missing warning: ${JSON.stringify(since)}`,
  );
  assert.equal((await state(client, '/inc')).data.n, 1, 'the fresh context counts from nothing');
  await client.close();
  await server.close();
});

test('startup against a port where no Redis listens: RESIDENT_ERR_STORE_OPEN within about callTimeout, naming the store, without the password', TEST, async () => {
  const password = 'pw-that-must-not-leak-4815';
  const url = `redis://resident:${password}@127.0.0.1:${await freePort()}/0`;
  const started = Date.now();
  await assert.rejects(
    startTestServer({ store: { kind: 'redis', url, callTimeout: '500ms' } }),
    (error: Error & { code?: string }) => {
      assert.equal(error.code, 'RESIDENT_ERR_STORE_OPEN');
      assert.ok(error.message.includes(`Redis store at ${redactUrl(url)}`), error.message);
      assert.match(error.message, /refused/);
      assert.ok(!error.message.includes(password), error.message);
      return true;
    },
  );
  assert.ok(Date.now() - started < 3000, `refused after ${Date.now() - started} ms`);
});

test('the CLI with RESIDENT_STORE_URL naming a port where no Redis listens: exit 2, the redacted URL on stderr, never the password', TEST, async () => {
  const password = 'pw-that-must-not-leak-1623';
  const url = `redis://resident:${password}@127.0.0.1:${await freePort()}`;
  const child = runMain(['--config', writeTempConfig(cliConfig(null, { store: { kind: 'redis', callTimeout: '500ms' } }))], { RESIDENT_STORE_URL: url });
  try {
    assert.equal(await cliExit(child, 20_000), 2, child.stderr());
  } finally {
    if (child.process.exitCode === null) child.process.kill('SIGKILL');
  }
  assert.match(child.stderr(), /Cannot reach the Redis store at redis:\/\/resident:\*\*\*@127\.0\.0\.1:\d+/);
  assert.ok(!child.stderr().includes(password) && !child.stdout().includes(password), 'the password appears nowhere');
});
