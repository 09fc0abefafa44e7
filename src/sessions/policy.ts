/**
 * The time rules of a session, from the configuration: when an idle context is suspended,
 * when a session expires, what a stored record says about its expiry. Pure, given a clock.
 */
import type { ResidentConfig } from '../config.ts';
import type { Clock } from '../clock.ts';
import { ipMatcher, sourceKey, type IpMatcher } from '../http/ip-binding.ts';
import type { SessionRecord } from '../stores/store.ts';
import type { SessionEntry } from './directory.ts';

export class SessionPolicy {
  /** Idle time after which a live context is suspended; Infinity: never. */
  readonly idleLimit: number;
  /** Idle time after which a session is gone; Infinity: never (browser-session cookie). */
  readonly sessionLimit: number;
  /** Time since its start after which a session is gone however active; Infinity: never. */
  readonly lifetimeLimit: number;
  /** Whether a request from one address may use a session bound to another (`bindIp`). */
  readonly sameClient: IpMatcher;
  /** The source a client address is counted against for the hostile-traffic budgets. */
  readonly sourceOf: (ip: string) => string;
  readonly #mementoVersion: number;
  readonly #clock: Clock;

  constructor(config: ResidentConfig['sessions'], clock: Clock) {
    this.#clock = clock;
    this.#mementoVersion = config.mementoVersion;
    this.sessionLimit = config.cookieTimeout > 0 ? config.cookieTimeout : Infinity;
    this.lifetimeLimit = config.maxLifetime > 0 ? config.maxLifetime : Infinity;
    this.sameClient = ipMatcher(config.bindIp);
    this.sourceOf = (ip) => sourceKey(ip, config.bindIp);
    // A context never outlives its cookie: with a cookie shorter than the process timeout, the
    // context is suspended when the cookie expires, and its memento dropped right after.
    this.idleLimit = Math.min(config.processTimeout > 0 ? config.processTimeout : Infinity, this.sessionLimit);
  }

  /** Idle past the cookie's lifetime, or past `sessions.maxLifetime` however active (C3). */
  hasExpired(entry: SessionEntry): boolean {
    const now = this.#clock.now();
    if (now - entry.startedAt >= this.lifetimeLimit) return true;
    return entry.inFlight === 0 && now - entry.lastActive >= this.sessionLimit;
  }

  /** Wall-clock ms when the cookie of a request answered now expires; null: a browser-session cookie. */
  cookieExpiresAt(entry: SessionEntry): number | null {
    return this.#earliest(Date.now(), entry);
  }

  /** Wall-clock ms of the session's last activity. */
  lastActivityAt(entry: SessionEntry): number {
    return Date.now() - Math.max(0, this.#clock.now() - entry.lastActive);
  }

  /** The record that keeps `entry` (and its memento) in the store. */
  record(entry: SessionEntry, memento: string | null): SessionRecord {
    const lastActivityAt = this.lastActivityAt(entry);
    return {
      id: entry.id,
      userId: entry.userId,
      memento,
      mementoVersion: this.#mementoVersion,
      clientIp: entry.clientIp,
      createdAt: entry.createdAt,
      updatedAt: Date.now(),
      lastActivityAt,
      expiresAt: this.#earliest(lastActivityAt, entry),
      // One node owns every session until a cluster's ownership claims them (the cluster issue).
      owner: null,
      fence: 0,
    };
  }

  /** The earlier of the idle end counted from `activeAt` and the lifetime end; null: never. */
  #earliest(activeAt: number, entry: SessionEntry): number | null {
    const idleEnd = this.sessionLimit === Infinity ? Infinity : activeAt + this.sessionLimit;
    const lifeEnd = this.lifetimeLimit === Infinity ? Infinity : entry.createdAt + this.lifetimeLimit;
    const end = Math.min(idleEnd, lifeEnd);
    return end === Infinity ? null : end;
  }
}
