/**
 * What an edge thread counts as it answers: request latency by status class and the 503s by
 * code, in a prom-client registry of this thread. The main thread merges every thread's with
 * its own at scrape time (prom-client's AggregatorRegistry, made for cluster workers), so one
 * scrape shows them all. A thread that is replaced starts its counts again from zero, which
 * Prometheus reads as a counter reset.
 */
import { Counter, Histogram, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';

export const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class RequestMetrics {
  readonly #registry = new Registry();
  readonly #duration: Histogram<'status'>;
  /** One child per status class, made once: observing through it skips hashing the labels. */
  readonly #byClass = new Map<number, Histogram.Internal<'status'>>();
  readonly #unavailable: Counter<'code'>;

  constructor() {
    this.#duration = new Histogram({
      name: 'resident_request_duration_seconds',
      help: 'Dynamic requests, from arrival to the response written, by status class',
      labelNames: ['status'],
      buckets: LATENCY_BUCKETS,
      registers: [this.#registry],
    });
    this.#unavailable = new Counter({
      name: 'resident_unavailable_total',
      help: 'Requests answered 503, by error code',
      labelNames: ['code'],
      registers: [this.#registry],
    });
  }

  /** One dynamic request answered. `code`: the error code when Resident answered it itself. */
  observe(status: number, seconds: number, code: string | undefined): void {
    const statusClass = Math.floor(status / 100);
    let child = this.#byClass.get(statusClass);
    if (!child) this.#byClass.set(statusClass, (child = this.#duration.labels({ status: `${statusClass}xx` })));
    child.observe(seconds);
    if (status === 503) this.#unavailable.inc({ code: code ?? 'hook' });
  }

  /** This thread's figures, for the main thread to merge. */
  json(): Promise<Array<MetricObjectWithValues<MetricValue<string>>>> {
    return this.#registry.getMetricsAsJSON();
  }
}
