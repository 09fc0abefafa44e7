/**
 * The end of a session: closed (by its hook, the admin view, a user-wide close) or expired.
 * The ID is retired before anything is awaited, a live context gets onSessionSuspend(ctx,
 * reason) and leaves its worker, and the record is deleted: a session that ended never comes
 * back (RELIABILITY.md A4). Part of the lifecycle: with ./lifecycle.ts the only room that asks
 * a worker for a memento and writes the store.
 */
import { hashId } from '../id-hash.ts';
import { loggedError, type WireError } from '../contexts/protocol.ts';
import type { SuspendReason } from '../types.ts';
import { bounded } from './bounded.ts';
import type { SessionEntry } from './directory.ts';
import { afterGate } from './gate.ts';
import { ElsewhereSignal } from './ownership.ts';
import { logHookError, type Rooms } from './rooms.ts';

/** Expired records read per store sweep batch. */

export class Endings {
  readonly #rooms: Rooms;
  /** Record deletes of ended sessions still under way; shutdown waits for them. */
  readonly #deleting = new Set<Promise<void>>();

  constructor(rooms: Rooms) {
    this.#rooms = rooms;
  }

  /** Ends an expired session: at once when suspended and idle, else through its gate. */
  async expire(entry: SessionEntry): Promise<void> {
    if (entry.state === 'suspended' && !entry.gate && entry.inFlight === 0 && !entry.ending) this.end(entry, 'expired');
    else await this.finish(entry, 'expired');
  }

  /**
   * Ends a session through its gate: a live context gets onSessionSuspend(ctx, reason) (its
   * memento is discarded) and leaves its worker; then the ID is dead.
   */
  finish(entry: SessionEntry, reason: 'expired' | 'closed', by?: string): Promise<void> {
    const { admission, directory, lifecycle, counters, log } = this.#rooms;
    // Retired before anything is awaited: from here on no request adopts this ID from a
    // record that is still in the store (A4).
    if (entry.state !== 'gone') admission.retire(entry.id);
    directory.markEnding(entry);
    return afterGate(entry, async () => {
      if (entry.state === 'gone') {
        directory.markEnding(entry, false);
        return;
      }
      if (entry.state === 'live') {
        await this.#deleteBeforeHook(entry);
        const answer = await lifecycle.askMemento(entry, reason);
        if (answer.kind === 'failed') logHookError(log, entry, `onSessionSuspend(ctx, '${reason}')`, answer.error);
        await lifecycle.discard(entry);
        counters.suspended[reason]++;
      }
      await this.endDurably(entry, reason, by);
    });
  }

