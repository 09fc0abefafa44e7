/**
 * Every failure Resident reports has a stable code, so tests, logs and dashboards match on
 * codes rather than on message text (the fastify convention). Those that reach a client carry
 * the HTTP status and a short, non-sensitive body; details stay in the log.
 */
export const ErrorCodes = {
  RESIDENT_ERR_INVALID_CONFIG: { status: 0, message: 'invalid configuration' },
  RESIDENT_ERR_NODE_VERSION: { status: 0, message: 'this Node.js is too old' },
  RESIDENT_ERR_HOOK_LOAD: { status: 0, message: 'a hook module could not be loaded' },
  RESIDENT_ERR_HOOK_FAILED: { status: 500, message: 'Internal Server Error' },
  RESIDENT_ERR_HOOK_TIMEOUT: { status: 504, message: 'The request took too long to answer.' },
  RESIDENT_ERR_SUSPEND_FAILED: { status: 0, message: 'onSessionSuspend failed' },
  RESIDENT_ERR_MEMENTO_NOT_CLONEABLE: { status: 0, message: 'the memento cannot be saved' },
  RESIDENT_ERR_MEMENTO_TOO_LARGE: { status: 0, message: 'the memento is too large' },
  RESIDENT_ERR_MEMENTO_CORRUPT: { status: 0, message: 'a stored memento cannot be read' },
  RESIDENT_ERR_WORKER_LOST: { status: 502, message: 'The worker serving this session stopped. Please retry.' },
  // The crash-loop breaker tripped and no worker thread is left (RELIABILITY.md F5).
  RESIDENT_ERR_WORKERS_DOWN: { status: 503, message: 'The server cannot serve sessions right now. Please retry later.' },
  RESIDENT_ERR_QUEUE_FULL: { status: 503, message: 'Too many requests for this session are waiting. Please retry shortly.' },
  RESIDENT_ERR_CAPACITY: { status: 503, message: 'The server is at capacity. Please retry shortly.' },
  // One source holds its whole budget of unproven sessions, every one busy (sessions.maxUnprovenPerIp).
  RESIDENT_ERR_TOO_MANY_NEW: { status: 429, message: 'Too many new sessions from your network. Please retry shortly.' },
  RESIDENT_ERR_SHUTTING_DOWN: { status: 503, message: 'The server is restarting. Please retry shortly.' },
  RESIDENT_ERR_IP_MISMATCH: {
    status: 400,
    message: 'This session cookie belongs to another network address. Reload the page to start a new session.',
  },
  RESIDENT_ERR_BODY_TOO_LARGE: { status: 413, message: 'The request body is too large.' },
  RESIDENT_ERR_BAD_REQUEST: { status: 400, message: 'Bad request.' },
  // csrf.checkOrigin: a state-changing request sent from another site's page, refused before any hook.
  RESIDENT_ERR_CSRF: { status: 403, message: 'Forbidden: this request was sent from another site.' },
  // The client's doing, and no one is left to answer: logged at debug, never counted as a failure.
  RESIDENT_ERR_CLIENT_ABORTED: { status: 0, message: 'the client went away before its request was read' },
  RESIDENT_ERR_STORE_OPEN: { status: 0, message: 'the store cannot be opened' },
  RESIDENT_ERR_LISTEN: { status: 0, message: 'a listener cannot be opened' },
  RESIDENT_ERR_EFFECT_REFUSED: { status: 0, message: 'a session effect was asked for outside an unanswered request' },
  RESIDENT_ERR_STORE_FAILED: { status: 503, message: 'Session storage is unavailable. Please retry shortly.' },
  RESIDENT_ERR_FENCED: { status: 503, message: 'This session moved to another server. Please retry.' },
  RESIDENT_ERR_NO_LEASE: { status: 503, message: 'This server cannot serve sessions right now. Please retry shortly.' },
  RESIDENT_ERR_FORWARD_LOOP: { status: 508, message: 'Loop Detected: the servers could not agree where this session lives. Please retry.' },
  RESIDENT_ERR_FORWARD_TIMEOUT: { status: 504, message: 'The server holding this session did not answer in time.' },
  RESIDENT_ERR_FORWARD_FAILED: { status: 503, message: 'The server holding this session cannot be reached. Please retry shortly.' },
  RESIDENT_ERR_FORWARD_REFUSED: { status: 403, message: 'Forbidden.' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ErrorCodes;

export class ResidentError extends Error {
  readonly code: ErrorCode;
  /** HTTP status when the error reaches a client; 0 when it never does. */
  readonly status: number;

  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? ErrorCodes[code].message, options);
    this.name = 'ResidentError';
    this.code = code;
    this.status = ErrorCodes[code].status;
  }

  /** The short body a client sees: never the detailed message, never a stack. */
  get publicMessage(): string {
    return ErrorCodes[this.code].message;
  }
}

export function isResidentError(error: unknown, code?: ErrorCode): error is ResidentError {
  return error instanceof ResidentError && (code === undefined || error.code === code);
}
