/**
 * A store shared by several Resident processes: one Redis (node-redis). Each record is a hash
 * at `<prefix>s:<id>`; writes go through one Lua script that keeps the indexes (all IDs, each
 * user's IDs, expiry times) in the same atomic step, and checks owner and fence there for the
 * conditional writes. The key layout is in src/stores/redis-scripts.ts and the README.
 *
 * Every call is bounded by `callTimeout`: the offline queue is off (a call while disconnected
 * fails at once) and a command sent that gets no answer in time is rejected, so a Redis that
 * hangs costs a request at most that long (the caller answers 503).
 */
import { createClient, type RedisClientType } from 'redis';
import { redactUrl } from '../config.ts';
import { ResidentError } from '../errors.ts';
import { EXISTING_SCRIPT, LIST_SCRIPT, SUMMARY_FIELDS, WRITE_SCRIPT, script, type Script } from './redis-scripts.ts';
import {
  checkExpected,
  checkFenceStep,
  isSessionRecord,
  type ContextStore,
  type CorruptRecordListener,
  type ListQuery,
  type OwnerFence,
  type SessionRecord,
  type SessionSummary,
} from './store.ts';

/**
 * How long after its expiresAt Redis itself drops a record. Not at expiresAt: within a run the
 * server judges expiry on its monotonic clock (RELIABILITY.md C9), and the contract keeps an
 * expired record readable until the caller deletes it. The server's sweep deletes expired
 * records long before; this only bounds what is left when no Resident runs for a day.
 */
export const REDIS_EXPIRY_GRACE_MS = 24 * 60 * 60 * 1000;
/** Between two reconnection attempts: short, since calls fail while disconnected. */
const RECONNECT_DELAY_MS = 250;

export interface RedisStoreOptions {
  url: string;
  /** Prefix of every key this store writes (store.prefix). */
  prefix: string;
  /** The longest any call may take, in ms. */
  callTimeout: number;
  onCorrupt?: CorruptRecordListener;
}

const WRITE = script(WRITE_SCRIPT);
const EXISTING = script(EXISTING_SCRIPT);
const LIST = script(LIST_SCRIPT);

type Client = RedisClientType;

/**
 * What the cluster registry (src/cluster/redis-registry.ts) runs through this store, so its
 * calls share the store's connection, time bound and NOSCRIPT handling (call order included).
 */
export interface RedisAccess {
  readonly prefix: string;
  recordKey(id: string): string;
  /** A script, as the store's own writes run: bounded by callTimeout, sent again after a NOSCRIPT. */
  run<T>(what: string, script: Script, keys: string[], args: string[]): Promise<T>;
  /**
   * The record of `id` from a hash's HGETALL reply; a damaged one (`flat` false: not a hash) is
   * quarantined and reported as `get` does, and reads as undefined.
   */
  record(id: string, flat: string[] | false): Promise<SessionRecord | undefined>;
}

export class RedisStore implements ContextStore {
  readonly kind = 'redis';
  readonly #client: Client;
  readonly #prefix: string;
  readonly #callTimeout: number;
  readonly #onCorrupt: CorruptRecordListener;
  /** EVALSHA calls sent and not answered yet. */
  #scriptsOut = 0;
  /** After a NOSCRIPT: the calls that met it, to send again in call order (see #run). */
  #failedScripts: Array<() => void> | null = null;
  /** Calls made meanwhile, sent after those. */
  #waiting: Array<() => void> = [];

  private constructor(client: Client, options: RedisStoreOptions) {
    this.#client = client;
    this.#prefix = options.prefix;
    this.#callTimeout = options.callTimeout;
    this.#onCorrupt = options.onCorrupt ?? (() => {});
  }

