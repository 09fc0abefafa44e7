/**
 * Installs, in a worker thread, the Fetch globals a hook sees: Request, Response and fetch()
 * that know the worker's stand-ins (./lazy-request.ts, ./light-response.ts). Imported by
 * ./worker.ts before anything else, so every hook module finds them in place. The main
 * thread never loads this file: its globals stay Node's own.
 */
import { lendRequestPrototype, realRequest, WorkerRequest } from './lazy-request.ts';
import { lendResponsePrototype, WorkerResponse } from './light-response.ts';

const nativeFetch = globalThis.fetch;

// A Proxy is not its target: without this, a native Request or Response made here (clone(),
// fetch()'s, one with a stream body) would answer `.constructor === Request` with false, as
// no object in plain Node does.
for (const global of [WorkerRequest, WorkerResponse]) {
  Object.defineProperty(global.prototype, 'constructor', { value: global, configurable: true, writable: true });
}
lendRequestPrototype();
lendResponsePrototype();
globalThis.Request = WorkerRequest;
globalThis.Response = WorkerResponse;
// fetch() reads a Request's private state: a stand-in is handed over as its real Request.
globalThis.fetch = function fetch(input: Parameters<typeof nativeFetch>[0], init?: RequestInit) {
  return nativeFetch(realRequest(input), init);
};
