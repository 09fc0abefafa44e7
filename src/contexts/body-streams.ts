/**
 * The worker's end of streamed response bodies. A hook's Response whose body is a stream, a
 * Blob or a fetch() body is held here, and read one chunk per 'pull' from the main thread,
 * which asks for the next chunk only once the client's socket took the last one: a slow client
 * holds back the stream's source instead of filling memory (RELIABILITY.md D6). The context's
 * queue moved on when the hook returned; the stream lives here until it ends, fails or is
 * cancelled, whatever happens to the context meanwhile.
 */
import { joinedBytes } from '../bytes.ts';
import { toWireError, type WorkerReply } from './protocol.ts';

type ChunkReply = Extract<WorkerReply, { type: 'chunk' }>;
type ReadResult = Awaited<ReturnType<ReadableStreamDefaultReader<unknown>['read']>>;

interface Held {
  reader: ReadableStreamDefaultReader<unknown>;
  /** Reads begun before the body was held (see readReady), taken before any new one. */
  queued: Array<Promise<ReadResult>>;
  /** Cancels a stream nobody has pulled yet; cleared by the first pull. */
  unclaimed: NodeJS.Timeout | null;
}

/**
 * The main thread pulls a body's first chunk as soon as it has written the head. A stream
 * never pulled in this long belongs to a reply that was lost on the way (its request failed
 * after the worker answered): it is cancelled, so it cannot be held forever.
 */
const UNCLAIMED_MS = 60_000;

const held = new Map<number, Held>();
let nextId = 1;

/** What readReady found: the whole body, or a body still producing, with what it had ready. */
export type ReadyBody = { whole: ArrayBuffer } | { reader: ReadableStreamDefaultReader<unknown>; ready: Uint8Array[]; pending: Promise<ReadResult> };

/** Bytes read ahead at most before a body is streamed rather than sent whole. */
const READ_AHEAD_BYTES = 1 << 20;
/** Reads ahead at most (a source may enqueue empty chunks forever). */
const READ_AHEAD_CHUNKS = 64;

/**
 * Reads what `response`'s body has ready without waiting on its source. A body built from a
 * string or bytes has all of it at once and ends at once: it is sent whole, with a length, as
 * on the fast path (Node 24's Response keeps its source private, so this is how such a body is
 * told apart there). A body still producing after that is streamed, starting with what was read.
 */
export async function readReady(response: Response): Promise<ReadyBody> {
  if (response.bodyUsed || !response.body) throw new TypeError('the Response body was already read');
  const reader = response.body.getReader();
  const ready: Uint8Array[] = [];
  let size = 0;
  try {
    for (let reads = 1; ; reads++) {
      const pending = reader.read();
      // Seen by the pull that takes it; never an unhandled rejection meanwhile.
      pending.catch(() => {});
      const next = await Promise.race([pending, nextTurn()]);
      if (next === NOT_YET || size > READ_AHEAD_BYTES || reads > READ_AHEAD_CHUNKS) return { reader, ready, pending };
      if (next.done) return { whole: joinedBytes(ready, size) };
      if (!(next.value instanceof Uint8Array)) throw new TypeError('the response body stream produced a chunk that is not a Uint8Array');
      ready.push(next.value);
      size += next.value.byteLength;
    }
  } catch (error) {
    // Nothing was sent yet: the hook fails cleanly (500), and the source is told to stop.
    reader.cancel(error).catch(() => {});
    throw error;
  }
}

const NOT_YET = Symbol('not yet');

function nextTurn(): Promise<typeof NOT_YET> {
  return new Promise((resolve) => setImmediate(resolve, NOT_YET));
}


/** Keeps a body that is still producing for pulling; returns its stream ID. */
export function holdBody(body: Extract<ReadyBody, { reader: unknown }>): number {
  const id = nextId++;
  const unclaimed = setTimeout(() => cancelBody(id), UNCLAIMED_MS);
  unclaimed.unref();
  // What was read ahead goes out first, as one chunk; then the read already under way (a read,
  // once begun, must not be dropped).
  const ahead = body.ready.reduce((size, chunk) => size + chunk.byteLength, 0);
  const queued: Array<Promise<ReadResult>> = [body.pending];
  if (ahead > 0) queued.unshift(Promise.resolve({ done: false, value: new Uint8Array(joinedBytes(body.ready, ahead)) }));
  held.set(id, { reader: body.reader, queued, unclaimed });
  return id;
}

/** The next non-empty chunk, copied into a buffer of its own (transferred); null bytes at the end. */
export async function pullBody(id: number): Promise<ChunkReply> {
  const entry = held.get(id);
  if (!entry) return { type: 'chunk', bytes: null, error: { code: 'RESIDENT_ERR_HOOK_FAILED', message: `no response body ${id} on this thread` } };
  if (entry.unclaimed) {
    clearTimeout(entry.unclaimed);
    entry.unclaimed = null;
  }
  try {
    for (;;) {
      const { done, value } = await (entry.queued.shift() ?? entry.reader.read());
      if (done) {
        held.delete(id);
        return { type: 'chunk', bytes: null };
      }
      // What Response.arrayBuffer() accepts, and nothing else (the Fetch standard's rule).
      if (!(value instanceof Uint8Array)) throw new TypeError('the response body stream produced a chunk that is not a Uint8Array');
      // A copy of these bytes only: the chunk may be a view into a larger buffer its source
      // still uses (a pooled Buffer, a reused chunk), which must not be transferred away.
      if (value.byteLength > 0) return { type: 'chunk', bytes: new Uint8Array(value).buffer };
    }
  } catch (error) {
    held.delete(id);
    entry.reader.cancel(error).catch(() => {});
    return { type: 'chunk', bytes: null, error: toWireError(error) };
  }
}

/** The client went away (or nobody pulled): the source's cancel() runs, a pending pull ends. */
export function cancelBody(id: number): void {
  const entry = held.get(id);
  if (!entry) return;
  held.delete(id);
  if (entry.unclaimed) clearTimeout(entry.unclaimed);
  entry.reader.cancel().catch(() => {});
}
