/**
 * The Redis store against the ContextStore contract (contract.ts), on a real Redis. Each store
 * of the run has its own key prefix; every key of the run is removed at the end.
 */
import { after, test } from 'node:test';
import { RedisStore } from '../../src/stores/redis.ts';
import type { ContextStore } from '../../src/stores/store.ts';
import { skipOrFailOnCi } from '../helpers.ts';
import { storeContract } from './contract.ts';
import { REDIS_URL, rawClient, redisUnavailable, removePrefixes, uniquePrefix } from './redis-helpers.ts';

const unavailable = await redisUnavailable();
const prefixes = new Map<ContextStore, string>();
const open = async (prefix: string) => {
  const store = await RedisStore.open({ url: REDIS_URL, prefix, callTimeout: 2000 });
  prefixes.set(store, prefix);
  return store;
};

if (unavailable !== undefined) {
  test('redis store: the ContextStore contract', (t) => skipOrFailOnCi(t, unavailable));
} else {
  after(() => removePrefixes(new Set(prefixes.values())));
  storeContract('redis', {
    create: () => open(uniquePrefix()),
    reopen: (previous) => open(prefixes.get(previous)!),
    async raw(store, id) {
      // The hash field by field (in a fixed order) and when Redis will drop it: all a write changes.
      const client = await rawClient();
      try {
        const key = `${prefixes.get(store)!}s:${id}`;
        const fields = await client.hGetAll(key);
        if (Object.keys(fields).length === 0) return undefined;
        const sorted = Object.entries(fields).sort(([a], [b]) => (a < b ? -1 : 1));
        return JSON.stringify({ fields: sorted, expireTime: await client.pExpireTime(key) });
      } finally {
        client.destroy();
      }
    },
  });
}
