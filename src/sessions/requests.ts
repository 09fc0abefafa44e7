/**
 * Running requests on their contexts: admit a request to its session (one at a time per
 * context, in arrival order), wait at the gate while a suspend or resume runs, run it on the
 * context's host, apply what the reply asks for (close, sign-in, regenerate, quarantine), and
 * retry once when the context turned out to be gone.
 */
import { ResidentError, isResidentError } from '../errors.ts';
import { hashId } from '../id-hash.ts';
import { loggedError, type WireRequest, type WorkerReply } from '../contexts/protocol.ts';
import type { SessionEntry } from './directory.ts';
import { setGate } from './gate.ts';
import { elsewhereOutcome, errorOutcome, type CookieAction, type Outcome } from './outcome.ts';
import { ElsewhereSignal } from './ownership.ts';
import { logHookError, type Rooms } from './rooms.ts';
import { rewriteRecord } from './records.ts';
import { bounded } from './bounded.ts';

/** What a request was when it was admitted, for judging its reply. */
interface Admitted {
  request: WireRequest;
  clientIp: string;
  /** 0 the first time; 1 when retried after its context was found gone. */
  attempt: number;
  /** The ID this request presented: a regenerate may change the entry's before it is answered. */
  presented: string;
  /** Monotonic ms when it was admitted. */
  at: number;
}

export class Requests {
  readonly #rooms: Rooms;
  #inFlight = 0;
  #idleWaiters: Array<() => void> = [];

  constructor(rooms: Rooms) {
    this.#rooms = rooms;
  }

  /** Requests admitted and not yet answered, over all sessions. */
  get inFlight(): number {
    return this.#inFlight;
  }

