/**
 * config.json is read once at startup, validated into a fully resolved object and frozen.
 * Every message names the key and the expected form, and startup stops (exit 2) before
 * anything listens. Only `undefined` means "not given": an explicit 0 survives.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import ms from 'ms';
import proxyaddr from 'proxy-addr';
import { z } from 'zod';
import { ResidentError } from './errors.ts';
import { clusterSchema, describeClusterIssue, resolveCluster, type ClusterConfig } from './cluster/config.ts';
import { staticSchema } from './http/static-config.ts';
import { csrfSchema } from './http/csrf-config.ts';

/** A duration: a string read by `ms` ("90s", "30m", "8h"), or the number 0 for "none". */
const duration = (fallback: string) =>
  z
    .unknown()
    .optional()
    .transform((value, ctx) => {
      // Only a missing key takes the default: null is a wrong value, not "not given".
      const text = value === undefined ? fallback : value;
      if (text === 0) return 0;
      let millis: number | undefined;
      try {
        millis = typeof text === 'string' ? ms(text as ms.StringValue) : undefined;
      } catch {
        // ms throws on an empty string; the message below names the key instead.
      }
      if (typeof millis !== 'number' || !Number.isFinite(millis) || millis < 0) {
        ctx.addIssue({ code: 'custom', message: 'a duration such as "30m" or "90s" (or 0 for none)' });
        return z.NEVER;
      }
      return millis;
    });

const int = (min: number, max: number, fallback: number) =>
  z.number().int().min(min).max(max).optional().transform((v) => v ?? fallback);

const bool = (fallback: boolean) => z.boolean().optional().transform((v) => v ?? fallback);

/** RFC 6265 token characters: nothing that could break out of a Set-Cookie header (A11). */
const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$/;

const trustProxy = z
  .union([z.boolean(), z.array(z.string())])
  .optional()
  .transform((value, ctx) => {
    const list = value === true ? ['loopback', 'linklocal', 'uniquelocal'] : value || [];
    try {
      proxyaddr.compile(list);
    } catch (error) {
      ctx.addIssue({
        code: 'custom',
        message: `${TRUST_PROXY_FORM} (${(error as Error).message})`,
      });
      return z.NEVER;
    }
    return Object.freeze(list);
  });

/**
 * IP binding: true compares the whole address, false turns binding off, and prefix lengths
 * bind to a network instead (a mobile client keeps its session while its address changes
 * within the /24 or /64; RELIABILITY.md B8).
 */
const bindIp = z
  .union([z.boolean(), z.strictObject({ ipv4: z.number().int().min(0).max(32), ipv6: z.number().int().min(0).max(128) })])
  .optional()
  .transform((value): { ipv4: number; ipv6: number } | false =>
    value === undefined || value === true ? { ipv4: 32, ipv6: 128 } : value,
  );

/** A URL path prefix for the admin view: "/name/", path-safe characters only. */
const ADMIN_PATH = /^\/(?:[A-Za-z0-9._~-]+\/)+$/;

/** Admin token characters: printable ASCII, no space (with min(16): `^[\x21-\x7e]{16,}$`). */
const ADMIN_TOKEN = /^[\x21-\x7e]*$/;

const sessionsSchema = z.strictObject({
  enabled: bool(true),
  cookieName: z
    .string()
    .regex(COOKIE_NAME)
    .optional()
    .transform((v) => v ?? 'RSID'),
  cookieTimeout: duration('480m'),
  processTimeout: duration('480m'),
  maxContexts: int(1, 10_000_000, 100),
  maxQueuedRequests: int(1, 1_000_000, 100),
  bindIp,
  trustProxy,
  secureCookie: bool(false),
  sameSite: z.enum(['lax', 'strict']).optional().transform((v) => v ?? 'lax'),
  maxLifetime: duration('0'),
  mementoVersion: int(1, 2 ** 31 - 1, 1),
  maxMementoSize: int(1, 2 ** 31 - 1, 1024 * 1024),
  checkpointInterval: duration('0'),
  suspendEveryRequest: bool(false),
  /** Sessions one user may hold at once; beyond it the oldest is closed. 0: no limit. */
  maxPerUser: int(0, 1_000_000, 0),
  /** Unproven sessions (their cookie never came back) one source may hold in memory; 0: no budget. */
  maxUnprovenPerIp: int(0, 10_000_000, 200),
  /** Store lookups of unknown session IDs one source may cause per budgetWindow; 0: no budget. */
  maxUnknownIdsPerIp: int(0, 1_000_000_000, 100),
  /** The window of maxUnknownIdsPerIp and of the "over budget" reports. */
  budgetWindow: duration('1m'),
});

