import {
  checkExpected,
  checkFenceStep,
  holds,
  pageOf,
  summarize,
  type ContextStore,
  type ListQuery,
  type OwnerFence,
  type SessionRecord,
  type SessionSummary,
} from './store.ts';
import { UserIndex } from './user-index.ts';

/** Expiry index granularity: records are bucketed by the second they expire in. */
const BUCKET_MS = 1000;

/**
 * Records in this process: fast, bounded and volatile (a restart forgets every suspended
 * session). An index of expiry buckets lets the sweep read only what has expired, whatever
 * order records were written in; beyond `maxEntries` the record that expires first is
 * dropped, so the store never grows without bound (RELIABILITY.md C8).
 */
export class MemoryStore implements ContextStore {
  readonly kind = 'memory';
  readonly #records = new Map<string, SessionRecord>();
  /** Expiry second → IDs expiring in it; `#seconds` keeps the keys sorted. */
  readonly #buckets = new Map<number, Set<string>>();
  #seconds: number[] = [];
  readonly #byUser = new UserIndex();
  readonly #maxEntries: number;

  constructor(options: { maxEntries?: number } = {}) {
    this.#maxEntries = options.maxEntries ?? 1_000_000;
  }

  get size(): number {
    return this.#records.size;
  }

  async get(id: string): Promise<SessionRecord | undefined> {
    const record = this.#records.get(id);
    return record && { ...record };
  }

  async existing(ids: readonly string[]): Promise<Set<string>> {
    return new Set(ids.filter((id) => this.#records.has(id)));
  }

  async set(record: SessionRecord): Promise<void> {
    this.#put(record);
  }

  async delete(id: string): Promise<void> {
    this.#remove(id);
  }

  // One process, one thread: the check and the write happen in the same synchronous step, at
  // call time, so they are atomic and keep the call order with set and delete.
  async setIf(record: SessionRecord, expected: OwnerFence | null): Promise<boolean> {
    checkFenceStep(record, expected);
    if (!holds(this.#records.get(record.id), expected)) return false;
    this.#put(record);
    return true;
  }

  async deleteIf(id: string, expected: OwnerFence | null): Promise<boolean> {
    checkExpected(expected);
    if (!holds(this.#records.get(id), expected)) return false;
    this.#remove(id);
    return true;
  }

  #put(record: SessionRecord): void {
    this.#remove(record.id);
    // Records hold only strings and numbers: a shallow copy keeps the caller's later changes out.
    this.#records.set(record.id, { ...record });
    if (record.expiresAt !== null) this.#index(record.id, record.expiresAt);
    this.#byUser.add(record.userId, record.id);
    while (this.#records.size > this.#maxEntries) {
      const first = this.#seconds.length > 0 ? this.#buckets.get(this.#seconds[0]!)!.values().next().value : undefined;
      this.#remove(first ?? this.#records.keys().next().value!);
    }
  }

  async expiredIds(now: number, limit: number): Promise<string[]> {
    const ids: string[] = [];
    for (const second of this.#seconds) {
      if (second * BUCKET_MS > now || ids.length >= limit) break;
      for (const id of this.#buckets.get(second)!) {
        if (ids.length >= limit) break;
        if (this.#records.get(id)!.expiresAt! <= now) ids.push(id);
      }
    }
    return ids;
  }

  async list(query: ListQuery): Promise<SessionSummary[]> {
    // One user's IDs come from the index; a listing of everything sorts every ID (this store
    // is for development and tests; the admin view pages through it).
    const records =
      query.userId === undefined ? this.#records.values() : [...this.#byUser.of(query.userId)].map((id) => this.#records.get(id)!);
    return pageOf(records, query, summarize);
  }

  async ping(): Promise<void> {}

  async quarantine(id: string): Promise<void> {
    this.#remove(id);
  }

  async close(): Promise<void> {
    this.#records.clear();
    this.#byUser.clear();
    this.#buckets.clear();
    this.#seconds = [];
  }

  #index(id: string, expiresAt: number): void {
    const second = Math.floor(expiresAt / BUCKET_MS);
    let bucket = this.#buckets.get(second);
    if (!bucket) {
      bucket = new Set();
      this.#buckets.set(second, bucket);
      // Cookie timeouts make new seconds arrive in order, so this is almost always an append.
      let at = this.#seconds.length;
      while (at > 0 && this.#seconds[at - 1]! > second) at--;
      this.#seconds.splice(at, 0, second);
    }
    bucket.add(id);
  }

  #remove(id: string): void {
    const record = this.#records.get(id);
    if (!record) return;
    this.#records.delete(id);
    this.#byUser.remove(record.userId, id);
    if (record.expiresAt === null) return;
    const second = Math.floor(record.expiresAt / BUCKET_MS);
    const bucket = this.#buckets.get(second)!;
    bucket.delete(id);
    if (bucket.size === 0) {
      this.#buckets.delete(second);
      const at = sortedIndex(this.#seconds, second);
      if (this.#seconds[at] === second) this.#seconds.splice(at, 1);
    }
  }
}

/** The position of `value` in the ascending `list`, or where it would go. */
function sortedIndex(list: number[], value: number): number {
  let low = 0;
  let high = list.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (list[mid]! < value) low = mid + 1;
    else high = mid;
  }
  return low;
}
