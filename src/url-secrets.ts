/**
 * The secrets a store URL can hold, and the URL without them: what the banner, the logs and
 * the errors show of RESIDENT_STORE_URL / store.url.
 */

/**
 * Query parameters that carry a secret: node-postgres (like libpq) takes `?password=` and
 * `?sslpassword=` as well as the password in the userinfo.
 */
const SECRET_PARAM = /pass/i;

/** `url` without its password (in the userinfo or the query), for logs and the banner. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    for (const name of new Set(parsed.searchParams.keys())) if (SECRET_PARAM.test(name)) parsed.searchParams.set(name, '***');
    return parsed.toString();
  } catch {
    return '(an invalid URL)';
  }
}

/** Every secret `url` holds (its password, the values of secret query parameters), decoded. */
export function secretsOf(url: string): string[] {
  try {
    const parsed = new URL(url);
    const query = [...parsed.searchParams].filter(([name]) => SECRET_PARAM.test(name)).map(([, value]) => value);
    return [parsed.password, safeDecode(parsed.password), ...query].filter((secret) => secret !== '');
  } catch {
    return [];
  }
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}
