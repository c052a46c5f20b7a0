// The broker killed (kill -9) and started again on its store, under a
// running gateway: the sessions the gateway hosts come back stale, owned by
// no connection. The gateway keeps the secret of every session it
// registered, so it acts for them again as soon as it reconnects, and their
// claims are kept: a WebSocket worker and an HTTP worker renew and complete
// the work they held. Before, every such call was refused ("belongs to
// another connection") until the broker timed the session out and released
// its claims (holder_gone).
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { withFabric, waitFor, sleep, killAndRestartBroker, stopBrokerSeenDown } = require('./lib');

async function post(f, path, body) {
  const r = await fetch(`${f.http}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(20000),
  });
  return { status: r.status, body: await r.json() };
}

// Retries while the gateway has no broker yet (unavailable, timeout); any
// other answer is the one that counts.
async function untilAnswered(what, call) {
  let last;
  await waitFor(async () => {
    last = await call();
    const code = last.error && last.error.code;
    return code !== 'unavailable' && code !== 'timeout';
  }, { timeout: 20000, interval: 250, what });
  return last;
}

test('broker kill -9 and restart: the gateway acts for its WebSocket and HTTP sessions at once, claims kept', withFabric(async (f) => {
  const ws = await f.connect('restart-ws');
  const c = await ws.request({ action: 'claim', work_id: 'restart-ws-job', ttl_ms: 120000 });
  assert.strictEqual(c.ok, true, JSON.stringify(c));
  const h = await post(f, '/work/claim', { session_id: 'restart-http', work_id: 'restart-http-job', ttl_ms: 600000 });
  assert.strictEqual(h.status, 200, JSON.stringify(h));

  await killAndRestartBroker(f);

  // WebSocket: renew and complete with the token of the claim.
  const renewed = await untilAnswered('the renew to be answered', () =>
    ws.request({ action: 'renew', work_id: 'restart-ws-job', token: c.token, ttl_ms: 60000 }, 20000));
  assert.strictEqual(renewed.ok, true, `renew after the restart: ${JSON.stringify(renewed)}`);
  const done = await ws.request({ action: 'complete', work_id: 'restart-ws-job', token: c.token, result: 'ok' });
  assert.strictEqual(done.ok, true, `complete after the restart: ${JSON.stringify(done)}`);

  // HTTP: complete with the token, no secret in the body.
  const hc = await untilAnswered('the HTTP complete to be answered', async () => {
    const r = await post(f, '/work/complete', { session_id: 'restart-http', work_id: 'restart-http-job', token: h.body.token });
    return r.status === 200 ? r.body : r.body;
  });
  assert.strictEqual(hc.ok, true, `HTTP complete after the restart: ${JSON.stringify(hc)}`);

  // Both items completed by their holders: nothing was released behind them.
  for (const id of ['restart-ws-job', 'restart-http-job']) {
    const r = await ws.request({ action: 'claims', state: 'completed' });
    assert.ok(r.ok && r.claims.some((w) => w.work_id === id && w.state === 'completed'),
      `${id} is completed: ${JSON.stringify(r)}`);
  }
  const released = await ws.request({ action: 'history', topics: ['work.released'], limit: 100 });
  assert.ok(released.ok, JSON.stringify(released));
  assert.deepStrictEqual((released.events || []).filter((e) => /restart-/.test(JSON.stringify(e))), [],
    'no claim of theirs was released');
}));

test('HTTP work call while the broker is down: 503 unavailable, not 500 internal', withFabric(async (f) => {
  await f.broker.stop();
  const r = await post(f, '/work/claim', { session_id: 'down-http', work_id: 'down-job' });
  assert.strictEqual(r.status, 503, JSON.stringify(r));
  assert.strictEqual(r.body.error.code, 'unavailable', JSON.stringify(r));
}));

// Requests while the broker is down are answered at once (503), not each
// after broker_timeout in the worker's queue behind the others: with a
// broker_timeout of 30 s, six at once took 30 s to 3 min (some got no
// answer at all, lws closing them first).
test('broker down: six requests at once are all answered 503 at once, /health too', withFabric({ gatewayArgs: ['--broker-timeout', '30s', '--heartbeat', '1s'] }, async (f) => {
  const seen = await stopBrokerSeenDown(f, 'down-watch');
  assert.ok(seen < 10000, `the gateway saw the broker go in ${seen} ms`);
  // Past a few of the gateway's heartbeats: none of them may hold the
  // worker for broker_timeout either.
  await sleep(2500);
  const started = Date.now();
  const answers = await Promise.all([
    ...[1, 2, 3].map(() => fetch(`${f.http}/health`, { signal: AbortSignal.timeout(60000) })
      .then(async (r) => ({ status: r.status, body: await r.json() }))),
    ...[1, 2, 3].map((i) => post(f, '/work/claim', { session_id: `down-${i}`, work_id: `down-job-${i}` })),
  ]);
  const took = Date.now() - started;
  for (const a of answers) assert.strictEqual(a.status, 503, JSON.stringify(a));
  for (const a of answers.slice(3)) assert.strictEqual(a.body.error.code, 'unavailable', JSON.stringify(a));
  assert.ok(took < 15000, `answered in ${took} ms, not after broker_timeout (30 s) each`);
}));

test('a WebSocket session opened while the broker is down is registered with its name and capabilities once it is back', withFabric({ gatewayArgs: ['--heartbeat', '300ms'] }, async (f) => {
  await f.broker.stop();
  await waitFor(async () => (await fetch(`${f.http}/health`, { signal: AbortSignal.timeout(20000) })).status === 503,
    { timeout: 30000, interval: 200, what: '/health to say degraded' });
  await f.connect('late-open', 'name=Late%20one&capabilities=py,go');
  await killAndRestartBroker(f);
  let s;
  await waitFor(async () => {
    const r = await fetch(`${f.http}/sessions/late-open`, { signal: AbortSignal.timeout(20000) });
    if (r.status !== 200) return false;
    s = await r.json();
    return s.status === 'active';
  }, { timeout: 20000, interval: 200, what: 'the session registered' });
  assert.equal(s.name, 'Late one', JSON.stringify(s));
  assert.deepEqual(s.capabilities, ['py', 'go'], JSON.stringify(s));
}));

// A short outage (kill -9, started again 0.3 s later) under clients that
// POST every 0.1 s: some fail (503, the one in flight 504), and the log
// says so at once, once each way. Before, the link was looked at only when
// a heartbeat was due (5 s): the broker was back by then and the log said
// nothing. (An outage in which no request happens to fail has nothing to
// log: it is tried again, at most three times.)
test('a short broker outage under load: the log says it lost the broker and that it answers again, once each, at once', { timeout: 120000 }, withFabric(async (f) => {
  const LOST = /lost the broker at tcp:\/\/127\.0\.0\.1:\d+: requests fail \(503/g;
  const BACK = /the broker at tcp:\/\/127\.0\.0\.1:\d+ answers again/g;
  const count = (re) => (f.gateway.output.match(re) || []).length;
  const statuses = [];
  let firstFailure = null;
  let running = true;
  const poster = async (n) => {
    for (let i = 0; running; i++) {
      const t = Date.now();
      const r = await fetch(`${f.http}/events`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, signal: AbortSignal.timeout(20000),
        body: JSON.stringify({ event_type: 'outage.tick', payload: { n, i } }),
      }).catch(() => null);
      const status = r ? r.status : 0;
      if (r) await r.text();
      statuses.push(status);
      if (status !== 201 && firstFailure === null) firstFailure = Date.now();
      await sleep(Math.max(0, t + 100 - Date.now()));
    }
  };
  const posters = [poster(1), poster(2), poster(3)];
  try {
    await sleep(500);
    assert.strictEqual(count(LOST), 0, 'no outage yet');
    for (let attempt = 1; firstFailure === null; attempt++) {
      const [lost0, back0] = [count(LOST), count(BACK)];
      await killAndRestartBroker(f, { downMs: 300 });
      // Failed requests come within broker_timeout (5 s) of the kill.
      await waitFor(() => firstFailure !== null, { timeout: 7000, what: 'a request failing' }).catch(() => {});
      if (firstFailure === null) {
        assert.strictEqual(count(LOST) - lost0, count(BACK) - back0, 'no request failed: the log is balanced');
        assert.ok(attempt < 3, `no request failed in ${attempt} outages: ${statuses}`);
        continue;
      }
      // Said within a second or so of the first failure, not at the next heartbeat.
      await waitFor(() => count(LOST) > lost0, { timeout: 1500, what: 'the gateway to log the lost broker' });
      await waitFor(() => statuses.length > 3 && statuses.slice(-3).every((x) => x === 201),
        { timeout: 15000, what: 'POST /events to succeed again' });
      await waitFor(() => count(BACK) > back0, { timeout: 1500, what: 'the gateway to log the broker back' });
      await sleep(1000);
      assert.strictEqual(count(LOST) - lost0, 1, `one "lost" line for one outage:\n${f.gateway.output}`);
      assert.strictEqual(count(BACK) - back0, 1, `one "answers again" line:\n${f.gateway.output}`);
    }
  } finally {
    running = false;
    await Promise.all(posters);
  }
  const out = f.gateway.output;
  assert.ok(out.lastIndexOf('lost the broker') < out.lastIndexOf('answers again'), 'lost, then back');
  // (A request in flight at the kill waits out broker_timeout: 504.)
  assert.ok(statuses.every((x) => [201, 503, 504].includes(x)), `only 201, 503 and 504: ${statuses}`);
}));
