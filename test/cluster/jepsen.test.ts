/**
 * G4, G5 and a paused owner under load, Jepsen-style, on Redis and on PostgreSQL: 12 sessions,
 * 3 clients each sharing its cookie, incrementing the fixture's counter through random nodes of
 * a 3-node cluster while faults happen one after another: SIGSTOP of a node past its lease, a
 * cut between a node and the store (G5: that node answers 503 and never serves; the others take
 * its sessions over), a stall of another node's store connection (its held writes delivered
 * late, after a takeover: fenced), and kill -9 of a node and its restart. Every acknowledged
 * answer and every failure is logged; a sampler reads each session's record behind the nodes'
 * backs. Then the heal: all nodes up, a final round through every node. ./checker.ts judges the
 * history: assertions about invariants, not about timing.
 *
 * The loss the design allows, reported (not asserted): a takeover starts from the last
 * checkpoint that landed, so what the old copy acknowledged after it is acknowledged again by
 * the new one. After SIGSTOP or kill -9 that is at most checkpointInterval's worth of requests;
 * after a cut or stall it is everything the cut-off node acknowledged from memory since its
 * last checkpoint landed, until its lease view ran out (up to leaseTimeout minus the margin).
 * Run with RESIDENT_JEPSEN_KEEP=1 to keep the history and the node logs of a passing run too.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test, type TestContext } from 'node:test';
import { Agent, request, type Dispatcher } from 'undici';
import { decodeMemento } from '../../src/contexts/memento.ts';
import { skipOrFailOnCi, waitFor } from '../helpers.ts';
import { SHARED, unavailableReason } from '../stores/shared-helpers.ts';
import { TcpProxy } from '../stores/tcp-proxy.ts';
import { check, checkHeal, type Ack, type Sample, type Violation } from './checker.ts';
import { TestCluster, type ClusterNodeOptions, type RunningNode } from './harness.ts';

const LEASE_MS = 2_000;
const OPTIONS: ClusterNodeOptions = { leaseTimeout: '2s', checkpointInterval: '300ms', forwardTimeout: '1s' };
const NODES = ['a', 'b', 'c'];
const SESSIONS = 12;
const CLIENTS_PER_SESSION = 3;
/** A request to a paused node waits this long: then its outcome is unknown (not acknowledged). */
const CLIENT_TIMEOUT_MS = 3_000;
/** Each fault lasts the lease and this much more, so the lease surely runs out in the store. */
const PAST_LEASE_MS = 1_800;

/** Node log events worth counting in the diagnostics. */
const NOTABLE = new Set(['lease-lost', 'lease-acquired', 'fenced', 'resumed', 'unknown-id', 'id-guessing', 'forward-failed', 'forward-loop']);

interface Failure {
  session: string;
  via: string;
  /** The HTTP status, or 'timeout' / 'error' (refused, reset). */
  status: number | 'timeout' | 'error';
  sent: number;
  received: number;
}

/** A fault's window on the test's clock. */
interface Fault {
  what: string;
  node: string;
  from: number;
  to: number;
}

const now = () => performance.now();

