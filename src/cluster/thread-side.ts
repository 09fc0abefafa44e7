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
import type { SessionCounters } from '../sessions/counters.ts';
import type { ContextStore } from '../stores/store.ts';
import type { ClusterEdge } from './edge.ts';
import { FORWARD_HEADER, ForwardAuth, type Forwarded } from './forward-auth.ts';
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
}

/** The main thread's cluster calls to an edge thread. */
export type ClusterControl = { op: 'relinquish'; deadlineMs: number };

export class ClusterThread {
  readonly ownership: ClusterOwnership;
  readonly edge: ClusterEdge;
  readonly #config: ResidentConfig['cluster'];
  readonly #privatePort: number;
  #server: Server | null = null;
  readonly #peers: PeerCalls;

  constructor(main: RpcPort, config: ResidentConfig, setup: ClusterSetup, store: ContextStore, counters: SessionCounters) {
    const lease = new LeaseView(setup.lease);
    this.#config = config.cluster;
    this.#privatePort = setup.privatePort;
    const auth = new ForwardAuth(config.cluster.secret);
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
    };
  }

  /**
   * Listens on the private port. `handle` serves a request another node forwarded, with what
   * that node vouched for; `answers` what other nodes ask of this one (./peer-calls.ts). A
   * request without a valid signature is refused (403) unread.
   */
  async listen(threads: number, handle: (req: IncomingMessage, res: ServerResponse, forwarded: Forwarded) => void, answers: PeerAnswers): Promise<void> {
    const { auth } = this.edge;
    const server = createServer((req, res) => {
      const forwarded = auth.verify(req.headers[FORWARD_HEADER], req.method ?? 'GET', req.url ?? '/');
      if (forwarded && req.url?.startsWith(PEER_PATH)) {
        void answerPeerCall(req, res, answers);
        return;
      }
      if (forwarded) {
        handle(req, res, forwarded);
        return;
      }
      const refused = new ResidentError('RESIDENT_ERR_FORWARD_REFUSED');
      res.writeHead(refused.status, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
      res.end(refused.publicMessage);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port: this.#privatePort, host: this.#config.host, reusePort: threads > 1 }, () => {
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
