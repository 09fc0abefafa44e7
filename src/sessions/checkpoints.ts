/**
 * Checkpoints, part of the lifecycle room: a memento of a live context that handled a request
 * since its last checkpoint, saved while it stays live, so a crash loses at most one interval
 * (`sessions.checkpointInterval`). In a cluster the write is fenced: a checkpoint of a node
 * that lost the session is refused, and its stale context dropped.
 */
import { isResidentError } from '../errors.ts';
import { hashId } from '../id-hash.ts';
import type { SessionEntry } from './directory.ts';
import type { Lifecycle } from './lifecycle.ts';
import { logHookError, type Rooms } from './rooms.ts';

export class Checkpoints {
  readonly #rooms: Rooms;
  readonly #lifecycle: Lifecycle;
  /** Checkpoint writes under way, so a record is not moved or deleted while one may still land on it. */
  readonly #writing = new Map<SessionEntry, Promise<void>>();

  constructor(rooms: Rooms, lifecycle: Lifecycle) {
    this.#rooms = rooms;
    this.#lifecycle = lifecycle;
  }

  checkpoint(entry: SessionEntry): void {
    // An unproven session is written only if a hook kept it (ctx.keep()).
    if (!(entry.proven || entry.kept) || !entry.dirty || entry.state !== 'live' || entry.gate || this.#writing.has(entry)) return;
    entry.dirty = false;
    const saving = this.#one(entry).finally(() => this.#writing.delete(entry));
    this.#writing.set(entry, saving);
  }

  of(entry: SessionEntry): Promise<void> | undefined {
    return this.#writing.get(entry);
  }

  async #one(entry: SessionEntry): Promise<void> {
    const { ownership, policy, counters, log } = this.#rooms;
    const answer = await this.#lifecycle.askMemento(entry, 'checkpoint');
    if (answer.kind === 'failed') {
      entry.dirty = true;
      logHookError(log, entry, "onSessionSuspend(ctx, 'checkpoint')", answer.error, 'no checkpoint this time');
      return;
    }
    // The thread died (worker loss handles the session), or the context was closed or
    // suspended meanwhile and has had its last word: its record is not revived.
    if (answer.kind === 'gone' || entry.state !== 'live' || entry.ending) return;
    try {
      await ownership.save(policy.record(entry, answer.memento), false);
      this.#lifecycle.saved(entry, answer.memento);
      counters.checkpoints++;
    } catch (error) {
      if (isResidentError(error, 'RESIDENT_ERR_FENCED')) return void (await this.#lifecycle.fencedOut(entry));
      entry.dirty = true;
      log.error({ event: 'store-error', session: hashId(entry.id), err: error }, 'checkpoint not saved; will try again');
    }
  }
}
