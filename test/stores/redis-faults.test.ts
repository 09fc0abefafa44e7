/**
 * The Redis store under faults, on a real Redis (RELIABILITY.md rows of issue 13): a Redis that
 * stops answering (E12: every call fails within store.callTimeout, then works again by itself),
 * a Redis that goes away and comes back (E7: calls fail at once, no queue that hangs, and the
 * store reconnects with no reopening), one that never answers at startup (E6), records damaged
 * behind the store's back (E11: quarantined, reported, never served), and IDs shaped like globs
 * (A7: nothing is ever matched by pattern). Faults come from a TCP proxy between store and Redis.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { RedisStore } from '../../src/stores/redis.ts';
import { skipOrFailOnCi, waitFor } from '../helpers.ts';
import { record, summaryOf } from './contract.ts';
import { REDIS_URL, rawClient, redisUnavailable, removePrefixes, uniquePrefix } from './redis-helpers.ts';
import { TcpProxy } from './tcp-proxy.ts';

const unavailable = await redisUnavailable();
const prefixes: string[] = [];
after(() => (unavailable === undefined ? removePrefixes(prefixes) : undefined));

const CALL_TIMEOUT = 400;
const storeFailed = { name: 'ResidentError', code: 'RESIDENT_ERR_STORE_FAILED' };
const target = () => {
  const url = new URL(REDIS_URL);
  return { host: url.hostname, port: Number(url.port || 6379) };
};
/** REDIS_URL, reached through `proxy`. */
const through = (proxy: TcpProxy) => {
  const url = new URL(REDIS_URL);
  url.host = `127.0.0.1:${proxy.port}`;
  return url.toString();
};

async function openStore(url = REDIS_URL, onCorrupt?: (id: string, reason: string) => void) {
  const prefix = uniquePrefix();
  prefixes.push(prefix);
  return { prefix, store: await RedisStore.open({ url, prefix, callTimeout: CALL_TIMEOUT, onCorrupt }) };
}

/** Asserts `call` rejects with RESIDENT_ERR_STORE_FAILED, and within `withinMs`. */
async function failsWithin(call: () => Promise<unknown>, withinMs: number, what: string): Promise<void> {
  const started = performance.now();
  await assert.rejects(call(), storeFailed, what);
  const took = performance.now() - started;
  assert.ok(took < withinMs, `${what} failed after ${Math.round(took)} ms, not within ${withinMs} ms`);
}

