/**
 * RELIABILITY E9: a PostgreSQL write whose connection dies under it (pg_terminate_backend, a
 * server restart, a failover, a proxy or network reset) is tried once more on a connection
 * opened after the loss, within the call's own time bound; a second loss, or no time left,
 * fails the call as before (RESIDENT_ERR_STORE_FAILED, a 503 for the request that needed it).
 *
 * Why a retry is safe. Each write is one statement, one transaction: it committed whole or not
 * at all, never in part. But whether it committed is unknown when the connection died after the
 * statement was sent: the commit may have happened, with only its reply lost (killed while
 * waiting for a synchronous standby, a reset after the commit). So every write's second attempt
 * must be right whether or not the first one landed:
 * - set (an upsert of the whole record) and delete write the same state again.
 * - setIf: the conditional write is sent again; when it is refused, the call still succeeds if
 *   the row now holds exactly the record we wrote, every column (see `PostgresStore.setIf`). Only
 *   the owner named in the record writes records of that owner (owners are unique per node
 *   start), and its writes of one ID are sent one after the other, so such a row is our first
 *   attempt's, landed; a stale owner's write is still refused, as the row holds another owner,
 *   fence or memento. The check is a statement of its own, so it sees a first attempt that
 *   committed while the retry waited for the row's lock (READ COMMITTED: a fresh snapshot).
 * - deleteIf (an owner and fence): sent again; when nothing matched, a record that is gone
 *   counts as our delete having landed. A record deleted by another call in that window cannot
 *   be told apart, but it leaves the same state the caller asked for: no record.
 * - quarantine: sent again, adding no second note when the row is gone and this call's note
 *   (same ID and time) is there.
 *
 * Why the ID's next write waits. A connection the client saw reset may still have its statement
 * running on the server (PostgreSQL notices a gone client only when it talks to it), waiting for
 * a lock, able to commit after our retry. It repeats our write, harmless on its own; but a later
 * write of the ID must not be overtaken by it. The server cancels it by statement_timeout
 * (= callTimeout), so the ID's next write waits until callTimeout has passed since the loss. A
 * loss the server reported itself (57P01, 57P02: the backend ends its session, its transaction
 * rolled back or already committed) leaves nothing behind, and nothing waits.
 */
import type pg from 'pg';

/** A write's work on one connection; `retry` tells the second attempt from the first. */
export type Attempt<T> = (client: pg.PoolClient, retry: boolean) => Promise<T>;

export interface Retried<T> {
  /** Settles like the call: the value, or the error of the last attempt. */
  result: Promise<T>;
  /** Settles once no attempt can still change the row: what the ID's next write waits for. */
  done: Promise<void>;
}

/** The backend ends its session: no statement of it runs on. */
const SERVER_ENDED = new Set(['57P01', '57P02']);
const SOCKET_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'ENOTCONN', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * How a failure lost its connection: 'ended' when the server ended the session, 'cut' when the
 * client lost the socket (the server side may live on), null when it is no connection loss (a
 * constraint, a syntax error, a timeout of the call's own bound: not retried).
 */
export function connectionLoss(error: unknown): 'ended' | 'cut' | null {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === 'string') {
    if (SERVER_ENDED.has(code)) return 'ended';
    // 57P03 cannot_connect_now (starting up, a standby being promoted); class 08, connection exceptions.
    if (code === '57P03' || code.startsWith('08') || SOCKET_CODES.has(code)) return 'cut';
  }
  // pg's own words for a socket that closed under a query, or a client that was already broken.
  if (typeof message === 'string' && /^Connection terminated|is not queryable/.test(message)) return 'cut';
  return null;
}

/** A pool that knows when each connection was opened, to give a retry one opened after a loss. */
export class Connections {
  readonly #pool: pg.Pool;
  readonly #callTimeout: number;
  readonly #opened = new WeakMap<pg.PoolClient, number>();

  constructor(pool: pg.Pool, callTimeout: number) {
    this.#pool = pool;
    this.#callTimeout = callTimeout;
    pool.on('connect', (client) => this.#opened.set(client as pg.PoolClient, performance.now()));
  }

  /**
   * `work` on a pooled connection, one opened after `openedAfter` when given: the pool's idle
   * connections from before a loss are closed rather than used (after a failover they are all dead).
   */
  async run<T>(work: (client: pg.PoolClient) => Promise<T>, openedAfter?: number): Promise<T> {
    let client = await this.#pool.connect();
    while (openedAfter !== undefined && (this.#opened.get(client) ?? -Infinity) <= openedAfter) {
      client.release(true);
      client = await this.#pool.connect();
    }
    try {
      const value = await work(client);
      client.release();
      return value;
    } catch (error) {
      // As pool.query does: a connection whose statement failed is closed, not reused.
      client.release(error instanceof Error ? error : true);
      throw error;
    }
  }

  /** `attempt`, and once more after a connection loss if `deadline` (performance.now()) is still ahead. */
  write<T>(attempt: Attempt<T>, deadline: number): Retried<T> {
    let quietAt = 0;
    const once = async (retry: boolean, openedAfter?: number): Promise<T> => {
      let sent = false;
      try {
        return await this.run((client) => {
          sent = true;
          return attempt(client, retry);
        }, openedAfter);
      } catch (error) {
        if (sent && connectionLoss(error) === 'cut') quietAt = performance.now() + this.#callTimeout;
        throw error;
      }
    };
    const result = once(false).catch((error: unknown) => {
      if (connectionLoss(error) === null || performance.now() >= deadline) throw error;
      return once(true, performance.now());
    });
    const done = result.then(
      () => wait(quietAt),
      () => wait(quietAt),
    );
    return { result, done };
  }
}

function wait(until: number): Promise<void> {
  const ms = until - performance.now();
  return ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve();
}
