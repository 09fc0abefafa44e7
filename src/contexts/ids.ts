import { nanoid } from 'nanoid';

/**
 * A session ID: 22 characters of nanoid's 64-letter alphabet (132 bits from the CSPRNG; ASVS
 * 5.0 7.2.3 asks for at least 128), then 2 characters naming the session's home slot (the
 * worker thread whose edge created it; see ../../README.md, "Session IDs"). The slot is not a
 * secret and adds no entropy: it lets any thread find a context's home without asking anyone.
 * No time, counter or IP inside.
 *
 * IDs of 22 characters (before the home was written into them) are still accepted: their home
 * is derived from their characters, so a session stored by an earlier version resumes.
 */
export const RANDOM_LENGTH = 22;
export const SESSION_ID_LENGTH = RANDOM_LENGTH + 2;
const ALPHABET = 'useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict';
const SESSION_ID = /^[A-Za-z0-9_-]{22}(?:[A-Za-z0-9_-]{2})?$/;
/** Slots two characters can name. */
export const MAX_SLOTS = ALPHABET.length * ALPHABET.length;

let homeSlot = 0;

/** The slot new IDs made on this thread name (its edge's slot). */
export function setHomeSlot(slot: number): void {
  if (!Number.isInteger(slot) || slot < 0 || slot >= MAX_SLOTS) throw new RangeError(`slot ${slot} out of range`);
  homeSlot = slot;
}

/** A new ID homed on this thread's slot, or on `slot`. */
export function newSessionId(slot = homeSlot): string {
  return nanoid(RANDOM_LENGTH) + ALPHABET[Math.floor(slot / ALPHABET.length)]! + ALPHABET[slot % ALPHABET.length]!;
}

/** The shape check done before any lookup, so no other string ever reaches a map or a store (A7). */
export function isSessionIdShape(value: string): boolean {
  return (value.length === SESSION_ID_LENGTH || value.length === RANDOM_LENGTH) && SESSION_ID.test(value);
}

/**
 * The slot an ID names, as written: for an ID of 22 characters (an earlier version's), a number
 * derived from its characters. Modulo the thread count it is the session's home, so sessions
 * adopted after a restart with another thread count still find one.
 */
export function slotOf(id: string): number {
  if (id.length === SESSION_ID_LENGTH) return ALPHABET.indexOf(id[RANDOM_LENGTH]!) * ALPHABET.length + ALPHABET.indexOf(id[RANDOM_LENGTH + 1]!);
  let hash = 0;
  for (let i = 0; i < id.length; i++) hash = (hash * 31 + id.charCodeAt(i)) >>> 0;
  return hash % MAX_SLOTS;
}

/** The home slot of `id` among `threads` edge threads. */
export function homeOf(id: string, threads: number): number {
  return slotOf(id) % threads;
}