  /**
   * Connects and loads the scripts; fails with RESIDENT_ERR_STORE_OPEN within about
   * callTimeout when Redis cannot be reached (the message never holds the password).
   */
  static async open(options: RedisStoreOptions): Promise<RedisStore> {
    let lastError: unknown;
    const client: Client = createClient({
      url: options.url,
      disableOfflineQueue: true,
      socket: {
        connectTimeout: options.callTimeout,
        reconnectStrategy: () => RECONNECT_DELAY_MS,
      },
      // rejectInFlight: the timeout also covers a command already sent (a Redis that hangs).
      commandOptions: { timeout: options.callTimeout, rejectInFlight: true },
    });
    // Without a listener an 'error' event would end the process; the calls report failures.
    client.on('error', (error: unknown) => (lastError = error));
    // After a reconnection the server may be a new one (a restart, a failover) without our
    // scripts: load them again before they are needed (a NOSCRIPT is still handled per call).
    client.on('ready', () => void loadScripts(client).catch(() => {}));
    const connecting = client.connect().then(() => loadScripts(client));
    // The race below reports a failure; one that comes after the timeout must not go unhandled.
    connecting.catch(() => {});
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        connecting,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(lastError ?? new Error(`no answer within ${options.callTimeout} ms`)), options.callTimeout);
        }),
      ]);
    } catch (error) {
      client.destroy();
      throw new ResidentError('RESIDENT_ERR_STORE_OPEN', `Cannot reach the Redis store at ${redactUrl(options.url)}: ${describe(error)}`, {
        cause: error,
      });
    } finally {
      clearTimeout(timer);
    }
    return new RedisStore(client, options);
  }

  #recordKey(id: string): string {
    return `${this.#prefix}s:${id}`;
  }

  /** For the cluster registry only (see RedisAccess). */
  registryAccess(): RedisAccess {
    return {
      prefix: this.#prefix,
      recordKey: (id) => this.#recordKey(id),
      run: (what, script, keys, args) => this.#run(what, script, keys, args),
      record: (id, flat) =>
        flat === false ? this.#corrupt(id, 'the key holds another Redis type than a hash') : this.#fromFields(id, Object.fromEntries(toPairs(flat))),
    };
  }

  /** Sends one command; a failure becomes RESIDENT_ERR_STORE_FAILED naming the operation. */
  async #call<T>(what: string, args: string[]): Promise<T> {
    try {
      return await this.#client.sendCommand<T>(args);
    } catch (error) {
      throw failed(what, error);
    }
  }

  /**
   * EVALSHA, and EVAL when Redis has lost the script (a restart, SCRIPT FLUSH). Sent again
   * without care, a write that met NOSCRIPT could land after a later write of the same ID that
   * was sent once the script was back. So from the first NOSCRIPT on, nothing new is sent until
   * every EVALSHA already out has answered; then the ones that failed go again, in call order
   * (Redis answers in order), then those that waited, all by EVAL (which loads the script).
   */
  async #run<T>(what: string, { source, sha }: Script, keys: string[], args: string[]): Promise<T> {
    const tail = [String(keys.length), ...keys, ...args];
    const byEval = () => this.#call<T>(what, ['EVAL', source, ...tail]);
    if (this.#failedScripts) return this.#later(this.#waiting, byEval);
    this.#scriptsOut++;
    let error: unknown;
    try {
      const reply = await this.#client.sendCommand<T>(['EVALSHA', sha, ...tail]);
      this.#scriptAnswered();
      return reply;
    } catch (caught) {
      error = caught;
    }
    if (!String((error as Error)?.message).startsWith('NOSCRIPT')) {
      this.#scriptAnswered();
      throw failed(what, error);
    }
    const again = this.#later((this.#failedScripts ??= []), byEval);
    this.#scriptAnswered();
    return again;
  }

  /** A promise for what `send` will answer once it is sent, queued on `line`. */
  #later<T>(line: Array<() => void>, send: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => line.push(() => void send().then(resolve, reject)));
  }

  /** One EVALSHA fewer out; the last one out after a NOSCRIPT sends the queued calls, in order. */
  #scriptAnswered(): void {
    this.#scriptsOut--;
    if (this.#scriptsOut > 0 || !this.#failedScripts) return;
    const queued = [...this.#failedScripts, ...this.#waiting];
    this.#failedScripts = null;
    this.#waiting = [];
    for (const send of queued) send();
  }

  #write(op: string, id: string, args: string[]): Promise<number> {
    const keys = [this.#recordKey(id), `${this.#prefix}ids`, `${this.#prefix}exp`, `${this.#prefix}q:${id}`];
    return this.#run<number>(op, WRITE, keys, [op, id, `${this.#prefix}u:`, ...args]);
  }

  async get(id: string): Promise<SessionRecord | undefined> {
    let fields: Record<string, string>;
    try {
      fields = Object.fromEntries(toPairs(await this.#client.sendCommand<string[]>(['HGETALL', this.#recordKey(id)])));
    } catch (error) {
      if (!String((error as Error)?.message).startsWith('WRONGTYPE')) throw failed('get', error);
      return this.#corrupt(id, 'the key holds another Redis type than a hash');
    }
    return this.#fromFields(id, fields);
  }

  /** A hash's fields as a record; none: no record; a damaged one is quarantined. */
  async #fromFields(id: string, fields: Record<string, string>): Promise<SessionRecord | undefined> {
    if (Object.keys(fields).length === 0) return undefined;
    const record = fromHash(id, fields);
    if (!isSessionRecord(record)) return this.#corrupt(id, 'the hash does not have the shape of a session record');
    return record;
  }

  async #corrupt(id: string, reason: string): Promise<undefined> {
    await this.quarantine(id, reason);
    this.#onCorrupt(id, reason);
    return undefined;
  }

  async existing(ids: readonly string[]): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const found = await this.#run<number[]>('existing', EXISTING, ids.map((id) => this.#recordKey(id)), []);
    return new Set(ids.filter((_, at) => found[at] === 1));
  }

  async set(record: SessionRecord): Promise<void> {
    await this.#write('set', record.id, putArgs(record));
  }

  async delete(id: string): Promise<void> {
    await this.#write('delete', id, []);
  }

  async setIf(record: SessionRecord, expected: OwnerFence | null): Promise<boolean> {
    checkFenceStep(record, expected);
    return (await this.#write('setIf', record.id, [...expectArgs(expected), ...putArgs(record)])) === 1;
  }

  async deleteIf(id: string, expected: OwnerFence | null): Promise<boolean> {
    checkExpected(expected);
    return (await this.#write('deleteIf', id, expectArgs(expected))) === 1;
  }

  async expiredIds(now: number, limit: number): Promise<string[]> {
    return this.#call<string[]>('expiredIds', ['ZRANGEBYSCORE', `${this.#prefix}exp`, '-inf', String(now), 'LIMIT', '0', String(limit)]);
  }

  async list(query: ListQuery): Promise<SessionSummary[]> {
    const index = query.userId === undefined ? `${this.#prefix}ids` : `${this.#prefix}u:${query.userId}`;
    const from = query.after === undefined ? '-' : `(${query.after}`;
    const rows = await this.#run<Array<Array<string | number | null>>>('list', LIST, [index], [
      `${this.#prefix}s:`,
      from,
      String(query.limit),
      query.userId ?? '',
    ]);
    return rows.map(fromSummaryRow);
  }

  /** PING, then a write of one probe key: a read-only replica or a full Redis fails here. */
  async ping(): Promise<void> {
    await this.#call('ping', ['PING']);
    await this.#call('ping', ['SET', `${this.#prefix}probe`, String(Date.now()), 'PX', '60000']);
  }

  async quarantine(id: string, reason: string): Promise<void> {
    await this.#write('quarantine', id, [reason, String(Date.now())]);
  }

  /** Waits for the calls under way (each bounded by callTimeout), then disconnects. */
  async close(): Promise<void> {
    if (!this.#client.isOpen) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([this.#client.close(), new Promise((resolve) => (timer = setTimeout(resolve, this.#callTimeout)))]);
    } catch {
      // Closing failed: the socket is dropped below all the same.
    } finally {
      clearTimeout(timer);
      if (this.#client.isOpen) this.#client.destroy();
    }
  }
}

