/**
 * Red team: misuse of the store contract's conditional writes. A malformed call is refused on
 * its own; it never takes down the writes of other sessions made in the same turn, and every
 * store answers it the same way.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { FileStore } from '../src/stores/file.ts';
import { MemoryStore } from '../src/stores/memory.ts';
import { SqliteStore } from '../src/stores/sqlite.ts';
import type { ContextStore, OwnerFence } from '../src/stores/store.ts';
import { record } from './stores/contract.ts';

const stores: Array<[string, () => Promise<ContextStore>]> = [
  ['memory', async () => new MemoryStore()],
  ['file', async () => FileStore.open({ dir: mkdtempSync(join(tmpdir(), 'redteam-store-')) })],
  ['sqlite', async () => new SqliteStore({ path: join(mkdtempSync(join(tmpdir(), 'redteam-store-')), 'contexts.db') })],
];

const malformed: Array<[string, unknown]> = [
  ['undefined', undefined],
  ['an owner that is a number', { owner: 5, fence: 0 }],
  ['an owner that is an object', { owner: {}, fence: 0 }],
  ['a fence that is a string', { owner: null, fence: '0' }],
  ['no fence', { owner: 'node-a' }],
];

for (const [kind, open] of stores) {
  for (const [what, expected] of malformed) {
    test(`${kind}: deleteIf with ${what} as expected is refused alone (RangeError), and a suspend written in the same turn lands`, async () => {
      const store = await open();
      try {
        const victim = record();
        await store.set(victim);
        const innocent = record();
        const [written, misuse] = await Promise.allSettled([store.set(innocent), store.deleteIf(victim.id, expected as OwnerFence)]);
        assert.equal(written.status, 'fulfilled', `the innocent write failed: ${String((written as PromiseRejectedResult).reason)}`);
        assert.equal(misuse.status, 'rejected', 'the malformed deleteIf is refused');
        assert.ok((misuse as PromiseRejectedResult).reason instanceof RangeError, `refused with a RangeError, not ${String((misuse as PromiseRejectedResult).reason)}`);
        assert.ok(await store.get(innocent.id), 'the innocent record is stored');
        assert.ok(await store.get(victim.id), 'the record the malformed deleteIf named is untouched');
      } finally {
        await store.close();
      }
    });
  }
}

test('sqlite: a write SQLite cannot bind fails alone; the other writes of its turn land', async () => {
  const store = new SqliteStore({ path: join(mkdtempSync(join(tmpdir(), 'redteam-store-')), 'contexts.db') });
  try {
    const innocent = [record(), record()];
    const broken = { ...record(), userId: { name: 'not a string' } } as unknown as ReturnType<typeof record>;
    const results = await Promise.allSettled([store.set(innocent[0]!), store.set(broken), store.set(innocent[1]!)]);
    assert.deepEqual(results.map((result) => result.status), ['fulfilled', 'rejected', 'fulfilled']);
    for (const one of innocent) assert.ok(await store.get(one.id), 'the innocent record is stored');
    assert.equal(await store.get(broken.id), undefined);
  } finally {
    await store.close();
  }
});
