// The operator console in a real browser (Debian's Chromium, driven by playwright-core)
// against the deployed local stack: sign in, create a subscription with live selector
// validation, fire an event and watch it dispatched, force a dead letter through the fake
// Workflow Service and replay it from the page, dry-run the selector, look at the flow.
// Screenshots go to $CONSOLE_SHOTS. Exits non-zero on the first failed step.
import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import { createHmac, randomUUID } from 'node:crypto';
import assert from 'node:assert/strict';

const outputs = JSON.parse(readFileSync(process.env.CUSTOS_E2E_OUTPUTS, 'utf8'));
const api = outputs.LocalApiUrl;
const fake = process.env.CUSTOS_E2E_WORKFLOW_URL;
const shots = process.env.CONSOLE_SHOTS || '.local/run/console';
const workspace = 'ws-console-' + Date.now().toString(36);
const patience = { timeout: 60_000 };
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
const problems = [];
page.on('pageerror', (e) => problems.push('page error: ' + e.message));
// A failed call is a problem unless it is the selector check refusing what is typed.
page.on('response', (r) => {
  if (r.status() >= 400 && !(r.status() === 422 && r.url().endsWith('/triggers:test'))) {
    problems.push(`HTTP ${r.status()} from ${r.request().method()} ${r.url()}`);
  }
});
let step = 0;
const shot = async (name) => page.screenshot({ path: `${shots}/${String(++step).padStart(2, '0')}-${name}.png`, fullPage: true });

/** Creates a Secrets Manager secret on the emulator (it does not check signatures). */
async function secret(name, value) {
  const answer = await fetch(process.env.CUSTOS_E2E_ENDPOINT + '/', {
    method: 'POST',
    headers: {
      'x-amz-target': 'secretsmanager.CreateSecret', 'content-type': 'application/x-amz-json-1.1',
      authorization: 'AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0',
    },
    body: JSON.stringify({ Name: name, SecretString: value }),
  });
  assert.ok(answer.ok, 'CreateSecret ' + name + ': ' + answer.status);
  return 'secretsmanager:' + name;
}

