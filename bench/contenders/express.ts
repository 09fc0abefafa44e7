/**
 * express 5 + express-session: the classic Node peer. Its MemoryStore unless STORE_PATH names
 * a SQLite file or STORE=redis asks for connect-redis (./peer-store.ts); SAVE_UNINITIALIZED=0
 * sets `saveUninitialized: false`.
 */
import express from 'express';
import session from 'express-session';
import type { AddressInfo } from 'node:net';
import { memory, serveControl } from './control.ts';
import { peerStore } from './peer-store.ts';

declare module 'express-session' {
  interface SessionData {
    n: number;
    rows: number[];
  }
}

const app = express();
const store = await peerStore();
app.use(session({ secret: 'bench-secret-bench-secret-bench!', resave: false, saveUninitialized: process.env.SAVE_UNINITIALIZED !== '0', name: 'sid', store }));
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
