'use strict';
// The dashboard in a real browser: Playwright (playwright-core) driving
// Debian's chromium against a real nexusd + nexus-gateway. Screenshots go
// to tests/artifacts/.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { withFabric, ARTIFACTS, sleep } = require('./lib');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

async function withBrowser(body) {
  const { chromium } = require('playwright-core');
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'nexus-chromium-'));
  // A persistent context is how Playwright takes an explicit, fresh --user-data-dir.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 800 },
    timeout: 30000,
  });
  try {
    const page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(10000);
    const problems = [];
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    page.on('requestfailed', (r) => problems.push(`requestfailed: ${r.url()} ${r.failure() && r.failure().errorText}`));
    await body(page, problems);
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

async function shot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `dashboard-${name}.png`) });
}

const seconds = (text) => {
  const m = /^(?:(\d+)m\s*)?(\d+)s$/.exec(text.trim());
  return m ? Number(m[1] || 0) * 60 + Number(m[2]) : NaN;
};

test('dashboard: sessions, publish form, stream, claim countdown, filter, pause, resume', { timeout: 120000 }, withFabric(async (f) => {
  await withBrowser(async (page, problems) => {
    // Some history before the page loads: shown from the welcome.
    const early = await f.connect('dash-early');
    const earlySeq = (await early.request({ action: 'publish', event_type: 'test.early', payload: { early: true } })).seq;

    await page.goto(`${f.http}/`);
    await page.waitForSelector('#status[data-state="live"]', { timeout: 15000 });
    assert.match(await page.title(), /nexus/i);
    await page.waitForSelector(`#events [data-seq="${earlySeq}"]`);
    const dashSession = await page.evaluate(() => window.nexusDashboard.sessionId);
    assert.match(dashSession, /^dashboard-[0-9a-f]+$/);
    // Everything is local: no request left the gateway's origin.
    const origins = await page.evaluate(() => performance.getEntriesByType('resource').map((r) => new URL(r.name).origin));
    for (const o of origins) assert.equal(o, new URL(f.http).origin, `resource from ${o}`);

    // A session appears, with its capabilities, status and heartbeat.
    const worker = await f.connect('dash-worker', 'name=Worker&capabilities=python,rust');
    const card = page.locator('#sessions [data-session="dash-worker"]');
    await card.waitFor({ timeout: 10000 });
    assert.match(await card.locator('[data-testid="session-capabilities"]').innerText(), /python[\s\S]*rust/);
    assert.match(await card.locator('[data-testid="session-state"]').innerText(), /available/);
    assert.match(await card.locator('[data-testid="session-heartbeat"]').innerText(), /heartbeat \d+s ago/);
    await worker.request({ action: 'status', state: 'busy', current_work: 'indexing' });
    await page.waitForFunction(() => /busy/.test(document.querySelector('#sessions [data-session="dash-worker"] [data-testid="session-state"]')?.textContent || ''));
    assert.match(await card.innerText(), /indexing/);
    await shot(page, '1-session');

    // Publish through the form; the event shows in the stream.
    await worker.request({ action: 'subscribe', topics: ['test.>'] });
    await page.fill('#publish-topic', 'test.dashboard');
    await page.fill('#publish-payload', '{"hello": "from the browser", "n": 7}');
    await page.click('#publish-send');
    const row = page.locator('#events [data-type="test.dashboard"]').first();
    await row.waitFor();
    assert.match(await row.innerText(), /from the browser/);
    assert.match(await page.locator('#publish-result').innerText(), /published as #\d+/);
    const got = await worker.waitEvent((e) => e.event_type === 'test.dashboard', 5000, 'the dashboard\'s event');
    assert.deepEqual(got.payload, { hello: 'from the browser', n: 7 });
    assert.equal(got.session_id, dashSession);
    // A bad payload is refused in the page, nothing is sent.
    await page.fill('#publish-payload', '{not json');
    await page.click('#publish-send');
    assert.match(await page.locator('#publish-result').innerText(), /not JSON/);
    assert.equal(await page.locator('#publish-payload.invalid').count(), 1);
    await shot(page, '2-published');

    // A claim with a 30 s lease: holder and a countdown that goes down.
    const claim = await worker.request({ action: 'claim', work_id: 'dash-job', ttl_ms: 30000, description: 'dashboard test job' });
    assert.equal(claim.ok, true, JSON.stringify(claim));
    const claimCard = page.locator('#claims [data-work-id="dash-job"]');
    await claimCard.waitFor();
    assert.equal(await claimCard.locator('[data-testid="claim-holder"]').innerText(), 'dash-worker');
    const cd = claimCard.locator('[data-testid="claim-countdown"]');
    await page.waitForFunction(() => /^\d+s$/.test(document.querySelector('#claims [data-work-id="dash-job"] [data-testid="claim-countdown"]')?.textContent || ''));
    const t1 = seconds(await cd.innerText());
    assert.ok(t1 >= 25 && t1 <= 30, `countdown starts near 30 s: ${t1}`);
    await shot(page, '3-claim');
    await sleep(2300);
    const t2 = seconds(await cd.innerText());
    assert.ok(t2 < t1 && t2 >= t1 - 4, `countdown decreases: ${t1} -> ${t2}`);
    // Released: it leaves the list.
    await worker.request({ action: 'release', work_id: 'dash-job', token: claim.token });
    await claimCard.waitFor({ state: 'detached' });

    // A renewal publishes no event: the lease that seemed over is asked for
    // again, and the countdown shows the new one (it read "expired" until
    // the 10 s poll).
    const short = await worker.request({ action: 'claim', work_id: 'dash-renew', ttl_ms: 2000 });
    assert.equal(short.ok, true, JSON.stringify(short));
    await page.locator('#claims [data-work-id="dash-renew"]').waitFor();
    const renewed = await worker.request({ action: 'renew', work_id: 'dash-renew', token: short.token, ttl_ms: 600000 });
    assert.equal(renewed.ok, true, JSON.stringify(renewed));
    await page.waitForFunction(() => /^\d+m/.test(document.querySelector('#claims [data-work-id="dash-renew"] [data-testid="claim-countdown"]')?.textContent || ''), null, { timeout: 7000 });
    await worker.request({ action: 'release', work_id: 'dash-renew', token: short.token });

    // Long texts and ids are cut, the side column keeps its width.
    await worker.request({ action: 'status', state: 'busy', text: 'Z'.repeat(300), current_work: 'W'.repeat(300) });
    const longId = `long-${'w'.repeat(250)}`;
    const long = await worker.request({ action: 'claim', work_id: longId, ttl_ms: 30000 });
    assert.equal(long.ok, true, JSON.stringify(long));
    await page.locator(`#claims [data-work-id="${longId}"]`).waitFor();
    await page.waitForFunction(() => document.querySelector('#sessions')?.textContent.includes('ZZZZZZZZZZ'), null, { timeout: 10000 });
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(wide <= 1280, `page width with long texts: ${wide}`);
    // (Looked at in the page: the list is redrawn every few seconds, and a
    // handle taken between two draws would name a card already replaced.)
    await page.waitForFunction((id) => {
      const el = document.querySelector(`#claims [data-work-id="${id}"] [data-testid="claim-countdown"]`);
      const r = el && el.getBoundingClientRect();
      return r && r.width > 0 && r.right <= 1280;
    }, longId, { timeout: 5000 }).catch(async () => {
      const box = await page.evaluate((id) => JSON.stringify(document.querySelector(`#claims [data-work-id="${id}"] [data-testid="claim-countdown"]`)?.getBoundingClientRect() || null), longId);
      assert.fail(`the long claim's countdown is on screen: ${box}`);
    });
    await worker.request({ action: 'release', work_id: longId, token: long.token });
    await worker.request({ action: 'status', state: 'available', text: null, current_work: null });

    // Filter with wildcards.
    await page.fill('#filter', 'work.*');
    await page.waitForFunction(() => [...document.querySelectorAll('#events [data-testid="event"]')].length > 0);
    let types = await page.$$eval('#events [data-testid="event"]', (els) => els.map((e) => e.dataset.type));
    assert.ok(types.length >= 2 && types.every((t) => /^work\.[^.]+$/.test(t)), `filtered: ${types}`);
    await page.fill('#filter', 'session.>, test.dashboard');
    types = await page.$$eval('#events [data-testid="event"]', (els) => els.map((e) => e.dataset.type));
    assert.ok(types.includes('test.dashboard') && types.every((t) => t.startsWith('session.') || t === 'test.dashboard'), `filtered: ${types}`);
    await shot(page, '4-filter');
    await page.fill('#filter', '');

    // Pause holds the list; resume shows what came meanwhile.
    await page.click('#pause');
    assert.equal(await page.getAttribute('#pause', 'aria-pressed'), 'true');
    const pausedSeq = (await worker.request({ action: 'publish', event_type: 'test.paused', payload: { p: 1 } })).seq;
    await page.waitForFunction((s) => window.nexusDashboard.seqs().includes(s), pausedSeq);
    assert.equal(await page.locator(`#events [data-seq="${pausedSeq}"]`).count(), 0, 'not shown while paused');
    assert.match(await page.locator('#pause').innerText(), /\d+ new/);
    await page.click('#pause');
    await page.locator(`#events [data-seq="${pausedSeq}"]`).waitFor();

    // Counters and chart.
    const received = Number((await page.locator('#count-received').innerText()).replace(/,/g, ''));
    assert.ok(received >= 5, `received ${received}`);
    await page.waitForFunction(() => Number(document.querySelector('#count-rate').textContent) > 0);
    await page.waitForFunction(() => {
      const c = document.querySelector('#rate-chart');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 150 && d[i] < 80) return true; // a blue bar
      return false;
    }, null, { timeout: 5000 });

    // Drop the connection; events published meanwhile arrive once each after
    // the automatic reconnect (?since=<last seq>).
    await page.evaluate(() => window.nexusDashboard.dropConnection());
    await page.waitForSelector('#status[data-state="closed"]');
    const during = [];
    for (let i = 0; i < 15; i++) during.push((await worker.request({ action: 'publish', event_type: 'test.during', payload: { i } })).seq);
    await page.waitForSelector('#status[data-state="live"]', { timeout: 20000 });
    const after = (await worker.request({ action: 'publish', event_type: 'test.after', payload: {} })).seq;
    await page.locator(`#events [data-seq="${after}"]`).waitFor();
    const seqs = await page.evaluate(() => window.nexusDashboard.seqs());
    assert.equal(new Set(seqs).size, seqs.length, 'no duplicate');
    for (const s of during) assert.ok(seqs.includes(s), `event ${s} published while disconnected was received`);
    // The dashboard subscribes to everything: from its first event on, no seq is missing.
    for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1, `no gap between ${seqs[i - 1]} and ${seqs[i]}`);
    const rows = await page.$$eval('#events [data-testid="event"]', (els) => els.map((e) => Number(e.dataset.seq)));
    assert.equal(new Set(rows).size, rows.length, 'no duplicate row');
    await shot(page, '5-resumed');

    // The layout fits 1280x800 without horizontal scrolling.
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 1280, `page width ${width}`);
    await shot(page, '6-final');
    const real = problems.filter((p) => !/dropped by test|ws\/session/.test(p));
    assert.deepEqual(real, [], 'no page errors');
  });
}));