  /**
   * The record goes before onSessionSuspend(ctx, 'closed' | 'expired') runs: the rooms run on
   * the context's own thread, so a hook that ends that thread ends them too, and a delete
   * asked for after the hook might never be sent; the replacement thread, which knows nothing
   * of the retired ID, would then adopt the record back (A4). After any checkpoint under way.
   * A failure is logged; end() tries again.
   */
  async #deleteBeforeHook(entry: SessionEntry): Promise<void> {
    const { lifecycle, ownership, log } = this.#rooms;
    try {
      await lifecycle.checkpointOf(entry);
      await bounded(ownership.remove(entry.id), 'the store delete');
    } catch (error) {
      log.error({ event: 'store-error', session: hashId(entry.id), err: error }, 'cannot delete the record of an ending session before its hook; trying again after it');
    }
  }

  /**
   * Closed or expired: the ID is dead and its record deleted. The ID stays retired until the
   * delete has landed after any checkpoint write still under way, and no adoption read that
   * began before it is pending; if the store refuses the delete, it stays retired for good
   * (the store sweep removes the record once it expires).
   */
  end(entry: SessionEntry, why: 'closed' | 'expired', by?: string): Promise<void> {
    const { admission, directory, lifecycle, counters, log, ownership } = this.#rooms;
    const { id } = entry;
    admission.retire(id);
    directory.remove(entry);
    admission.dropAdopted(id);
    lifecycle.unhome(entry);
    counters[why]++;
    log.info({ event: why, session: hashId(id), ...(by && { by }) }, `session ${why}`);
    const checkpoint = lifecycle.checkpointOf(entry);
    const deleting = (async () => {
      try {
        await checkpoint;
        await ownership.remove(id);
      } catch (error) {
        log.error({ event: 'store-error', session: hashId(id), err: error }, 'cannot delete the session record; its ID stays refused');
        return;
      }
      await ownership.release(id);
      await admission.releaseRetired(id);
    })();
    this.#deleting.add(deleting);
    void deleting.finally(() => this.#deleting.delete(deleting));
    return deleting;
  }

  /**
   * An end that is acknowledged (a close's response, closeSession resolving) waits for the
   * record's delete, so a crash or restart right after cannot bring the session back; a store
   * that hangs delays it at most the store-call deadline (the ID stays refused meanwhile).
   */
  endDurably(entry: SessionEntry, why: 'closed' | 'expired', by?: string): Promise<void> {
    return bounded(this.end(entry, why, by), 'the store delete').catch(() => undefined);
  }

  /**
   * An unproven session left memory (idle, the cap, its source's budget, shutdown) without a
   * record: nothing was written for it, so there is nothing to delete, and its ID, unknown
   * from now on, adopts nothing. Logged at debug: a flood makes one per request.
   */
  drop(entry: SessionEntry, reason: SuspendReason): void {
    const { admission, directory, lifecycle, counters, log, ownership } = this.#rooms;
    directory.remove(entry);
    admission.dropAdopted(entry.id);
    lifecycle.unhome(entry);
    counters.dropped++;
    // Counted by the reason its hook was given, as a saved one would be.
    counters.suspended[reason]++;
    log.debug({ event: 'dropped', session: hashId(entry.id), reason }, 'unproven session left memory without a record');
    void ownership.release(entry.id).catch(() => {});
  }

  /** A context whose suspend keeps failing still cannot outlive its cookie. */
  expireLive(entry: SessionEntry): void {
    const { counters, log, host } = this.#rooms;
    counters.lostSuspends++;
    log.error({ event: 'expired', session: hashId(entry.id) }, 'cookie expired while onSessionSuspend kept failing: context dropped');
    const { id, workerId } = entry;
    this.end(entry, 'expired');
    void host.run({ type: 'discard', sessionId: id }, workerId).catch(() => {});
  }

  /** Closes a session only the store holds; retired meanwhile, so no request adopts it back. */
  async closeStored(id: string, by: string): Promise<boolean> {
    const { admission, store, counters, log, ownership } = this.#rooms;
    const retiredBefore = admission.isRetired(id);
    admission.retire(id);
    // A failure leaves the ID retired: the close was asked for, and may have half happened.
    const existed = (await store.existing([id])).has(id);
    if (existed) {
      try {
        await ownership.remove(id);
      } catch (error) {
        if (!(error instanceof ElsewhereSignal)) throw error;
        // Live on another node of the cluster: that node closes it, and runs its hook.
        if (!retiredBefore) await admission.releaseRetired(id);
        return ownership.closeAt(error.placement, id, by);
      }
      await ownership.release(id);
    }
    if (!retiredBefore) await admission.releaseRetired(id);
    if (!existed) return false;
    counters.closed++;
    log.info({ event: 'closed', session: hashId(id), by }, 'session closed');
    return true;
  }

  /** Deletes the record of a retired ID; the ID stays retired if the store refuses. */
  async deleteRetired(id: string, entry: SessionEntry): Promise<void> {
    try {
      await bounded(this.#rooms.ownership.remove(id), 'the store delete');
      await this.#rooms.admission.releaseRetired(id);
    } catch (error) {
      this.#rooms.log.error({ event: 'store-error', session: hashId(entry.id), err: error }, 'cannot delete the record of a retired session ID; it is refused until it expires');
    }
  }

  /** A stored memento the worker could not read: its record's end of service, set aside, never served again (E11). */
  async quarantine(entry: SessionEntry, error: WireError): Promise<void> {
    const { counters, log, store } = this.#rooms;
    counters.corruptMementos++;
    entry.hasMemento = false;
    log.error(
      { event: 'memento-corrupt', session: hashId(entry.id), code: error.code, err: loggedError(error) },
      'a stored memento cannot be read: quarantined; the client got a fresh context',
    );
    await store.quarantine(entry.id, error.message).catch((failure) => {
      log.error({ event: 'store-error', session: hashId(entry.id), err: failure }, 'cannot quarantine the memento');
    });
  }

  /** A record found expired by the wall clock when it was to be adopted. */
  dropExpiredRecord(id: string): void {
    void this.#rooms.ownership.remove(id).catch(() => {});
  }

  /**
   * Of `ids`, expired records homed here (the main thread's store sweep found them), removes
   * those of sessions this home does not know: a session it knows expires on the monotonic
   * clock in the sweep instead (its record may be older than its last request). Resolves with
   * how many went.
   */
  async dropExpired(ids: readonly string[]): Promise<number> {
    const { ownership, directory, admission } = this.#rooms;
    const stale = ids.filter((id) => !directory.get(id));
    // In a cluster a record another node holds is refused (RESIDENT_ERR_FENCED): that node ends it.
    await Promise.all(stale.map((id) => ownership.remove(id).catch(() => undefined)));
    // A retired ID whose record could not be deleted at the time is gone for good now.
    for (const id of stale) admission.forgetRetired(id);
    return stale.length;
  }

  /** Resolves once the record deletes of sessions that ended have landed (or failed). */
  deletesSettled(): Promise<unknown> {
    return Promise.all(this.#deleting);
  }
}
