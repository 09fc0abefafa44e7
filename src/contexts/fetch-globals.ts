/**
 * Installs, in a worker thread, the Fetch globals a hook sees: Request, Response and fetch()
 * that know the worker's stand-ins (./lazy-request.ts, ./light-response.ts). Imported by
 * ./worker.ts before anything else, so every hook module finds them in place. The main
 * thread never loads this file: its globals stay Node's own.
 */
import { realRequest, WorkerRequest } from './lazy-request.ts';
import { WorkerResponse } from './light-response.ts';

const nativeFetch = globalThis.fetch;

globalThis.Request = WorkerRequest;
globalThis.Response = WorkerResponse;
// fetch() reads a Request's private state: a stand-in is handed over as its real Request.
globalThis.fetch = function fetch(input: Parameters<typeof nativeFetch>[0], init?: RequestInit) {
  return nativeFetch(realRequest(input), init);
};
