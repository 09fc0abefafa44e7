/**
 * The ContextStore contract, run against every store by the *.test.ts files beside it. A new
 * store is done when this suite passes against it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { newSessionId } from '../../src/contexts/ids.ts';
import type { ContextStore, ListQuery, SessionRecord, SessionSummary } from '../../src/stores/store.ts';
import { fencedContract } from './contract-fenced.ts';

export interface StoreFactory {
  /** A fresh, empty store. */
  create(): Promise<ContextStore>;
  /** The same store's data opened again (a restart); omit for volatile stores. */
  reopen?(previous: ContextStore): Promise<ContextStore>;
  /**
   * The record of `id` exactly as it sits in storage, read behind the store's back (undefined:
   * none), so a refused write can be shown to change nothing; omit where `get` is all there is.
   */
  raw?(store: ContextStore, id: string): string | undefined | Promise<string | undefined>;
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
    owner: null,
    fence: 0,
    ...overrides,
  };
}

/**
 * What `list` must answer for a record: every field but the memento, plus the memento's size in
 * UTF-8 bytes (0 without one). Written out here rather than taken from src, so a wrong summary
 * in src cannot make its own expectation.
 */
export function summaryOf(r: SessionRecord): SessionSummary {
  const { memento, ...rest } = r;
  return { ...rest, mementoBytes: memento === null ? 0 : Buffer.byteLength(memento, 'utf8') };
}

/** Ascending ID order, as the stores sort: by UTF-16 code unit, the same as bytes for ID letters. */
export const byId = (a: { id: string }, b: { id: string }) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/**
 * Every page of a listing, following `after` = the last ID of each page until an empty page.
 * Asserts every page but the last non-empty one is full, and stops a store that ignores `after`.
 */
async function pages(store: ContextStore, query: Omit<ListQuery, 'after'>): Promise<SessionSummary[][]> {
  const result: SessionSummary[][] = [];
  let after: string | undefined;
  for (;;) {
    const page = await store.list(after === undefined ? { ...query } : { ...query, after });
    assert.ok(page.length <= query.limit, `a page of ${page.length} for limit ${query.limit}`);
    if (page.length === 0) return result;
    const previous = result.at(-1);
    if (previous) assert.equal(previous.length, query.limit, 'only the last page is short');
    result.push(page);
    assert.ok(result.length <= 1000, 'the listing never ends: is `after` ignored?');
    after = page.at(-1)!.id;
  }
}

