/**
 * The hook's Request, made lazily (issue 10). `new Request()` builds a Headers, an AbortSignal
 * and a body stream up front: on Node 24 about 3 µs for a GET and 10 µs with a body, on every
 * request, whether the hook looks at them or not. This stand-in answers `method`, `url`,
 * `headers` and the body reads (`text()`, `json()`, `arrayBuffer()`, `bytes()`) from the wire
 * request itself, and builds the real Request (as honojs/node-server's src/request.ts does)
 * only when anything else is touched: `signal`, `body`, `clone()`, `formData()`, `blob()`, or
 * when it is handed to `new Request()` or `fetch()` (see ./fetch-globals.ts).
 */
import { markAsUncloneable } from 'node:worker_threads';
import { asBytes, delegateRest, lendNativeMembers, mirrorHeaders } from './deferred.ts';
import type { WireRequest } from './protocol.ts';

const NativeRequest = globalThis.Request;

/** What node:http hands us in upper case and `new Request()` keeps as it is. Any other method takes the native path. */
const PLAIN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']);

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function headerPairs(raw: string): Array<[string, string]> {
  const parts = raw === '' ? [] : raw.split('\n');
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i < parts.length; i += 2) pairs.push([parts[i]!, parts[i + 1]!]);
  return pairs;
}

function bodyUnusable(): TypeError {
  // undici's words, so a hook sees the same error either way.
  return new TypeError('Body is unusable: Body has already been read');
}

class LazyRequest {
  readonly #method: string;
  readonly #url: string;
  readonly #rawHeaders: string;
  #headers: Headers | undefined;
  /** The wire body, until it is read or handed to the real Request. */
  #body: string | ArrayBuffer | null;
  #used = false;
  #real: Request | undefined;
  /** Made with the real Request (its `signal` is this one's), so a 504 can abort what the hook started. */
  #controller: AbortController | undefined;

  constructor(method: string, url: string, rawHeaders: string, body: string | ArrayBuffer | null) {
    this.#method = method;
    this.#url = url;
    this.#rawHeaders = rawHeaders;
    this.#body = body;
    // As undici marks its own (about 30 ns): structuredClone() and postMessage() refuse it, where a
    // plain object's copy would be {} (its state is private).
    markAsUncloneable(this);
  }

  get method(): string {
    return this.#method;
  }

  get url(): string {
    return this.#url;
  }

  get headers(): Headers {
    if (this.#headers) return this.#headers;
    if (this.#real) return this.#real.headers;
    return (this.#headers = new Headers(headerPairs(this.#rawHeaders)));
  }

  get bodyUsed(): boolean {
    return this.#real ? this.#real.bodyUsed : this.#used;
  }

  async text(): Promise<string> {
    if (this.#real) return this.#real.text();
    const body = this.#take();
    if (body === null) return '';
    // A string came from UTF-8 bytes as they were, byte-order mark included; decoding drops it.
    if (typeof body === 'string') return body.charCodeAt(0) === 0xfeff ? body.slice(1) : body;
    return decoder.decode(body);
  }

  async json(): Promise<unknown> {
    if (this.#real) return this.#real.json();
    return JSON.parse(await this.text());
  }

  async arrayBuffer(): Promise<ArrayBuffer> {
    if (this.#real) return this.#real.arrayBuffer();
    const body = this.#take();
    if (body === null) return new ArrayBuffer(0);
    // The wire buffer is this thread's own copy and is handed out once: no copy needed.
    return typeof body === 'string' ? (encoder.encode(body).buffer as ArrayBuffer) : body;
  }

  async bytes(): Promise<Uint8Array> {
    if (this.#real) return this.#real.bytes();
    return new Uint8Array(await this.arrayBuffer());
  }

  /** The body, once: null (never "used", as a native null body) or a TypeError the second time. */
  #take(): string | ArrayBuffer | null {
    if (this.#used) throw bodyUnusable();
    const body = this.#body;
    if (body !== null) this.#used = true;
    this.#body = null;
    return body;
  }

  /** Aborts the signal the hook may hold, if it ever asked for one (nothing to do otherwise). */
  static abort(request: LazyRequest, reason: unknown): void {
    request.#controller?.abort(reason);
  }

  /** True for a stand-in, whatever its prototype says. */
  static is(value: unknown): value is LazyRequest {
    return typeof value === 'object' && value !== null && #method in value;
  }

  /** The real Request, built once, with what the stand-in has become (changed headers, a read body). */
  static real(request: LazyRequest): Request {
    if (request.#real) return request.#real;
    const used = request.#used;
    request.#controller = new AbortController();
    const real = new NativeRequest(request.#url, {
      method: request.#method,
      headers: request.#headers ?? headerPairs(request.#rawHeaders),
      body: used ? new Uint8Array(0) : asBytes(request.#body),
      signal: request.#controller.signal,
    });
    // A body read here stays read there: clone(), new Request(request) and fetch(request) refuse it.
    if (used) real.body!.getReader().read().catch(() => {});
    if (request.#headers) mirrorHeaders(request.#headers, real.headers);
    request.#body = null;
    return (request.#real = real);
  }
}

delegateRest(LazyRequest.prototype, NativeRequest.prototype, (self) => LazyRequest.real(self as LazyRequest));
Object.setPrototypeOf(LazyRequest.prototype, NativeRequest.prototype);

/**
 * The hook's Request for `wire`. Throws a TypeError where `new Request()` would (an unparsable
 * URL, TRACE, a GET with a body): the worker answers 400 without calling the hook.
 */
export function toRequest(wire: WireRequest): Request {
  const { method, body } = wire;
  if (!PLAIN_METHODS.has(method) || (body !== null && (method === 'GET' || method === 'HEAD'))) {
    const controller = new AbortController();
    const request = new NativeRequest(wire.url, { method, headers: headerPairs(wire.headers), body, signal: controller.signal });
    nativeControllers.set(request, controller);
    return request;
  }
  // Parsed now, as `new Request()` would: `request.url` is the serialized URL (host in lower
  // case, default port dropped), and a URL that cannot be parsed is the client's 400.
  return new LazyRequest(method, new URL(wire.url).href, wire.headers, body) as unknown as Request;
}

/** The controllers of the requests that took the native path (rare methods), for abortRequest. */
const nativeControllers = new WeakMap<Request, AbortController>();

/**
 * The request was answered without its hook (a 504): `request.signal` aborts with `reason`,
 * so a fetch() or a stream the hook passed it to stops instead of running on for nobody.
 */
export function abortRequest(request: Request, reason: unknown): void {
  if (LazyRequest.is(request)) LazyRequest.abort(request, reason);
  else nativeControllers.get(request)?.abort(reason);
}

/** `input` as `new Request()` and `fetch()` accept it: a stand-in becomes its real Request. */
export function realRequest<T>(input: T): T | Request {
  return LazyRequest.is(input) ? LazyRequest.real(input) : input;
}

/** Lets Request.prototype's own members take a stand-in (see lendNativeMembers); for a worker's globals only. */
export function lendRequestPrototype(): void {
  lendNativeMembers(NativeRequest.prototype, LazyRequest.prototype, LazyRequest.is);
}

/** The global Request inside a worker: the native class, taking a stand-in for what it is. */
export const WorkerRequest: typeof Request = new Proxy(NativeRequest, {
  construct(target, args: unknown[], newTarget) {
    if (LazyRequest.is(args[0])) args[0] = LazyRequest.real(args[0]);
    return Reflect.construct(target, args, newTarget);
  },
});
Object.defineProperty(LazyRequest.prototype, 'constructor', { value: WorkerRequest, configurable: true, writable: true });
