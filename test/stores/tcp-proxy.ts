/**
 * A TCP proxy in front of a real server, for fault tests: it can stall (bytes are held in both
 * directions, as on a network that stops delivering: nothing is lost, it arrives late), delay
 * (every byte toward the server arrives a fixed time late: each store operation takes that much
 * longer) and cut (every connection reset, new ones refused until it is restored). Real sockets
 * end to end.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';

export class TcpProxy {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  /** Bytes held while stalled, in arrival order, with where they go. */
  #held: Array<[Socket, Buffer]> = [];
  #stalled = false;
  #cut = false;
  /** Milliseconds each chunk toward the server is held (0: none). */
  #delay = 0;
  port = 0;

  private constructor(target: { host: string; port: number }) {
    this.#server = createServer((client) => {
      if (this.#cut) return void client.resetAndDestroy();
      const upstream = createConnection(target);
      /** Chunks toward the server held by delay(), with when each is due, in arrival order. */
      const late: Array<[number, Buffer]> = [];
      const close = () => {
        for (const socket of [client, upstream]) {
          socket.destroy();
          this.#sockets.delete(socket);
        }
      };
      for (const [from, to] of [
        [client, upstream],
        [upstream, client],
      ] as const) {
        this.#sockets.add(from);
        from.on('data', (chunk: Buffer) => {
          if (this.#stalled) return void this.#held.push([to, chunk]);
          if (to === upstream && (this.#delay > 0 || late.length > 0)) return void this.#later(late, to, chunk);
          to.write(chunk);
        });
        from.on('error', close).on('close', close);
      }
    });
  }

  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const proxy = new TcpProxy(target);
    await new Promise<void>((resolve) => proxy.#server.listen(0, '127.0.0.1', resolve));
    proxy.port = (proxy.#server.address() as { port: number }).port;
    return proxy;
  }

  /** Nothing goes through either way until `flow()`; connections stay open. */
  stall(): void {
    this.#stalled = true;
  }

  /** Delivers what was held, in order, and lets bytes through again. */
  flow(): void {
    this.#stalled = false;
    const held = this.#held;
    this.#held = [];
    for (const [to, chunk] of held) if (!to.destroyed) to.write(chunk);
  }

  /**
   * Every chunk toward the server from now on arrives `ms` late (0: no more delay; chunks
   * already held still arrive when due), so a request/response round trip takes `ms` longer.
   */
  delay(ms: number): void {
    this.#delay = ms;
  }

  /** Holds `chunk` for the delay, behind any chunk held before it, so bytes stay in order. */
  #later(late: Array<[number, Buffer]>, to: Socket, chunk: Buffer): void {
    late.push([performance.now() + this.#delay, chunk]);
    if (late.length > 1) return;
    const pump = () => {
      while (late.length > 0 && late[0]![0] <= performance.now()) {
        const [, next] = late.shift()!;
        if (!to.destroyed) to.write(next);
      }
      if (late.length > 0) setTimeout(pump, late[0]![0] - performance.now());
    };
    setTimeout(pump, this.#delay);
  }

  /** Resets every connection and refuses new ones until `restore()`. */
  cut(): void {
    this.#cut = true;
    this.#held = [];
    for (const socket of this.#sockets) socket.resetAndDestroy();
    this.#sockets.clear();
  }

  restore(): void {
    this.#cut = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise((resolve) => this.#server.close(resolve));
  }
}
