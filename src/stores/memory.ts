import type { ContextStore, SessionRecord } from './store.ts';

/**
 * Keeps records in this process: fast, and volatile (a restart forgets every suspended
 * session). Expired records are dropped when read; the server deletes them at cookie expiry.
 */
export class MemoryStore implements ContextStore {
  readonly #records = new Map<string, SessionRecord>();

  async get(id: string): Promise<SessionRecord | undefined> {
    // No wall-clock expiry check here: within a run the directory decides expiry on the
    // monotonic clock and deletes the record itself, so a clock step cannot void a memento (C9).
    const record = this.#records.get(id);
    return record && structuredClone(record);
  }

  async set(record: SessionRecord): Promise<void> {
    // A copy, so later changes by the caller never alter what was saved.
    this.#records.set(record.id, structuredClone(record));
  }

  async delete(id: string): Promise<void> {
    this.#records.delete(id);
  }

  get size(): number {
    return this.#records.size;
  }

  async close(): Promise<void> {
    this.#records.clear();
  }
}