const adminSchema = z.strictObject({
  /**
   * Bearer token for the admin view and API; the view is off without one. Printable ASCII
   * without spaces: the check reads `Bearer (\S+)` and Node decodes header values as latin1,
   * so a space or a non-ASCII character would make a token that no request can ever match.
   */
  token: z.string().min(16).regex(ADMIN_TOKEN).optional(),
  path: z.string().regex(ADMIN_PATH).optional().transform((v) => v ?? '/_resident/'),
});

const metricsSchema = z.strictObject({
  enabled: bool(true),
  /** A separate listener for /metrics (no token); without it metrics are under the admin path. */
  port: z.number().int().min(0).max(65535).optional(),
  host: z.string().min(1).optional().transform((v) => v ?? '127.0.0.1'),
});

/** A table name PostgreSQL takes unquoted, optionally schema-qualified: never text a client chose. */
const SQL_TABLE = /^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$/;

const storeSchema = z.strictObject({
  kind: z.enum(['sqlite', 'file', 'memory', 'redis', 'postgres']).optional().transform((v) => v ?? 'sqlite'),
  /** Default: data/contexts.db (sqlite) or data/contexts/ (file), next to the config file. */
  path: z.string().min(1).optional(),
  /**
   * The shared store's server (redis, postgres). Default: the local one. The
   * RESIDENT_STORE_URL environment variable replaces it, to keep a password out of the file.
   */
  url: z.url({ protocol: /^(redis|rediss|postgres|postgresql)$/ }).optional(),
  /** Redis: the prefix of every key Resident writes. */
  prefix: z.string().min(1).max(128).optional().transform((v) => v ?? 'resident:'),
  /** PostgreSQL: the table of session records, created at startup when missing. */
  table: z.string().regex(SQL_TABLE).optional().transform((v) => v ?? 'resident_sessions'),
  /** The longest a call to a shared store may take before it fails (no queue that hangs requests). */
  callTimeout: duration('2s'),
  synchronous: z.enum(['normal', 'full']).optional().transform((v) => v ?? 'normal'),
  maxEntries: int(1, 100_000_000, 1_000_000),
  sweepInterval: duration('1m'),
});

const hooksSchema = z.strictObject({
  onConnection: z.string().min(1).optional().transform((v) => v ?? 'src/hooks/onConnection.ts'),
  onSessionSuspend: z.string().min(1).optional().transform((v) => v ?? 'src/hooks/onSessionSuspend.ts'),
  connectionTimeout: duration('30s'),
  suspendTimeout: duration('10s'),
});

const limitsSchema = z.strictObject({
  maxBodySize: int(0, 2 ** 31, 1024 * 1024),
  headersTimeout: duration('60s'),
  requestTimeout: duration('300s'),
  shutdownTimeout: duration('30s'),
});

/** A section left out entirely gets the defaults its schema gives an empty object. */
const section = <S extends z.ZodType>(schema: S) =>
  schema.optional().transform((v): z.output<S> => (v === undefined ? schema.parse({}) : (v as z.output<S>)));

const schema = z.strictObject({
  host: z.string().min(1).optional().transform((v) => v ?? '0.0.0.0'),
  port: int(0, 65535, 8080),
  publicDir: z.string().optional().transform((v) => v ?? 'public'),
  static: section(staticSchema),
  csrf: section(csrfSchema),
  sessions: section(sessionsSchema),
  workers: section(
    z.strictObject({
      threads: int(1, 256, 2),
      /** A thread whose event loop does not turn for this long is replaced (RELIABILITY.md F3); 0: never. */
      stallTimeout: duration('10s'),
      /** Each thread's heap limit in MiB (RELIABILITY.md D8, F4); 0: Node's own. */
      maxHeapMb: int(0, 1_048_576, 0),
    }),
  ),
  hooks: section(hooksSchema),
  store: section(storeSchema),
  limits: section(limitsSchema),
  log: section(
    z.strictObject({
      level: z
        .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
        .optional()
        .transform((v) => v ?? 'info'),
      /** auto: readable lines when stdout is a terminal, JSON lines otherwise. */
      format: z.enum(['auto', 'json', 'pretty']).optional().transform((v) => v ?? 'auto'),
    }),
  ),
  admin: section(adminSchema),
  metrics: section(metricsSchema),
  health: section(z.strictObject({ enabled: bool(true) })),
  cluster: section(clusterSchema(duration)),
});

type Parsed = z.output<typeof schema>;

