/**
 * Files under publicDir, served for GET/HEAD without a context and without a cookie. Which
 * files exist is kept in an index (rebuilt when the folder changes), so a dynamic request
 * costs a Set lookup, not a file-system call. `send` serves the file itself: ranges,
 * conditional requests, and refusing traversal and dotfiles.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { join, relative, sep } from 'node:path';
import send from 'send';
import type { StaticConfig } from './static-config.ts';

export class PublicFiles {
  readonly #root: string;
  readonly #cache: StaticConfig;
  #paths = new Set<string>();
  #watcher: FSWatcher | undefined;
  #rebuild: NodeJS.Timeout | undefined;

  private constructor(root: string, cache: StaticConfig) {
    this.#root = root;
    this.#cache = cache;
  }

  /** @param cache the `static` section: Cache-Control of every file served (./static-config.ts) */
  static async open(root: string, cache: StaticConfig): Promise<PublicFiles> {
    const files = new PublicFiles(root, cache);
    await files.#index();
    try {
      files.#watcher = watch(root, { recursive: true }, () => files.#scheduleIndex());
      files.#watcher.on('error', () => files.#scheduleIndex());
    } catch {
      // No such folder (or no recursive watch): nothing to serve, nothing to watch.
    }
    return files;
  }

  async #index(): Promise<void> {
    const paths = new Set<string>();
    try {
      for (const entry of await readdir(this.#root, { recursive: true, withFileTypes: true })) {
        if (!entry.isFile()) continue;
        const path = relative(this.#root, join(entry.parentPath, entry.name));
        // Dotfiles and files in dot-folders are never served.
        if (path.split(sep).some((part) => part.startsWith('.'))) continue;
        paths.add(`/${path.split(sep).join('/')}`);
      }
    } catch {
      // A missing folder serves nothing.
    }
    this.#paths = paths;
  }

  #scheduleIndex(): void {
    clearTimeout(this.#rebuild);
    this.#rebuild = setTimeout(() => void this.#index(), 50);
    this.#rebuild.unref();
  }

  /**
   * Serves the file at `path` (the request's path as the edge parsed it, never re-read from
   * req.url, so a file and a hook cannot disagree on which path was asked for) and resolves
   * true, or resolves false when no file matches.
   */
  serve(path: string, req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    if (req.method !== 'GET' && req.method !== 'HEAD') return Promise.resolve(false);
    let decoded: string;
    try {
      decoded = decodeURIComponent(path);
    } catch {
      return Promise.resolve(false);
    }
    if (!this.#paths.has(decoded)) return Promise.resolve(false);
    return new Promise((resolve) => {
      const { maxAge, immutable } = this.#cache;
      const stream = send(req, path, { root: this.#root, index: false, dotfiles: 'ignore', maxAge, immutable });
      let claimed = false;
      stream.on('error', (error: SendError) => {
        // Before 'headers' (no such file after all): the request goes on to the hook. After it,
        // send refused the request itself (412, 416, a read error): with an error listener it
        // writes nothing, so the answer is ours to give.
        if (claimed) refuse(res, error);
        else resolve(false);
      });
      stream.on('directory', () => resolve(false));
      stream.on('headers', () => {
        claimed = true;
        resolve(true);
      });
      stream.pipe(res);
    });
  }

  close(): void {
    this.#watcher?.close();
    clearTimeout(this.#rebuild);
  }
}

/** What send emits: an http-errors error, with the headers its answer needs (416's Content-Range). */
interface SendError {
  status?: number;
  headers?: Record<string, string>;
}

/**
 * send's own refusal, answered as send would without a listener: the file's headers it set
 * already (its validators, the Cache-Control of the file) are not this answer's, which must
 * not be cached as the file would be.
 */
function refuse(res: ServerResponse, error: SendError): void {
  if (res.headersSent) {
    // A read error mid-body: the length said cannot be kept.
    res.destroy();
    return;
  }
  const status = error.status !== undefined && error.status >= 400 && error.status <= 599 ? error.status : 500;
  const text = STATUS_CODES[status] ?? 'Error';
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  res.writeHead(status, { ...error.headers, 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(res.req.method === 'HEAD' ? undefined : text);
}
