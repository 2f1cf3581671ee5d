// The operator console: a hash-routed page over the JSON API. Every node is built with
// createElement and textContent (payloads are user data); nothing is fetched but this
// origin's API, with the operator's own credentials.
'use strict';

const BASE = location.pathname.replace(/\/console\/?$/, '');
const SHIM = document.documentElement.dataset.shim === 'allowed';
const PERMISSIONS = [
  'trigger:subscriptions:read', 'trigger:subscriptions:write', 'trigger:subscriptions:delete',
  'trigger:subscriptions:fire', 'trigger:deadletters:read', 'trigger:deadletters:replay',
  'trigger:connectors:read', 'trigger:connectors:write',
];
const REASONS = ['retries_exhausted', 'rejected', 'no_target_version', 'mapping_failed', 'too_large', 'unparseable'];
const SOURCES = ['manual', 'scheduled', 'webhook', 'vendor-push', 'pull', 'internal'];
const SESSION_KEY = 'custos.console.session';

let session = readSession();

// ------------------------------------------------------------------ plumbing

function readSession() {
  try { return JSON.parse(sessionStorage.getItem(SESSION_KEY)); } catch (_) { return null; }
}

/** An element: h('a', {href: '#/x', onclick: f}, 'text', child, ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const svgNs = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...children) {
  const el = document.createElementNS(svgNs, tag);
  for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
  return append(el, children);
}

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || ('HTTP ' + status));
    this.status = status;
    this.code = problem && problem.code;
  }
}

function credentials() {
  if (session.token) return { authorization: 'Bearer ' + session.token };
  return {
    'x-custos-callctx': JSON.stringify({
      workspace_id: session.workspace, principal_id: 'console', permissions: PERMISSIONS,
    }),
  };
}

/** Calls the API under the signed-in workspace; a problem+json answer throws ApiError. */
async function api(method, path, body) {
  const headers = Object.assign({ accept: 'application/json' }, credentials());
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(BASE + '/v1/workspaces/' + encodeURIComponent(session.workspace) + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { detail: text }; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const text = q.toString();
  return text ? '?' + text : '';
}

function notice(text, isError) {
  const el = document.getElementById('notice');
  el.className = isError ? 'error' : '';
  el.textContent = text || '';
}

function fail(error) {
  notice((error.code ? error.code + ': ' : '') + error.message, true);
}

/** Runs an action from a button: disables it meanwhile, reports the outcome. */
function action(button, run) {
  return async (ev) => {
    if (ev) ev.preventDefault();
    button.disabled = true;
    try { await run(); } catch (e) { fail(e); } finally { button.disabled = false; }
  };
}

/** Asks before a destructive step, in a modal dialog the keyboard can answer. */
function confirmStep(question, verb) {
  return new Promise((resolve) => {
    const yes = h('button', { class: 'danger', value: 'yes' }, verb);
    const no = h('button', { class: 'secondary', value: 'no', autofocus: true }, 'Cancel');
    const dialog = h('dialog', { 'aria-label': question }, h('p', {}, question),
      h('form', { method: 'dialog', class: 'actions' }, no, yes));
    dialog.addEventListener('close', () => { dialog.remove(); resolve(dialog.returnValue === 'yes'); });
    document.body.append(dialog);
    dialog.showModal();
  });
}

function when(ms) {
  if (ms === undefined || ms === null) return '';
  const d = new Date(typeof ms === 'number' ? ms : Date.parse(ms));
  return isNaN(d) ? String(ms) : d.toLocaleString(undefined, { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

function chip(text) { return h('span', { class: 'chip ' + text }, text.replace(/_/g, ' ')); }
function json(value) { return h('pre', { class: 'mono' }, JSON.stringify(value, null, 2)); }
function view(title, ...children) {
  const main = document.getElementById('main');
  main.replaceChildren(h('h1', {}, title), ...children);
  document.title = title + ' · custos-trigger';
  return main;
}
function table(head, rows) {
  return h('table', {}, h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: head.length, class: 'muted' }, 'Nothing here.'))));
}
function field(label, input) { return h('label', {}, label, input); }
function localToIso(value) { return value ? new Date(value).toISOString() : undefined; }

