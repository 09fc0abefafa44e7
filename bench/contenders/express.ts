/** express 5 + express-session with its MemoryStore: the classic Node peer. */
import express from 'express';
import session from 'express-session';
import type { AddressInfo } from 'node:net';
import { memory, serveControl } from './control.ts';

declare module 'express-session' {
  interface SessionData {
    n: number;
    rows: number[];
  }
}

const app = express();
app.use(session({ secret: 'bench-secret-bench-secret-bench!', resave: false, saveUninitialized: true, name: 'sid' }));
app.get('/select', (req, res) => {
  req.session.rows ??= Array.from({ length: 100 }, (_, i) => i);
  res.type('text/plain').send(String(req.session.rows.length));
});
app.get('/', (req, res) => {
  req.session.n = (req.session.n ?? 0) + 1;
  res.type('text/plain').send(String(req.session.n));
});
const server = app.listen(0, '127.0.0.1', () => {
  serveControl((server.address() as AddressInfo).port, { stats: () => memory() });
});
server.keepAliveTimeout = 60_000;
