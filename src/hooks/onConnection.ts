/**
 * The demo's onConnection hook: runs for every dynamic request, inside the visitor's context
 * on its worker thread. Replace it with your own; the contract is in README.md.
 */
import type { Context } from '../hooks-api.ts';
import { Cart } from './cart.ts';
import { employeeOfUser, loadEmployees, loadPreferences, loadProducts, verifyLogin } from './demo-data.ts';
import { NOTICES, renderPage, type Notice } from './page.ts';
import { hooks, type DemoMemento, type DemoVars } from './state.ts';

/** A context is born empty; when it resumes a suspended session, its memento comes back. */
function restore(ctx: Context<DemoVars, DemoMemento>): void {
  const saved = ctx.resumed ? ctx.saved : undefined;
  ctx.vars.hits = saved?.hits ?? 0;
  ctx.vars.cart = new Cart(saved?.cart);
  ctx.vars.employeeId = saved?.employeeId ?? null;
}

/** Prices change: a context older than this reads the catalogue again (a ttl on its selection). */
const PRODUCTS = { ttl: '5m' };

const seeOther = (location: string) => new Response(null, { status: 303, headers: { location } });

export default hooks.onConnection(async (ctx, request) => {
  if (ctx.isNew) restore(ctx);
  const { vars } = ctx;
  const cart = (vars.cart ??= new Cart());
  const { pathname } = new URL(request.url);

  if (request.method === 'POST') {
    const form = await request.formData().catch(() => new FormData());
    switch (pathname) {
      case '/cart/add': {
        const sku = String(form.get('sku') ?? '');
        const products = await ctx.select('products', loadProducts, PRODUCTS);
        if (products.some((p) => p.sku === sku)) cart.add(sku);
        return seeOther('/');
      }
      case '/cart/clear':
        cart.clear();
        return seeOther('/');
      case '/me': {
        const id = Number(form.get('employee'));
        const employees = await ctx.select('employees', loadEmployees);
        vars.employeeId = employees.some((e) => e.id === id) ? id : null;
        return seeOther('/');
      }
      case '/login': {
        const user = await verifyLogin(String(form.get('username') ?? ''), String(form.get('password') ?? ''));
        // ctx.log writes through the server's log, with this session's hash on the line.
        if (!user) {
          ctx.log.warn('failed login');
          return seeOther('/?notice=login-failed');
        }
        ctx.log.info({ username: user.username }, 'signed in');
        // A privilege change: the session gets a new ID and keeps its context (cart, hits).
        ctx.userId = user.username;
        ctx.regenerate();
        vars.employeeId = user.id;
        return seeOther('/?notice=signed-in');
      }
      case '/logout':
        ctx.userId = null;
        ctx.regenerate();
        vars.employeeId = null;
        return seeOther('/?notice=signed-out');
      case '/logout-others':
        // Every other session of this user, on any worker or suspended in the store.
        ctx.closeOtherSessions();
        return seeOther('/?notice=others-closed');
      case '/close':
        ctx.close();
        return seeOther('/');
      default:
        return undefined;
    }
  }

  if (pathname !== '/') return undefined;
  const hits = (vars.hits = (vars.hits ?? 0) + 1);
  const notice = new URL(request.url).searchParams.get('notice');
  // Cached selections: loaded once per context, then read from memory on every request.
  const [employees, products] = await Promise.all([ctx.select('employees', loadEmployees), ctx.select('products', loadProducts, PRODUCTS)]);
  // Signed in, the user is their own employee, whatever was chosen before.
  const userEmployee = ctx.userId === null ? undefined : employeeOfUser(ctx.userId);
  if (userEmployee !== undefined) vars.employeeId = userEmployee;
  const employee = employees.find((e) => e.id === vars.employeeId);
  const preferences = employee ? await ctx.select(`preferences:${employee.id}`, () => loadPreferences(employee.id)) : undefined;
  const lines = cart.entries().flatMap(([sku, quantity]) => {
    const product = products.find((p) => p.sku === sku);
    return product ? [{ product, quantity }] : [];
  });
  const html = renderPage({
    maskedId: `${ctx.id.slice(0, 4)}…`,
    hits,
    state: !ctx.isNew ? 'continuing' : ctx.resumed ? 'resumed' : 'new',
    expiresAt: ctx.expiresAt,
    threadId: ctx.threadId,
    user: ctx.userId === null ? null : { username: ctx.userId, name: employee?.name ?? ctx.userId },
    notice: notice !== null && notice in NOTICES ? (notice as Notice) : null,
    employees,
    employee,
    preferences,
    products,
    cart: lines,
  });
  return new Response(html, { headers: { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' } });
});