// ------------------------------------------------------------------ sign-in

function signIn() {
  document.getElementById('nav').hidden = true;
  const workspace = h('input', { name: 'workspace', required: true, autocomplete: 'off' });
  const token = h('input', { name: 'token', type: 'password', autocomplete: 'off', required: !SHIM });
  const go = h('button', { type: 'submit' }, 'Open workspace');
  const form = h('form', { class: 'filters' }, field('Workspace', workspace),
    field(SHIM ? 'Bearer token (optional here)' : 'Bearer token', token), go);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    session = { workspace: workspace.value.trim(), token: token.value.trim() || null };
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    route();
  });
  view('Sign in', h('p', { class: 'muted' }, SHIM
    ? 'Development environment: without a token the console calls the API through the development shim with every console permission.'
    : 'The console calls the API with your token; it can do what the token allows and nothing more.'), form);
  workspace.focus();
}

// ------------------------------------------------------------------ events

async function eventsPage(params) {
  const form = h('form', { class: 'filters' },
    field('Kind', h('input', { name: 'kind', value: params.get('kind') || '' })),
    field('Source', h('select', { name: 'sourceType' }, h('option', { value: '' }, 'any'),
      SOURCES.map((t) => h('option', { value: t, selected: params.get('sourceType') === t }, t)))),
    field('Since', h('input', { name: 'since', type: 'datetime-local', value: params.get('since') || '' })),
    h('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    location.hash = '#/events' + query(Object.fromEntries(data));
  });
  const body = h('tbody', {});
  const more = h('button', { class: 'secondary', hidden: true }, 'Older events');
  view('Events', form, h('table', {}, h('thead', {}, h('tr', {},
    ['Received', 'Source', 'Kind', 'Event', 'Fate'].map((c) => h('th', { scope: 'col' }, c)))), body), more);
  let cursor;
  const load = async () => {
    const page = await api('GET', '/events' + query({
      kind: params.get('kind'), sourceType: params.get('sourceType'),
      since: localToIso(params.get('since')), limit: 50, cursor,
    }));
    for (const item of page.items) {
      body.append(h('tr', {},
        h('td', {}, when(item.receivedAt)), h('td', {}, item.sourceType || ''), h('td', { class: 'mono' }, item.kind || ''),
        h('td', { class: 'mono' }, h('a', { href: '#/events/' + encodeURIComponent(item.eventId) }, item.eventId)),
        h('td', {}, item.status ? chip(item.status) : h('span', { class: 'muted' }, 'see event'))));
    }
    if (!body.children.length) body.append(h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No events.')));
    cursor = page.nextCursor;
    more.hidden = !cursor;
  };
  more.addEventListener('click', action(more, load));
  await load();
}

const WAITING = new Set(['parked', 'pending', 'claimed', 'throttled', 'debouncing', 'queued']);
const FAILED = new Set(['dead_lettered', 'loop_rejected', 'park_expired']);

function timeline(event, match) {
  const steps = [h('li', {}, 'received ', when(event.receivedAtMs))];
  const target = match.subscriptionId || match.resumeId;
  steps.push(h('li', {}, 'matched ', match.matchKind, ' ',
    match.subscriptionId ? h('a', { href: '#/subscriptions/' + encodeURIComponent(target) }, target) : h('span', { class: 'mono' }, target)));
  if (match.attempts) steps.push(h('li', {}, 'claimed — ', String(match.attempts), match.attempts === 1 ? ' attempt' : ' attempts'));
  const cls = FAILED.has(match.status) ? 'bad' : WAITING.has(match.status) ? 'wait' : '';
  const until = match.parkedUntilMs || match.throttledUntilMs || match.dueAtMs;
  steps.push(h('li', { class: cls }, chip(match.status),
    match.runId ? [' run ', h('span', { class: 'mono' }, match.runId)] : '',
    match.reason ? [' — ', match.reason] : '',
    match.supersededBy ? [' by ', h('span', { class: 'mono' }, match.supersededBy)] : '',
    until ? [' until ', when(until)] : '',
    ' ', h('span', { class: 'muted' }, when(match.updatedAtMs)),
    match.detail ? h('div', { class: 'error' }, match.detail) : ''));
  return h('ol', { class: 'timeline' }, steps);
}

async function eventPage(id) {
  const event = await api('GET', '/events/' + encodeURIComponent(id));
  const replay = h('button', {}, 'Replay event');
  replay.addEventListener('click', action(replay, async () => {
    if (!(await confirmStep('Replay event ' + id + '? Every subscription that matches it now gets it again; targets that already ran it skip it by idempotency key.', 'Replay'))) return;
    const answer = await api('POST', '/events/' + encodeURIComponent(id) + ':replay');
    notice('Replaying ' + answer.eventId + '.');
  }));
  const refresh = h('button', { class: 'secondary' }, 'Refresh');
  refresh.addEventListener('click', action(refresh, () => eventPage(id)));
  const matches = event.matches || [];
  view('Event ' + id,
    h('div', { class: 'actions' }, replay, refresh),
    h('p', {}, 'Received ', when(event.receivedAtMs), event.event ? [' · ', event.event.kind, ' from ', event.event.source && event.event.source.type] : '',
      event.status ? [' · ', chip(event.status), ' ', event.reason || ''] : ''),
    event.detail ? h('p', { class: 'error' }, event.detail) : '',
    h('div', { class: 'grid' },
      h('section', { 'aria-label': 'Matches' }, h('h2', {}, 'Matches (' + matches.length + ')'),
        matches.length ? matches.map((m) => timeline(event, m)) : h('p', { class: 'muted' }, 'No subscription or wait matched this event.')),
      h('section', { 'aria-label': 'Payload' }, h('h2', {}, 'Payload'), json(event.event ? event.event.data : null),
        h('details', {}, h('summary', {}, 'Whole event'), json(event.event)))));
}

// ------------------------------------------------------------------ dead letters

async function deadLettersPage(params) {
  const filters = { reason: params.get('reason') || '', subscriptionId: params.get('subscriptionId') || '' };
  const form = h('form', { class: 'filters' },
    field('Reason', h('select', { name: 'reason' }, h('option', { value: '' }, 'any'),
      REASONS.map((r) => h('option', { value: r, selected: filters.reason === r }, r)))),
    field('Subscription', h('input', { name: 'subscriptionId', value: filters.subscriptionId })),
    h('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    location.hash = '#/dead-letters' + query(Object.fromEntries(new FormData(form)));
  });
  const page = await api('GET', '/dead-letters' + query(Object.assign({ limit: 200 }, filters)));
  const boxes = [];
  const rows = page.items.map((d) => {
    const box = h('input', { type: 'checkbox', 'aria-label': 'select ' + d.deadLetterId, value: d.deadLetterId });
    boxes.push(box);
    return h('tr', {}, h('td', {}, box), h('td', {}, when(d.deadLetteredAt)), h('td', {}, chip(d.reason)),
      h('td', { class: 'mono' }, h('a', { href: '#/dead-letters/' + d.deadLetterId }, d.deadLetterId.slice(0, 12) + '…')),
      h('td', { class: 'mono' }, h('a', { href: '#/events/' + encodeURIComponent(d.eventId) }, d.eventId)),
      h('td', { class: 'mono' }, d.targetId), h('td', {}, d.detail || ''));
  });
  const selected = () => boxes.filter((b) => b.checked).map((b) => b.value);
  const replaySome = h('button', {}, 'Replay selected');
  replaySome.addEventListener('click', action(replaySome, async () => {
    const ids = selected();
    if (!ids.length) return notice('Select dead letters first.', true);
    if (!(await confirmStep('Replay ' + ids.length + ' dead letter(s)? Each goes back to dispatch with its original idempotency key.', 'Replay'))) return;
    await eachOf(ids, (id) => api('POST', '/dead-letters/' + id + ':replay'), 'replayed');
  }));
  const discard = h('button', { class: 'danger' }, 'Discard selected');
  discard.addEventListener('click', action(discard, async () => {
    const ids = selected();
    if (!ids.length) return notice('Select dead letters first.', true);
    if (!(await confirmStep('Discard ' + ids.length + ' dead letter(s)? They can no longer be replayed.', 'Discard'))) return;
    await eachOf(ids, (id) => api('DELETE', '/dead-letters/' + id), 'discarded');
  }));
  const replayAll = h('button', { class: 'secondary' }, 'Replay all matching the filter');
  replayAll.addEventListener('click', action(replayAll, async () => {
    if (!(await confirmStep('Replay up to 1000 dead letters matching the filter?', 'Replay all'))) return;
    const answer = await api('POST', '/dead-letters:replay', {
      reason: filters.reason || null, subscriptionId: filters.subscriptionId || null, max: 1000,
    });
    notice('Replay requested: ' + JSON.stringify(answer));
  }));
  view('Dead letters', form, h('div', { class: 'actions' }, replaySome, replayAll, discard),
    table(['', 'Dead-lettered', 'Reason', 'Dead letter', 'Event', 'Target', 'Last error'], rows));
}

/** Applies `call` to each id, then reloads the page and says how many worked. */
async function eachOf(ids, call, verb) {
  const results = await Promise.allSettled(ids.map(call));
  const failed = results.filter((r) => r.status === 'rejected');
  await route();
  notice((ids.length - failed.length) + ' ' + verb + (failed.length ? ', ' + failed.length + ' failed: ' + failed[0].reason.message : '.'), failed.length > 0);
}

async function deadLetterPage(id) {
  const d = await api('GET', '/dead-letters/' + encodeURIComponent(id));
  const replay = h('button', {}, 'Replay');
  replay.addEventListener('click', action(replay, async () => {
    if (!(await confirmStep('Replay this dead letter with its original idempotency key?', 'Replay'))) return;
    await api('POST', '/dead-letters/' + encodeURIComponent(id) + ':replay');
    notice('Replayed; the event page shows how it goes.');
    location.hash = '#/events/' + encodeURIComponent(d.eventId);
  }));
  const discard = h('button', { class: 'danger' }, 'Discard');
  discard.addEventListener('click', action(discard, async () => {
    if (!(await confirmStep('Discard this dead letter? It can no longer be replayed.', 'Discard'))) return;
    await api('DELETE', '/dead-letters/' + encodeURIComponent(id));
    notice('Discarded.');
    location.hash = '#/dead-letters';
  }));
  view('Dead letter', h('div', { class: 'actions' }, d.replayable === false ? '' : replay, discard),
    h('p', {}, chip(d.reason), ' ', d.detail || '', ' · event ',
      h('a', { class: 'mono', href: '#/events/' + encodeURIComponent(d.eventId) }, d.eventId)),
    json(d));
}

// ------------------------------------------------------------------ subscriptions

async function subscriptionsPage() {
  const page = await api('GET', '/triggers' + query({ limit: 200 }));
  const rows = page.items.map((t) => h('tr', {},
    h('td', { class: 'mono' }, h('a', { href: '#/subscriptions/' + encodeURIComponent(t.subscriptionId) }, t.subscriptionId)),
    h('td', {}, t.sourceType), h('td', {}, t.workflowId, t.targetWorkflowVersionId ? h('div', { class: 'muted mono' }, t.targetWorkflowVersionId) : ''),
    h('td', {}, chip(t.state)), h('td', { class: 'mono' }, t.selector || h('span', { class: 'muted' }, 'every event'))));
  view('Subscriptions', h('div', { class: 'actions' }, h('a', { href: '#/subscriptions/new' }, 'New subscription')),
    table(['Subscription', 'Source', 'Workflow', 'State', 'Selector'], rows));
}

/** Validates the selector as the operator types (the API compiles it). */
function liveSelector(selector, output) {
  let timer;
  selector.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const text = selector.value.trim();
      if (!text) { output.textContent = 'No selector: every event of the source matches.'; output.className = 'muted'; return; }
      try {
        await api('POST', '/triggers:test', { selector: text, event: {} });
        output.textContent = 'Selector compiles.'; output.className = 'ok';
        selector.removeAttribute('aria-invalid');
      } catch (e) {
        output.textContent = e.message; output.className = 'error';
        selector.setAttribute('aria-invalid', 'true');
      }
    }, 250);
  });
}

