/**
 * A context's life in memory: resume, suspend, checkpoint, and the rewrite of its record. With
 * ./endings.ts (close and expiry), the only room that asks a worker for a memento and the only
 * one that writes the store. Every step runs in the session's gate (./gate.ts), so no request
 * overtakes it and a context never has two live copies.
 */
import { ResidentError, isResidentError } from '../errors.ts';
import { hashId } from '../id-hash.ts';
import type { WireError } from '../contexts/protocol.ts';
import { isSharedStore } from '../stores/store.ts';
import type { SuspendReason } from '../types.ts';
import { contextInit } from './context-init.ts';
import type { SessionEntry } from './directory.ts';
import { Checkpoints } from './checkpoints.ts';
import { setGate } from './gate.ts';
import { ElsewhereSignal, claimAndRead } from './ownership.ts';
import { logHookError, logLostSuspend, type Rooms } from './rooms.ts';

/** Reasons that take a context out of memory and keep its memento ('dropped': an unproven one pushed out, kept only if a hook asked). */
export type SuspendingReason = 'idle' | 'evicted' | 'admin' | 'shutdown' | 'dropped';

/** What a worker answered when asked for a context's memento. */
export type MementoAnswer =
  | { kind: 'memento'; memento: string; /** A hook called ctx.keep(). */ kept: boolean }
  /** onSessionSuspend threw, or its memento could not be encoded: the context is still there. */
  | { kind: 'failed'; error: WireError }
  /** No context: its thread died (`died`), or an earlier request closed it. */
  | { kind: 'gone'; died?: boolean };

/** How an idle suspend that failed waits before it is tried again. */
const SUSPEND_RETRY_MS = 5_000;

export class Lifecycle {
  readonly #rooms: Rooms;
  readonly #checkpoints: Checkpoints;

  constructor(rooms: Rooms) {
    this.#rooms = rooms;
    this.#checkpoints = new Checkpoints(rooms, this);
  }

  /** Calls onSessionSuspend(ctx, reason) on the context's worker. Never rejects. */
  async askMemento(entry: SessionEntry, reason: SuspendReason): Promise<MementoAnswer> {
    try {
      const reply = await this.#rooms.host.run({ type: 'suspend', sessionId: entry.id, reason }, entry.workerId);
      if (reply.type === 'suspended') return { kind: 'memento', memento: reply.memento, kept: reply.kept === true };
      if (reply.type === 'suspend-failed') return { kind: 'failed', error: reply.error };
    } catch {
      // The thread died: the context went with it.
      return { kind: 'gone', died: true };
    }
    return { kind: 'gone' };
  }

  /** Brings a suspended session back: its next request is sent with the memento. Runs in the gate. */
  async resume(entry: SessionEntry): Promise<void> {
    const { admission, store, log, capacity, directory, counters, endings } = this.#rooms;
    // Adopted: claimed and read already. Otherwise claimed here (on one node always ours; in a
    // cluster one store call that also reads the record, or names the node that holds it).
    let record = admission.takeAdopted(entry.id);
    try {
      record ??= await claimAndRead(this.#rooms, entry.id);
    } catch (error) {
      if (error instanceof ElsewhereSignal) {
        // Not this node's: it forgets the session, and the request (with those waiting behind
        // it, which see the same rejection) goes to the owner.
        directory.remove(entry);
        throw error;
      }
      log.error({ event: 'store-error', session: hashId(entry.id), err: error }, 'cannot read the suspended session');
      throw new ResidentError('RESIDENT_ERR_STORE_FAILED', undefined, { cause: error });
    }
    if (!record && entry.hasMemento && isSharedStore(store)) {
      // On a store other nodes share, the record it was suspended into is gone: one of them may
      // have ended the session (closed it, signed its user out everywhere, moved it to a
      // regenerated ID), or the store lost it (E8). The ID is dead here too (A4): it never comes
      // back with the user this node remembers. The request starts a new session.
      log.warn({ event: 'memento-missing', session: hashId(entry.id) }, 'the shared store has no record of this suspended session: it ends, and the request starts a new session');
      void endings.end(entry, 'closed', 'memento-missing');
      return;
    }
    // The stored user, not this node's memory of it: another node sharing the store may have
    // signed the session in or out since this one suspended it.
    if (record) directory.setUser(entry, record.userId);
    const refused = await capacity.makeRoom();
    if (refused) throw refused;
    let resumed = true;
    if (!record?.memento && entry.hasMemento) {
      // The store lost what it acknowledged (E8): start afresh rather than pretend.
      log.warn({ event: 'memento-missing', session: hashId(entry.id) }, 'the store has no memento for this suspended session: starting a fresh context');
      resumed = false;
      entry.hasMemento = false;
    }
    entry.init = contextInit(entry, resumed, record?.memento ? record : undefined);
    directory.addLive(entry);
    capacity.placed();
    counters.resumed++;
    log.info({ event: 'resumed', session: hashId(entry.id), memento: entry.init.saved !== null }, 'session resumed');
  }

  /** Suspends a live context in its gate (idle, the cap, the admin view, shutdown); true once saved. */
  startSuspend(entry: SessionEntry, reason: SuspendingReason): Promise<boolean> {
    this.#rooms.directory.markSuspending(entry);
    const saving = this.#suspend(entry, reason);
    setGate(entry, saving.then(() => undefined));
    return saving;
  }

  /** Never rejects: the outcome is the entry's new state (and true when the memento was saved). */
  async #suspend(entry: SessionEntry, reason: SuspendingReason): Promise<boolean> {
    const { ownership, policy, directory, counters, log, endings } = this.#rooms;
    // Whether it is unproven is judged as it starts to leave: its hook is told so (a 'dropped'
    // hook releases what it held), and a cookie presented meanwhile finds a session already
    // ending, never one brought back from a memento written after that hook.
    const unproven = !entry.proven;
    const answer = await this.askMemento(entry, reason);
    if (this.#drops(entry, unproven, answer)) {
      await this.discard(entry);
      endings.drop(entry, reason);
      return false;
    }
    if (answer.kind === 'gone') {
      if (entry.state !== 'suspending') return false;
      this.lose(entry);
      if (answer.died) {
        // Its thread stopped mid-suspend (the hook exited it): no memento was saved, and a
        // shutdown's exit code and the lost-suspends count must say so (H1).
        counters.lostSuspends++;
        log.error({ event: 'suspend-lost', session: hashId(entry.id), reason }, 'the worker thread stopped during onSessionSuspend: memento lost');
      }
      return false;
    }
    if (answer.kind === 'failed') {
      await this.#suspendFailed(entry, reason, answer.error);
      return false;
    }
    try {
      await ownership.save(policy.record(entry, answer.memento), true);
    } catch (error) {
      if (isResidentError(error, 'RESIDENT_ERR_FENCED')) {
        // Another node took the session (this one lost its lease meanwhile): its memento is not
        // ours to write, and the context here is a stale copy.
        await this.fencedOut(entry);
        return false;
      }
      // The context is still on its worker: refused writes keep it live (E4), loudly.
      await this.#suspendFailed(entry, reason, { code: 'RESIDENT_ERR_STORE_FAILED', message: (error as Error).message }, 'store');
      return false;
    }
    this.saved(entry, answer.memento);
    await this.discard(entry);
    directory.markSuspended(entry);
    counters.suspended[reason]++;
    log.info({ event: 'suspended', session: hashId(entry.id), reason }, 'session suspended');
    return true;
  }

