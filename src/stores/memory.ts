import type { ContextStore, SessionRecord } from './store.ts';

/**
 * Records in this process: fast, bounded and volatile (a restart forgets every suspended
 * session). Beyond `maxEntries` the record that expires first is dropped, and expired records
 * are removed by the sweep, so the store never grows without bound (RELIABILITY.md C8).
 */
export class MemoryStore implements ContextStore {
  readonly kind = 'memory';
  /**
   * Records with an expiry, in the order they were written. With one cookie timeout for every
   * session that is also expiry order, so the sweep reads from the head.
   */
  readonly #expiring = new Map<string, SessionRecord>();
  readonly #forever = new Map<string, SessionRecord>();
  readonly #maxEntries: number;

  constructor(options: { maxEntries?: number } = {}) {
    this.#maxEntries = options.maxEntries ?? 1_000_000;
  }

  get size(): number {
    return this.#expiring.size + this.#forever.size;
  }

  async get(id: string): Promise<SessionRecord | undefined> {
    const record = this.#expiring.get(id) ?? this.#forever.get(id);
    return record && { ...record };
  }

  async set(record: SessionRecord): Promise<void> {
    this.#expiring.delete(record.id);
    this.#forever.delete(record.id);
    // Records hold only strings and numbers: a shallow copy keeps the caller's later changes out.
    (record.expiresAt === null ? this.#forever : this.#expiring).set(record.id, { ...record });
    while (this.size > this.#maxEntries) {
      const oldest = this.#expiring.keys().next().value ?? this.#forever.keys().next().value;
      if (oldest === undefined) break;
      await this.delete(oldest);
    }
  }

  async delete(id: string): Promise<void> {
    this.#expiring.delete(id);
    this.#forever.delete(id);
  }

  async expiredIds(now: number, limit: number): Promise<string[]> {
    const ids: string[] = [];
    for (const [id, record] of this.#expiring) {
      if (ids.length >= limit || record.expiresAt! > now) break;
      ids.push(id);
    }
    return ids;
  }

  async quarantine(id: string): Promise<void> {
    await this.delete(id);
  }

  async close(): Promise<void> {
    this.#expiring.clear();
    this.#forever.clear();
  }
}