function parseJsonField(input, name) {
  const text = input.value.trim();
  if (!text) return undefined;
  try { return JSON.parse(text); } catch (e) { throw new ApiError(0, { detail: name + ' is not JSON: ' + e.message }); }
}

async function subscriptionPage(id) {
  const existing = id === 'new' ? null : await api('GET', '/triggers/' + encodeURIComponent(id));
  const t = existing || { sourceType: 'manual', state: 'active' };
  const source = h('select', { name: 'sourceType', disabled: !!existing }, SOURCES.map((x) => h('option', { value: x, selected: t.sourceType === x }, x)));
  const workflow = h('input', { name: 'workflowId', value: t.workflowId || '', required: true });
  const version = h('input', { name: 'targetWorkflowVersionId', value: t.targetWorkflowVersionId || '' });
  const connector = h('input', { name: 'connectorInstanceId', value: t.connectorInstanceId || '', disabled: !!existing });
  const selector = h('textarea', { name: 'selector', 'aria-describedby': 'selector-check', spellcheck: 'false' }, t.selector || '');
  const check = h('p', { id: 'selector-check', 'aria-live': 'polite', class: 'muted' });
  const mapping = h('textarea', { name: 'inputMapping', spellcheck: 'false' }, t.inputMapping ? JSON.stringify(t.inputMapping, null, 2) : '');
  const schedule = h('textarea', { name: 'schedule', spellcheck: 'false', disabled: !!existing }, t.schedule ? JSON.stringify(t.schedule) : '');
  const flow = h('textarea', { name: 'flow', spellcheck: 'false', disabled: !!existing }, t.flow ? JSON.stringify(t.flow) : '');
  liveSelector(selector, check);

  const save = h('button', { type: 'submit' }, existing ? 'Save changes' : 'Create subscription');
  const form = h('form', {},
    h('div', { class: 'filters' }, field('Source', source), field('Workflow', workflow),
      field('Workflow version', version), field('Connector (webhooks)', connector)),
    field('Selector (CEL over event.*)', selector), check,
    field('Input mapping (JSON)', mapping),
    h('div', { class: 'grid' }, field('Schedule (JSON, scheduled only)', schedule), field('Flow (JSON, optional)', flow)),
    h('div', { class: 'actions' }, save));
  form.addEventListener('submit', action(save, async () => {
    const body = {
      workflowId: workflow.value.trim(), targetWorkflowVersionId: version.value.trim() || null,
      selector: selector.value.trim() || null,
    };
    const inputs = parseJsonField(mapping, 'Input mapping');
    if (inputs !== undefined) body.inputMapping = inputs;
    if (existing) {
      await api('PATCH', '/triggers/' + encodeURIComponent(id), body);
      notice('Saved.');
      return subscriptionPage(id);
    }
    body.sourceType = source.value;
    if (connector.value.trim()) body.connectorInstanceId = connector.value.trim();
    const sched = parseJsonField(schedule, 'Schedule');
    if (sched !== undefined) body.schedule = sched;
    const fl = parseJsonField(flow, 'Flow');
    if (fl !== undefined) body.flow = fl;
    if (body.selector === null) delete body.selector;
    if (body.targetWorkflowVersionId === null) delete body.targetWorkflowVersionId;
    const created = await api('POST', '/triggers', body);
    notice('Created ' + created.subscriptionId + '.');
    location.hash = '#/subscriptions/' + encodeURIComponent(created.subscriptionId);
  }));

  const dryRun = h('button', { class: 'secondary' }, 'Dry run over recent events');
  const dryOut = h('div', { 'aria-live': 'polite' });
  dryRun.addEventListener('click', action(dryRun, async () => {
    const body = { selector: selector.value.trim() || null, recent: { limit: 100 } };
    const inputs = parseJsonField(mapping, 'Input mapping');
    if (inputs !== undefined) body.inputMapping = inputs;
    const r = await api('POST', '/triggers:test', body);
    const matched = r.matched || [];
    dryOut.replaceChildren(h('p', {}, matched.length + ' of ' + r.evaluated + ' recent events would match' +
      ((r.errors || []).length ? ', ' + r.errors.length + ' errored' : '') + '.'),
    table(['Event', 'Kind', 'Inputs'], matched.map((m) => h('tr', {},
      h('td', { class: 'mono' }, h('a', { href: '#/events/' + encodeURIComponent(m.eventId) }, m.eventId)),
      h('td', { class: 'mono' }, m.kind || ''), h('td', { class: 'mono' }, JSON.stringify(m.inputs || {}))))),
    (r.errors || []).map((e) => h('p', { class: 'error mono' }, e.eventId + ': ' + (e.error || ''))));
  }));

  const parts = [form, h('h2', {}, 'Dry run'), h('div', { class: 'actions' }, dryRun), dryOut];
  if (existing) parts.unshift(subscriptionActions(existing));
  if (existing && existing.schedule) parts.push(await nextFires(id));
  view(existing ? 'Subscription ' + id : 'New subscription', ...parts);
}

