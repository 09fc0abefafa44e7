/**
 * fastify 5 + @fastify/session: the fast Node peer. Its in-memory store unless STORE_PATH names
 * a SQLite file or STORE=redis asks for connect-redis (./peer-store.ts); SAVE_UNINITIALIZED=0
 * sets `saveUninitialized: false`.
 */
import fastifyCookie from '@fastify/cookie';
import fastifySession from '@fastify/session';
import Fastify from 'fastify';
import { memory, serveControl } from './control.ts';
import { peerStore } from './peer-store.ts';

declare module 'fastify' {
  interface Session {
    n: number;
    rows: number[];
  }
}

const app = Fastify({ logger: false, keepAliveTimeout: 60_000 });
await app.register(fastifyCookie);
const store = await peerStore();
await app.register(fastifySession, {
  secret: 'bench-secret-bench-secret-bench-secret!!',
  cookieName: 'sid',
  cookie: { secure: false, httpOnly: true, sameSite: 'lax' },
  saveUninitialized: process.env.SAVE_UNINITIALIZED !== '0',
  ...(store ? { store } : {}),
});
app.get('/select', async (req, reply) => {
  req.session.rows ??= Array.from({ length: 100 }, (_, i) => i);
  reply.type('text/plain');
  return String(req.session.rows.length);
});
app.get('/', async (req, reply) => {
  req.session.n = (req.session.n ?? 0) + 1;
  reply.type('text/plain');
  return String(req.session.n);
});
await app.listen({ port: 0, host: '127.0.0.1' });
serveControl((app.server.address() as { port: number }).port, { stats: () => memory() });
