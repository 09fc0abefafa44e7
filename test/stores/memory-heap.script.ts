/**
 * Run by memory.test.ts as `node --expose-gc --import tsx memory-heap.script.ts <scenario>`:
 * fills a MemoryStore with 100,000 short-lived records, expires them with the sweep the server
 * uses (expiredIds + delete), and prints the heap at each step as one JSON line.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { newSessionId } from '../../src/contexts/ids.ts';
import { MemoryStore } from '../../src/stores/memory.ts';
import type { SessionRecord } from '../../src/stores/store.ts';

const COUNT = 100_000;
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');

function heap(): number {
  for (let i = 0; i < 4; i++) gc!();
  return process.memoryUsage().heapUsed;
}

function record(expiresAt: number | null): SessionRecord {
  const now = Date.now();
  return {
    id: newSessionId(),
    userId: null,
    // A distinct string per record, as real mementos are.
    memento: JSON.stringify([{ n: 1, note: 2 }, Math.random(), 'x'.repeat(200)]),
    mementoVersion: 1,
    clientIp: '127.0.0.1',
    createdAt: now,
    updatedAt: now,
    lastActivityAt: now,
    expiresAt,
    owner: null,
    fence: 0,
  };
}

/** The server's store sweep: batches of expired IDs, each deleted. */
async function sweep(store: MemoryStore): Promise<number> {
  let removed = 0;
  for (;;) {
    const ids = await store.expiredIds(Date.now(), 1000);
    if (ids.length === 0) return removed;
    for (const id of ids) await store.delete(id);
    removed += ids.length;
  }
}

const scenario = process.argv[2] ?? 'cycles';
const store = new MemoryStore();
const result: Record<string, number> = {};

if (scenario === 'cycles') {
  // Two full cycles: the second must not leave more behind than the first.
  result.baseline = heap();
  for (const cycle of [1, 2]) {
    const expiresAt = Date.now() + 50;
    for (let i = 0; i < COUNT; i++) await store.set(record(expiresAt));
    result[`peak${cycle}`] = heap();
    result[`size${cycle}`] = store.size;
    await sleep(60);
    result[`removed${cycle}`] = await sweep(store);
    result[`after${cycle}`] = heap();
    result[`sizeAfter${cycle}`] = store.size;
  }
} else if (scenario === 'interleaved') {
  // Expiries not in write order (a long cookie written first, then short-lived sessions, as
  // with maxLifetime or mixed timeouts): the short-lived ones must still be freed.
  result.baseline = heap();
  await store.set(record(Date.now() + 3_600_000));
  const expiresAt = Date.now() + 50;
  for (let i = 0; i < COUNT; i++) await store.set(record(expiresAt));
  result.peak = heap();
  await sleep(60);
  result.removed = await sweep(store);
  result.after = heap();
  result.sizeAfter = store.size;
} else if (scenario === 'bound') {
  const bounded = new MemoryStore({ maxEntries: 1000 });
  let largest = 0;
  const written: string[] = [];
  for (let i = 0; i < 5000; i++) {
    const r = record(Date.now() + 60_000 + i);
    written.push(r.id);
    await bounded.set(r);
    largest = Math.max(largest, bounded.size);
  }
  result.largest = largest;
  result.size = bounded.size;
  let newestKept = 0;
  for (const id of written.slice(-1000)) if (await bounded.get(id)) newestKept++;
  result.newestKept = newestKept;
  result.oldestKept = (await bounded.get(written[0]!)) ? 1 : 0;
}
console.log(JSON.stringify(result));