function subscriptionActions(t) {
  const id = t.subscriptionId;
  const toggle = h('button', { class: 'secondary' }, t.state === 'paused' ? 'Resume' : 'Pause');
  toggle.addEventListener('click', action(toggle, async () => {
    await api('PATCH', '/triggers/' + encodeURIComponent(id), { state: t.state === 'paused' ? 'active' : 'paused' });
    await subscriptionPage(id);
  }));
  const fireInputs = h('input', { name: 'fireInputs', value: '{}', 'aria-label': 'Fire inputs (JSON)', size: 30, class: 'mono' });
  const fire = h('button', {}, 'Fire');
  fire.addEventListener('click', action(fire, async () => {
    const inputs = parseJsonField(fireInputs, 'Fire inputs') || {};
    const answer = await api('POST', '/triggers/' + encodeURIComponent(id) + ':fire', { inputs });
    notice('Fired event ' + answer.eventId + '.');
    location.hash = '#/events/' + encodeURIComponent(answer.eventId);
  }));
  return h('div', { class: 'actions' }, chip(t.state), 'version ' + t.version, toggle,
    t.sourceType === 'manual' && t.state === 'active' ? [field('Fire inputs (JSON)', fireInputs), fire] : '');
}

async function nextFires(id) {
  try {
    const preview = await api('GET', '/triggers/' + encodeURIComponent(id) + '/schedule:preview?count=5');
    const items = preview.fireTimes || preview.items || [];
    return h('section', {}, h('h2', {}, 'Next fire times'),
      h('ul', {}, items.map((f) => h('li', { class: 'mono' }, typeof f === 'string' ? f : (f.local || f.utc)))));
  } catch (e) {
    return h('p', { class: 'error' }, 'Schedule preview: ' + e.message);
  }
}

