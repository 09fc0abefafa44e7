/**
 * The session store a peer (express.ts, fastify.ts) runs with, from its environment: the
 * library's in-memory store by default; STORE_PATH, a SQLite file (./sqlite-session-store.ts,
 * workloads c and i); STORE=redis, connect-redis on a node-redis client (STORE_URL,
 * STORE_PREFIX; workloads c and f). connect-redis is written for express-session and serves
 * @fastify/session as is: @fastify/session calls a store's get, set and destroy with the same
 * callbacks (its README: "Compatible with stores from express-session").
 */
import { RedisStore } from 'connect-redis';
import { createClient } from 'redis';
import { SqliteSessionStore } from './sqlite-session-store.ts';

export async function peerStore(env: NodeJS.ProcessEnv = process.env): Promise<SqliteSessionStore | RedisStore | undefined> {
  if (env.STORE === 'redis') {
    const client = createClient({ url: env.STORE_URL ?? 'redis://127.0.0.1:6379' });
    // A lost connection fails the requests that need it (counted as non-2xx), not the process.
    client.on('error', (error) => process.stderr.write(`redis: ${(error as Error).message}\n`));
    await client.connect();
    return new RedisStore({ client, prefix: env.STORE_PREFIX ?? 'sess:' });
  }
  return env.STORE_PATH ? new SqliteSessionStore(env.STORE_PATH) : undefined;
}

