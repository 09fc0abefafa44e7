/**
 * The OwnerRegistry contract (src/cluster/registry.ts), run by registry.test.ts against the
 * Redis and the PostgreSQL registry on the real services: node leases judged by the store's
 * clock, and claim-or-locate as one atomic step that leaves everything but owner and fence alone.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test, type TestContext } from 'node:test';
import type { ClaimAnswer, NodeLease, OwnerRegistry } from '../../src/cluster/registry.ts';
import type { ContextStore, SessionRecord } from '../../src/stores/store.ts';
import { skipOrFailOnCi } from '../helpers.ts';
import { record } from './contract.ts';

export interface RegistrySubject {
  store: ContextStore;
  registry: OwnerRegistry;
  /** Whether `during` wrote the record of `id` (read behind the store's back). */
  wrote(id: string, during: () => Promise<unknown>): Promise<boolean>;
  /** Another node: a store (its own connections) and registry on the same prefix or table. */
  peer(): Promise<RegistrySubject>;
}

export interface RegistryFactory {
  kind: string;
  /** Why the service cannot be used here, or undefined. */
  unavailable(): Promise<string | undefined>;
  /** A store and registry on a prefix or table of their own (closed by the factory after the file). */
  open(): Promise<RegistrySubject>;
}

const LONG = 60_000;
/** A lease that lapses within the test; waited out with EXPIRED_AFTER. */
const SHORT = 300;
const EXPIRED_AFTER = 600;
const TEST = { timeout: 60_000 };

let nodes = 0;
/** A lease of a new incarnation, unique to the run. */
function newLease(node = `node-${++nodes}`): NodeLease {
  return { owner: `${node}#${process.pid}-${nodes}-${Math.random().toString(36).slice(2, 8)}`, nodeId: node, url: `http://10.0.0.${nodes % 250}:7000/${node}` };
}