// ------------------------------------------------------------------ connectors

async function connectorsPage() {
  const page = await api('GET', '/connectors');
  const rows = page.items.map((c) => {
    const url = location.origin + BASE + c.webhookPath;
    const copy = h('button', { class: 'secondary' }, 'Copy');
    copy.addEventListener('click', action(copy, async () => { await navigator.clipboard.writeText(url); notice('Copied ' + url); }));
    const newRef = h('input', { 'aria-label': 'new secret reference for ' + c.connectorInstanceId, placeholder: 'secretsmanager:name' });
    const rotate = h('button', { class: 'secondary' }, 'Rotate');
    rotate.addEventListener('click', action(rotate, async () => {
      const ref = newRef.value.trim();
      if (!ref) return notice('Name the new secret first.', true);
      // The new secret goes first and the current one stays second, so senders still
      // signing with the old secret are accepted until the next rotation drops it.
      await api('PATCH', '/connectors/' + encodeURIComponent(c.connectorInstanceId),
        { secretRefs: [ref, (c.secretRefs || [])[0]].filter(Boolean) });
      notice('Rotated: new deliveries may be signed with either secret.');
      await connectorsPage();
    }));
    return h('tr', {}, h('td', { class: 'mono' }, c.connectorInstanceId), h('td', {}, c.scheme, c.vendor ? ' · ' + c.vendor : ''),
      h('td', { class: 'mono' }, (c.secretRefs || []).join(', ')),
      h('td', { class: 'mono' }, url, ' ', copy), h('td', {}, c.scheme === 'none' ? h('span', { class: 'muted' }, 'unsigned') : [newRef, ' ', rotate]));
  });
  const scheme = h('select', { name: 'scheme' }, ['standard-webhooks', 'github', 'none'].map((x) => h('option', { value: x }, x)));
  const secret = h('input', { name: 'secretRef', placeholder: 'secretsmanager:name' });
  const create = h('button', { type: 'submit' }, 'Create connector');
  const form = h('form', { class: 'filters' }, field('Scheme', scheme), field('Secret reference', secret), create);
  form.addEventListener('submit', action(create, async () => {
    const body = { scheme: scheme.value, secretRefs: secret.value.trim() ? [secret.value.trim()] : [] };
    const c = await api('POST', '/connectors', body);
    notice('Created ' + c.connectorInstanceId + '. Paste its webhook URL into the sender.');
    await connectorsPage();
  }));
  view('Connectors', form, table(['Connector', 'Scheme', 'Secrets', 'Webhook URL', 'Rotate secret'], rows));
}

