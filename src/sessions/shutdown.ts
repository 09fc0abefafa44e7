/**
 * Graceful shutdown: requests in flight finish, then every context is suspended with reason
 * 'shutdown' within the deadline, and what could not be saved is counted.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { hashId } from '../id-hash.ts';
import { bounded } from './bounded.ts';
import type { SessionEntry } from './entry.ts';
import type { Rooms } from './rooms.ts';

/**
 * Shutdown suspends in flight at once on one thread. All at once, 100,000 contexts queued
 * 100,000 store calls behind Redis's one connection or PostgreSQL's pool of 10, and each call's
 * callTimeout ran out in the queue: every memento lost (bench (f), issue 13). A few dozen keep
 * the store busy without a queue longer than a call may wait.
 */
const PARALLEL_SUSPENDS = 32;
/** Before another round after a suspend the store refused (down for a moment, E7). */
const STORE_RETRY_MS = 250;

/**
 * Suspends every live context with reason 'shutdown', until none is left or `until.stopped`.
 * A suspend or resume already under way is waited for first; whatever it leaves live (a
 * suspend the store refused, a resume that completed) is suspended in the next round. A context
 * with a request in flight is suspended as soon as that request is answered (its hook
 * returned: a body still streaming does not hold it).
 */
async function suspendAll(rooms: Rooms, until: { stopped: boolean }, reason: 'shutdown' | 'evicted' = 'shutdown'): Promise<void> {
  while (!until.stopped) {
    const waits: Promise<unknown>[] = [];
    const idle: SessionEntry[] = [];
    let busy = false;
    for (const entry of rooms.directory.live.values()) {
      if (entry.gate) waits.push(entry.gate.catch(() => undefined));
      else if (entry.state !== 'live') continue;
      else if (entry.inFlight > 0) busy = true;
      else idle.push(entry);
    }
    if (waits.length === 0 && idle.length === 0) {
      if (!busy) return;
      // Nothing to suspend but busy contexts: look again when a request is answered.
      await rooms.requests.drained(50);
      continue;
    }
    const refusedBefore = rooms.counters.suspended.failed;
    await Promise.all([...waits, inParallel(idle, PARALLEL_SUSPENDS, until, (entry) => suspendIfIdle(rooms, entry, reason))]);
    if (rooms.counters.suspended.failed > refusedBefore) await sleep(STORE_RETRY_MS);
  }
}

/** Suspends `entry` unless a request or another suspend took it since the round began. */
async function suspendIfIdle(rooms: Rooms, entry: SessionEntry, reason: 'shutdown' | 'evicted'): Promise<void> {
  if (entry.gate) await entry.gate.catch(() => undefined);
  else if (entry.state === 'live' && entry.inFlight === 0) await rooms.lifecycle.startSuspend(entry, reason);
}

/**
 * The cluster: this node's lease is gone, so another node may claim any of its sessions now.
 * Every context leaves memory ('evicted'), its memento written only where the store still
 * names this node's old incarnation (a fenced write; refused where another node took over).
 * What cannot be saved within `deadlineMs` (the store unreachable) is dropped: the session
 * resumes from its last checkpoint wherever its next request goes.
 */
export async function relinquishAll(rooms: Rooms, deadlineMs: number): Promise<void> {
  const until = { stopped: false };
  const timer = setTimeout(() => (until.stopped = true), deadlineMs);
  await suspendAll(rooms, until, 'evicted');
  clearTimeout(timer);
  for (const entry of [...rooms.directory.live.values()]) {
    if (entry.state !== 'live' || entry.gate) continue;
    rooms.log.warn({ event: 'relinquished', session: hashId(entry.id) }, 'the lease was lost before this context could be saved: it resumes from its last checkpoint');
    await rooms.lifecycle.discard(entry);
    if (entry.state === 'live') rooms.directory.markSuspended(entry);
  }
}

/** `work` on each of `items`, at most `limit` at once, none started once `until.stopped`. */
async function inParallel<T>(items: readonly T[], limit: number, until: { stopped: boolean }, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < items.length && !until.stopped) await work(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}

/**
 * Shutdown within `deadlineMs` (0: no deadline). Requests in flight get at most half of it, so
 * the other half is kept for the suspends however long a hook takes; then every context
 * without a request in flight is suspended with reason 'shutdown', and a busy one as soon as
 * its request is answered. At the deadline `stopHost` stops the worker threads: a suspend
 * still under way then lands (its memento was in hand) or ends with its thread, and `lost`
 * counts exactly the contexts whose memento was not saved. The caller has set rooms.closing.
 */
export async function shutDown(rooms: Rooms, deadlineMs: number, stopHost: () => Promise<void>): Promise<{ suspended: number; lost: number }> {
  const { counters, log } = rooms;
  const deadline = deadlineMs > 0 ? Date.now() + deadlineMs : Infinity;
  await rooms.requests.drained(deadlineMs > 0 ? deadlineMs / 2 : Infinity);
  const before = { lost: counters.lostSuspends, done: counters.suspended.shutdown };
  const until = { stopped: false };
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    suspendAll(rooms, until).then(() => false),
    new Promise<boolean>((resolve) => {
      if (deadline !== Infinity) timer = setTimeout(() => resolve(true), Math.max(0, deadline - Date.now()));
    }),
  ]);
  clearTimeout(timer);
  until.stopped = true;
  let lost = counters.lostSuspends - before.lost;
  if (timedOut) {
    // Not saved by the deadline: contexts still busy, and suspends under way (a slow hook).
    const stuck = [...rooms.directory.live.values()];
    const { suspended } = counters;
    // Dropped ones (unproven, counted under their reason) went as they should: nothing to save.
    const saved = () => suspended.idle + suspended.evicted + suspended.admin + suspended.shutdown + suspended.dropped;
    const savedBefore = saved();
    await stopHost();
    await Promise.all(stuck.map((entry) => entry.gate?.catch(() => undefined)));
    const unsaved = Math.max(0, stuck.length - (saved() - savedBefore));
    lost += unsaved;
    log.error({ event: 'shutdown-timeout', contexts: unsaved }, 'shutdown deadline passed before every context was suspended');
  }
  // Records of sessions that ended are deleted before the store closes: a close a client
  // was told about must not come back after the restart.
  await bounded(rooms.endings.deletesSettled(), 'the store deletes').catch(() => undefined);
  return { suspended: counters.suspended.shutdown - before.done, lost };
}
