/**
 * Why the worker pool did not start, as the error startServer rejects with (and the CLI prints,
 * exiting 2): a port that cannot be listened on, or hooks that cannot be loaded.
 */
import { ResidentError } from '../errors.ts';
import { failure } from './hook-load.ts';
import type { HooksLoading } from './protocol.ts';

export function poolStartFailure(error: unknown, port: number, host: string): ResidentError {
  if (isListenError(error)) {
    return new ResidentError('RESIDENT_ERR_LISTEN', `Cannot listen on port ${port} at ${host}: ${(error as Error).message}`, { cause: error });
  }
  if (isHookLoadError(error)) {
    // Said in full by the thread that tried (./hook-load.ts): which hook, module, file and error.
    return new ResidentError('RESIDENT_ERR_HOOK_LOAD', (error as Error).message, { cause: error });
  }
  // A worker's failure may arrive as something other than an Error: say what it was.
  const reason = error instanceof Error ? error.message : typeof error === 'object' && error !== null && 'message' in error ? String(error.message) : String(error);
  return new ResidentError('RESIDENT_ERR_HOOK_LOAD', `the hooks could not be loaded (RESIDENT_ERR_HOOK_LOAD): ${reason}`, { cause: error });
}

/**
 * A thread's RESIDENT_ERR_HOOK_LOAD. It arrives as a plain Error (a worker's uncaught error
 * crosses without its class) that kept its own properties, the code among them.
 */
export function isHookLoadError(error: unknown): boolean {
  try {
    return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === 'RESIDENT_ERR_HOOK_LOAD' && typeof (error as { message?: unknown }).message === 'string';
  } catch {
    return false;
  }
}

function isListenError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'EADDRINUSE' || code === 'EADDRNOTAVAIL' || code === 'EACCES' || code === 'ENOTFOUND' || code === 'EAI_AGAIN';
}

/**
 * A thread whose hook module's top-level code did not finish within workers.stallTimeout
 * (timed on the main thread, ./load-watch.ts), said as every other load failure is.
 */
export function loadTooLong(loading: HooksLoading, timeoutMs: number): ResidentError {
  if (!loading.hook || !loading.module) {
    return new ResidentError('RESIDENT_ERR_HOOK_LOAD', `a worker thread did not finish loading its hooks within workers.stallTimeout (${timeoutMs} ms)`);
  }
  return failure(loading.hook, loading.module, {
    error: `the worker thread did not finish loading its hooks within workers.stallTimeout (${timeoutMs} ms): this module's top-level code never finished`,
    fix: 'a top-level await waits for something that never comes (a connection without a timeout, an event), or the code loops: make it finish, or move the wait into the hook',
  });
}