// ------------------------------------------------------------------ flow at a glance

const OUTCOMES = [['dispatched', '#1b7a3d'], ['waiting', '#c98a00'], ['skipped', '#7b8496'], ['dead_lettered', '#b3261e']];

function outcomeOf(event) {
  if (event.status === 'dead_lettered') return 'dead_lettered';
  const statuses = (event.matches || []).map((m) => m.status);
  if (statuses.some((x) => FAILED.has(x))) return 'dead_lettered';
  if (statuses.some((x) => WAITING.has(x))) return 'waiting';
  if (statuses.some((x) => x === 'dispatched' || x === 'delivered' || x === 'batched' || x === 'debounced')) return 'dispatched';
  return 'skipped';
}

async function flowPage(params) {
  const span = params.get('span') === 'day' ? 'day' : 'hour';
  const buckets = span === 'day' ? 24 : 12;
  const width = span === 'day' ? 3600e3 : 300e3;
  const end = Math.ceil(Date.now() / width) * width;
  const start = end - buckets * width;
  const since = new Date(start).toISOString();
  const events = [];
  let cursor;
  for (let i = 0; i < 10; i++) { // at most 2,000 events drawn
    const page = await api('GET', '/events' + query({ since, limit: 200, cursor }));
    events.push(...page.items);
    cursor = page.nextCursor;
    if (!cursor) break;
  }
  const counts = Array.from({ length: buckets }, () => ({ dispatched: 0, waiting: 0, skipped: 0, dead_lettered: 0 }));
  // Fates are read per event: the newest 100 events of the span are looked up, older
  // ones count as received only.
  const looked = await Promise.all(events.slice(0, 100).map((e) => api('GET', '/events/' + encodeURIComponent(e.eventId)).catch(() => null)));
  const received = Array(buckets).fill(0);
  events.forEach((e, i) => {
    const slot = Math.floor((Date.parse(e.receivedAt) - start) / width);
    if (slot < 0 || slot >= buckets) return;
    received[slot]++;
    if (i < looked.length && looked[i]) counts[slot][outcomeOf(looked[i])]++;
  });
  const totals = {};
  for (const [name] of OUTCOMES) totals[name] = counts.reduce((a, c) => a + c[name], 0);
  const switcher = h('div', { class: 'actions' }, h('a', { href: '#/flow?span=hour', 'aria-current': span === 'hour' ? 'page' : null }, 'Last hour'),
    h('a', { href: '#/flow?span=day', 'aria-current': span === 'day' ? 'page' : null }, 'Last day'));
  view('Flow', switcher,
    h('p', {}, events.length + ' events received in the last ' + span + (cursor ? ' (first 2,000 drawn)' : '') + '; outcomes of the newest ' + looked.length + ':'),
    h('p', { class: 'legend' }, h('span', {}, h('span', { class: 'swatch received' }), 'received ' + events.length),
      OUTCOMES.map(([name]) => h('span', {}, h('span', { class: 'swatch ' + name }), name.replace('_', ' ') + ' ' + totals[name]))),
    chart(received, counts, start, width),
    table(['From', 'Received'].concat(OUTCOMES.map(([n]) => n.replace('_', ' '))), received.map((r, i) => h('tr', {},
      h('td', {}, when(start + i * width)), h('td', {}, String(r)), OUTCOMES.map(([n]) => h('td', {}, String(counts[i][n])))))));
}

