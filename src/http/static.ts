import type { IncomingMessage, ServerResponse } from 'node:http';
import send from 'send';

/**
 * Serves a file under `root` for GET/HEAD, without a context and without a cookie. Resolves
 * false when there is no such file, so the request goes on to onConnection. `send` handles
 * traversal, dotfiles, ranges and conditional requests.
 */
export function serveStatic(req: IncomingMessage, res: ServerResponse, root: string): Promise<boolean> {
  if (req.method !== 'GET' && req.method !== 'HEAD') return Promise.resolve(false);
  const path = (req.url ?? '/').split('?')[0]!;
  if (path === '/' || path.endsWith('/')) return Promise.resolve(false);
  return new Promise((resolve) => {
    const stream = send(req, path, { root, index: false, dotfiles: 'ignore' });
    stream.on('error', () => resolve(false));
    stream.on('directory', () => resolve(false));
    stream.on('headers', () => resolve(true));
    stream.pipe(res);
  });
}