for (const kind of SHARED) {
  describe(`cluster on ${kind}: Jepsen-style history under SIGSTOP, store partition, stall and kill -9 (G4, G5)`, { timeout: 300_000 }, () => {
    let cluster: TestCluster | undefined;
    let unavailable: string | undefined;
    const proxies = new Map<string, TcpProxy>();
    const ready = (t: TestContext): TestCluster | undefined => {
      if (unavailable !== undefined) skipOrFailOnCi(t, unavailable);
      return cluster;
    };
    /** Each node reaches the store through a proxy of its own, to cut it off alone. */
    /** Every node process started, killed ones too, for their logs. */
    const started: RunningNode[] = [];
    const startNode = async (c: TestCluster, name: string) => {
      const node = await c.start(name, { ...OPTIONS, storeUrl: c.storeUrlVia(proxies.get(name)!.port) });
      started.push(node);
      return node;
    };

    before(async () => {
      unavailable = await unavailableReason(kind);
      if (unavailable !== undefined) return;
      cluster = await TestCluster.open(kind);
      for (const name of NODES) proxies.set(name, await TcpProxy.start(cluster.storeAddress()));
      await Promise.all(NODES.map((name) => startNode(cluster!, name)));
    });
    after(async () => {
      await cluster?.close();
      for (const proxy of proxies.values()) await proxy.close();
    });

    test('every acknowledged answer fits one live copy per session at a time; after the heal nothing acknowledged is lost', async (t) => {
      const c = ready(t);
      if (!c) return;
      const acks: Ack[] = [];
      const failures: Failure[] = [];
      const faults: Fault[] = [];
      const agents: Agent[] = [];
      const wrong: Violation[] = [];
      const { store } = await c.inspect();

      /** One /inc of `session` through node `via`, logged: an Ack, a Failure, or nothing when `via` is down. */
      const inc = async (session: string, via: string, agent: Agent): Promise<Ack | undefined> => {
        const node = c.nodes.get(via);
        if (!node) return undefined;
        const sent = now();
        try {
          const answer = await request(`${node.url}/inc`, { headers: { cookie: `RSID=${session}` }, dispatcher: agent, signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS) });
          const text = await answer.body.text();
          const received = now();
          if (answer.statusCode !== 200) {
            failures.push({ session, via, status: answer.statusCode, sent, received });
            return undefined;
          }
          const body = JSON.parse(text) as { id: string; n: number; node: string; epoch: string };
          if (body.id !== session) {
            // Another session than the cookie's (a new one issued for it): that session is lost.
            wrong.push({ invariant: 'heal', session, message: `${via} answered for another session, sent at ${sent.toFixed(1)}: ${text}` });
            return undefined;
          }
          const logged: Ack = { session, n: body.n, node: body.node, epoch: body.epoch, via, sent, received };
          acks.push(logged);
          return logged;
        } catch (error) {
          failures.push({ session, via, status: (error as Error).name === 'TimeoutError' ? 'timeout' : 'error', sent, received: now() });
          return undefined;
        }
      };
      const agent = () => {
        const made = new Agent({ connections: 2 });
        agents.push(made);
        return made;
      };
      const pick = () => NODES[Math.floor(Math.random() * NODES.length)]!;

      // 12 sessions, 4 made on each node (so each node owns some when its fault comes).
      const sessions: string[] = [];
      for (let i = 0; i < SESSIONS; i++) {
        const via = NODES[i % NODES.length]!;
        const sent = now();
        const answer: Dispatcher.ResponseData = await request(`${c.node(via).url}/inc`);
        const body = (await answer.body.json()) as { id: string; n: number; node: string; epoch: string };
        assert.equal(answer.statusCode, 200);
        sessions.push(body.id);
        acks.push({ session: body.id, n: body.n, node: body.node, epoch: body.epoch, via, sent, received: now() });
      }

      // The sampler: every session's record, read straight from the store, over and over.
      const samples: Sample[] = [];
      let sampling = true;
      const sampleAll = async () => {
        for (const session of sessions) {
          const started = now();
          const record = await store.get(session);
          samples.push({ session, started, finished: now(), owner: record?.owner ?? null, fence: record?.fence ?? null, n: record?.memento ? (decodeMemento(record.memento) as { n: number }).n : null });
        }
      };
      const sampler = (async () => {
        while (sampling) {
          await sampleAll();
          await sleep(100);
        }
      })();

      // The clients: 3 per session, each on connections of its own, through random nodes.
      let running = true;
      const clients = sessions.flatMap((session) =>
        Array.from({ length: CLIENTS_PER_SESSION }, async () => {
          const own = agent();
          while (running) {
            await inc(session, pick(), own);
            await sleep(10 + Math.random() * 40);
          }
        }),
      );

      const fault = async (what: string, node: string, start: () => void | Promise<unknown>, end: () => void | Promise<unknown>, holdMs: number) => {
        const from = now();
        await start();
        await sleep(holdMs);
        await end();
        faults.push({ what, node, from, to: now() });
      };
      const hold = LEASE_MS + PAST_LEASE_MS;
      const final: Ack[] = [];
      let history = 0;
      try {
        await workload();
        await heal();
      } finally {
        running = false;
        await Promise.all(clients);
        sampling = false;
        await sampler;
        for (const agentOf of agents) await agentOf.close();
      }
      await sampleAll();

      async function workload(): Promise<void> {
        try {
          await sleep(2_000);
          await fault('SIGSTOP', 'a', () => c!.signal('a', 'SIGSTOP'), () => c!.signal('a', 'SIGCONT'), hold);
          await sleep(2_500);
          await fault('store cut', 'b', () => proxies.get('b')!.cut(), () => proxies.get('b')!.restore(), hold);
          await sleep(2_500);
          await fault('store stall', 'c', () => proxies.get('c')!.stall(), () => proxies.get('c')!.flow(), hold);
          await sleep(2_500);
          await fault('kill -9', 'a', () => c!.signal('a', 'SIGKILL'), () => startNode(c!, 'a'), hold);
          await sleep(3_000);
        } finally {
          running = false;
          await Promise.all(clients);
        }
      }

      /** All nodes up, then the final round, then the final counts in the store. */
      async function heal(): Promise<void> {

        // Every node up and holding its lease.
        for (const name of NODES) {
          await waitFor(async () => (await request(`${c!.node(name).url}/readyz`).then((r) => (r.body.dump(), r.statusCode))) === 200, 20_000, `${name} ready`);
        }
        // Anything still in flight inside the cluster (a forward: 1 s at most) is over.
        await sleep(1_500);
        history = acks.length;
        // The final round: one request at a time per session, twice through every node.
        const finalAgent = agent();
        for (const session of sessions) {
          for (const via of [...NODES, ...NODES]) {
            const answer = await inc(session, via, finalAgent);
            if (answer) final.push(answer);
            else wrong.push({ invariant: 'heal', session, message: `after the heal, not served through ${via}: ${JSON.stringify(failures.at(-1))}` });
          }
        }
        // Every final count reaches the store (checkpointInterval 300 ms): nothing acknowledged is lost.
        const lastOf = new Map(final.map((a) => [a.session, a.n]));
        const stored = async (session: string) => {
          const record = await store.get(session);
          return record?.memento ? (decodeMemento(record.memento) as { n: number }).n : null;
        };
        await waitFor(async () => (await Promise.all(sessions.map(async (session) => (await stored(session)) === lastOf.get(session)))).every(Boolean), 10_000, 'the final counts checkpointed').catch(async () => {
          for (const session of sessions) {
            const n = await stored(session);
            if (n !== lastOf.get(session)) wrong.push({ invariant: 'heal', session, message: `the store holds n=${n}, not the last acknowledged n=${lastOf.get(session)}, 10 s after` });
          }
        });
      }

      // (i)-(iv) over everything; (v) against the epochs as the history before the final round left them.
      const report = check(acks, samples);
      const violations: Violation[] = [...wrong, ...report.violations, ...checkHeal(check(acks.slice(0, history), []).epochs, final)];
      violations.push(...partitionViolations(faults, acks, failures, samples));

      const statuses = new Map<string, number>();
      for (const failure of failures) statuses.set(String(failure.status), (statuses.get(String(failure.status)) ?? 0) + 1);
      const epochs = [...report.epochs.values()].reduce((sum, list) => sum + list.length, 0);
      const rolled = report.rollbacks.map((r) => r.values);
      t.diagnostic(`${kind}: ${acks.length} acknowledged (${final.length} in the final round), failures ${JSON.stringify(Object.fromEntries(statuses))}, ${samples.length} store samples`);
      t.diagnostic(`${epochs} epochs over ${SESSIONS} sessions: ${report.rollbacks.length} takeovers; values acknowledged again after a takeover (the loss the design allows: what the old copy acknowledged after its last checkpoint landed): max ${Math.max(0, ...rolled)}, total ${rolled.reduce((a, b) => a + b, 0)}`);
      // Per fault: the takeovers whose first answer came during it or up to the lease and 3 s after (or the next fault).
      const byFault = faults.map((f, i) => {
        const end = Math.min(f.to + LEASE_MS + 3_000, faults[i + 1]?.from ?? Infinity);
        return { f, values: report.rollbacks.filter((r) => r.at >= f.from && r.at < end).map((r) => r.values) };
      });
      const attributed = byFault.reduce((sum, { values }) => sum + values.length, 0);
      t.diagnostic(`takeovers per fault (count, max values acknowledged again): ${byFault.map(({ f, values }) => `${f.what} ${f.node}: ${values.length}, max ${Math.max(0, ...values)}`).join('; ')}; outside any fault: ${report.rollbacks.length - attributed}`);
      const events = new Map<string, number>();
      for (const node of started) for (const line of node.logs()) if (line.event && NOTABLE.has(line.event)) events.set(line.event, (events.get(line.event) ?? 0) + 1);
      t.diagnostic(`node log events: ${JSON.stringify(Object.fromEntries(events))}`);
      t.diagnostic(`faults: ${faults.map((f) => `${f.what} ${f.node} ${Math.round(f.to - f.from)} ms`).join('; ')}`);
      if (violations.length > 0 || process.env.RESIDENT_JEPSEN_KEEP) t.diagnostic(`history and node logs: ${keep(kind, { acks, failures, samples, faults, final }, started)}`);
      assert.deepEqual(violations, [], violations.map((v) => `[${v.invariant}] ${v.session.slice(0, 6)}…: ${v.message}`).join('\n'));
      assert.ok(report.rollbacks.length >= 1, 'the faults caused takeovers');
    });
  });
}

