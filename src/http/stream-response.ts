/**
 * Writes a streamed response body after its head: chunk by chunk, each pulled from the worker
 * thread that holds the stream, the next one asked for only once the socket took the last
 * (res.write() said so, or 'drain' came). A client that reads slowly holds back the hook's
 * stream instead of filling this process's memory (RELIABILITY.md D6).
 *
 * A body cannot fail cleanly once its head is out: a stream that errors, or whose thread dies,
 * ends with the connection destroyed, so the client sees a truncated response, never a
 * complete-looking one.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { StreamedBody, WorkerReply, WorkerTask } from '../contexts/protocol.ts';

/** Where a stream's pulls go: the thread that holds it (this one, or another over the mesh). */
export interface StreamHost {
  /** Rejects when that thread is gone. */
  toThread(threadId: number, task: WorkerTask): Promise<WorkerReply>;
}

/** The body's source, as the main thread sees it. */
export interface ChunkSource {
  /** The next chunk, or null at the end; rejects when the stream failed or its thread stopped. */
  next(): Promise<Uint8Array | null>;
  /** The client is gone: the stream's source is told to stop (its cancel() runs). */
  cancel(): void;
}

/** Why a body was cut: the stream failed (RESIDENT_ERR_HOOK_FAILED) or its thread stopped (RESIDENT_ERR_WORKER_LOST). */
export class BodyCut extends Error {
  readonly code: string;
  /** What the hook's stream threw (TypeError…), when it was the hook's stream that failed. */
  readonly thrownType: string;
  constructor(code: string, message: string, type = 'Error') {
    super(message);
    this.name = 'BodyCut';
    this.code = code;
    this.thrownType = type;
  }
}

/** The pulls and the cancel of `body`, sent to the thread that holds it. */
export function pulledFrom(pool: StreamHost, body: StreamedBody): ChunkSource {
  return {
    async next() {
      let reply;
      try {
        reply = await pool.toThread(body.threadId, { type: 'pull', streamId: body.streamId });
      } catch (error) {
        throw new BodyCut('RESIDENT_ERR_WORKER_LOST', (error as Error).message);
      }
      if (reply.type !== 'chunk') throw new BodyCut('RESIDENT_ERR_HOOK_FAILED', `unexpected worker reply ${reply.type}`);
      if (reply.error) throw new BodyCut(reply.error.code, reply.error.message, reply.error.type);
      return reply.bytes && new Uint8Array(reply.bytes);
    },
    cancel() {
      pool.toThread(body.threadId, { type: 'cancel', streamId: body.streamId }).catch(() => {
        // The thread is gone, and the stream with it.
      });
    },
  };
}

/**
 * Sends the body of `res`, whose head was just written: nothing for a HEAD (the stream is
 * cancelled), else the head at once and then every chunk. `onCut` hears of a body that failed.
 */
export function streamBody(req: IncomingMessage, res: ServerResponse, source: ChunkSource, onCut: (cut: BodyCut) => void): void {
  // The client left while the hook ran: its 'close' has fired already, and no pull would ever
  // be cancelled by it. The stream is let go now.
  if (res.destroyed || req.socket.destroyed) {
    source.cancel();
    return;
  }
  if (req.method === 'HEAD') {
    res.end();
    source.cancel();
    return;
  }
  // The head leaves now, not with the first chunk: an event stream's client learns at once
  // that it is connected.
  res.flushHeaders();
  void pumpBody(req, res, source, onCut);
}

/**
 * Pumps `source` into `res` (its head already written) until the end, the client's
 * disconnect (the source is cancelled) or a failure (the connection is destroyed and `onCut`
 * told). Never rejects.
 */
async function pumpBody(req: IncomingMessage, res: ServerResponse, source: ChunkSource, onCut: (cut: BodyCut) => void): Promise<void> {
  // The socket's close covers a response still queued behind a pipelined one, which may
  // never see a close of its own.
  const socket = req.socket;
  let over = false;
  let wake: (() => void) | null = null;
  const gone = () => {
    if (over) return;
    over = true;
    source.cancel();
    wake?.();
  };
  res.once('close', gone);
  socket.once('close', gone);
  try {
    for (;;) {
      const chunk = await source.next();
      if (over) return;
      if (chunk === null) {
        over = true;
        res.end();
        return;
      }
      if (!res.write(chunk)) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          res.once('drain', resolve);
        });
        wake = null;
        if (over) return;
      }
    }
  } catch (error) {
    if (over) return;
    over = true;
    onCut(error instanceof BodyCut ? error : new BodyCut('RESIDENT_ERR_HOOK_FAILED', String(error)));
    res.destroy();
  } finally {
    res.off('close', gone);
    socket.off('close', gone);
  }
}
