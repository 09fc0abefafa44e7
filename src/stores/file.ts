/**
 * One JSON file per session in a folder. A write goes to a temp file, is fsynced, renamed over
 * the real one, and the folder is fsynced, so after a crash every record is either the old or
 * the new version, never torn (RELIABILITY.md E1). File names come only from validated IDs,
 * so no request can name a file outside the folder (A7, CVE-2020-9484). An index of record
 * summaries (no mementos) is built at open and kept in memory, so the sweep and listings never
 * read the folder.
 */
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { isSessionIdShape } from '../contexts/ids.ts';
import { ResidentError } from '../errors.ts';
import {
  checkExpected,
  checkFenceStep,
  holds,
  isSessionRecord,
  pageOf,
  summarize,
  type ContextStore,
  type CorruptRecordListener,
  type ListQuery,
  type OwnerFence,
  type SessionRecord,
  type SessionSummary,
  UNCLAIMED,
} from './store.ts';
import { UserIndex } from './user-index.ts';

const TEMP_PREFIX = '.tmp-';
const SUFFIX = '.json';
const QUARANTINE = 'quarantine';

export interface FileStoreOptions {
  dir: string;
  onCorrupt?: CorruptRecordListener;
}

export class FileStore implements ContextStore {
  readonly kind = 'file';
  readonly #dir: string;
  readonly #onCorrupt: CorruptRecordListener;
  /** id → summary of its record, for the sweep and listings. */
  readonly #summaries = new Map<string, SessionSummary>();
  readonly #byUser = new UserIndex();
  /**
   * Writes to one file are chained so two renames never race (last write wins, in order), and
   * a conditional write judges what the writes before it left.
   */
  readonly #writes = new Map<string, Promise<unknown>>();

  private constructor(options: FileStoreOptions) {
    this.#dir = options.dir;
    this.#onCorrupt = options.onCorrupt ?? (() => {});
  }

