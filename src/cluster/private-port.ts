/**
 * The private listener's port, held by the main thread from the moment it is chosen until the
 * edge threads listen on it. Every edge thread listens there with SO_REUSEPORT, and the kernel
 * lets any socket of the same user with that option join: a port picked by binding port 0 and
 * closed again could be picked by another process in between (two nodes starting at once did,
 * and each got half of the other's forwards, refused as signed for another node). A port held
 * with SO_REUSEPORT is in use, so no one's port 0 lands on it; the threads join the hold.
 *
 * A configured cluster.port is first bound without SO_REUSEPORT for a moment, as the public
 * port is (../server.ts): a second Resident of the same user on it must fail to start, not
 * share this node's forwards.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ResidentError } from '../errors.ts';

export interface PortHold {
  readonly port: number;
  /** Stops holding (the threads listen now, or the start failed); idempotent. */
  release(): Promise<void>;
}

/**
 * Holds `port` (0: one the kernel picks) on `host`. Where the platform has no SO_REUSEPORT
 * (one edge thread), the port is only checked free: a hold would keep the thread out.
 */
export async function holdPrivatePort(port: number, host: string, reusePort: boolean): Promise<PortHold> {
  if (port !== 0 || !reusePort) {
    const probe = await bind(port, host, false);
    port = (probe.address() as AddressInfo).port;
    await close(probe);
    if (!reusePort) return { port, release: async () => {} };
  }
  const hold = await bind(port, host, true);
  let released: Promise<void> | undefined;
  return { port: (hold.address() as AddressInfo).port, release: () => (released ??= close(hold)) };
}

async function bind(port: number, host: string, reusePort: boolean): Promise<Server> {
  // A connection the kernel gives the hold rather than a thread (the threads join while the
  // lease is already published) is told to come back, as a node that is not up yet.
  const server = createServer((_req, res) => {
    const busy = new ResidentError('RESIDENT_ERR_NO_LEASE');
    res.writeHead(busy.status, { 'content-type': 'text/plain; charset=utf-8', 'retry-after': '1', connection: 'close' });
    res.end(busy.publicMessage);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) => reject(new ResidentError('RESIDENT_ERR_LISTEN', `Cannot listen on cluster.port ${port} at ${host}: ${error.message}`, { cause: error })));
    server.listen({ port, host, reusePort }, resolve);
  });
  return server;
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
