/**
 * What one node asks another besides forwarding a client's request: operations on sessions the
 * other node holds live (an admin close, a user signed out everywhere, sessions.maxPerUser).
 * Sent to the owner's private listener under a reserved path, signed like a forward
 * (./forward-auth.ts), so only a node with cluster.secret can ask.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Agent, request } from 'undici';
import { FORWARD_HEADER, type ForwardAuth } from './forward-auth.ts';

/** The private listener's paths for node-to-node calls; never a client's (clients never reach it unsigned). */
export const PEER_PATH = '/.resident-cluster/';

export interface ClusterPeers {
  /** Asks the node (incarnation `owner` at `url`) to close session `id`; resolves whether it closed one. */
  close(owner: { owner: string; url: string }, id: string, by: string): Promise<boolean>;
}

/** What this node answers other nodes' calls with. */
export interface PeerAnswers {
  closeSession(id: string, by: string): Promise<boolean>;
}

export class PeerCalls implements ClusterPeers {
  readonly #auth: ForwardAuth;
  readonly #agent: Agent;

  constructor(auth: ForwardAuth, timeoutMs: number) {
    this.#auth = auth;
    this.#agent = new Agent({ keepAliveTimeout: 30_000, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  }

  async close(owner: { owner: string; url: string }, id: string, by: string): Promise<boolean> {
    const path = `${PEER_PATH}close?${new URLSearchParams({ id, by })}`;
    const signed = this.#auth.sign({ clientIp: '', secure: false, hops: 1 }, { purpose: 'peer', method: 'POST', path, cookie: '', to: owner.owner });
    const answer = await request(`${new URL(owner.url).origin}${path}`, { method: 'POST', headers: { [FORWARD_HEADER]: signed }, dispatcher: this.#agent });
    // Read as text first: a refusal (403, or 503 from a stale view of the node) is not JSON.
    const text = await answer.body.text();
    if (answer.statusCode !== 200) throw new Error(`node ${owner.url} answered ${answer.statusCode} to a close: ${text.slice(0, 200)}`);
    return (JSON.parse(text) as { closed?: unknown }).closed === true;
  }

  stop(): Promise<void> {
    return this.#agent.close();
  }
}

/** Answers a signed peer call that reached the private listener. */
export async function answerPeerCall(req: IncomingMessage, res: ServerResponse, answers: PeerAnswers): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://peer');
  let status = 200;
  let body: unknown;
  try {
    if (req.method === 'POST' && url.pathname === `${PEER_PATH}close`) {
      body = { closed: await answers.closeSession(url.searchParams.get('id') ?? '', url.searchParams.get('by') ?? 'cluster') };
    } else {
      status = 404;
      body = { error: 'no such peer call' };
    }
  } catch (error) {
    status = 500;
    body = { error: (error as Error).message };
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) });
  res.end(text);
}
