/** userId → session IDs, for the in-process stores: one user's sessions without a scan. */
export class UserIndex {
  readonly #ids = new Map<string, Set<string>>();

  add(userId: string | null, id: string): void {
    if (userId === null) return;
    let ids = this.#ids.get(userId);
    if (!ids) this.#ids.set(userId, (ids = new Set()));
    ids.add(id);
  }

  remove(userId: string | null, id: string): void {
    if (userId === null) return;
    const ids = this.#ids.get(userId);
    if (!ids) return;
    ids.delete(id);
    if (ids.size === 0) this.#ids.delete(userId);
  }

  of(userId: string): Iterable<string> {
    return this.#ids.get(userId) ?? [];
  }

  clear(): void {
    this.#ids.clear();
  }
}
