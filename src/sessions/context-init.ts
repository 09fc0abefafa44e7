/** How a context is born on its worker: fresh (a new session) or resumed from a stored memento. */
import type { ContextInit } from '../contexts/protocol.ts';
import type { SessionRecord } from '../stores/store.ts';
import type { SessionEntry } from './directory.ts';

/** How a context is born on its worker: fresh, or resumed from `record`'s memento. */
export function contextInit(entry: SessionEntry, resumed: boolean, record?: SessionRecord): ContextInit {
  return {
    resumed,
    saved: record?.memento ?? null,
    savedVersion: record?.mementoVersion ?? null,
    userId: entry.userId,
    clientIp: entry.clientIp,
    createdAt: entry.createdAt,
  };
}
