/** The registry of the configured shared store (cluster.enabled needs store.kind redis or postgres). */
import type { ContextStore } from '../stores/store.ts';
import type { OwnerRegistry } from './registry.ts';

export function openRegistry(store: ContextStore): OwnerRegistry {
  throw new Error(`no cluster registry for store.kind "${store.kind}" yet`);
}
