/**
 * The `static` section of config.json: how long browsers and caches may keep the files of
 * publicDir (the options express.static and @fastify/static call `maxAge` and `immutable`).
 * ETag and Last-Modified are sent whatever is set here, so a stale copy is revalidated cheaply.
 */
import ms from 'ms';
import { z } from 'zod';

/** send's own ceiling, and RFC 9111's advice: a longer max-age is cut to a year anyway. */
const ONE_YEAR = 365 * 24 * 60 * 60 * 1000;

const MAX_AGE_FORM = 'a duration such as "1h" or "7d", or a whole number of milliseconds, from 0 to one year ("365d")';

/** Milliseconds from `"1h"` or `3600000`; undefined for anything else. */
function millis(value: unknown): number | undefined {
  if (typeof value === 'number') return value;
  if (typeof value !== 'string') return undefined;
  try {
    return ms(value as ms.StringValue);
  } catch {
    // ms throws on an empty string; the issue names the key instead.
    return undefined;
  }
}

export const staticSchema = z
  .strictObject({
    /** Cache-Control max-age of every public file, in ms once resolved. 0: revalidate each time. */
    maxAge: z
      .unknown()
      .optional()
      .transform((value, ctx) => {
        // Only a missing key takes the default: null is a wrong value, not "not given".
        const age = value === undefined ? 0 : millis(value);
        if (age === undefined || !Number.isInteger(age) || age < 0 || age > ONE_YEAR) {
          ctx.addIssue({ code: 'custom', message: MAX_AGE_FORM });
          return z.NEVER;
        }
        return age;
      }),
    /** Adds `immutable`: the file at a URL never changes (fingerprinted names such as app.3f9a1c.js). */
    immutable: z.boolean().optional().transform((v) => v ?? false),
  })
  .superRefine((value, ctx) => {
    // `immutable, max-age=0` promises nothing: the setting was surely meant with a maxAge. A
    // maxAge under a second is sent as max-age=0 too (whole seconds, rounded down).
    if (value.immutable && value.maxAge < 1000) {
      ctx.addIssue({ code: 'custom', path: ['immutable'], message: 'false unless static.maxAge is set too, to a second or more (immutable with max-age=0 caches nothing)' });
    }
  });

export type StaticConfig = Readonly<z.output<typeof staticSchema>>;
