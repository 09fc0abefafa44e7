/**
 * The `cluster` section of config.json: several Resident nodes on one Redis or PostgreSQL store,
 * each live context on exactly one of them (README, "Running several nodes"). Validated with
 * the rest of the configuration (../config.ts); what depends on other sections (the store's
 * kind, the public port, the environment's secret) is settled in `resolveCluster`.
 */
import { hostname } from 'node:os';
import { z } from 'zod';

/** The shortest cluster.secret accepted: an HMAC key that cannot be guessed. */
export const MIN_SECRET_LENGTH = 32;

/** RFC 6265 token characters, as for sessions.cookieName. */
const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$/;
/** A node ID: printable, no spaces, and never '#' (it separates the incarnation in an owner string). */
const NODE_ID = /^[A-Za-z0-9._:@-]{1,100}$/;

export const clusterSchema = <D extends z.ZodType<number>>(duration: (fallback: string) => D) =>
  z.strictObject({
    enabled: z.boolean().optional().transform((v) => v ?? false),
    nodeId: z.string().regex(NODE_ID).optional(),
    host: z.string().min(1).optional().transform((v) => v ?? '127.0.0.1'),
    port: z.number().int().min(0).max(65535).optional().transform((v) => v ?? 0),
    advertise: z.url({ protocol: /^https?$/ }).optional(),
    secret: z.string().optional(),
    leaseTimeout: duration('10s'),
    /** How long a forwarding node waits for the owner's answer before answering 504 (G6). */
    forwardTimeout: duration('30s'),
    /** The non-secret cookie naming the owner node, for a balancer's routing. */
    routingCookie: z.string().regex(COOKIE_NAME).optional().transform((v) => v ?? 'resident_node'),
  });

export type ClusterInput = z.output<ReturnType<typeof clusterSchema>>;

export interface ClusterConfig {
  enabled: boolean;
  nodeId: string;
  host: string;
  /** 0: the system picks a free port at startup; the listener reports the one it got. */
  port: number;
  /** undefined: http://host:port of the private listener once it listens. */
  advertise: string | undefined;
  secret: string;
  leaseTimeout: number;
  forwardTimeout: number;
  routingCookie: string;
}

/** Issue messages for the cluster's keys (../config.ts's describeIssue asks here first). */
export function describeClusterIssue(path: string, code: string): string | undefined {
  if (path === 'cluster.nodeId' && code === 'invalid_format') return 'cluster.nodeId must be 1 to 100 letters, digits or . _ : @ - (no spaces, no "#")';
  if (path === 'cluster.advertise' && code === 'invalid_format') return 'cluster.advertise must be an http:// or https:// URL other nodes reach this node at';
  if (path === 'cluster.routingCookie' && code === 'invalid_format') return 'cluster.routingCookie must be a cookie name of 1 to 64 letters, digits or !#$%&\'*+-.^_`|~';
  return undefined;
}

/**
 * The cluster section settled against the rest: returns the error message (naming the key)
 * when the combination is invalid. The environment's RESIDENT_CLUSTER_SECRET wins over the file,
 * so the secret need not be written in config.json.
 */
export function resolveCluster(
  input: ClusterInput,
  context: { storeKind: string; port: number; env: NodeJS.ProcessEnv; sessionCookie: string },
): ClusterConfig | string {
  const secret = context.env.RESIDENT_CLUSTER_SECRET || input.secret || '';
  const resolved: ClusterConfig = {
    enabled: input.enabled,
    nodeId: input.nodeId ?? `${hostname()}:${context.port}`.replace(/[^A-Za-z0-9._:@-]/g, '-').slice(0, 100),
    host: input.host,
    port: input.port,
    advertise: input.advertise,
    secret,
    leaseTimeout: input.leaseTimeout,
    forwardTimeout: input.forwardTimeout,
    routingCookie: input.routingCookie,
  };
  if (!input.enabled) return resolved;
  if (context.storeKind !== 'redis' && context.storeKind !== 'postgres') {
    return `cluster.enabled needs store.kind "redis" or "postgres" (the store is where nodes agree who owns a session), not "${context.storeKind}"`;
  }
  if (secret.length < MIN_SECRET_LENGTH) {
    return `cluster.secret (or the RESIDENT_CLUSTER_SECRET environment variable) must be at least ${MIN_SECRET_LENGTH} characters when cluster.enabled is true: it authenticates the requests nodes forward to each other`;
  }
  if (input.leaseTimeout < 1000) return 'cluster.leaseTimeout must be a duration of at least 1s';
  if (input.forwardTimeout < 1) return 'cluster.forwardTimeout must be a duration of at least 1 ms';
  if (input.routingCookie === context.sessionCookie) return 'cluster.routingCookie must differ from sessions.cookieName';
  return resolved;
}
