/**
 * The hook's `new Response(body, init)`, made light (issue 10). Node 24's Response turns a
 * string into a body stream as it is built (about 5 µs) and keeps what it was built from
 * private, so the worker could only get a string back by reading that stream. Inside a worker
 * the global Response is a Proxy over the native class (./fetch-globals.ts): a string or bytes
 * body with a plain init makes a stand-in that keeps its body as given, for bodyOf() to take
 * whole, and builds the native Response only when something beyond status and headers is
 * touched (`body`, `text()`, `clone()` …). Anything else (a stream, a Blob, form data, a
 * subclass, a status a body cannot have) is the native Response, streamed as before.
 */
import { markAsUncloneable } from 'node:worker_threads';
import { asBytes, delegateRest, lendNativeMembers, mirrorHeaders } from './deferred.ts';

const NativeResponse = globalThis.Response;

/** The statuses a Response with a body refuses (Fetch standard: null body status). */
const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

/** A status no body may come with (Fetch standard: null body status). */
export function forbidsBody(status: number): boolean {
  return NULL_BODY_STATUS.has(status);
}

/** RFC 9112 reason-phrase, as undici checks it. */
const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]*$/;
const TEXT_TYPE = 'text/plain;charset=UTF-8';
const JSON_TYPE = 'application/json';

export interface TakenBody {
  body: string | Uint8Array | null;
  /** The headers for the wire, when no Headers was built for them. */
  headers: string[] | undefined;
}

class LightResponse {
  readonly #status: number;
  readonly #statusText: string;
  /** What the body was built from, until the native Response takes it. */
  #body: string | Uint8Array | null;
  /** The Content-Type the body implies, while no Headers was built. */
  readonly #type: string | null;
  #headers: Headers | undefined;
  /** The body was taken (by take(), for the wire): read, as a native body read through its stream. */
  #used = false;
  #real: Response | undefined;

  constructor(body: string | Uint8Array | null, status: number, statusText: string, headers: Headers | undefined, type: string | null) {
    this.#body = body;
    this.#status = status;
    this.#statusText = statusText;
    this.#type = type;
    // As the native class does: the body's type unless the init named one.
    if (headers && type !== null && !headers.has('content-type')) headers.append('content-type', type);
    this.#headers = headers;
    // As undici marks its own: see ./lazy-request.ts.
    markAsUncloneable(this);
  }

  get status(): number {
    return this.#status;
  }

  get statusText(): string {
    return this.#statusText;
  }

  get ok(): boolean {
    return this.#status >= 200 && this.#status < 300;
  }

  get type(): Response['type'] {
    return 'default';
  }

  get url(): string {
    return '';
  }

  get redirected(): boolean {
    return false;
  }

