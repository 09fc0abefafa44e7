/** A stored record rewritten in place: moved to a regenerated ID, or naming a changed user. Part of the lifecycle room. */
import { hashId } from '../id-hash.ts';
import { bounded } from './bounded.ts';
import type { SessionEntry } from './directory.ts';
import { afterGate } from './gate.ts';
import type { Rooms } from './rooms.ts';

/**
 * Rewrites the stored record of `entry` (found under `storedAs`) with its current ID and
 * userId, under the gate so no checkpoint or suspend interleaves: after a regenerate the
 * record moves to the new ID, and a change of user reaches the store at once. Bounded like
 * any store call on a request's path (E6): a store that hangs costs the response at most
 * the deadline, and the context stays live whatever happens.
 */
export function rewriteRecord(rooms: Rooms, entry: SessionEntry, storedAs: string, whenMoved: () => void): Promise<void> {
  const { store, ownership, log, endings, lifecycle } = rooms;
  const moving = storedAs !== entry.id;
  return afterGate(entry, async () => {
    // A checkpoint that started under the old ID may still be writing it.
    await lifecycle.checkpointOf(entry);
    try {
      if (entry.state !== 'gone' && (entry.hasMemento || moving || ownership.recordsEverySession)) {
        const record = await bounded(store.get(storedAs), 'the store read');
        // A suspend that ran meanwhile may have saved a newer memento under the new ID.
        const newer = moving && record ? await bounded(store.get(entry.id), 'the store read') : undefined;
        if (record && !newer) await bounded(ownership.save({ ...record, id: entry.id, userId: entry.userId }, false), 'the store write');
      }
    } catch (error) {
      log.error({ event: 'store-error', session: hashId(entry.id), err: error }, 'cannot update the stored session record');
      // The context is live and will be saved again; a record it cannot vouch for is dropped.
      if (moving) entry.hasMemento = false;
    }
    if (moving) {
      await endings.deleteRetired(storedAs, entry);
      whenMoved();
    }
  });
}
