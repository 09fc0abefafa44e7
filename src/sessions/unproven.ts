/**
 * The live sessions whose client has not presented their cookie back yet (see
 * Context.proven), oldest first, over all and by source: where the cap looks first for a
 * victim, and what a source's budget (sessions.maxUnprovenPerIp) counts. Kept by the
 * directory, its only writer. An unproven session has had one request, so insertion order is
 * activity order.
 */
import type { SessionEntry } from './entry.ts';

export class UnprovenIndex {
  readonly #all = new Map<string, SessionEntry>();
  readonly #bySource = new Map<string, Map<string, SessionEntry>>();

  get size(): number {
    return this.#all.size;
  }

  /** Every live unproven session, oldest first. */
  all(): IterableIterator<SessionEntry> {
    return this.#all.values();
  }

  /** The live unproven sessions of `source` here, oldest first. */
  ofSource(source: string): IterableIterator<SessionEntry> | undefined {
    return this.#bySource.get(source)?.values();
  }

  countOf(source: string): number {
    return this.#bySource.get(source)?.size ?? 0;
  }

  /** Sources holding at least `limit` live unproven sessions here. */
  sourcesAtLeast(limit: number): string[] {
    const sources: string[] = [];
    for (const [source, entries] of this.#bySource) if (entries.size >= limit) sources.push(source);
    return sources;
  }

  add(entry: SessionEntry): void {
    this.#all.set(entry.id, entry);
    let entries = this.#bySource.get(entry.source);
    if (!entries) this.#bySource.set(entry.source, (entries = new Map()));
    entries.set(entry.id, entry);
  }

  /** Removes `entry`, indexed under `id` (its ID before a rename); false when it was not here. */
  delete(entry: SessionEntry, id = entry.id): boolean {
    if (!this.#all.delete(id)) return false;
    const entries = this.#bySource.get(entry.source);
    entries?.delete(id);
    if (entries?.size === 0) this.#bySource.delete(entry.source);
    return true;
  }
}

/** The first of `entries` a new session may take the place of: live, idle, its suspend not refused lately. */
export function firstIdle(entries: Iterable<SessionEntry> | undefined, now: number): SessionEntry | undefined {
  if (!entries) return undefined;
  for (const entry of entries) if (entry.state === 'live' && entry.inFlight === 0 && !entry.gate && entry.retryAt <= now) return entry;
  return undefined;
}
