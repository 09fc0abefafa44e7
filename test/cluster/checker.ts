/**
 * A Jepsen-style checker for the cluster's counter history (./jepsen.test.ts): pure functions
 * over what the clients saw (every acknowledged /inc: session, value, node, epoch, send and
 * receive time on the test's one monotonic clock) and what a sampler read from the store behind
 * the nodes' backs (each session's record: owner, fence, stored count, with the read's start and
 * end). It says which invariant broke, for which session, with the operations that show it.
 *
 * An "epoch" is one live copy of a session's context: the fixture hook draws a random UUID into
 * ctx.vars, which no memento carries, so a resumed or taken-over context has a new one.
 *
 * The one fact the timing arguments rest on: a request's effect (its increment, on the copy
 * that served it) happened at some instant inside [sent, received] of that request, and a node
 * checks its lease after the hook ran and before it answers (src/edge/handler.ts), so the
 * effect of an acknowledged request happened while its node still held the lease. Everything
 * below is exact under that fact: no tolerance on timing is needed, see `checkEpochOrder`.
 */

export interface Ack {
  session: string;
  n: number;
  /** The node whose hook ran (the answer's `node`), not the one the request was sent to. */
  node: string;
  epoch: string;
  /** The node the request was sent to. */
  via: string;
  sent: number;
  received: number;
}

export interface Sample {
  session: string;
  started: number;
  finished: number;
  /** null: no record. */
  owner: string | null;
  fence: number | null;
  /** The stored count (the memento's n), null without a memento. */
  n: number | null;
}

export type Invariant = 'serial' | 'epoch-order' | 'stored-floor' | 'store-monotonic' | 'one-node' | 'heal';

export interface Violation {
  invariant: Invariant;
  session: string;
  message: string;
}

export interface Epoch {
  session: string;
  epoch: string;
  node: string;
  ops: Ack[];
  /** The latest send among its acknowledged requests: its copy was live at or after this. */
  lastSent: number;
  /** The earliest receive: its copy was live at or before this. */
  firstReceived: number;
  first: number;
  last: number;
}

export interface Report {
  violations: Violation[];
  /** Per session, its epochs in the order the history proves (any order where it proves none). */
  epochs: Map<string, Epoch[]>;
  /** Per takeover (each epoch after a session's first): values acknowledged again (checkpoint-bounded loss). */
  rollbacks: Array<{ session: string; from: string; to: string; values: number; /** The new epoch's first answer. */ at: number }>;
}

const short = (id: string) => `${id.slice(0, 6)}…`;
const op = (a: Ack) => `n=${a.n} on ${a.node} via ${a.via} [${a.sent.toFixed(1)}, ${a.received.toFixed(1)}]`;

function groupBy<T>(items: Iterable<T>, key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const group = groups.get(k);
    if (group) group.push(item);
    else groups.set(k, [item]);
  }
  return groups;
}

export function epochsOf(acks: Ack[]): Map<string, Epoch[]> {
  const result = new Map<string, Epoch[]>();
  for (const [session, ofSession] of groupBy(acks, (a) => a.session)) {
    const epochs: Epoch[] = [];
    for (const [epoch, ops] of groupBy(ofSession, (a) => a.epoch)) {
      ops.sort((x, y) => x.n - y.n);
      epochs.push({
        session,
        epoch,
        node: ops[0]!.node,
        ops,
        lastSent: Math.max(...ops.map((a) => a.sent)),
        firstReceived: Math.min(...ops.map((a) => a.received)),
        first: ops[0]!.n,
        last: ops.at(-1)!.n,
      });
    }
    result.set(session, epochs);
  }
  return result;
}

/**
 * (i) One live copy serializes its requests: within an epoch no value is acknowledged twice, and
 * a request sent after another was answered got a greater value (real-time order). Concurrent
 * requests may come back in any order. Also: an epoch lives on one node.
 */
export function checkSerial(epoch: Epoch): Violation[] {
  const violations: Violation[] = [];
  const { session } = epoch;
  const nodes = new Set(epoch.ops.map((a) => a.node));
  if (nodes.size > 1) violations.push({ invariant: 'one-node', session, message: `epoch ${short(epoch.epoch)} answered from nodes ${[...nodes].join(', ')}` });
  for (let i = 1; i < epoch.ops.length; i++) {
    if (epoch.ops[i]!.n === epoch.ops[i - 1]!.n) {
      violations.push({ invariant: 'serial', session, message: `epoch ${short(epoch.epoch)} acknowledged n=${epoch.ops[i]!.n} twice: ${op(epoch.ops[i - 1]!)} and ${op(epoch.ops[i]!)}` });
    }
  }
  // Sweep in send order; `done` are the requests answered before the current one was sent.
  const bySent = [...epoch.ops].sort((x, y) => x.sent - y.sent);
  const byReceived = [...epoch.ops].sort((x, y) => x.received - y.received);
  let j = 0;
  let max: Ack | undefined;
  for (const a of bySent) {
    while (j < byReceived.length && byReceived[j]!.received < a.sent) {
      if (!max || byReceived[j]!.n > max.n) max = byReceived[j];
      j++;
    }
    if (max && a.n <= max.n) {
      violations.push({ invariant: 'serial', session, message: `epoch ${short(epoch.epoch)} went back: ${op(a)} was sent after ${op(max)} was answered` });
    }
  }
  return violations;
}

