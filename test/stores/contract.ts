/**
 * The ContextStore contract, run against every store by the *.test.ts files beside it. A new
 * store is done when this suite passes against it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { newSessionId } from '../../src/contexts/ids.ts';
import type { ContextStore, SessionRecord } from '../../src/stores/store.ts';

export interface StoreFactory {
  /** A fresh, empty store. */
  create(): Promise<ContextStore>;
  /** The same store's data opened again (a restart); omit for volatile stores. */
  reopen?(previous: ContextStore): Promise<ContextStore>;
}

export function record(overrides: Partial<SessionRecord> = {}): SessionRecord {
  const now = Date.now();
  return {
    id: newSessionId(),
    userId: null,
    memento: '[{"n":1},2]',
    mementoVersion: 1,
    clientIp: '127.0.0.1',
    createdAt: now - 1000,
    updatedAt: now,
    lastActivityAt: now - 10,
    expiresAt: now + 60_000,
    ...overrides,
  };
}

export function storeContract(name: string, factory: StoreFactory): void {
  describe(`${name} store: the ContextStore contract`, () => {
    test('get of an unknown ID is undefined', async () => {
      const store = await factory.create();
      assert.equal(await store.get(newSessionId()), undefined);
      await store.close();
    });

    test('set then get returns the record field for field', async () => {
      const store = await factory.create();
      const saved = record({ userId: 'user-7', mementoVersion: 3, clientIp: '::1' });
      await store.set(saved);
      assert.deepEqual(await store.get(saved.id), saved);
      await store.close();
    });

    test('a record without a memento or expiry round-trips', async () => {
      const store = await factory.create();
      const saved = record({ memento: null, expiresAt: null });
      await store.set(saved);
      assert.deepEqual(await store.get(saved.id), saved);
      await store.close();
    });

    test('the memento text comes back byte for byte, whatever it contains', async () => {
      const store = await factory.create();
      const memento = JSON.stringify(["'; DROP TABLE sessions; --", '\u0000\u2028\ud83d\ude00', 'x'.repeat(200_000)]);
      const saved = record({ memento });
      await store.set(saved);
      assert.equal((await store.get(saved.id))?.memento, memento);
      await store.close();
    });

    test('set replaces: the last write wins, also when writes overlap', async () => {
      const store = await factory.create();
      const first = record();
      await Promise.all(
        Array.from({ length: 20 }, (_, i) => store.set({ ...first, memento: `[${i}]`, updatedAt: first.updatedAt + i })),
      );
      assert.equal((await store.get(first.id))?.memento, '[19]');
      await store.close();
    });

    test('a change to the caller’s object after set does not alter what was saved', async () => {
      const store = await factory.create();
      const saved = record();
      await store.set(saved);
      saved.memento = '[0]';
      assert.equal((await store.get(saved.id))?.memento, '[{"n":1},2]');
      await store.close();
    });

    test('delete removes the record; deleting an unknown ID is fine', async () => {
      const store = await factory.create();
      const saved = record();
      await store.set(saved);
      await store.delete(saved.id);
      assert.equal(await store.get(saved.id), undefined);
      await store.delete(newSessionId());
      await store.close();
    });

    test('expiredIds lists exactly the expired records, oldest first, up to the limit', async () => {
      const store = await factory.create();
      const now = Date.now();
      const expired = [record({ expiresAt: now - 5 }), record({ expiresAt: now - 1 }), record({ expiresAt: now })];
      const alive = [record({ expiresAt: now + 60_000 }), record({ expiresAt: null })];
      for (const r of [...expired, ...alive]) await store.set(r);
      assert.deepEqual(new Set(await store.expiredIds(now, 100)), new Set(expired.map((r) => r.id)));
      assert.equal((await store.expiredIds(now, 2)).length, 2);
      // Expiry is the caller's judgement: an expired record is still returned by get.
      assert.deepEqual(await store.get(expired[0]!.id), expired[0]);
      for (const r of expired) await store.delete(r.id);
      assert.deepEqual(await store.expiredIds(now, 100), []);
      for (const r of alive) assert.deepEqual(await store.get(r.id), r);
      await store.close();
    });

    test('a delete after a write of the same ID wins, even when issued without waiting', async () => {
      const store = await factory.create();
      const saved = record();
      const write = store.set(saved);
      const removal = store.delete(saved.id);
      await Promise.all([write, removal]);
      assert.equal(await store.get(saved.id), undefined);
      await store.close();
    });

    test('quarantine takes a record out of service', async () => {
      const store = await factory.create();
      const saved = record();
      await store.set(saved);
      await store.quarantine(saved.id, 'test');
      assert.equal(await store.get(saved.id), undefined);
      await store.close();
    });

    if (factory.reopen) {
      const reopen = factory.reopen;
      test('records survive closing and reopening the store', async () => {
        const store = await factory.create();
        const kept = [record(), record({ memento: null, expiresAt: null, userId: 'u' })];
        for (const r of kept) await store.set(r);
        const removed = record();
        await store.set(removed);
        await store.delete(removed.id);
        await store.close();
        const again = await reopen(store);
        for (const r of kept) assert.deepEqual(await again.get(r.id), r);
        assert.equal(await again.get(removed.id), undefined);
        await again.close();
      });
    }
  });
}
