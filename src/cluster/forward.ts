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
    // No cap on connections per owner: a long forward (a server-sent event stream) holds one,
    // and a cap would make every other forward to that owner wait behind it.
    this.#agent = new Agent({ keepAliveTimeout: 30_000, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  }

  /**
   * Sends `wire` to the owner at `ownerUrl` and writes its answer to `res`. Rejects with a
   * ResidentError (504 timeout, 502 unreachable) when no answer head arrived; once the head is
   * written, a failure cuts the connection, as any streamed body that fails.
   */
  async forward(owner: { owner: string; url: string }, wire: WireRequest, via: Forwarded, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const parsed = new URL(wire.url);
    const path = `${parsed.pathname}${parsed.search}`;
    // The owner's origin and the path as they are: resolving the path against the owner's URL
    // would let a path such as //elsewhere/ name another host (and hand it a signed header).
    const target = `${new URL(owner.url).origin}${path}`;
    const lines = wire.headers === '' ? [] : wire.headers.split('\n');
    const headers: string[] = [];
    for (let i = 0; i < lines.length; i += 2) {
      if (!NOT_FORWARDED.has(lines[i]!.toLowerCase())) headers.push(lines[i]!, lines[i + 1]!);
    }
    headers.push(FORWARD_HEADER, this.#auth.sign(via, { purpose: 'forward', method: wire.method, path, cookie: req.headers.cookie ?? '', to: owner.owner }));
    // A client that leaves stops its forward: it would hold a connection to the owner for nothing.
    const abort = new AbortController();
    const left = () => {
      if (!res.writableFinished) abort.abort();
    };
    res.once('close', left);
    let answer: Awaited<ReturnType<typeof request>>;
    try {
      answer = await request(target, {
        method: wire.method as 'GET',
        headers,
        body: typeof wire.body === 'string' ? wire.body : wire.body ? Buffer.from(wire.body) : null,
        dispatcher: this.#agent,
        signal: abort.signal,
      });
    } catch (error) {
      res.off('close', left);
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
    } finally {
      res.off('close', left);
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