  async run(entry: SessionEntry, request: WireRequest, clientIp: string, attempt = 0): Promise<Outcome> {
    const { config, clock, directory, lifecycle, host } = this.#rooms;
    if (entry.inFlight >= config.maxQueuedRequests) return errorOutcome(new ResidentError('RESIDENT_ERR_QUEUE_FULL'));
    const admitted: Admitted = { request, clientIp, attempt, presented: entry.id, at: clock.now() };
    entry.inFlight++;
    entry.requests++;
    this.#inFlight++;
    this.#rooms.held?.setHeld('inFlight', this.#inFlight);
    directory.touch(entry, admitted.at);
    try {
      // Every waiter awaits the gate promise itself and proceeds to dispatch with no further
      // await, so requests leave in the order they arrived.
      for (;;) {
        if (entry.gate) {
          await entry.gate;
          continue;
        }
        if (entry.state === 'suspended') {
          setGate(entry, lifecycle.resume(entry));
          continue;
        }
        if (entry.state !== 'gone' && entry.workerId === null && !this.#place(entry)) {
          // No thread connected (one is being replaced): wait, then look again in order.
          await host.connected();
          continue;
        }
        break;
      }
      // Closed or expired while this request waited: like any dead ID, it starts afresh.
      if (entry.state === 'gone') return await this.#restart(admitted);
      const init = entry.init ?? undefined;
      entry.init = null;
      const reply = await host.run(
        { type: 'request', sessionId: entry.id, init, expiresAt: this.#rooms.policy.cookieExpiresAt(entry), ...(entry.proven && { proven: true }), request },
        entry.workerId,
      );
      return await this.#afterReply(entry, reply, admitted);
    } catch (error) {
      // The resume found the session on another node: this request goes there.
      if (error instanceof ElsewhereSignal) return elsewhereOutcome(error.placement);
      return errorOutcome(this.#asRequestError(entry, error));
    } finally {
      entry.inFlight--;
      this.#inFlight--;
      this.#rooms.held?.setHeld('inFlight', this.#inFlight);
      entry.dirty = true;
      directory.touch(entry, clock.now());
      if (this.#inFlight === 0) for (const wake of this.#idleWaiters.splice(0)) wake();
      if (config.suspendEveryRequest && entry.inFlight === 0 && entry.state === 'live' && !entry.gate && !this.#rooms.closing) {
        // Round-trip mode: every request ends with a suspend, the next one resumes.
        void lifecycle.startSuspend(entry, 'idle');
      }
    }
  }

  /** Gives a context about to be born its home thread, as the host reports it. */
  #place(entry: SessionEntry): boolean {
    const threadId = this.#rooms.host.place();
    if (threadId === undefined) return false;
    this.#rooms.directory.setHome(entry, threadId);
    return true;
  }

  async #afterReply(entry: SessionEntry, reply: WorkerReply, admitted: Admitted): Promise<Outcome> {
    const { directory, lifecycle, endings, users, config, log } = this.#rooms;
    if (reply.type === 'gone') {
      // The worker no longer runs requests on this context: an earlier request closed it (its
      // end is under way, and this request is served afresh once it is done), or its thread
      // died and this request raced the news (the session resumes from its memento).
      if (entry.state === 'live' && !entry.ending) lifecycle.lose(entry);
      return admitted.attempt === 0 ? this.run(entry, admitted.request, admitted.clientIp, 1) : this.#restart(admitted);
    }
    if (reply.type !== 'response') throw new Error(`unexpected worker reply ${reply.type}`);
    if (reply.error) logHookError(log, entry, 'onConnection', reply.error);
    if (reply.userId !== undefined) directory.setUser(entry, reply.userId);
    if (reply.kept) entry.kept = true;
    if (reply.mementoError) await endings.quarantine(entry, reply.mementoError);
    if (reply.closeOthersOf !== undefined) {
      // Whatever else this request did (a close, a sign-out), the user it named is signed out elsewhere.
      // A request that also closes its own session signs the user out everywhere, itself included.
      const except = reply.closed ? undefined : entry;
      void users.closeUser(reply.closeOthersOf, { except, by: 'closeOtherSessions' }).catch((error) => {
        log.error({ event: 'store-error', err: error }, "cannot close the user's other sessions");
      });
    }
    // A sign-in that was under way when all of the user's sessions were closed is closed too.
    const lateLogin = reply.userId ? users.closedSince(reply.userId, admitted.at, entry) : false;
    if (reply.closed || lateLogin) {
      // The ID is retired before onSessionSuspend(ctx, 'closed') runs, in a task of its own:
      // whatever that hook does, even exit its thread, the session cannot come back (A4).
      await endings.finish(entry, 'closed', lateLogin && !reply.closed ? 'closeUser' : undefined);
      return { kind: 'reply', status: reply.status, headers: reply.headers, body: reply.body, cookie: { expire: true } };
    }
    if (reply.regenerate) await users.regenerate(entry);
    else if (reply.userId !== undefined && (entry.hasMemento || this.#rooms.ownership.recordsEverySession)) {
      // A sign-out must not come back with a crash: the stored record names the user now.
      await rewriteRecord(this.#rooms, entry, entry.id, () => {});
    }
    // After any regenerate, so the user's sessions are listed under their current IDs.
    if (reply.userId && config.maxPerUser > 0) {
      // Awaited (within the bound of a store call): the sign-in is answered once the user's
      // sessions beyond the limit are judged, so the next sign-in of that user, on any thread,
      // is judged after this one.
      await bounded(users.limitUser(reply.userId, entry.id), 'the sessions.maxPerUser check').catch((error) => {
        log.error({ event: 'store-error', err: error }, 'cannot enforce sessions.maxPerUser');
      });
    }
    const cookie = this.#cookieFor(entry, admitted.presented, reply.regenerate === true);
    return { kind: 'reply', status: reply.status, headers: reply.headers, body: reply.body, cookie };
  }

  /**
   * The cookie of a reply. Closed meanwhile, or about to be (the admin view, a user-wide
   * close): expired, not renewed. Renamed by another request's regenerate since this one
   * presented its ID: none at all. Only the request that regenerated hands out the new ID (a
   * client still holding the old one, perhaps a fixated one, never learns it), and renewing
   * the old ID would overwrite the new cookie in the browser.
   */
  #cookieFor(entry: SessionEntry, presented: string, regenerated: boolean): CookieAction {
    if (entry.state === 'gone' || entry.ending) return { expire: true };
    if (entry.id !== presented && !regenerated) return null;
    return { set: entry.id };
  }

  async #restart(admitted: Admitted): Promise<Outcome> {
    if (admitted.attempt > 1) return errorOutcome(new ResidentError('RESIDENT_ERR_WORKER_LOST'));
    const created = await this.#rooms.admission.create(admitted.clientIp);
    if (created instanceof ResidentError) return errorOutcome(created);
    return this.run(created, admitted.request, admitted.clientIp, admitted.attempt + 1);
  }

  #asRequestError(entry: SessionEntry, error: unknown): ResidentError {
    if (isResidentError(error)) {
      // The watchdog's verdict on the request whose hook held a stalled thread (F3): a hook
      // error like any timeout, so the session's log shows it.
      if (error.code === 'RESIDENT_ERR_HOOK_TIMEOUT') logHookError(this.#rooms.log, entry, 'onConnection', { code: error.code, message: error.message, type: 'ResidentError' }, 'its thread was terminated');
      return error;
    }
    // piscina rejects the tasks of a thread that died (F2): each settles here, once.
    this.#rooms.log.error({ event: 'worker-lost', session: hashId(entry.id), err: error }, 'request lost with its worker thread');
    return new ResidentError('RESIDENT_ERR_WORKER_LOST', undefined, { cause: error });
  }

  /** Sessions disabled: a throwaway context for this one request, on the least busy thread. */
  async runEphemeral(clientIp: string, request: WireRequest, newId: string): Promise<Outcome> {
    const { host, log } = this.#rooms;
    const init = { resumed: false, saved: null, savedVersion: null, userId: null, clientIp, createdAt: Date.now() };
    try {
      const reply = await host.run({ type: 'request', sessionId: newId, ephemeral: true, init, expiresAt: null, request }, null);
      if (reply.type !== 'response') throw new Error(`unexpected worker reply ${reply.type}`);
      if (reply.error) log.error({ event: 'hook-error', hook: 'onConnection', code: reply.error.code, err: loggedError(reply.error) }, 'onConnection failed');
      return { kind: 'reply', status: reply.status, headers: reply.headers, body: reply.body, cookie: null };
    } catch (error) {
      return errorOutcome(isResidentError(error) ? error : new ResidentError('RESIDENT_ERR_WORKER_LOST', undefined, { cause: error }));
    }
  }

  /** Resolves when no request is in flight, or after `timeoutMs` (Infinity: only then). */
  drained(timeoutMs: number): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const wake = () => {
        clearTimeout(timer);
        resolve();
      };
      this.#idleWaiters.push(wake);
      if (timeoutMs === Infinity) return;
      timer = setTimeout(() => {
        // Out of the waiters, so that polling does not pile them up.
        this.#idleWaiters = this.#idleWaiters.filter((waiter) => waiter !== wake);
        resolve();
      }, timeoutMs);
    });
  }
}
