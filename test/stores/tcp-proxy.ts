/**
 * A TCP proxy in front of a real server, for fault tests: it can stall (bytes are held in both
 * directions, as on a network that stops delivering: nothing is lost, it arrives late) and cut
 * (every connection reset, new ones refused until it is restored). Real sockets end to end.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';

export class TcpProxy {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  /** Bytes held while stalled, in arrival order, with where they go. */
  #held: Array<[Socket, Buffer]> = [];
  #stalled = false;
  #cut = false;
  port = 0;

  private constructor(target: { host: string; port: number }) {
    this.#server = createServer((client) => {
      if (this.#cut) return void client.resetAndDestroy();
      const upstream = createConnection(target);
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
        from.on('data', (chunk: Buffer) => (this.#stalled ? this.#held.push([to, chunk]) : to.write(chunk)));
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
