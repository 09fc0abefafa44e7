/** Answers for the operations endpoints (health, admin, metrics): never cached, never sniffed. */
import type { IncomingMessage, ServerResponse } from 'node:http';

/**
 * Paths answered before static files and hooks. `claims` is a plain string test, so the
 * request path of every other request pays no await for them.
 */
export interface OpsRoute {
  claims(path: string): boolean;
  handle(path: string, req: IncomingMessage, res: ServerResponse): Promise<void>;
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
