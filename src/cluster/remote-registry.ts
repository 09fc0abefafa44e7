/**
 * The cluster's registry as an edge thread sees it: each call goes to the main thread, which
 * holds the one store connection (as ../stores/remote.ts does for store calls).
 */
import { createHash } from 'node:crypto';
import type { RpcPort } from '../contexts/rpc.ts';
import type { ClaimAnswer, NodeLease, OwnerRegistry } from './registry.ts';

/** A registry call as it crosses to the main thread. */
export interface RegistryCall {
  op: 'registry';
  method: 'claim' | 'locate' | 'nodes' | 'lockUser' | 'unlockUser';
  args: string[];
}

/** The calls an edge thread makes; node leases are the main thread's alone. */
export type ThreadRegistry = Pick<OwnerRegistry, 'claim' | 'locate' | 'nodes'> & {
  /** Takes the cluster-wide lock of one user's sessions.maxPerUser judgement; false while another node holds it. */
  lockUser(userId: string): Promise<boolean>;
  unlockUser(userId: string): Promise<void>;
};

/**
 * A user's lock is a lease of its own in the registry (so both stores keep it with the same
 * expiry rules), named apart from any node incarnation and listed by no one.
 */
export const USER_LOCK_NODE = 'user-lock';
const USER_LOCK_MS = 5_000;
export const userLockOwner = (userId: string): string => `${USER_LOCK_NODE}#${createHash('sha256').update(userId).digest('hex')}`;

export class RemoteRegistry implements ThreadRegistry {
  readonly #main: RpcPort;
  constructor(main: RpcPort) {
    this.#main = main;
  }
  claim(id: string, owner: string): Promise<ClaimAnswer> {
    return this.#main.call({ op: 'registry', method: 'claim', args: [id, owner] } satisfies RegistryCall);
  }
  locate(id: string): Promise<NodeLease | undefined> {
    return this.#main.call({ op: 'registry', method: 'locate', args: [id] } satisfies RegistryCall);
  }
  nodes(): Promise<NodeLease[]> {
    return this.#main.call({ op: 'registry', method: 'nodes', args: [] } satisfies RegistryCall);
  }
  lockUser(userId: string): Promise<boolean> {
    return this.#main.call({ op: 'registry', method: 'lockUser', args: [userId] } satisfies RegistryCall);
  }
  unlockUser(userId: string): Promise<void> {
    return this.#main.call({ op: 'registry', method: 'unlockUser', args: [userId] } satisfies RegistryCall);
  }
}

/** Main thread: runs a registry call an edge thread made. */
export function runRegistryCall(registry: OwnerRegistry, call: RegistryCall): Promise<unknown> {
  switch (call.method) {
    case 'claim':
      return registry.claim(call.args[0]!, call.args[1]!);
    case 'locate':
      return registry.locate(call.args[0]!);
    case 'nodes':
      return registry.nodes();
    case 'lockUser':
      // A lock names no node to forward to: its url says what it is.
      return registry.acquire({ owner: userLockOwner(call.args[0]!), nodeId: USER_LOCK_NODE, url: 'about:user-lock' }, USER_LOCK_MS);
    case 'unlockUser':
      return registry.release(userLockOwner(call.args[0]!));
    default:
      return Promise.reject(new Error(`no registry method ${String(call.method)}`));
  }
}
