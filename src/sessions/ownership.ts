/**
 * Which node holds a session's live context, and the writes that depend on it. One node alone
 * always holds every context it serves (LocalOwnership). The cluster (many nodes on one shared
 * store, ../cluster/ownership.ts) keeps a directory in the store, where a claim is a
 * compare-and-set on the record's owner and fencing number, and every write of a record is
 * conditional on both, so a context is live on one node at most and a node that lost a session
 * can never overwrite it.
 *
 * The rooms call `claim` at the moments a context can come to life (create, adopt, resume) and
 * write records only through `save` and `remove`; a refused claim means "not here".
 */
import { ResidentError } from '../errors.ts';
import type { ContextStore, SessionRecord } from '../stores/store.ts';
import { bounded } from './bounded.ts';

/** The node a session lives on when it is not this one: where its requests are forwarded. */
export interface Elsewhere {
  kind: 'elsewhere';
  /** The owner's name in the store (`<nodeId>#<incarnation>`). */
  owner: string;
  /** The owner's private listener. */
  url: string;
}

/** The answer to a claim. */
export type Placement =
  /**
   * This node holds the session now; `fence` rises whenever the owner changes. `record` is the
   * stored record when the claim read it (the cluster's claim does), so a resume reads no more.
   */
  | { kind: 'ours'; fence: number; record?: SessionRecord }
  /** Another node holds it: the request goes there (the cluster's forwarding). */
  | Elsewhere
  /** The store has no record of it (a cluster's claim of a session another node ended). */
  | { kind: 'missing' };

export interface Ownership {
  /**
   * Makes this node the session's owner (adopt, resume), or says who is. `fresh`: a new
   * session's first record, claimed from nothing (create); called only where it is written.
   */
  claim(id: string, fresh?: () => SessionRecord): Promise<Placement>;
  /** This node no longer holds the session (closed, expired, dropped): what it still holds of it goes. */
  release(id: string): Promise<void>;
  /**
   * Writes the record of a session this node holds: a checkpoint (`leaving` false), or the
   * suspend that takes the context out of memory (`leaving` true: the cluster lets the session
   * go in the same write, so any node may claim it next). Rejects with RESIDENT_ERR_FENCED,
   * writing nothing, when another node took the session meanwhile.
   */
  save(record: SessionRecord, leaving: boolean): Promise<void>;
  /**
   * Deletes the session's record, unless another node took the session meanwhile
   * (RESIDENT_ERR_FENCED), or holds it live (ElsewhereSignal: a record this node held nothing of).
   */
  remove(id: string): Promise<void>;
  /** False while this node may not serve sessions (the cluster's lease is not held). */
  serving(): boolean;
  /**
   * Whether every session has a record from its first request (a cluster's claim writes one, so
   * other nodes find the session): then a change of userId is written at once, memento or not.
   */
  readonly recordsEverySession: boolean;
  /** Closes a session live on another node (`remove` said where): that node runs its end. */
  closeAt(placement: Elsewhere, id: string, by: string): Promise<boolean>;
  /** The node a claim found holding session `id` a moment ago, if any (a cluster's cache). */
  seenElsewhere(id: string): Elsewhere | undefined;
  /** Runs `work` (a judgement of one user's sessions) alone for that user, on every node. */
  serialized<T>(userId: string, work: () => Promise<T>): Promise<T>;
}

const OURS: Placement = Object.freeze({ kind: 'ours', fence: 0 });

/** One node: every session is ours, at once, and there is nothing to fence. */
export class LocalOwnership implements Ownership {
  readonly recordsEverySession = false;
  readonly #store: ContextStore;

  constructor(store: ContextStore) {
    this.#store = store;
  }

  claim(): Promise<Placement> {
    return Promise.resolve(OURS);
  }

  release(): Promise<void> {
    return Promise.resolve();
  }

  save(record: SessionRecord): Promise<void> {
    return this.#store.set(record);
  }

  remove(id: string): Promise<void> {
    return this.#store.delete(id);
  }

  serving(): boolean {
    return true;
  }

  /** One node has no elsewhere. */
  closeAt(): Promise<boolean> {
    return Promise.resolve(false);
  }

  seenElsewhere(): undefined {
    return undefined;
  }

  /** One node judges a user on one home already (sessions/users.ts). */
  serialized<T>(_userId: string, work: () => Promise<T>): Promise<T> {
    return work();
  }
}

/**
 * Thrown where a claim found the session on another node: the request is forwarded there. Not
 * an Error: it is caught on the way out of every path and never logged, and capturing a stack
 * for each forwarded request cost about 1 % of the forwarding node's CPU (bench (j1)).
 */
export class ElsewhereSignal {
  readonly placement: Elsewhere;
  constructor(placement: Elsewhere) {
    this.placement = placement;
  }
}

/**
 * The placement of a session this node is about to bring to life: ours, or the signal that
 * sends its request to its owner. 'missing' is the caller's to handle before this.
 */
export function mustBeOurs(placement: Placement): asserts placement is { kind: 'ours'; fence: number; record?: SessionRecord } {
  if (placement.kind === 'elsewhere') throw new ElsewhereSignal(placement);
  if (placement.kind === 'missing') throw new ResidentError('RESIDENT_ERR_STORE_FAILED', 'the session record vanished while it was claimed');
}

/**
 * Claims a stored session for this node and returns its record (undefined: none stored), or
 * throws ElsewhereSignal when another node holds it. One store call in a cluster (the claim
 * reads the record); on one node a plain read. Bounded like any store call on a request's path.
 */
export async function claimAndRead(rooms: { ownership: Ownership; store: ContextStore }, id: string): Promise<SessionRecord | undefined> {
  const placement = await bounded(rooms.ownership.claim(id), 'the store claim');
  if (placement.kind === 'missing') return undefined;
  mustBeOurs(placement);
  return placement.record ?? (await bounded(rooms.store.get(id), 'the store read'));
}