/** Received as outlined bars, the looked-up outcomes stacked inside them. */
function chart(received, counts, start, width) {
  const w = 960, hgt = 200, pad = 24, n = received.length;
  const max = Math.max(1, ...received);
  const bw = (w - pad) / n;
  const svg = s('svg', { class: 'chart', viewBox: '0 0 ' + w + ' ' + (hgt + 20), role: 'img', 'aria-label': 'Events received and their outcomes per interval' });
  svg.append(s('text', { x: 0, y: 12 }, String(max)));
  received.forEach((r, i) => {
    const x = pad + i * bw + 2;
    const height = (r / max) * (hgt - 20);
    svg.append(s('rect', { x, y: hgt - height, width: bw - 4, height, fill: 'none', stroke: '#1f5fbf' }));
    let y = hgt;
    for (const [name, color] of OUTCOMES) {
      const part = (counts[i][name] / max) * (hgt - 20);
      if (!part) continue;
      y -= part;
      svg.append(s('rect', { x: x + 1, y, width: bw - 6, height: part, fill: color }, s('title', {}, name + ' ' + counts[i][name])));
    }
    if (i % Math.ceil(n / 6) === 0) {
      const label = new Date(start + i * width).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', hour12: false });
      svg.append(s('text', { x, y: hgt + 14 }, label));
    }
  });
  return svg;
}