/** The full listing and each user's listing are exactly the records of `model`, in ID order. */
async function assertListings(store: ContextStore, model: Iterable<SessionRecord>, users: string[], message = ''): Promise<void> {
  const expected = [...model].sort(byId).map(summaryOf);
  assert.deepEqual(await store.list({ limit: 10_000 }), expected, `${message} the full listing`);
  for (const userId of users) {
    assert.deepEqual(
      await store.list({ userId, limit: 10_000 }),
      expected.filter((s) => s.userId === userId),
      `${message} the listing of ${userId}`,
    );
  }
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
      const saved = record({ userId: 'user-7', mementoVersion: 3, clientIp: '::1', owner: 'node-1/7', fence: 7 });
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

    test('existing names exactly the IDs that have a record, for hundreds of IDs in one call', async () => {
      const store = await factory.create();
      const kept = [record(), record({ memento: null }), record({ expiresAt: Date.now() - 1000 })];
      const deleted = record();
      for (const r of [...kept, deleted]) await store.set(r);
      await store.delete(deleted.id);
      // As many values as a 16 KiB Cookie header can carry, the real ones last.
      const junk = Array.from({ length: 600 }, () => newSessionId());
      const found = await store.existing([...junk, deleted.id, ...kept.map((r) => r.id)]);
      assert.deepEqual([...found].sort(), kept.map((r) => r.id).sort(), 'kept records exist (expired ones too: expiry is the caller’s call); junk and deleted do not');
      assert.deepEqual([...(await store.existing([]))], []);
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

    test('list of an empty store is empty', async () => {
      const store = await factory.create();
      assert.deepEqual(await store.list({ limit: 10 }), []);
      assert.deepEqual(await store.list({ userId: 'A', limit: 10 }), []);
      assert.deepEqual(await store.list({ after: newSessionId(), limit: 10 }), []);
      await store.close();
    });

    test('list returns summaries in ascending ID order: every field but the memento, and its UTF-8 size', async () => {
      const store = await factory.create();
      const now = Date.now();
      // Each record with its memento's size in UTF-8 bytes, counted by hand: 'é😀' is 3 UTF-16
      // units but 2 + 4 bytes; null and '' both weigh 0; the default memento is 11 ASCII bytes.
      const sizes = new Map<SessionRecord, number>([
        [record({ userId: 'user-7', memento: 'é😀', mementoVersion: 3, clientIp: '::1', expiresAt: null }), 6],
        [record({ memento: null }), 0],
        [record({ memento: '', expiresAt: now - 5 }), 0],
        [record({ memento: 'x'.repeat(100_000) + '€', createdAt: now - 9000, updatedAt: now - 8000, lastActivityAt: now - 7000 }), 100_003],
        [record({ userId: 'user-8', clientIp: '10.1.2.3', mementoVersion: 0, owner: 'node-2/1', fence: 3 }), 11],
      ]);
      // Written in an order that is neither the ID order nor its reverse.
      const sorted = [...sizes.keys()].sort(byId);
      for (const at of [2, 0, 4, 1, 3]) await store.set(sorted[at]!);
      const listed = await store.list({ limit: 100 });
      assert.deepEqual(
        listed.map((s) => s.id),
        sorted.map((r) => r.id),
        'ascending ID order',
      );
      assert.deepEqual(
        listed.map((s) => s.mementoBytes),
        sorted.map((r) => sizes.get(r)),
        'mementoBytes',
      );
      assert.deepEqual(listed, sorted.map(summaryOf), 'each summary is the record as set, without its memento');
      for (const summary of listed) assert.ok(!('memento' in summary), 'no memento key in a summary');
      assert.deepEqual(await store.list({ limit: 2 }), sorted.slice(0, 2).map(summaryOf), 'at most limit, the first in ID order');
      await store.close();
    });

    test('a summary from list is a copy: changing it does not change the store', async () => {
      const store = await factory.create();
      const saved = record({ userId: 'A' });
      await store.set(saved);
      const [summary] = await store.list({ limit: 10 });
      assert.ok(summary);
      summary.userId = 'B';
      summary.mementoBytes = 1;
      saved.userId = 'C';
      await assertListings(store, [{ ...saved, userId: 'A' }], ['A', 'B', 'C']);
      await store.close();
    });

    test('paging with after visits every record exactly once, in order, then an empty page', async () => {
      const store = await factory.create();
      const records = Array.from({ length: 25 }, (_, i) => record({ userId: i % 3 === 0 ? null : `user-${i % 2}`, memento: `[${i}]` }));
      for (const r of records) await store.set(r);
      const sorted = [...records].sort(byId);
      const visited = await pages(store, { limit: 10 });
      assert.deepEqual(
        visited.map((page) => page.length),
        [10, 10, 5],
      );
      assert.deepEqual(visited.flat(), sorted.map(summaryOf));
      assert.deepEqual(await store.list({ after: sorted.at(-1)!.id, limit: 10 }), [], 'nothing after the last ID');
      assert.deepEqual(await store.list({ limit: 1 }), [summaryOf(sorted[0]!)]);
      // after is exclusive and need not be a stored ID: a cursor whose record was deleted still works.
      const cursor = sorted[9]!.id;
      await store.delete(cursor);
      assert.deepEqual(await store.list({ after: cursor, limit: 10 }), sorted.slice(10, 20).map(summaryOf));
      const stranger = newSessionId();
      assert.deepEqual(
        await store.list({ after: stranger, limit: 100 }),
        sorted.filter((r) => r.id > stranger && r.id !== cursor).map(summaryOf),
        'after an ID that was never stored',
      );
      await store.close();
    });

    test('list with userId gives exactly that user’s records, also paged; set, delete and quarantine move them', async () => {
      const store = await factory.create();
      const model = new Map<string, SessionRecord>();
      const put = async (r: SessionRecord) => {
        await store.set(r);
        model.set(r.id, r);
      };
      const ofA = Array.from({ length: 12 }, () => record({ userId: 'A' }));
      const ofB = Array.from({ length: 3 }, () => record({ userId: 'B' }));
      const ofNobody = Array.from({ length: 5 }, () => record({ userId: null }));
      for (const r of [...ofNobody, ...ofA, ...ofB]) await put(r);
      const users = ['A', 'B', 'nobody', ''];
      await assertListings(store, model.values(), users, 'at first:');
      const pagesOfA = await pages(store, { userId: 'A', limit: 5 });
      assert.deepEqual(
        pagesOfA.map((page) => page.length),
        [5, 5, 2],
      );
      assert.deepEqual(pagesOfA.flat(), [...ofA].sort(byId).map(summaryOf), 'A’s pages');
      assert.deepEqual(
        (await pages(store, { userId: 'B', limit: 2 })).flat(),
        [...ofB].sort(byId).map(summaryOf),
        'B’s pages',
      );

      const [moved, unclaimed, deleted, quarantined, back] = [...ofA].sort(byId) as [SessionRecord, SessionRecord, SessionRecord, SessionRecord, SessionRecord];
      await put({ ...moved, userId: 'B', memento: 'ü', updatedAt: moved.updatedAt + 1 });
      await assertListings(store, model.values(), users, 'after A → B:');
      await put({ ...unclaimed, userId: null });
      await assertListings(store, model.values(), users, 'after A → null:');
      await store.delete(deleted.id);
      model.delete(deleted.id);
      await assertListings(store, model.values(), users, 'after a delete:');
      await store.quarantine(quarantined.id, 'test');
      model.delete(quarantined.id);
      await assertListings(store, model.values(), users, 'after a quarantine:');
      await put({ ...back, userId: 'B' });
      await put({ ...back, userId: 'A', memento: null });
      await assertListings(store, model.values(), users, 'after A → B → A:');
      await put({ ...ofB[0]!, userId: 'A' });
      await assertListings(store, model.values(), users, 'after B → A:');
      assert.equal((await store.list({ userId: 'A', limit: 100 })).length, 12 - 4 + 1);
      await store.close();
    });

    test('ping resolves on a healthy store and leaves nothing listed', async () => {
      const store = await factory.create();
      assert.equal(await store.ping(), undefined);
      assert.deepEqual(await store.list({ limit: 10 }), []);
      const saved = record({ userId: 'A' });
      await store.set(saved);
      await store.ping();
      await assertListings(store, [saved], ['A']);
      await store.close();
    });

    if (factory.reopen) {
      const reopen = factory.reopen;
      test('listings are the same after closing and reopening the store', async () => {
        const store = await factory.create();
        const model = new Map<string, SessionRecord>();
        const records = Array.from({ length: 30 }, (_, i) =>
          record({ userId: [null, 'A', 'B'][i % 3]!, memento: i % 4 === 0 ? null : `["é${i}😀"]`, expiresAt: i % 5 === 0 ? null : Date.now() + i }),
        );
        for (const r of records) {
          await store.set(r);
          model.set(r.id, r);
        }
        const [moved, deleted, quarantined] = records.filter((r) => r.userId === 'A') as [SessionRecord, SessionRecord, SessionRecord];
        await store.set({ ...moved, userId: 'B' });
        model.set(moved.id, { ...moved, userId: 'B' });
        await store.delete(deleted.id);
        model.delete(deleted.id);
        await store.quarantine(quarantined.id, 'test');
        model.delete(quarantined.id);
        await store.ping();
        const users = ['A', 'B'];
        await assertListings(store, model.values(), users, 'before closing:');
        const before = {
          all: await pages(store, { limit: 7 }),
          A: await pages(store, { userId: 'A', limit: 3 }),
          B: await pages(store, { userId: 'B', limit: 3 }),
        };
        await store.close();
        const again = await reopen(store);
        await assertListings(again, model.values(), users, 'after reopening:');
        assert.deepEqual(
          {
            all: await pages(again, { limit: 7 }),
            A: await pages(again, { userId: 'A', limit: 3 }),
            B: await pages(again, { userId: 'B', limit: 3 }),
          },
          before,
        );
        await again.ping();
        await again.close();
      });

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

    fencedContract(factory);
  });
}
