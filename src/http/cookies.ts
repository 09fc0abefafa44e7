/**
 * Our session cookie, in and out. Set-Cookie is written by the `cookie` library, which
 * refuses names and values that could break out of the header (CVE-2024-47764).
 */
import { stringifySetCookie } from 'cookie';
import { isSessionIdShape } from '../contexts/ids.ts';
import { indexOf, slice, trim } from '../primordials.ts';

/**
 * Every well-formed value of the cookie `name` in a Cookie header, in header order. A parser
 * that keeps one value per name would let a tossed duplicate (`sid=forged; sid=real`) shadow
 * the real one (RELIABILITY.md A8), so the caller gets them all and picks the first it knows.
 * Anything that is not an ID's exact shape is dropped here, before any lookup (A6, A7).
 * One linear pass over a header that node:http has already capped at 16 KiB (D4, D9).
 */
export function presentedSessionIds(header: string | undefined, name: string): string[] {
  if (!header) return [];
  const found: string[] = [];
  let start = 0;
  while (start < header.length) {
    let end = header.indexOf(';', start);
    if (end === -1) end = header.length;
    const eq = header.indexOf('=', start);
    if (eq !== -1 && eq < end && header.slice(start, eq).trim() === name) {
      let value = header.slice(eq + 1, end).trim();
      if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
      if (isSessionIdShape(value) && !found.includes(value)) found.push(value);
    }
    start = end + 1;
  }
  return found;
}

export interface CookieSettings {
  name: string;
  /** Max-Age in ms; 0: a browser-session cookie without Max-Age. */
  timeout: number;
  sameSite: 'lax' | 'strict';
}

/**
 * Builds Set-Cookie values for one configuration. The attributes never change, so the
 * library renders them once (with a placeholder ID of the same alphabet) and each response
 * only splices in its ID: IDs are validated to [A-Za-z0-9_-], which needs no encoding.
 */
export function sessionCookieWriter(settings: CookieSettings): (id: string, secure: boolean) => string {
  const render = (secure: boolean) =>
    stringifySetCookie(settings.name, 'ID', {
      path: '/',
      httpOnly: true,
      sameSite: settings.sameSite,
      secure,
      maxAge: settings.timeout > 0 ? Math.floor(settings.timeout / 1000) : undefined,
    });
  const plain = render(false);
  const secured = render(true);
  const at = `${settings.name}=`.length;
  const [plainHead, plainTail] = [plain.slice(0, at), plain.slice(at + 2)];
  const [secureHead, secureTail] = [secured.slice(0, at), secured.slice(at + 2)];
  return (id, secure) => (secure ? secureHead + id + secureTail : plainHead + id + plainTail);
}

/** Tells the browser to drop the cookie (after ctx.close()). */
export function expiredSessionCookie(settings: CookieSettings, secure: boolean): string {
  return stringifySetCookie(settings.name, '', {
    path: '/',
    httpOnly: true,
    sameSite: settings.sameSite,
    secure,
    maxAge: 0,
    expires: new Date(0),
  });
}

/** True for a Set-Cookie line that names our cookie: a hook may not set it (one per response, A12). */
export function setsCookieNamed(setCookie: string, name: string): boolean {
  // Through builtins taken before any hook module loaded (../primordials.ts).
  const eq = indexOf(setCookie, '=');
  return eq !== -1 && trim(slice(setCookie, 0, eq)) === name;
}