async function loadScripts(client: Client): Promise<void> {
  for (const { source } of [WRITE, EXISTING, LIST]) await client.sendCommand(['SCRIPT', 'LOAD', source]);
}

/** The script arguments that say what a conditional write expects. */
function expectArgs(expected: OwnerFence | null): string[] {
  if (expected === null) return ['absent', '0', '', ''];
  return ['held', expected.owner === null ? '1' : '0', expected.owner ?? '', String(expected.fence)];
}

/** The script arguments of a record's write: its indexes, then its hash without the null fields. */
function putArgs(record: SessionRecord): string[] {
  const fields: Array<[string, string | number | null]> = [
    ['userId', record.userId],
    ['memento', record.memento],
    ['mementoVersion', record.mementoVersion],
    ['clientIp', record.clientIp],
    ['createdAt', record.createdAt],
    ['updatedAt', record.updatedAt],
    ['lastActivityAt', record.lastActivityAt],
    ['expiresAt', record.expiresAt],
    ['owner', record.owner],
    ['fence', record.fence],
  ];
  return [
    record.userId === null ? '0' : '1',
    record.userId ?? '',
    record.expiresAt === null ? '' : String(record.expiresAt),
    record.expiresAt === null ? '' : String(redisDeadline(record.expiresAt)),
    ...fields.flatMap(([name, value]) => (value === null ? [] : [name, String(value)])),
  ];
}

