/**
 * A Redis or PostgreSQL store for a test through a real server: the server's config on a key
 * prefix or table of the run's own, the shipped store open on the same one beside it (to plant
 * and read records), and a raw client to damage them behind both backs. Prefixes are deleted
 * and tables dropped after the file's tests.
 */
import { after } from 'node:test';
import type { ResidentConfigInput } from '../../src/config.ts';
import { tableNames } from '../../src/stores/postgres-schema.ts';
import { PostgresStore } from '../../src/stores/postgres.ts';
import { RedisStore } from '../../src/stores/redis.ts';
import type { ContextStore } from '../../src/stores/store.ts';
import { POSTGRES_URL, postgresUnavailable, tempTable, withClient } from './postgres-helpers.ts';
import { REDIS_URL, rawClient, redisUnavailable, removePrefixes, uniquePrefix } from './redis-helpers.ts';

export type SharedKind = 'redis' | 'postgres';

export interface SharedStore {
  kind: SharedKind;
  /** store.* of the server's config. */
  config: NonNullable<ResidentConfigInput['store']>;
  /** The shipped store on the same prefix or table. */
  store: ContextStore;
  /** The key (Redis) or table (PostgreSQL) name parts the raw damage needs. */
  prefix: string;
  table: string;
  /** Whether the record of `id` was moved aside (Redis `<prefix>q:<id>`, the quarantine table). */
  isQuarantined(id: string): Promise<boolean>;
}

const prefixes: string[] = [];
const opened: ContextStore[] = [];
after(async () => {
  for (const store of opened) await store.close();
  await removePrefixes(prefixes);
});

/** Why each shared store cannot be used here (undefined: it answers). */
export async function sharedUnavailable(): Promise<Record<SharedKind, string | undefined>> {
  return { redis: await redisUnavailable(), postgres: (await postgresUnavailable()) ?? undefined };
}

export async function sharedStore(kind: SharedKind): Promise<SharedStore> {
  if (kind === 'redis') {
    const prefix = uniquePrefix();
    prefixes.push(prefix);
    const store = await RedisStore.open({ url: REDIS_URL, prefix, callTimeout: 5_000 });
    opened.push(store);
    return {
      kind,
      config: { kind, url: REDIS_URL, prefix },
      store,
      prefix,
      table: '',
      isQuarantined: (id) => withRedis(async (redis) => (await redis.exists(`${prefix}q:${id}`)) === 1),
    };
  }
  const table = tempTable();
  const store = await PostgresStore.open({ url: POSTGRES_URL, table, callTimeout: 5_000 });
  opened.push(store);
  return {
    kind,
    config: { kind, url: POSTGRES_URL, table },
    store,
    prefix: '',
    table,
    isQuarantined: async (id) =>
      (await withClient((client) => client.query(`SELECT 1 FROM ${tableNames(table).quarantine} WHERE id = $1`, [id]))).rows.length > 0,
  };
}

/** Runs `work` on a raw Redis connection of its own. */
export async function withRedis<T>(work: (redis: Awaited<ReturnType<typeof rawClient>>) => Promise<T>): Promise<T> {
  const redis = await rawClient();
  try {
    return await work(redis);
  } finally {
    redis.destroy();
  }
}
