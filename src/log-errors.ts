/**
 * The `err` of a log line. pino's serializer names an error by its constructor, and an error
 * that crossed from a worker thread is a plain object by then (a thread's log line, a hook's
 * error in a reply): it would read `"type":"Object"`. Those carry their type already, written
 * where the error was thrown (src/contexts/protocol.ts toWireError, src/edge/thread-log.ts), and
 * keep it here; any other error is named as they name it (errorType).
 */
import pino from 'pino';
import { errorType } from './contexts/protocol.ts';

export function serializeErr(err: unknown): unknown {
  if (isFlattened(err)) return err;
  const serialized = pino.stdSerializers.err(err as Error) as unknown;
  // An Error that came back from a thread whole (piscina's) is of class Error again: its name
  // still says what it was (ResidentError, TransformError).
  if (serialized !== err && typeof serialized === 'object' && serialized !== null) (serialized as { type: string }).type = errorType(err);
  return serialized;
}

function isFlattened(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || value instanceof Error) return false;
  const prototype = Object.getPrototypeOf(value) as unknown;
  return (prototype === Object.prototype || prototype === null) && typeof (value as { type?: unknown }).type === 'string';
}