export type ResidentConfig = Readonly<
  Omit<Parsed, 'sessions' | 'workers' | 'hooks' | 'limits' | 'log' | 'store' | 'admin' | 'metrics' | 'health' | 'cluster'> & {
    /** Folder of the config file; relative paths in it were resolved against this. */
    baseDir: string;
    sessions: Readonly<Parsed['sessions']>;
    workers: Readonly<Parsed['workers']>;
    hooks: Readonly<Parsed['hooks']>;
    limits: Readonly<Parsed['limits']>;
    log: Readonly<Parsed['log']>;
    admin: Readonly<Parsed['admin']>;
    metrics: Readonly<Parsed['metrics']>;
    health: Readonly<Parsed['health']>;
    cluster: Readonly<ClusterConfig>;
    /** `url`: the shared store's server ('' for the stores on this machine). */
    store: Readonly<Omit<Parsed['store'], 'path' | 'url'> & { path: string; url: string }>;
  }
>;

/** What config.json may contain: every key optional. */
export type ResidentConfigInput = z.input<typeof schema>;

/** Where a shared store is looked for when neither store.url nor RESIDENT_STORE_URL says. */
const DEFAULT_STORE_URLS: Partial<Record<Parsed['store']['kind'], string>> = {
  redis: 'redis://127.0.0.1:6379',
  postgres: 'postgres://127.0.0.1:5432/postgres',
};

/** `url` without its secrets, for logs and the banner (kept here: it is imported from config). */
export { redactUrl } from './url-secrets.ts';

/** The smallest workers.maxHeapMb a thread can start with (it loads tsx and the hooks). */
const MIN_HEAP_MB = 32;

const TRUST_PROXY_FORM = 'false, true, or a list of IP addresses, CIDR ranges or "loopback" / "linklocal" / "uniquelocal"';
const UNION_FORMS: Record<string, string> = {
  'sessions.trustProxy': TRUST_PROXY_FORM,
  'sessions.bindIp': 'true, false, or prefix lengths such as { "ipv4": 24, "ipv6": 64 }',
};

function describeIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.map(String).join('.');
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => `${path ? `${path}.` : ''}${key} is not a known key`).join('; ');
  }
  const where = path || 'the configuration';
  const cluster = path.startsWith('cluster.') ? describeClusterIssue(path, issue.code) : undefined;
  if (cluster) return cluster;
  if (issue.code === 'custom') return `${where} must be ${issue.message}`;
  if (issue.code === 'invalid_format' && path === 'admin.path') {
    return `${where} must be a URL path that starts and ends with "/", such as "/_resident/"`;
  }
  if (issue.code === 'too_small' && path === 'admin.token') return `${where} must be at least 16 characters (a long random secret)`;
  // Never echo the value: it is a secret.
  if (issue.code === 'invalid_format' && path === 'admin.token') {
    return `${where} must be printable ASCII without spaces (letters, digits and punctuation): an Authorization header cannot carry anything else`;
  }
  if (issue.code === 'invalid_format' && path === 'store.table') {
    return `${where} must be a lower-case SQL name (letters, digits, "_"; at most 63), optionally "schema.table"`;
  }
  if (issue.code === 'invalid_format' && path === 'store.url') {
    // Never echo the value: it may hold a password.
    return `${where} must be a redis://, rediss://, postgres:// or postgresql:// URL`;
  }
  if (issue.code === 'invalid_format' && path.endsWith('cookieName')) {
    return `${where} must be a cookie name of 1 to 64 letters, digits or !#$%&'*+-.^_\`|~ (no spaces, ";", "=" or control characters)`;
  }
  if (issue.code === 'invalid_type') return `${where} must be ${expectedForm(issue.expected)}`;
  if (issue.code === 'too_small' && issue.origin === 'string') return `${where} must be a non-empty string`;
  if (issue.code === 'invalid_union') return `${where} must be ${UNION_FORMS[path] ?? 'one of the documented forms'}`;
  if (issue.code === 'too_small' || issue.code === 'too_big') {
    return `${where} must be ${issue.code === 'too_small' ? 'at least' : 'at most'} ${String(
      issue.code === 'too_small' ? issue.minimum : issue.maximum,
    )}`;
  }
  if (issue.code === 'invalid_value') return `${where} must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
  return `${where}: ${issue.message}`;
}

function expectedForm(expected: string): string {
  if (expected === 'number' || expected === 'int') return 'a whole number';
  if (expected === 'boolean') return 'true or false';
  if (expected === 'string') return 'a string';
  if (expected === 'object') return 'an object';
  if (expected === 'array') return 'a list';
  return expected;
}

/**
 * Validates a parsed config object. Throws RESIDENT_ERR_INVALID_CONFIG naming every bad key.
 * @param baseDir folder that relative paths (publicDir, hooks) are resolved against
 */
export function resolveConfig(input: unknown, baseDir: string): ResidentConfig {
  const parsed = schema.safeParse(input ?? {});
  if (!parsed.success) {
    // A union reports its branches' issues; the union itself names the key well enough.
    const messages = [...new Set(parsed.error.issues.map(describeIssue))];
    throw new ResidentError('RESIDENT_ERR_INVALID_CONFIG', `Invalid configuration: ${messages.join('; ')}`);
  }
  const value = parsed.data;
  const { cookieName, secureCookie } = value.sessions;
  if ((cookieName.startsWith('__Host-') || cookieName.startsWith('__Secure-')) && !secureCookie) {
    throw new ResidentError(
      'RESIDENT_ERR_INVALID_CONFIG',
      `Invalid configuration: sessions.cookieName "${cookieName}" needs sessions.secureCookie: true (browsers drop __Host- and __Secure- cookies without Secure)`,
    );
  }
  const { headersTimeout, requestTimeout } = value.limits;
  if (requestTimeout > 0 && (headersTimeout === 0 || headersTimeout > requestTimeout)) {
    // node:http refuses this combination at startup; say so in terms of our keys.
    throw new ResidentError(
      'RESIDENT_ERR_INVALID_CONFIG',
      'Invalid configuration: limits.headersTimeout must be a duration no longer than limits.requestTimeout (or set limits.requestTimeout to 0)',
    );
  }
  if ((value.store.kind === 'redis' || value.store.kind === 'postgres') && value.store.callTimeout < 1) {
    // A shared store's calls are always bounded: no call may wait forever on a server.
    throw new ResidentError('RESIDENT_ERR_INVALID_CONFIG', `Invalid configuration: store.callTimeout must be a duration of at least 1 ms for store.kind "${value.store.kind}"`);
  }
  const { maxHeapMb } = value.workers;
  if (maxHeapMb > 0 && maxHeapMb < MIN_HEAP_MB) {
    // Below this a thread cannot even load its hooks, and would be replaced in a loop.
    throw new ResidentError('RESIDENT_ERR_INVALID_CONFIG', `Invalid configuration: workers.maxHeapMb must be 0 (Node's own limit) or at least ${MIN_HEAP_MB}`);
  }
  const cluster = resolveCluster(value.cluster, { storeKind: value.store.kind, port: value.port, env: process.env, sessionCookie: cookieName });
  if (typeof cluster === 'string') throw new ResidentError('RESIDENT_ERR_INVALID_CONFIG', `Invalid configuration: ${cluster}`);
  const config: ResidentConfig = {
    ...value,
    baseDir,
    publicDir: resolve(baseDir, value.publicDir),
    hooks: Object.freeze({
      ...value.hooks,
      onConnection: resolve(baseDir, value.hooks.onConnection),
      onSessionSuspend: resolve(baseDir, value.hooks.onSessionSuspend),
    }),
    store: Object.freeze({
      ...value.store,
      path: resolve(baseDir, value.store.path ?? (value.store.kind === 'file' ? 'data/contexts' : 'data/contexts.db')),
      url: value.store.url ?? DEFAULT_STORE_URLS[value.store.kind] ?? '',
    }),
    sessions: Object.freeze(value.sessions),
    workers: Object.freeze(value.workers),
    limits: Object.freeze(value.limits),
    log: Object.freeze(value.log),
    admin: Object.freeze(value.admin),
    metrics: Object.freeze(value.metrics),
    health: Object.freeze(value.health),
    static: Object.freeze(value.static),
    csrf: Object.freeze(value.csrf),
    cluster: Object.freeze(cluster),
  };
  return Object.freeze(config);
}

/**
 * Reads and validates a config file; paths in it are relative to its folder. `overrides`
 * (e.g. the PORT environment variable) replace keys before validation: "port" a top-level
 * key, "admin.token" one key of a section.
 */
export function loadConfigFile(path: string, overrides: Record<string, unknown> = {}): ResidentConfig {
  const absolute = resolve(path);
  let text: string;
  try {
    text = readFileSync(absolute, 'utf8');
  } catch (error) {
    throw new ResidentError('RESIDENT_ERR_INVALID_CONFIG', `Cannot read config file ${absolute}: ${(error as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new ResidentError('RESIDENT_ERR_INVALID_CONFIG', `Config file ${absolute} is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ResidentError('RESIDENT_ERR_INVALID_CONFIG', `Config file ${absolute} must hold a JSON object`);
  }
  const merged: Record<string, unknown> = { ...json };
  for (const [key, value] of Object.entries(overrides)) {
    // "section.key" overrides one key of a section and keeps the rest of it.
    const [section, inner] = key.split('.', 2) as [string, string | undefined];
    if (inner === undefined) merged[key] = value;
    else merged[section] = { ...(isObject(merged[section]) ? merged[section] : {}), [inner]: value };
  }
  return resolveConfig(merged, dirname(absolute));
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
