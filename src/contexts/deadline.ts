import { ResidentError, type ErrorCode } from '../errors.ts';

/**
 * Resolves like `work`, or rejects with `code` once `ms` pass (0: no deadline). The work itself
 * cannot be cancelled; the caller stops waiting for it.
 */
export function withDeadline<T>(work: Promise<T>, ms: number, code: ErrorCode, what: string): Promise<T> {
  if (ms <= 0) return work;
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ResidentError(code, `${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
