/**
 * Admission: which session a request belongs to. The presented IDs, the IP check, adoption of
 * a session the store holds but this process does not know (it was suspended before a
 * restart), and the creation of a new one. Dead IDs (closed, expired, or the old ID of a
 * regenerate) are retired here, so no request brings them back from a record still stored.
 */
import { ResidentError } from '../errors.ts';
import { hashId } from '../id-hash.ts';
import type { SessionRecord } from '../stores/store.ts';
import { bounded } from './bounded.ts';
import { newEntry, type SessionEntry } from './directory.ts';
import { ElsewhereSignal, claimAndRead } from './ownership.ts';
import { elsewhereOutcome, errorOutcome, type Outcome } from './outcome.ts';
import { FirstPerWindow } from './first-per-window.ts';
import { createSession } from './creation.ts';
import type { Rooms } from './rooms.ts';

export interface Found {
  /** The session of this client. */
  entry?: SessionEntry;
  /** A session the cookie named that is bound to another client (answered 400). */
  foreign?: SessionEntry;
}

export class Admission {
  readonly #rooms: Rooms;
  /** Store lookups under way, so two requests with one unknown ID adopt it once. */
  readonly #adopting = new Map<string, Promise<SessionEntry | undefined>>();
  /** Records read to adopt a session, kept for the resume that follows, so the store is read once. */
  readonly #adopted = new Map<string, SessionRecord>();
  /**
   * Dead IDs whose record the store may still hold: the old ID of a regenerate until its record
   * is moved, a store-only session while it is closed. They are never adopted, so no request
   * brings them back in the meantime; an ID stays here if its record could not be deleted.
   */
  readonly #retired = new Set<string>();
  /** One warn line per source (unknown IDs) or session (IP mismatch) and window; the rest at debug. */
  readonly #warned: FirstPerWindow;

  constructor(rooms: Rooms) {
    this.#rooms = rooms;
    this.#warned = new FirstPerWindow(rooms.config.budgetWindow);
  }

