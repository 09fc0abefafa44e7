/**
 * How long this node may serve sessions, in shared memory: the main thread's lease keeper
 * (./lease.ts) writes it after every renewal, every edge thread reads it before it serves a
 * session and again before it answers (../edge/handler.ts). One Float64: the time (on the
 * absolute monotonic scale, performance.timeOrigin + performance.now(), the same on every
 * thread) after which the store may have given this node's sessions away.
 */
export class LeaseView {
  readonly buffer: SharedArrayBuffer;
  readonly #until: Float64Array;

  constructor(buffer = new SharedArrayBuffer(8)) {
    this.buffer = buffer;
    this.#until = new Float64Array(buffer);
  }

  /** Now, on the scale the lease is kept on. */
  static now(): number {
    return performance.timeOrigin + performance.now();
  }

  serving(): boolean {
    return LeaseView.now() < this.#until[0]!;
  }

  /** Main thread: this node may serve until `until` (LeaseView.now() scale); 0 stops it at once. */
  serveUntil(until: number): void {
    this.#until[0] = until;
  }

  get until(): number {
    return this.#until[0]!;
  }
}