/** A Standard Webhooks delivery signed with `key` (whsec_…) to `url`; its status. */
async function deliver(url, key, body) {
  const id = 'msg_' + randomUUID();
  const timestamp = Math.floor(Date.now() / 1000).toString();
  const mac = createHmac('sha256', Buffer.from(key.slice('whsec_'.length), 'base64'))
    .update(`${id}.${timestamp}.${body}`).digest('base64');
  const answer = await fetch(url, {
    method: 'POST', body,
    headers: { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': timestamp, 'webhook-signature': 'v1,' + mac },
  });
  return answer.status;
}

/** Presses Refresh on the event page until the match shows `status`. */
async function refreshUntil(status) {
  const chip = page.locator('ol.timeline .chip', { hasText: status.replace(/_/g, ' ') });
  for (let i = 0; i < 60; i++) {
    if (await chip.count()) return;
    await page.waitForTimeout(1000);
    await page.getByRole('button', { name: 'Refresh' }).click();
  }
  throw new Error('the event never showed ' + status);
}

try {
  await page.goto(api + '/console');
  await page.getByLabel('Workspace').fill(workspace);
  await page.getByRole('button', { name: 'Open workspace' }).click();
  await page.getByRole('heading', { name: 'Events' }).waitFor();
  await shot('signed-in');

  // A subscription through the form; the selector is checked while it is typed.
  await page.getByRole('link', { name: 'Subscriptions' }).click();
  await page.getByRole('link', { name: 'New subscription' }).click();
  await page.getByLabel('Workflow', { exact: true }).fill('wf-console');
  await page.getByLabel('Workflow version').fill('wv-console-1');
  const selector = page.getByLabel('Selector (CEL over event.*)');
  await selector.fill('event.data.image.startsWith(');
  await page.locator('#selector-check.error').waitFor(patience);
  assert.equal(await selector.getAttribute('aria-invalid'), 'true');
  await shot('selector-invalid');
  await selector.fill('event.data.image.startsWith("ghcr.io/")');
  await page.locator('#selector-check', { hasText: 'Selector compiles.' }).waitFor(patience);
  await page.getByLabel('Input mapping (JSON)').fill('{"image": "${{ inputs.image }}"}');
  await page.getByRole('button', { name: 'Create subscription' }).click();
  await page.getByRole('heading', { name: /^Subscription [0-9a-f]{32}$/ }).waitFor(patience);
  const subscriptionId = (await page.getByRole('heading', { level: 1 }).textContent()).split(' ')[1];
  await shot('subscription-created');
  await page.getByRole('button', { name: 'Pause' }).click();
  await page.locator('.actions .chip', { hasText: 'paused' }).waitFor(patience);
  await page.getByRole('button', { name: 'Resume' }).click();
  await page.locator('.actions .chip', { hasText: 'active' }).waitFor(patience);

  // Fire → the event page → dispatched with a run id.
  await page.getByLabel('Fire inputs (JSON)').fill('{"image": "ghcr.io/acme/app:1"}');
  await page.getByRole('button', { name: 'Fire', exact: true }).click();
  await page.getByRole('heading', { name: /^Event / }).waitFor(patience);
  await refreshUntil('dispatched');
  const run = await page.locator('ol.timeline li', { hasText: 'dispatched' }).textContent();
  assert.match(run, /run run-[0-9a-f]+/);
  await shot('event-dispatched');

  // The fake Workflow Service refuses the next StartRun of this workspace: dead letter.
  const fault = await fetch(fake + '/_fake/faults', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ status: 400, count: 1, workspace }),
  });
  assert.ok(fault.ok, 'fault injection');
  await page.goto(api + '/console#/subscriptions/' + subscriptionId);
  await page.getByLabel('Fire inputs (JSON)').fill('{"image": "ghcr.io/acme/app:2"}');
  await page.getByRole('button', { name: 'Fire', exact: true }).click();
  await page.getByRole('heading', { name: /^Event / }).waitFor(patience);
  const failedEvent = (await page.getByRole('heading', { level: 1 }).textContent()).slice('Event '.length);
  await refreshUntil('dead_lettered');
  await shot('event-dead-lettered');

  // Replay it from the dead-letter list: select, confirm in the dialog.
  await page.getByRole('link', { name: 'Dead letters' }).click();
  const row = page.locator('tr', { hasText: failedEvent });
  await row.waitFor(patience);
  assert.match(await row.textContent(), /rejected/);
  await row.getByRole('checkbox').check();
  await shot('dead-letter-selected');
  await page.getByRole('button', { name: 'Replay selected' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Replay' }).click();
  await page.locator('#notice', { hasText: '1 replayed.' }).waitFor(patience);
  await shot('dead-letter-replayed');
  await page.goto(api + '/console#/events/' + failedEvent);
  await refreshUntil('dispatched');
  await shot('replayed-event-dispatched');

  // A selector dry run over the archive: both fired events match, with their inputs.
  await page.goto(api + '/console#/subscriptions/' + subscriptionId);
  await page.getByRole('button', { name: 'Dry run over recent events' }).click();
  await page.getByText(/^2 of 2 recent events would match\.$/).waitFor(patience);
  assert.ok(await page.getByText('{"image":"ghcr.io/acme/app:2"}').count());
  await shot('dry-run');

  // Flow at a glance and the remaining sections render from the API.
  await page.getByRole('link', { name: 'Flow' }).click();
  await page.getByText(/^2 events received in the last hour/).waitFor(patience);
  assert.ok(await page.locator('svg.chart rect').count() >= 12);
  await shot('flow');
  await page.getByRole('link', { name: 'Events' }).click();
  await page.locator('tbody tr a').first().waitFor(patience);
  assert.equal(await page.locator('tbody tr').count(), 2);
  await shot('events');

  // A connector with a secret, its webhook URL taken from the page, then a rotation:
  // deliveries signed with the new secret and (for the grace period) the old one pass,
  // a forgery does not.
  const oldKey = 'whsec_' + Buffer.from('console-old-' + workspace).toString('base64');
  const newKey = 'whsec_' + Buffer.from('console-new-' + workspace).toString('base64');
  const oldRef = await secret('custos/' + workspace + '/old', oldKey);
  const newRef = await secret('custos/' + workspace + '/new', newKey);
  await page.getByRole('link', { name: 'Connectors' }).click();
  await page.getByLabel('Scheme').selectOption('standard-webhooks');
  await page.getByLabel('Secret reference').fill(oldRef);
  await page.getByRole('button', { name: 'Create connector' }).click();
  const connectorRow = page.locator('tbody tr', { hasText: oldRef });
  await connectorRow.waitFor(patience);
  const webhookUrl = (await connectorRow.locator('td').nth(3).textContent()).replace(/\s*Copy$/, '');
  assert.match(webhookUrl, /\/v1\/webhooks\/con_[0-9a-f]{32}$/);
  assert.equal(await deliver(webhookUrl, oldKey, '{"n":1}'), 202);
  await connectorRow.getByRole('textbox').fill(newRef);
  await connectorRow.getByRole('button', { name: 'Rotate' }).click();
  await page.locator('tbody tr', { hasText: newRef + ', ' + oldRef }).waitFor(patience);
  await shot('connector-rotated');
  assert.equal(await deliver(webhookUrl, newKey, '{"n":2}'), 202);
  assert.equal(await deliver(webhookUrl, oldKey, '{"n":3}'), 202);
  assert.equal(await deliver(webhookUrl, 'whsec_' + Buffer.from('forged').toString('base64'), '{"n":4}'), 401);

  // Keyboard: on a fresh load the skip link comes first.
  await page.goto(api + '/console#/events');
  await page.reload();
  await page.locator('tbody tr a').first().waitFor(patience);
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'main');

  assert.deepEqual(problems, []);
  console.log(`console: every step passed in workspace ${workspace}; ${step} screenshots in ${shots}`);
} catch (error) {
  await shot('failure').catch(() => {});
  console.error('console test failed:', error, problems);
  process.exitCode = 1;
} finally {
  await browser.close();
}