// More sessions and claims than one list page (1000): each panel says it
// shows the first 1000 of how many, and the counters show them all (they
// showed 1000, with no hint that more existed).
test('dashboard: lists longer than a page say so, and the counters count them all', { timeout: 120000 }, withFabric(async (f) => {
  const N = 1003;
  const claimOne = async (i) => {
    const res = await fetch(`${f.http}/work/claim`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, signal: AbortSignal.timeout(10000),
      body: JSON.stringify({ session_id: `bulk-${String(i).padStart(4, '0')}`, work_id: `bulk-job-${String(i).padStart(4, '0')}`, ttl_ms: 600000 }),
    });
    assert.equal(res.status, 200, await res.text());
  };
  for (let i = 0; i < N; i += 25) {
    await Promise.all(Array.from({ length: Math.min(25, N - i) }, (_, k) => claimOne(i + k)));
  }
  await withBrowser(async (page, problems) => {
    await page.goto(`${f.http}/`);
    await page.waitForSelector('#status[data-state="live"]', { timeout: 15000 });
    const note = (id) => page.locator(`[data-testid="${id}"]`);
    await page.waitForFunction(() => /of 1,003$/.test(document.querySelector('[data-testid="claims-note"]').textContent));
    assert.equal(await note('claims-note').innerText(), 'showing the first 1,000 of 1,003');
    assert.equal(await page.locator('#claims [data-testid="claim"]').count(), 1000);
    assert.equal(await page.locator('#count-claims').innerText(), '1,003');
    // The sessions: the 1003 that claimed, the dashboard's own and any other
    // the gateway hosts; the note and the counter agree on how many.
    await page.waitForFunction(() => /^showing the first 1,000 of /.test(document.querySelector('[data-testid="sessions-note"]').textContent));
    const all = Number((await note('sessions-note').innerText()).replace(/^.* of /, '').replace(/,/g, ''));
    assert.ok(all >= N + 1, `sessions in all: ${all}`);
    assert.equal(await page.locator('#sessions [data-testid="session"]').count(), 1000);
    assert.equal(Number((await page.locator('#count-sessions').innerText()).replace(/,/g, '')), all);
    await shot(page, '7-long-lists');
    // One more claim: the note and the counter follow.
    await claimOne(N);
    await page.waitForFunction(() => /of 1,004$/.test(document.querySelector('[data-testid="claims-note"]').textContent));
    await page.waitForFunction(() => document.querySelector('#count-claims').textContent === '1,004');
    assert.deepEqual(problems, [], 'no page errors');
  });
}));

