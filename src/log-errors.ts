/**
 * The `err` of a log line. pino's serializer names an error by its constructor, and an error
 * that crossed from a worker thread is a plain object by then (a thread's log line, a hook's
 * error in a reply): it would read `"type":"Object"`. Those carry their type already, written
 * where the error was thrown (src/contexts/protocol.ts toWireError, src/edge/thread-log.ts), and
 * keep it here.
 */
import pino from 'pino';

export function serializeErr(err: unknown): unknown {
  return isFlattened(err) ? err : pino.stdSerializers.err(err as Error);
}

function isFlattened(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || value instanceof Error) return false;
  const prototype = Object.getPrototypeOf(value) as unknown;
  return (prototype === Object.prototype || prototype === null) && typeof (value as { type?: unknown }).type === 'string';
}
