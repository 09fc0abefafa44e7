/**
 * The `resident` command of the package (bin/resident.js):
 *   resident start [--config PATH]   serve (what `npm start` does in this repository)
 *   resident dev [--config PATH]     serve, restarted when a hook module changes
 *   resident init [DIR]              write a config.json, typed hook modules and a tsconfig.json
 * Exit codes as `npm start`'s (src/main.ts): 0 a clean stop, 1 a suspend lost at shutdown,
 * 2 a usage or configuration error (the message names what to fix).
 */
// First, so an older Node.js is refused before any other module runs.
import './refuse-old-node.ts';
import { readFileSync } from 'node:fs';

const USAGE = `usage: resident start [--config PATH]
       resident dev [--config PATH]
       resident init [DIR]
       resident --version`;

const [command, ...rest] = process.argv.slice(2);
// start and dev are the repository's own entry points, run with the subcommand taken out of
// argv: they read their options from it as `npm start -- --config PATH` gives them.
const runWith = (args: string[]) => process.argv.splice(2, process.argv.length - 2, ...args);
switch (command) {
  case 'start':
    runWith(rest);
    await import('./main.ts');
    break;
  case 'dev':
    runWith(rest);
    await import('./dev.ts');
    break;
  case 'init': {
    const { init } = await import('./cli/init.ts');
    process.exitCode = init(rest);
    break;
  }
  case '--version':
  case '-v': {
    const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    console.log(manifest.version);
    break;
  }
  case '--help':
  case '-h':
  case 'help':
    console.log(USAGE);
    break;
  default:
    console.error(command === undefined ? USAGE : `resident: unknown command "${command}"\n${USAGE}`);
    process.exitCode = 2;
}
