/**
 * Mementos cross threads and live in stores as devalue text: plain data plus Date, Map, Set,
 * BigInt, typed arrays, undefined and repeated references. Reading one back never runs code
 * (no eval, no class revival), so a tampered store cannot execute anything (E11,
 * CVE-2020-9484). Encoding happens in the worker at suspend time, so a value that cannot be
 * saved is reported then, with its path, not discovered at restore (H2).
 */
import { parse, stringify } from 'devalue';
import { ResidentError } from '../errors.ts';

export function encodeMemento(value: unknown, maxBytes: number): string {
  let text: string;
  try {
    text = stringify(value);
  } catch (error) {
    const path = (error as { path?: string }).path;
    const where = path ? `memento${path}` : 'the memento';
    throw new ResidentError(
      'RESIDENT_ERR_MEMENTO_NOT_CLONEABLE',
      `${where} cannot be saved: ${(error as Error).message} (allowed: plain objects and arrays, strings, numbers, booleans, null, undefined, BigInt, Date, RegExp, Map, Set, typed arrays)`,
    );
  }
  const bytes = Buffer.byteLength(text);
  if (bytes > maxBytes) {
    throw new ResidentError('RESIDENT_ERR_MEMENTO_TOO_LARGE', `the memento is ${bytes} bytes, over sessions.maxMementoSize (${maxBytes})`);
  }
  return text;
}

export function decodeMemento(text: string): unknown {
  return parse(text);
}
