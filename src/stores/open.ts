import type { ResidentConfig } from '../config.ts';
import { hashId, type Logger } from '../log.ts';
import { FileStore } from './file.ts';
import { MemoryStore } from './memory.ts';
import { PostgresStore } from './postgres.ts';
import { RedisStore } from './redis.ts';
import { SqliteStore } from './sqlite.ts';
import type { ContextStore, CorruptRecordListener } from './store.ts';

/** Opens the configured store; fails with RESIDENT_ERR_STORE_OPEN (exit 2) when it cannot. */
export async function openStore(config: ResidentConfig['store'], log: Logger): Promise<ContextStore> {
  const onCorrupt: CorruptRecordListener = (id, reason) =>
    log.error({ event: 'record-corrupt', session: hashId(id), reason }, 'a stored session record cannot be read: quarantined');
  switch (config.kind) {
    case 'memory':
      return new MemoryStore({ maxEntries: config.maxEntries });
    case 'file':
      return FileStore.open({ dir: config.path, onCorrupt });
    case 'sqlite':
      return new SqliteStore({ path: config.path, synchronous: config.synchronous, onCorrupt });
    case 'redis':
      return RedisStore.open({ url: config.url, prefix: config.prefix, callTimeout: config.callTimeout, onCorrupt });
    case 'postgres':
      return PostgresStore.open({ url: config.url, table: config.table, callTimeout: config.callTimeout, onCorrupt });
  }
}