if (unavailable !== undefined) test('redis store: faults', (t) => skipOrFailOnCi(t, unavailable));
else describe('redis store: faults', () => {
  test('E12: a Redis that stops answering fails every call within callTimeout; once it answers again, calls work with no reopening', async () => {
    const proxy = await TcpProxy.start(target());
    const { store } = await openStore(through(proxy));
    try {
      const kept = record({ userId: 'u' });
      await store.set(kept);
      proxy.stall();
      const slack = CALL_TIMEOUT + 600;
      await failsWithin(() => store.get(kept.id), slack, 'get');
      await failsWithin(() => store.set({ ...kept, memento: '["during"]' }), slack, 'set');
      await failsWithin(() => store.setIf({ ...kept, owner: 'n/1', fence: 1 }, { owner: null, fence: 0 }), slack, 'setIf');
      await failsWithin(() => store.list({ limit: 10 }), slack, 'list');
      await failsWithin(() => store.existing([kept.id]), slack, 'existing');
      await failsWithin(() => store.ping(), slack, 'ping');
      proxy.flow();
      // The write that timed out may still land (Redis got it, late): the caller was told it
      // failed, and the next write of the session replaces it.
      await waitFor(() => store.ping().then(() => true, () => false), 5000, 'ping to succeed again');
      const next = { ...kept, memento: '["after"]' };
      await store.set(next);
      assert.deepEqual(await store.get(kept.id), next);
      assert.equal(await store.setIf({ ...next, owner: 'n/1', fence: 1 }, { owner: null, fence: 0 }), true);
      assert.deepEqual(await store.list({ userId: 'u', limit: 10 }), [summaryOf({ ...next, owner: 'n/1', fence: 1 })]);
    } finally {
      await store.close();
      await proxy.close();
    }
  });

  test('close while Redis does not answer, with a call under way: resolves within about callTimeout (shutdown never hangs on the store)', async () => {
    const proxy = await TcpProxy.start(target());
    const { store } = await openStore(through(proxy));
    try {
      proxy.stall();
      const pending = assert.rejects(store.set(record()), storeFailed, 'the write under way fails, it is not claimed done');
      const started = performance.now();
      await store.close();
      const took = performance.now() - started;
      assert.ok(took < CALL_TIMEOUT + 600, `closed after ${Math.round(took)} ms`);
      await pending;
    } finally {
      await proxy.close();
    }
  });

  test('E7: Redis gone: calls fail at once, never queued; it comes back: the store reconnects by itself and its scripts run', async () => {
    const proxy = await TcpProxy.start(target());
    const { store } = await openStore(through(proxy));
    try {
      const kept = record();
      await store.set(kept);
      proxy.cut();
      // The first call may meet the reset itself; once the client knows, calls fail at once.
      await assert.rejects(store.get(kept.id), storeFailed);
      await waitFor(async () => {
        const started = performance.now();
        await assert.rejects(store.set(kept), storeFailed);
        return performance.now() - started < 50;
      }, 3000, 'a call while disconnected failing at once');
      await failsWithin(() => store.deleteIf(kept.id, null), 50, 'deleteIf while disconnected');
      await failsWithin(() => store.ping(), 50, 'ping while disconnected');
      proxy.restore();
      await waitFor(() => store.ping().then(() => true, () => false), 5000, 'ping to succeed after Redis is back');
      assert.deepEqual(await store.get(kept.id), kept);
      assert.equal(await store.setIf({ ...kept, owner: 'n/1', fence: 1 }, { owner: null, fence: 0 }), true, 'a conditional write');
      assert.equal(await store.deleteIf(kept.id, { owner: 'n/1', fence: 1 }), true);
    } finally {
      await store.close();
      await proxy.close();
    }
  });

  test('E6: a server that accepts the connection and never answers: open fails with RESIDENT_ERR_STORE_OPEN within about callTimeout', async () => {
    const proxy = await TcpProxy.start(target());
    proxy.stall();
    try {
      const started = performance.now();
      await assert.rejects(RedisStore.open({ url: through(proxy), prefix: uniquePrefix(), callTimeout: CALL_TIMEOUT }), {
        code: 'RESIDENT_ERR_STORE_OPEN',
        message: new RegExp(`^Cannot reach the Redis store at redis://127\\.0\\.0\\.1:${proxy.port}`),
      });
      const took = performance.now() - started;
      assert.ok(took < CALL_TIMEOUT + 600, `refused after ${Math.round(took)} ms`);
    } finally {
      await proxy.close();
    }
  });

  test('E11: a damaged record (another Redis type, a hash missing fields, a number that is not one) is quarantined, reported and never served', async () => {
    const reported: Array<[string, string]> = [];
    const { prefix, store } = await openStore(REDIS_URL, (id, reason) => reported.push([id, reason]));
    const redis = await rawClient();
    try {
      const [asString, missing, notANumber, sound] = [record({ userId: 'u' }), record({ userId: 'u' }), record({ userId: 'u' }), record({ userId: 'u' })];
      for (const r of [asString, missing, notANumber, sound]) await store.set(r);
      // Damage behind the store's back: what a stray client or a bad restore leaves.
      await redis.del(`${prefix}s:${asString.id}`);
      await redis.set(`${prefix}s:${asString.id}`, 'not a hash');
      await redis.hDel(`${prefix}s:${missing.id}`, 'clientIp');
      await redis.hSet(`${prefix}s:${notANumber.id}`, 'fence', 'x1');
      for (const damaged of [asString, missing, notANumber]) {
        assert.equal(await store.get(damaged.id), undefined, 'never served');
        const quarantined = await redis.hGetAll(`${prefix}q:${damaged.id}`);
        assert.equal(quarantined.id, damaged.id);
        assert.ok(quarantined.reason, 'a reason');
        assert.ok(quarantined.record, 'the record as it was, for inspection');
        assert.ok(Number(quarantined.quarantinedAt) > 0);
      }
      assert.equal(JSON.parse((await redis.hGetAll(`${prefix}q:${missing.id}`)).record!).includes('clientIp'), false);
      assert.equal((await redis.hGetAll(`${prefix}q:${asString.id}`)).record, 'not a hash');
      assert.deepEqual(
        reported.map(([id]) => id),
        [asString.id, missing.id, notANumber.id],
      );
      assert.deepEqual(await store.list({ userId: 'u', limit: 10 }), [summaryOf(sound)], 'only the sound record is listed');
      assert.deepEqual([...(await store.existing([asString.id, missing.id, notANumber.id, sound.id]))], [sound.id]);
      assert.deepEqual(await store.expiredIds(Number.MAX_SAFE_INTEGER, 10), [sound.id], 'out of the expiry index too');
    } finally {
      redis.destroy();
      await store.close();
    }
  });

  test('an index key of another type (written by someone else) refuses the write whole: nothing of it lands, and the store goes on', async () => {
    const { prefix, store } = await openStore();
    const redis = await rawClient();
    try {
      const kept = record({ userId: 'bob' });
      await store.set(kept);
      // A user index that is not a sorted set: a put for that user, and a delete of a record that
      // names it, would fail midway (Redis does not undo a script) without the check before writing.
      await redis.set(`${prefix}u:alice`, 'not a sorted set');
      const refused = record({ userId: 'alice' });
      await assert.rejects(store.set(refused), (error: Error & { code?: string }) => {
        assert.equal(error.code, 'RESIDENT_ERR_STORE_FAILED');
        assert.match(error.message, /is not a sorted set: nothing written/);
        return true;
      });
      assert.equal(await redis.exists(`${prefix}s:${refused.id}`), 0, 'no record written');
      assert.equal(await redis.zScore(`${prefix}ids`, refused.id), null, 'not in the ID index');
      await redis.set(`${prefix}u:bob`, 'not a sorted set either');
      await assert.rejects(store.delete(kept.id), storeFailed);
      assert.deepEqual(await store.get(kept.id), kept, 'the record is whole, in place');
      assert.notEqual(await redis.zScore(`${prefix}ids`, kept.id), null, 'and still indexed');
      await redis.del([`${prefix}u:alice`, `${prefix}u:bob`]);
      await store.set(refused);
      await store.delete(kept.id);
      assert.deepEqual(await store.get(refused.id), refused, 'writes work again once the keys are sound');
      assert.equal(await store.get(kept.id), undefined);
    } finally {
      redis.destroy();
      await store.close();
    }
  });

  test('A7: IDs shaped like globs, Lua or key separators are plain keys: each reaches only its own record', async () => {
    const { prefix, store } = await openStore();
    const redis = await rawClient();
    try {
      const ids = ['*', '?', '[a-z]*', `${prefix}*`, 's:*', "'); redis.call('FLUSHALL') --", 'a b\r\nPING'];
      const plain = record();
      const shaped = ids.map((id) => record({ id, userId: '*' }));
      for (const r of [plain, ...shaped]) await store.set(r);
      assert.deepEqual([...(await store.existing(['*']))], ['*']);
      await store.delete('*');
      await store.quarantine('[a-z]*', 'test');
      assert.deepEqual(await store.get(plain.id), plain, 'untouched');
      const left = shaped.filter((r) => r.id !== '*' && r.id !== '[a-z]*');
      for (const r of left) assert.deepEqual(await store.get(r.id), r);
      assert.deepEqual(await store.list({ userId: '*', limit: 100 }), [...left].sort((a, b) => (a.id < b.id ? -1 : 1)).map(summaryOf));
      assert.equal(await redis.exists(`${prefix}s:${plain.id}`), 1);
    } finally {
      redis.destroy();
      await store.close();
    }
  });
});
