/**
 * Imported first by src/main.ts. ES modules run in the order they are imported, so on an older
 * Node.js the command line stops here, with a sentence and exit code 2 (like a configuration
 * error), before any other module of Resident runs and fails in a less readable way.
 */
import { unsupportedNode } from './node-version.ts';

const refusal = unsupportedNode();
if (refusal) {
  console.error(`resident: ${refusal.message}`);
  process.exit(2);
}
