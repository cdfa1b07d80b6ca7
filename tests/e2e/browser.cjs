// The web-app scenario: the web app bundled with Argilla 1.5.1, in headless Chromium, through the gateway.
//
// Run by run.sh with E2E_FIXTURE (the run's URLs and users), E2E_NODE_MODULES (where
// playwright-core is installed), E2E_CHROMIUM, E2E_ARTIFACTS_DIR (screenshots), E2E_RESULT
// (where the pass/fail counts go), and for single sign-on E2E_SSO_GATEWAY_URL (a gateway with
// [oidc] on and password login off, in front of the same upstream) and E2E_IDP_URL (the OpenID
// Provider, tests/oidc/provider.mjs). Every step is counted; after a failed step the steps that
// depend on it are counted as failed too, never skipped.
'use strict';

const fs = require('fs');
const path = require('path');
const { chromium } = require(path.join(process.env.E2E_NODE_MODULES, 'playwright-core'));

const fx = JSON.parse(fs.readFileSync(process.env.E2E_FIXTURE, 'utf8'));
const GW = fx.gateway_url;
const UP = fx.upstream_url;
const alice = fx.users.alice;
const ARTIFACTS = process.env.E2E_ARTIFACTS_DIR;
const STEP_TIMEOUT_MS = 20000;

const DATASET = 's4-alice';
const WORKSPACE = 'team-a';
const SSO = process.env.E2E_SSO_GATEWAY_URL;
const IDP = process.env.E2E_IDP_URL;
// alice's account at the provider: tests/oidc/provider.mjs (e-mail alice@example.com, verified,
// the same as alice's in users.yml; password `<username>-idp-pw`).
const IDP_PASSWORD = 'alice-idp-pw';
const SSO_DATASET = 's4-sso';
const SSO_WORKSPACE = 'team-b';
const results = [];

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

async function api(base, method, urlPath, { key, workspace, body } = {}) {
  const headers = { 'X-Argilla-Api-Key': key };
  if (workspace) headers['X-Argilla-Workspace'] = workspace;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(base + urlPath, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
  });
  const text = await response.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch (_) {
    /* not JSON */
  }
  return { status: response.status, json, text };
}

// Seeds a text-classification dataset through the gateway, as `user`, in `workspace`.
async function seed(user, name, workspace, n) {
  const records = [];
  for (let i = 0; i < n; i++) {
    records.push({
      id: i,
      inputs: { text: `${name} review ${i}: the product was ${i % 2 ? 'great' : 'awful'}` },
      prediction: {
        agent: 'e2e-seed',
        labels: [
          { class: 'positive', score: 0.6 },
          { class: 'negative', score: 0.4 },
        ],
      },
    });
  }
  const r = await api(GW, 'POST', `/api/datasets/${name}/TextClassification:bulk`, {
    key: fx.users[user].api_key,
    workspace,
    body: { records, tags: {}, metadata: {} },
  });
  assert(r.status === 200, `seeding ${name} as ${user}: HTTP ${r.status} ${r.text}`);
  assert(r.json.processed === n && r.json.failed === 0, `seeding ${name}: ${r.text}`);
}

async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`PASSED browser: ${name} (${Date.now() - started} ms)`);
    return true;
  } catch (error) {
    results.push({ name, ok: false, error: String((error && error.stack) || error) });
    console.log(`FAILED browser: ${name}\n  ${String((error && error.stack) || error).split('\n').join('\n  ')}`);
    return false;
  }
}

function failDependents(names, reason) {
  for (const name of names) {
    results.push({ name, ok: false, error: reason });
    console.log(`FAILED browser: ${name}\n  not run: ${reason}`);
  }
}

