/**
 * Mementos cross threads and live in stores as devalue text: plain data plus Date, Map, Set,
 * BigInt, typed arrays, undefined and repeated references. Reading one back never runs code
 * (no eval, no class revival), so a tampered store cannot execute anything (E11,
 * CVE-2020-9484). Encoding happens in the worker at suspend time, so a value that cannot be
 * saved is reported then, with its path, not discovered at restore (H2).
 */
import { createHash } from 'node:crypto';
import { parse, stringify } from 'devalue';
import { ResidentError } from '../errors.ts';

/**
 * Stored form: `m1:<digest>:<devalue text>`. The digest (SHA-256, 128 bits shown) catches
 * damage that still parses, such as a flipped digit, which would otherwise be served as
 * data (RELIABILITY.md E11).
 */
const FORMAT = 'm1';

function digest(text: string): string {
  return createHash('sha256').update(text).digest('base64url').slice(0, 22);
}

/**
 * devalue refuses an own key named `__proto__` both ways (so that parsing can never set a
 * prototype). Such keys are ordinary data in parsed JSON (`JSON.parse('{"__proto__": 1}')`),
 * and refusing them made every suspend of a context holding user JSON fail. An object with one
 * is written as its entries under a tag of ours, and read back by defining each key as an own
 * data property: never an assignment, so no prototype is ever touched.
 */
const PROTO_KEYED = 'ProtoKeyed';

const reducers = {
  [PROTO_KEYED]: (value: unknown) => {
    if (typeof value !== 'object' || value === null || !Object.hasOwn(value, '__proto__')) return false;
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) return false;
    // devalue cannot revive a tagged value from inside its own payload: refused now, at
    // suspend time, rather than read back as corrupt (H2).
    if (reachesItself(value)) throw new Error('an object with a __proto__ key cannot be part of a cycle');
    return [proto === null, Object.entries(value)];
  },
};

/** True when `root` can be reached again from its own values (through objects, arrays, Maps, Sets). */
function reachesItself(root: object): boolean {
  const seen = new Set<object>();
  const pending: unknown[] = [...childrenOf(root)];
  while (pending.length > 0) {
    const value = pending.pop();
    if (value === root) return true;
    if (typeof value !== 'object' || value === null || seen.has(value)) continue;
    seen.add(value);
    for (const child of childrenOf(value)) pending.push(child);
  }
  return false;
}

function childrenOf(value: object): Iterable<unknown> {
  if (value instanceof Map) return [...value.keys(), ...value.values()];
  if (value instanceof Set) return value.values();
  if (ArrayBuffer.isView(value) || value instanceof Date || value instanceof RegExp) return [];
  return Object.values(value);
}

const revivers = {
  [PROTO_KEYED]: (packed: unknown) => {
    const [nullProto, entries] = Array.isArray(packed) ? packed : [];
    if (typeof nullProto !== 'boolean' || !Array.isArray(entries)) throw new Error('a malformed object with a __proto__ key');
    const object: Record<string, unknown> = nullProto ? Object.create(null) : {};
    for (const entry of entries) {
      if (!Array.isArray(entry) || typeof entry[0] !== 'string') throw new Error('a malformed object with a __proto__ key');
      Object.defineProperty(object, entry[0], { value: entry[1], enumerable: true, writable: true, configurable: true });
    }
    return object;
  },
};

export function encodeMemento(value: unknown, maxBytes: number): string {
  let text: string;
  try {
    text = stringify(value, reducers);
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
  return `${FORMAT}:${digest(text)}:${text}`;
}

/** The memento, or a RESIDENT_ERR_MEMENTO_CORRUPT error when the stored text is damaged. */
export function decodeMemento(stored: string): unknown {
  const first = stored.indexOf(':');
  const second = stored.indexOf(':', first + 1);
  if (first === -1 || second === -1 || stored.slice(0, first) !== FORMAT) {
    throw new ResidentError('RESIDENT_ERR_MEMENTO_CORRUPT', 'the stored memento is not in a known format');
  }
  const text = stored.slice(second + 1);
  if (digest(text) !== stored.slice(first + 1, second)) {
    throw new ResidentError('RESIDENT_ERR_MEMENTO_CORRUPT', 'the stored memento does not match its checksum');
  }
  try {
    return parse(text, revivers);
  } catch (error) {
    throw new ResidentError('RESIDENT_ERR_MEMENTO_CORRUPT', `the stored memento cannot be parsed: ${(error as Error).message}`);
  }
}
