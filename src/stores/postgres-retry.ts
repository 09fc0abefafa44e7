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
 * Why a reset connection's statement is cancelled first. A connection the client saw reset (a
 * proxy or the network) may still have its statement running on the server, which notices a
 * gone client only when it talks to it: waiting for a lock, it could commit after our retry and
 * after the ID's next write, overwriting it with an older record. So before the retry, the
 * store sends PostgreSQL's cancel request for that backend (its process ID and secret key, as
 * psql's Ctrl-C does): the statement is rolled back unless it is already committing, and then
 * it holds the row's lock, so our retry waits for it and finds its commit. A backend of another
 * server (after a failover) has another key and is left alone. statement_timeout (=
 * callTimeout) ends such a statement in any case. A loss the server reported itself (57P01,
 * 57P02: the backend ends its session, its transaction rolled back or already committed) leaves
 * no statement behind and needs no cancel.
 */
import { connect } from 'node:net';
import type pg from 'pg';

/** A write's work on one connection; `retry` tells the second attempt from the first. */
export type Attempt<T> = (client: pg.PoolClient, retry: boolean) => Promise<T>;

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
  // pg's own words for a socket that closed under a query, or a client that was already broken;
  // not its connection timeout ("Connection terminated due to connection timeout"): the call's bound.
  if (typeof message === 'string' && !/timeout/.test(message) && /^Connection terminated|is not queryable/.test(message)) return 'cut';
  return null;
}

/** A pool that knows when each connection was opened, to give a retry one opened after a loss. */
export class Connections {
  readonly #pool: pg.Pool;
  readonly #opened = new WeakMap<pg.PoolClient, number>();

  constructor(pool: pg.Pool) {
    this.#pool = pool;
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
    // A socket error is also emitted as an event, which would crash the process without a
    // listener (pool.query adds one too); the statement under way rejects with it all the same.
    const ignore = () => {};
    client.on('error', ignore);
    try {
      const value = await work(client);
      client.removeListener('error', ignore);
      client.release();
      return value;
    } catch (error) {
      // As pool.query does: a connection whose statement failed is closed, not reused (still
      // listened to: a dying socket may report more than once).
      client.release(error instanceof Error ? error : true);
      throw error;
    }
  }

  /** `attempt`, and once more after a connection loss if `deadline` (performance.now()) is still ahead. */
  async retried<T>(attempt: Attempt<T>, deadline: number): Promise<T> {
    let used: pg.PoolClient | undefined;
    try {
      return await this.run((client) => {
        used = client;
        return attempt(client, false);
      });
    } catch (error) {
      const loss = connectionLoss(error);
      if (loss === null || performance.now() >= deadline) throw error;
      const lostAt = performance.now();
      if (loss === 'cut' && used) await cancelStatement(used, deadline);
      return this.run((client) => attempt(client, true), lostAt);
    }
  }
}

/**
 * Sends PostgreSQL's CancelRequest for the backend of `client` (which may still run its statement
 * after its socket was reset) and resolves once the server closed the request's connection (the
 * signal is sent by then). Failing to reach the server is no error here; waiting for it takes
 * at most half the time left, so a server that does not answer leaves the retry its chance.
 */
function cancelStatement(client: pg.PoolClient, deadline: number): Promise<void> {
  const { processID, secretKey, host, port } = client as unknown as { processID: number | null; secretKey: number | null; host: string; port: number };
  if (processID === null || secretKey === null) return Promise.resolve();
  const request = Buffer.alloc(16);
  request.writeInt32BE(16, 0);
  request.writeInt32BE(80877102, 4);
  request.writeInt32BE(processID, 8);
  request.writeInt32BE(secretKey, 12);
  return new Promise((resolve) => {
    const socket = host.startsWith('/') ? connect({ path: `${host}/.s.PGSQL.${port}` }) : connect({ host, port });
    const timer = setTimeout(() => socket.destroy(), Math.max(0, (deadline - performance.now()) / 2));
    socket.on('connect', () => socket.end(request));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
