/**
 * The admin page: static HTML, a script and a stylesheet, served without the token (they
 * hold no data). The script asks for the token, keeps it in a variable only (asked again after
 * a reload) and calls the JSON API with it. Never in sessionStorage or localStorage: those belong
 * to the origin, and any page of the app opened later in the tab (a hook's HTML with a
 * third-party script, an XSS) could read them. Every value from the API is written with
 * textContent, never as HTML: a userId is whatever a hook set, so it is untrusted text.
 */

export function adminPage(base: string): string {
  return `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Resident admin</title>
  <link rel="stylesheet" href="${base}admin.css">
  <script src="${base}admin.js" defer></script>
</head>
<body data-base="${base}">
  <header><h1>Resident admin</h1><span id="store"></span></header>
  <form id="login">
    <label>Admin token <input type="password" id="token" autocomplete="off" required></label>
    <button type="submit">Open</button>
    <p id="login-error" role="alert"></p>
  </form>
  <main id="main" hidden>
    <section>
      <h2>Workers</h2>
      <table id="workers"><thead><tr><th>Thread</th><th>Contexts</th><th>Queued</th></tr></thead><tbody></tbody></table>
      <p id="totals"></p>
    </section>
    <section>
      <h2>User</h2>
      <form id="user-form">
        <input id="user" placeholder="userId" required>
        <button type="submit" id="user-find">Find sessions</button>
        <button type="button" id="user-close">Close all of this user</button>
      </form>
      <p id="user-result"></p>
    </section>
    <section>
      <h2>Live sessions</h2>
      <table id="live" class="sessions"></table>
      <button type="button" class="more" data-list="live" hidden>More</button>
    </section>
    <section>
      <h2>Suspended sessions</h2>
      <table id="suspended" class="sessions"></table>
      <button type="button" class="more" data-list="suspended" hidden>More</button>
    </section>
    <p><button type="button" id="refresh">Refresh</button> <button type="button" id="logout">Forget the token</button></p>
    <p id="message" role="status"></p>
  </main>
</body>
</html>
`;
}

export const ADMIN_CSS = `body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d232a; }
header { display: flex; gap: 1rem; align-items: baseline; }
h1 { font-size: 1.4rem; margin: 0 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
table { border-collapse: collapse; min-width: 20rem; }
th, td { border-bottom: 1px solid #d8dee4; padding: .3rem .6rem; text-align: left; white-space: nowrap; }
th { background: #f3f5f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
button { font: inherit; padding: .2rem .6rem; }
#login-error, #message { color: #b42318; }
#store { color: #57606a; }
`;

export const ADMIN_JS = `'use strict';
const base = document.body.dataset.base;
const $ = (id) => document.getElementById(id);
const cursors = { live: null, suspended: null };
const COLUMNS = ['maskedId', 'userId', 'clientIp', 'state', 'createdAt', 'lastActivityAt', 'workerId', 'requests', 'mementoBytes'];
const HEADINGS = ['Session', 'User', 'Client IP', 'State', 'Created', 'Last activity', 'Worker', 'Requests', 'Memento bytes', ''];
// The token lives here only, for this page's life: storage would share it with the app's pages.
let token = null;

async function call(method, path) {
  const response = await fetch(base + 'api/' + path, { method, headers: { authorization: 'Bearer ' + token } });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) { showLogin('That token was refused.'); throw new Error('unauthorized'); }
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? '—' : String(text);
  if (className) td.className = className;
  return td;
}

function button(td, label, action) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.addEventListener('click', () => act(action));
  td.append(b, ' ');
}

async function act(action) {
  try {
    const result = await action();
    $('message').textContent = result;
  } catch (error) {
    $('message').textContent = error.message;
  }
  await refresh();
}

function sessionRows(table, sessions, append) {
  if (!append) {
    table.replaceChildren();
    const head = table.createTHead().insertRow();
    for (const heading of HEADINGS) { const th = document.createElement('th'); th.textContent = heading; head.append(th); }
    table.createTBody();
  }
  const body = table.tBodies[0];
  for (const session of sessions) {
    const row = body.insertRow();
    row.dataset.handle = session.handle;
    for (const column of COLUMNS) cell(row, session[column], typeof session[column] === 'number' ? 'num' : '');
    const actions = row.insertCell();
    button(actions, 'Close', async () => { await call('POST', 'sessions/' + encodeURIComponent(session.handle) + '/close'); return 'Closed ' + session.maskedId; });
    if (session.state === 'live') button(actions, 'Suspend', async () => { await call('POST', 'sessions/' + encodeURIComponent(session.handle) + '/suspend'); return 'Suspended ' + session.maskedId; });
    if (session.userId !== null) button(actions, 'Close user', () => closeUser(session.userId));
  }
}

async function closeUser(userId) {
  const result = await call('POST', 'users/' + encodeURIComponent(userId) + '/close');
  return 'Closed ' + result.closed + ' session(s) of ' + userId;
}

async function list(state, append) {
  const cursor = append && cursors[state] ? '&cursor=' + encodeURIComponent(cursors[state]) : '';
  const page = await call('GET', 'sessions?state=' + state + '&limit=50' + cursor);
  cursors[state] = page.next;
  sessionRows($(state), page.sessions, append);
  document.querySelector('.more[data-list="' + state + '"]').hidden = page.next === null;
}

async function refresh() {
  const overview = await call('GET', 'overview');
  $('store').textContent = 'store: ' + overview.store;
  const body = $('workers').tBodies[0];
  body.replaceChildren();
  for (const worker of overview.workers) {
    const row = body.insertRow();
    cell(row, worker.threadId, 'num'); cell(row, worker.contexts, 'num'); cell(row, worker.queued, 'num');
  }
  $('totals').textContent = overview.sessions.live + ' live, ' + overview.sessions.suspendedKnown + ' suspended known to this process';
  await list('live', false);
  await list('suspended', false);
}

function showLogin(message) {
  token = null;
  $('main').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
}

async function openView() {
  $('login').hidden = true;
  $('main').hidden = false;
  try { await refresh(); } catch (error) { if (error.message !== 'unauthorized') $('message').textContent = error.message; }
}

$('login').addEventListener('submit', (event) => {
  event.preventDefault();
  token = $('token').value;
  $('token').value = '';
  openView();
});
$('user-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const userId = $('user').value;
  try {
    const result = await call('GET', 'users/' + encodeURIComponent(userId) + '/sessions');
    $('user-result').textContent = result.sessions.length + ' session(s): ' + result.sessions.map((s) => s.maskedId + ' (' + s.state + ')').join(', ');
  } catch (error) { $('user-result').textContent = error.message; }
});
$('user-close').addEventListener('click', () => act(() => closeUser($('user').value)));
$('refresh').addEventListener('click', () => act(async () => ''));
$('logout').addEventListener('click', () => showLogin(''));
for (const more of document.querySelectorAll('.more')) more.addEventListener('click', () => list(more.dataset.list, true));
// Earlier versions kept the token in sessionStorage: remove what they may have left.
sessionStorage.removeItem('residentToken');
showLogin('');
`;
