/**
 * The tiny protocol every contender speaks with the bench runner: print `READY <port>` once
 * listening, then answer one-line JSON commands on stdin with one-line JSON on stdout.
 */
import { createInterface } from 'node:readline';

export type Command = { cmd: string; [key: string]: unknown };

export function serveControl(port: number, handlers: Record<string, (command: Command) => unknown>): void {
  process.stdout.write(`READY ${port}\n`);
  const lines = createInterface({ input: process.stdin });
  lines.on('line', async (line) => {
    const command = JSON.parse(line) as Command;
    const handler = handlers[command.cmd];
    try {
      const result = handler ? await handler(command) : { error: `unknown command ${command.cmd}` };
      process.stdout.write(`${JSON.stringify({ ok: true, result })}\n`);
    } catch (error) {
      process.stdout.write(`${JSON.stringify({ ok: false, error: String(error) })}\n`);
    }
  });
  lines.on('close', () => process.exit(0));
}

export function memory() {
  (globalThis as { gc?: () => void }).gc?.();
  const usage = process.memoryUsage();
  return { heapUsed: usage.heapUsed, rss: usage.rss };
}
