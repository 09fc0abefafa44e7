/**
 * A Redis or PostgreSQL store opened beside a real server (for tests that plant, read and
 * damage records): the server's store.* config on a prefix or table of the test's own
 * (shared-helpers.ts makes the name and removes it after the file), the shipped store open on
 * the same one, and where a quarantined record goes.
 */
import { after } from 'node:test';
import type { ResidentConfigInput } from '../../src/config.ts';
import { tableNames } from '../../src/stores/postgres-schema.ts';
import { PostgresStore } from '../../src/stores/postgres.ts';
import { RedisStore } from '../../src/stores/redis.ts';
import type { ContextStore } from '../../src/stores/store.ts';
import { withClient } from './postgres-helpers.ts';
import { rawClient } from './redis-helpers.ts';
import { SHARED, sharedStore, unavailableReason, type SharedKind } from './shared-helpers.ts';

export type { SharedKind };

export interface OpenShared {
  kind: SharedKind;
  /** store.* of the server's config. */
  config: NonNullable<ResidentConfigInput['store']>;
  /** The shipped store on the same prefix or table. */
  store: ContextStore;
  /** store.prefix (redis) or store.table (postgres). */
  name: string;
  /** Whether the record of `id` was moved aside (Redis `<prefix>q:<id>`, the quarantine table). */
  isQuarantined(id: string): Promise<boolean>;
}

const opened: ContextStore[] = [];
after(async () => {
  for (const store of opened) await store.close();
});

/** Why each shared store cannot be used here (undefined: it answers). */
export async function sharedUnavailable(): Promise<Record<SharedKind, string | undefined>> {
  const reasons = await Promise.all(SHARED.map(unavailableReason));
  return { redis: reasons[0], postgres: reasons[1] };
}

export async function openShared(kind: SharedKind): Promise<OpenShared> {
  const { url, name } = sharedStore(kind);
  const store = kind === 'redis' ? await RedisStore.open({ url, prefix: name, callTimeout: 5_000 }) : await PostgresStore.open({ url, table: name, callTimeout: 5_000 });
  opened.push(store);
  const isQuarantined =
    kind === 'redis'
      ? (id: string) => withRedis(async (redis) => (await redis.exists(`${name}q:${id}`)) === 1)
      : async (id: string) => (await withClient((client) => client.query(`SELECT 1 FROM ${tableNames(name).quarantine} WHERE id = $1`, [id]))).rows.length > 0;
  return { kind, config: kind === 'redis' ? { kind, url, prefix: name } : { kind, url, table: name }, store, name, isQuarantined };
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
