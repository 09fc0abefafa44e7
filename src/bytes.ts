/**
 * Chunks joined into one ArrayBuffer of their own, which may be transferred to another
 * thread. (Buffer.concat may hand back a slice of Node's shared pool for small sizes, and
 * transferring that would detach the pool.)
 */
export function joinedBytes(chunks: readonly Uint8Array[], size: number): ArrayBuffer {
  const whole = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    whole.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return whole.buffer;
}
