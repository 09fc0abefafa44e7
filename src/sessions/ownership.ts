/**
 * Which node holds a session's live context. One node alone always holds every context it
 * serves (LocalOwnership). The cluster (many nodes on one shared store) plugs in a directory
 * kept in the store, where a claim is a compare-and-set on the record's owner and fencing
 * number (the store contract's conditional write), so a context is live on one node at most.
 *
 * The rooms call it at the four moments a context can come to life or leave for good: create,
 * adopt (a stored session this process did not know), resume, close. Single activation means
 * these calls answer before the context is made, and a refusal means "not here".
 */

/** The answer to a claim or a lookup. */
export type Placement =
  /** This node holds the session now; `fence` rises whenever the owner changes. */
  | { kind: 'ours'; fence: number }
  /** Another node holds it: the request goes there (the cluster's forwarding). */
  | { kind: 'elsewhere'; owner: string };

export interface Ownership {
  /** Makes this node the session's owner (create, adopt, resume), or says who is. */
  claim(id: string): Promise<Placement>;
  /** Who holds the session now, without claiming it. */
  locate(id: string): Promise<Placement | undefined>;
  /** This node no longer holds the session (closed, expired, or suspended and let go). */
  release(id: string): Promise<void>;
}

const OURS: Placement = Object.freeze({ kind: 'ours', fence: 0 });

/** One node: every session is ours, at once, and there is nothing to fence. */
export class LocalOwnership implements Ownership {
  claim(): Promise<Placement> {
    return Promise.resolve(OURS);
  }

  locate(): Promise<Placement> {
    return Promise.resolve(OURS);
  }

  release(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * The placement of a session this node is about to bring to life. Forwarding to another owner
 * is the cluster's job; until a cluster ownership is plugged in, every placement is ours.
 */
export function mustBeOurs(placement: Placement): asserts placement is { kind: 'ours'; fence: number } {
  if (placement.kind !== 'ours') throw new Error(`the session is owned by node ${placement.owner}: this node cannot forward requests`);
}