// ------------------------------------------------------------------ routing

const ROUTES = [
  [/^#\/events\/(.+)$/, (m) => eventPage(decodeURIComponent(m[1])), 'events'],
  [/^#\/events$/, (m, p) => eventsPage(p), 'events'],
  [/^#\/dead-letters\/(.+)$/, (m) => deadLetterPage(decodeURIComponent(m[1])), 'dead-letters'],
  [/^#\/dead-letters$/, (m, p) => deadLettersPage(p), 'dead-letters'],
  [/^#\/subscriptions\/(.+)$/, (m) => subscriptionPage(decodeURIComponent(m[1])), 'subscriptions'],
  [/^#\/subscriptions$/, () => subscriptionsPage(), 'subscriptions'],
  [/^#\/connectors$/, () => connectorsPage(), 'connectors'],
  [/^#\/flow$/, (m, p) => flowPage(p), 'flow'],
];

async function route() {
  if (!session || !session.workspace) return signIn();
  document.getElementById('nav').hidden = false;
  const who = document.getElementById('who');
  const out = h('button', { class: 'secondary' }, 'Sign out');
  out.addEventListener('click', () => { sessionStorage.removeItem(SESSION_KEY); session = null; route(); });
  who.replaceChildren('workspace ', h('strong', {}, session.workspace), session.token ? '' : ' (dev shim) ', out);
  const [path, search] = (location.hash || '#/events').split('?');
  const params = new URLSearchParams(search || '');
  for (const [pattern, show, section] of ROUTES) {
    const m = path.match(pattern);
    if (!m) continue;
    for (const a of document.querySelectorAll('nav a')) {
      if (a.getAttribute('href') === '#/' + section) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    try { await show(m, params); } catch (e) { fail(e); }
    return;
  }
  location.hash = '#/events';
}

window.addEventListener('hashchange', () => { notice(''); route(); });
route();
