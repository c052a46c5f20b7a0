'use strict';
// The store's identity through the gateway (issue 16): the welcome names the
// store its seqs belong to; a client gives it back with ?since= (store=),
// the resume action (store_id) and GET /events/history (store=). When the
// broker behind the gateway is started on a fresh data directory (another
// store, the same endpoint), a cursor of the old store is never followed
// silently: the client gets a {"type":"reset"} message (or reply field)
// naming both stores and the new store's last seq, and the new store's
// events from its first, not a stream that skips them. A connection open
// across the change gets the reset too, then the new store's events.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { withFabric, sleep, restartOnFreshStore } = require('./lib');

const HEX = /^[0-9a-f]{16}$/;

async function publish(c, topic, n, tag) {
  const seqs = [];
  for (let i = 0; i < n; i++) {
    const r = await c.request({ action: 'publish', event_type: topic, payload: { tag, i } });
    assert.equal(r.ok, true, JSON.stringify(r));
    seqs.push(r.seq);
  }
  return seqs;
}

test('store identity: welcome, ?since=&store=, resume and /events/history across a fresh data directory', withFabric(async (f) => {
  const a = await f.connect('sid-a', 'recent=0');
  const s1 = a.welcome.store_id;
  assert.match(s1 || '', HEX, `the welcome names the store: ${JSON.stringify(a.welcome)}`);
  const seqs = await publish(a, 'sid.t', 120, 'one');
  const last = seqs[seqs.length - 1];

  // The same store: a resume with its id follows the cursor, no reset.
  const b = await f.connect('sid-b', `recent=0&since=${seqs[0]}&store=${s1}`);
  assert.equal(b.welcome.store_id, s1);
  await b.request({ action: 'subscribe', topics: ['sid.>'] });
  await b.waitEvent((e) => e.seq === last, 5000, 'the replay of the same store');
  assert.deepEqual(b.events().map((e) => e.seq), seqs.slice(1), 'replayed after the cursor');
  assert.equal(b.messages.filter((m) => m.type === 'reset').length, 0, 'no reset on the same store');
  const same = await b.request({ action: 'resume', since: last, store_id: s1 });
  assert.equal(same.ok, true, JSON.stringify(same));
  assert.equal(same.reset, false, JSON.stringify(same));
  assert.equal(same.store_id, s1);

  // A bad store id is refused, not ignored.
  const bad = await fetch(`${f.http}/events/history?since=1&store=NOT-HEX`);
  assert.equal(bad.status, 400);

  // The broker again, on a fresh data directory: another store, same endpoint.
  const fresh = await restartOnFreshStore(f);
  try {
    // The gateway reconnects by itself; a new connection then sees the new store.
    const c = await fresh.connectNew('sid-probe', s1);
    const s2 = c.welcome.store_id;
    assert.match(s2, HEX);
    const news = await publish(c, 'sid.t', 2, 'two');
    assert.ok(news[1] < last, `the new store's seqs (${news}) are below the old cursor (${last})`);

    // A connection open across the change: told with a reset, then it gets
    // the new store's events (their seqs are below what it saw), not nothing.
    const live = await b.waitFor((m) => m.type === 'reset', 15000, 'a reset on the open connection');
    assert.equal(live.cursor_store_id, s1, JSON.stringify(live));
    assert.equal(live.code, 'another_store', 'a code to branch on, as MCP\'s why');
    assert.ok(live.cursor_seq >= last, JSON.stringify(live));
    assert.equal(live.store_id, s2);
    assert.equal(live.since, 0);
    await b.waitEvent((ev) => ev.seq === news[1] && ev.payload.tag === 'two', 10000,
      "the new store's events on the open connection");
    const after = b.messages.slice(b.messages.indexOf(live)).filter((m) => m.type === 'event');
    assert.deepEqual(after.map((ev) => [ev.seq, ev.payload.tag]), news.map((q) => [q, 'two']),
      'after the reset: the new store\'s events, once each');

    // ?since= with the old store's cursor: a reset, then the new store's events from its first.
    const d = await f.connect('sid-d', `recent=0&since=${last}&store=${s1}`);
    assert.equal(d.welcome.store_id, s2);
    const reset = await d.waitFor((m) => m.type === 'reset', 5000, 'the reset message');
    assert.equal(reset.cursor_store_id, s1, JSON.stringify(reset));
    assert.equal(reset.cursor_seq, last);
    assert.equal(reset.store_id, s2);
    assert.equal(reset.since, 0);
    assert.ok(reset.last_seq >= news[1], JSON.stringify(reset));
    assert.equal(typeof reset.why, 'string');
    assert.equal(reset.code, 'another_store');
    await d.request({ action: 'subscribe', topics: ['sid.>'] });
    await d.waitEvent((e) => e.seq === news[1], 5000, "the new store's events");
    assert.deepEqual(d.events().map((e) => e.payload.tag), ['two', 'two'], 'not skipped, not mixed');
    assert.ok(d.messages.indexOf(reset) < d.messages.findIndex((m) => m.type === 'event'),
      'the reset comes before the events');

    // ?since= beyond the store's last seq without a store id: a reset too.
    const e = await f.connect('sid-e', `recent=0&since=${last + 1000}`);
    const r2 = await e.waitFor((m) => m.type === 'reset', 5000, 'the reset of a cursor beyond the store');
    assert.equal(r2.cursor_store_id, null, JSON.stringify(r2));
    assert.equal(r2.code, 'beyond_last_seq');
    assert.equal(r2.store_id, s2);

    // The resume action with the old store's id.
    const g = await f.connect('sid-g', 'recent=0');
    await g.request({ action: 'subscribe', topics: ['sid.>'] });
    const rr = await g.request({ action: 'resume', since: last, store_id: s1 });
    assert.equal(rr.ok, true, JSON.stringify(rr));
    assert.equal(rr.reset, true, JSON.stringify(rr));
    assert.equal(rr.store_id, s2);
    assert.equal(rr.since, 0);
    assert.ok(g.messages.some((m) => m.type === 'reset' && m.cursor_store_id === s1));
    await g.waitEvent((ev) => ev.seq === news[1], 5000, 'the resumed events');
    const badResume = await g.request({ action: 'resume', since: 1, store_id: 'XYZ' });
    assert.equal(badResume.ok, false);
    assert.equal(badResume.error.code, 'bad_request', JSON.stringify(badResume));

    // GET /events/history with the old store's cursor.
    const h = await (await fetch(`${f.http}/events/history?since=${last}&store=${s1}`)).json();
    assert.equal(h.store_id, s2, JSON.stringify(h));
    assert.ok(h.reset, JSON.stringify(h));
    assert.equal(h.reset.cursor_store_id, s1);
    assert.equal(h.reset.code, 'another_store');
    assert.deepEqual(h.events.filter((x) => x.event_type === 'sid.t').map((x) => x.payload.tag), ['two', 'two'],
      JSON.stringify(h));
    const h2 = await (await fetch(`${f.http}/events/history?since=${news[0]}&store=${s2}`)).json();
    assert.equal(h2.reset, undefined, JSON.stringify(h2));
    assert.deepEqual(h2.events.filter((x) => x.event_type === 'sid.t').map((x) => x.seq), [news[1]]);
    await sleep(50);
  } finally {
    await fresh.stop();
  }
}));
