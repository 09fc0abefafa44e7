/**
 * The worker's end of streamed response bodies. A hook's Response whose body is a stream, a
 * Blob or a fetch() body is held here, and read one chunk per 'pull' from the main thread,
 * which asks for the next chunk only once the client's socket took the last one: a slow client
 * holds back the stream's source instead of filling memory (RELIABILITY.md D6). The context's
 * queue moved on when the hook returned; the stream lives here until it ends, fails or is
 * cancelled, whatever happens to the context meanwhile.
 */
import { toWireError, type WorkerReply } from './protocol.ts';

type ChunkReply = Extract<WorkerReply, { type: 'chunk' }>;

interface Held {
  reader: ReadableStreamDefaultReader<unknown>;
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

/** Keeps `response`'s body for pulling; returns its stream ID. Throws when the body was already read. */
export function holdBody(response: Response): number {
  if (response.bodyUsed || !response.body) throw new TypeError('the Response body was already read');
  const reader = response.body.getReader();
  const id = nextId++;
  const unclaimed = setTimeout(() => cancelBody(id), UNCLAIMED_MS);
  unclaimed.unref();
  held.set(id, { reader, unclaimed });
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
      const { done, value } = await entry.reader.read();
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
