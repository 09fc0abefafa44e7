/**
 * The operations routes (health, admin, metrics under the admin path) run on the main thread,
 * where the pool, the store probe and every thread's figures are; an edge thread hands such a
 * request over (src/edge/thread.ts, answerOps) and writes the answer it gets back. The routes
 * write to a response object as they would to node:http's; this one only records.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { OpsAnswer, OpsCall } from '../edge/thread.ts';
import type { OpsRoute } from './respond.ts';

export async function answerRelayed(routes: readonly OpsRoute[], call: OpsCall): Promise<OpsAnswer> {
  const answer: OpsAnswer = { status: 404, headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' }, body: 'Not Found' };
  const route = routes.find((candidate) => candidate.claims(call.target.path));
  if (!route) return answer;
  const req = { method: call.method, headers: call.headers, url: call.target.path + call.target.search } as unknown as IncomingMessage;
  const res = {
    req,
    headersSent: false,
    writeHead(status: number, headers: Record<string, string>) {
      answer.status = status;
      answer.headers = { ...headers };
      this.headersSent = true;
      return this;
    },
    end(body?: string) {
      answer.body = body ?? '';
      return this;
    },
  };
  await route.handle(call.target, req, res as unknown as ServerResponse);
  return answer;
}
