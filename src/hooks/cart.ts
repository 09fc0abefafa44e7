/** The demo's shopping cart: a live object kept in ctx.vars between requests. */
export class Cart {
  readonly #items = new Map<string, number>();

  constructor(saved: Array<[string, number]> = []) {
    for (const [sku, quantity] of saved) if (quantity > 0) this.#items.set(sku, quantity);
  }

  add(sku: string): void {
    this.#items.set(sku, (this.#items.get(sku) ?? 0) + 1);
  }

  clear(): void {
    this.#items.clear();
  }

  get count(): number {
    let total = 0;
    for (const quantity of this.#items.values()) total += quantity;
    return total;
  }

  entries(): Array<[string, number]> {
    return [...this.#items];
  }
}
