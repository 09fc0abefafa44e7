/**
 * The conditional, fenced writes of the ContextStore contract (setIf, deleteIf), run by
 * storeContract (contract.ts) against every store. What a cluster relies on: a write lands only
 * where the stored owner and fence are what the writer expects, in call order with set and
 * delete, and a refused write changes nothing at all.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ContextStore, OwnerFence, SessionRecord } from '../../src/stores/store.ts';
import { record, summaryOf, type StoreFactory } from './contract.ts';

const A = 'node-a/1';
const B = 'node-b/1';
const C = 'node-c/1';

/** `base` as written by `owner` under `fence`, with its own memento so each version can be told apart. */
function by(base: SessionRecord, owner: string | null, fence: number, memento = `["${owner}@${fence}"]`): SessionRecord {
  return { ...base, owner, fence, memento, updatedAt: base.updatedAt + fence };
}

const held = (owner: string | null, fence: number): OwnerFence => ({ owner, fence });

export function fencedContract(factory: StoreFactory): void {
  /** The record as it sits in storage (read behind the store's back where the factory can). */
  const stored = async (store: ContextStore, id: string): Promise<string | undefined> => {
    if (factory.raw) return factory.raw(store, id);
    const found = await store.get(id);
    return found && JSON.stringify(found);
  };

  test('setIf claims a record from nothing once; an unclaimed expectation never matches a missing record', async () => {
    const store = await factory.create();
    const claimed = by(record(), A, 1);
    assert.equal(await store.setIf(claimed, held(null, 0)), false, '{ owner: null, fence: 0 } expects a record that is there');
    assert.equal(await store.get(claimed.id), undefined);
    assert.deepEqual([...(await store.existing([claimed.id]))], []);
    assert.equal(await store.setIf(claimed, null), true);
    assert.deepEqual(await store.get(claimed.id), claimed);
    const before = await stored(store, claimed.id);
    assert.equal(await store.setIf(by(claimed, B, 1), null), false, 'a second claim from nothing');
    assert.equal(await stored(store, claimed.id), before);
    await store.close();
  });

  test('setIf writes for the current owner and refuses a stale owner and a stale fence, leaving the record byte for byte', async () => {
    const store = await factory.create();
    const base = record({ userId: 'u' });
    await store.set(base);
    assert.equal(await store.setIf(by(base, A, 1), held(null, 0)), true, 'A claims an unclaimed record');
    const checkpoint = by(base, A, 1, '["checkpoint"]');
    assert.equal(await store.setIf(checkpoint, held(A, 1)), true, 'the owner writes');
    assert.deepEqual(await store.get(base.id), checkpoint);
    const takeover = by(base, B, 2);
    assert.equal(await store.setIf(takeover, held(A, 1)), true, 'B takes over from A');

    const afterTakeover = await stored(store, base.id);
    assert.equal(await store.setIf(by(base, A, 1, '["late"]'), held(A, 1)), false, 'A’s late write');
    assert.equal(await store.deleteIf(base.id, held(A, 1)), false, 'A’s late delete');
    assert.equal(await store.setIf(by(base, A, 1), held(null, 0)), false, 'a claim from what was read before any owner');
    assert.equal(await store.setIf(by(base, C, 2), held(B, 1)), false, 'the right owner with a wrong fence');
    assert.equal(await stored(store, base.id), afterTakeover, 'refused writes leave the record as it was');
    assert.deepEqual(await store.get(base.id), takeover);

    const back = by(base, A, 3);
    assert.equal(await store.setIf(back, held(B, 2)), true, 'A takes the session back, under a new fence');
    const afterReturn = await stored(store, base.id);
    assert.equal(await store.setIf(by(base, A, 1, '["older"]'), held(A, 1)), false, 'A under its old fence');
    assert.equal(await store.deleteIf(base.id, held(A, 1)), false);
    assert.equal(await stored(store, base.id), afterReturn);
    assert.deepEqual(await store.list({ userId: 'u', limit: 10 }), [summaryOf(back)], 'listings show the owner and fence');

    assert.equal(await store.deleteIf(base.id, held(A, 3)), true, 'the owner deletes');
    assert.equal(await store.get(base.id), undefined);
    await store.close();
  });

  test('a released session is claimed under the next fence; a session deleted since stays deleted for a stale writer', async () => {
    const store = await factory.create();
    const base = record();
    await store.set(base);
    assert.equal(await store.setIf(by(base, A, 1), held(null, 0)), true);
    assert.equal(await store.setIf(by(base, null, 2), held(A, 1)), true, 'A releases');
    assert.equal(await store.setIf(by(base, B, 1), held(null, 0)), false, 'unclaimed, but not never-claimed');
    assert.equal(await store.setIf(by(base, B, 3), held(null, 2)), true, 'B claims the released record');
    assert.equal(await store.deleteIf(base.id, held(B, 3)), true, 'B closes the session');
    // A node that read the record before anyone claimed it must not bring the closed session back.
    assert.equal(await store.setIf(by(base, C, 1), held(null, 0)), false);
    assert.equal(await store.deleteIf(base.id, held(null, 0)), false);
    assert.equal(await store.get(base.id), undefined);
    assert.equal(await store.deleteIf(base.id, null), true, 'expecting no record where there is none');
    await store.set(base);
    assert.equal(await store.deleteIf(base.id, null), false, 'expecting no record where there is one');
    assert.deepEqual(await store.get(base.id), base);
    await store.close();
  });

  test('setIf and deleteIf take their place in the call order of set and delete of the same ID', async () => {
    const store = await factory.create();
    const base = record();
    const plain = { ...by(base, B, 1), memento: '["plain"]' };
    // Every call issued before any settles.
    const results = await Promise.all([
      store.set(base),
      store.setIf(by(base, A, 1), held(null, 0)),
      store.setIf(by(base, C, 1), held(null, 0)),
      store.delete(base.id),
      store.setIf(by(base, A, 1, '["after the delete"]'), held(A, 1)),
      store.setIf(by(base, B, 1), null),
      store.deleteIf(base.id, held(A, 1)),
      store.set(plain),
      store.deleteIf(base.id, held(B, 1)),
      store.setIf(by(base, C, 1), null),
      store.setIf(by(base, C, 1, '["last"]'), held(C, 1)),
    ]);
    assert.deepEqual(results, [undefined, true, false, undefined, false, true, false, undefined, true, true, true]);
    assert.deepEqual(await store.get(base.id), by(base, C, 1, '["last"]'));

    const [claim, overwrite] = await Promise.all([store.setIf(by(base, null, 2), held(C, 1)), store.set(plain)]);
    assert.equal(claim, true);
    assert.equal(overwrite, undefined);
    assert.deepEqual(await store.get(base.id), plain, 'a set after a conditional write wins');
    await store.close();
  });

  test('200 concurrent conditional writes with the same expectation: exactly one lands', async () => {
    const store = await factory.create();
    const fresh = record();
    const fromNothing = await Promise.all(Array.from({ length: 200 }, (_, i) => store.setIf(by(fresh, `node-${i}`, 1), null)));
    assert.equal(fromNothing.filter(Boolean).length, 1, 'claims from nothing');
    const first = fromNothing.indexOf(true);
    assert.deepEqual(await store.get(fresh.id), by(fresh, `node-${first}`, 1));

    const takeovers = await Promise.all(
      Array.from({ length: 200 }, (_, i) => store.setIf(by(fresh, `other-${i}`, 2), held(`node-${first}`, 1))),
    );
    assert.equal(takeovers.filter(Boolean).length, 1, 'takeovers');
    const second = takeovers.indexOf(true);
    assert.deepEqual(await store.get(fresh.id), by(fresh, `other-${second}`, 2), 'the record is the winner’s');

    const deletes = await Promise.all(Array.from({ length: 200 }, () => store.deleteIf(fresh.id, held(`other-${second}`, 2))));
    assert.equal(deletes.filter(Boolean).length, 1, 'deletes');
    assert.equal(await store.get(fresh.id), undefined);
    await store.close();
  });

  test('a conditional write that breaks the fencing rule is rejected and changes nothing', async () => {
    const store = await factory.create();
    const base = by(record(), A, 1);
    await store.set(base);
    const before = await stored(store, base.id);
    const broken: Array<[SessionRecord, OwnerFence | null, string]> = [
      [by(base, A, 2), held(A, 1), 'the same owner raising the fence'],
      [by(base, B, 1), held(A, 1), 'a new owner keeping the fence'],
      [by(base, B, 3), held(A, 1), 'a new owner skipping a fence'],
      [by(base, B, 0), held(A, 1), 'a fence going back'],
      [by(base, '', 2), held(A, 1), 'an empty owner'],
      [by(base, B, 1.5), held(A, 1), 'a fence that is not an integer'],
    ];
    for (const [write, expected, what] of broken) {
      await assert.rejects(store.setIf(write, expected), RangeError, what);
    }
    assert.equal(await stored(store, base.id), before);
    const absent = record();
    await assert.rejects(store.setIf(by(absent, A, 2), null), RangeError, 'a first owner whose fence is not 1');
    await assert.rejects(store.setIf(by(absent, null, 1), null), RangeError, 'a record never claimed whose fence is not 0');
    assert.equal(await store.get(absent.id), undefined);
    assert.equal(await store.setIf(by(absent, null, 0), null), true, 'a record written unclaimed');
    await store.close();
  });

  if (factory.reopen) {
    const reopen = factory.reopen;
    test('owner and fence survive closing and reopening: a stale owner is still refused', async () => {
      const store = await factory.create();
      const base = record();
      await store.setIf(by(base, A, 1), null);
      await store.setIf(by(base, B, 2), held(A, 1));
      await store.close();
      const again = await reopen(store);
      assert.deepEqual(await again.get(base.id), by(base, B, 2));
      const before = await stored(again, base.id);
      assert.equal(await again.setIf(by(base, A, 1, '["late"]'), held(A, 1)), false);
      assert.equal(await stored(again, base.id), before);
      assert.equal(await again.setIf(by(base, B, 2, '["again"]'), held(B, 2)), true);
      assert.deepEqual(await again.get(base.id), by(base, B, 2, '["again"]'));
      await again.close();
    });
  }
}