// With a tokens file a token may act only as the sessions it lists: the
// dashboard connects as ?session= with ?token=, and goes live.
const DASH_TOKENS = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nexus-dash-tokens-')), 'tokens');
fs.writeFileSync(DASH_TOKENS, 'tok-dash dash-ops\ntok-probe *\n');

test('dashboard with a tokens file: ?token= and ?session= connect it', { timeout: 60000 }, withFabric({ gatewayArgs: ['--tokens-file', DASH_TOKENS], healthToken: 'tok-probe' }, async (f) => {
  await withBrowser(async (page) => {
    await page.goto(`${f.http}/?token=tok-dash&session=dash-ops`);
    await page.waitForSelector('#status[data-state="live"]', { timeout: 15000 });
    assert.equal(await page.evaluate(() => window.nexusDashboard.sessionId), 'dash-ops');
  });
}));

// A token whose sub= is not '>' may not subscribe to everything: the
// dashboard subscribes to what the welcome's may_read says it may read
// (it asked for '>' and showed "subscribe failed" with an empty stream).
const CI_TOKENS = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nexus-dash-tokens-')), 'tokens');
fs.writeFileSync(CI_TOKENS, 'tok-ci name=ci sessions=ci-1 pub=build.>,work.> sub=build.>\ntok-probe *\n');

