/**
 * Users and identities: ctx.regenerate() (a new ID for the same context), the sessions of a
 * user (`ctx.userId`), `sessions.maxPerUser`, and closing sessions one by one or all of a
 * user's at once (a password change, the admin view, ctx.closeOtherSessions()).
 */
import { ResidentError } from '../errors.ts';
import { hashId } from '../id-hash.ts';
import { newSessionId } from '../contexts/ids.ts';
import { SerialQueue } from '../contexts/serial-queue.ts';
import type { SessionEntry } from './directory.ts';
import { entryInfo, storedInfo, type SessionInfo } from './info.ts';
import { rewriteRecord } from './records.ts';
import type { Rooms } from './rooms.ts';

/** How long a closeUser is remembered for sign-ins under way at the time (see #usersClosedAt). */
const USER_CLOSE_MEMORY_MS = 3_600_000;
/** Records read per store listing when collecting a user's sessions. */
const USER_PAGE = 1_000;

export class Users {
  readonly #rooms: Rooms;
  /**
   * Old IDs of a regenerate whose record is still moving, to the session they now name: an
   * admin close by the old handle closes the session, not just the record in transit.
   */
  readonly #renamed = new Map<string, SessionEntry>();
  /** The maxPerUser judgements this home makes, one at a time. */
  readonly #limits = new SerialQueue();
  /**
   * The user-wide closes of each user (monotonic time, and the session a "sign out everywhere
   * else" spared): a login under way then (its userId reaches this thread with its reply) is
   * closed on arrival, so neither "close all" nor "everywhere else" can miss it. Entries go
   * once no request admitted before them can still be answered.
   */
  readonly #usersClosedAt = new Map<string, Array<{ at: number; except: SessionEntry | undefined }>>();
  /**
   * Sessions whose "sign out everywhere else" is under way here (the `except` of a closeUser).
   * Two of them pressed at once on two homes each ask the other's home to close the other:
   * each home spares its own presser only when that one's ID sorts first, so exactly one of
   * the two stays signed in, as when both are on one home (see closeUser).
   */
  readonly #pressing = new Set<SessionEntry>();

  constructor(rooms: Rooms) {
    this.#rooms = rooms;
  }

  /** Whether the sessions of `userId`, `entry` among them, were closed after monotonic time `admittedAt`. */
  closedSince(userId: string, admittedAt: number, entry: SessionEntry): boolean {
    return this.#usersClosedAt.get(userId)?.some((close) => close.at >= admittedAt && close.except !== entry) ?? false;
  }

  /** Forgets user-wide closes no request admitted before them can still be answered after. */
  forgetOldCloses(now: number, requestsInFlight: number): void {
    for (const [userId, closes] of this.#usersClosedAt) {
      const kept = requestsInFlight === 0 ? [] : closes.filter((close) => now - close.at <= USER_CLOSE_MEMORY_MS);
      if (kept.length === 0) this.#usersClosedAt.delete(userId);
      else this.#usersClosedAt.set(userId, kept);
    }
  }

  /**
   * ctx.regenerate(): a new ID for the same context (RELIABILITY.md A5). The directory answers
   * to the new ID at once; the context runtime learns it ahead of any later task;
   * a record stored under the old ID (a checkpoint, or the memento it resumed from) moves to
   * the new one, under the gate, so no checkpoint or suspend interleaves.
   */
  async regenerate(entry: SessionEntry): Promise<void> {
    const { admission, directory, counters, log, host } = this.#rooms;
    if (entry.state === 'gone' || entry.ending) return; // closed meanwhile: its cookie is expired
    const previous = entry.id;
    const id = newSessionId();
    // Retired before anything is awaited: from here on the old ID is never adopted back from
    // a record that has not moved yet.
    admission.retire(previous);
    this.#renamed.set(previous, entry);
    directory.rename(entry, id);
    counters.regenerated++;
    log.info({ event: 'regenerated', session: hashId(id), previous: hashId(previous) }, 'session ID regenerated');
    void host.run({ type: 'rename', sessionId: previous, newId: id }, entry.workerId).catch(() => {
      // The thread died: the context went with it, and worker loss resumes the session.
    });
    await rewriteRecord(this.#rooms, entry, previous, () => this.#renamed.delete(previous));
  }

  /**
   * Closes the oldest sessions of `userId` beyond `sessions.maxPerUser`; `keepId` (the session
   * that just signed in) is never one of them. Judged by the user's home for the limit
   * (./peers.ts, userLimitHome), one sign-in after another.
   */
  limitUser(userId: string, keepId: string): Promise<void> {
    const home = this.#rooms.peers.userLimitHome(userId);
    if (home !== null) return this.#rooms.peers.limitUserAt(home, userId, keepId);
    return this.limitUserHere(userId, keepId);
  }

  /** `limitUser`, on the home that judges `userId`: one judgement at a time. */
  limitUserHere(userId: string, keepId: string): Promise<void> {
    return this.#limits.run(() => this.#rooms.ownership.serialized(userId, () => this.#limit(userId, keepId)));
  }

  async #limit(userId: string, keepId: string): Promise<void> {
    const { config, log } = this.#rooms;
    const sessions = await this.sessionsOf(userId);
    const excess = sessions.length - config.maxPerUser;
    if (excess <= 0) return;
    const oldest = sessions.filter((session) => session.id !== keepId).sort((a, b) => a.createdAt - b.createdAt);
    for (const session of oldest.slice(0, excess)) {
      log.info({ event: 'user-limit', session: hashId(session.id), maxPerUser: config.maxPerUser }, 'closing the oldest session of a user beyond sessions.maxPerUser');
      await this.closeSession(session.id, 'maxPerUser');
    }
  }