async function main() {
  let browser;
  const dialogs = [];
  try {
    const seeded = await step('seed datasets through the gateway (alice, bob, admin)', async () => {
      await seed('alice', DATASET, WORKSPACE, 6);
      await seed('alice', SSO_DATASET, SSO_WORKSPACE, 4);
      await seed('bob', 's4-bob', 'bob', 2);
      await seed('admin', 's4-secret', fx.other_team, 2);
    });
    const later = [
      'wrong password shows the app error, no browser dialog',
      'login and the dataset list shows only the user datasets',
      'open a dataset',
      'annotate one record; upstream stores annotation agent = username',
      'log out',
      'second user (workspaces: []) sees only his own datasets',
    ];
    const ssoSteps = [
      'SSO: opening the app signed out shows the provider login form',
      'SSO: the provider password signs in; the dataset list shows only the user datasets',
      'SSO: annotate one record; upstream stores annotation agent = username',
      'SSO: /oauth2/sign_out ends the session; its token is refused',
      'SSO: opening the app again asks for the provider password again',
    ];
    if (!seeded) {
      failDependents([...later, ...ssoSteps], 'seeding failed');
      return;
    }

    // Playwright launches Chromium with a fresh temporary profile (its --user-data-dir) each time.
    browser = await chromium.launch({
      executablePath: process.env.E2E_CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
      timeout: 60000,
    });
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.on('dialog', async (dialog) => {
      dialogs.push(`${dialog.type()}: ${dialog.message()}`);
      await dialog.dismiss().catch(() => {});
    });
    const apiLog = [];
    page.on('response', (r) => {
      if (r.url().includes('/api/')) apiLog.push(`${r.status()} ${r.request().method()} ${r.url()}`);
    });

    await step(later[0], async () => {
      await page.goto(`${GW}/login`);
      await page.fill('input[type=text]', alice.username);
      await page.fill('input[type=password]', `${alice.password}-wrong`);
      const [response] = await Promise.all([
        page.waitForResponse((r) => r.url().endsWith('/api/security/token')),
        page.click('button[type=submit]'),
      ]);
      assert(response.status() === 401, `login with a wrong password answered ${response.status()}`);
      const challenge = response.headers()['www-authenticate'];
      assert(!challenge, `the 401 carries WWW-Authenticate: ${challenge} (browsers show a dialog)`);
      const error = page.locator('.form__error');
      await error.waitFor();
      const text = (await error.innerText()).trim();
      assert(/wrong username or password/i.test(text), `unexpected login error text: ${text}`);
      assert(new URL(page.url()).pathname === '/login', `left the login page: ${page.url()}`);
      assert(dialogs.length === 0, `browser dialogs appeared: ${dialogs.join('; ')}`);
    });

    const listed = await step(later[1], async () => {
      await page.goto(`${GW}/login`);
      await page.fill('input[type=text]', alice.username);
      await page.fill('input[type=password]', alice.password);
      const [listResponse] = await Promise.all([
        page.waitForResponse((r) => new URL(r.url()).pathname === '/api/datasets/'),
        page.click('button[type=submit]'),
      ]);
      assert(listResponse.status() === 200, `GET /api/datasets/ answered ${listResponse.status()}`);
      await page.waitForURL('**/datasets');
      await page.locator(`a[href="/datasets/${WORKSPACE}/${DATASET}"]`).waitFor();
      const links = await page
        .locator('.table-info__body a[href^="/datasets/"]')
        .evaluateAll((as) => as.map((a) => a.getAttribute('href')));
      const shown = links.map((href) => href.split('/').slice(2, 4));
      const allowed = new Set([...alice.workspaces, alice.username]);
      for (const [workspace, name] of shown) {
        assert(allowed.has(workspace), `list shows ${name} of workspace ${workspace}, not alice's`);
      }
      const names = shown.map(([, name]) => name);
      assert(names.includes(DATASET), `list lacks ${DATASET}: ${names}`);
      for (const hidden of ['s4-bob', 's4-secret']) {
        assert(!names.includes(hidden), `list shows ${hidden}: ${names}`);
      }
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: path.join(ARTIFACTS, 'dataset-list.png'), fullPage: true });
      assert(dialogs.length === 0, `browser dialogs appeared: ${dialogs.join('; ')}`);
    });
    if (!listed) failDependents(later.slice(2, 5), 'login or dataset list failed');

    let record;
    const opened = listed && await step(later[2], async () => {
      await page.click(`a[href="/datasets/${WORKSPACE}/${DATASET}"]`);
      await page.waitForURL(`**/datasets/${WORKSPACE}/${DATASET}**`);
      record = page.locator('.record').first();
      await record.waitFor();
      const text = await record.locator('.record__content').first().innerText();
      assert(text.includes(`${DATASET} review`), `unexpected record text: ${text}`);
    });
    if (listed && !opened) failDependents(later.slice(3, 5), 'the dataset did not open');

    if (opened) await step(later[3], async () => {
      const text = (await record.locator('.record__content').first().innerText()).trim();
      const [bulk] = await Promise.all([
        page.waitForResponse((r) => r.url().includes(`/api/datasets/${DATASET}/TextClassification:bulk`)),
        record.locator('.label-button', { hasText: 'negative' }).click(),
      ]);
      assert(bulk.status() === 200, `annotation :bulk answered ${bulk.status()}: ${await bulk.text()}`);
      const sent = JSON.parse(bulk.request().postData());
      assert(sent.records.length === 1, `the app sent ${sent.records.length} records`);
      const id = sent.records[0].id;
      // Ask the upstream directly, with the service key, what it stored.
      let stored = null;
      const deadline = Date.now() + 10000;
      while (Date.now() < deadline) {
        const r = await api(UP, 'POST', `/api/datasets/${DATASET}/TextClassification:search?workspace=${WORKSPACE}&limit=50`, {
          key: fx.upstream_api_key,
          body: { query: { status: ['Validated'] } },
        });
        assert(r.status === 200, `upstream search answered ${r.status}: ${r.text}`);
        if (r.json.records.length > 0) {
          stored = r.json.records;
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      assert(stored, 'the upstream has no validated record');
      assert(stored.length === 1, `the upstream has ${stored.length} validated records`);
      const [annotated] = stored;
      assert(annotated.id === id, `validated record ${annotated.id}, the app annotated ${id}`);
      const sentText = sent.records[0].inputs.text;
      assert(text.includes(sentText), `the app annotated "${sentText}", the first record shows "${text}"`);
      assert(annotated.inputs?.text === sentText, `validated a different record: ${JSON.stringify(annotated)}`);
      assert(annotated.annotation?.agent === alice.username, `annotation agent is ${annotated.annotation?.agent}, not ${alice.username}`);
      assert(
        annotated.annotation.labels.map((l) => l.class).join() === 'negative',
        `stored labels ${JSON.stringify(annotated.annotation.labels)}`,
      );
    });

    if (opened) await step(later[4], async () => {
      await page.click('.user__button');
      await page.locator('.user__content a', { hasText: 'Log out' }).click();
      await page.waitForURL('**/login**');
      await page.goto(`${GW}/datasets`);
      await page.waitForURL('**/login**');
      const token = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('auth._token.') && localStorage[k] && localStorage[k] !== 'false'));
      assert(token.length === 0, `a token is still stored after logout: ${token}`);
    });

    await step(later[5], async () => {
      const bob = fx.users.bob;
      await context.clearCookies();
      await page.goto(`${GW}/login`);
      await page.evaluate(() => localStorage.clear());
      await page.goto(`${GW}/login`);
      await page.fill('input[type=text]', bob.username);
      await page.fill('input[type=password]', bob.password);
      await page.click('button[type=submit]');
      await page.waitForURL('**/datasets');
      await page.locator('a[href="/datasets/bob/s4-bob"]').waitFor();
      const links = await page
        .locator('.table-info__body a[href^="/datasets/"]')
        .evaluateAll((as) => as.map((a) => a.getAttribute('href')));
      const shown = links.map((href) => href.split('/').slice(2, 4));
      for (const [workspace, name] of shown) {
        assert(workspace === 'bob', `bob's list shows ${name} of workspace ${workspace}`);
      }
      await page.click('.user__button');
      await page.locator('.user__content a', { hasText: 'Log out' }).click();
      await page.waitForURL('**/login**');
    });

    await sso(browser, ssoSteps, apiLog);

    if (results.some((r) => !r.ok)) console.log(`API calls seen by the browser:\n  ${apiLog.join('\n  ')}`);
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
}

