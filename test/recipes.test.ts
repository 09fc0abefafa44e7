/**
 * docs/recipes.md (issue 15): each recipe's hook is a fixture under test/fixtures/recipes/,
 * driven here through a real server, and the code the page shows is that file, byte for byte
 * but for the path of the types import (the page shows a hook in the repository's src/hooks/).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Client, ROOT, serverFactory } from './helpers.ts';

const RECIPES = join(ROOT, 'test/fixtures/recipes');
const server = serverFactory({ workers: { threads: 1 } });
const clients: Client[] = [];
after(() => Promise.all(clients.map((c) => c.close())));

/** A server whose onConnection is the recipe `name`, and browser-like clients of it. */
async function recipe(name: string): Promise<{ browser: () => Client; events: () => Promise<string[]> }> {
  const t = await server({ hooks: { onConnection: join(RECIPES, `${name}.ts`) } });
  const browser = () => {
    const client = new Client(t.url);
    clients.push(client);
    return client;
  };
  const events = async () => {
    await t.settle();
    return t.logs.map((line) => String(line.event));
  };
  return { browser, events };
}

const form = (fields: Record<string, string>) => ({
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams(fields).toString(),
});

describe('docs/recipes.md shows the tested code', () => {
  /** `<!-- fixture: test/fixtures/recipes/NAME.ts -->` followed by a ```ts block. */
  const blocks = new Map(
    [...readFileSync(join(ROOT, 'docs/recipes.md'), 'utf8').matchAll(/<!-- fixture: (\S+) -->\n```ts\n([\s\S]*?)```\n/g)].map((m) => [m[1]!, m[2]!]),
  );

  test('every recipe fixture is on the page, as it is in the file', () => {
    const fixtures = readdirSync(RECIPES).filter((name) => name.endsWith('.ts'));
    assert.ok(fixtures.length >= 2);
    assert.deepEqual([...blocks.keys()].sort(), fixtures.map((name) => `test/fixtures/recipes/${name}`).sort());
    for (const [path, shown] of blocks) {
      const file = readFileSync(join(ROOT, path), 'utf8').replaceAll("from '../../../src/types.ts'", "from '../types.ts'");
      assert.equal(shown, file, `${path} and its block in docs/recipes.md differ`);
    }
  });
});

describe('routing with Hono', () => {
  test("routes read and write the client's own context; each client has its own", async () => {
    const { browser } = await recipe('hono-routing');
    const client = browser();
    assert.deepEqual((await client.get('/cart')).json(), { items: [] });
    const added = await client.get('/cart', form({ sku: 'tea' }));
    assert.equal(added.status, 201);
    await client.get('/cart', form({ sku: 'cups' }));
    assert.deepEqual((await client.get('/cart')).json(), { items: ['tea', 'cups'] });
    assert.deepEqual((await client.get('/cart/1')).json(), { item: 'cups' });
    assert.equal((await client.get('/cart/7')).status, 404);
    assert.equal((await client.get('/nowhere')).status, 404);

    const other = browser();
    assert.deepEqual((await other.get('/cart')).json(), { items: [] }, "another client's cart");
    assert.equal((await client.get('/cart', { method: 'DELETE' })).status, 204);
    assert.deepEqual((await client.get('/cart')).json(), { items: [] });
  });

  test("a route's ctx.close() ends the session; a thrown error reaches Resident's log", async () => {
    const { browser, events } = await recipe('hono-routing');
    const client = browser();
    await client.get('/cart', form({ sku: 'tea' }));
    const out = await client.get('/logout', { method: 'POST' });
    assert.equal(out.status, 303);
    assert.equal(client.cookie, undefined, 'the cookie was expired');
    assert.deepEqual((await client.get('/cart')).json(), { items: [] }, 'a new session');
    const boom = await client.get('/boom');
    assert.equal(boom.status, 500);
    assert.doesNotMatch(boom.text, /a route failed/);
    assert.ok((await events()).includes('hook-error'));
  });
});

describe('flash messages', () => {
  test('set on POST, shown once on the next GET, then gone', async () => {
    const client = (await recipe('flash-messages')).browser();
    assert.doesNotMatch((await client.get('/profile')).text, /class="flash"/);
    const saved = await client.get('/profile', form({ name: 'Ada <3' }));
    assert.equal(saved.status, 303);
    assert.equal(saved.headers.location, '/profile');
    const next = await client.get('/profile');
    assert.match(next.text, /<p class="flash">Saved\. Welcome, Ada &#60;3!<\/p>/);
    assert.match(next.text, /value="Ada &#60;3"/);
    const reload = await client.get('/profile');
    assert.doesNotMatch(reload.text, /class="flash"/, 'shown once');
    assert.match(reload.text, /value="Ada &#60;3"/, 'the name stays');
  });

  test("one client's message never reaches another client", async () => {
    const { browser } = await recipe('flash-messages');
    const [grace, stranger] = [browser(), browser()];
    await grace.get('/profile', form({ name: 'Grace' }));
    assert.doesNotMatch((await stranger.get('/profile')).text, /class="flash"/);
    assert.match((await grace.get('/profile')).text, /Welcome, Grace!/);
  });
});
