/**
 * This node's lease as every thread sees it, in shared memory. The main thread's lease keeper
 * (./lease.ts) writes it; every edge thread reads it before it serves a session and again
 * before it answers (../edge/handler.ts), and claims under the incarnation it names:
 * - until (Float64): the time (in ms of the system's monotonic clock, process.hrtime, which
 *   every thread of the process reads alike) after which the store may have given this node's
 *   sessions away;
 * - the incarnation's name (`<nodeId>#<incarnation>`) and its generation, which rises with
 *   every new incarnation: a thread started or replaced at any time reads the current one, and
 *   none can claim under a lost incarnation once the next is published.
 */
const OWNER_BYTES = 512;
const UNTIL = 0;
const GENERATION = 2; // Int32 index (byte 8)
const LENGTH = 3; // Int32 index (byte 12)
const TEXT_AT = 16;

export class LeaseView {
  readonly buffer: SharedArrayBuffer;
  readonly #until: Float64Array;
  readonly #ints: Int32Array;
  readonly #text: Uint8Array;
  #cached = { generation: -1, owner: '' };

  constructor(buffer = new SharedArrayBuffer(TEXT_AT + OWNER_BYTES)) {
    this.buffer = buffer;
    this.#until = new Float64Array(buffer, 0, 1);
    this.#ints = new Int32Array(buffer, 0, 4);
    this.#text = new Uint8Array(buffer, TEXT_AT, OWNER_BYTES);
  }

  /**
   * Now, on the scale the lease is kept on: CLOCK_MONOTONIC, one clock for every thread. Not
   * performance.timeOrigin + performance.now(): each thread's timeOrigin is read from the wall
   * clock when it starts, so a thread started after a step of the wall clock would be off by
   * the step (and could serve past its lease).
   */
  static now(): number {
    const [seconds, nanos] = process.hrtime();
    return seconds * 1_000 + nanos / 1e6;
  }

  serving(): boolean {
    return LeaseView.now() < this.#until[UNTIL]!;
  }

  get until(): number {
    return this.#until[UNTIL]!;
  }

  get generation(): number {
    return Atomics.load(this.#ints, GENERATION);
  }

  /** The incarnation this node serves as now. */
  owner(): string {
    for (;;) {
      const generation = this.generation;
      if (generation === this.#cached.generation) return this.#cached.owner;
      const length = Atomics.load(this.#ints, LENGTH);
      const owner = Buffer.from(this.#text.subarray(0, length)).toString('utf8');
      // Written meanwhile (a seqlock): read again.
      if (this.generation !== generation) continue;
      this.#cached = { generation, owner };
      return owner;
    }
  }

  /** Main thread: this node may serve until `until` (LeaseView.now() scale); 0 stops it at once. */
  serveUntil(until: number): void {
    this.#until[UNTIL] = until;
  }

  /** Main thread: a new incarnation's lease is held; threads claim under it from now on. */
  publish(owner: string): void {
    const bytes = Buffer.from(owner, 'utf8');
    if (bytes.length > OWNER_BYTES) throw new RangeError(`an owner name of ${bytes.length} bytes`);
    this.#text.fill(0);
    this.#text.set(bytes);
    Atomics.store(this.#ints, LENGTH, bytes.length);
    Atomics.add(this.#ints, GENERATION, 1);
  }
}
