/**
 * The sweeps, on timers of their own: idle contexts are suspended and suspended sessions past
 * their cookie expire (every 250 ms, reading only the heads of the directory's orders),
 * and contexts are checkpointed (`sessions.checkpointInterval`). Expired records nobody knows
 * leave the store through the main thread's sweep (src/edge/sessions-view.ts), which asks each
 * record's home.
 */
import type { SessionEntry } from './directory.ts';
import type { Rooms } from './rooms.ts';

const SWEEP_INTERVAL_MS = 250;

export class Sweeper {
  readonly #rooms: Rooms;
  readonly #timers: NodeJS.Timeout[] = [];

  constructor(rooms: Rooms) {
    this.#rooms = rooms;
  }

  /** Starts the timers (unref'd: they never keep the process alive). */
  start(): void {
    const { config } = this.#rooms;
    this.#every(SWEEP_INTERVAL_MS, () => this.sweep());
    if (config.checkpointInterval > 0) this.#every(config.checkpointInterval, () => this.checkpoint());
  }

  stop(): void {
    for (const timer of this.#timers.splice(0)) clearInterval(timer);
  }

  #every(ms: number, job: () => void): void {
    const timer = setInterval(job, ms);
    timer.unref();
    this.#timers.push(timer);
  }

  /** Suspends idle contexts and forgets expired sessions. */
  sweep(): void {
    const { closing, clock, users, requests, policy, directory, lifecycle, endings } = this.#rooms;
    if (closing) return;
    const now = clock.now();
    users.forgetOldCloses(now, requests.inFlight);
    if (policy.idleLimit !== Infinity) {
      let budget = directory.live.size;
      for (const entry of directory.live.values()) {
        // Entries are in orderedAt order: past the first one placed too recently, none is idle.
        if (budget-- <= 0 || now - entry.orderedAt < policy.idleLimit) break;
        if (now - entry.lastActive < policy.idleLimit) continue;
        if (entry.state !== 'live' || entry.inFlight > 0 || entry.gate) continue;
        if (entry.retryAt > now) {
          if (now - entry.lastActive >= policy.sessionLimit) endings.expireLive(entry);
          continue;
        }
        void lifecycle.startSuspend(entry, 'idle');
      }
    }
    if (policy.sessionLimit !== Infinity) {
      const idle = (entry: SessionEntry) => !entry.gate && entry.inFlight === 0;
      for (const entry of directory.takeExpired(now, policy.sessionLimit, idle)) void endings.end(entry, 'expired');
    }
  }

  /** Checkpoints every context that handled a request since its last checkpoint. */
  checkpoint(): void {
    if (this.#rooms.closing) return;
    for (const entry of this.#rooms.directory.live.values()) this.#rooms.lifecycle.checkpoint(entry);
  }
}
