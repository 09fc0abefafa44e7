/**
 * When the store sweep runs. Every wait is drawn from [0.5, 1.5) × the interval, so that nodes
 * sharing one store (Redis, PostgreSQL) and started together do not sweep in step: Kinto's
 * PostgreSQL backend saw its expiry DELETEs collide once every node ran them on the same beat
 * (Kinto#1308). The next wait starts when a sweep ends, so a slow sweep never overlaps the next.
 */
export interface SweepSchedule {
  stop(): void;
}

/** Runs `sweep` again and again, a jittered `interval` apart; `random` is Math.random's shape. */
export function scheduleSweeps(interval: number, sweep: () => Promise<unknown>, random: () => number = Math.random): SweepSchedule {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const next = () => {
    if (stopped) return;
    timer = setTimeout(run, Math.round(interval * (0.5 + random())));
    timer.unref();
  };
  const run = () => {
    timer = undefined;
    // sweep reports its own failures; a rejection here must not stop the schedule.
    sweep().then(next, next);
  };
  next();
  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}