/**
 * When Redis itself drops a record expiring at `expiresAt`: a whole number of ms that PEXPIREAT
 * takes. An absurd but valid cookie lifetime would otherwise overflow its 64-bit integer (or
 * print as "4e+21"), and the script would fail after writing the hash: a write half applied.
 */
function redisDeadline(expiresAt: number): number {
  return Math.min(Math.ceil(expiresAt + REDIS_EXPIRY_GRACE_MS), Number.MAX_SAFE_INTEGER);
}

function toPairs(flat: string[] | Record<string, string>): Array<[string, string]> {
  if (!Array.isArray(flat)) return Object.entries(flat);
  const pairs: Array<[string, string]> = [];
  for (let at = 0; at + 1 < flat.length; at += 2) pairs.push([flat[at]!, flat[at + 1]!]);
  return pairs;
}

/** Decimal text back to a number; anything else becomes NaN, which isSessionRecord refuses. */
const num = (text: string | number | null | undefined): number => (typeof text === 'number' ? text : text == null || text === '' ? NaN : Number(text));
const orNull = <T>(value: T | null | undefined): T | null => value ?? null;

/** A hash read back as a record (to be checked by isSessionRecord). */
function fromHash(id: string, fields: Record<string, string>): SessionRecord {
  return {
    id,
    userId: orNull(fields.userId),
    memento: orNull(fields.memento),
    mementoVersion: num(fields.mementoVersion),
    clientIp: fields.clientIp as string,
    createdAt: num(fields.createdAt),
    updatedAt: num(fields.updatedAt),
    lastActivityAt: num(fields.lastActivityAt),
    expiresAt: fields.expiresAt === undefined ? null : num(fields.expiresAt),
    owner: orNull(fields.owner),
    fence: num(fields.fence),
  };
}

function fromSummaryRow(row: Array<string | number | null>): SessionSummary {
  const [id, ...rest] = row;
  const field = Object.fromEntries(SUMMARY_FIELDS.map((name, at) => [name, rest[at] ?? null])) as Record<(typeof SUMMARY_FIELDS)[number], string | null>;
  return {
    id: String(id),
    userId: field.userId,
    mementoVersion: num(field.mementoVersion),
    clientIp: field.clientIp ?? '',
    createdAt: num(field.createdAt),
    updatedAt: num(field.updatedAt),
    lastActivityAt: num(field.lastActivityAt),
    expiresAt: field.expiresAt === null ? null : num(field.expiresAt),
    owner: field.owner,
    fence: num(field.fence),
    mementoBytes: num(rest[SUMMARY_FIELDS.length] ?? 0),
  };
}

function failed(what: string, error: unknown): ResidentError {
  return new ResidentError('RESIDENT_ERR_STORE_FAILED', `Redis ${what} failed: ${describe(error)}`, { cause: error });
}

function describe(error: unknown): string {
  const code = (error as { code?: string } | undefined)?.code;
  if (code === 'ECONNREFUSED') return 'connection refused (is Redis running there?)';
  if (code === 'ENOTFOUND') return 'the host name does not resolve';
  const message = (error as Error | undefined)?.message;
  return message || String(error);
}
