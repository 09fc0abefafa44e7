/**
 * Session ID generation (RELIABILITY.md A2): unique, at least 128 random bits, nothing
 * predictable inside, and the shape check that guards every lookup (A7).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RANDOM_LENGTH, SESSION_ID_LENGTH, isSessionIdShape, newSessionId } from '../src/contexts/ids.ts';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';
/** 22 random characters, then 2 naming the home slot (not secret, no entropy; see src/contexts/ids.ts). */
const SHAPE = /^[A-Za-z0-9_-]{22}[A-Za-z0-9_-]{2}$/;

test('A2: 1,000,000 IDs: no duplicate, each 22 random characters of the 64-letter URL-safe alphabet (132 bits) and 2 naming the home slot', () => {
  const count = 1_000_000;
  const seen = new Set<string>();
  // counts[position * 64 + symbol]: a timestamp, counter or IP inside an ID shows up as a
  // position whose symbols are far from uniform.
  const counts = new Uint32Array(SESSION_ID_LENGTH * 64);
  const index = new Map([...ALPHABET].map((ch, i) => [ch, i]));
  for (let i = 0; i < count; i++) {
    const id = newSessionId();
    if (!SHAPE.test(id)) assert.fail(`ID ${JSON.stringify(id)} does not match ${SHAPE}`);
    seen.add(id);
    for (let p = 0; p < id.length; p++) counts[p * 64 + index.get(id[p]!)!]!++;
  }
  assert.equal(seen.size, count, `${count - seen.size} duplicate IDs`);
  assert.equal(RANDOM_LENGTH, 22);
  assert.equal(SESSION_ID_LENGTH, 24);
  // The slot characters add no entropy: the random part alone carries the 128 bits.
  assert.ok(RANDOM_LENGTH * Math.log2(ALPHABET.length) >= 128, 'at least 128 random bits per ID');

  // Each symbol is expected count/64 = 15625 times per random position (sd about 124): ±10 sd.
  const expected = count / 64;
  for (let p = 0; p < RANDOM_LENGTH; p++) {
    for (let s = 0; s < 64; s++) {
      const n = counts[p * 64 + s]!;
      assert.ok(Math.abs(n - expected) < 1250, `symbol ${ALPHABET[s]} at position ${p} appears ${n} times (expected about ${expected})`);
    }
  }
});

test('A2: consecutive IDs share no prefix or suffix of their random part (no time or counter component)', () => {
  const ids = Array.from({ length: 1000 }, () => newSessionId());
  let samePrefix = 0;
  let sameSuffix = 0;
  for (let i = 1; i < ids.length; i++) {
    if (ids[i]!.slice(0, 4) === ids[i - 1]!.slice(0, 4)) samePrefix++;
    // The suffix of the random part: the 2 slot characters after it are the same on one thread.
    if (ids[i]!.slice(RANDOM_LENGTH - 4, RANDOM_LENGTH) === ids[i - 1]!.slice(RANDOM_LENGTH - 4, RANDOM_LENGTH)) sameSuffix++;
  }
  // 4 symbols collide by chance with probability 2^-24: any repeat here is structure.
  assert.equal(samePrefix, 0);
  assert.equal(sameSuffix, 0);
});

test('A7: the shape check accepts issued IDs and nothing else', () => {
  for (let i = 0; i < 1000; i++) assert.ok(isSessionIdShape(newSessionId()));
  assert.ok(isSessionIdShape('attacker_chosen_id_000'));
  const rejected = [
    '',
    'a'.repeat(21),
    'a'.repeat(23),
    'a'.repeat(5000),
    '../../etc/passwd',
    '..%2f..%2fx',
    "x' OR 1=1--",
    '*',
    '?',
    'aaaaaaaaaaaaaaaaaaaaa*',
    'aaaaaaaaaaaaaaaaaaaaa=',
    'aaaaaaaaaaaaaaaaaaaaa ',
    ' aaaaaaaaaaaaaaaaaaaaa',
    'aaaaaaaaaaaaaaaaaaaaa\n',
    'aaaaaaaaaaaaaaaaaaaaa\0',
    'aaaaaaaaaaaaaaaaaaaaaé',
    'aaaaaaaaaaaaaaaaaaaa日',
  ];
  for (const value of rejected) assert.equal(isSessionIdShape(value), false, JSON.stringify(value));
});
