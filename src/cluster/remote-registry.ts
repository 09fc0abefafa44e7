/**
 * The cluster's registry as an edge thread sees it: each call goes to the main thread, which
 * holds the one store connection (as ../stores/remote.ts does for store calls).
 */
import type { RpcPort } from '../contexts/rpc.ts';
import type { ClaimAnswer, NodeLease, OwnerRegistry } from './registry.ts';

/** A registry call as it crosses to the main thread. */
export interface RegistryCall {
  op: 'registry';
  method: 'claim' | 'locate' | 'nodes';
  args: string[];
}

/** The calls an edge thread makes; leases are the main thread's alone. */
export type ThreadRegistry = Pick<OwnerRegistry, 'claim' | 'locate' | 'nodes'>;

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
    default:
      return Promise.reject(new Error(`no registry method ${String(call.method)}`));
  }
}
