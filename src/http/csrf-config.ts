/**
 * The `csrf` section of config.json: the opt-in Origin check that refuses a state-changing
 * request another site's page made a browser send (./origin-check.ts; README, "CSRF").
 */
import { z } from 'zod';

const ORIGIN_FORM = 'an origin such as "https://shop.example.com" or "http://localhost:3000" (scheme, host and port only, no path)';

/** "https://Shop.Example.com:443" → "https://shop.example.com": origins compare as browsers serialize them. */
const origin = z.string().transform((text, ctx) => {
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    // Not a URL: the issue below names the entry.
  }
  const bare = url && (url.protocol === 'http:' || url.protocol === 'https:') && !url.username && !url.password && url.pathname === '/' && !url.search && !url.hash;
  if (!url || !bare) {
    ctx.addIssue({ code: 'custom', message: ORIGIN_FORM });
    return z.NEVER;
  }
  return url.origin;
});

export const csrfSchema = z
  .strictObject({
    /** Refuse unsafe methods whose Origin (else Referer) is neither this server's nor allowed. */
    checkOrigin: z.boolean().optional().transform((v) => v ?? false),
    /** Other sites whose pages may send such requests (a separate front end, a payment return). */
    allowedOrigins: z
      .array(origin)
      .optional()
      .transform((v) => Object.freeze(v ?? [])),
    /** Refuse too a request that has neither Origin nor Referer (one no browser sends cross-site). */
    requireOrigin: z.boolean().optional().transform((v) => v ?? false),
  })
  .superRefine((value, ctx) => {
    // Either key alone checks nothing: surely checkOrigin was forgotten.
    for (const key of ['allowedOrigins', 'requireOrigin'] as const) {
      const set = key === 'requireOrigin' ? value.requireOrigin : value.allowedOrigins.length > 0;
      if (set && !value.checkOrigin) ctx.addIssue({ code: 'custom', path: [key], message: 'used with csrf.checkOrigin: true (alone it checks nothing)' });
    }
  });

export type CsrfConfig = Readonly<z.output<typeof csrfSchema>>;