  /** Creates the folder if needed, removes leftover temp files, and indexes expiries. */
  static async open(options: FileStoreOptions): Promise<FileStore> {
    const store = new FileStore(options);
    try {
      await mkdir(join(options.dir, QUARANTINE), { recursive: true });
      // A write that never reached its rename: not data, never read.
      for (const name of await readdir(options.dir)) {
        if (name.startsWith(TEMP_PREFIX)) await rm(join(options.dir, name), { force: true });
      }
      await store.ping();
      for (const name of await readdir(options.dir)) {
        const id = name.slice(0, -SUFFIX.length);
        if (!name.endsWith(SUFFIX) || !isSessionIdShape(id)) continue;
        const record = await store.get(id);
        if (record) store.#indexRecord(record);
      }
    } catch (error) {
      throw new ResidentError('RESIDENT_ERR_STORE_OPEN', `Cannot use the file store folder ${options.dir}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    return store;
  }

  #path(id: string): string {
    if (!isSessionIdShape(id)) throw new ResidentError('RESIDENT_ERR_STORE_FAILED', 'refusing a file name not derived from a session ID');
    return join(this.#dir, id + SUFFIX);
  }

  async get(id: string): Promise<SessionRecord | undefined> {
    let text: string;
    try {
      text = await readFile(this.#path(id), 'utf8');
    } catch (error) {
      // A missing file is "no record" only while the folder is there: a folder that vanished
      // (an unmounted volume) is an outage, not an empty store (RELIABILITY.md E6).
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' && (await this.#folderExists())) return undefined;
      throw new ResidentError('RESIDENT_ERR_STORE_FAILED', `file store read failed: ${(error as Error).message}`, { cause: error });
    }
    let record: unknown;
    try {
      record = withOwnership(JSON.parse(text));
    } catch {
      record = undefined;
    }
    if (!isSessionRecord(record) || record.id !== id) {
      await this.quarantine(id, 'unreadable record file');
      this.#onCorrupt(id, 'unreadable record file');
      return undefined;
    }
    return record;
  }

  /** From the index kept in memory (every record file is indexed at open and on write). */
  async existing(ids: readonly string[]): Promise<Set<string>> {
    await this.#folderPresent();
    return new Set(ids.filter((id) => this.#summaries.has(id)));
  }

  set(record: SessionRecord): Promise<void> {
    return this.#chain(record.id, () => this.#write(record));
  }

  delete(id: string): Promise<void> {
    return this.#chain(id, () => this.#remove(id));
  }

  /**
   * Judged on the index, which every write of this process updates in chain order: one process
   * owns the folder, so what the index says is what the file holds.
   */
  async setIf(record: SessionRecord, expected: OwnerFence | null): Promise<boolean> {
    checkFenceStep(record, expected);
    return this.#chain(record.id, async () => {
      if (!(await this.#holds(record.id, expected))) return false;
      await this.#write(record);
      return true;
    });
  }

  async deleteIf(id: string, expected: OwnerFence | null): Promise<boolean> {
    checkExpected(expected);
    return this.#chain(id, async () => {
      if (!(await this.#holds(id, expected))) return false;
      await this.#remove(id);
      return true;
    });
  }

  async #holds(id: string, expected: OwnerFence | null): Promise<boolean> {
    // A folder that vanished is an outage, not a refusal: the caller must not think it lost the session.
    await this.#folderPresent();
    return holds(this.#summaries.get(id), expected);
  }

  async #write(record: SessionRecord): Promise<void> {
    const target = this.#path(record.id);
    const temp = join(this.#dir, `${TEMP_PREFIX}${record.id}-${randomBytes(4).toString('hex')}`);
    try {
      const handle = await open(temp, 'w', 0o600);
      try {
        await handle.writeFile(JSON.stringify(record));
        // An fsync error is a lost write, never retried and then assumed durable (E5).
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, target);
    } catch (error) {
      await rm(temp, { force: true }).catch(() => {});
      throw failedWrite(error);
    }
    // From the rename on, the file is the new record, even if the folder's fsync fails: the
    // index follows the file, so a conditional write after a failed one judges what is there.
    this.#indexRecord(record);
    await this.#syncDir().catch((error: unknown) => {
      throw failedWrite(error);
    });
  }

  async #remove(id: string): Promise<void> {
    await rm(this.#path(id), { force: true });
    this.#unindex(id);
  }

  async expiredIds(now: number, limit: number): Promise<string[]> {
    await this.#folderPresent();
    const ids: string[] = [];
    for (const [id, { expiresAt }] of this.#summaries) {
      if (ids.length >= limit) break;
      if (expiresAt !== null && expiresAt <= now) ids.push(id);
    }
    return ids;
  }

  async list(query: ListQuery): Promise<SessionSummary[]> {
    // The index outlives a folder that vanished: list nothing rather than what may be gone.
    await this.#folderPresent();
    const summaries =
      query.userId === undefined ? this.#summaries.values() : [...this.#byUser.of(query.userId)].map((id) => this.#summaries.get(id)!);
    return pageOf(summaries, query, (summary) => ({ ...summary }));
  }

  /** Creates, fsyncs and removes a probe file: the folder is there and takes writes. */
  async ping(): Promise<void> {
    const probe = join(this.#dir, `${TEMP_PREFIX}probe-${randomBytes(4).toString('hex')}`);
    try {
      const handle = await open(probe, 'w');
      try {
        await handle.writeFile('probe');
        await handle.sync();
      } finally {
        await handle.close();
        await unlink(probe).catch(() => {});
      }
    } catch (error) {
      throw new ResidentError('RESIDENT_ERR_STORE_FAILED', `the file store cannot write: ${(error as Error).message}`, { cause: error });
    }
  }

  quarantine(id: string, reason: string): Promise<void> {
    return this.#chain(id, async () => {
      const stamp = new Date().toISOString().replace(/[:.]/g, '-');
      // The quarantine folder may be gone with a folder that was removed and made again: a
      // missing destination must not pass for a record that is already gone.
      await mkdir(join(this.#dir, QUARANTINE), { recursive: true });
      await rename(this.#path(id), join(this.#dir, QUARANTINE, `${id}.${stamp}${SUFFIX}`)).catch((error) => {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      });
      this.#unindex(id);
      void reason;
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.#writes.values());
  }

  #indexRecord(record: SessionRecord): void {
    this.#unindex(record.id);
    this.#summaries.set(record.id, summarize(record));
    this.#byUser.add(record.userId, record.id);
  }

  #unindex(id: string): void {
    const summary = this.#summaries.get(id);
    if (!summary) return;
    this.#summaries.delete(id);
    this.#byUser.remove(summary.userId, id);
  }

  async #folderPresent(): Promise<void> {
    if (!(await this.#folderExists())) throw new ResidentError('RESIDENT_ERR_STORE_FAILED', `the file store folder ${this.#dir} is gone`);
  }

  async #folderExists(): Promise<boolean> {
    try {
      return (await stat(this.#dir)).isDirectory();
    } catch {
      return false;
    }
  }

  async #syncDir(): Promise<void> {
    const dir = await open(this.#dir, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }

  #chain<T>(id: string, job: () => Promise<T>): Promise<T> {
    const previous = this.#writes.get(id) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(job);
    const settled = next.catch(() => {});
    this.#writes.set(id, settled);
    void settled.then(() => {
      if (this.#writes.get(id) === settled) this.#writes.delete(id);
    });
    return next;
  }
}

function failedWrite(error: unknown): ResidentError {
  return new ResidentError('RESIDENT_ERR_STORE_FAILED', `file store write failed: ${(error as Error).message}`, { cause: error });
}

/** A record file written before owners existed reads as never claimed. */
function withOwnership(parsed: unknown): unknown {
  if (typeof parsed !== 'object' || parsed === null || 'owner' in parsed || 'fence' in parsed) return parsed;
  return { ...parsed, owner: UNCLAIMED.owner, fence: UNCLAIMED.fence };
}
