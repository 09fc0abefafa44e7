import Database from 'better-sqlite3';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStore } from '../../src/stores/file.ts';
import { MemoryStore } from '../../src/stores/memory.ts';
import { SqliteStore } from '../../src/stores/sqlite.ts';
import type { ContextStore } from '../../src/stores/store.ts';
import { storeContract } from './contract.ts';

const tempDir = () => mkdtempSync(join(tmpdir(), 'resident-store-'));
const locations = new WeakMap<ContextStore, string>();
/** `store`, remembered as kept at `location` (a folder or a database file). */
const at = <T extends ContextStore>(store: T, location: string): T => (locations.set(store, location), store);

storeContract('memory', { create: async () => new MemoryStore() });

storeContract('file', {
  async create() {
    const dir = tempDir();
    return at(await FileStore.open({ dir }), dir);
  },
  reopen: async (previous) => at(await FileStore.open({ dir: locations.get(previous)! }), locations.get(previous)!),
  raw(store, id) {
    try {
      return readFileSync(join(locations.get(store)!, `${id}.json`), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  },
});

storeContract('sqlite', {
  async create() {
    const path = join(tempDir(), 'contexts.db');
    return at(new SqliteStore({ path }), path);
  },
  reopen: async (previous) => at(new SqliteStore({ path: locations.get(previous)! }), locations.get(previous)!),
  raw(store, id) {
    // A second connection sees what the store committed, every column as SQLite holds it.
    const db = new Database(locations.get(store)!, { readonly: true, fileMustExist: true });
    try {
      const row = db.prepare('SELECT * FROM sessions WHERE id = ?').get(id);
      return row === undefined ? undefined : JSON.stringify(row);
    } finally {
      db.close();
    }
  },
});
