/**
 * The life of every session, on the main thread: admission, creation, resume (also after a
 * restart, from the store), idle and cap suspension, checkpoints, closing, expiry, worker loss
 * and shutdown. See the state diagram in ../shared/DESIGN.md. Requests of one session are
 * admitted in arrival order; a suspend or resume in progress holds later requests on the
 * entry's gate, so a context never has two live copies and no request overtakes another
 * (RELIABILITY.md C7). The store is not touched on the path of a live context's request.
 */
import type { ResidentConfig } from '../config.ts';
import type { Clock } from '../clock.ts';
import { ResidentError, isResidentError } from '../errors.ts';
import { ipMatcher, type IpMatcher } from '../http/ip-binding.ts';
import { hashId, type Logger } from '../log.ts';
import type { ContextStore, SessionRecord, SessionSummary } from '../stores/store.ts';
import type { SuspendReason } from '../types.ts';
import { withDeadline } from './deadline.ts';
import { Directory, type SessionEntry } from './directory.ts';
import { newSessionId } from './ids.ts';
import type { ContextPool } from './pool.ts';
import type { WireBody, WireError, WireRequest, WorkerEvent, WorkerReply } from './protocol.ts';

/** What the HTTP edge does with our cookie in the response. */
export type CookieAction = { set: string } | { expire: true } | null;

export type Outcome =
  | { kind: 'reply'; status: number; headers: string[]; body: WireBody; cookie: CookieAction }
  | { kind: 'error'; error: ResidentError; cookie: CookieAction };

/** Reasons that take a context out of memory and keep its memento. */
type SuspendingReason = 'idle' | 'evicted' | 'admin' | 'shutdown';

/** One session as the admin view and user lookups see it. Times are wall-clock ms. */
export interface SessionInfo {
  id: string;
  userId: string | null;
  clientIp: string;
  state: 'live' | 'suspending' | 'suspended';
  createdAt: number;
  lastActivityAt: number;
  /** The worker thread hosting the context; null when suspended. */
  workerId: number | null;
  /** Requests served by this process; null for a session it has not seen (stored before a restart). */
  requests: number | null;
  /** UTF-8 size of the stored memento; 0: none. */
  mementoBytes: number;
}

export interface SessionCounters {
  created: number;
  resumed: number;
  /** Sessions found in the store that this process did not know (after a restart). */
  adopted: number;
  suspended: Record<SuspendReason | 'failed', number>;
  /** Forced suspends (cap, shutdown) whose memento could not be taken or kept. */
  lostSuspends: number;
  checkpoints: number;
  closed: number;
  expired: number;
  ipMismatches: number;
  corruptMementos: number;
  workersLost: number;
  regenerated: number;
}

/** A session only the store knows (suspended before a restart). */
export function storedInfo(summary: SessionSummary): SessionInfo {
  return {
    id: summary.id,
    userId: summary.userId,
    clientIp: summary.clientIp,
    state: 'suspended',
    createdAt: summary.createdAt,
    lastActivityAt: summary.lastActivityAt,
    workerId: null,
    requests: null,
    mementoBytes: summary.mementoBytes,
  };
}

const SWEEP_INTERVAL_MS = 250;
/** How long an idle suspend that failed waits before it is tried again. */
const SUSPEND_RETRY_MS = 5_000;
/**
 * A store read a request waits for, at most: a store that hangs (a stuck network mount) gets
 * the client a 503 within this, never a request that never ends (RELIABILITY.md E6).
 */
const STORE_READ_TIMEOUT_MS = 1_500;

/** A store call on a request's path, given up on (503) after STORE_READ_TIMEOUT_MS. */
function bounded<T>(work: Promise<T>, what: string): Promise<T> {
  return withDeadline(work, STORE_READ_TIMEOUT_MS, 'RESIDENT_ERR_STORE_FAILED', what);
}

const EXPIRED_BATCH = 1_000;
/** How long a closeUser is remembered for sign-ins under way at the time (see #usersClosedAt). */
const USER_CLOSE_MEMORY_MS = 3_600_000;
/** Records read per store listing when collecting a user's sessions. */
const USER_PAGE = 1_000;

export class Sessions {
  readonly directory = new Directory();
  readonly counters: SessionCounters = {
    created: 0,
    resumed: 0,
    adopted: 0,
    suspended: { idle: 0, evicted: 0, admin: 0, closed: 0, shutdown: 0, expired: 0, checkpoint: 0, failed: 0 },
    lostSuspends: 0,
    checkpoints: 0,
    closed: 0,
    expired: 0,
    ipMismatches: 0,
    corruptMementos: 0,
    workersLost: 0,
    regenerated: 0,
  };
  readonly #config: ResidentConfig['sessions'];
  readonly #pool: ContextPool;
  readonly #store: ContextStore;
  readonly #clock: Clock;
  readonly #log: Logger;
  /** Idle time after which a live context is suspended; Infinity: never. */
  readonly #idleLimit: number;
  /** Idle time after which a session is gone; Infinity: never (browser-session cookie). */
  readonly #sessionLimit: number;
  readonly #lifetimeLimit: number;
  readonly #sameClient: IpMatcher;
  readonly #timers: NodeJS.Timeout[] = [];
  /** Store lookups under way, so two requests with one unknown ID adopt it once. */
  readonly #adopting = new Map<string, Promise<SessionEntry | undefined>>();
  /** Records read to adopt a session, kept for the resume that follows, so the store is read once. */
  readonly #adopted = new Map<string, SessionRecord>();
  /** Sessions whose end (#finish) is under way: their responses expire the cookie. */
  readonly #ending = new Set<SessionEntry>();
  /**
   * Dead IDs whose record the store may still hold: the old ID of a regenerate until its record
   * is moved, a store-only session while it is closed. They are never adopted, so no request
   * brings them back in the meantime; an ID stays here if its record could not be deleted.
   */
  readonly #retired = new Set<string>();
  /**
   * Old IDs of a regenerate whose record is still moving, to the session they now name: an
   * admin close by the old handle closes the session, not just the record in transit.
   */
  readonly #renamed = new Map<string, SessionEntry>();
  /**
   * Monotonic time of the latest closeUser(userId): a login under way then (its userId reaches
   * this thread with its reply) is closed on arrival, so "close all" cannot miss it. Entries go
   * once no request admitted before them can still be answered.
   */
  readonly #usersClosedAt = new Map<string, number>();
  /** Record deletes of ended sessions still under way; shutdown waits for them. */
  readonly #deleting = new Set<Promise<void>>();
  /** Checkpoint writes under way, so a record is not moved while one may still land on it. */
  readonly #checkpointing = new Map<SessionEntry, Promise<void>>();
  #closing = false;
  #idleWaiters: Array<() => void> = [];
  #inFlight = 0;

