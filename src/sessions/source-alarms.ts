/**
 * Sources over a hostile-traffic budget, per window (`sessions.budgetWindow`): what the admin
 * view lists (`api/sources`), what the metrics count, and the one log line per source, budget
 * and window. Held where every thread's reports meet (the main thread), so a source is logged
 * once however many threads it reached.
 */
import type { Log } from '../log.ts';

export type Budget = 'unproven' | 'unknown_ids';

export interface OverBudget {
  source: string;
  budget: Budget;
  /** Wall-clock ms of the window's first report. */
  since: number;
  /** Reports in the window: new sessions pushed out or refused, or unknown IDs not read. */
  count: number;
}

const MESSAGES: Record<Budget, { event: string; msg: string }> = {
  unproven: { event: 'unproven-budget', msg: 'a source holds its whole budget of unproven sessions (sessions.maxUnprovenPerIp): its oldest are pushed out' },
  unknown_ids: { event: 'id-guessing', msg: 'a source spent its budget of unknown session IDs (sessions.maxUnknownIdsPerIp): further ones are treated as no cookie, unread' },
};

export class SourceAlarms {
  readonly #windowMs: number;
  readonly #log: Log;
  readonly #now: () => number;
  #window = -1;
  #current = new Map<string, OverBudget>();
  #previous = new Map<string, OverBudget>();

  constructor(windowMs: number, log: Log, now: () => number = Date.now) {
    this.#windowMs = Math.max(1, windowMs);
    this.#log = log;
    this.#now = now;
  }

  /** The window `now` falls in; the maps turn over when it changes. */
  #turn(): number {
    const now = this.#now();
    const window = Math.floor(now / this.#windowMs);
    if (window !== this.#window) {
      this.#previous = window === this.#window + 1 ? this.#current : new Map();
      this.#current = new Map();
      this.#window = window;
    }
    return now;
  }

  /** `source` went over `budget` (`count` times); logged the first time in the window. */
  note(source: string, budget: Budget, count = 1): void {
    const now = this.#turn();
    const key = `${budget} ${source}`;
    const known = this.#current.get(key);
    if (known) {
      known.count += count;
      return;
    }
    this.#current.set(key, { source, budget, since: now, count });
    const { event, msg } = MESSAGES[budget];
    this.#log.warn({ event, source, windowMs: this.#windowMs }, msg);
  }

  /** Sources over a budget in this window and the one before, this window's first. */
  list(): OverBudget[] {
    this.#turn();
    return [...this.#current.values(), ...this.#previous.values()].map((entry) => ({ ...entry }));
  }

  /** How many sources are over each budget in this window. */
  counts(): Record<Budget, number> {
    this.#turn();
    const counts: Record<Budget, number> = { unproven: 0, unknown_ids: 0 };
    for (const entry of this.#current.values()) counts[entry.budget]++;
    return counts;
  }
}

/** How long an edge thread gathers further events of a source before it reports them. */
const REPORT_EVERY_MS = 1_000;

/**
 * How an edge thread tells the main thread's SourceAlarms without a message per refused
 * request: the first event of a source, budget and window is reported at once (its log line
 * is not delayed), the ones after it are added up and reported together once a second.
 */
export function batchedReports(report: (source: string, budget: Budget, count: number) => void, everyMs = REPORT_EVERY_MS): (source: string, budget: Budget) => void {
  /** Keys reported in the current batch period, with the events gathered since. */
  let gathered = new Map<string, { source: string; budget: Budget; count: number }>();
  let timer: NodeJS.Timeout | undefined;
  const flush = (): void => {
    const batch = gathered;
    gathered = new Map();
    timer = undefined;
    for (const { source, budget, count } of batch.values()) if (count > 0) report(source, budget, count);
  };
  return (source, budget) => {
    const key = `${budget} ${source}`;
    const known = gathered.get(key);
    if (known) {
      known.count++;
    } else {
      // The first in this period goes at once; the main thread logs its first per window.
      gathered.set(key, { source, budget, count: 0 });
      report(source, budget, 1);
    }
    // Not kept alive by it: a thread that is stopping loses at most one period's counts.
    timer ??= setTimeout(flush, everyMs).unref();
  };
}
