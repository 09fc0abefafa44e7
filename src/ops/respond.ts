/** Answers for the operations endpoints (health, admin, metrics): never cached, never sniffed. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RequestTarget } from '../http/target.ts';

/**
 * Paths answered before static files and hooks. `claims` is a plain string test, so the
 * request path of every other request pays no await for them. Both get the target the edge
 * parsed (src/http/target.ts), never req.url, which an absolute-form request fills with a URL.
 */
export interface OpsRoute {
  claims(path: string): boolean;
  handle(target: RequestTarget, req: IncomingMessage, res: ServerResponse): Promise<void>;
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(body), headers);
}

/** A HEAD request gets the same status and headers (Content-Length included) without the body. */
export function send(res: ServerResponse, status: number, contentType: string, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, {
    'content-type': contentType,
    'content-length': String(Buffer.byteLength(body)),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...headers,
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}
