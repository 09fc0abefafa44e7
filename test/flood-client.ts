/**
 * A lean HTTP/1.1 client for floods of 100,000 requests: keep-alive sockets bound to source
 * addresses, a few requests pipelined on each, and only the status line and the framing read.
 * On this two-core machine undici in the test process cost more CPU per request than the
 * server's edge threads did. Node's server hands pipelined requests to the application as it
 * parses them, so up to `sockets × depth` requests are in flight on the server: a test that
 * counts on fewer in flight than `maxContexts` keeps that product below it (`depth: 1` sends
 * the next request only once the last one is answered).
 */
import { connect, type Socket } from 'node:net';

export interface FloodOptions {
  port: number;
  /** Source addresses (any of 127/8 on loopback); sockets are spread over them round robin. */
  sources: string[];
  sockets: number;
  /** Requests written ahead on one socket before its answers are read. */
  depth: number;
  total: number;
  /** Asked before each batch: true sends no more (a flood that runs as long as something else does). */
  stop?(): boolean;
  /** The raw request number `i` (see wire.ts `get`). */
  request(i: number): string;
  /** Each answer: its status, and its body when the status is 400 or more. */
  onAnswer(status: number, errorBody: string | undefined): void;
}

/** Resolves once every request has an answer; requests a closed socket left unanswered are sent again on a new one (counted in `resent`). */
export async function flood(options: FloodOptions): Promise<{ resent: number }> {
  let next = 0;
  let resent = 0;
  const retry: number[] = [];
  const take = () => (options.stop?.() ? undefined : retry.length > 0 ? retry.pop()! : next < options.total ? next++ : undefined);
  const runSocket = async (localAddress: string) => {
    let socket: Socket | undefined;
    let silent = 0;
    for (;;) {
      const batch: number[] = [];
      for (let i = take(); i !== undefined; i = batch.length < options.depth ? take() : undefined) {
        batch.push(i);
        if (batch.length === options.depth) break;
      }
      if (batch.length === 0) {
        socket?.destroy();
        return;
      }
      socket ??= connect({ port: options.port, host: '127.0.0.1', localAddress });
      const { answered, open } = await exchange(options, socket, batch);
      if (!open) socket = undefined;
      // A server that answers nothing on fresh sockets is not flooded but gone.
      silent = answered === 0 ? silent + 1 : 0;
      if (silent > 5) throw new Error(`no answer on ${silent} sockets in a row from ${localAddress}`);
      // A socket that closed (or said `connection: close`) before answering the rest: the
      // server did not take them, so they go again.
      for (const i of batch.slice(answered)) {
        retry.push(i);
        resent++;
      }
    }
  };
  await Promise.all(Array.from({ length: options.sockets }, (_, k) => runSocket(options.sources[k % options.sources.length]!)));
  return { resent };
}

/** Writes `batch` pipelined on `socket` and reads its answers: how many came before the socket ended, and whether it is still open. */
function exchange(options: FloodOptions, socket: Socket, batch: number[]): Promise<{ answered: number; open: boolean }> {
  return new Promise((resolve, reject) => {
    let buffer: Buffer = Buffer.alloc(0);
    let answered = 0;
    let closing = false;
    const finish = (open: boolean, error?: Error) => {
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onError);
      if (!open) socket.destroy();
      if (error) reject(error);
      else resolve({ answered, open });
    };
    const onData = (chunk: Buffer) => {
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
      for (;;) {
        const headEnd = buffer.indexOf('\r\n\r\n');
        if (headEnd === -1) break;
        const head = buffer.subarray(0, headEnd).toString('latin1');
        const status = Number(head.slice(9, 12));
        const length = /\r\ncontent-length: *(\d+)/i.exec(head);
        if (!length) return finish(false, new Error(`flood-client reads Content-Length framing only: ${head}`));
        const end = headEnd + 4 + Number(length[1]);
        if (buffer.length < end) break;
        options.onAnswer(status, status >= 400 ? buffer.subarray(headEnd + 4, end).toString() : undefined);
        answered++;
        if (/\r\nconnection: *close/i.test(head)) closing = true;
        buffer = buffer.subarray(end);
        if (answered === batch.length || closing) return finish(!closing);
      }
    };
    const onClose = () => finish(false);
    const onError = () => undefined; // 'close' follows
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.on('error', onError);
    socket.write(batch.map((i) => options.request(i)).join(''));
  });
}
