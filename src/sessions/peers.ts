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
  /** It is an unproven one of the source the new session comes from (it leaves before any other). */
  ownSource?: boolean;
}

export interface Peers {
  /** True when `id` is homed here. */
  isLocal(id: string): boolean;
  /**
   * Each other home's idle context of choice, where it has one: its oldest unproven one of
   * `source` (the new session's), else its oldest unproven one, else its least recently active.
   */
  idleCandidates(source?: string): Promise<IdleCandidate[]>;
  /**
   * Asks `home` to evict its idle context of choice; false when it had none. `unproven`: the
   * candidate it reported was unproven, and only an unproven one may go in its place (the one
   * reported may have been taken meanwhile; a proven user must not pay for that). `source` as
   * in idleCandidates: its unproven ones go first there too.
   */
  evict(home: number, unproven: boolean, source?: string): Promise<boolean>;
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
  idleCandidates: async () => [],
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