  /**
   * The session a request with these presented IDs belongs to, found, adopted or created; or
   * the error outcome that answers it (a cookie bound to another client, the store or the cap
   * refusing).
   */
  async admit(presented: string[], clientIp: string): Promise<SessionEntry | Outcome> {
    const { counters, log } = this.#rooms;
    const known = this.#firstIsKnown(presented, clientIp);
    if (known) return this.#rooms.directory.markProven(known);
    let found: Found;
    try {
      found = await this.find(presented, clientIp);
    } catch (error) {
      if (error instanceof ElsewhereSignal) return elsewhereOutcome(error.placement);
      log.error({ event: 'store-error', err: error }, 'cannot look up a presented session in the store');
      return errorOutcome(new ResidentError('RESIDENT_ERR_STORE_FAILED', undefined, { cause: error }));
    }
    const { entry, foreign } = found;
    // Its client presented the cookie back: proven (see ./unproven.ts).
    if (entry) return this.#rooms.directory.markProven(entry);
    if (foreign) {
      counters.ipMismatches++;
      const fields = { event: 'ip-mismatch', session: hashId(foreign.id), boundIp: foreign.clientIp, clientIp };
      log[this.#warned.level(`ip-mismatch ${foreign.id}`)](fields, 'session cookie presented from another IP: refused, session untouched');
      // The cookie is expired for this sender only (B1): a reload starts a new session here,
      // while the bound session stays untouched for its owner.
      return errorOutcome(new ResidentError('RESIDENT_ERR_IP_MISMATCH'), { expire: true });
    }
    if (presented.length > 0) {
      // Strict mode (A3): an ID we do not hold is never adopted; a new one is issued.
      log[this.#warned.level(`unknown-id ${this.#rooms.policy.sourceOf(clientIp)}`)]({ event: 'unknown-id', presented: presented.map((id) => hashId(id)), clientIp }, 'unknown or expired session ID: issuing a new one');
    }
    const created = await this.create(clientIp);
    return created instanceof ResidentError ? errorOutcome(created) : created;
  }

  /**
   * The common case, decided without a store call: the first presented ID names a session of
   * this client that has not expired. find() would answer the same (IDs in header order, this
   * one needs no adoption); this skips the store lookup of the values behind it, which lose.
   */
  #firstIsKnown(presented: string[], clientIp: string): SessionEntry | undefined {
    const { directory, policy } = this.#rooms;
    const entry = presented.length > 0 ? directory.get(presented[0]!) : undefined;
    if (!entry || entry.state === 'gone' || policy.hasExpired(entry) || !policy.sameClient(entry.clientIp, clientIp)) return undefined;
    return entry;
  }

  /**
   * Duplicate cookie names (cookie tossing, A8): the first known session bound to this client
   * wins, so an unknown or foreign value can never shadow a valid one. IDs this process does
   * not know are looked up in the store, within their source's budget (./guesses.ts): a
   * session suspended before a restart resumes. One call for all of them. A session found
   * expired (idle past cookieTimeout, or past maxLifetime) is ended here and skipped, on every
   * path: the sweep may not have reached it yet.
   */
  async find(presented: string[], clientIp: string): Promise<Found> {
    const { directory, lookups, policy, endings, ownership } = this.#rooms;
    // A session another node of the cluster holds: the request goes there only if none of the
    // other presented IDs is this client's here (each node judges what it holds, so two nodes
    // holding one ID each never pass the request back and forth). Where a session was found
    // a moment ago is remembered: its next requests through this node cost no store call.
    let elsewhere: ElsewhereSignal | undefined;
    let unknown: string[] | undefined;
    for (const id of presented) {
      if (directory.get(id) || this.#retired.has(id)) continue;
      const seen = ownership.seenElsewhere(id);
      if (seen) elsewhere ??= new ElsewhereSignal(seen);
      else (unknown ??= []).push(id);
    }
    const stored = unknown ? await bounded(lookups.existing(unknown, policy.sourceOf(clientIp)), 'the store lookup') : undefined;
    let foreign: SessionEntry | undefined;
    for (const id of presented) {
      let known = directory.get(id);
      if (!known && stored?.has(id) && !this.#retired.has(id)) {
        try {
          known = await this.#adopt(id);
        } catch (error) {
          if (!(error instanceof ElsewhereSignal)) throw error;
          elsewhere ??= error;
          continue;
        }
      }
      if (!known || known.state === 'gone') continue;
      if (policy.hasExpired(known)) {
        // Its end (onSessionSuspend(ctx, 'expired') for a live context) completes before a
        // new session is made for this client: never two contexts of one client at once.
        await endings.expire(known);
        continue;
      }
      if (policy.sameClient(known.clientIp, clientIp)) return { entry: known };
      // Read for another client's request: its memento is not kept in memory meanwhile.
      this.#adopted.delete(known.id);
      foreign ??= known;
    }
    if (elsewhere) throw elsewhere;
    return { foreign };
  }

  /** A new session for `clientIp`, live and unproven, or the error that refuses it (./creation.ts). */
  create(clientIp: string): Promise<SessionEntry | ResidentError> {
    return createSession(this.#rooms, clientIp);
  }

  /** The record read when the session was adopted, handed once to the resume that follows. */
  takeAdopted(id: string): SessionRecord | undefined {
    const record = this.#adopted.get(id);
    this.#adopted.delete(id);
    return record;
  }

  /** An adoption of `id` under way, if any (a close waits for it, and closes what it found). */
  adoptionOf(id: string): Promise<SessionEntry | undefined> | undefined {
    return this.#adopting.get(id);
  }

  /** From now on `id` is never adopted from the store, whatever record it still holds. */
  retire(id: string): void {
    this.#retired.add(id);
  }

  isRetired(id: string): boolean {
    return this.#retired.has(id);
  }

  /**
   * Forgets a retired ID once its record is gone: after any adoption read of it that began
   * earlier has settled (that read may have seen the record, and finds the ID retired).
   */
  async releaseRetired(id: string): Promise<void> {
    await this.#adopting.get(id)?.catch(() => undefined);
    this.#retired.delete(id);
  }

  /** A retired ID whose record is gone for good (the store sweep removed it). */
  forgetRetired(id: string): void {
    this.#retired.delete(id);
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

  async #readForAdoption(id: string): Promise<SessionEntry | undefined> {
    const { directory, clock, counters, endings } = this.#rooms;
    // In a cluster the claim comes first: it reads the record, or names the node that holds it
    // (ElsewhereSignal: the request is forwarded there).
    const record = await claimAndRead(this.#rooms, id);
    // Closed or regenerated while the read was under way: a dead ID is never adopted (A4).
    if (!record || this.#retired.has(id)) return undefined;
    const known = directory.get(id);
    if (known) return known;
    const now = Date.now();
    // After a restart only the wall clock spans the gap: judge the record's expiry by it.
    if (record.expiresAt !== null && record.expiresAt <= now) {
      endings.dropExpiredRecord(id);
      return undefined;
    }
    // Known meanwhile (another path adopted or created it while the claim was answered).
    const meanwhile = directory.get(id);
    if (meanwhile || this.#retired.has(id)) return meanwhile;
    const mono = clock.now();
    const entry = newEntry({
      id,
      clientIp: record.clientIp,
      source: this.#rooms.policy.sourceOf(record.clientIp),
      // Its record was written because it was proven or kept, and its cookie came back.
      proven: true,
      createdAt: record.createdAt,
      startedAt: mono - Math.max(0, now - record.createdAt),
      userId: record.userId,
      lastActive: mono - Math.max(0, now - record.lastActivityAt),
      mementoBytes: record.memento === null ? 0 : Buffer.byteLength(record.memento),
      hasMemento: record.memento !== null,
    });
    directory.addSuspended(entry);
    this.#adopted.set(id, record);
    counters.adopted++;
    return entry;
  }

  /** Read for another client's request, or the session ended: its record is not kept in memory. */
  dropAdopted(id: string): void {
    this.#adopted.delete(id);
  }
}