  /**
   * Whether a context leaving memory ends without a record: unproven when it began to leave,
   * and not kept (ctx.keep(), in either hook, whatever the reason, a push-out included). Its
   * client never presented the cookie back, so a cookieless flood costs no record; a failed
   * hook or a dead thread loses nothing anyone comes back for.
   */
  #drops(entry: SessionEntry, unproven: boolean, answer: MementoAnswer): boolean {
    if (!unproven || entry.state !== 'suspending' || this.#rooms.config.suspendEveryRequest) return false;
    return !(entry.kept || (answer.kind === 'memento' && answer.kept));
  }

  /** Runs inside the entry's gate: no request proceeds until the outcome is settled. */
  async #suspendFailed(entry: SessionEntry, reason: SuspendingReason, error: WireError, failed: 'hook' | 'store' = 'hook'): Promise<void> {
    const { counters, log, clock, directory } = this.#rooms;
    counters.suspended.failed++;
    const hook = `onSessionSuspend(ctx, '${reason}')`;
    // Not silently discarded (H1): the context stays live and the idle sweep tries again. So
    // does an eviction the store refused (E4, E7): the cap is exceeded until the store takes
    // writes again, rather than a memento lost; and a shutdown suspend the store refused, which
    // shutdown tries again until its deadline. Only a hook that fails a forced suspend
    // (shutdown, cap) loses the context.
    if (reason === 'idle' || reason === 'admin' || (failed === 'store' && (reason === 'evicted' || reason === 'shutdown'))) {
      logHookError(log, entry, hook, error, 'the context stays live; retrying later');
      entry.retryAt = clock.now() + SUSPEND_RETRY_MS;
      directory.markLiveAgain(entry);
      return;
    }
    // A forced suspend cannot keep the context: the loss is counted and logged (./rooms.ts);
    // the stored record is left as it was, its memento included.
    counters.lostSuspends++;
    logLostSuspend(log, entry, hook, error);
    // The old context must be gone, and its home forgotten, before a waiting request resumes
    // the session into a new one.
    await this.discard(entry);
    directory.markSuspended(entry);
  }

  /** A memento of `entry` is in the store now. */
  saved(entry: SessionEntry, memento: string): void {
    entry.hasMemento = true;
    entry.mementoBytes = Buffer.byteLength(memento);
  }

  /** Saves a memento of a live context while it stays live (./checkpoints.ts). */
  checkpoint(entry: SessionEntry): void {
    this.#checkpoints.checkpoint(entry);
  }

  /** The checkpoint write of `entry` under way, if any: a move or delete of its record waits for it. */
  checkpointOf(entry: SessionEntry): Promise<void> | undefined {
    return this.#checkpoints.of(entry);
  }

  /** Drops the context from its worker without a hook, and forgets its home. */
  async discard(entry: SessionEntry): Promise<void> {
    try {
      await this.#rooms.host.run({ type: 'discard', sessionId: entry.id }, entry.workerId);
    } catch {
      // The thread died: the context went with it.
    }
    this.unhome(entry);
  }

  /**
   * Another node took the session (a write of this node's was fenced out): the context here is
   * a stale copy and goes without a hook; the session's next request finds its owner through
   * the resume's claim and is forwarded there.
   */
  async fencedOut(entry: SessionEntry): Promise<void> {
    this.#rooms.log.warn({ event: 'fenced', session: hashId(entry.id) }, 'another node owns this session now: its context here is dropped');
    await this.discard(entry);
    if (entry.state === 'live' || entry.state === 'suspending') {
      entry.hasMemento = true;
      this.#rooms.directory.markSuspended(entry);
    }
  }

  /** The context vanished with its worker: the session falls back to its last memento. */
  lose(entry: SessionEntry): void {
    this.unhome(entry);
    this.#rooms.directory.markSuspended(entry);
  }

  /** The context left its thread. */
  unhome(entry: SessionEntry): void {
    if (entry.workerId === null) return;
    this.#rooms.host.release(entry.workerId);
    this.#rooms.directory.setHome(entry, null);
  }
}