/**
 * (ii) Epochs never overlap in time. An epoch's copy was live at some instant ≤ firstReceived
 * (its first answer) and at some instant ≥ lastSent (its last request was served after it was
 * sent). E may come before F only if E's last effect can precede F's first one:
 * E.lastSent < F.firstReceived. Two epochs that can be ordered neither way were live at once: a
 * fork. (Pairwise orderability is enough for a consistent total order: a cycle of forced pairs
 * would chain lastSent < firstReceived ≤ lastSent… around back to itself.)
 *
 * Why not "no earlier epoch answers after a later one answered", on receive times, with a few ms
 * of tolerance: an answer's delivery can be late by any amount (a node passes its lease check,
 * then is SIGSTOPped before writing the answer: the client gets it after SIGCONT, after the new
 * owner's answers). That answer is correct (its effect came before the lease ran out), so the
 * check compares the earlier epoch's sends, not its receives, with the later one's receives: the
 * request's own flight time is the tolerance, and it is exact.
 *
 * Returns the epochs in an order the history proves, and the forks.
 */
export function checkEpochOrder(epochs: Epoch[]): { ordered: Epoch[]; violations: Violation[] } {
  const violations: Violation[] = [];
  const before = (e: Epoch, f: Epoch) => e.lastSent < f.firstReceived;
  for (let i = 0; i < epochs.length; i++) {
    for (let k = i + 1; k < epochs.length; k++) {
      const [e, f] = [epochs[i]!, epochs[k]!];
      if (!before(e, f) && !before(f, e)) {
        const witness = (x: Epoch, y: Epoch) => `${short(x.epoch)} on ${x.node} (n ${x.first}..${x.last}) served a request sent at ${x.lastSent.toFixed(1)}, after ${short(y.epoch)} on ${y.node} (n ${y.first}..${y.last}) had answered at ${y.firstReceived.toFixed(1)}`;
        violations.push({ invariant: 'epoch-order', session: e.session, message: `two live copies at once: ${witness(e, f)}, and ${witness(f, e)}` });
      }
    }
  }
  // Topological order: repeatedly take an epoch that may come before every one left (with no
  // fork one always exists); with a fork, the earliest first answer breaks the tie.
  const left = [...epochs].sort((x, y) => x.firstReceived - y.firstReceived);
  const ordered: Epoch[] = [];
  while (left.length > 0) {
    const index = Math.max(0, left.findIndex((e) => left.every((f) => f === e || before(e, f))));
    ordered.push(left.splice(index, 1)[0]!);
  }
  return { ordered, violations };
}

/**
 * (iii) No copy serves from below what the store held durably before: the stored count only
 * grows (a new owner starts from it, fenced writes keep any other copy out), and a copy's count
 * is at least the stored one. So a request sent after a sample read count c got a value > c. A
 * taken-over (or resurrected stale) copy that started below the last checkpoint breaks this on
 * its first answer. Samples per session, any order.
 */
export function checkStoredFloor(acks: Ack[], samples: Sample[]): Violation[] {
  const violations: Violation[] = [];
  const bySession = groupBy(samples, (s) => s.session);
  for (const [session, ofSession] of groupBy(acks, (a) => a.session)) {
    const read = (bySession.get(session) ?? []).filter((s) => s.n !== null).sort((x, y) => x.finished - y.finished);
    // floor[i]: the greatest count read by the samples 0..i.
    const floor: Sample[] = [];
    for (const s of read) floor.push(floor.length > 0 && floor.at(-1)!.n! >= s.n! ? floor.at(-1)! : s);
    for (const a of ofSession) {
      let lo = 0;
      let hi = read.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (read[mid]!.finished < a.sent) lo = mid + 1;
        else hi = mid;
      }
      const seen = lo > 0 ? floor[lo - 1]! : undefined;
      if (seen && a.n <= seen.n!) {
        violations.push({ invariant: 'stored-floor', session, message: `${op(a)} (epoch ${short(a.epoch)}) is not above n=${seen.n} that the store held (owner ${seen.owner}, fence ${seen.fence}, read by ${seen.finished.toFixed(1)})` });
      }
    }
  }
  return violations;
}

/**
 * (iv) What the store holds never goes back: of two reads of a record where one finished before
 * the other started, the later one has a fence and a count no smaller; one fence always names
 * one owner; a record, once there, stays (no session is closed in the test).
 */
