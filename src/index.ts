/**
 * Resident's public API (`import … from 'resident'`): starting a server from code, its
 * configuration, errors, the store contract, and the hook contract's types. Hook modules
 * import from 'resident/hooks' (./hooks-api.ts), which loads nothing of the server.
 */
export type { Context, HookLog, LogLevel, LogMethod, OnConnection, OnSessionSuspend, SelectOptions, SuspendReason } from './types.ts';
export { defineHooks, type Hooks } from './hooks-api.ts';
export { createServer, type CreateServerOptions, type Server } from './create-server.ts';
export { loadConfigFile, resolveConfig, type ResidentConfig, type ResidentConfigInput } from './config.ts';
export { startServer, type ResidentServer, type StartOptions } from './server.ts';
export { ErrorCodes, ResidentError, isResidentError, type ErrorCode } from './errors.ts';
export type { ContextStore, SessionRecord } from './stores/store.ts';
