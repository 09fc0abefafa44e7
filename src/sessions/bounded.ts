/** Store calls on a request's path, bounded in time. */
import { withDeadline } from '../contexts/deadline.ts';

/**
 * A store call a request waits for, at most: a store that hangs (a stuck network mount) gets
 * the client a 503 within this, never a request that never ends (RELIABILITY.md E6).
 */
export const STORE_CALL_TIMEOUT_MS = 1_500;

/** A store call on a request's path, given up on (RESIDENT_ERR_STORE_FAILED, a 503) after STORE_CALL_TIMEOUT_MS. */
export function bounded<T>(work: Promise<T>, what: string): Promise<T> {
  return withDeadline(work, STORE_CALL_TIMEOUT_MS, 'RESIDENT_ERR_STORE_FAILED', what);
}