export function checkStoreMonotonic(samples: Sample[]): Violation[] {
  const violations: Violation[] = [];
  for (const [session, ofSession] of groupBy(samples, (s) => s.session)) {
    const owners = new Map<number, string | null>();
    for (const s of ofSession) {
      if (s.fence === null) continue;
      if (owners.has(s.fence) && owners.get(s.fence) !== s.owner) {
        violations.push({ invariant: 'store-monotonic', session, message: `fence ${s.fence} named two owners: ${owners.get(s.fence)} and ${s.owner}` });
      }
      owners.set(s.fence, s.owner);
    }
    const byStarted = [...ofSession].sort((x, y) => x.started - y.started);
    const byFinished = [...ofSession].sort((x, y) => x.finished - y.finished);
    let j = 0;
    let fence: Sample | undefined;
    let count: Sample | undefined;
    let present: Sample | undefined;
    for (const s of byStarted) {
      while (j < byFinished.length && byFinished[j]!.finished < s.started) {
        const done = byFinished[j++]!;
        if (done.fence !== null && (!fence || done.fence > fence.fence!)) fence = done;
        if (done.n !== null && (!count || done.n > count.n!)) count = done;
        present ??= done.fence !== null ? done : undefined;
      }
      if (s.fence === null) {
        if (present) violations.push({ invariant: 'store-monotonic', session, message: `the record vanished at ${s.started.toFixed(1)} (it was there at ${present.finished.toFixed(1)})` });
        continue;
      }
      if (fence && s.fence < fence.fence!) violations.push({ invariant: 'store-monotonic', session, message: `fence went back from ${fence.fence} (${fence.owner}) to ${s.fence} (${s.owner})` });
      if (count && s.n !== null && s.n < count.n!) violations.push({ invariant: 'store-monotonic', session, message: `stored n went back from ${count.n} (fence ${count.fence}) to ${s.n} (fence ${s.fence})` });
    }
  }
  return violations;
}

/**
 * (v) After the heal, a final round (sequential, one request at a time per session, through
 * every node): every answer from one epoch, the epoch the history ended in, each value exactly
 * one more than the one before (no acknowledged value lost, no other copy in between), the
 * first above everything that epoch acknowledged before. `history` holds everything before
 * the final round; `final` is in the order it was sent.
 */
export function checkHeal(history: Map<string, Epoch[]>, final: Ack[]): Violation[] {
  const violations: Violation[] = [];
  for (const [session, ops] of groupBy(final, (a) => a.session)) {
    const epochs = new Set(ops.map((a) => a.epoch));
    const last = history.get(session)?.at(-1);
    if (epochs.size !== 1) {
      violations.push({ invariant: 'heal', session, message: `the final round was answered by ${epochs.size} epochs: ${ops.map(op).join('; ')}` });
      continue;
    }
    if (last && last.epoch !== ops[0]!.epoch) {
      violations.push({ invariant: 'heal', session, message: `the final round answered from epoch ${short(ops[0]!.epoch)} on ${ops[0]!.node}, not from the last epoch ${short(last.epoch)} on ${last.node} (n ${last.first}..${last.last})` });
    } else if (last && ops[0]!.n <= last.last) {
      violations.push({ invariant: 'heal', session, message: `the final round started at n=${ops[0]!.n}, not above the last acknowledged n=${last.last}` });
    }
    for (let i = 1; i < ops.length; i++) {
      if (ops[i]!.n !== ops[i - 1]!.n + 1) violations.push({ invariant: 'heal', session, message: `the final round skipped or lost a value: ${op(ops[i - 1]!)} then ${op(ops[i]!)}` });
    }
  }
  return violations;
}

/** Values acknowledged again by each epoch after a session's first: those its takeover lost. */
export function rollbacks(ordered: Epoch[]): Report['rollbacks'] {
  const result: Report['rollbacks'] = [];
  let max = -Infinity;
  let previous: Epoch | undefined;
  for (const e of ordered) {
    if (previous) result.push({ session: e.session, from: `${short(previous.epoch)}@${previous.node}`, to: `${short(e.epoch)}@${e.node}`, values: Math.max(0, max - e.first + 1), at: e.firstReceived });
    max = Math.max(max, e.last);
    previous = e;
  }
  return result;
}

/** (i)–(iv) over the whole history. */
export function check(acks: Ack[], samples: Sample[]): Report {
  const violations: Violation[] = [];
  const epochs = new Map<string, Epoch[]>();
  const rolled: Report['rollbacks'] = [];
  for (const [session, ofSession] of epochsOf(acks)) {
    for (const e of ofSession) violations.push(...checkSerial(e));
    const { ordered, violations: forks } = checkEpochOrder(ofSession);
    violations.push(...forks);
    epochs.set(session, ordered);
    rolled.push(...rollbacks(ordered));
  }
  violations.push(...checkStoredFloor(acks, samples), ...checkStoreMonotonic(samples));
  return { violations, epochs, rollbacks: rolled };
}
