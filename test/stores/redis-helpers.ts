/**
 * For the Redis store's tests: the Redis to test against (RESIDENT_TEST_REDIS_URL, default the
 * local one), whether it answers, key prefixes unique to the run, and removal of what a run wrote.
 */
import { randomBytes } from 'node:crypto';
import { createClient, type RedisClientType } from 'redis';

export const REDIS_URL = process.env.RESIDENT_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A plain client, behind the store's back; the caller closes it. */
export async function rawClient(): Promise<RedisClientType> {
  const client: RedisClientType = createClient({ url: REDIS_URL, socket: { connectTimeout: 1000, reconnectStrategy: false } });
  client.on('error', () => {});
  await client.connect();
  return client;
}

/** Why the tests cannot run here, or undefined when Redis answers PING. */
export async function redisUnavailable(): Promise<string | undefined> {
  try {
    const client = await rawClient();
    try {
      await client.ping();
    } finally {
      client.destroy();
    }
    return undefined;
  } catch (error) {
    return `no Redis answers at ${REDIS_URL} (${(error as Error).message || String(error)}); set RESIDENT_TEST_REDIS_URL`;
  }
}

/** A key prefix no other run or test uses. */
export const uniquePrefix = (): string => `resident_test_${process.pid}_${randomBytes(4).toString('hex')}:`;

/** Deletes every key under `prefixes` (test prefixes only: never built from session IDs). */
export async function removePrefixes(prefixes: Iterable<string>): Promise<void> {
  const client = await rawClient();
  try {
    for (const prefix of prefixes) {
      for await (const keys of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) {
        if (keys.length > 0) await client.del(keys);
      }
    }
  } finally {
    client.destroy();
  }
}
