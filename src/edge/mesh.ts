/**
 * The other edge threads, as one edge thread reaches them: a port per peer (the main thread
 * makes each pair's MessageChannel and hands both ends over, again whenever a thread is
 * replaced). A request whose session is homed on another thread hops there and its answer
 * comes back to be written here (a hop); the rooms' rules that reach across homes (the global
 * cap, a user's sessions) travel the same ports (src/sessions/peers.ts).
 */
import type { MessagePort } from 'node:worker_threads';
import { ResidentError, isResidentError, type ErrorCode } from '../errors.ts';
import type { Homes } from '../contexts/shared-state.ts';
import type { WireBody, WireRequest, WorkerReply, WorkerTask } from '../contexts/protocol.ts';
import { RpcClosedError, RpcPort, withTransfer } from '../contexts/rpc.ts';
import type { CookieAction, Outcome, SessionInfo } from '../sessions/index.ts';
import type { HomeCandidate, IdleCandidate, IdleCandidates, Peers } from '../sessions/peers.ts';
import type { StreamHost } from '../http/stream-response.ts';
import type { Log } from '../log.ts';
import { hashId } from '../id-hash.ts';

/** How long a hop waits for a home thread that is being replaced. */
const PEER_WAIT_MS = 10_000;
/** How long the cap waits for a peer's idle candidate: a stuck peer is left out, not waited for. */
const CANDIDATE_WAIT_MS = 500;

/** What one thread asks another (and the main thread asks a thread: see ./thread.ts). */
export type PeerCall =
  | { op: 'serve'; presented: string[]; clientIp: string; request: WireRequest }
  | { op: 'claimable'; presented: string[]; clientIp: string }
  | { op: 'stream'; task: WorkerTask }
  /** `source`: the new session's, whose unproven ones are chosen first. */
  | { op: 'oldestIdle'; source?: string }
  /** `unproven`, `ofSource`: only one of the class the home reported (see Peers.evict). */
  | { op: 'evictOldestIdle'; unproven: boolean; ofSource: boolean; source?: string }
  | { op: 'userHere'; userId: string }
  /** `requester`: the ID of the session whose "sign out everywhere else" asks (see Users.closeUser). */
  | { op: 'closeUserHere'; userId: string; by: string; requester?: string }
  | { op: 'limitUser'; userId: string; keepId: string }
  /** `requester`: as for closeUserHere, when the close is part of a "sign out everywhere else". */
  | { op: 'closeSession'; id: string; by: string; requester?: string };

/** An Outcome as it crosses between threads: an error by its code. */
export type WireOutcome =
  | { kind: 'reply'; status: number; headers: string[]; body: WireBody; cookie: CookieAction }
  | { kind: 'error'; code: ErrorCode; message: string; cookie: CookieAction }
  | { kind: 'elsewhere'; owner: string; url: string; cookie: null };

export function toWireOutcome(outcome: Outcome): WireOutcome {
  if (outcome.kind === 'reply') return outcome.body instanceof ArrayBuffer ? withTransfer({ ...outcome }, [outcome.body]) : outcome;
  if (outcome.kind === 'elsewhere') return outcome;
  return { kind: 'error', code: outcome.error.code, message: outcome.error.message, cookie: outcome.cookie };
}

export function fromWireOutcome(wire: WireOutcome): Outcome {
  if (wire.kind === 'reply' || wire.kind === 'elsewhere') return wire;
  return { kind: 'error', error: new ResidentError(wire.code, wire.message), cookie: wire.cookie };
}

interface Peer {
  rpc: RpcPort;
  threadId: number;
}

export class Mesh implements Peers, StreamHost {
  readonly #slot: number;
  readonly #homes: Homes;
  readonly #threadId: number;
  readonly #peers = new Map<number, Peer>();
  /** Hops waiting for a peer's port (its thread is being replaced). */
  readonly #waiting = new Map<number, Array<(peer: Peer | undefined) => void>>();
  readonly #answer: (call: PeerCall) => unknown;
  readonly #local: StreamHost;
  /** Hop calls the watchdog said stalled their home thread: answered 504, not 502. */
  readonly #stalled = new Set<string>();
  readonly #log: Log;

  constructor(slot: number, homes: Homes, threadId: number, answer: (call: PeerCall) => unknown, local: StreamHost, log: Log) {
    this.#log = log;
    this.#slot = slot;
    this.#homes = homes;
    this.#threadId = threadId;
    this.#answer = answer;
    this.#local = local;
  }

