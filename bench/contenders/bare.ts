/** The practical limit: node:http and a Map of sessions, nothing else. */
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { memory, serveControl } from './control.ts';

const sessions = new Map<string, { n: number; rows?: number[] }>();
const SID = /(?:^|;\s*)sid=([^;]+)/;

const server = createServer((req, res) => {
  const id0 = SID.exec(req.headers.cookie ?? '')?.[1];
  let id = id0;
  let session = id ? sessions.get(id) : undefined;
  const headers: Record<string, string> = { 'content-type': 'text/plain' };
  if (!session) {
    id = randomBytes(16).toString('base64url');
    session = { n: 0 };
    sessions.set(id, session);
    headers['set-cookie'] = `sid=${id}; Path=/; HttpOnly; SameSite=Lax`;
  }
  if (req.url === '/select') {
    session.rows ??= Array.from({ length: 100 }, (_, i) => i);
    res.writeHead(200, headers);
    res.end(String(session.rows.length));
    return;
  }
  session.n++;
  res.writeHead(200, headers);
  res.end(String(session.n));
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  serveControl((server.address() as AddressInfo).port, { stats: () => ({ sessions: sessions.size, ...memory() }) });
});
