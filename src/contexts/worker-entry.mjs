// Piscina's threads do not inherit tsx from the main thread, so each worker registers tsx
// itself before loading the worker module and, through it, the hooks (TypeScript or
// JavaScript). The worker module is worker.ts in the repository and worker.js in the package.
import { existsSync } from 'node:fs';
import { register } from 'tsx/esm/api';

register();
const source = new URL('./worker.ts', import.meta.url);
const worker = await import(existsSync(source) ? source.href : new URL('./worker.js', import.meta.url).href);
export default worker.default;