  /** The main thread handed over the port to peer `slot` (thread `threadId`). */
  connect(slot: number, port: MessagePort, threadId: number): void {
    this.#peers.get(slot)?.rpc.close();
    const rpc = new RpcPort(port, `the port to worker thread ${threadId}`);
    rpc.handle((call) => this.#answer(call as PeerCall));
    const peer = { rpc, threadId };
    this.#peers.set(slot, peer);
    rpc.onClose(() => {
      if (this.#peers.get(slot) === peer) this.#peers.delete(slot);
    });
    for (const wake of this.#waiting.get(slot)?.splice(0) ?? []) wake(peer);
  }

  /** The slot requests for `id` go to. */
  /** True while `slot`'s thread is connected to this one (false while it is being replaced). */
  connected(slot: number): boolean {
    return this.#peers.has(slot);
  }

  homeOf(id: string): number {
    return this.#homes.of(id);
  }

  /** `slot` will get no thread again (the crash-loop breaker tripped): hops waiting for it stop waiting. */
  retired(slot: number): void {
    for (const wake of this.#waiting.get(slot)?.splice(0) ?? []) wake(undefined);
  }

  get slot(): number {
    return this.#slot;
  }

  /** Connected peers, by slot. */
  get size(): number {
    return this.#peers.size;
  }

  #peer(slot: number): Promise<Peer | undefined> {
    const peer = this.#peers.get(slot);
    if (peer) return Promise.resolve(peer);
    return new Promise((resolve) => {
      const waiters = this.#waiting.get(slot) ?? [];
      this.#waiting.set(slot, waiters);
      const timer = setTimeout(() => {
        const index = waiters.indexOf(wake);
        if (index !== -1) waiters.splice(index, 1);
        resolve(undefined);
      }, PEER_WAIT_MS);
      timer.unref();
      const wake = (found: Peer | undefined) => {
        clearTimeout(timer);
        resolve(found);
      };
      waiters.push(wake);
    });
  }

  /** Sends a request to its home thread `home` and brings back its outcome (a hop). */
  async serve(home: number, presented: string[], clientIp: string, request: WireRequest): Promise<Outcome | 'retired'> {
    const peer = await this.#peer(home);
    if (!peer && this.#homes.isRetired(home)) return 'retired';
    if (!peer) return { kind: 'error', error: new ResidentError('RESIDENT_ERR_WORKER_LOST', `worker thread of slot ${home} did not come back`), cookie: null };
    const call = peer.rpc.nextCallId;
    // The home marks its hook with this, so the watchdog can name the stalled hop (504).
    const marked: WireRequest = { ...request, hop: [this.#slot, call] };
    const transfer = request.body instanceof ArrayBuffer ? [request.body] : undefined;
    try {
      return fromWireOutcome(await peer.rpc.call<WireOutcome>({ op: 'serve', presented, clientIp, request: marked } satisfies PeerCall, transfer));
    } catch (error) {
      const key = `${home}:${call}`;
      if (this.#stalled.delete(key)) {
        const timeout = new ResidentError('RESIDENT_ERR_HOOK_TIMEOUT', `onConnection held the worker thread of slot ${home} past workers.stallTimeout`);
        // The home thread that would log this hook's failure is the one terminated: this edge,
        // which answers the 504, logs it for the session (presented[0] is the one served there).
        const session = presented[0] === undefined ? undefined : hashId(presented[0]);
        this.#log.error({ event: 'hook-error', hook: 'onConnection', session, code: timeout.code, err: { type: 'ResidentError', code: timeout.code, message: timeout.message } }, 'onConnection failed: its thread was terminated');
        return { kind: 'error', error: timeout, cookie: null };
      }
      if (error instanceof RpcClosedError || (error as { code?: string }).code === 'RESIDENT_ERR_WORKER_LOST') return { kind: 'error', error: new ResidentError('RESIDENT_ERR_WORKER_LOST', undefined, { cause: error }), cookie: null };
      const code = (error as { code?: string }).code;
      return { kind: 'error', error: isResidentError(error) ? error : new ResidentError(code === 'RESIDENT_ERR_SHUTTING_DOWN' ? code : 'RESIDENT_ERR_HOOK_FAILED', undefined, { cause: error }), cookie: null };
    }
  }

  /** The watchdog is about to stop peer `slot`, whose hook for this thread's hop `call` holds it. */
  stalledHop(slot: number, call: number): void {
    this.#stalled.add(`${slot}:${call}`);
    // Forgotten if the hop had already settled.
    setTimeout(() => this.#stalled.delete(`${slot}:${call}`), 60_000).unref();
  }

  /** Pulls and cancels of a streamed body, sent to the thread that holds it. */
  async toThread(threadId: number, task: WorkerTask): Promise<WorkerReply> {
    if (threadId === this.#threadId) return this.#local.toThread(threadId, task);
    for (const peer of this.#peers.values()) {
      if (peer.threadId === threadId) return peer.rpc.call<WorkerReply>({ op: 'stream', task } satisfies PeerCall);
    }
    throw new RpcClosedError(`worker thread ${threadId}`);
  }

  /** Whether home `home` holds a session of this client among `presented` (duplicate cookies, A8). */
  async claimable(home: number, presented: string[], clientIp: string): Promise<'own' | 'foreign' | 'none'> {
    const peer = await this.#peer(home);
    if (!peer) return 'none';
    return peer.rpc.call<'own' | 'foreign' | 'none'>({ op: 'claimable', presented, clientIp } satisfies PeerCall).catch(() => 'none' as const);
  }

  // Peers, for the rooms.

  isLocal(id: string): boolean {
    return this.homeOf(id) === this.#slot;
  }

  async idleCandidates(source?: string): Promise<IdleCandidates> {
    const answers = await Promise.all(
      [...this.#peers].map(async ([home, peer]) => {
        const answer = await withTimeout(peer.rpc.call<HomeCandidate>({ op: 'oldestIdle', source } satisfies PeerCall), CANDIDATE_WAIT_MS).catch(() => null);
        const idle = answer?.idle;
        const candidate = idle && typeof idle.lastActive === 'number' ? { home, lastActive: idle.lastActive, unproven: idle.unproven === true, ofSource: idle.ofSource === true } : undefined;
        return { candidate, sourceHolds: answer?.sourceHolds === true };
      }),
    );
    return {
      candidates: answers.flatMap(({ candidate }) => (candidate ? [candidate] : [])),
      sourceHoldsUnproven: answers.some(({ sourceHolds }) => sourceHolds),
    };
  }

  async evict(home: number, candidate: IdleCandidate, source?: string): Promise<boolean> {
    const peer = this.#peers.get(home);
    if (!peer) return false;
    const call = { op: 'evictOldestIdle', unproven: candidate.unproven, ofSource: candidate.ofSource, source } satisfies PeerCall;
    return peer.rpc.call<boolean>(call).catch(() => false);
  }

  /**
   * A peer whose thread dies while it answers (a hook exited it) is left out rather than
   * failing the whole call: what it held in memory went with it, and what it had in the store
   * is in the store listing that follows, which reaches its sessions through its replacement.
   * Failing here skipped that listing, and a session it was closing came back (signed in)
   * from its checkpoint on the replacement.
   */
  async sessionsOfUser(userId: string): Promise<SessionInfo[]> {
    const lists = await Promise.all(
      [...this.#peers.values()].map((peer) => peer.rpc.call<SessionInfo[]>({ op: 'userHere', userId } satisfies PeerCall).catch(lostPeer<SessionInfo>)),
    );
    return lists.flat();
  }

  async closeUserElsewhere(userId: string, by: string, requester?: string): Promise<string[]> {
    const lists = await Promise.all(
      [...this.#peers.values()].map((peer) => peer.rpc.call<string[]>({ op: 'closeUserHere', userId, by, requester } satisfies PeerCall).catch(lostPeer<string>)),
    );
    return lists.flat();
  }

  userLimitHome(userId: string): number | null {
    const home = this.#homes.ofSlot(userSlot(userId));
    return home === this.#slot ? null : home;
  }

  async limitUserAt(home: number, userId: string, keepId: string): Promise<void> {
    const peer = await this.#peer(home);
    if (!peer) throw new ResidentError('RESIDENT_ERR_WORKER_LOST', 'the home that judges that user did not come back');
    await peer.rpc.call<void>({ op: 'limitUser', userId, keepId } satisfies PeerCall);
  }

  async closeSession(id: string, by: string, requester?: string): Promise<boolean> {
    const peer = await this.#peer(this.homeOf(id));
    if (!peer) throw new ResidentError('RESIDENT_ERR_WORKER_LOST', 'the home thread of that session did not come back');
    return peer.rpc.call<boolean>({ op: 'closeSession', id, by, requester } satisfies PeerCall);
  }

  close(): void {
    for (const peer of this.#peers.values()) peer.rpc.close();
    this.#peers.clear();
  }
}

/** A peer's answer lost with its thread (the port closed); any other failure stays one. */
function lostPeer<T>(error: unknown): T[] {
  if (error instanceof RpcClosedError || (error as { code?: string }).code === 'RESIDENT_ERR_WORKER_LOST') return [];
  throw error;
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([promise, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)))]).finally(() => clearTimeout(timer));
}

/** A slot number for `userId` (FNV-1a): every thread names the same one. */
function userSlot(userId: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < userId.length; i++) hash = Math.imul(hash ^ userId.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}
