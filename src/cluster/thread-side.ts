/**
 * The cluster on an edge thread: its ownership (claims and fenced writes, ./ownership.ts), the
 * forwarding of requests for sessions another node holds, the routing cookie, and the private
 * listener where other nodes forward requests for this node's sessions (every edge thread
 * listens on it, as on the public port, with SO_REUSEPORT).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { ResidentConfig } from '../config.ts';
import type { RpcPort } from '../contexts/rpc.ts';
import { ResidentError } from '../errors.ts';
import { sessionCookieWriter } from '../http/cookies.ts';
import type { Log } from '../log.ts';
import { FirstPerWindow } from '../sessions/first-per-window.ts';
import type { SessionCounters } from '../sessions/counters.ts';
import type { ContextStore } from '../stores/store.ts';
import type { ClusterEdge } from './edge.ts';
import { FORWARD_HEADER, ForwardAuth, nodeOf, type Forwarded } from './forward-auth.ts';
import { Forwarder } from './forward.ts';
import { LeaseView } from './lease-view.ts';
import { ClusterOwnership } from './ownership.ts';
import { RemoteRegistry } from './remote-registry.ts';
import { PEER_PATH, PeerCalls, answerPeerCall, type PeerAnswers } from './peer-calls.ts';

/** What the main thread gives each edge thread when cluster.enabled. */
export interface ClusterSetup {
  /** The lease's serve-until time and this node's incarnation (./lease-view.ts). */
  lease: SharedArrayBuffer;
  /** The private listener's port (picked by the main thread when cluster.port is 0). */
  privatePort: number;
  /** The threads listen on it with SO_REUSEPORT (the main thread's hold, ./private-port.ts, is joined the same way). */
  reusePort: boolean;
}

/** The main thread's cluster calls to an edge thread. */
export type ClusterControl = { op: 'relinquish'; deadlineMs: number };

export class ClusterThread {
  readonly ownership: ClusterOwnership;
  readonly edge: ClusterEdge;
  readonly #config: ResidentConfig['cluster'];
  readonly #privatePort: number;
  readonly #reusePort: boolean;
  #server: Server | null = null;
  readonly #peers: PeerCalls;

  constructor(main: RpcPort, config: ResidentConfig, setup: ClusterSetup, store: ContextStore, counters: SessionCounters, log: Log) {
    const lease = new LeaseView(setup.lease);
    this.#config = config.cluster;
    this.#privatePort = setup.privatePort;
    this.#reusePort = setup.reusePort;
    const auth = new ForwardAuth(config.cluster.secret);
    const failures = new FirstPerWindow(60_000);
    this.#peers = new PeerCalls(auth, config.cluster.forwardTimeout);
    this.ownership = new ClusterOwnership({ registry: new RemoteRegistry(main), store, lease, counters, peers: this.#peers });
    // Written like the session cookie (same Max-Age, SameSite, Secure), so a browser keeps both alike.
    const routing = sessionCookieWriter({ name: config.cluster.routingCookie, timeout: config.sessions.cookieTimeout, sameSite: config.sessions.sameSite });
    this.edge = {
      forwarder: new Forwarder(auth, config.cluster.forwardTimeout),
      auth,
      serving: () => this.ownership.serving(),
      routingCookie: (secure) => routing(config.cluster.nodeId, secure),
      forwarded: () => void counters.forwards++,
      // While an owner is dead every retry of its clients fails alike: one warning per owner and
      // minute says so, the rest go to debug (a line per request would flood the log).
      forwardFailed: (owner, error) => {
        const fields = { event: 'forward-failed', owner, code: error.code, reason: (error.cause as Error | undefined)?.message ?? error.message };
        log[failures.level(owner)](fields, 'the node holding the session did not answer a forwarded request');
      },
    };
  }

  /**
   * Listens on the private port. `handle` serves a request another node forwarded, with what
   * that node vouched for; `answers` what other nodes ask of this one (./peer-calls.ts). A
   * request without a valid signature for this incarnation is refused (403) unread, or told to
   * retry (503) when it was signed for an earlier incarnation of this node.
   */
  async listen(handle: (req: IncomingMessage, res: ServerResponse, forwarded: Forwarded) => void, answers: PeerAnswers): Promise<void> {
    const { auth } = this.edge;
    // Room for a public request's 16 KiB of headers plus the forwarding header the node adds.
    const server = createServer({ maxHeaderSize: 32 * 1024 }, (req, res) => {
      // A peer call's signature is for a peer call alone, and a forward's for a forward: a
      // client's path under PEER_PATH, forwarded and signed as a forward, is refused here.
      const purpose = req.url?.startsWith(PEER_PATH) ? 'peer' : 'forward';
      const target = { purpose, method: req.method ?? 'GET', path: req.url ?? '/', cookie: req.headers.cookie ?? '' } as const;
      const vouched = auth.verify(req.headers[FORWARD_HEADER], target);
      const me = this.ownership.owner;
      if (vouched?.to === me && purpose === 'peer') {
        void answerPeerCall(req, res, answers);
        return;
      }
      if (vouched?.to === me) {
        handle(req, res, vouched);
        return;
      }
      // Signed for an earlier incarnation of this node (restarted, or rejoined after a lost
      // lease): the sender's view is stale, nothing ran, and the client's retry finds the
      // session where the store says it is now. Anything else is refused.
      const stale = vouched !== undefined && nodeOf(vouched.to) === nodeOf(me);
      const answer = new ResidentError(stale ? 'RESIDENT_ERR_FENCED' : 'RESIDENT_ERR_FORWARD_REFUSED');
      res.writeHead(answer.status, { 'content-type': 'text/plain; charset=utf-8', connection: 'close', ...(stale && { 'retry-after': '1' }) });
      res.end(answer.publicMessage);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port: this.#privatePort, host: this.#config.host, reusePort: this.#reusePort }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#server = server;
  }

  /** A control call from the main thread: the lease was lost, every context is let go. */
  control(call: ClusterControl, relinquish: (deadlineMs: number) => Promise<void>): Promise<null> {
    return relinquish(call.deadlineMs).then(() => null);
  }

  async close(): Promise<void> {
    const server = this.#server;
    if (server) {
      await new Promise((resolve) => {
        server.close(resolve);
        server.closeAllConnections();
      });
    }
    await this.edge.forwarder.close();
    await this.#peers.stop();
  }
}
