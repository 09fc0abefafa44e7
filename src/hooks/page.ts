/** The demo page's HTML. Everything interpolated is escaped. */
import { DEMO_USERS, type Employee, type Preferences, type Product } from './demo-data.ts';

const escapes: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const escape = (value: unknown) => String(value).replace(/[&<>"']/g, (char) => escapes[char]!);

/** Messages after a redirect, by key: the query string picks one, it never supplies text. */
export const NOTICES = {
  'login-failed': 'Wrong username or password.',
  'signed-in': 'Signed in. Your session has a new ID; your cart came along.',
  'signed-out': 'Signed out. Your session has a new ID.',
  'others-closed': 'Your other sessions are closed.',
} as const;

export type Notice = keyof typeof NOTICES;

export interface PageModel {
  maskedId: string;
  hits: number;
  state: 'new' | 'resumed' | 'continuing';
  expiresAt: Date | null;
  threadId: number;
  user: { username: string; name: string } | null;
  notice: Notice | null;
  employees: Employee[];
  employee: Employee | undefined;
  preferences: Preferences | undefined;
  products: Product[];
  cart: Array<{ product: Product; quantity: number }>;
}

const money = (cents: number) => `€${(cents / 100).toFixed(2)}`;

export function renderPage(model: PageModel): string {
  const theme = model.preferences?.theme ?? 'light';
  const total = model.cart.reduce((sum, line) => sum + line.quantity * line.product.priceCents, 0);
  return `<!doctype html>
<html lang="${escape(model.preferences?.language ?? 'en')}">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Resident demo</title>
  <link rel="stylesheet" href="/style.css">
</head>
<body class="${escape(theme)}">
  ${model.notice ? `<p id="notice" role="status">${escape(NOTICES[model.notice])}</p>` : ''}
  <h1>Your context</h1>
  <table id="context">
    <tr><th>Session</th><td id="session-id">${escape(model.maskedId)}</td></tr>
    <tr><th>Hits</th><td id="hits">${model.hits}</td></tr>
    <tr><th>State</th><td id="state">${escape(model.state)}</td></tr>
    <tr><th>Cookie expires</th><td id="expires">${model.expiresAt ? escape(model.expiresAt.toISOString()) : 'when the browser closes'}</td></tr>
    <tr><th>Worker thread</th><td id="thread">${model.threadId}</td></tr>
    <tr><th>Signed in as</th><td id="user">${model.user ? escape(model.user.name) : 'nobody'}</td></tr>
  </table>

  <h2>Sign in</h2>
  ${
    model.user
      ? `<form method="post" action="/logout"><button type="submit" id="logout">Sign out ${escape(model.user.username)}</button></form>
  <form method="post" action="/logout-others"><button type="submit" id="logout-others">Sign out my other sessions</button></form>`
      : `<form method="post" action="/login" id="login">
    <input name="username" id="username" autocomplete="username" placeholder="username" required>
    <input name="password" id="password" type="password" autocomplete="current-password" placeholder="password" required>
    <button type="submit">Sign in</button>
  </form>
  <p class="hint">Try ${DEMO_USERS.map(([username, password]) => `<code>${escape(username)}</code> / <code>${escape(password)}</code>`).join(' or ')}.</p>`
  }

  <h2>Who you are</h2>
  <form method="post" action="/me">
    <select name="employee" id="employee">
      <option value="">(nobody)</option>
      ${model.employees
        .map((e) => `<option value="${e.id}"${e.id === model.employee?.id ? ' selected' : ''}>${escape(e.name)} (${escape(e.company)})</option>`)
        .join('\n      ')}
    </select>
    <button type="submit">Choose</button>
  </form>
  ${model.employee ? `<p id="preferences">Preferences of ${escape(model.employee.name)}: theme ${escape(theme)}, language ${escape(model.preferences?.language ?? '?')}.</p>` : ''}

  <h2>Shop</h2>
  <form method="post" action="/cart/add">
    ${model.products.map((p) => `<button type="submit" name="sku" value="${escape(p.sku)}">Add ${escape(p.name)} (${money(p.priceCents)})</button>`).join('\n    ')}
  </form>
  <h2>Cart</h2>
  <ul id="cart">
    ${model.cart.map((line) => `<li data-sku="${escape(line.product.sku)}">${line.quantity} × ${escape(line.product.name)}</li>`).join('\n    ') || '<li class="empty">empty</li>'}
  </ul>
  <p id="total">Total: ${money(total)}</p>
  <form method="post" action="/cart/clear"><button type="submit">Empty the cart</button></form>

  <form method="post" action="/close"><button type="submit" id="close">Close my session</button></form>
</body>
</html>
`;
}
