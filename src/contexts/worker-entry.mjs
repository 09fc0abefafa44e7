// Piscina's threads do not inherit tsx from the main thread on Node 20 (importing a .ts file
// fails with ERR_UNKNOWN_FILE_EXTENSION), so each worker registers tsx itself before loading
// the TypeScript worker module and, through it, the hooks (TypeScript or JavaScript).
import { register } from 'tsx/esm/api';

register();
const worker = await import('./worker.ts');
export default worker.default;
