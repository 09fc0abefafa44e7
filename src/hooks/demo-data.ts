/**
 * The demo's data source: a small SQLite database of companies, employees, their preferences,
 * the users who may sign in, and a product catalogue, as in 4D's example of reloading a
 * user's preferences at connection. Every worker opens the same file; the first one to get
 * there seeds it.
 */
import Database from 'better-sqlite3';
import { randomBytes, scrypt, scryptSync, timingSafeEqual, type BinaryLike } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

// A sign-in runs scrypt in libuv's thread pool, not on the worker thread: scryptSync held the
// worker ~36 ms per attempt, and every context on it waited behind unauthenticated POST /login.
const scryptAsync = promisify(scrypt) as (password: BinaryLike, salt: BinaryLike, keylen: number) => Promise<Buffer>;

const path = process.env.RESIDENT_DEMO_DB ?? fileURLToPath(new URL('../../data/demo.db', import.meta.url));
mkdirSync(dirname(path), { recursive: true });
const db = new Database(path, { timeout: 5000 });

/**
 * Every worker thread opens and seeds the file at once. The busy timeout covers most of the
 * contention, but SQLite answers some of it with SQLITE_BUSY at once instead of waiting (a
 * journal-mode change racing another connection, a stale WAL snapshot, a WAL-index lock that
 * keeps moving): tried again here, for up to the same 5 s, so a fresh demo database never
 * fails a worker's start.
 */
const TRANSIENT = /^SQLITE_(BUSY|LOCKED|PROTOCOL)/;
function retryingBusy<T>(work: () => T): T {
  const deadline = Date.now() + 5_000;
  for (;;) {
    try {
      return work();
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (typeof code !== 'string' || !TRANSIENT.test(code) || Date.now() > deadline) throw error;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
}

retryingBusy(() => db.pragma('journal_mode = WAL'));

const schema = `
  CREATE TABLE IF NOT EXISTS companies (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS employees (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, company_id INTEGER NOT NULL REFERENCES companies(id));
  CREATE TABLE IF NOT EXISTS preferences (
    employee_id INTEGER PRIMARY KEY REFERENCES employees(id), theme TEXT NOT NULL, language TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS products (sku TEXT PRIMARY KEY, name TEXT NOT NULL, price_cents INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, employee_id INTEGER NOT NULL REFERENCES employees(id));
`;

/** The demo's sign-ins (shown on the page: this is a demo, not a secret). */
export const DEMO_USERS: ReadonlyArray<[username: string, password: string, employeeId: number]> = [
  ['ada', 'analytical-engine', 1],
  ['grace', 'cobol-1959', 2],
];

/** scrypt with a random salt, stored as "salt:hash" (hex). Sync: only when seeding, at startup. */
function hashPassword(password: string): string {
  const salt = randomBytes(16);
  return `${salt.toString('hex')}:${scryptSync(password, salt, 32).toString('hex')}`;
}

// IMMEDIATE: the write lock is taken before the first read, and the schema is made inside the
// same transaction. Every worker seeds at once, and a deferred transaction (or an autocommit
// CREATE) that reads and then writes fails at once with SQLITE_BUSY when another worker
// committed in between (SQLite cannot upgrade a stale read to a write).
const seed = db.transaction(() => {
  db.exec(schema);
  const companies = db.prepare('INSERT OR IGNORE INTO companies (id, name) VALUES (?, ?)');
  companies.run(1, 'Acme Tools');
  companies.run(2, 'Globex Foods');
  const employees = db.prepare('INSERT OR IGNORE INTO employees (id, name, company_id) VALUES (?, ?, ?)');
  const preferences = db.prepare('INSERT OR IGNORE INTO preferences (employee_id, theme, language) VALUES (?, ?, ?)');
  const people: Array<[number, string, number, string, string]> = [
    [1, 'Ada Lovelace', 1, 'light', 'en'],
    [2, 'Grace Hopper', 1, 'dark', 'en'],
    [3, 'Jean Dupont', 2, 'light', 'fr'],
    [4, 'Ingrid Berg', 2, 'dark', 'sv'],
  ];
  for (const [id, name, company, theme, language] of people) {
    employees.run(id, name, company);
    preferences.run(id, theme, language);
  }
  const products = db.prepare('INSERT OR IGNORE INTO products (sku, name, price_cents) VALUES (?, ?, ?)');
  products.run('tea', 'Green tea', 450);
  products.run('mug', 'Stoneware mug', 1200);
  products.run('book', 'The 4D handbook', 3900);
  const known = db.prepare('SELECT 1 FROM users WHERE username = ?');
  const users = db.prepare('INSERT OR IGNORE INTO users (username, password_hash, employee_id) VALUES (?, ?, ?)');
  for (const [username, password, employeeId] of DEMO_USERS) {
    if (!known.get(username)) users.run(username, hashPassword(password), employeeId);
  }
});
retryingBusy(() => seed.immediate());

export interface Employee {
  id: number;
  name: string;
  company: string;
}

export interface Preferences {
  theme: 'light' | 'dark';
  language: string;
}

export interface Product {
  sku: string;
  name: string;
  priceCents: number;
}

export function loadEmployees(): Employee[] {
  return db
    .prepare('SELECT e.id, e.name, c.name AS company FROM employees e JOIN companies c ON c.id = e.company_id ORDER BY e.name')
    .all() as Employee[];
}

export function loadPreferences(employeeId: number): Preferences | undefined {
  return db.prepare('SELECT theme, language FROM preferences WHERE employee_id = ?').get(employeeId) as Preferences | undefined;
}

/** Hashed in place of an unknown user's, so that user costs the same scrypt as a known one. */
const NO_USER_HASH = `${'00'.repeat(16)}:${'00'.repeat(32)}`;

/**
 * The user's employee record when the password is right. A wrong username costs the same
 * scrypt and the same constant-time compare as a wrong password, so timing does not tell which
 * usernames exist.
 */
export async function verifyLogin(username: string, password: string): Promise<(Employee & { username: string }) | undefined> {
  const row = db.prepare('SELECT password_hash, employee_id FROM users WHERE username = ?').get(username) as
    | { password_hash: string; employee_id: number }
    | undefined;
  const [saltHex, hashHex] = (row?.password_hash ?? NO_USER_HASH).split(':') as [string, string];
  const expected = Buffer.from(hashHex, 'hex');
  const actual = await scryptAsync(password, Buffer.from(saltHex, 'hex'), expected.length);
  const matches = timingSafeEqual(actual, expected);
  if (!row || !matches) return undefined;
  const employee = loadEmployees().find((e) => e.id === row.employee_id);
  return employee && { ...employee, username };
}

/** The employee a username signs in as. */
export function employeeOfUser(username: string): number | undefined {
  return (db.prepare('SELECT employee_id FROM users WHERE username = ?').get(username) as { employee_id: number } | undefined)?.employee_id;
}

export function loadProducts(): Product[] {
  return db.prepare('SELECT sku, name, price_cents AS priceCents FROM products ORDER BY name').all() as Product[];
}