  constructor(
    config: ResidentConfig['sessions'],
    storeSweepInterval: number,
    pool: ContextPool,
    store: ContextStore,
    clock: Clock,
    log: Logger,
  ) {
    this.#config = config;
    this.#pool = pool;
    this.#store = store;
    this.#clock = clock;
    this.#log = log;
    this.#sessionLimit = config.cookieTimeout > 0 ? config.cookieTimeout : Infinity;
    this.#lifetimeLimit = config.maxLifetime > 0 ? config.maxLifetime : Infinity;
    this.#sameClient = ipMatcher(config.bindIp);
    // A context never outlives its cookie: with a cookie shorter than the process timeout, the
    // context is suspended when the cookie expires, and its memento dropped right after.
    this.#idleLimit = Math.min(config.processTimeout > 0 ? config.processTimeout : Infinity, this.#sessionLimit);
    this.#every(SWEEP_INTERVAL_MS, () => this.sweep());
    if (config.checkpointInterval > 0) this.#every(config.checkpointInterval, () => this.checkpoint());
    if (storeSweepInterval > 0) this.#every(storeSweepInterval, () => void this.sweepStore());
  }

  /** True once shutdown began. */
  get closing(): boolean {
    return this.#closing;
  }

  #every(ms: number, job: () => void): void {
    const timer = setInterval(job, ms);
    timer.unref();
    this.#timers.push(timer);
  }

  /**
   * Serves one dynamic request. `presented` are the well-formed session IDs the cookie header
   * carried, in header order; `clientIp` is the normalised client address.
   */
  async serve(presented: string[], clientIp: string, request: WireRequest): Promise<Outcome> {
    if (this.#closing) return { kind: 'error', error: new ResidentError('RESIDENT_ERR_SHUTTING_DOWN'), cookie: null };
    if (!this.#config.enabled) return this.#serveEphemeral(clientIp, request);

    let found: { entry?: SessionEntry; foreign?: SessionEntry };
    try {
      found = await this.#find(presented, clientIp);
    } catch (error) {
      this.#log.error({ event: 'store-error', err: error }, 'cannot look up a presented session in the store');
      return { kind: 'error', error: new ResidentError('RESIDENT_ERR_STORE_FAILED', undefined, { cause: error }), cookie: null };
    }
    let { entry } = found;
    const { foreign } = found;
    if (!entry && foreign) {
      this.counters.ipMismatches++;
      this.#log.warn(
        { event: 'ip-mismatch', session: hashId(foreign.id), boundIp: foreign.clientIp, clientIp },
        'session cookie presented from another IP: refused, session untouched',
      );
      // The cookie is expired for this sender only (B1): a reload starts a new session here,
      // while the bound session stays untouched for its owner.
      return { kind: 'error', error: new ResidentError('RESIDENT_ERR_IP_MISMATCH'), cookie: { expire: true } };
    }
    if (!entry && presented.length > 0) {
      // Strict mode (A3): an ID we do not hold is never adopted; a new one is issued.
      this.#log.warn({ event: 'unknown-id', presented: presented.map((id) => hashId(id)), clientIp }, 'unknown or expired session ID: issuing a new one');
    }
    if (!entry) {
      const created = this.#create(clientIp);
      if (created instanceof ResidentError) return { kind: 'error', error: created, cookie: null };
      entry = created;
    }
    return this.#run(entry, request, clientIp, 0);
  }

  /**
   * Duplicate cookie names (cookie tossing, A8): the first known session bound to this client
   * wins, so an unknown or foreign value can never shadow a valid one. IDs this process does
   * not know are looked up in the store: a session suspended before a restart resumes. One
   * store call says which of them exist, however many the header carries, so junk values cost
   * no read each and cannot push a real session past any lookup budget. A session found
   * expired (idle past cookieTimeout, or past maxLifetime) is ended here and skipped, on every
   * path: the sweep may not have reached it yet.
   */
  async #find(presented: string[], clientIp: string): Promise<{ entry?: SessionEntry; foreign?: SessionEntry }> {
    let unknown: string[] | undefined;
    for (const id of presented) {
      if (!this.directory.get(id) && !this.#retired.has(id)) (unknown ??= []).push(id);
    }
    const stored = unknown ? await bounded(this.#store.existing(unknown), 'the store lookup') : undefined;
    let foreign: SessionEntry | undefined;
    for (const id of presented) {
      let known = this.directory.get(id);
      if (!known && stored?.has(id) && !this.#retired.has(id)) known = await this.#adopt(id);
      if (!known || known.state === 'gone') continue;
      if (this.#hasExpired(known)) {
        // Its end (onSessionSuspend(ctx, 'expired') for a live context) completes before a
        // new session is made for this client: never two contexts of one client at once.
        await this.#expire(known);
        continue;
      }
      if (this.#sameClient(known.clientIp, clientIp)) return { entry: known };
      // Read for another client's request: its memento is not kept in memory meanwhile.
      this.#adopted.delete(known.id);
      foreign ??= known;
    }
    return { foreign };
  }

  /** Idle past the cookie's lifetime, or past `sessions.maxLifetime` however active (C3). */
  #hasExpired(entry: SessionEntry): boolean {
    const now = this.#clock.now();
    if (now - entry.startedAt >= this.#lifetimeLimit) return true;
    return entry.inFlight === 0 && now - entry.lastActive >= this.#sessionLimit;
  }

  /** Ends an expired session: at once when suspended and idle, else through its gate. */
  async #expire(entry: SessionEntry): Promise<void> {
    if (entry.state === 'suspended' && !entry.gate && entry.inFlight === 0 && !this.#ending.has(entry)) this.#end(entry, 'expired');
    else await this.#finish(entry, 'expired');
  }

  /** A session the store holds but this process does not know (it ran before a restart). */
  #adopt(id: string): Promise<SessionEntry | undefined> {
    let pending = this.#adopting.get(id);
    if (!pending) {
      pending = this.#readForAdoption(id).finally(() => this.#adopting.delete(id));
      this.#adopting.set(id, pending);
    }
    return pending;
  }

  /** A store read on a request's path: bounded in time (E6). */
  #read(id: string): Promise<SessionRecord | undefined> {
    return bounded(this.#store.get(id), 'the store read');
  }

  async #readForAdoption(id: string): Promise<SessionEntry | undefined> {
    const record = await this.#read(id);
    // Closed or regenerated while the read was under way: a dead ID is never adopted (A4).
    if (!record || this.#retired.has(id)) return undefined;
    const known = this.directory.get(id);
    if (known) return known;
    const now = Date.now();
    // After a restart only the wall clock spans the gap: judge the record's expiry by it.
    if (record.expiresAt !== null && record.expiresAt <= now) {
      void this.#store.delete(id).catch(() => {});
      return undefined;
    }
    const mono = this.#clock.now();
    const entry: SessionEntry = {
      id,
      clientIp: record.clientIp,
      createdAt: record.createdAt,
      startedAt: mono - Math.max(0, now - record.createdAt),
      userId: record.userId,
      requests: 0,
      mementoBytes: record.memento === null ? 0 : Buffer.byteLength(record.memento),
      hasMemento: record.memento !== null,
      dirty: false,
      state: 'suspended',
      lastActive: mono - Math.max(0, now - record.lastActivityAt),
      orderedAt: 0,
      inFlight: 0,
      gate: null,
      init: null,
      retryAt: 0,
      queuedForExpiry: false,
      workerId: null,
    };
    this.directory.addSuspended(entry);
    this.#adopted.set(id, record);
    this.counters.adopted++;
    return entry;
  }

  #create(clientIp: string): SessionEntry | ResidentError {
    const room = this.#makeRoom();
    if (room) return room;
    const id = newSessionId();
    const now = this.#clock.now();
    const entry: SessionEntry = {
      id,
      clientIp,
      createdAt: Date.now(),
      startedAt: now,
      userId: null,
      requests: 0,
      mementoBytes: 0,
      hasMemento: false,
      dirty: false,
      state: 'live',
      lastActive: now,
      orderedAt: now,
      inFlight: 0,
      gate: null,
      init: null,
      retryAt: 0,
      queuedForExpiry: false,
      workerId: null,
    };
    entry.init = this.#init(entry, false, undefined);
    this.directory.addLive(entry);
    this.counters.created++;
    this.#log.info({ event: 'created', session: hashId(entry.id), clientIp }, 'session created');
    return entry;
  }

  #init(entry: SessionEntry, resumed: boolean, record: SessionRecord | undefined) {
    return {
      resumed,
      saved: record?.memento ?? null,
      savedVersion: record?.mementoVersion ?? null,
      userId: entry.userId,
      clientIp: entry.clientIp,
      createdAt: entry.createdAt,
    };
  }

  /**
   * Keeps live contexts within `maxContexts`: suspends the least recently active context with
   * no request in flight. When every context is busy the caller answers 503 (C5, C6).
   */
  #makeRoom(): ResidentError | undefined {
    // More than one may go: contexts whose eviction the store refused stayed live over the cap,
    // and once it takes writes again the count comes back down here. Each victim is marked
    // suspending at once, so it counts no more and is not picked twice.
    const now = this.#clock.now();
    // Contexts whose suspend was refused lately (a store outage) are tried again at most one
    // per admission: a client arriving after the store recovers still brings the count back
    // down, and one arriving during the outage costs one refused write, not one per context.
    let retried = false;
    while (this.directory.liveCount >= this.#config.maxContexts) {
      // The Map is in activity order to within REORDER_MS: look on until no later entry can
      // be older than the best candidate so far.
      let victim: SessionEntry | undefined;
      let refusedLately: SessionEntry | undefined;
      for (const candidate of this.directory.live.values()) {
        if (victim && candidate.orderedAt >= victim.lastActive) break;
        if (candidate.state !== 'live' || candidate.inFlight > 0 || candidate.gate) continue;
        if (candidate.retryAt > now) {
          if (!refusedLately || candidate.lastActive < refusedLately.lastActive) refusedLately = candidate;
          continue;
        }
        if (!victim || candidate.lastActive < victim.lastActive) victim = candidate;
      }
      if (!victim && refusedLately) {
        // Over the cap until the store takes writes again (E4), rather than a memento lost.
        if (retried) return undefined;
        retried = true;
        victim = refusedLately;
      }
      if (!victim) {
        this.#log.warn({ event: 'capacity', maxContexts: this.#config.maxContexts }, 'every context is busy: refusing a new one');
        return new ResidentError('RESIDENT_ERR_CAPACITY');
      }
      void this.#startSuspend(victim, 'evicted');
    }
    return undefined;
  }

  async #run(entry: SessionEntry, request: WireRequest, clientIp: string, attempt: number): Promise<Outcome> {
    if (entry.inFlight >= this.#config.maxQueuedRequests) {
      return { kind: 'error', error: new ResidentError('RESIDENT_ERR_QUEUE_FULL'), cookie: null };
    }
    // The ID this request presented: a regenerate may change the entry's before it is answered.
    const presented = entry.id;
    const admittedAt = this.#clock.now();
    entry.inFlight++;
    entry.requests++;
    this.#inFlight++;
    this.directory.touch(entry, this.#clock.now());
    try {
      // Every waiter awaits the gate promise itself and proceeds to dispatch with no further
      // await, so requests leave in the order they arrived.
      for (;;) {
        if (entry.gate) {
          await entry.gate;
          continue;
        }
        if (entry.state === 'suspended') {
          this.#setGate(entry, this.#resume(entry));
          continue;
        }
        break;
      }
      if (entry.state === 'gone') {
        // Closed or expired while this request waited: like any dead ID, it starts afresh.
        return this.#restart(request, clientIp, attempt);
      }
      const init = entry.init ?? undefined;
      entry.init = null;
      const reply = await this.#pool.run(
        { type: 'request', sessionId: entry.id, init, expiresAt: this.#expiresAt(entry), request },
        entry,
        request.body ?? undefined,
      );
      return await this.#afterReply(entry, reply, request, clientIp, attempt, presented, admittedAt);
    } catch (error) {
      return { kind: 'error', error: this.#asRequestError(entry, error), cookie: null };
    } finally {
      entry.inFlight--;
      this.#inFlight--;
      entry.dirty = true;
      this.directory.touch(entry, this.#clock.now());
      if (this.#inFlight === 0) for (const wake of this.#idleWaiters.splice(0)) wake();
      if (this.#config.suspendEveryRequest && entry.inFlight === 0 && entry.state === 'live' && !entry.gate && !this.#closing) {
        // Round-trip mode: every request ends with a suspend, the next one resumes.
        this.#startSuspend(entry, 'idle');
      }
    }
  }

  async #afterReply(
    entry: SessionEntry,
    reply: WorkerReply,
    request: WireRequest,
    clientIp: string,
    attempt: number,
    presented: string,
    admittedAt: number,
  ): Promise<Outcome> {
    if (reply.type === 'gone') {
      // The worker no longer runs requests on this context: an earlier request closed it (its
      // end is under way, and this request is served afresh once it is done), or its thread
      // died and this request raced the news (the session resumes from its memento).
      if (entry.state === 'live' && !this.#ending.has(entry)) this.#lose(entry);
      return attempt === 0 ? this.#run(entry, request, clientIp, 1) : this.#restart(request, clientIp, attempt);
    }
    if (reply.type !== 'response') throw new Error(`unexpected worker reply ${reply.type}`);
    if (reply.error) this.#logHookError(entry, 'onConnection', reply.error);
    if (reply.userId !== undefined) this.directory.setUser(entry, reply.userId);
    if (reply.mementoError) await this.#quarantine(entry, reply.mementoError);
    if (reply.closeOthersOf !== undefined) {
      // Whatever else this request did (a close, a sign-out), the user it named is signed out elsewhere.
      // A request that also closes its own session signs the user out everywhere, itself included.
      const except = reply.closed ? undefined : entry;
      void this.closeUser(reply.closeOthersOf, { except, by: 'closeOtherSessions' }).catch((error) => {
        this.#log.error({ event: 'store-error', err: error }, "cannot close the user's other sessions");
      });
    }
    // A sign-in that was under way when all of the user's sessions were closed is closed too.
    const closedUserAt = reply.userId ? this.#usersClosedAt.get(reply.userId) : undefined;
    const lateLogin = closedUserAt !== undefined && closedUserAt >= admittedAt;
    if (reply.closed || lateLogin) {
      // The ID is retired before onSessionSuspend(ctx, 'closed') runs, in a task of its own:
      // whatever that hook does, even exit its thread, the session cannot come back (A4).
      await this.#finish(entry, 'closed', lateLogin && !reply.closed ? 'closeUser' : undefined);
      return { kind: 'reply', status: reply.status, headers: reply.headers, body: reply.body, cookie: { expire: true } };
    }
    if (reply.regenerate) await this.#regenerate(entry);
    else if (reply.userId !== undefined && entry.hasMemento) {
      // A sign-out must not come back with a crash: the stored record names the user now.
      await this.#rewriteRecord(entry, entry.id);
    }
    // After any regenerate, so the user's sessions are listed under their current IDs.
    if (reply.userId && this.#config.maxPerUser > 0) {
      void this.#limitUser(reply.userId, entry).catch((error) => {
        this.#log.error({ event: 'store-error', err: error }, 'cannot enforce sessions.maxPerUser');
      });
    }
    return { kind: 'reply', status: reply.status, headers: reply.headers, body: reply.body, cookie: this.#cookieFor(entry, presented, reply.regenerate === true) };
  }

  /**
   * The cookie of a reply. Closed meanwhile, or about to be (the admin view, a user-wide
   * close): expired, not renewed. Renamed by another request's regenerate since this one
   * presented its ID: none at all. Only the request that regenerated hands out the new ID (a
   * client still holding the old one, perhaps a fixated one, never learns it), and renewing
   * the old ID would overwrite the new cookie in the browser.
   */
  #cookieFor(entry: SessionEntry, presented: string, regenerated: boolean): CookieAction {
    if (entry.state === 'gone' || this.#ending.has(entry)) return { expire: true };
    if (entry.id !== presented && !regenerated) return null;
    return { set: entry.id };
  }

  /** Closes the oldest sessions of `userId` beyond `sessions.maxPerUser`; `keep` is never one of them. */
  async #limitUser(userId: string, keep: SessionEntry): Promise<void> {
    const sessions = await this.sessionsOfUser(userId);
    const excess = sessions.length - this.#config.maxPerUser;
    if (excess <= 0) return;
    const oldest = sessions.filter((session) => session.id !== keep.id).sort((a, b) => a.createdAt - b.createdAt);
    for (const session of oldest.slice(0, excess)) {
      this.#log.info({ event: 'user-limit', session: hashId(session.id), maxPerUser: this.#config.maxPerUser }, 'closing the oldest session of a user beyond sessions.maxPerUser');
      await this.closeSession(session.id, 'maxPerUser');
    }
  }

  /**
   * ctx.regenerate(): a new ID for the same context (RELIABILITY.md A5). The directory answers
   * to the new ID at once; the worker learns it through its channel ahead of any later task;
   * a record stored under the old ID (a checkpoint, or the memento it resumed from) moves to
   * the new one, under the gate, so no checkpoint or suspend interleaves.
   */
  async #regenerate(entry: SessionEntry): Promise<void> {
    if (entry.state === 'gone' || this.#ending.has(entry)) return; // closed meanwhile: its cookie is expired
    const previous = entry.id;
    const id = newSessionId();
    // Retired before anything is awaited: from here on the old ID is never adopted back from
    // a record that has not moved yet.
    this.#retire(previous);
    this.#renamed.set(previous, entry);
    this.directory.rename(entry, id);
    this.counters.regenerated++;
    this.#log.info({ event: 'regenerated', session: hashId(id), previous: hashId(previous) }, 'session ID regenerated');
    void this.#pool.run({ type: 'rename', sessionId: previous, newId: id }, entry).catch(() => {
      // The thread died: the context went with it, and worker loss resumes the session.
    });
    await this.#rewriteRecord(entry, previous);
  }

  /**
   * Rewrites the stored record of `entry` (found under `storedAs`) with its current ID and
   * userId, under the gate so no checkpoint or suspend interleaves: after a regenerate the
   * record moves to the new ID, and a change of user reaches the store at once.
   */
  async #rewriteRecord(entry: SessionEntry, storedAs: string): Promise<void> {
    const previous = entry.gate;
    const moving = storedAs !== entry.id;
    // Bounded like any store call on a request's path (E6): a store that hangs costs this
    // response at most the deadline, and the context stays live whatever happens.
    await this.#setGate(
      entry,
      (async () => {
        if (previous) await previous.catch(() => {});
        // A checkpoint that started under the old ID may still be writing it.
        await this.#checkpointing.get(entry);
        try {
          if (entry.state !== 'gone' && (entry.hasMemento || moving)) {
            const record = await this.#read(storedAs);
            // A suspend that ran meanwhile may have saved a newer memento under the new ID.
            const newer = moving && record ? await this.#read(entry.id) : undefined;
            if (record && !newer) await bounded(this.#store.set({ ...record, id: entry.id, userId: entry.userId }), 'the store write');
          }
        } catch (error) {
          this.#log.error({ event: 'store-error', session: hashId(entry.id), err: error }, 'cannot update the stored session record');
          // The context is live and will be saved again; a record it cannot vouch for is dropped.
          if (moving) entry.hasMemento = false;
        }
        if (moving) {
          await this.#deleteRetired(storedAs, entry);
          this.#renamed.delete(storedAs);
        }
      })(),
    );
  }

  /** Deletes the record of a retired ID; the ID stays retired if the store refuses. */
  async #deleteRetired(id: string, entry: SessionEntry): Promise<void> {
    try {
      await bounded(this.#store.delete(id), 'the store delete');
      await this.#releaseRetired(id);
    } catch (error) {
      this.#log.error({ event: 'store-error', session: hashId(entry.id), err: error }, 'cannot delete the record of a retired session ID; it is refused until it expires');
    }
  }

  async #restart(request: WireRequest, clientIp: string, attempt: number): Promise<Outcome> {
    if (attempt > 1) return { kind: 'error', error: new ResidentError('RESIDENT_ERR_WORKER_LOST'), cookie: null };
    const created = this.#create(clientIp);
    if (created instanceof ResidentError) return { kind: 'error', error: created, cookie: null };
    return this.#run(created, request, clientIp, attempt + 1);
  }

  #asRequestError(entry: SessionEntry, error: unknown): ResidentError {
    if (isResidentError(error)) return error;
    // piscina rejects the tasks of a thread that died (F2): each settles here, once.
    this.#log.error({ event: 'worker-lost', session: hashId(entry.id), err: error }, 'request lost with its worker thread');
    return new ResidentError('RESIDENT_ERR_WORKER_LOST', undefined, { cause: error });
  }

  async #resume(entry: SessionEntry): Promise<void> {
    let record = this.#adopted.get(entry.id);
    this.#adopted.delete(entry.id);
    try {
      record ??= await this.#read(entry.id);
    } catch (error) {
      this.#log.error({ event: 'store-error', session: hashId(entry.id), err: error }, 'cannot read the suspended session');
      throw new ResidentError('RESIDENT_ERR_STORE_FAILED', undefined, { cause: error });
    }
    const room = this.#makeRoom();
    if (room) throw room;
    let resumed = true;
    if (!record?.memento && entry.hasMemento) {
      // The store lost what it acknowledged (E8): start afresh rather than pretend.
      this.#log.warn({ event: 'memento-missing', session: hashId(entry.id) }, 'the store has no memento for this suspended session: starting a fresh context');
      resumed = false;
      entry.hasMemento = false;
    }
    entry.init = this.#init(entry, resumed, record?.memento ? record : undefined);
    this.directory.addLive(entry);
    this.counters.resumed++;
    this.#log.info({ event: 'resumed', session: hashId(entry.id), memento: entry.init.saved !== null }, 'session resumed');
  }

  /** A stored memento the worker could not read: set aside, never served again (E11). */
  async #quarantine(entry: SessionEntry, error: WireError): Promise<void> {
    this.counters.corruptMementos++;
    entry.hasMemento = false;
    this.#log.error(
      { event: 'memento-corrupt', session: hashId(entry.id), code: error.code, err: { message: error.message } },
      'a stored memento cannot be read: quarantined; the client got a fresh context',
    );
    await this.#store.quarantine(entry.id, error.message).catch((failure) => {
      this.#log.error({ event: 'store-error', session: hashId(entry.id), err: failure }, 'cannot quarantine the memento');
    });
  }

  /** Runs `work` as the entry's gate; the gate clears before any waiter runs. */
  #setGate(entry: SessionEntry, work: Promise<void>): Promise<void> {
    entry.gate = work;
    work.then(
      () => entry.gate === work && (entry.gate = null),
      () => entry.gate === work && (entry.gate = null),
    );
    return work;
  }

  #startSuspend(entry: SessionEntry, reason: SuspendingReason): Promise<void> {
    this.directory.markSuspending(entry);
    return this.#setGate(entry, this.#suspend(entry, reason));
  }

  #record(entry: SessionEntry, memento: string | null): SessionRecord {
    const now = Date.now();
    const lastActivityAt = now - Math.max(0, this.#clock.now() - entry.lastActive);
    const idleEnd = this.#sessionLimit === Infinity ? Infinity : lastActivityAt + this.#sessionLimit;
    const lifeEnd = this.#lifetimeLimit === Infinity ? Infinity : entry.createdAt + this.#lifetimeLimit;
    const expiresAt = Math.min(idleEnd, lifeEnd);
    return {
      id: entry.id,
      userId: entry.userId,
      memento,
      mementoVersion: this.#config.mementoVersion,
      clientIp: entry.clientIp,
      createdAt: entry.createdAt,
      updatedAt: now,
      lastActivityAt,
      expiresAt: expiresAt === Infinity ? null : expiresAt,
      // One node owns every session until the cluster's ownership claims them (issue 14).
      owner: null,
      fence: 0,
    };
  }

  /** Never rejects: the outcome is the entry's new state. */
  async #suspend(entry: SessionEntry, reason: SuspendingReason): Promise<void> {
    let reply: WorkerReply;
    try {
      reply = await this.#pool.run({ type: 'suspend', sessionId: entry.id, reason }, entry);
    } catch {
      reply = { type: 'gone' };
    }
    if (reply.type === 'gone') {
      if (entry.state === 'suspending') this.#lose(entry);
      return;
    }
    if (reply.type === 'suspend-failed') {
      await this.#suspendFailed(entry, reason, reply.error);
      return;
    }
    if (reply.type !== 'suspended') return;
    try {
      await this.#store.set(this.#record(entry, reply.memento));
    } catch (error) {
      // The context is still on its worker: refused writes keep it live (E4), loudly.
      await this.#suspendFailed(entry, reason, { code: 'RESIDENT_ERR_STORE_FAILED', message: (error as Error).message }, 'store');
      return;
    }
    entry.hasMemento = true;
    entry.mementoBytes = Buffer.byteLength(reply.memento);
    await this.#discard(entry);
    this.directory.markSuspended(entry);
    this.counters.suspended[reason]++;
    this.#log.info({ event: 'suspended', session: hashId(entry.id), reason }, 'session suspended');
  }

  /** Runs inside the entry's gate: no request proceeds until the outcome is settled. */
  async #suspendFailed(entry: SessionEntry, reason: SuspendingReason, error: WireError, failed: 'hook' | 'store' = 'hook'): Promise<void> {
    this.counters.suspended.failed++;
    // Not silently discarded (H1): the context stays live and the idle sweep tries again. So
    // does an eviction the store refused (E4, E7): the cap is exceeded until the store takes
    // writes again, rather than a memento lost. Only a hook that fails a forced suspend
    // (shutdown, cap) loses the context.
    if (reason === 'idle' || reason === 'admin' || (reason === 'evicted' && failed === 'store')) {
      this.#logHookError(entry, `onSessionSuspend(ctx, '${reason}')`, error, 'the context stays live; retrying later');
      entry.retryAt = this.#clock.now() + SUSPEND_RETRY_MS;
      this.directory.markLiveAgain(entry);
      return;
    }
    // A forced suspend cannot keep the context: the loss is logged and counted.
    this.counters.lostSuspends++;
    this.#logHookError(entry, `onSessionSuspend(ctx, '${reason}')`, error, 'memento lost: the session resumes from its previous memento, if any');
    // The old context must be gone, and its home forgotten, before a waiting request resumes
    // the session into a new one.
    await this.#discard(entry);
    this.directory.markSuspended(entry);
  }

  async #discard(entry: SessionEntry): Promise<void> {
    try {
      await this.#pool.run({ type: 'discard', sessionId: entry.id }, entry);
    } catch {
      // The thread died: the context went with it.
    }
    this.#pool.release(entry);
  }

  /** The context vanished with its worker: the session falls back to its last memento. */
  #lose(entry: SessionEntry): void {
    this.#pool.release(entry);
    this.directory.markSuspended(entry);
  }

  /**
   * Ends a session through its gate: a live context gets onSessionSuspend(ctx, reason) (its
   * memento is discarded) and leaves its worker; then the ID is dead.
   */
  #finish(entry: SessionEntry, reason: 'expired' | 'closed', by?: string): Promise<void> {
    const previous = entry.gate;
    // Retired before anything is awaited: from here on no request adopts this ID from a
    // record that is still in the store (A4).
    if (entry.state !== 'gone') this.#retire(entry.id);
    this.#ending.add(entry);
    return this.#setGate(
      entry,
      (async () => {
        if (previous) await previous.catch(() => {});
        if (entry.state === 'gone') {
          this.#ending.delete(entry);
          return;
        }
        if (entry.state === 'live') {
          const reply = await this.#pool.run({ type: 'suspend', sessionId: entry.id, reason }, entry).catch(() => undefined);
          if (reply?.type === 'suspend-failed') this.#logHookError(entry, `onSessionSuspend(ctx, '${reason}')`, reply.error);
          await this.#discard(entry);
          this.counters.suspended[reason]++;
        }
        await this.#endDurably(entry, reason, by);
      })(),
    );
  }

  /**
   * Closed or expired: the ID is dead and its record deleted. The ID stays retired until the
   * delete has landed after any checkpoint write still under way, and no adoption read that
   * began before it is pending; if the store refuses the delete, it stays retired for good
   * (the store sweep removes the record once it expires).
   */
  #end(entry: SessionEntry, why: 'closed' | 'expired', by?: string): Promise<void> {
    const { id } = entry;
    this.#retire(id);
    this.#ending.delete(entry);
    this.directory.remove(entry);
    this.#adopted.delete(id);
    this.#pool.release(entry);
    this.counters[why]++;
    this.#log.info({ event: why, session: hashId(id), ...(by && { by }) }, `session ${why}`);
    const checkpoint = this.#checkpointing.get(entry);
    const deleting = (async () => {
      try {
        await checkpoint;
        await this.#store.delete(id);
      } catch (error) {
        this.#log.error({ event: 'store-error', session: hashId(id), err: error }, 'cannot delete the session record; its ID stays refused');
        return;
      }
      await this.#releaseRetired(id);
    })();
    this.#deleting.add(deleting);
    void deleting.finally(() => this.#deleting.delete(deleting));
    return deleting;
  }

  /**
   * An end that is acknowledged (a close's response, closeSession resolving) waits for the
   * record's delete, so a crash or restart right after cannot bring the session back; a store
   * that hangs delays it at most STORE_READ_TIMEOUT_MS (the ID stays refused meanwhile).
   */
  #endDurably(entry: SessionEntry, why: 'closed' | 'expired', by?: string): Promise<void> {
    return bounded(this.#end(entry, why, by), 'the store delete').catch(() => undefined);
  }

  /** From now on `id` is never adopted from the store, whatever record it still holds. */
  #retire(id: string): void {
    this.#retired.add(id);
  }

  /**
   * Forgets a retired ID once its record is gone: after any adoption read of it that began
   * earlier has settled (that read may have seen the record, and finds the ID retired).
   */
  async #releaseRetired(id: string): Promise<void> {
    await this.#adopting.get(id)?.catch(() => undefined);
    this.#retired.delete(id);
  }

  #expiresAt(entry: SessionEntry): number | null {
    const idleEnd = this.#sessionLimit === Infinity ? Infinity : Date.now() + this.#sessionLimit;
    const lifeEnd = this.#lifetimeLimit === Infinity ? Infinity : entry.createdAt + this.#lifetimeLimit;
    const end = Math.min(idleEnd, lifeEnd);
    return end === Infinity ? null : end;
  }

  /** Suspends idle contexts and forgets expired sessions. Runs every 250 ms. */
  sweep(): void {
    if (this.#closing) return;
    const now = this.#clock.now();
    for (const [userId, closedAt] of this.#usersClosedAt) {
      // No request admitted before that close can still be answered.
      if (this.#inFlight === 0 || now - closedAt > USER_CLOSE_MEMORY_MS) this.#usersClosedAt.delete(userId);
    }
    if (this.#idleLimit !== Infinity) {
      let budget = this.directory.live.size;
      for (const entry of this.directory.live.values()) {
        // Entries are in orderedAt order: past the first one placed too recently, none is idle.
        if (budget-- <= 0 || now - entry.orderedAt < this.#idleLimit) break;
        if (now - entry.lastActive < this.#idleLimit) continue;
        if (entry.state !== 'live' || entry.inFlight > 0 || entry.gate) continue;
        if (entry.retryAt > now) {
          if (now - entry.lastActive >= this.#sessionLimit) this.#expireLive(entry);
          continue;
        }
        void this.#startSuspend(entry, 'idle');
      }
    }
    if (this.#sessionLimit !== Infinity) {
      const idle = (entry: SessionEntry) => !entry.gate && entry.inFlight === 0;
      for (const entry of this.directory.takeExpired(now, this.#sessionLimit, idle)) this.#end(entry, 'expired');
    }
  }

  /** A context whose suspend keeps failing still cannot outlive its cookie. */
  #expireLive(entry: SessionEntry): void {
    this.counters.lostSuspends++;
    this.#log.error({ event: 'expired', session: hashId(entry.id) }, 'cookie expired while onSessionSuspend kept failing: context dropped');
    const route = { workerId: entry.workerId };
    this.#end(entry, 'expired');
    void this.#pool.run({ type: 'discard', sessionId: entry.id }, route).catch(() => {});
  }

  /**
   * Removes expired records this process does not know (left from before a restart). Sessions
   * it knows expire on the monotonic clock in sweep() instead.
   */
  async sweepStore(): Promise<number> {
    let removed = 0;
    try {
      // Batch after batch until one comes back short: after a long downtime the backlog goes
      // in one sweep, not one batch per interval.
      for (;;) {
        const ids = await this.#store.expiredIds(Date.now(), EXPIRED_BATCH);
        const stale = ids.filter((id) => !this.directory.get(id));
        await Promise.all(stale.map((id) => this.#store.delete(id)));
        // A retired ID whose record could not be deleted at the time is gone for good now.
        for (const id of stale) this.#retired.delete(id);
        removed += stale.length;
        if (ids.length < EXPIRED_BATCH || stale.length === 0) break;
      }
    } catch (error) {
      this.#log.error({ event: 'store-error', err: error }, 'the store sweep failed; it will run again');
    }
    if (removed > 0) this.#log.info({ event: 'store-sweep', removed }, 'expired session records removed');
    return removed;
  }

  /**
   * Saves a memento of every context that handled a request since its last checkpoint, while
   * it stays live, so a crash loses at most one interval (`sessions.checkpointInterval`).
   */
  checkpoint(): void {
    if (this.#closing) return;
    for (const entry of this.directory.live.values()) {
      if (!entry.dirty || entry.state !== 'live' || entry.gate || this.#checkpointing.has(entry)) continue;
      entry.dirty = false;
      const saving = this.#checkpointOne(entry).finally(() => this.#checkpointing.delete(entry));
      this.#checkpointing.set(entry, saving);
    }
  }

  async #checkpointOne(entry: SessionEntry): Promise<void> {
    let reply: WorkerReply | undefined;
    try {
      reply = await this.#pool.run({ type: 'suspend', sessionId: entry.id, reason: 'checkpoint' }, entry);
    } catch {
      return; // the thread died; worker loss handles the session
    }
    if (reply.type === 'suspend-failed') {
      entry.dirty = true;
      this.#logHookError(entry, "onSessionSuspend(ctx, 'checkpoint')", reply.error, 'no checkpoint this time');
      return;
    }
    // A context closed or suspended meanwhile has had its last word: its record is not revived.
    if (reply.type !== 'suspended' || entry.state !== 'live' || this.#ending.has(entry)) return;
    try {
      await this.#store.set(this.#record(entry, reply.memento));
      entry.hasMemento = true;
      entry.mementoBytes = Buffer.byteLength(reply.memento);
      this.counters.checkpoints++;
    } catch (error) {
      entry.dirty = true;
      this.#log.error({ event: 'store-error', session: hashId(entry.id), err: error }, 'checkpoint not saved; will try again');
    }
  }

  /** What the admin view shows of a session this process knows. */
  info(entry: SessionEntry): SessionInfo {
    return {
      id: entry.id,
      userId: entry.userId,
      clientIp: entry.clientIp,
      state: entry.state === 'gone' ? 'suspended' : entry.state,
      createdAt: entry.createdAt,
      lastActivityAt: Date.now() - Math.max(0, this.#clock.now() - entry.lastActive),
      workerId: entry.workerId,
      requests: entry.requests,
      mementoBytes: entry.mementoBytes,
    };
  }

  /**
   * Every session of `userId`, live or suspended: those this process knows, and those only the
   * store holds (suspended before a restart).
   */
  async sessionsOfUser(userId: string): Promise<SessionInfo[]> {
    const found = new Map<string, SessionInfo>();
    for (const entry of this.directory.ofUser(userId)) found.set(entry.id, this.info(entry));
    for await (const summary of this.#storedOfUser(userId)) {
      // The directory is the newer word on a session it knows (its userId may have changed).
      if (found.has(summary.id) || this.directory.get(summary.id)) continue;
      found.set(summary.id, storedInfo(summary));
    }
    return [...found.values()];
  }

  async *#storedOfUser(userId: string) {
    let after: string | undefined;
    for (;;) {
      const page = await this.#store.list({ userId, after, limit: USER_PAGE });
      yield* page;
      if (page.length < USER_PAGE) return;
      after = page[page.length - 1]!.id;
    }
  }

  /**
   * Closes every session of `userId` (after a password change, or from the admin view): a live
   * context gets onSessionSuspend(ctx, 'closed') and leaves memory; every record is deleted.
   * Resolves with how many sessions were closed.
   */
  async closeUser(userId: string, options: { except?: SessionEntry; by?: string } = {}): Promise<number> {
    const { except } = options;
    // "Sign out everywhere else" from a session that is itself being closed (the same button
    // pressed in two sessions at once) stops: one of them stays signed in.
    const exceptEnded = () => except !== undefined && (except.state === 'gone' || this.#ending.has(except));
    if (exceptEnded()) return 0;
    if (!except) this.#usersClosedAt.set(userId, this.#clock.now());
    let closed = 0;
    // A record the store still lists while the delete of a session just closed is under way
    // is not that session closed twice.
    const seen = new Set<string>();
    const close = async (id: string) => {
      if (seen.has(id) || id === except?.id || exceptEnded()) return;
      seen.add(id);
      if (await this.closeSession(id, options.by ?? 'admin')) closed++;
    };
    // Those in memory first: a store that cannot be listed must not keep them open.
    for (const entry of [...this.directory.ofUser(userId)]) await close(entry.id);
    try {
      for await (const summary of this.#storedOfUser(userId)) await close(summary.id);
    } catch (error) {
      throw new ResidentError('RESIDENT_ERR_STORE_FAILED', `closed ${closed} session(s) of the user held in memory, but the store could not list the others`, { cause: error });
    }
    return closed;
  }

  /**
   * Closes one session by ID, live or suspended, known to this process or only to the store.
   * Resolves false when there is no such session.
   */
  async closeSession(id: string, by: string): Promise<boolean> {
    // A request may be adopting it from the store right now: then it is closed as a known one.
    // An old ID of a regenerate whose record is still moving names the session under its new ID.
    const entry =
      this.directory.get(id) ?? this.#renamed.get(id) ?? (await this.#adopting.get(id)?.catch(() => undefined)) ?? this.directory.get(id);
    if (!entry) return this.#closeStored(id, by);
    if (entry.state === 'gone') return false;
    if (entry.state === 'suspended' && !entry.gate) {
      await this.#endDurably(entry, 'closed', by);
      return true;
    }
    // Live, or a suspend or resume under way: through the gate, after whatever runs now.
    await this.#finish(entry, 'closed', by);
    return true;
  }

  /** Closes a session only the store holds; retired meanwhile, so no request adopts it back. */
  async #closeStored(id: string, by: string): Promise<boolean> {
    const retiredBefore = this.#retired.has(id);
    this.#retire(id);
    // A failure leaves the ID retired: the close was asked for, and may have half happened.
    const existed = (await this.#store.existing([id])).has(id);
    if (existed) await this.#store.delete(id);
    if (!retiredBefore) await this.#releaseRetired(id);
    if (!existed) return false;
    this.counters.closed++;
    this.#log.info({ event: 'closed', session: hashId(id), by }, 'session closed');
    return true;
  }

  /**
   * Suspends one live context now (the admin view), as an idle one would be. Resolves with the
   * outcome: 'busy' while it has a request in flight or a suspend or resume under way.
   */
  async suspendSession(id: string): Promise<'suspended' | 'busy' | 'not-live' | 'failed'> {
    const entry = this.directory.get(id);
    if (!entry || entry.state === 'suspended' || entry.state === 'gone') return 'not-live';
    if (entry.inFlight > 0 || entry.gate || entry.state !== 'live') return 'busy';
    await this.#startSuspend(entry, 'admin');
    return (entry.state as SessionEntry['state']) === 'suspended' ? 'suspended' : 'failed';
  }

  /** Every context on a dead thread is lost; their sessions resume on their next request. */
  workerGone(workerId: number): void {
    this.counters.workersLost++;
    let lost = 0;
    for (const entry of [...this.directory.live.values()]) {
      if (entry.workerId !== workerId) continue;
      lost++;
      if (entry.state === 'live') this.#lose(entry);
      else this.#pool.release(entry);
    }
    this.#log.error({ event: 'worker-lost', threadId: workerId, contexts: lost }, 'a worker thread stopped; its sessions will resume from their mementos');
  }

  workerEvent(event: WorkerEvent): void {
    this.#log[event.level]({ event: 'worker', err: event.error }, event.msg);
  }

  #logHookError(entry: SessionEntry, hook: string, error: WireError, outcome?: string): void {
    this.#log.error(
      { event: 'hook-error', hook, session: hashId(entry.id), code: error.code, err: { message: error.message, stack: error.stack } },
      outcome ? `${hook} failed: ${outcome}` : `${hook} failed`,
    );
  }

  async #serveEphemeral(clientIp: string, request: WireRequest): Promise<Outcome> {
    const id = newSessionId();
    const init = { resumed: false, saved: null, savedVersion: null, userId: null, clientIp, createdAt: Date.now() };
    try {
      const reply = await this.#pool.run(
        { type: 'request', sessionId: id, ephemeral: true, init, expiresAt: null, request },
        null,
        request.body ?? undefined,
      );
      if (reply.type !== 'response') throw new Error(`unexpected worker reply ${reply.type}`);
      if (reply.error) this.#log.error({ event: 'hook-error', hook: 'onConnection', code: reply.error.code, err: reply.error }, 'onConnection failed');
      return { kind: 'reply', status: reply.status, headers: reply.headers, body: reply.body, cookie: null };
    } catch (error) {
      return { kind: 'error', error: isResidentError(error) ? error : new ResidentError('RESIDENT_ERR_WORKER_LOST', undefined, { cause: error }), cookie: null };
    }
  }

  /** Resolves when no request is in flight, or after `timeoutMs` (Infinity: only then). */
  #drained(timeoutMs: number): Promise<void> {
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

  /**
   * Suspends every live context with reason 'shutdown', until none is left or `until.stopped`.
   * A suspend or resume already under way is waited for first; whatever it leaves live (an idle
   * suspend that failed, a resume that completed) is suspended in the next round. A context
   * with a request in flight is suspended as soon as that request is answered (its hook
   * returned: a body still streaming does not hold it).
   */
  async #suspendAll(until: { stopped: boolean }): Promise<void> {
    while (!until.stopped) {
      const pending: Promise<void>[] = [];
      let busy = false;
      for (const entry of [...this.directory.live.values()]) {
        if (entry.gate) pending.push(entry.gate.catch(() => undefined));
        else if (entry.state !== 'live') continue;
        else if (entry.inFlight > 0) busy = true;
        else pending.push(this.#startSuspend(entry, 'shutdown'));
      }
      if (pending.length > 0) await Promise.all(pending);
      // Nothing to suspend but busy contexts: look again when a request is answered.
      else if (busy) await this.#drained(50);
      else return;
    }
  }

  /**
   * Graceful shutdown within `deadlineMs` (0: no deadline). Requests in flight get at most half
   * of it, so the other half is kept for the suspends however long a hook takes (issue 9); then
   * every context without a request in flight is suspended with reason 'shutdown', and a busy
   * one as soon as its request is answered. At the deadline the worker threads are stopped:
   * a suspend still under way then lands (its memento was in hand) or ends with its thread,
   * and `lost` counts exactly the contexts whose memento was not saved. Call it once.
   */
  async shutdown(deadlineMs: number): Promise<{ suspended: number; lost: number }> {
    this.#closing = true;
    for (const timer of this.#timers) clearInterval(timer);
    const deadline = deadlineMs > 0 ? Date.now() + deadlineMs : Infinity;
    await this.#drained(deadlineMs > 0 ? deadlineMs / 2 : Infinity);
    const before = { lost: this.counters.lostSuspends, done: this.counters.suspended.shutdown };
    const until = { stopped: false };
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.#suspendAll(until).then(() => false),
      new Promise<boolean>((resolve) => {
        if (deadline !== Infinity) timer = setTimeout(() => resolve(true), Math.max(0, deadline - Date.now()));
      }),
    ]);
    clearTimeout(timer);
    until.stopped = true;
    let lost = this.counters.lostSuspends - before.lost;
    if (timedOut) {
      // Not saved by the deadline: contexts still busy, and suspends under way (a slow hook).
      const stuck = [...this.directory.live.values()];
      const { suspended } = this.counters;
      const saved = () => suspended.idle + suspended.evicted + suspended.admin + suspended.shutdown;
      const savedBefore = saved();
      await this.#pool.close();
      await Promise.all(stuck.map((entry) => entry.gate?.catch(() => undefined)));
      const unsaved = Math.max(0, stuck.length - (saved() - savedBefore));
      lost += unsaved;
      this.#log.error({ event: 'shutdown-timeout', contexts: unsaved }, 'shutdown deadline passed before every context was suspended');
    }
    // Records of sessions that ended are deleted before the store closes: a close a client
    // was told about must not come back after the restart.
    await bounded(Promise.all(this.#deleting), 'the store deletes').catch(() => undefined);
    return { suspended: this.counters.suspended.shutdown - before.done, lost };
  }
}
