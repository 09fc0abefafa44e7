/**
 * What the threads share without a message: one SharedArrayBuffer, made by the main thread and
 * handed to every edge thread when it connects.
 *
 * - Each slot's session counters and the sessions it holds now (Float64, one writer: the slot's
 *   thread). The main thread sums them for `sessions.stats`, the admin view and the metrics,
 *   so a scrape or a test reads every thread's figures without asking any thread. A slot's
 *   counters survive its thread: a replacement goes on counting where it stopped.
 * - The global cap (Int32, Atomics): live contexts over every thread, reservations included,
 *   and each slot's own share, which the main thread takes back out when a thread dies; and
 *   the reservations under way, over every thread and each slot's.
 * - Retired slots (Int32, Atomics): a slot whose thread died after the crash-loop breaker
 *   tripped gets no replacement; its sessions are homed on the next slot instead (Homes).
 */
import { newCounters, type SessionCounters, type SessionStats } from '../sessions/counters.ts';
import { slotOf } from './ids.ts';

const COUNTER_KEYS = Object.keys(newCounters()).filter((key) => key !== 'suspended') as Array<Exclude<keyof SessionCounters, 'suspended'>>;
const REASON_KEYS = Object.keys(newCounters().suspended) as Array<keyof SessionCounters['suspended']>;
const HELD_KEYS = ['live', 'suspending', 'suspendedKnown', 'inFlight', 'unproven'] as const;
/** Per-edge figures that are not session counters. */
const EDGE_KEYS = ['hopsOut', 'hopsIn'] as const;
export type HeldKey = (typeof HELD_KEYS)[number];
export type EdgeKey = (typeof EDGE_KEYS)[number];

/**
 * Float64 cells per slot, rounded up to whole 64-byte cache lines: two threads writing their
 * own figures on every request must not share a line (false sharing).
 */
const PER_SLOT = Math.ceil((COUNTER_KEYS.length + REASON_KEYS.length + HELD_KEYS.length + EDGE_KEYS.length) / 8) * 8;
const HELD_AT = COUNTER_KEYS.length + REASON_KEYS.length;
const EDGE_AT = HELD_AT + HELD_KEYS.length;

/** The buffer and its views; structured-cloned to each thread (the memory stays shared). */
export interface SharedState {
  buffer: SharedArrayBuffer;
  /** Edge threads; slot `slots` holds what the main thread counts (threads lost). */
  slots: number;
}

export function newSharedState(slots: number): SharedState {
  const bytes = (slots + 1) * PER_SLOT * 8 + CAP_CELLS(slots) * 4 + slots * 4;
  return { buffer: new SharedArrayBuffer(bytes), slots };
}

function figures(state: SharedState): Float64Array {
  return new Float64Array(state.buffer, 0, (state.slots + 1) * PER_SLOT);
}

/**
 * The cap's cells: each slot's share of the total (its live contexts and its reservations),
 * the total, then each slot's reservations and all of them.
 */
const CAP_CELLS = (slots: number) => 2 * (slots + 1);

function capacity(state: SharedState): Int32Array {
  return new Int32Array(state.buffer, (state.slots + 1) * PER_SLOT * 8, CAP_CELLS(state.slots));
}

/** Defines `key` on `target` as a read-write view of `array[index]`. */
function bind(target: object, key: string, array: Float64Array, index: number): void {
  Object.defineProperty(target, key, { enumerable: true, get: () => array[index], set: (value: number) => void (array[index] = value) });
}

/**
 * A thread's counters, written straight into its slot (`counters.created++` works as on any
 * object). Slot `state.slots` is the main thread's own.
 */
export function slotCounters(state: SharedState, slot: number): SessionCounters {
  const array = figures(state);
  const base = slot * PER_SLOT;
  const counters = {} as SessionCounters;
  COUNTER_KEYS.forEach((key, i) => bind(counters, key, array, base + i));
  const suspended = {} as SessionCounters['suspended'];
  REASON_KEYS.forEach((key, i) => bind(suspended, key, array, base + COUNTER_KEYS.length + i));
  Object.defineProperty(counters, 'suspended', { enumerable: true, value: suspended });
  return counters;
}

/** A thread's "held now" figures and edge figures: it writes, the main thread reads. */
export class SlotFigures {
  readonly #array: Float64Array;
  readonly #base: number;
  constructor(state: SharedState, slot: number) {
    this.#array = figures(state);
    this.#base = slot * PER_SLOT;
  }
  setHeld(key: HeldKey, value: number): void {
    this.#array[this.#base + HELD_AT + HELD_KEYS.indexOf(key)] = value;
  }
  add(key: EdgeKey, by = 1): void {
    this.#array[this.#base + EDGE_AT + EDGE_KEYS.indexOf(key)]! += by;
  }
  held(key: HeldKey): number {
    return this.#array[this.#base + HELD_AT + HELD_KEYS.indexOf(key)]!;
  }
  /**
   * Clears the held figures of a slot whose thread died (the main thread, before its
   * replacement starts); returns the contexts it held (live and suspending).
   */
  clearHeld(): number {
    const lost = this.held('live') + this.held('suspending');
    for (let i = 0; i < HELD_KEYS.length; i++) this.#array[this.#base + HELD_AT + i] = 0;
    return lost;
  }
}

