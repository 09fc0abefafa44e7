/**
 * Runs the jobs of one context one at a time, in arrival order: that is what makes
 * `ctx.vars.n++` atomic per client even when a hook awaits between read and write.
 */
export class SerialQueue {
  /** The last job's settlement, or null when nothing is queued (an idle queue holds no promise). */
  #tail: Promise<unknown> | null = null;

  run<T>(job: () => Promise<T>): Promise<T> {
    const result = this.#tail ? this.#tail.then(job) : job();
    const settled: Promise<unknown> = result.then(
      () => this.#settle(settled),
      () => this.#settle(settled),
    );
    this.#tail = settled;
    return result;
  }

  #settle(settled: Promise<unknown>): void {
    if (this.#tail === settled) this.#tail = null;
  }
}
