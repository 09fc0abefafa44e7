/** The smallest hook: what bench/worker-path.ts measures is the worker's own cost around it. */
export default function onConnection(): Response {
  return new Response('hello');
}