  /**
   * Every session of `userId`, live or suspended: those this process knows, and those only the
   * store holds (suspended before a restart).
   */
  async sessionsOf(userId: string): Promise<SessionInfo[]> {
    const { directory } = this.#rooms;
    const found = new Map<string, SessionInfo>();
    for (const entry of directory.ofUser(userId)) found.set(entry.id, entryInfo(entry, this.#rooms.clock.now(), this.#rooms.policy.lastActivityAt(entry)));
    // The other homes' word on theirs is newer than any record in the store.
    for (const info of await this.#rooms.peers.sessionsOfUser(userId)) if (!found.has(info.id)) found.set(info.id, info);
    for await (const summary of this.#storedOf(userId)) {
      // The directory is the newer word on a session it knows (its userId may have changed).
      if (found.has(summary.id) || directory.get(summary.id)) continue;
      found.set(summary.id, storedInfo(summary));
    }
    return [...found.values()];
  }

  async *#storedOf(userId: string) {
    let after: string | undefined;
    for (;;) {
      const page = await this.#rooms.store.list({ userId, after, limit: USER_PAGE });
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
  async closeUser(
    userId: string,
    options: { except?: SessionEntry; by?: string; homeOnly?: boolean; closedIds?: string[]; requester?: string } = {},
  ): Promise<number> {
    const { except } = options;
    if (except === undefined) return this.#closeUser(userId, options);
    this.#pressing.add(except);
    try {
      return await this.#closeUser(userId, options);
    } finally {
      this.#pressing.delete(except);
    }
  }

  async #closeUser(
    userId: string,
    options: { except?: SessionEntry; by?: string; homeOnly?: boolean; closedIds?: string[]; requester?: string },
  ): Promise<number> {
    const { except, requester } = options;
    // "Sign out everywhere else" from a session that is itself being closed (the same button
    // pressed in two sessions at once) stops: one of them stays signed in.
    const exceptEnded = () => except !== undefined && (except.state === 'gone' || except.ending);
    if (exceptEnded()) return 0;
    // A sign-in under way now is closed when its reply arrives, whoever asked ("everywhere
    // else" after a password change must not miss the old password's sign-in either).
    const closes = this.#usersClosedAt.get(userId) ?? [];
    closes.push({ at: this.#rooms.clock.now(), except });
    this.#usersClosedAt.set(userId, closes);
    let closed = 0;
    // A record the store still lists while the delete of a session just closed is under way
    // is not that session closed twice.
    const seen = new Set<string>();
    const close = async (id: string) => {
      if (seen.has(id) || id === except?.id || exceptEnded()) return;
      seen.add(id);
      // The presser's ID goes along, also to a session found in the store but homed elsewhere.
      if (await this.closeSession(id, options.by ?? 'admin', requester ?? except?.id)) {
        closed++;
        options.closedIds?.push(id);
      }
    };
    // Those in memory first: a store that cannot be listed must not keep them open.
    for (const entry of this.#rooms.directory.ofUser(userId)) await close(entry.id);
    // Another home asked for this home's part; it walks the store itself.
    if (options.homeOnly) return closed;
    for (const id of await this.#rooms.peers.closeUserElsewhere(userId, options.by ?? 'admin', except?.id)) {
      seen.add(id);
      closed++;
    }
    try {
      for await (const summary of this.#storedOf(userId)) await close(summary.id);
    } catch (error) {
      throw new ResidentError('RESIDENT_ERR_STORE_FAILED', `closed ${closed} session(s) of the user held in memory, but the store could not list the others`, { cause: error });
    }
    return closed;
  }

  /**
   * Closes one session by ID, live or suspended, known to this process or only to the store.
   * Resolves false when there is no such session.
   */
  /**
   * `requester`: the session whose "sign out everywhere else" closes this one. When this one's
   * own is under way too (both pressed at once, perhaps on two homes), the first ID in sort
   * order stays: every home decides alike, so exactly one of the two stays signed in, whether
   * the other reaches it live, through its home or from the store walk.
   */
  async closeSession(id: string, by: string, requester?: string): Promise<boolean> {
    const { directory, admission, endings, peers } = this.#rooms;
    // Only its home may end it: a record read here would be a second context of one session.
    if (!peers.isLocal(id)) return peers.closeSession(id, by, requester);
    // A request may be adopting it from the store right now: then it is closed as a known one.
    // An old ID of a regenerate whose record is still moving names the session under its new ID.
    const entry =
      directory.get(id) ?? this.#renamed.get(id) ?? (await admission.adoptionOf(id)?.catch(() => undefined)) ?? directory.get(id);
    if (!entry) return endings.closeStored(id, by);
    if (entry.state === 'gone') return false;
    if (requester !== undefined && this.#pressing.has(entry) && entry.id < requester) return false;
    if (entry.state === 'suspended' && !entry.gate) {
      await endings.endDurably(entry, 'closed', by);
      return true;
    }
    // Live, or a suspend or resume under way: through the gate, after whatever runs now.
    await endings.finish(entry, 'closed', by);
    return true;
  }
}
