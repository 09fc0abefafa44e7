/**
 * HTTP/1.1 over a raw node:net socket, for the bytes a client library would refuse to send or
 * would normalise (a bad Host, an absolute-form target, Expect: 100-continue, a cut upload).
 */
import { connect } from 'node:net';

export interface RawReply {
  /** Everything the server wrote before closing (or before our timeout). */
  raw: string;
  /** 0 when no status line arrived. */
  status: number;
  headers: Map<string, string[]>;
  body: string;
  /** The server closed the connection. */
  closed: boolean;
  /** ms from the first write to the close (or the timeout). */
  elapsed: number;
}

export function parseRaw(raw: string): Pick<RawReply, 'status' | 'headers' | 'body'> {
  const end = raw.indexOf('\r\n\r\n');
  const head = end === -1 ? raw : raw.slice(0, end);
  const [statusLine = '', ...lines] = head.split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
  const headers = new Map<string, string[]>();
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon === -1) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    headers.set(name, [...(headers.get(name) ?? []), line.slice(colon + 1).trim()]);
  }
  let body = end === -1 ? '' : raw.slice(end + 4);
  if (headers.get('transfer-encoding')?.some((v) => /chunked/i.test(v))) body = dechunk(body);
  return { status, headers, body };
}

function dechunk(text: string): string {
  let out = '';
  let at = 0;
  for (;;) {
    const lineEnd = text.indexOf('\r\n', at);
    if (lineEnd === -1) return out;
    const size = parseInt(text.slice(at, lineEnd), 16);
    if (!(size > 0)) return out;
    out += text.slice(lineEnd + 2, lineEnd + 2 + size);
    at = lineEnd + 2 + size + 2;
  }
}

/**
 * Writes `bytes` on a raw TCP socket and collects the answer until the server closes the
 * connection or `timeoutMs` passes. Send `Connection: close` to get a close after the reply.
 */
export function rawRequest(
  port: number,
  bytes: string | Buffer,
  options: { host?: string; localAddress?: string; timeoutMs?: number; keepWriting?: Buffer } = {},
): Promise<RawReply> {
  return new Promise((resolve) => {
    const started = Date.now();
    const chunks: Buffer[] = [];
    const socket = connect({ port, host: options.host ?? '127.0.0.1', localAddress: options.localAddress });
    let settled = false;
    const finish = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const raw = Buffer.concat(chunks).toString('latin1');
      resolve({ raw, closed, elapsed: Date.now() - started, ...parseRaw(raw) });
    };
    const timer = setTimeout(() => finish(false), options.timeoutMs ?? 5000);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('close', () => finish(true));
    // A reset after the server answered and hung up counts as closed.
    socket.on('error', () => finish(true));
    socket.on('connect', () => {
      socket.write(bytes);
      if (options.keepWriting) socket.write(options.keepWriting, () => undefined);
    });
  });
}

/** A raw connection driven step by step: write, wait for what the server sent so far, close. */
export interface RawConversation {
  write(bytes: string | Buffer): void;
  /** Everything the server wrote so far. */
  received(): string;
  /** Resolves with received() once `check` accepts it, or rejects after `timeoutMs`. */
  until(check: (received: string) => boolean, timeoutMs?: number): Promise<string>;
  readonly closed: Promise<void>;
  /** Ends the connection abruptly: `reset` sends an RST, otherwise a FIN. */
  destroy(reset?: boolean): void;
}

export async function rawConversation(port: number, host = '127.0.0.1'): Promise<RawConversation> {
  const socket = connect({ port, host });
  let text = '';
  const waiters = new Set<() => void>();
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1');
    for (const wake of waiters) wake();
  });
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  void closed.then(() => {
    for (const wake of waiters) wake();
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return {
    write: (bytes) => void socket.write(bytes),
    received: () => text,
    until: (check, timeoutMs = 5000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(wake);
          reject(new Error(`no matching answer within ${timeoutMs} ms; received so far:\n${text}`));
        }, timeoutMs);
        const wake = () => {
          if (!check(text)) return;
          clearTimeout(timer);
          waiters.delete(wake);
          resolve(text);
        };
        waiters.add(wake);
        wake();
      }),
    closed,
    destroy: (reset = false) => void (reset ? socket.resetAndDestroy() : socket.destroy()),
  };
}
