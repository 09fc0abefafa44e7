/**
 * The Jepsen checker (./checker.ts) on hand-made histories: it passes a correct takeover (with
 * its checkpoint-bounded rollback and a late-delivered answer of the old owner) and flags a
 * forked history, a copy that goes back, one that starts below the store, a fence that goes
 * back, and a final round that lost a value.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { check, checkHeal, type Ack, type Sample } from './checker.ts';

const ack = (n: number, node: string, epoch: string, sent: number, received: number, session = 's1'): Ack => ({ session, n, node, epoch, via: node, sent, received });
const sample = (finished: number, fence: number, owner: string, n: number, session = 's1'): Sample => ({ session, started: finished - 1, finished, owner, fence, n });
const invariants = (acks: Ack[], samples: Sample[] = []) => check(acks, samples).violations.map((v) => v.invariant);

/** a serves 1..5, checkpoint 3 read at 55; a stops; b takes over from 3 and serves 4..6. */
const takeover = (): Ack[] => [
  ack(1, 'a', 'A', 0, 10),
  ack(2, 'a', 'A', 11, 20),
  ack(3, 'a', 'A', 21, 30),
  ack(4, 'a', 'A', 31, 40),
  ack(5, 'a', 'A', 41, 50),
  ack(4, 'b', 'B', 100, 110),
  ack(5, 'b', 'B', 111, 120),
  ack(6, 'b', 'B', 121, 130),
];

describe('the Jepsen checker', () => {
  test('passes a takeover from the last checkpoint, and reports its rollback', () => {
    const report = check(takeover(), [sample(55, 1, 'a#1', 3), sample(115, 2, 'b#1', 5)]);
    assert.deepEqual(report.violations, []);
    assert.deepEqual(report.epochs.get('s1')!.map((e) => e.epoch), ['A', 'B']);
    assert.deepEqual(report.rollbacks.map((r) => r.values), [2], 'n = 4 and 5 acknowledged again');
  });

  test('passes an old owner’s answer delivered after the new owner answered, when its request was sent before', () => {
    // a passed its lease check, then was paused before writing the answer to a request sent at 45.
    const acks = [...takeover(), ack(6, 'a', 'A', 45, 300)];
    assert.deepEqual(invariants(acks), []);
  });

  test('flags a forked history: the old copy serves a request sent after the new one answered', () => {
    const acks = [...takeover(), ack(6, 'a', 'A', 125, 135)];
    const report = check(acks, []);
    assert.deepEqual(report.violations.map((v) => v.invariant), ['epoch-order']);
    assert.match(report.violations[0]!.message, /two live copies at once/);
  });

  test('flags a copy that goes back, or acknowledges one value twice', () => {
    assert.deepEqual(invariants([ack(1, 'a', 'A', 0, 10), ack(1, 'a', 'A', 11, 20)]), ['serial', 'serial']);
    assert.deepEqual(invariants([ack(2, 'a', 'A', 0, 10), ack(1, 'a', 'A', 11, 20)]), ['serial']);
    // Concurrent requests may come back in any order.
    assert.deepEqual(invariants([ack(2, 'a', 'A', 0, 10), ack(1, 'a', 'A', 1, 20)]), []);
  });

  test('flags a copy that starts below what the store held before its request was sent', () => {
    // The store held 5 (read by 60); b resumes from an older memento (3).
    assert.deepEqual(invariants(takeover(), [sample(60, 1, 'a#1', 5)]), ['stored-floor', 'stored-floor'], 'n = 4 and n = 5 of b');
  });

  test('flags a fence or a stored count that goes back, and one fence with two owners', () => {
    assert.deepEqual(invariants([], [sample(10, 2, 'b#1', 4), sample(20, 1, 'a#1', 4)]), ['store-monotonic']);
    assert.deepEqual(invariants([], [sample(10, 2, 'b#1', 4), sample(20, 2, 'b#1', 3)]), ['store-monotonic']);
    assert.deepEqual(invariants([], [sample(10, 2, 'b#1', 4), sample(20, 2, 'c#1', 4)]), ['store-monotonic']);
  });

  test('flags a final round that lost or skipped a value, or answered from another copy', () => {
    const { epochs } = check(takeover(), []);
    assert.deepEqual(checkHeal(epochs, [ack(7, 'b', 'B', 200, 210), ack(8, 'b', 'B', 211, 220)]), []);
    assert.deepEqual(checkHeal(epochs, [ack(7, 'b', 'B', 200, 210), ack(9, 'b', 'B', 211, 220)]).map((v) => v.invariant), ['heal']);
    assert.deepEqual(checkHeal(epochs, [ack(4, 'c', 'C', 200, 210), ack(5, 'c', 'C', 211, 220)]).map((v) => v.invariant), ['heal']);
    assert.deepEqual(checkHeal(epochs, [ack(7, 'b', 'B', 200, 210), ack(8, 'c', 'C', 211, 220)]).map((v) => v.invariant), ['heal']);
  });
});
