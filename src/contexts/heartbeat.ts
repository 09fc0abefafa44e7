/**
 * A worker thread's heartbeat, shared with the main thread through a SharedArrayBuffer
 * (RELIABILITY.md F3). The worker bumps a counter from a timer, so the counter moves only
 * while its event loop turns; the main thread reads it without a message, so watching costs
 * a thread nothing and still works when the thread is stuck in a `while (true) {}`.
 *
 * The counter also moves each time a hook starts (runMarked, progressed): hooks started one
 * after another in a single turn of the loop (a batch of requests, a context's queue run
 * through its promise chain) are work getting done, not a stall. Without it, twelve
 * requests of 150 ms each, queued on one context, held the loop for 1.8 s and the thread
 * was killed at a stallTimeout of 1.5 s, with every session on it (red team 3).
 *
 * Slot 1 names the task whose hook is on the thread's stack right now (its task id plus one;
 * 0 for none), and slots 3 and 4 the hop it serves, when it came from another edge thread:
 * when the thread stops turning inside a hook's synchronous code, the main thread tells that
 * edge, which answers the request 504 rather than 502 (src/contexts/pool.ts).
 */

const BEATS = 0;
const RUNNING = 1;
/** 1 once any hook has started on the thread: it loaded and served (see hookStarted). */
const STARTED = 2;
/** The hop of the marked task, when it came from another edge thread: its slot plus one, and its call id. */
const HOP_SLOT = 3;
const HOP_CALL = 4;
/** How often a healthy thread bumps its counter. */
export const BEAT_INTERVAL_MS = 100;

export function newHeartbeat(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(5 * Int32Array.BYTES_PER_ELEMENT));
}

/** Worker side: bump the counter for as long as the thread lives (the timer keeps no thread alive). */
export function startBeating(heartbeat: Int32Array): void {
  setInterval(() => Atomics.add(heartbeat, BEATS, 1), BEAT_INTERVAL_MS).unref();
}

/** Worker side: a hook is starting, which is progress whether or not the loop turned. */
export function progressed(heartbeat: Int32Array | undefined): void {
  if (!heartbeat) return;
  Atomics.add(heartbeat, BEATS, 1);
  Atomics.store(heartbeat, STARTED, 1);
}

/** Main side: whether any hook ever started on the thread (a thread that did is no crash loop). */
export function hookStarted(heartbeat: Int32Array | undefined): boolean {
  return heartbeat !== undefined && Atomics.load(heartbeat, STARTED) === 1;
}

/**
 * Worker side: runs a hook's synchronous part with the task marked as running. Only the part
 * before the hook's first await is covered: a spin after an await names no task (its
 * thread's requests all get 502).
 */
export function runMarked<T>(heartbeat: Int32Array | undefined, taskId: number, call: () => T, hop?: [slot: number, call: number]): T {
  progressed(heartbeat);
  if (!heartbeat || taskId < 0) return call();
  if (hop) {
    Atomics.store(heartbeat, HOP_SLOT, hop[0] + 1);
    Atomics.store(heartbeat, HOP_CALL, hop[1]);
  }
  Atomics.store(heartbeat, RUNNING, taskId + 1);
  try {
    return call();
  } finally {
    Atomics.store(heartbeat, RUNNING, 0);
    Atomics.store(heartbeat, HOP_SLOT, 0);
  }
}

/** Main side: the hop whose hook holds the thread, if the stuck task came from another edge thread. */
export function runningHop(heartbeat: Int32Array): [slot: number, call: number] | undefined {
  if (Atomics.load(heartbeat, RUNNING) === 0) return undefined;
  const slot = Atomics.load(heartbeat, HOP_SLOT);
  return slot === 0 ? undefined : [slot - 1, Atomics.load(heartbeat, HOP_CALL)];
}

/** Main side: the counter now. */
export function beats(heartbeat: Int32Array): number {
  return Atomics.load(heartbeat, BEATS);
}

/** Main side: the task whose hook holds the thread, if any. */
export function runningTask(heartbeat: Int32Array): number | undefined {
  const marked = Atomics.load(heartbeat, RUNNING);
  return marked === 0 ? undefined : marked - 1;
}
