/** The registry of the configured shared store (cluster.enabled needs store.kind redis or postgres). */
import { PostgresStore } from '../stores/postgres.ts';
import { RedisStore } from '../stores/redis.ts';
import type { ContextStore } from '../stores/store.ts';
import { PostgresRegistry } from './postgres-registry.ts';
import { RedisRegistry } from './redis-registry.ts';
import type { OwnerRegistry } from './registry.ts';

export function openRegistry(store: ContextStore): OwnerRegistry {
  if (store instanceof RedisStore) return new RedisRegistry(store);
  if (store instanceof PostgresStore) return new PostgresRegistry(store);
  throw new Error(`cluster.enabled needs a Redis or PostgreSQL store, not "${store.kind}"`);
}
