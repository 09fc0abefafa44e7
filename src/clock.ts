/**
 * Timeouts are judged on a monotonic clock, never on the time of day, so an NTP step or a
 * manual clock change neither expires every session nor makes one immortal
 * (RELIABILITY.md C9). Tests inject a manual clock to move time without sleeping.
 */
export interface Clock {
  /** Milliseconds on a monotonic scale; only differences are meaningful. */
  now(): number;
}

export const monotonicClock: Clock = { now: () => performance.now() };
