/**
 * A session store on SQLite (better-sqlite3, WAL, synchronous NORMAL: Resident's own SQLite
 * settings) for the peers in workload (i), so their flood records land on disk as Resident's
 * would. Neither express-session nor @fastify/session ships one; this is what the popular
 * ones (better-sqlite3-session-store, connect-sqlite3) do: one row per session ID, the session
 * as JSON, an expiry. express-session needs a Store subclass (it listens to its events and uses
 * its createSession); @fastify/session calls only get, set and destroy, the same signatures.
 */
import Database from 'better-sqlite3';
import session from 'express-session';

type Callback<T = void> = (error: unknown, value?: T) => void;
/** What either library hands to `set`: an object whose `cookie` may carry an expiry. */
type Stored = { cookie?: { expires?: Date | string | null | undefined } };

/** How long a record without a cookie expiry is kept: Resident's default cookieTimeout, 8 hours. */
const DEFAULT_TTL_MS = 8 * 3_600_000;

export class SqliteSessionStore extends session.Store {
  readonly #db: Database.Database;
  readonly #get: Database.Statement<[string, number], { sess: string }>;
  readonly #set: Database.Statement<[string, string, number]>;
  readonly #destroy: Database.Statement<[string]>;
  readonly #touch: Database.Statement<[number, string]>;

  constructor(path: string) {
    super();
    this.#db = new Database(path);
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('synchronous = NORMAL');
    this.#db.exec('CREATE TABLE IF NOT EXISTS sessions (sid TEXT PRIMARY KEY, sess TEXT NOT NULL, expires INTEGER NOT NULL) WITHOUT ROWID');
    this.#get = this.#db.prepare('SELECT sess FROM sessions WHERE sid = ? AND expires > ?');
    this.#set = this.#db.prepare('INSERT INTO sessions (sid, sess, expires) VALUES (?, ?, ?) ON CONFLICT (sid) DO UPDATE SET sess = excluded.sess, expires = excluded.expires');
    this.#destroy = this.#db.prepare('DELETE FROM sessions WHERE sid = ?');
    this.#touch = this.#db.prepare('UPDATE sessions SET expires = ? WHERE sid = ?');
  }

  override get(sid: string, callback: Callback<any>): void {
    try {
      const row = this.#get.get(sid, Date.now());
      callback(null, row ? JSON.parse(row.sess) : null);
    } catch (error) {
      callback(error);
    }
  }

  override set(sid: string, sess: Stored, callback?: Callback): void {
    try {
      this.#set.run(sid, JSON.stringify(sess), expiryOf(sess));
      callback?.(null);
    } catch (error) {
      callback?.(error);
    }
  }

  override destroy(sid: string, callback?: Callback): void {
    try {
      this.#destroy.run(sid);
      callback?.(null);
    } catch (error) {
      callback?.(error);
    }
  }

  override touch(sid: string, sess: Stored, callback?: Callback): void {
    try {
      this.#touch.run(expiryOf(sess), sid);
      callback?.(null);
    } catch (error) {
      callback?.(error);
    }
  }
}

function expiryOf(sess: Stored): number {
  const expires = sess.cookie?.expires;
  return expires ? new Date(expires).getTime() : Date.now() + DEFAULT_TTL_MS;
}
