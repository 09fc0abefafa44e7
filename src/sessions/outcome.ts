/** What the sessions answer the HTTP edge: a reply to write, or an error to render, and the cookie's fate. */
import type { ResidentError } from '../errors.ts';
import type { WireBody } from '../contexts/protocol.ts';

/** What the edge does with our cookie in the response. */
export type CookieAction = { set: string } | { expire: true } | null;

export type Outcome =
  | { kind: 'reply'; status: number; headers: string[]; body: WireBody; cookie: CookieAction }
  | { kind: 'error'; error: ResidentError; cookie: CookieAction }
  /** The session lives on another node of the cluster: the edge forwards the request to `url`. */
  | { kind: 'elsewhere'; owner: string; url: string; cookie: null };

export function errorOutcome(error: ResidentError, cookie: CookieAction = null): Outcome {
  return { kind: 'error', error, cookie };
}

/** The outcome that sends a request to the node holding its session. */
export function elsewhereOutcome(placement: { owner: string; url: string }): Outcome {
  return { kind: 'elsewhere', owner: placement.owner, url: placement.url, cookie: null };
}
