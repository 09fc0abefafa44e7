import { nanoid } from 'nanoid';

/**
 * 22 characters of nanoid's 64-letter alphabet: 132 bits from the CSPRNG (ASVS 5.0 7.2.3 asks
 * for at least 128; nanoid's default 21 characters give 126). No time, counter or IP inside.
 */
export const SESSION_ID_LENGTH = 22;
const SESSION_ID = /^[A-Za-z0-9_-]{22}$/;

export function newSessionId(): string {
  return nanoid(SESSION_ID_LENGTH);
}

/** The shape check done before any lookup, so no other string ever reaches a map or a store (A7). */
export function isSessionIdShape(value: string): boolean {
  return value.length === SESSION_ID_LENGTH && SESSION_ID.test(value);
}