test('dashboard with a token limited by sub=: it shows what the token may read, no error', { timeout: 60000 }, withFabric({ gatewayArgs: ['--tokens-file', CI_TOKENS], healthToken: 'tok-probe' }, async (f) => {
  const pub = await f.connect('pub-1', 'token=tok-probe');
  const early = (await pub.request({ action: 'publish', event_type: 'build.early', payload: {} })).seq;
  await pub.request({ action: 'publish', event_type: 'other.early', payload: {} });
  const ci = await f.connect('ci-1', 'token=tok-ci');
  assert.deepEqual(ci.welcome.may_read, ['build.>']);
  assert.deepEqual(pub.welcome.may_read, ['>']);
  await withBrowser(async (page, problems) => {
    await page.goto(`${f.http}/?token=tok-ci&session=ci-1`);
    await page.waitForSelector('#status[data-state="live"]', { timeout: 15000 });
    await page.locator(`#events [data-seq="${early}"]`).waitFor();
    const seqs = [];
    for (const t of ['build.started', 'other.thing', 'build.done', 'deploy.x']) {
      seqs.push([t, (await pub.request({ action: 'publish', event_type: t, payload: { t } })).seq]);
    }
    const last = seqs[2][1];
    await page.locator(`#events [data-seq="${last}"]`).waitFor();
    // One more after the others: once it is shown, whatever came before it has come.
    const fence = (await pub.request({ action: 'publish', event_type: 'build.fence', payload: {} })).seq;
    await page.locator(`#events [data-seq="${fence}"]`).waitFor();
    const types = await page.$$eval('#events [data-testid="event"]', (els) => els.map((e) => e.dataset.type));
    assert.ok(types.includes('build.started') && types.includes('build.done'), `shown: ${types}`);
    assert.ok(types.every((t) => t.startsWith('build.')), `only build.*: ${types}`);
    const status = await page.locator('#status').innerText();
    assert.doesNotMatch(status, /fail|error/i);
    assert.equal(await page.getAttribute('#status', 'data-state'), 'live');
    assert.deepEqual(problems, [], 'no page errors');
  });
}));
