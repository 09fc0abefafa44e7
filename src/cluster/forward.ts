/**
 * Forwarding: a request that reached a node which does not hold its session goes to the node
 * that does, on its private listener, over keep-alive connections (undici), with the signed
 * forwarding header (./forward-auth.ts). The client gets exactly what the owner answered:
 * status, headers (Set-Cookie included) and body, streamed (G1). An owner that does not answer
 * within cluster.forwardTimeout gets the client a 504, and the forwarding node goes on serving
 * meanwhile: nothing here blocks its thread (G6).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { Agent, errors, request } from 'undici';
import type { WireRequest } from '../contexts/protocol.ts';
import { ResidentError } from '../errors.ts';
import { FORWARD_HEADER, ForwardAuth, type Forwarded } from './forward-auth.ts';

/** Request headers that describe one connection, not the request: never passed on (RFC 9110 §7.6.1), nor the length undici sets itself. */
const NOT_FORWARDED = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection', 'content-length', 'expect', FORWARD_HEADER]);
/** Response headers of the owner's connection to this node, not of the answer. */
const NOT_RELAYED = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection']);

export class Forwarder {
  readonly #agent: Agent;
  readonly #auth: ForwardAuth;

  constructor(auth: ForwardAuth, timeoutMs: number) {
    this.#auth = auth;
    this.#agent = new Agent({ keepAliveTimeout: 30_000, connections: 128, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  }

  /**
   * Sends `wire` to the owner at `ownerUrl` and writes its answer to `res`. Rejects with a
   * ResidentError (504 timeout, 502 unreachable) when no answer head arrived; once the head is
   * written, a failure cuts the connection, as any streamed body that fails.
   */
  async forward(ownerUrl: string, wire: WireRequest, via: Forwarded, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const parsed = new URL(wire.url);
    const path = `${parsed.pathname}${parsed.search}`;
    const lines = wire.headers === '' ? [] : wire.headers.split('\n');
    const headers: string[] = [];
    for (let i = 0; i < lines.length; i += 2) {
      if (!NOT_FORWARDED.has(lines[i]!.toLowerCase())) headers.push(lines[i]!, lines[i + 1]!);
    }
    headers.push(FORWARD_HEADER, this.#auth.sign(via, wire.method, path));
    let answer: Awaited<ReturnType<typeof request>>;
    try {
      answer = await request(new URL(path, ownerUrl), {
        method: wire.method as 'GET',
        headers,
        body: typeof wire.body === 'string' ? wire.body : wire.body ? Buffer.from(wire.body) : null,
        dispatcher: this.#agent,
      });
    } catch (error) {
      throw forwardError(error);
    }
    const out: string[] = [];
    for (const [name, value] of Object.entries(answer.headers)) {
      if (value === undefined || NOT_RELAYED.has(name)) continue;
      for (const one of Array.isArray(value) ? value : [value]) out.push(name, one);
    }
    res.writeHead(answer.statusCode, out);
    if (req.method === 'HEAD') {
      answer.body.resume();
      res.end();
      return;
    }
    try {
      await pipeline(answer.body, res);
    } catch {
      // The owner's body failed midway or the client left: nothing can be framed any more.
      res.destroy();
    }
  }

  close(): Promise<void> {
    return this.#agent.close();
  }
}

function forwardError(error: unknown): ResidentError {
  if (error instanceof errors.HeadersTimeoutError || error instanceof errors.BodyTimeoutError || error instanceof errors.ConnectTimeoutError) {
    return new ResidentError('RESIDENT_ERR_FORWARD_TIMEOUT', undefined, { cause: error });
  }
  return new ResidentError('RESIDENT_ERR_FORWARD_FAILED', `cannot forward to the owner: ${(error as Error).message}`, { cause: error });
}
