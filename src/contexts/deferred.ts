/**
 * What ./lazy-request.ts and ./light-response.ts share: an object that stands in for a native
 * Request or Response and builds the real one only when something it does not answer itself
 * is touched (issue 10: building them, headers, signal and body stream, was most of a
 * trivial hook's cost in a worker).
 */

/**
 * Gives `proto` every member of `nativeProto` it does not define itself, each answered by the
 * real object `real(this)` builds: a getter reads the real one's, a method calls the real one's.
 * New members a later Node adds are covered without a change here. Every member, its own ones
 * too, is enumerable, named and sized as the native one: `for (const key in request)` and
 * `request.clone.name` say what they say of a native object.
 */
export function delegateRest(proto: object, nativeProto: object, real: (self: object) => object): void {
  for (const key of Reflect.ownKeys(nativeProto)) {
    if (key === 'constructor') continue;
    const native = Object.getOwnPropertyDescriptor(nativeProto, key)!;
    if (Object.hasOwn(proto, key)) {
      Object.defineProperty(proto, key, { enumerable: native.enumerable });
      continue;
    }
    if (native.get) {
      const get = function (this: object) {
        return Reflect.get(real(this), key);
      };
      Object.defineProperty(proto, key, { configurable: true, enumerable: native.enumerable, get: like(get, native.get) });
    } else if (typeof native.value === 'function') {
      const value = function (this: object, ...args: unknown[]) {
        const target = real(this) as Record<PropertyKey, (...args: unknown[]) => unknown>;
        return target[key]!(...args);
      };
      Object.defineProperty(proto, key, { configurable: true, writable: true, enumerable: native.enumerable, value: like(value, native.value as Function) });
    }
    // Plain values (Symbol.toStringTag) stay inherited from the native prototype.
  }
}

/** `fn`, named and sized as `native`. */
function like<T extends Function>(fn: T, native: Function): T {
  Object.defineProperty(fn, 'name', { value: native.name });
  Object.defineProperty(fn, 'length', { value: native.length });
  return fn;
}

/**
 * Makes each member of `nativeProto` that `proto` answers itself answer for a stand-in too, so a
 * member borrowed from the native prototype works on one as on a native object
 * (`Request.prototype.text.call(request)`, a getter taken with getOwnPropertyDescriptor): the
 * native member alone would refuse it, its private state being the stand-in's own. Changes the
 * native prototype: only for a worker's globals (./fetch-globals.ts).
 */
export function lendNativeMembers(nativeProto: object, proto: object, isStandIn: (value: unknown) => boolean): void {
  for (const key of Reflect.ownKeys(nativeProto)) {
    const own = Object.getOwnPropertyDescriptor(proto, key);
    const native = Object.getOwnPropertyDescriptor(nativeProto, key)!;
    if (key === 'constructor' || !own) continue;
    if (native.get && own.get) {
      const [ours, theirs] = [own.get, native.get];
      Object.defineProperty(nativeProto, key, {
        ...native,
        get: like(function (this: unknown) {
          return isStandIn(this) ? ours.call(this) : theirs.call(this);
        }, theirs),
      });
    } else if (typeof native.value === 'function' && typeof own.value === 'function') {
      const [ours, theirs] = [own.value as (...args: unknown[]) => unknown, native.value as (...args: unknown[]) => unknown];
      const lent = function (this: unknown, ...args: unknown[]) {
        return isStandIn(this) ? ours.apply(this, args) : theirs.apply(this, args);
      };
      Object.defineProperty(nativeProto, key, { ...native, value: like(lent, theirs) });
    }
  }
}

/** Each Headers a stand-in handed out, to the real object's copy of it. */
const twins = new WeakMap<Headers, Headers>();
let mirroring = false;

/**
 * Once the real object exists it holds a copy of the headers the stand-in already handed out
 * (`new Request(url, { headers })` copies). A hook may still hold that first Headers and change
 * it: each change is made on both, so `fetch(request)`, `clone()` and the wire all see it.
 * Made on Headers.prototype (once per thread, at the first real object built), not on the
 * instance: `Headers.prototype.set.call(headers, …)` mirrors too, and the instance has no own
 * members a native one lacks.
 */
export function mirrorHeaders(own: Headers, real: Headers): void {
  twins.set(own, real);
  if (mirroring) return;
  mirroring = true;
  for (const name of ['append', 'set', 'delete'] as const) {
    const native = Object.getOwnPropertyDescriptor(Headers.prototype, name)!;
    const method = native.value as (this: Headers, ...args: unknown[]) => void;
    const mirrored = function (this: Headers, ...args: unknown[]) {
      method.apply(this, args);
      // A WeakMap takes any key: a call on something else failed in method() already.
      const twin = twins.get(this);
      if (twin) method.apply(twin, args);
    };
    Object.defineProperty(Headers.prototype, name, { ...native, value: like(mirrored, method) });
  }
}

const encoder = new TextEncoder();

/**
 * A stand-in's body as the native constructor should take it when the real object is built.
 * Never a string: from one, the native classes add `text/plain;charset=UTF-8` where the headers
 * have no Content-Type, bringing back one the hook deleted (the stand-in's headers already say
 * the type its body came with).
 */
export function asBytes<T>(body: string | T): Uint8Array | T {
  return typeof body === 'string' ? encoder.encode(body) : body;
}
