/**
 * Prometheus metrics (prom-client), in a registry of our own rather than prom-client's global
 * one, so two servers in one process (tests, embedding) never share or clash.
 *
 * Session counts and lifecycle totals are read from the live structures when Prometheus
 * scrapes (collect callbacks), so the request path pays nothing for them. Only what has no
 * other home is recorded as it happens: request latency, 503s and store latency.
 *
 * The server makes a Metrics only when something can scrape it (see startServer): otherwise
 * every request would pay for a histogram nobody reads.
 */
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { ContextPool } from '../contexts/pool.ts';
import type { SessionsView } from '../edge/sessions-view.ts';
import { LATENCY_BUCKETS } from '../edge/request-metrics.ts';
import { summedEdge, type SharedState } from '../contexts/shared-state.ts';
import type { ContextStore } from '../stores/store.ts';


let processMetrics: Metric[] | undefined;

/**
 * prom-client's process and Node.js metrics (CPU, memory, event-loop lag, GC), made once per
 * process and shared by every server's registry. collectDefaultMetrics starts a GC
 * PerformanceObserver and an event-loop delay monitor that prom-client 15 gives no way to stop
 * (https://github.com/siimon/prom-client/issues/494, /issues/500): called per server, each
 * server started in a process would leave one more of each running.
 */
function sharedProcessMetrics(): Metric[] {
  if (!processMetrics) {
    const registry = new Registry();
    collectDefaultMetrics({ register: registry, prefix: 'resident_' });
    processMetrics = registry.getMetricsAsArray().map(({ name }) => registry.getSingleMetric(name)!);
  }
  return processMetrics;
}