export function registryContract(factory: RegistryFactory): void {
  describe(`${factory.kind} registry: the OwnerRegistry contract`, () => {
    /** The subject, or undefined when the test was skipped (failed on CI) for want of the service. */
    const open = async (t: TestContext): Promise<RegistrySubject | undefined> => {
      const why = await factory.unavailable();
      if (why !== undefined) return void skipOrFailOnCi(t, why);
      return factory.open();
    };
    /** A record stored unowned, or owned by `owner` at `fence`. */
    const stored = async (s: RegistrySubject, fields: Partial<SessionRecord> = {}): Promise<SessionRecord> => {
      const saved = record(fields);
      await s.store.set(saved);
      return saved;
    };

    test('acquire: a second lease of the same owner is refused and leaves the first as it was', TEST, async (t) => {
      const s = await open(t);
      if (!s) return;
      const lease = newLease();
      assert.equal(await s.registry.acquire(lease, LONG), true);
      assert.equal(await s.registry.acquire({ ...lease, url: 'http://elsewhere:1/' }, LONG), false);
      assert.deepEqual(await s.registry.lease(lease.owner), lease);
      assert.equal(await s.registry.lease(newLease().owner), undefined, 'no lease of an owner that took none');
      await assert.rejects(s.registry.acquire({ ...lease, owner: '' }, LONG), RangeError);
      await assert.rejects(s.registry.acquire(newLease(), 0), RangeError);
      await assert.rejects(s.registry.renew(lease.owner, 1.5), RangeError);
    });

    test('renew extends a live lease; once it lapsed, renew is false and never brings it back', TEST, async (t) => {
      const s = await open(t);
      if (!s) return;
      const lease = newLease();
      assert.equal(await s.registry.acquire(lease, SHORT), true);
      for (let i = 0; i < 3; i++) {
        await sleep(SHORT / 2);
        assert.equal(await s.registry.renew(lease.owner, SHORT), true, `renewal ${i} within the ttl`);
      }
      assert.deepEqual(await s.registry.lease(lease.owner), lease, 'alive past its first ttl thanks to the renewals');
      await sleep(EXPIRED_AFTER);
      assert.equal(await s.registry.renew(lease.owner, LONG), false, 'lapsed');
      assert.equal(await s.registry.renew(lease.owner, LONG), false, 'and stays lapsed');
      assert.equal(await s.registry.lease(lease.owner), undefined);
      assert.ok(!(await s.registry.nodes()).some((n) => n.owner === lease.owner));
      assert.equal(await s.registry.renew(newLease().owner, LONG), false, 'a lease never taken');
    });

    test('nodes() lists the live leases only: not a released one, not a lapsed one', TEST, async (t) => {
      const s = await open(t);
      if (!s) return;
      const [a, b, c, d] = [newLease('a'), newLease('b'), newLease('c'), newLease('d')];
      for (const lease of [a, b, d]) assert.equal(await s.registry.acquire(lease, LONG), true);
      assert.equal(await s.registry.acquire(c, SHORT), true);
      const byOwner = (x: NodeLease, y: NodeLease) => (x.owner < y.owner ? -1 : 1);
      assert.deepEqual((await s.registry.nodes()).sort(byOwner), [a, b, c, d].sort(byOwner));
      await s.registry.release(b.owner);
      await s.registry.release(b.owner);
      await s.registry.release(newLease().owner);
      await sleep(EXPIRED_AFTER);
      assert.deepEqual((await s.registry.nodes()).sort(byOwner), [a, d].sort(byOwner));
      assert.deepEqual(await s.registry.nodes(), await s.registry.nodes(), 'listing twice (after pruning) lists the same');
    });

    test('claim: missing → missing (nothing written); unowned → ours with fence + 1 and the memento; own → ours without a write', TEST, async (t) => {
      const s = await open(t);
      if (!s) return;
      const a = newLease();
      await s.registry.acquire(a, LONG);
      const absent = record();
      assert.deepEqual(await s.registry.claim(absent.id, a.owner), { kind: 'missing' });
      assert.equal(await s.store.get(absent.id), undefined, 'a claim of no record writes none');

      const saved = await stored(s, { memento: '["the memento",{"n":7}]', fence: 4 });
      const claimed = { ...saved, owner: a.owner, fence: 5 };
      assert.deepEqual(await s.registry.claim(saved.id, a.owner), { kind: 'ours', record: claimed });
      assert.deepEqual(await s.store.get(saved.id), claimed, 'stored as answered');

      let again: unknown;
      assert.equal(await s.wrote(saved.id, async () => (again = await s.registry.claim(saved.id, a.owner))), false, 'the owner’s own claim writes nothing');
      assert.deepEqual(again, { kind: 'ours', record: claimed }, 'fence unchanged');
      assert.equal(await s.wrote(saved.id, () => s.store.set({ ...claimed, memento: '["x"]' })), true, 'the control: a write is seen');
      await assert.rejects(s.registry.claim(saved.id, ''), RangeError);
    });

    test('claim: a live owner holds it → elsewhere with that lease; its lease lapsed or released → ours with fence + 1', TEST, async (t) => {
      const s = await open(t);
      if (!s) return;
      const [a, b] = [newLease('a'), newLease('b')];
      await s.registry.acquire(a, SHORT);
      await s.registry.acquire(b, LONG);
      const saved = await stored(s);
      assert.equal((await s.registry.claim(saved.id, a.owner)).kind, 'ours');
      const held = await s.store.get(saved.id);
      assert.equal(await s.wrote(saved.id, async () => assert.deepEqual(await s.registry.claim(saved.id, b.owner), { kind: 'elsewhere', lease: a })), false);
      assert.deepEqual(await s.registry.locate(saved.id), a);
      assert.deepEqual(await s.store.get(saved.id), held, 'unchanged');

      await sleep(EXPIRED_AFTER);
      assert.equal(await s.registry.locate(saved.id), undefined, 'owned by a lost incarnation');
      assert.deepEqual(await s.registry.claim(saved.id, b.owner), { kind: 'ours', record: { ...held!, owner: b.owner, fence: 2 }, from: a.owner }, 'a lapsed owner’s: a takeover, naming whom from');
      assert.equal(await s.registry.renew(a.owner, LONG), false, 'the lost incarnation cannot come back');
      assert.deepEqual(await s.registry.claim(saved.id, a.owner), { kind: 'elsewhere', lease: b });

      await s.registry.release(b.owner);
      const c = newLease('c');
      await s.registry.acquire(c, LONG);
      assert.deepEqual(await s.registry.claim(saved.id, c.owner), { kind: 'ours', record: { ...held!, owner: c.owner, fence: 3 }, from: b.owner }, 'released: claimable at once');
    });

    test('locate reads only: missing, unowned, a live owner, a released owner', TEST, async (t) => {
      const s = await open(t);
      if (!s) return;
      const a = newLease();
      await s.registry.acquire(a, LONG);
      assert.equal(await s.registry.locate(record().id), undefined);
      const saved = await stored(s);
      assert.equal(await s.wrote(saved.id, async () => assert.equal(await s.registry.locate(saved.id), undefined)), false);
      await s.registry.claim(saved.id, a.owner);
      assert.equal(await s.wrote(saved.id, async () => assert.deepEqual(await s.registry.locate(saved.id), a)), false);
      await s.registry.release(a.owner);
      assert.equal(await s.registry.locate(saved.id), undefined);
      assert.equal((await s.store.get(saved.id))?.owner, a.owner, 'locate claims nothing');
    });

    test('after a takeover the old owner’s conditional writes are refused; fences never go back over a chain of takeovers', TEST, async (t) => {
      const s = await open(t);
      if (!s) return;
      const saved = await stored(s, { userId: 'chain-user' });
      let previous: SessionRecord = saved;
      for (let i = 1; i <= 8; i++) {
        const next = newLease(`chain-${i}`);
        await s.registry.acquire(next, LONG);
        if (previous.owner !== null) await s.registry.release(previous.owner);
        const answer = await s.registry.claim(saved.id, next.owner);
        assert.equal(answer.kind, 'ours', `takeover ${i}`);
        const now: SessionRecord = (answer as { record: SessionRecord }).record;
        assert.equal(now.fence, previous.fence + 1, `takeover ${i}: the fence rises by one`);
        if (previous.owner !== null) {
          assert.equal(await s.store.setIf({ ...previous, memento: '["late"]' }, { owner: previous.owner, fence: previous.fence }), false, `the stale owner ${i - 1}’s write`);
          assert.equal(await s.store.deleteIf(saved.id, { owner: previous.owner, fence: previous.fence }), false);
        }
        assert.equal(await s.store.setIf({ ...now, memento: `["by ${i}"]` }, { owner: now.owner, fence: now.fence }), true, 'the new owner writes');
        previous = { ...now, memento: `["by ${i}"]` };
      }
      assert.deepEqual(await s.store.get(saved.id), previous);
    });

    test('a claim changes owner and fence only: memento, userId, times, the user index and the expiry index stay as they were', TEST, async (t) => {
      const s = await open(t);
      if (!s) return;
      const a = newLease();
      await s.registry.acquire(a, LONG);
      const now = Date.now();
      const expired = await stored(s, { userId: 'claim-user', expiresAt: now - 5_000, memento: '["kept"]' });
      const living = await stored(s, { userId: 'claim-user', expiresAt: now + 60_000 });
      const other = await stored(s, { userId: 'someone-else', expiresAt: null, memento: null });
      const before = { user: await s.store.list({ userId: 'claim-user', limit: 10 }), expired: await s.store.expiredIds(now, 10), all: await s.store.list({ limit: 10 }) };
      assert.deepEqual(before.expired, [expired.id]);
      for (const saved of [expired, living, other]) {
        assert.deepEqual(await s.registry.claim(saved.id, a.owner), { kind: 'ours', record: { ...saved, owner: a.owner, fence: 1 } });
      }
      const claimed = (list: Array<{ id: string }>) => list.map((summary) => ({ ...summary, owner: a.owner, fence: 1 }));
      assert.deepEqual(await s.store.list({ userId: 'claim-user', limit: 10 }), claimed(before.user), 'the user index finds both, now owned');
      assert.deepEqual(await s.store.list({ userId: 'someone-else', limit: 10 }), claimed(before.all.filter((x) => x.id === other.id)));
      assert.deepEqual(await s.store.list({ limit: 10 }), claimed(before.all));
      assert.deepEqual(await s.store.expiredIds(now, 10), before.expired, 'the expiry index unchanged');
      assert.deepEqual(await s.store.get(other.id), { ...other, owner: a.owner, fence: 1 });
    });

    test('200 rounds of 4 claimers at once on one record: exactly one gets it, the others are told to forward to the winner', { timeout: 120_000 }, async (t) => {
      const s = await open(t);
      if (!s) return;
      const claimers = [newLease('w'), newLease('x'), newLease('y'), newLease('z')];
      for (const lease of claimers) await s.registry.acquire(lease, LONG);
      // One node per claimer, each with connections of its own: a store orders its own calls of one ID.
      const peers = await Promise.all(claimers.map(() => s.peer()));
      const lost = newLease('lost');
      const fences = new Map<string, number>();
      for (let round = 0; round < 200; round++) {
        // Alternately a fresh record, one owned by an incarnation without a lease, one a claimer released.
        const base = round % 3 === 0 ? record() : round % 3 === 1 ? record({ owner: lost.owner, fence: 7 }) : record({ owner: claimers[round % 4]!.owner, fence: 3 });
        await s.store.set(base);
        if (round % 3 === 2) {
          // That node's incarnation ended (released): it comes back as a new one, and claims with the others.
          await s.registry.release(base.owner!);
          claimers[round % 4] = newLease(`again-${round}`);
          assert.equal(await s.registry.acquire(claimers[round % 4]!, LONG), true);
        }
        const answers: ClaimAnswer[] = await Promise.all(claimers.map((lease, at) => peers[at]!.registry.claim(base.id, lease.owner)));
        const ours = answers.flatMap((answer, at) => (answer.kind === 'ours' ? [{ answer, lease: claimers[at]! }] : []));
        assert.equal(ours.length, 1, `round ${round}: one winner, not ${JSON.stringify(answers)}`);
        const winner = ours[0]!;
        const from = base.owner === null ? {} : { from: base.owner };
        assert.deepEqual(winner.answer, { kind: 'ours', record: { ...base, owner: winner.lease.owner, fence: base.fence + 1 }, ...from }, `round ${round}`);
        for (const answer of answers) if (answer.kind !== 'ours') assert.deepEqual(answer, { kind: 'elsewhere', lease: winner.lease }, `round ${round}`);
        assert.deepEqual(await s.store.get(base.id), winner.answer.kind === 'ours' ? winner.answer.record : undefined);
        fences.set(winner.lease.owner, (fences.get(winner.lease.owner) ?? 0) + 1);
      }
      t.diagnostic(`wins: ${JSON.stringify([...fences.values()])}`);
    });
  });
}
