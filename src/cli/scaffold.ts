/**
 * What `resident init` writes: a starting point that runs as it is and shows the model: a
 * typed context (Vars), what survives a suspension (Memento), the two hooks, and a tsconfig
 * under which `npx tsc` checks them. Kept as text here so the package needs no template files.
 */
export const SCAFFOLD: Readonly<Record<string, string>> = {
  'config.json': `${JSON.stringify(
    {
      host: '127.0.0.1',
      port: 8080,
      publicDir: 'public',
      hooks: { onConnection: 'hooks/onConnection.ts', onSessionSuspend: 'hooks/onSessionSuspend.ts' },
      sessions: { processTimeout: '20m', cookieTimeout: '8h' },
      store: { kind: 'sqlite', path: 'data/sessions.db' },
      // POST /notes changes state: a page on another site must not make a visitor's browser send it.
      csrf: { checkOrigin: true },
    },
    null,
    2,
  )}\n`,
  'hooks/state.ts': `/**
 * The shape of each client's context. Vars live in memory between requests; the Memento is
 * what onSessionSuspend saves when an idle context leaves memory, and ctx.saved gives back
 * when the client returns.
 */
import { defineHooks } from 'resident/hooks';

export interface Vars {
  /** Absent on a new context: initialised by the first request. */
  visits?: number;
  notes?: string[];
}

export interface Memento {
  visits: number;
  notes: string[];
}

export const hooks = defineHooks<Vars, Memento>();
`,
  'hooks/onConnection.ts': `import { hooks } from './state.ts';

export default hooks.onConnection(async (ctx, request) => {
  if (ctx.isNew) {
    // A new context, or one coming back from a suspension with its memento.
    ctx.vars.visits = ctx.saved?.visits ?? 0;
    ctx.vars.notes = ctx.saved?.notes ?? [];
  }
  const url = new URL(request.url);
  if (request.method === 'POST' && url.pathname === '/notes') {
    const note = (await request.text()).slice(0, 200);
    ctx.vars.notes!.push(note);
    ctx.log.info({ notes: ctx.vars.notes!.length }, 'note added');
    return Response.json({ notes: ctx.vars.notes });
  }
  if (url.pathname !== '/') return undefined; // publicDir answers, or 404
  ctx.vars.visits = (ctx.vars.visits ?? 0) + 1;
  return Response.json({ visits: ctx.vars.visits, notes: ctx.vars.notes, resumed: ctx.resumed });
});
`,
  'hooks/onSessionSuspend.ts': `import { hooks } from './state.ts';

// Called when the context leaves memory (idle, shutdown, ...): what it returns is saved and
// given back as ctx.saved when the client returns.
export default hooks.onSessionSuspend((ctx) => ({ visits: ctx.vars.visits ?? 0, notes: ctx.vars.notes ?? [] }));
`,
  'public/hello.txt': 'Static files in public/ are served as they are.\n',
  'tsconfig.json': `${JSON.stringify(
    {
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        lib: ['ES2023', 'DOM'],
        strict: true,
        noEmit: true,
        allowImportingTsExtensions: true,
        skipLibCheck: true,
      },
      include: ['hooks/**/*.ts'],
    },
    null,
    2,
  )}\n`,
};
