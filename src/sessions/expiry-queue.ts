/**
 * A min-heap of items by a number (a time), for the sweep of suspended sessions: it must meet
 * them in expiry order, whatever order they were suspended or adopted in (a session adopted
 * from the store after a restart, or suspended by the cap, can be older than one suspended
 * before it). Keys are read at push; the caller re-pushes an item whose time moved on.
 */
export class ExpiryQueue<T> {
  #keys: number[] = [];
  #items: T[] = [];

  get size(): number {
    return this.#items.length;
  }

  push(key: number, item: T): void {
    const keys = this.#keys;
    const items = this.#items;
    let at = keys.length;
    keys.push(key);
    items.push(item);
    while (at > 0) {
      const parent = (at - 1) >> 1;
      if (keys[parent]! <= key) break;
      keys[at] = keys[parent]!;
      items[at] = items[parent]!;
      at = parent;
    }
    keys[at] = key;
    items[at] = item;
  }

  /** The smallest key, or Infinity when empty. */
  peekKey(): number {
    return this.#keys.length === 0 ? Infinity : this.#keys[0]!;
  }

  /** Removes and returns the item with the smallest key. */
  pop(): T | undefined {
    const keys = this.#keys;
    const items = this.#items;
    if (items.length === 0) return undefined;
    const top = items[0];
    const lastKey = keys.pop()!;
    const lastItem = items.pop()!;
    const size = items.length;
    if (size > 0) {
      let at = 0;
      for (;;) {
        let child = 2 * at + 1;
        if (child >= size) break;
        if (child + 1 < size && keys[child + 1]! < keys[child]!) child++;
        if (keys[child]! >= lastKey) break;
        keys[at] = keys[child]!;
        items[at] = items[child]!;
        at = child;
      }
      keys[at] = lastKey;
      items[at] = lastItem;
    }
    return top;
  }
}
