'use strict';
// /ws/events (seed 003): a watcher connects, is welcomed with the recent
// events and then receives every event without subscribing; it acts as no
// session, so direct messages do not reach it, and it cannot send actions.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { withFabric, WsClient, sleep } = require('./lib');

async function post(f, path, body, headers = {}) {
  const res = await fetch(`${f.http}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  return { status: res.status, json: await res.json() };
}

test('/ws/events: welcome with recent events, then every event, no direct messages, no actions', withFabric(async (f) => {
  for (let i = 0; i < 3; i++) assert.equal((await post(f, '/events', { event_type: 'before.e', payload: { i } })).status, 201);
  const w = f.track(new WsClient(`${f.wsBase}/ws/events`));
  await w.open();
  assert.equal(w.welcome.type, 'connection');
  assert.equal(w.welcome.session_id, null);
  assert.equal(typeof w.welcome.subscriber_count, 'number');
  const before = w.welcome.recent_events.filter((e) => e.event_type === 'before.e').map((e) => e.payload.i);
  assert.deepEqual(before, [0, 1, 2], JSON.stringify(w.welcome.recent_events));

  // Events of any topic arrive without a subscribe, in seq order.
  await post(f, '/events', { event_type: 'any.thing', payload: { n: 1 } });
  await post(f, '/events', { event_type: 'other', payload: { n: 2 } });
  await post(f, '/message', { from: 'alice', to: 'bob', message: 'private' });
  await post(f, '/events', { event_type: 'last.one', payload: { n: 3 } });
  await w.waitEvent((e) => e.event_type === 'last.one', 5000, 'the last event');
  const got = w.events().map((e) => e.event_type);
  assert.deepEqual(got, ['any.thing', 'other', 'last.one'], JSON.stringify(got));
  const seqs = w.events().map((e) => e.seq);
  assert.deepEqual(seqs, seqs.slice().sort((a, b) => a - b));

  // A watcher is receive-only: an action gets a clear error, and it stays.
  const r = await w.request({ action: 'publish', event_type: 'x.y', payload: {} });
  assert.equal(r.ok, false);
  assert.equal(r.error.code, 'bad_request');
  assert.match(r.error.message, /ws\/session/);
  await post(f, '/events', { event_type: 'still.here', payload: {} });
  await w.waitEvent((e) => e.event_type === 'still.here');

  // A watcher registers no session on the fabric.
  const sessions = (await (await fetch(`${f.http}/sessions/active`)).json()).sessions.map((s) => s.session);
  assert.ok(!sessions.includes(''), JSON.stringify(sessions));

  // /metrics shows the broker's channels: the gateway's own subscription
  // to everything (prefix "") among them.
  const metrics = await (await fetch(`${f.http}/metrics`)).text();
  assert.match(metrics, /^nexus_broker_channel_subscribers\{prefix=""\} [1-9]/m, metrics.slice(-600));

  // Another path under /ws is still refused.
  const bad = f.track(new WsClient(`${f.wsBase}/ws/everything`));
  assert.equal(await bad.unexpected, 404);
}));

test('/ws/events with tokens: no token, no stream', withFabric({ gatewayArgs: ['--token', 'sesame'], healthToken: 'sesame' }, async (f) => {
  const none = f.track(new WsClient(`${f.wsBase}/ws/events`));
  assert.equal(await none.unexpected, 401);
  const w = f.track(new WsClient(`${f.wsBase}/ws/events?token=sesame`));
  await w.open();
  await post(f, '/events', { event_type: 'tok.ok', payload: {}, session_id: 'pub-1' }, { Authorization: 'Bearer sesame' });
  const e = await w.waitEvent((ev) => ev.event_type === 'tok.ok');
  assert.equal(e.session_id, 'pub-1');
  await sleep(10);
}));