/** The live contexts of every thread against `sessions.maxContexts` (Atomics: every thread writes). */
export class SharedCap {
  readonly #cells: Int32Array;
  readonly #slot: number;
  readonly #total: number;
  readonly #slots: number;
  constructor(state: SharedState, slot: number) {
    this.#cells = capacity(state);
    this.#slot = slot;
    this.#total = state.slots;
    this.#slots = state.slots;
  }
  /** Live contexts over every thread, reservations included. */
  get total(): number {
    return Atomics.load(this.#cells, this.#total);
  }
  /** Reservations under way over every thread (creations and resumes making room). */
  get reserving(): number {
    return Atomics.load(this.#cells, 2 * this.#slots + 1);
  }
  /** This slot's live contexts changed by `delta` (the directory says so). */
  adjust(delta: number): void {
    Atomics.add(this.#cells, this.#slot, delta);
    Atomics.add(this.#cells, this.#total, delta);
  }
  /**
   * Takes a place for a context about to be added: the new total, reservations included. The
   * place counts in this slot's share too, so that a thread that dies holding one (a hook
   * exited it while a creation awaited the other homes) gives it back with its contexts:
   * before, such a place stayed taken for good, and once as many leaked as the cap allows,
   * every new client got 503.
   */
  reserve(): number {
    Atomics.add(this.#cells, this.#slot, 1);
    Atomics.add(this.#cells, this.#slots + 1 + this.#slot, 1);
    Atomics.add(this.#cells, 2 * this.#slots + 1, 1);
    return Atomics.add(this.#cells, this.#total, 1) + 1;
  }
  /** Gives back a place taken by reserve() (the context was added, counted by adjust, or refused). */
  unreserve(): void {
    Atomics.sub(this.#cells, this.#slot, 1);
    Atomics.sub(this.#cells, this.#slots + 1 + this.#slot, 1);
    Atomics.sub(this.#cells, 2 * this.#slots + 1, 1);
    Atomics.sub(this.#cells, this.#total, 1);
  }
  /** Main thread: the slot's thread died, and its contexts and the places it held with it. */
  clearSlot(slot: number): void {
    const lost = Atomics.exchange(this.#cells, slot, 0);
    Atomics.sub(this.#cells, this.#total, lost);
    const reserved = Atomics.exchange(this.#cells, this.#slots + 1 + slot, 0);
    Atomics.sub(this.#cells, 2 * this.#slots + 1, reserved);
  }
}

/**
 * The main thread's `sessions.stats`: every slot's figures summed, read when asked, and `hops`,
 * the requests an edge thread passed to their session's home thread.
 */
export function summedStats(state: SharedState): SessionStats & { readonly hops: number } {
  const array = figures(state);
  const sum = (offset: number) => {
    let total = 0;
    for (let slot = 0; slot <= state.slots; slot++) total += array[slot * PER_SLOT + offset]!;
    return total;
  };
  const view: Record<string, unknown> = {};
  COUNTER_KEYS.forEach((key, i) => Object.defineProperty(view, key, { enumerable: true, get: () => sum(i) }));
  const suspended: Record<string, unknown> = {};
  REASON_KEYS.forEach((key, i) => Object.defineProperty(suspended, key, { enumerable: true, get: () => sum(COUNTER_KEYS.length + i) }));
  view.suspended = Object.freeze(suspended);
  HELD_KEYS.forEach((key, i) => Object.defineProperty(view, key, { enumerable: true, get: () => sum(HELD_AT + i) }));
  Object.defineProperty(view, 'hops', { enumerable: true, get: () => summedEdge(state, 'hopsOut') });
  return Object.freeze(view) as unknown as SessionStats & { readonly hops: number };
}

/** One edge figure summed over every slot (hops made and taken). */
export function summedEdge(state: SharedState, key: EdgeKey): number {
  const array = figures(state);
  let total = 0;
  for (let slot = 0; slot < state.slots; slot++) total += array[slot * PER_SLOT + EDGE_AT + EDGE_KEYS.indexOf(key)]!;
  return total;
}

/** One slot's held figure (the admin view's per-thread load). */
export function slotHeld(state: SharedState, slot: number, key: HeldKey): number {
  return figures(state)[slot * PER_SLOT + HELD_AT + HELD_KEYS.indexOf(key)]!;
}

/**
 * Where a session lives: the slot its ID names, modulo the threads; when that slot is retired
 * (its thread died and none will replace it), the next slot that is not. Every thread and the
 * main thread read the same cells, so they agree.
 */
export class Homes {
  readonly #retired: Int32Array;
  readonly #slots: number;
  constructor(state: SharedState) {
    this.#slots = state.slots;
    this.#retired = new Int32Array(state.buffer, (state.slots + 1) * PER_SLOT * 8 + CAP_CELLS(state.slots) * 4, state.slots);
  }
  of(id: string): number {
    return this.ofSlot(slotOf(id));
  }
  /** The home of whatever names slot `named` (taken modulo the threads), by the same rule. */
  ofSlot(slotNamed: number): number {
    const named = slotNamed % this.#slots;
    if (Atomics.load(this.#retired, named) === 0) return named;
    for (let step = 1; step < this.#slots; step++) {
      const next = (named + step) % this.#slots;
      if (Atomics.load(this.#retired, next) === 0) return next;
    }
    return named;
  }
  isRetired(slot: number): boolean {
    return Atomics.load(this.#retired, slot) === 1;
  }
  /** Main thread: `slot` has no thread and will get none. */
  retire(slot: number): void {
    Atomics.store(this.#retired, slot, 1);
  }
}