// The dataset links the app's list shows, as [workspace, name].
async function listedDatasets(page) {
  const links = await page
    .locator('.table-info__body a[href^="/datasets/"]')
    .evaluateAll((as) => as.map((a) => a.getAttribute('href')));
  return links.map((href) => href.split('/').slice(2, 4));
}

// Opens the app's root. Signed out (no token in the app's cookie), a page load goes from the
// gateway straight to the provider (password_login = false), before the app's own routing could
// show its password form. Then waits until `page` shows the provider's own login form
// (tests/oidc/provider.mjs).
async function openAppToProviderForm(page) {
  await page.goto(`${SSO}/`);
  await page.waitForURL((url) => url.href.startsWith(`${IDP}/interaction/`));
  await page.locator('input[name=password]').waitFor();
  assert((await page.title()) === 'Test IdP sign in', `not the provider's login page: ${await page.title()}`);
}

// Single sign-on with the unchanged web app, in a browser of its own (fresh cookies and storage).
async function sso(browser, names, apiLog) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const dialogs = [];
  page.on('dialog', async (dialog) => {
    dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    await dialog.dismiss().catch(() => {});
  });
  page.on('response', (r) => {
    if (r.url().includes('/api/')) apiLog.push(`${r.status()} ${r.request().method()} ${r.url()}`);
  });
  try {
    const asked = await step(names[0], async () => {
      await openAppToProviderForm(page);
    });
    if (!asked) return failDependents(names.slice(1), 'the provider login form was not shown');

    let token;
    const listed = await step(names[1], async () => {
      await page.fill('input[name=username]', alice.username);
      await page.fill('input[name=password]', IDP_PASSWORD);
      const [listResponse] = await Promise.all([
        page.waitForResponse((r) => r.url().startsWith(SSO) && new URL(r.url()).pathname === '/api/datasets/'),
        page.click('button'),
      ]);
      assert(listResponse.status() === 200, `GET /api/datasets/ answered ${listResponse.status()}`);
      await page.waitForURL(`${SSO}/datasets`);
      await page.locator(`a[href="/datasets/${SSO_WORKSPACE}/${SSO_DATASET}"]`).waitFor();
      const me = await page.evaluate(async () => {
        const r = await fetch('/api/me', { headers: { Authorization: localStorage['auth._token.authProvider'] } });
        return { status: r.status, body: await r.json() };
      });
      assert(me.status === 200 && me.body.username === alice.username, `/api/me: ${JSON.stringify(me)}`);
      token = await page.evaluate(() => localStorage['auth._token.authProvider']);
      assert(/^Bearer ./.test(token || ''), `the app holds no token: ${token}`);
      const shown = await listedDatasets(page);
      const allowed = new Set([...alice.workspaces, alice.username]);
      for (const [workspace, name] of shown) {
        assert(allowed.has(workspace), `list shows ${name} of workspace ${workspace}, not alice's`);
      }
      const names_ = shown.map(([, name]) => name);
      for (const wanted of [DATASET, SSO_DATASET]) assert(names_.includes(wanted), `list lacks ${wanted}: ${names_}`);
      for (const hidden of ['s4-bob', 's4-secret']) assert(!names_.includes(hidden), `list shows ${hidden}: ${names_}`);
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: path.join(ARTIFACTS, 'dataset-list-sso.png'), fullPage: true });
      assert(dialogs.length === 0, `browser dialogs appeared: ${dialogs.join('; ')}`);
    });
    if (!listed) return failDependents(names.slice(2), 'the SSO login or its dataset list failed');

    await step(names[2], async () => {
      await page.click(`a[href="/datasets/${SSO_WORKSPACE}/${SSO_DATASET}"]`);
      await page.waitForURL(`**/datasets/${SSO_WORKSPACE}/${SSO_DATASET}**`);
      const record = page.locator('.record').first();
      await record.waitFor();
      const text = (await record.locator('.record__content').first().innerText()).trim();
      assert(text.includes(`${SSO_DATASET} review`), `unexpected record text: ${text}`);
      const [bulk] = await Promise.all([
        page.waitForResponse((r) => r.url().includes(`/api/datasets/${SSO_DATASET}/TextClassification:bulk`)),
        record.locator('.label-button', { hasText: 'positive' }).click(),
      ]);
      assert(bulk.status() === 200, `annotation :bulk answered ${bulk.status()}: ${await bulk.text()}`);
      const sent = JSON.parse(bulk.request().postData());
      assert(sent.records.length === 1, `the app sent ${sent.records.length} records`);
      const { id } = sent.records[0];
      assert(text.includes(sent.records[0].inputs.text), `the app annotated "${sent.records[0].inputs.text}", the first record shows "${text}"`);
      // Ask the upstream directly, with the service key, what it stored.
      let stored = [];
      const deadline = Date.now() + 10000;
      while (stored.length === 0 && Date.now() < deadline) {
        const r = await api(UP, 'POST', `/api/datasets/${SSO_DATASET}/TextClassification:search?workspace=${SSO_WORKSPACE}&limit=50`, {
          key: fx.upstream_api_key,
          body: { query: { status: ['Validated'] } },
        });
        assert(r.status === 200, `upstream search answered ${r.status}: ${r.text}`);
        stored = r.json.records;
        if (stored.length === 0) await new Promise((resolve) => setTimeout(resolve, 200));
      }
      assert(stored.length === 1, `the upstream has ${stored.length} validated records`);
      const [annotated] = stored;
      assert(annotated.id === id, `validated record ${annotated.id}, the app annotated ${id}`);
      assert(annotated.annotation?.agent === alice.username, `annotation agent is ${annotated.annotation?.agent}, not ${alice.username}`);
      assert(
        annotated.annotation.labels.map((l) => l.class).join() === 'positive',
        `stored labels ${JSON.stringify(annotated.annotation.labels)}`,
      );
    });

    const signedOut = await step(names[3], async () => {
      await page.goto(`${SSO}/oauth2/sign_out`);
      // The gateway sends the browser to the provider's end_session_endpoint, whose page asks
      // for confirmation (oidc-provider's own page; no id_token_hint is sent).
      await page.waitForURL((url) => url.origin === IDP && url.pathname === '/session/end');
      await Promise.all([
        page.waitForURL((url) => url.origin === IDP && url.pathname === '/session/end/success'),
        page.locator('button[name=logout][value=yes]').click(),
      ]);
      const me = await fetch(`${SSO}/api/me`, {
        headers: { Authorization: token },
        signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
      });
      assert(me.status === 401, `the signed-out token gets ${me.status} at /api/me`);
      const cookie = (await context.cookies(SSO)).find((c) => c.name === 'auth._token.authProvider');
      assert(!cookie || cookie.value === 'false', `the app's token cookie is still ${cookie && cookie.value}`);
    });
    if (!signedOut) return failDependents(names.slice(4), 'sign-out failed');

    await step(names[4], async () => {
      await openAppToProviderForm(page);
      // Signing in again works (the form is the provider's, not a stale session's redirect).
      await page.fill('input[name=username]', alice.username);
      await page.fill('input[name=password]', IDP_PASSWORD);
      await page.click('button');
      await page.waitForURL(`${SSO}/datasets`);
      await page.locator(`a[href="/datasets/${SSO_WORKSPACE}/${SSO_DATASET}"]`).waitFor();
      assert(dialogs.length === 0, `browser dialogs appeared: ${dialogs.join('; ')}`);
    });
  } finally {
    await context.close().catch(() => {});
  }
}

main()
  .catch((error) => {
    results.push({ name: 'browser scenario crashed', ok: false, error: String((error && error.stack) || error) });
    console.log(`FAILED browser: crashed\n  ${String((error && error.stack) || error)}`);
  })
  .finally(() => {
    const passed = results.filter((r) => r.ok).length;
    const failed = results.length - passed;
    fs.writeFileSync(process.env.E2E_RESULT, JSON.stringify({ passed, failed, results }, null, 2));
    console.log(`browser: ${passed} passed, ${failed} failed`);
    process.exitCode = failed === 0 && passed > 0 ? 0 : 1;
  });
