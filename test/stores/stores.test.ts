import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStore } from '../../src/stores/file.ts';
import { MemoryStore } from '../../src/stores/memory.ts';
import { SqliteStore } from '../../src/stores/sqlite.ts';
import type { ContextStore } from '../../src/stores/store.ts';
import { storeContract } from './contract.ts';

const tempDir = () => mkdtempSync(join(tmpdir(), 'resident-store-'));
const locations = new WeakMap<ContextStore, string>();

storeContract('memory', { create: async () => new MemoryStore() });

storeContract('file', {
  async create() {
    const dir = tempDir();
    const store = await FileStore.open({ dir });
    locations.set(store, dir);
    return store;
  },
  reopen: (previous) => FileStore.open({ dir: locations.get(previous)! }),
});

storeContract('sqlite', {
  async create() {
    const path = join(tempDir(), 'contexts.db');
    const store = new SqliteStore({ path });
    locations.set(store, path);
    return store;
  },
  reopen: async (previous) => new SqliteStore({ path: locations.get(previous)! }),
});