/**
 * G5 on the history: the node cut off from the store (or stalled) cannot renew its lease, so
 * it serves nothing whose request was sent once its lease may have run out (LEASE_MS after the
 * fault began) and answered before the fault ended; it answers 503 instead; and another node
 * takes over a session it owned when the fault began.
 */
function partitionViolations(faults: Fault[], acks: Ack[], failures: Failure[], samples: Sample[]): Violation[] {
  const violations: Violation[] = [];
  for (const fault of faults.filter((f) => f.what.startsWith('store'))) {
    const inside = (x: { sent: number; received: number }) => x.sent >= fault.from + LEASE_MS && x.received <= fault.to;
    for (const a of acks.filter((x) => x.node === fault.node && inside(x))) {
      violations.push({ invariant: 'epoch-order', session: a.session, message: `${fault.what} of ${fault.node}: it served n=${a.n} (sent ${Math.round(a.sent - fault.from)} ms into the fault)` });
    }
    if (!failures.some((f) => f.via === fault.node && f.status === 503 && inside(f))) {
      violations.push({ invariant: 'epoch-order', session: '-', message: `${fault.what} of ${fault.node}: it never answered 503` });
    }
    // Its sessions: owned by it in the last sample read before the fault began.
    const owned = new Set<string>();
    const last = new Map<string, Sample>();
    for (const s of samples) if (s.finished < fault.from && (!last.get(s.session) || last.get(s.session)!.finished < s.finished)) last.set(s.session, s);
    for (const [session, s] of last) if (s.owner?.startsWith(`${fault.node}#`)) owned.add(session);
    if (owned.size > 0 && !acks.some((a) => owned.has(a.session) && a.node !== fault.node && a.sent >= fault.from && a.received <= fault.to)) {
      violations.push({ invariant: 'epoch-order', session: '-', message: `${fault.what} of ${fault.node}: none of its ${owned.size} sessions was taken over by another node` });
    }
  }
  return violations;
}

/** Writes the history and every node's log to a new folder, for a person to read; returns it. */
function keep(kind: string, history: object, nodes: RunningNode[]): string {
  const dir = mkdtempSync(join(tmpdir(), `resident-jepsen-${kind}-`));
  writeFileSync(join(dir, 'history.json'), JSON.stringify(history));
  nodes.forEach((node, i) => writeFileSync(join(dir, `node-${node.name}-${i}.log`), node.child.stdout()));
  return dir;
}
