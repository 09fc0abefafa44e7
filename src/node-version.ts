/**
 * The oldest Node.js Resident runs on. 22.12 is the first release line with everything it
 * relies on (`reusePort` on listeners, for instance, landed in 22.12 and 23.1); Resident is
 * tested on Node 24 LTS, which `npm install` brings on Linux x64 (README, Quick start).
 */
import { ResidentError } from './errors.ts';

const MINIMUM = { major: 22, minor: 12 };
export const MINIMUM_NODE = `${MINIMUM.major}.${MINIMUM.minor}`;

/** The refusal for a Node.js older than MINIMUM_NODE, or undefined when `version` will do. */
export function unsupportedNode(version: string = process.versions.node): ResidentError | undefined {
  const [major = NaN, minor = NaN] = version.split('.').map(Number);
  if (major > MINIMUM.major || (major === MINIMUM.major && minor >= MINIMUM.minor)) return undefined;
  return new ResidentError(
    'RESIDENT_ERR_NODE_VERSION',
    `Resident needs Node.js ${MINIMUM_NODE} or newer (24 LTS recommended), but runs on Node.js ${version} (${process.execPath}). ` +
      'On Linux x64, `npm install` brings Node 24 and `npm start` uses it; elsewhere, install Node.js 24.',
  );
}

/** Throws the refusal when this process's Node.js is older than MINIMUM_NODE. */
export function assertSupportedNode(): void {
  const refusal = unsupportedNode();
  if (refusal) throw refusal;
}
