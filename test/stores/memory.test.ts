/**
 * C8: the memory store creates and expires 100,000 short-lived sessions and the heap returns
 * near its baseline; maxEntries bounds it. Measured in a child process with --expose-gc
 * (node:test cannot pass flags to one test file).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { openStore } from '../../src/stores/open.ts';
import { MemoryStore } from '../../src/stores/memory.ts';
import { createLogger } from '../../src/log.ts';
import { testConfig } from '../helpers.ts';

const SCRIPT = join(import.meta.dirname, 'memory-heap.script.ts');
const MB = 1024 * 1024;

async function measure(scenario: string): Promise<Record<string, number>> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', '--import', 'tsx', SCRIPT, scenario], {
    cwd: join(import.meta.dirname, '../..'),
    maxBuffer: 1024 * 1024,
  });
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, number>;
}

const mb = (bytes: number) => `${(bytes / MB).toFixed(1)} MB`;

test('C8: 100,000 short-lived records created and expired by the sweep: every one freed, the heap back near baseline', { timeout: 60_000 }, async () => {
  const r = await measure('cycles');
  for (const cycle of [1, 2]) {
    assert.equal(r[`size${cycle}`], 100_000);
    assert.equal(r[`removed${cycle}`], 100_000, 'the sweep found every expired record');
    assert.equal(r[`sizeAfter${cycle}`], 0);
    // The measurement means something: the records took real memory.
    assert.ok(r[`peak${cycle}`]! - r.baseline! > 20 * MB, `peak ${mb(r[`peak${cycle}`]! - r.baseline!)} over baseline`);
    assert.ok(r[`after${cycle}`]! - r.baseline! < 3 * MB, `cycle ${cycle}: ${mb(r[`after${cycle}`]! - r.baseline!)} left over baseline`);
  }
  assert.ok(r.after2! - r.after1! < 1 * MB, `the second cycle left ${mb(r.after2! - r.after1!)} more than the first`);
});

test('C8: expired records are freed even when a longer-lived record was written before them', { timeout: 60_000 }, async () => {
  const r = await measure('interleaved');
  assert.equal(r.removed, 100_000, 'the sweep found every expired record');
  assert.equal(r.sizeAfter, 1, 'only the long-lived record is left');
  assert.ok(r.after! - r.baseline! < 3 * MB, `${mb(r.after! - r.baseline!)} left over baseline`);
});

test('C8: maxEntries bounds the memory store: the size never exceeds it, the newest records are kept', { timeout: 60_000 }, async () => {
  const r = await measure('bound');
  assert.equal(r.largest, 1000);
  assert.equal(r.size, 1000);
  assert.equal(r.newestKept, 1000);
  assert.equal(r.oldestKept, 0);
});

test('store.maxEntries from the config reaches the memory store', async () => {
  const config = testConfig({ store: { kind: 'memory', maxEntries: 3 } });
  const store = await openStore(config.store, createLogger({ level: 'silent', format: 'json' }));
  assert.ok(store instanceof MemoryStore);
  const now = Date.now();
  for (let i = 0; i < 10; i++) {
    await store.set({
      id: `id-${String(i).padStart(19, '0')}`,
      userId: null,
      memento: null,
      mementoVersion: 1,
      clientIp: '127.0.0.1',
      createdAt: now,
      updatedAt: now,
      lastActivityAt: now,
      expiresAt: now + 60_000 + i,
      owner: null,
      fence: 0,
    });
    assert.ok(store.size <= 3, `size ${store.size} after ${i + 1} writes`);
  }
  assert.equal(store.size, 3);
  await store.close();
});