/** A counter whose value lives elsewhere (`sessions.stats`): set from it at scrape time. */
function mirroredCounter(registry: Registry, name: string, help: string, read: () => number): void {
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

export class Metrics {
  readonly registry = new Registry();
  /** Every edge thread's request figures (src/edge/request-metrics.ts), asked for at scrape time. */
  #threadFigures: () => Promise<Array<Array<MetricObjectWithValues<MetricValue<string>>>>> = async () => [];
  readonly #storeDuration: Histogram<'operation' | 'outcome'>;

  constructor() {
    const registry = this.registry;
    for (const metric of sharedProcessMetrics()) registry.registerMetric(metric);
    this.#storeDuration = new Histogram({
      name: 'resident_store_operation_duration_seconds',
      help: 'Store operations, by operation and outcome',
      labelNames: ['operation', 'outcome'],
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    });
  }


  /** Exposes the sessions, workers and store of a started server (read at scrape time). */
  watch(sessions: SessionsView, pool: ContextPool, storeKind: string, shared: SharedState): void {
    this.#threadFigures = async () => (await pool.broadcast<Array<MetricObjectWithValues<MetricValue<string>>>>({ op: 'metrics' })).map(({ value }) => value);
    const registry = this.registry;
    const stats = () => sessions.stats;

    new Gauge({
      name: 'resident_sessions',
      help: 'Sessions this process knows, by state (live: a context holds it; suspended: only its memento is kept)',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        const { live, suspendedKnown } = stats();
        this.set({ state: 'live' }, live);
        this.set({ state: 'suspended' }, suspendedKnown);
      },
    });
    new Counter({
      name: 'resident_suspensions_total',
      help: 'Contexts taken out of memory (or checkpointed) through onSessionSuspend, by reason; "failed" counts suspends that did not complete',
      labelNames: ['reason'],
      registers: [registry],
      collect() {
        this.reset();
        // A checkpoint leaves the context live, so Sessions counts it apart from suspensions.
        const { suspended, checkpoints } = stats();
        for (const [reason, count] of Object.entries(suspended)) this.inc({ reason }, reason === 'checkpoint' ? checkpoints : count);
      },
    });
    new Gauge({
      name: 'resident_live_sessions',
      help: 'Live contexts by proof: "unproven" ones have not had their cookie presented back yet (a cookieless flood shows here)',
      labelNames: ['proof'],
      registers: [registry],
      collect() {
        const { live, unproven } = stats();
        this.set({ proof: 'unproven' }, unproven);
        this.set({ proof: 'proven' }, Math.max(0, live - unproven));
      },
    });
    new Gauge({
      name: 'resident_sources_over_budget',
      help: 'Sources (client addresses or networks) over a hostile-traffic budget in the current sessions.budgetWindow',
      labelNames: ['budget'],
      registers: [registry],
      collect() {
        for (const [budget, count] of Object.entries(sessions.sourcesOverBudgetCount())) this.set({ budget }, count);
      },
    });
    new Counter({
      name: 'resident_unknown_ids_total',
      help: 'Presented session IDs not held in memory: looked up in the store (looked_up="true") or not, their source\'s sessions.maxUnknownIdsPerIp being spent',
      labelNames: ['looked_up'],
      registers: [registry],
      collect() {
        this.reset();
        const { unknownIds, unknownIdsUnread } = stats();
        this.inc({ looked_up: 'true' }, unknownIds);
        this.inc({ looked_up: 'false' }, unknownIdsUnread);
      },
    });
    mirroredCounter(registry, 'resident_unproven_dropped_total', 'Unproven sessions that left memory without a record', () => stats().dropped);
    mirroredCounter(registry, 'resident_unproven_pushed_out_total', 'Unproven sessions pushed out by their source\'s sessions.maxUnprovenPerIp', () => stats().pushedOut);
    mirroredCounter(registry, 'resident_new_sessions_refused_total', 'New sessions refused with 429: their source\'s unproven sessions were all busy', () => stats().refusedNew);
    mirroredCounter(registry, 'resident_hops_total', 'Requests an edge thread passed to their session\'s home thread (another worker thread)', () => summedEdge(shared, 'hopsOut'));
    mirroredCounter(registry, 'resident_sessions_created_total', 'Sessions created', () => stats().created);
    // The cluster's, per node (0 on one node).
    mirroredCounter(registry, 'resident_cluster_forwards_total', 'Requests sent on to the node that owns their session', () => stats().forwards);
    mirroredCounter(registry, 'resident_cluster_claims_total', 'Sessions this node claimed in the store (unowned, or taken over)', () => stats().claims);
    mirroredCounter(registry, 'resident_cluster_takeovers_total', 'Of the claims, sessions taken from a node whose lease was gone', () => stats().takeovers);
    mirroredCounter(registry, 'resident_cluster_fenced_writes_total', 'Writes the store refused because another node owns the session now', () => stats().fencedWrites);
    mirroredCounter(registry, 'resident_resumes_total', 'Suspended sessions brought back into a new context', () => stats().resumed);
    mirroredCounter(registry, 'resident_evictions_total', 'Idle contexts suspended to stay within sessions.maxContexts', () => stats().suspended.evicted);
    mirroredCounter(registry, 'resident_sessions_closed_total', 'Sessions closed (by their hook, the admin view, or a user-wide close)', () => stats().closed);
    mirroredCounter(registry, 'resident_sessions_expired_total', 'Sessions whose cookie or absolute lifetime ran out', () => stats().expired);
    mirroredCounter(registry, 'resident_ip_mismatches_total', 'Session cookies presented from another client IP (answered 400)', () => stats().ipMismatches);
    mirroredCounter(registry, 'resident_lost_suspends_total', 'Forced suspends whose memento could not be kept', () => stats().lostSuspends);
    mirroredCounter(registry, 'resident_workers_lost_total', 'Worker threads that stopped', () => stats().workersLost);
    mirroredCounter(registry, 'resident_regenerated_total', 'Session IDs regenerated (ctx.regenerate())', () => stats().regenerated);
    new Gauge({
      name: 'resident_worker_contexts',
      help: 'Live contexts per worker thread',
      labelNames: ['worker'],
      registers: [registry],
      collect() {
        this.reset();
        for (const { threadId, contexts } of pool.workerLoad()) this.set({ worker: String(threadId) }, contexts);
      },
    });
    new Gauge({
      name: 'resident_worker_queue_depth',
      help: 'Tasks sent to each worker thread and not yet answered',
      labelNames: ['worker'],
      registers: [registry],
      collect() {
        this.reset();
        for (const { threadId, queued } of pool.workerLoad()) this.set({ worker: String(threadId) }, queued);
      },
    });
    mirroredCounter(registry, 'resident_workers_stalled_total', 'Worker threads terminated by the watchdog (workers.stallTimeout)', () => pool.stalls);
    new Gauge({
      name: 'resident_workers_crash_loop',
      help: '1 once worker threads kept dying and no more are started (until a restart), else 0',
      registers: [registry],
      collect() {
        this.set(pool.degraded ? 1 : 0);
      },
    });
    new Gauge({
      name: 'resident_store_info',
      help: 'The store for suspended sessions (value 1)',
      labelNames: ['kind'],
      registers: [registry],
    }).set({ kind: storeKind }, 1);
  }

  /** The store, with every operation timed. */
  instrument(store: ContextStore): ContextStore {
    const histogram = this.#storeDuration;
    const timed = <A extends unknown[], R>(operation: string, call: (...args: A) => Promise<R>) =>
      async (...args: A): Promise<R> => {
        const end = histogram.startTimer({ operation });
        try {
          const result = await call(...args);
          // A conditional write that answers false was refused (another owner or fence holds the
          // record): not an error, but not a write either.
          end({ outcome: result === false && (operation === 'setIf' || operation === 'deleteIf') ? 'refused' : 'ok' });
          return result;
        } catch (error) {
          end({ outcome: 'error' });
          throw error;
        }
      };
    return {
      kind: store.kind,
      get: timed('get', (id) => store.get(id)),
      existing: timed('existing', (ids) => store.existing(ids)),
      set: timed('set', (record) => store.set(record)),
      delete: timed('delete', (id) => store.delete(id)),
      setIf: timed('setIf', (record, expected) => store.setIf(record, expected)),
      deleteIf: timed('deleteIf', (id, expected) => store.deleteIf(id, expected)),
      expiredIds: timed('expiredIds', (now, limit) => store.expiredIds(now, limit)),
      list: timed('list', (query) => store.list(query)),
      ping: timed('ping', () => store.ping()),
      quarantine: timed('quarantine', (id, reason) => store.quarantine(id, reason)),
      close: () => store.close(),
    };
  }

  /** Drops every metric and its collect callback, so nothing holds on to a stopped server. */
  close(): void {
    this.registry.clear();
  }

  /** This thread's metrics and every edge thread's, merged (request counts summed). */
  async text(): Promise<string> {
    const figures = await this.#threadFigures();
    if (figures.length === 0) return this.registry.metrics();
    return AggregatorRegistry.aggregate([await this.registry.getMetricsAsJSON(), ...figures]).metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
