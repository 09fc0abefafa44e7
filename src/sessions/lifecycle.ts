/**
 * A context's life in memory: resume, suspend, checkpoint, and the rewrite of its record. With
 * ./endings.ts (close and expiry), the only room that asks a worker for a memento and the only
 * one that writes the store. Every step runs in the session's gate (./gate.ts), so no request
 * overtakes it and a context never has two live copies.
 */
import { ResidentError } from '../errors.ts';
import { hashId } from '../id-hash.ts';
import type { WireError } from '../contexts/protocol.ts';
import { isSharedStore } from '../stores/store.ts';
import type { SuspendReason } from '../types.ts';
import { bounded } from './bounded.ts';
import { contextInit } from './context-init.ts';
import type { SessionEntry } from './directory.ts';
import { setGate } from './gate.ts';
import { mustBeOurs } from './ownership.ts';
import { logHookError, type Rooms } from './rooms.ts';

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
  /** Checkpoint writes under way, so a record is not moved or deleted while one may still land on it. */
  readonly #checkpointing = new Map<SessionEntry, Promise<void>>();

  constructor(rooms: Rooms) {
    this.#rooms = rooms;
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
    const { admission, store, log, ownership, capacity, directory, counters, endings } = this.#rooms;
    let record = admission.takeAdopted(entry.id);
    try {
      record ??= await bounded(store.get(entry.id), 'the store read');
    } catch (error) {
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
    mustBeOurs(await ownership.claim(entry.id));
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
    const { store, policy, directory, counters, log, endings } = this.#rooms;
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
      await store.set(policy.record(entry, answer.memento));
    } catch (error) {
      // The context is still on its worker: refused writes keep it live (E4), loudly.
      await this.#suspendFailed(entry, reason, { code: 'RESIDENT_ERR_STORE_FAILED', message: (error as Error).message }, 'store');
      return false;
    }
    this.#saved(entry, answer.memento);
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
    // A forced suspend cannot keep the context: the loss is logged and counted.
    counters.lostSuspends++;
    logHookError(log, entry, hook, error, 'memento lost: the session resumes from its previous memento, if any');
    // The old context must be gone, and its home forgotten, before a waiting request resumes
    // the session into a new one.
    await this.discard(entry);
    directory.markSuspended(entry);
  }

  #saved(entry: SessionEntry, memento: string): void {
    entry.hasMemento = true;
    entry.mementoBytes = Buffer.byteLength(memento);
  }

  /**
   * Saves a memento of a live context that handled a request since its last checkpoint, while
   * it stays live, so a crash loses at most one interval (`sessions.checkpointInterval`).
   */
  checkpoint(entry: SessionEntry): void {
    // An unproven session is written only if a hook kept it (ctx.keep()).
    if (!(entry.proven || entry.kept) || !entry.dirty || entry.state !== 'live' || entry.gate || this.#checkpointing.has(entry)) return;
    entry.dirty = false;
    const saving = this.#checkpointOne(entry).finally(() => this.#checkpointing.delete(entry));
    this.#checkpointing.set(entry, saving);
  }

  /** The checkpoint write of `entry` under way, if any: a move or delete of its record waits for it. */
  checkpointOf(entry: SessionEntry): Promise<void> | undefined {
    return this.#checkpointing.get(entry);
  }

  async #checkpointOne(entry: SessionEntry): Promise<void> {
    const { store, policy, counters, log } = this.#rooms;
    const answer = await this.askMemento(entry, 'checkpoint');
    if (answer.kind === 'failed') {
      entry.dirty = true;
      logHookError(log, entry, "onSessionSuspend(ctx, 'checkpoint')", answer.error, 'no checkpoint this time');
      return;
    }
    // The thread died (worker loss handles the session), or the context was closed or
    // suspended meanwhile and has had its last word: its record is not revived.
    if (answer.kind === 'gone' || entry.state !== 'live' || entry.ending) return;
    try {
      await store.set(policy.record(entry, answer.memento));
      this.#saved(entry, answer.memento);
      counters.checkpoints++;
    } catch (error) {
      entry.dirty = true;
      log.error({ event: 'store-error', session: hashId(entry.id), err: error }, 'checkpoint not saved; will try again');
    }
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
