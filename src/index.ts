/** Resident's public API: the hook contract types, and starting a server from code. */
export type { Context, OnConnection, OnSessionSuspend, SuspendReason } from './types.ts';
export { loadConfigFile, resolveConfig, type ResidentConfig, type ResidentConfigInput } from './config.ts';
export { startServer, type ResidentServer, type StartOptions } from './server.ts';
export { ErrorCodes, ResidentError, type ErrorCode } from './errors.ts';
export type { ContextStore, SessionRecord } from './stores/store.ts';