  get headers(): Headers {
    return (this.#headers ??= new Headers(this.#type === null ? undefined : [['content-type', this.#type]]));
  }

  get bodyUsed(): boolean {
    return this.#real ? this.#real.bodyUsed : this.#used;
  }

  /** True for a stand-in, whatever its prototype says. */
  static is(value: unknown): value is LightResponse {
    return typeof value === 'object' && value !== null && #status in value;
  }

  /**
   * The body as built and the wire's header list if nobody built a Headers (nothing in it to
   * check or drop), taken once: the wire transfers the bytes, so the body counts as read from
   * then on. Undefined once the body was taken or became a stream.
   */
  static take(response: LightResponse): TakenBody | undefined {
    if (response.#real || response.#used) return undefined;
    const body = response.#body;
    // A null body is never "used", as a native one.
    response.#used = body !== null;
    response.#body = null;
    const type = response.#type;
    return { body, headers: response.#headers ? undefined : type === null ? [] : ['content-type', type] };
  }

  static real(response: LightResponse): Response {
    if (response.#real) return response.#real;
    const used = response.#used;
    const headers = response.headers;
    const real = new NativeResponse(used ? new Uint8Array(0) : asBytes(response.#body), { status: response.#status, statusText: response.#statusText, headers });
    // A taken body stays read there: text(), clone() refuse it as they would a native one.
    if (used) real.body!.getReader().read().catch(() => {});
    mirrorHeaders(headers, real.headers);
    response.#body = null;
    return (response.#real = real);
  }
}

delegateRest(LightResponse.prototype, NativeResponse.prototype, (self) => LightResponse.real(self as LightResponse));
Object.setPrototypeOf(LightResponse.prototype, NativeResponse.prototype);

/** The bytes of `body` when the native class would copy them as they are; undefined for any other body. */
function sourceOf(body: unknown): string | Uint8Array | null | undefined {
  // A resizable buffer (ES2024, not in our lib) is one the native class refuses; a detached
  // one (ES2024 too) it reads as empty, where copying it here would throw.
  const copyable = (buffer: ArrayBuffer) => !(buffer as { resizable?: boolean }).resizable && !(buffer as { detached?: boolean }).detached;
  if (body === undefined || body === null) return null;
  if (typeof body === 'string') return body;
  // Copied, as the native class copies: the hook may reuse its buffer after returning. (Not
  // with slice(): a Buffer's slice() is a view.)
  if (body instanceof Uint8Array && body.buffer instanceof ArrayBuffer && copyable(body.buffer)) return new Uint8Array(body);
  if (body instanceof ArrayBuffer && copyable(body)) return new Uint8Array(body.slice(0));
  return undefined;
}

/** A stand-in for `new Response(body, init)`, or undefined where only the native class gives the right answer (or error). */
function light(body: unknown, init: unknown, type: string | null): LightResponse | undefined {
  const source = sourceOf(body);
  if (source === undefined || (init !== undefined && (typeof init !== 'object' || init === null))) return undefined;
  const { status = 200, statusText = '', headers } = (init ?? {}) as ResponseInit;
  if (!Number.isInteger(status) || status < 200 || status > 599 || (source !== null && NULL_BODY_STATUS.has(status))) return undefined;
  if (typeof statusText !== 'string' || !REASON_PHRASE.test(statusText)) return undefined;
  // Built now, so a header the native class would refuse throws in the hook, as it would there.
  return new LightResponse(source, status, statusText, headers === undefined ? undefined : new Headers(headers), source === null ? null : type);
}

function json(data: unknown, init?: ResponseInit): Response {
  const text = JSON.stringify(data);
  const made = text === undefined ? undefined : light(text, init, JSON_TYPE);
  return made ? (made as unknown as Response) : NativeResponse.json(data, init);
}

/**
 * The global Response inside a worker: `new Response(…)` may give a stand-in, and
 * `Response.json()` too. `instanceof Response` holds for both kinds (the stand-in's prototype
 * chains to the native one), and a subclass is always native.
 */
export const WorkerResponse: typeof Response = new Proxy(NativeResponse, {
  construct(target, args: unknown[], newTarget) {
    const made = newTarget === WorkerResponse ? light(args[0], args[1], typeof args[0] === 'string' ? TEXT_TYPE : null) : undefined;
    return made ?? Reflect.construct(target, args, newTarget);
  },
  get(target, key, receiver) {
    return key === 'json' ? json : Reflect.get(target, key, receiver);
  },
});
Object.defineProperty(LightResponse.prototype, 'constructor', { value: WorkerResponse, configurable: true, writable: true });

/** Any Response, native or stand-in. */
export function isResponse(value: unknown): value is Response {
  return value instanceof NativeResponse;
}

/**
 * Takes what `response` was built from, when it is a stand-in nothing has read (see
 * LightResponse.take). Undefined for any other Response, whose body must be read through its stream.
 */
export function takeBody(response: Response): TakenBody | undefined {
  return LightResponse.is(response) ? LightResponse.take(response) : undefined;
}

/** Lets Response.prototype's own members take a stand-in (see lendNativeMembers); for a worker's globals only. */
export function lendResponsePrototype(): void {
  lendNativeMembers(NativeResponse.prototype, LightResponse.prototype, LightResponse.is);
}
