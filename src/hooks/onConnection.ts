/**
 * The demo's onConnection hook: runs for every dynamic request, inside the visitor's context
 * on its worker thread. Replace it with your own; the contract is in README.md.
 */
import type { Context } from '../types.ts';
import { Cart } from './cart.ts';
import { loadEmployees, loadPreferences, loadProducts } from './demo-data.ts';
import type { DemoMemento } from './onSessionSuspend.ts';
import { renderPage } from './page.ts';

interface DemoVars {
  hits: number;
  cart: Cart;
  employeeId: number | null;
}

/** A context is born empty; when it resumes a suspended session, its memento comes back. */
function restore(ctx: Context): DemoVars {
  const saved = ctx.resumed ? (ctx.saved as DemoMemento | undefined) : undefined;
  return {
    hits: saved?.hits ?? 0,
    cart: new Cart(saved?.cart),
    employeeId: saved?.employeeId ?? null,
  };
}

const seeOther = (location: string) => new Response(null, { status: 303, headers: { location } });

export default async function onConnection(ctx: Context, request: Request): Promise<Response | undefined> {
  if (ctx.isNew) Object.assign(ctx.vars, restore(ctx));
  const vars = ctx.vars as DemoVars;
  const { pathname } = new URL(request.url);

  if (request.method === 'POST') {
    const form = await request.formData().catch(() => new FormData());
    switch (pathname) {
      case '/cart/add': {
        const sku = String(form.get('sku') ?? '');
        const products = await ctx.select('products', loadProducts);
        if (products.some((p) => p.sku === sku)) vars.cart.add(sku);
        return seeOther('/');
      }
      case '/cart/clear':
        vars.cart.clear();
        return seeOther('/');
      case '/me': {
        const id = Number(form.get('employee'));
        const employees = await ctx.select('employees', loadEmployees);
        vars.employeeId = employees.some((e) => e.id === id) ? id : null;
        return seeOther('/');
      }
      case '/close':
        ctx.close();
        return seeOther('/');
      default:
        return undefined;
    }
  }

  if (pathname !== '/') return undefined;
  vars.hits++;
  // Cached selections: loaded once per context, then read from memory on every request.
  const [employees, products] = await Promise.all([ctx.select('employees', loadEmployees), ctx.select('products', loadProducts)]);
  const employee = employees.find((e) => e.id === vars.employeeId);
  const preferences = employee ? await ctx.select(`preferences:${employee.id}`, () => loadPreferences(employee.id)) : undefined;
  const cart = vars.cart.entries().flatMap(([sku, quantity]) => {
    const product = products.find((p) => p.sku === sku);
    return product ? [{ product, quantity }] : [];
  });
  const html = renderPage({
    maskedId: `${ctx.id.slice(0, 4)}…`,
    hits: vars.hits,
    state: !ctx.isNew ? 'continuing' : ctx.resumed ? 'resumed' : 'new',
    expiresAt: ctx.expiresAt,
    threadId: ctx.threadId,
    employees,
    employee,
    preferences,
    products,
    cart,
  });
  return new Response(html, { headers: { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' } });
}
