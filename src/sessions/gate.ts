/**
 * A session's gate: while a suspend, resume, rewrite or end runs, later requests wait on it,
 * in arrival order, so a context never has two live copies and no request overtakes another
 * (RELIABILITY.md C7).
 */
import type { SessionEntry } from './directory.ts';

/** Runs `work` as the entry's gate; the gate clears before any waiter runs. */
export function setGate(entry: SessionEntry, work: Promise<void>): Promise<void> {
  entry.gate = work;
  const clear = () => {
    if (entry.gate === work) entry.gate = null;
  };
  work.then(clear, clear);
  return work;
}

/** Runs `step` as the entry's gate once whatever holds the gate now has settled. */
export function afterGate(entry: SessionEntry, step: () => Promise<void>): Promise<void> {
  const previous = entry.gate;
  return setGate(
    entry,
    (async () => {
      if (previous) await previous.catch(() => {});
      await step();
    })(),
  );
}
