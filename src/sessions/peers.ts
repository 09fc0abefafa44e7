/**
 * The other homes, as the rooms see them: every worker thread is an edge and holds the sessions
 * homed on it, so a few rules reach across (the global cap, a user's sessions on every home).
 * The rooms know no thread: src/edge/mesh.ts implements this over MessagePorts, and a single
 * home has no peers.
 */
import type { SessionInfo } from './info.ts';

export interface IdleCandidate {
  home: number;
  /** Monotonic ms (the same scale on every thread) of the idle context it would evict. */
  lastActive: number;
  /** That context is unproven (it leaves before any proven one). */
  unproven: boolean;
  /** It is an unproven one of the asking creation's source (those leave before any other). */
  ofSource: boolean;
}

/** What the other homes answered a creation looking for a victim. */
export interface IdleCandidates {
  candidates: IdleCandidate[];
  /** Some other home holds an unproven session of the asking source (idle or busy). */
  sourceHoldsUnproven: boolean;
}

/** One home's answer: its idle context of choice (null: none), and whether it holds the source's unproven ones. */
export interface HomeCandidate {
  idle: Omit<IdleCandidate, 'home'> | null;
  sourceHolds: boolean;
}

export interface Peers {
  /** True when `id` is homed here. */
  isLocal(id: string): boolean;
  /**
   * Each other home's idle context of choice for a new session of `source` (its oldest
   * unproven one of that source, else its oldest unproven, else its least recently active),
   * where it has one.
   */
  idleCandidates(source?: string): Promise<IdleCandidates>;
  /**
   * Asks `home` to evict its idle context of choice for `source`; false when it had none of
   * the class `candidate` reported (the one reported may have been taken meanwhile: a proven
   * user, or another source's new one, must not pay for that).
   */
  evict(home: number, candidate: IdleCandidate, source?: string): Promise<boolean>;
  /** The sessions of `userId` the other homes know. */
  sessionsOfUser(userId: string): Promise<SessionInfo[]>;
  /**
   * Closes the sessions of `userId` the other homes know; resolves with their IDs. `requester`:
   * the session whose "sign out everywhere else" this is (see Users.closeUser).
   */
  closeUserElsewhere(userId: string, by: string, requester?: string): Promise<string[]>;
  /** Closes a session homed elsewhere, through its home; `requester` as in closeUserElsewhere. */
  closeSession(id: string, by: string, requester?: string): Promise<boolean>;
  /**
   * The home that enforces `sessions.maxPerUser` for `userId` (null: this one). One home per
   * user, so that two sign-ins of one user on different homes are judged one after the other:
   * judged at once, each would keep itself and close the other.
   */
  userLimitHome(userId: string): number | null;
  /** Has `home` enforce `sessions.maxPerUser` for `userId`, never closing `keepId`. */
  limitUserAt(home: number, userId: string, keepId: string): Promise<void>;
}

/** No other home: one edge thread, or sessions kept apart from any pool. */
export const noPeers: Peers = {
  isLocal: () => true,
  idleCandidates: async () => ({ candidates: [], sourceHoldsUnproven: false }),
  evict: async () => false,
  sessionsOfUser: async () => [],
  closeUserElsewhere: async () => [],
  closeSession: async () => false,
  userLimitHome: () => null,
  limitUserAt: async () => {},
};

/** The live contexts of every home against `sessions.maxContexts` (see src/contexts/shared-state.ts). */
export interface GlobalCap {
  readonly total: number;
  /** Reservations under way (creations and resumes making room), over every home. */
  readonly reserving: number;
  adjust(delta: number): void;
  reserve(): number;
  unreserve(): void;
}

/** What a home publishes for the others and the main thread to read. */
export interface HeldFigures {
  setHeld(key: 'live' | 'suspending' | 'suspendedKnown' | 'inFlight' | 'unproven', value: number): void;
}

/** A cap kept in this thread alone (sessions kept apart from any pool, e.g. a benchmark). */
export function localCap(): GlobalCap {
  let total = 0;
  let reserving = 0;
  return {
    get total() {
      return total;
    },
    get reserving() {
      return reserving;
    },
    adjust: (delta) => void (total += delta),
    reserve: () => (reserving++, ++total),
    unreserve: () => void (reserving--, total--),
  };
}
