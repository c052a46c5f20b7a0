'use strict';
// The WebSocket protocol of nexus-gateway (docs/gateway.md), driven by a
// real `ws` client against a real nexusd + nexus-gateway per test.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const { execFile } = require('node:child_process');
const WebSocket = require('ws');
const { withFabric, WsClient, sleep, waitFor, readResponse } = require('./lib');

const ISO_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

function assertEventShape(e) {
  assert.equal(e.type, 'event', JSON.stringify(e));
  assert.equal(typeof e.seq, 'number', `seq is a number: ${JSON.stringify(e)}`);
  assert.ok(Number.isInteger(e.seq) && e.seq > 0, `seq > 0: ${JSON.stringify(e)}`);
  assert.equal(typeof e.event_type, 'string', `event_type: ${JSON.stringify(e)}`);
  assert.equal(typeof e.session_id, 'string', `session_id: ${JSON.stringify(e)}`);
  assert.ok('payload' in e, `payload present: ${JSON.stringify(e)}`);
  assert.match(e.timestamp, ISO_UTC, `timestamp ISO-8601 UTC: ${JSON.stringify(e)}`);
  assert.ok(!Number.isNaN(Date.parse(e.timestamp)));
}

function assertError(reply, code, { id, action, mentions } = {}) {
  assert.equal(reply.type, 'reply', JSON.stringify(reply));
  assert.equal(reply.ok, false, JSON.stringify(reply));
  assert.ok(reply.error && typeof reply.error === 'object', `error object: ${JSON.stringify(reply)}`);
  assert.equal(reply.error.code, code, JSON.stringify(reply));
  assert.equal(typeof reply.error.message, 'string', JSON.stringify(reply));
  assert.ok(reply.error.message.length > 0, JSON.stringify(reply));
  if (id !== undefined) assert.equal(reply.id, id, JSON.stringify(reply));
  if (action !== undefined) assert.equal(reply.action, action, JSON.stringify(reply));
  if (mentions) assert.match(reply.error.message, new RegExp(mentions), `message names "${mentions}": ${JSON.stringify(reply)}`);
}

function assertOk(reply, action, id) {
  assert.equal(reply.type, 'reply', JSON.stringify(reply));
  assert.equal(reply.ok, true, JSON.stringify(reply));
  assert.equal(reply.action, action, JSON.stringify(reply));
  if (id !== undefined) assert.equal(reply.id, id, JSON.stringify(reply));
}

/**
 * Sends a request without id, then a ping with an id, and returns the
 * messages that arrived in between (replies come back in request order).
 */
async function sendWithoutId(c, obj) {
  const from = c.messages.length;
  c.send(obj);
  const syncId = `sync-${Math.random()}`;
  await c.request({ action: 'ping', id: syncId });
  const upTo = c.messages.findIndex((m) => m.type === 'reply' && m.id === syncId);
  return c.messages.slice(from, upTo);
}

const repliesIn = (msgs) => msgs.filter((m) => m.type === 'reply');

test('welcome (seed 003 connection message): session id, subscriber count, last seq, recent events, server, version', withFabric(async (f) => {
  const a = await f.connect('welcome-a', 'name=Alice&capabilities=python,websocket');
  const w = a.welcome;
  assert.equal(w.type, 'connection', 'seed 003: the welcome is {"type":"connection",...}');
  assert.equal(typeof w.message, 'string', JSON.stringify(w));
  assert.equal(w.session_id, 'welcome-a');
  assert.equal(typeof w.subscriber_count, 'number', `seed 003's subscriber_count: ${JSON.stringify(w)}`);
  assert.ok(w.subscriber_count >= 1, JSON.stringify(w));
  assert.equal(typeof w.subscribers, 'number');
  assert.equal(w.subscribers, w.subscriber_count, JSON.stringify(w));
  assert.equal(a.messages.filter((m) => m.type === 'connection' || m.type === 'welcome').length, 1, 'one welcome');
  assert.equal(typeof w.last_seq, 'number');
  assert.ok(Array.isArray(w.recent_events), JSON.stringify(w));
  assert.equal(w.server, 'nexus-gateway');
  assert.equal(typeof w.version, 'string');
  assert.ok(w.version.length > 0);

  // name and capabilities from the query reach the session record.
  const s = await a.request({ action: 'sessions' });
  const rec = s.sessions.find((r) => r.session === 'welcome-a');
  assert.ok(rec, JSON.stringify(s));
  assert.equal(rec.name, 'Alice');
  assert.deepEqual(rec.capabilities, ['python', 'websocket']);

  const seqs = [];
  await a.request({ action: 'subscribe', topics: ['test.welcome'] });
  for (let i = 0; i < 3; i++) {
    const r = await a.request({ action: 'publish', event_type: 'test.welcome', payload: { i } });
    seqs.push(r.seq);
  }
  // The reply and the event reach the gateway on two links: once the event
  // is back live, the gateway has seen it (a welcome right after the reply
  // could still say last_seq 3 of 4).
  await a.waitEvent((e) => e.seq === seqs[2], 5000, 'the last event, live');
  const b = await f.connect('welcome-b', 'recent=2');
  assert.ok(b.welcome.last_seq >= seqs[2], JSON.stringify(b.welcome));
  assert.ok(b.welcome.subscribers >= 2, JSON.stringify(b.welcome));
  assert.ok(b.welcome.subscriber_count >= 2, JSON.stringify(b.welcome));
  assert.equal(b.welcome.recent_events.length, 2, JSON.stringify(b.welcome));
  b.welcome.recent_events.forEach(assertEventShape);
  const recentSeqs = b.welcome.recent_events.map((e) => e.seq);
  assert.deepEqual([...recentSeqs].sort((x, y) => x - y), recentSeqs, 'recent events in seq order');
  assert.equal(recentSeqs[recentSeqs.length - 1], b.welcome.last_seq, 'the most recent event is last_seq');

  const c = await f.connect('welcome-c', 'recent=0');
  assert.deepEqual(c.welcome.recent_events, []);

  const d = await f.connect('welcome-d');
  assert.ok(d.welcome.recent_events.length >= 3 && d.welcome.recent_events.length <= 20, JSON.stringify(d.welcome));

  // A resume (?since=) replays what comes after since: its welcome holds no
  // recent event (each would be had already, or sent again by the replay),
  // unless it asks for some.
  const e = await f.connect('welcome-e', `since=${seqs[0]}`);
  assert.deepEqual(e.welcome.recent_events, [], JSON.stringify(e.welcome));
  await e.request({ action: 'subscribe', topics: ['>'] });
  const replayed = await e.waitEvent((ev) => ev.seq === seqs[2], 5000, 'the replay');
  assert.ok(replayed);
  const got = e.events().map((ev) => ev.seq).filter((q) => seqs.includes(q));
  assert.deepEqual(got, [seqs[1], seqs[2]], 'each event after since once, by the replay');
  const g = await f.connect('welcome-g', `since=${seqs[0]}&recent=2`);
  assert.equal(g.welcome.recent_events.length, 2, 'recent= still asks for some');
}));

test('subscribe, unsubscribe, publish, ping: with and without id', withFabric(async (f) => {
  const a = await f.connect('sub-a');
  const b = await f.connect('sub-b');

  let r = await a.request({ action: 'subscribe', topics: ['work.*', 'help.*'], id: 1 });
  assertOk(r, 'subscribe', 1);
  assert.deepEqual([...r.topics].sort(), ['help.*', 'work.*']);

  r = await a.request({ action: 'subscribe', topics: ['test.>'], id: 'two' });
  assertOk(r, 'subscribe', 'two');
  assert.deepEqual([...r.topics].sort(), ['help.*', 'test.>', 'work.*']);

  r = await a.request({ action: 'unsubscribe', topics: ['help.*'] });
  assertOk(r, 'unsubscribe');
  assert.deepEqual([...r.topics].sort(), ['test.>', 'work.*']);

  // Without id: no reply, but the subscription takes effect.
  let between = await sendWithoutId(a, { action: 'subscribe', topics: ['misc.one'] });
  assert.deepEqual(repliesIn(between), [], 'subscribe without id is not answered');
  between = await sendWithoutId(a, { action: 'unsubscribe', topics: ['work.*'] });
  assert.deepEqual(repliesIn(between), [], 'unsubscribe without id is not answered');
  r = await a.request({ action: 'subscribe', topics: ['misc.one'] }); // already there: lists them
  assertOk(r, 'subscribe');
  assert.deepEqual([...r.topics].sort(), ['misc.one', 'test.>']);

  // publish with id: acknowledged with the seq; the event carries it.
  r = await b.request({ action: 'publish', event_type: 'test.hello', payload: { n: 1 }, id: 42 });
  assertOk(r, 'publish', 42);
  assert.equal(typeof r.seq, 'number');
  const ev = await a.waitEvent((e) => e.seq === r.seq, 5000, 'test.hello');
  assertEventShape(ev);
  assert.equal(ev.event_type, 'test.hello');
  assert.equal(ev.session_id, 'sub-b');
  assert.deepEqual(ev.payload, { n: 1 });

  // publish without id: fire and forget, the event still flows.
  between = await sendWithoutId(b, { action: 'publish', event_type: 'misc.one', payload: { n: 2 } });
  assert.deepEqual(repliesIn(between), [], 'publish without id is not answered');
  const ev2 = await a.waitEvent((e) => e.event_type === 'misc.one', 5000, 'misc.one');
  assert.deepEqual(ev2.payload, { n: 2 });
  assert.ok(ev2.seq > ev.seq);

  // Unsubscribed topics do not arrive; work.* was dropped above.
  const w = await b.request({ action: 'publish', event_type: 'work.note', payload: {} });
  const marker = await b.request({ action: 'publish', event_type: 'test.marker', payload: {} });
  await a.waitEvent((e) => e.seq === marker.seq, 5000, 'marker');
  assert.ok(!a.events().some((e) => e.seq === w.seq), 'an unsubscribed topic is not delivered');
  // The publisher did not subscribe to anything: it gets nothing.
  assert.equal(b.events().length, 0, JSON.stringify(b.events()));

  // ping with id and without.
  const p = await a.request({ action: 'ping', id: 'p1' });
  assertOk(p, 'ping', 'p1');
  assert.ok('ts' in p, JSON.stringify(p));
  between = await sendWithoutId(a, { action: 'ping' });
  assert.deepEqual(repliesIn(between), [], 'ping without id is not answered');

  // Payloads of every JSON kind round-trip through msgpack.
  const payloads = [
    { nested: { a: [1, 2.5, 'x', null, true, false, { b: -7 }] }, big: 9007199254740991, neg: -123456789 },
    [1, 'two', 3.25],
    'a string',
    17,
    -0.5,
    true,
    null,
    { unicode: 'héllo ✓ 日本' },
  ];
  for (const payload of payloads) {
    const pr = await b.request({ action: 'publish', event_type: 'test.kinds', payload });
    const got = await a.waitEvent((e) => e.seq === pr.seq, 5000, `payload ${JSON.stringify(payload)}`);
    assert.deepEqual(got.payload, payload);
  }
}));

test('numbers come back as sent (0.1, not 0.10000000000000001), every double exactly, over WebSocket and HTTP', withFabric(async (f) => {
  const a = await f.connect('num-a');
  assertOk(await a.request({ action: 'subscribe', topics: ['num.>'], id: 1 }), 'subscribe', 1);
  const payload = { x: 0.1, y: [2.5, -0.0001], z: 1e300, n: 7 };
  const r = await a.request({ action: 'publish', event_type: 'num.x', payload, id: 2 });
  assertOk(r, 'publish', 2);
  const ev = await a.waitEvent((e) => e.seq === r.seq, 5000, 'num.x');
  assert.deepEqual(ev.payload, payload);
  const raw = a.raw.find((t) => t.includes('"type":"event"') && t.includes(`"seq":${r.seq},`));
  assert.ok(raw.includes('"payload":{"x":0.1,"y":[2.5,-0.0001],"z":1e300,"n":7}'), raw);
  const h = await (await fetch(`${f.http}/events/history?event_type=num.x&limit=1`)).text();
  assert.ok(h.includes('"x":0.1,'), h);
  // A double that needs all 17 digits comes back exactly (the value's
  // other reals then print with 17 too: still exact).
  const hard = { w: 0.1 + 0.2, v: 0.1, tiny: 5e-324 };
  const r2 = await a.request({ action: 'publish', event_type: 'num.y', payload: hard, id: 3 });
  assert.deepEqual((await a.waitEvent((e) => e.seq === r2.seq, 5000, 'num.y')).payload, hard);
}));

test('wildcards: * one token, > trailing tokens, > and broadcast everything', withFabric(async (f) => {
  const star = await f.connect('wc-star');
  const tail = await f.connect('wc-tail');
  const all = await f.connect('wc-all');
  const bcast = await f.connect('wc-bcast');
  await star.request({ action: 'subscribe', topics: ['a.*'] });
  await tail.request({ action: 'subscribe', topics: ['a.>'] });
  await all.request({ action: 'subscribe', topics: ['>'] });
  await bcast.request({ action: 'subscribe', topics: ['broadcast'] });
  const pub = await f.connect('wc-pub');
  const s1 = (await pub.request({ action: 'publish', event_type: 'a.b', payload: 1 })).seq;
  const s2 = (await pub.request({ action: 'publish', event_type: 'a.b.c', payload: 2 })).seq;
  const s3 = (await pub.request({ action: 'publish', event_type: 'z.q', payload: 3 })).seq;
  for (const c of [all, bcast]) await c.waitEvent((e) => e.seq === s3, 5000, 'z.q');
  await tail.waitEvent((e) => e.seq === s2, 5000, 'a.b.c');
  await star.waitEvent((e) => e.seq === s1, 5000, 'a.b');
  await sleep(200);
  const mine = (c) => c.events().filter((e) => [s1, s2, s3].includes(e.seq)).map((e) => e.seq);
  assert.deepEqual(mine(star), [s1]);
  assert.deepEqual(mine(tail), [s1, s2]);
  assert.deepEqual(mine(all), [s1, s2, s3]);
  assert.deepEqual(mine(bcast), [s1, s2, s3]);
}));

test('claims: claim, renew, release, complete, claims; denied with holder; stale_token', withFabric(async (f) => {
  const a = await f.connect('claim-a');
  const b = await f.connect('claim-b');
  const watch = await f.connect('claim-watch');
  await watch.request({ action: 'subscribe', topics: ['work.*'] });

  let r = await a.request({ action: 'claim', work_id: 'job-1', ttl_ms: 30000, description: 'first job', metadata: { k: 'v' }, id: 'c1' });
  assertOk(r, 'claim', 'c1');
  assert.equal(r.work_id, 'job-1');
  assert.equal(r.holder, 'claim-a');
  assert.equal(typeof r.token, 'number');
  assert.ok(r.expires_at !== undefined && r.expires_at !== null, JSON.stringify(r));
  const token = r.token;
  const claimedEv = await watch.waitEvent((e) => e.event_type === 'work.claimed' && e.payload.work_id === 'job-1', 5000, 'work.claimed');
  assertEventShape(claimedEv);
  assert.equal(claimedEv.session_id, 'claim-a');
  assert.equal(claimedEv.payload.holder, 'claim-a');
  assert.equal(claimedEv.payload.description, 'first job');

  // Another session is denied, and told who holds it.
  r = await b.request({ action: 'claim', work_id: 'job-1', id: 'c2' });
  assertError(r, 'denied', { id: 'c2', action: 'claim' });
  assert.equal(r.error.holder, 'claim-a');
  assert.ok(r.error.expires_at !== undefined, JSON.stringify(r));
  assert.equal(r.error.state, 'claimed');

  // Errors are answered even without id.
  const between = await sendWithoutId(b, { action: 'claim', work_id: 'job-1' });
  const denied = repliesIn(between);
  assert.equal(denied.length, 1, JSON.stringify(between));
  assertError(denied[0], 'denied');
  assert.equal(denied[0].error.holder, 'claim-a');

  // renew
  r = await a.request({ action: 'renew', work_id: 'job-1', token, ttl_ms: 60000 });
  assertOk(r, 'renew');
  assert.equal(r.work_id, 'job-1');
  assert.equal(r.token, token);
  assert.ok(r.expires_at !== undefined);

  // stale token
  r = await a.request({ action: 'renew', work_id: 'job-1', token: token + 1000, id: 'stale' });
  assertError(r, 'stale_token', { id: 'stale', action: 'renew' });
  r = await a.request({ action: 'release', work_id: 'job-1', token: token - 1 });
  assertError(r, 'stale_token', { action: 'release' });

  // claims listing
  r = await a.request({ action: 'claims' });
  assertOk(r, 'claims');
  const rec = r.claims.find((c) => c.work_id === 'job-1');
  assert.ok(rec, JSON.stringify(r));
  assert.equal(rec.holder, 'claim-a');
  assert.equal(rec.state, 'claimed');
  r = await a.request({ action: 'claims', holder: 'claim-b' });
  assert.deepEqual(r.claims, []);
  r = await a.request({ action: 'claims', prefix: 'job-', state: 'claimed' });
  assert.deepEqual(r.claims.map((c) => c.work_id), ['job-1']);

  // release
  r = await a.request({ action: 'release', work_id: 'job-1', token, reason: 'done for now' });
  assertOk(r, 'release');
  assert.equal(r.work_id, 'job-1');
  assert.equal(r.state, 'released');
  await watch.waitEvent((e) => e.event_type === 'work.released' && e.payload.work_id === 'job-1', 5000, 'work.released');

  // b can claim it now, and complete it.
  r = await b.request({ action: 'claim', work_id: 'job-1' });
  assertOk(r, 'claim');
  assert.ok(r.token > token, 'a new grant gets a higher fencing token');
  r = await b.request({ action: 'complete', work_id: 'job-1', token: r.token, result: { answer: 42 } });
  assertOk(r, 'complete');
  assert.equal(r.work_id, 'job-1');
  assert.equal(r.state, 'completed');
  const done = await watch.waitEvent((e) => e.event_type === 'work.completed', 5000, 'work.completed');
  assert.deepEqual(done.payload.result, { answer: 42 });
  assert.equal(done.session_id, 'claim-b');

  // A completed item is denied.
  r = await a.request({ action: 'claim', work_id: 'job-1' });
  assertError(r, 'denied');
  assert.equal(r.error.state, 'completed');

  // claim without id: not answered, but the claim happens (work.claimed).
  const quiet = await sendWithoutId(a, { action: 'claim', work_id: 'job-quiet' });
  assert.deepEqual(repliesIn(quiet), []);
  await watch.waitEvent((e) => e.event_type === 'work.claimed' && e.payload.work_id === 'job-quiet', 5000, 'quiet claim');
}));

test('history, status, sessions', withFabric(async (f) => {
  const a = await f.connect('hist-a', 'capabilities=python,go&name=Hist');
  const b = await f.connect('hist-b', 'capabilities=rust');
  const seqs = [];
  for (let i = 0; i < 5; i++) seqs.push((await a.request({ action: 'publish', event_type: `hist.t${i % 2}`, payload: { i } })).seq);

  let r = await a.request({ action: 'history', topics: ['hist.>'], id: 'h' });
  assertOk(r, 'history', 'h');
  assert.deepEqual(r.events.map((e) => e.seq), seqs);
  r.events.forEach(assertEventShape);
  assert.deepEqual(r.events.map((e) => e.payload.i), [0, 1, 2, 3, 4]);
  assert.ok('next_cursor' in r, JSON.stringify(r));

  r = await a.request({ action: 'history', topics: ['hist.t1'] });
  assert.deepEqual(r.events.map((e) => e.seq), [seqs[1], seqs[3]]);
  r = await a.request({ action: 'history', topics: ['hist.>'], since_seq: seqs[2] });
  assert.deepEqual(r.events.map((e) => e.seq), [seqs[3], seqs[4]]);
  r = await a.request({ action: 'history', topics: ['hist.>'], order: 'desc', limit: 2 });
  assert.deepEqual(r.events.map((e) => e.seq), [seqs[4], seqs[3]]);

  // Paging with the cursor.
  let page = await a.request({ action: 'history', topics: ['hist.>'], limit: 2 });
  const paged = page.events.map((e) => e.seq);
  for (let guard = 0; page.next_cursor !== null && page.next_cursor !== undefined && guard < 10; guard++) {
    page = await a.request({ action: 'history', topics: ['hist.>'], limit: 2, cursor: page.next_cursor });
    paged.push(...page.events.map((e) => e.seq));
  }
  assert.deepEqual(paged, seqs);

  r = await a.request({ action: 'history', limit: 5000 });
  assertError(r, 'bad_request', { action: 'history', mentions: 'limit' });

  // status: the record comes back; status.update is published.
  await b.request({ action: 'subscribe', topics: ['status.*'] });
  r = await a.request({ action: 'status', state: 'busy', current_work: 'building', text: 'compiling', id: 's1' });
  assertOk(r, 'status', 's1');
  assert.equal(r.session.session, 'hist-a');
  assert.equal(r.session.state, 'busy');
  assert.equal(r.session.current_work, 'building');
  assert.equal(r.session.text, 'compiling');
  const su = await b.waitEvent((e) => e.event_type === 'status.update', 5000, 'status.update');
  assert.equal(su.session_id, 'hist-a');
  assert.equal(su.payload.state, 'busy');
  r = await a.request({ action: 'status', state: 'sleeping' });
  assertError(r, 'bad_request', { action: 'status' });

  // sessions: all, by capability, available.
  r = await a.request({ action: 'sessions' });
  assertOk(r, 'sessions');
  assert.deepEqual(r.sessions.map((s) => s.session).filter((s) => s.startsWith('hist-')).sort(), ['hist-a', 'hist-b']);
  r = await a.request({ action: 'sessions', capability: 'python' });
  assert.deepEqual(r.sessions.map((s) => s.session), ['hist-a']);
  r = await a.request({ action: 'sessions', available: true });
  assert.deepEqual(r.sessions.map((s) => s.session).filter((s) => s.startsWith('hist-')), ['hist-b'], 'hist-a is busy');
  // Pages: limit and after, truncated while more match.
  r = await a.request({ action: 'sessions', limit: 1, after: 'hist-' });
  assertOk(r, 'sessions');
  assert.deepEqual([r.sessions.map((s) => s.session), r.truncated], [['hist-a'], true], JSON.stringify(r));
  assert.ok(Number.isInteger(r.matched) && r.matched >= 2, `matched counts every session: ${JSON.stringify(r)}`);
  r = await a.request({ action: 'sessions', limit: 1, after: 'hist-a' });
  assert.deepEqual(r.sessions.map((s) => s.session), ['hist-b'], JSON.stringify(r));
  assertError(await a.request({ action: 'sessions', limit: 0 }), 'bad_request', { mentions: 'limit' });
}));

test('errors: bad_json, unknown_action, bad_request naming the field', withFabric(async (f) => {
  const a = await f.connect('err-a');
  const errs = async (text) => {
    const from = a.messages.length;
    a.send(text);
    return a.waitFor((m) => m.type === 'reply' && m.ok === false, 5000, `error reply to ${text}`, from);
  };
  assertError(await errs('this is not json'), 'bad_json');
  assertError(await errs('[1,2,3]'), 'bad_json');
  assertError(await errs('"a string"'), 'bad_json');
  assertError(await errs('{"action":"subscribe",'), 'bad_json');

  let r = await a.request({ action: 'teleport', id: 7 });
  assertError(r, 'unknown_action', { id: 7, mentions: 'teleport' });
  assertError(await errs('{"action":"teleport"}'), 'unknown_action');
  r = await a.request({ id: 'noaction', topics: ['x'] });
  assert.equal(r.ok, false, JSON.stringify(r));
  assert.ok(['bad_request', 'unknown_action'].includes(r.error.code), JSON.stringify(r));
  assert.match(r.error.message, /action/);

  const missing = [
    [{ action: 'subscribe' }, 'topics'],
    [{ action: 'subscribe', topics: [] }, 'topics'],
    [{ action: 'subscribe', topics: 17 }, 'topics'],
    [{ action: 'unsubscribe' }, 'topics'],
    [{ action: 'publish', payload: {} }, 'event_type'],
    [{ action: 'claim' }, 'work_id'],
    [{ action: 'claim', work_id: 42 }, 'work_id'],
    [{ action: 'renew', work_id: 'x' }, 'token'],
    [{ action: 'renew', token: 1 }, 'work_id'],
    [{ action: 'release', work_id: 'x' }, 'token'],
    [{ action: 'complete', token: 3 }, 'work_id'],
    [{ action: 'resume' }, 'since'],
  ];
  for (const [req, field] of missing) {
    r = await a.request(req);
    assertError(r, 'bad_request', { action: req.action, mentions: field });
  }
  // Still connected and working.
  assertOk(await a.request({ action: 'ping' }), 'ping');
  assert.equal(a.closed, null);
}));

test('events: shape, and a publisher cannot forge its session', withFabric(async (f) => {
  const a = await f.connect('shape-a');
  await a.request({ action: 'subscribe', topics: ['shape.>'] });
  const r = await a.request({ action: 'publish', event_type: 'shape.x', payload: { hello: 'world' }, session_id: 'someone-else' });
  const e = await a.waitEvent((m) => m.seq === r.seq);
  assertEventShape(e);
  assert.deepEqual(Object.keys(e).sort(), ['event_type', 'payload', 'seq', 'session_id', 'timestamp', 'type']);
  assert.equal(e.session_id, 'shape-a', 'the source is the connection\'s session, whatever the JSON says');
  assert.ok(Math.abs(Date.parse(e.timestamp) - Date.now()) < 60000, e.timestamp);
}));

// Payloads as JSON text, compact as the gateway writes them, and their values.
// The first two are binary at the top level: 01 is also the msgpack of 1,
// 93 the start of a msgpack array; each must come back as the same base64.
const ROUND_TRIP = [
  '{"$base64":"AQ=="}',
  '{"$base64":"kw=="}',
  '{"$base64":""}',
  '1.0',
  '2.5',
  '1',
  '-5',
  '"s"',
  'null',
  'true',
  '[]',
  '{"a":[1,{"$base64":"AAEC"}],"b":{"c":{"$base64":"/w=="},"d":1.0},"e":"x"}',
  '[{"$base64":"AQ=="},[1,[2.5,"t"]],{"k":{"$base64":"kw=="}}]',
];

const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** True when JSON text `raw` holds event `seq` with exactly `payload` (text). */
function holdsExactly(raw, seq, payload) {
  return new RegExp(`"seq":${seq},"event_type":"[^"]*","session_id":"[^"]*","payload":${escapeRe(payload)},"timestamp"`).test(raw);
}

test('payloads round-trip exactly: top-level binary, floats, nested $base64 (WS and POST /events; live, history, recent)', withFabric(async (f) => {
  const a = await f.connect('rt-a');
  const raw = [];
  a.ws.on('message', (d) => raw.push(d.toString()));
  await a.request({ action: 'subscribe', topics: ['rt.>'] });
  const sent = []; // { seq, text, how }
  for (const [i, text] of ROUND_TRIP.entries()) {
    const id = `rt-${i}`;
    a.send(`{"action":"publish","id":"${id}","event_type":"rt.ws","payload":${text}}`);
    const r = await a.waitFor((m) => m.type === 'reply' && m.id === id, 5000, `reply ${id}`);
    assert.equal(r.ok, true, JSON.stringify(r));
    sent.push({ seq: r.seq, text, how: 'ws' });
    const h = await fetch(`${f.http}/events`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: `{"event_type":"rt.http","session_id":"rt-http","payload":${text}}`,
      signal: AbortSignal.timeout(5000),
    });
    const hj = await h.json();
    assert.equal(h.status, 201, JSON.stringify(hj));
    sent.push({ seq: hj.seq, text, how: 'http' });
  }
  const check = (where, events, rawText) => {
    for (const p of sent) {
      const e = events.find((x) => x.seq === p.seq);
      assert.ok(e, `${where}: event ${p.seq} (${p.how} ${p.text})`);
      assert.deepEqual(e.payload, JSON.parse(p.text), `${where}: ${p.how} payload ${p.text}`);
      assert.ok(holdsExactly(rawText, p.seq, p.text), `${where}: ${p.how} payload ${p.text} as text, in ${rawText.slice(0, 300)}`);
    }
  };
  const last = sent[sent.length - 1].seq;
  await a.waitEvent((m) => m.seq === last, 5000, 'the last round-trip event');
  check('live', a.events(), raw.join('\n'));

  const hist = await a.request({ action: 'history', topics: ['rt.>'], limit: 100 });
  assert.equal(hist.ok, true, JSON.stringify(hist));
  check('WS history', hist.events, raw.find((t) => t.includes(`"id":"${hist.id}"`)) || '');

  let r = await fetch(`${f.http}/events/history?limit=100`);
  let text = await r.text();
  check('/events/history', JSON.parse(text).events, text);
  r = await fetch(`${f.http}/events/recent?count=100`);
  text = await r.text();
  check('/events/recent', JSON.parse(text).events, text);
  // The welcome's recent events come from the same ring.
  const b = f.track(new WsClient(`${f.wsBase}/ws/session/rt-b?recent=100`));
  const rawB = [];
  b.ws.on('message', (d) => rawB.push(d.toString()));
  await b.open();
  check('welcome', b.welcome.recent_events, rawB.join('\n'));
}));

// The snippet from seed 000, verbatim except the port.
const SEED_SNIPPET = `
const ws = new WebSocket('ws://localhost:8450/ws/session/session-5');

// Subscribe to topics
ws.send(JSON.stringify({
    action: 'subscribe',
    topics: ['work.*', 'help.*']
}));

// Publish event
ws.send(JSON.stringify({
    action: 'publish',
    event_type: 'status.update',
    payload: {
        status: 'working',
        current_work: 'Building NEXUS'
    }
}));

// Listen for events
ws.onmessage = (event) => {
    const data = JSON.parse(event.data);
    console.log('Event:', data.event_type);
    console.log('From:', data.session_id);
    console.log('Payload:', data.payload);
};
`;

// The example calls send() right after the constructor. Both the browser
// WebSocket and the `ws` package throw on send() while CONNECTING, so the
// runtime given to the snippet is the `ws` WebSocket with sends made before
// 'open' held until it opens (nothing else differs). The text is unchanged.
class WebSocketQueued extends WebSocket {
  send(data, ...rest) {
    if (this.readyState === WebSocket.CONNECTING) this.once('open', () => super.send(data, ...rest));
    else super.send(data, ...rest);
  }
}

function runSeedSnippet(port) {
  const lines = [];
  const fakeConsole = { log: (...args) => lines.push(args) };
  // eslint-disable-next-line no-new-func
  const run = new Function('WebSocket', 'console', `${SEED_SNIPPET.replace('localhost:8450', `localhost:${port}`)}\nreturn ws;`);
  return { ws: run(WebSocketQueued, fakeConsole), lines };
}

/** The printed [Event:, From:, Payload:] triples. */
function printedEvents(lines) {
  const out = [];
  for (let i = 0; i + 2 < lines.length; i++) {
    if (lines[i][0] === 'Event:' && lines[i + 1][0] === 'From:' && lines[i + 2][0] === 'Payload:') {
      out.push({ event_type: lines[i][1], session_id: lines[i + 1][1], payload: lines[i + 2][1] });
      i += 2;
    }
  }
  return out;
}

test('a payload string with a NUL byte (published by a non-JSON client) reaches the live stream, history and the welcome', withFabric(async (f) => {
  const a = await f.connect('nul-a', 'recent=0');
  assertOk(await a.request({ action: 'subscribe', topics: ['nul.>'], id: 's' }), 'subscribe', 's');
  // A raw ZeroMQ publisher (Python, as the integration tests use) sends a
  // msgpack str with a NUL byte, which JSON clients cannot send us.
  const py = [
    'import sys, time, zmq, msgpack',
    'ctx = zmq.Context(); s = ctx.socket(zmq.PUB); s.connect("tcp://127.0.0.1:%s" % sys.argv[1])',
    'time.sleep(0.5)',
    's.send_multipart([b"nul.payload", msgpack.packb({"text": "a\\x00b"})])',
    'time.sleep(0.3); s.close(linger=2000); ctx.term()',
  ].join('\n');
  // Debian's python3 has python3-zmq and python3-msgpack (deploy/dev.sh installs them).
  const python = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  await new Promise((resolve, reject) => execFile(python, ['-c', py, String(f.brokerPorts[1])], { timeout: 10000 },
    (err, _out, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve())));
  const live = await a.waitEvent((e) => e.event_type === 'nul.payload', 5000, 'the live event');
  assert.equal(live.payload.text, 'a\u0000b');
  const h = await a.request({ action: 'history', topics: ['nul.>'], id: 'h' });
  assertOk(h, 'history', 'h');
  assert.equal(h.events.length, 1, JSON.stringify(h));
  assert.equal(h.events[0].payload.text, 'a\u0000b', JSON.stringify(h.events[0]));
  const b = await f.connect('nul-b', 'recent=5');
  const w = b.welcome.recent_events.find((e) => e.event_type === 'nul.payload');
  assert.ok(w, `in the welcome: ${JSON.stringify(b.welcome)}`);
  assert.equal(w.payload.text, 'a\u0000b');
}));

test('seed 000 JavaScript example runs unchanged: connects, subscribes, publishes status.update', withFabric(async (f) => {
  const watch = await f.connect('seed-watch');
  await watch.request({ action: 'subscribe', topics: ['status.*', 'session.*'] });
  const { ws, lines } = runSeedSnippet(f.port);
  try {
    const ev = await watch.waitEvent((e) => e.event_type === 'status.update' && e.session_id === 'session-5', 5000, 'the snippet\'s status.update');
    assert.equal(ev.payload.status, 'working');
    assert.equal(ev.payload.current_work, 'Building NEXUS');
    assert.ok(watch.events().some((e) => e.event_type === 'session.connected' && e.session_id === 'session-5'));
    // It printed the welcome through its handler, and no error reply came back.
    await waitFor(() => lines.length >= 3, { timeout: 5000, what: 'the snippet to print' });
    const printed = printedEvents(lines);
    assert.ok(printed.length >= 1, JSON.stringify(lines));
    assert.equal(printed[0].session_id, 'session-5', 'the welcome names the session');
    await sleep(300);
    assert.ok(!printed.some((p) => p.event_type === undefined && p.payload === undefined && p.session_id === undefined),
      `no reply without session_id (an error) was printed: ${JSON.stringify(lines)}`);
  } finally {
    ws.terminate();
  }
}));

test('seed 000 JavaScript example prints the events it subscribed to', withFabric(async (f) => {
  // The snippet subscribes to work.* and help.*: another session's
  // work.claimed and help.needed reach it, printed by its own onmessage.
  const { ws, lines } = runSeedSnippet(f.port);
  try {
    const other = await f.connect('seed-other', 'recent=0');
    await waitFor(() => printedEvents(lines).length > 0 || lines.length > 0,
      { timeout: 5000, what: () => 'the snippet to connect' });
    await sleep(300); // its subscribe is in
    await other.request({ action: 'claim', work_id: 'seed-job', id: 1 });
    await other.request({ action: 'publish', event_type: 'help.needed', payload: { task: 'review' }, id: 2 });
    const claimed = await waitFor(() => printedEvents(lines).find((p) => p.event_type === 'work.claimed'),
      { timeout: 5000, what: () => `the snippet to print work.claimed (printed: ${JSON.stringify(lines)})` });
    assert.equal(claimed.session_id, 'seed-other');
    assert.equal(claimed.payload.work_id, 'seed-job');
    const help = await waitFor(() => printedEvents(lines).find((p) => p.event_type === 'help.needed'),
      { timeout: 5000, what: () => `the snippet to print help.needed (printed: ${JSON.stringify(lines)})` });
    assert.equal(help.payload.task, 'review');
    assert.ok(!printedEvents(lines).some((p) => p.event_type === 'status.update'),
      'its own status.update matches none of its subscriptions and is not echoed');
  } finally {
    ws.terminate();
  }
}));

test('resume action: replays after since, then live, no gap, no duplicate', withFabric(async (f) => {
  const pub = await f.connect('res-pub');
  const seqs = [];
  for (let i = 0; i < 6; i++) seqs.push((await pub.request({ action: 'publish', event_type: 'res.n', payload: { i } })).seq);
  const c = await f.connect('res-c', 'recent=0');
  await c.request({ action: 'subscribe', topics: ['res.>'] });
  const r = await c.request({ action: 'resume', since: seqs[1], id: 'rs' });
  assertOk(r, 'resume', 'rs');
  assert.equal(r.replayed, 4, JSON.stringify(r));
  for (let i = 6; i < 9; i++) seqs.push((await pub.request({ action: 'publish', event_type: 'res.n', payload: { i } })).seq);
  await c.waitEvent((e) => e.seq === seqs[8], 5000, 'last live event');
  await sleep(100);
  assert.deepEqual(c.events().map((e) => e.seq), seqs.slice(2));
}));

test('resume after a dropped connection (?since): no gap, no duplicate', withFabric(async (f) => {
  const pub = await f.connect('drop-pub');
  const c1 = await f.connect('drop-c', 'recent=0');
  await c1.request({ action: 'subscribe', topics: ['num.>'] });
  const all = [];
  for (let i = 0; i < 10; i++) all.push((await pub.request({ action: 'publish', event_type: 'num.x', payload: { i } })).seq);
  await c1.waitEvent((e) => e.seq === all[9], 5000, 'first batch');
  const got1 = c1.events().map((e) => e.seq);
  assert.deepEqual(got1, all);
  const last = got1[got1.length - 1];

  // The connection drops without a close handshake.
  c1.ws.terminate();
  await c1.waitClose();

  // Numbered events while disconnected, some of other topics.
  for (let i = 10; i < 30; i++) {
    all.push((await pub.request({ action: 'publish', event_type: 'num.x', payload: { i } })).seq);
    await pub.request({ action: 'publish', event_type: 'other.y', payload: { i } });
  }
  // Reconnect with ?since=last and subscribe; keep publishing meanwhile.
  const publishing = (async () => {
    for (let i = 30; i < 60; i++) all.push((await pub.request({ action: 'publish', event_type: 'num.x', payload: { i } })).seq);
  })();
  const c2 = await f.connect('drop-c', `since=${last}&recent=0`);
  await c2.request({ action: 'subscribe', topics: ['num.>'] });
  await publishing;
  await c2.waitEvent((e) => e.seq === all[all.length - 1], 10000, 'the last event');
  await sleep(200);
  const got2 = c2.events().map((e) => e.seq);
  assert.deepEqual(got2, all.slice(10), 'exactly the events after `since`, in order, once each');
  assert.deepEqual(c2.events().map((e) => e.payload.i), Array.from({ length: 50 }, (_, k) => k + 10));
  assert.ok(!c2.messages.some((m) => m.type === 'gap'), 'no gap notice');
}));

test('direct message reaches only the connections of that session and of its sender', withFabric(async (f) => {
  const target1 = await f.connect('dm-target');
  const target2 = await f.connect('dm-target');
  const other = await f.connect('dm-other');
  const sender = await f.connect('dm-sender');
  for (const c of [target1, target2, other, sender]) await c.request({ action: 'subscribe', topics: ['message.*'] });

  // `to` at top level
  let r = await sender.request({ action: 'publish', event_type: 'message.direct', to: 'dm-target', payload: { text: 'for you' } });
  assertOk(r, 'publish');
  // `to` in the payload
  r = await sender.request({ action: 'publish', event_type: 'message.direct', payload: { to: 'dm-target', text: 'again' } });
  assertOk(r, 'publish');
  // a broadcast as a marker that everyone receives
  const marker = await sender.request({ action: 'publish', event_type: 'message.broadcast', payload: { text: 'all' } });
  for (const c of [target1, target2, other, sender]) await c.waitEvent((e) => e.seq === marker.seq, 5000, 'broadcast marker');
  await sleep(200);
  const directs = (c) => c.events().filter((e) => e.event_type === 'message.direct');
  for (const t of [target1, target2]) {
    const d = directs(t);
    assert.equal(d.length, 2, JSON.stringify(d));
    assert.equal(d[0].session_id, 'dm-sender');
    assert.equal(d[0].payload.text, 'for you');
    assert.equal(d[1].payload.text, 'again');
  }
  assert.deepEqual(directs(other), [], 'another session does not see the direct message');
  // The sender sees what it sent, live as in the history and on resume
  // (protocol.md 6.9).
  assert.deepEqual(directs(sender).map((e) => e.payload.text), ['for you', 'again'], 'the sender sees its own');

  // Nor through any other door: the welcome's recent events, the history
  // action, a resume, or HTTP's recent events and history.
  const isDirect = (e) => e.event_type === 'message.direct';
  const late = await f.connect('dm-other', 'recent=50');
  assert.ok(!late.welcome.recent_events.some(isDirect), `welcome: ${JSON.stringify(late.welcome.recent_events)}`);
  const h = await other.request({ action: 'history', topics: ['message.*'], limit: 100 });
  assertOk(h, 'history');
  assert.ok(!h.events.some(isDirect), `history of another session: ${JSON.stringify(h.events)}`);
  assert.ok(h.events.some((e) => e.seq === marker.seq), 'history still has the broadcast');
  const th = await target1.request({ action: 'history', topics: ['message.*'], limit: 100 });
  assert.equal(th.events.filter(isDirect).length, 2, 'the target finds its messages in history');
  const resumed = await f.connect('dm-other', 'since=0&recent=0');
  await resumed.request({ action: 'subscribe', topics: ['message.*'] });
  await resumed.request({ action: 'resume', since: 0 });
  await resumed.waitEvent((e) => e.seq === marker.seq, 5000, 'replayed broadcast');
  assert.deepEqual(resumed.events().filter(isDirect), [], 'a resume of another session replays no direct message');
  for (const p of ['/events/recent?count=100', '/events/history?limit=100']) {
    const res = await fetch(`${f.http}${p}`);
    const body = await res.json();
    assert.ok(!JSON.stringify(body).includes('for you') && !JSON.stringify(body).includes('again'), `${p}: ${JSON.stringify(body)}`);
  }
}));

test('presence: session.connected and session.disconnected for WebSocket connect and close', withFabric(async (f) => {
  const watch = await f.connect('pres-watch');
  await watch.request({ action: 'subscribe', topics: ['session.*'] });
  const c = await f.connect('pres-x', 'name=Xavier&capabilities=a,b');
  const conn = await watch.waitEvent((e) => e.event_type === 'session.connected' && e.payload.session === 'pres-x', 5000, 'session.connected');
  assertEventShape(conn);
  assert.equal(conn.session_id, 'pres-x');
  assert.equal(conn.payload.name, 'Xavier');
  assert.deepEqual(conn.payload.capabilities, ['a', 'b']);

  // A second connection of the same session, closed: the session stays.
  const c2 = await f.connect('pres-x');
  await c2.close();
  await sleep(500);
  assert.ok(!watch.events().some((e) => e.event_type === 'session.disconnected' && e.payload.session === 'pres-x'),
    'closing one of two connections does not unregister the session');

  await c.close();
  const disc = await watch.waitEvent((e) => e.event_type === 'session.disconnected' && e.payload.session === 'pres-x', 5000, 'session.disconnected');
  assertEventShape(disc);
  assert.equal(disc.session_id, 'pres-x');
  const list = await watch.request({ action: 'sessions' });
  assert.ok(!list.sessions.some((s) => s.session === 'pres-x'), JSON.stringify(list));

  // An invalid session id is refused.
  const bad = f.track(new WsClient(`${f.wsBase}/ws/session/${'x'.repeat(65)}`));
  const outcome = await Promise.race([bad.unexpected.then((s) => `http ${s}`), bad.closePromise.then((c3) => `close ${c3.code}`), sleep(5000).then(() => 'nothing')]);
  assert.notEqual(outcome, 'nothing', 'an invalid session id is refused');
  assert.ok(!bad.messages.some((m) => m.type === 'connection'), 'no welcome for an invalid session id');
}));

test('rate limit: rate_limited error reply, the connection stays', withFabric({ gatewayArgs: ['--rate', '5', '--burst', '5'] }, async (f) => {
  const a = await f.connect('rate-a');
  const ids = Array.from({ length: 20 }, (_, i) => `q${i}`);
  for (const id of ids) a.send({ action: 'ping', id });
  const replies = await Promise.all(ids.map((id) => a.waitFor((m) => m.type === 'reply' && m.id === id, 5000, `reply ${id}`)));
  const limited = replies.filter((r) => !r.ok);
  const ok = replies.filter((r) => r.ok);
  assert.ok(ok.length >= 5 && ok.length <= 7, `about burst=5 pass: ${ok.length}`);
  assert.ok(limited.length >= 13, `the rest is limited: ${limited.length}`);
  limited.forEach((r) => assertError(r, 'rate_limited'));
  // Without id, a limited request is still answered (errors always are).
  assert.equal(a.closed, null);
  await sleep(1200);
  assertOk(await a.request({ action: 'ping' }), 'ping');
  assert.equal(a.closed, null, 'the connection stays open');
}));

test('rate limit: binary messages, refused as they are, take tokens too', withFabric({ gatewayArgs: ['--rate', '5', '--burst', '5'] }, async (f) => {
  const a = await f.connect('rate-bin', 'recent=0');
  // 20 binary messages and a ping, sent at once: the ping finds the bucket spent.
  for (let i = 0; i < 20; i++) a.ws.send(Buffer.from([1, 2, 3]), { binary: true });
  a.send({ action: 'ping', id: 'after' });
  await waitFor(() => repliesIn(a.messages).length >= 21, { what: '21 replies' });
  const replies = repliesIn(a.messages);
  const codes = replies.filter((r) => r.id !== 'after').map((r) => r.error && r.error.code);
  const binary = codes.filter((c) => c === 'bad_request').length;
  const limited = codes.filter((c) => c === 'rate_limited').length;
  assert.ok(binary >= 5 && binary <= 7, `about burst=5 are answered as binary: ${codes}`);
  assert.ok(limited >= 13, `the rest is rate limited: ${codes}`);
  assertError(replies.find((r) => r.id === 'after'), 'rate_limited', { id: 'after' });
  assert.equal(a.closed, null, 'the connection stays open');
}));

test('rate limit is per session: more connections of one session share its bucket', withFabric({ gatewayArgs: ['--rate', '1', '--burst', '3'] }, async (f) => {
  const conns = [];
  for (let i = 0; i < 4; i++) conns.push(await f.connect('rate-shared'));
  const waits = [];
  conns.forEach((c, k) => {
    for (let i = 0; i < 3; i++) {
      const id = `s${k}-${i}`;
      c.send({ action: 'ping', id });
      waits.push(c.waitFor((m) => m.type === 'reply' && m.id === id, 5000, `reply ${id}`));
    }
  });
  const replies = await Promise.all(waits);
  const ok = replies.filter((r) => r.ok).length;
  assert.ok(ok >= 3 && ok <= 4, `the session's burst of 3 (plus at most one refill) passes in all, not per connection: ${ok}`);
  // Another session has its own bucket.
  const other = await f.connect('rate-other');
  assertOk(await other.request({ action: 'ping' }), 'ping');
}));

test('max message: a message over --max-message closes with 1009', withFabric({ gatewayArgs: ['--max-message', '1k'] }, async (f) => {
  const a = await f.connect('big-a');
  const small = await a.request({ action: 'publish', event_type: 'big.ok', payload: { s: 'x'.repeat(800) } });
  assertOk(small, 'publish');
  const other = await f.connect('big-b');
  a.send({ action: 'publish', event_type: 'big.no', payload: { s: 'x'.repeat(2000) } });
  const closed = await a.waitClose(5000);
  assert.equal(closed.code, 1009, JSON.stringify(closed));
  assertOk(await other.request({ action: 'ping' }), 'ping');
}));

test('tokens: a wrong or missing token is refused; ?token= and Bearer work', withFabric({ gatewayArgs: ['--token', 'T0ken-s3cret'], healthToken: 'T0ken-s3cret' }, async (f, t) => {
  // Refused means: no welcome, and either an HTTP 401/403 answer to the
  // upgrade, a close with a policy/auth code, or the handshake dropped.
  const refused = async (url, opts) => {
    const c = f.track(new WsClient(url, opts));
    const welcomed = c.waitFor((m) => m.type === 'connection', 5000, 'welcome').then(() => true, () => false);
    const closed = await c.waitClose(5000).catch(() => null);
    return { welcomed: await welcomed, http: c.httpStatus, close: closed, error: c.error && c.error.message };
  };
  const isRefusal = (o) => !o.welcomed && o.close && (
    [401, 403].includes(o.http) || [1008, 4001, 4003, 4401, 4403].includes(o.close.code) ||
    (o.close.code === 1006 && o.error));
  for (const [what, url, opts] of [
    ['no token', `${f.wsBase}/ws/session/tok-a`, {}],
    ['wrong ?token=', `${f.wsBase}/ws/session/tok-a?token=wrong`, {}],
    ['wrong Bearer', `${f.wsBase}/ws/session/tok-a`, { headers: { Authorization: 'Bearer wrong' } }],
  ]) {
    const o = await refused(url, opts);
    assert.ok(isRefusal(o), `${what}: refused: ${JSON.stringify(o)}`);
    if (!o.http && o.close.code === 1006) t.diagnostic(`${what}: the upgrade is dropped without an HTTP status (${o.error})`);
  }

  const good = await f.connect('tok-a', 'token=T0ken-s3cret');
  assertOk(await good.request({ action: 'ping' }), 'ping');
  const bearer = await f.connect('tok-b', '', { headers: { Authorization: 'Bearer T0ken-s3cret' } });
  assertOk(await bearer.request({ action: 'ping' }), 'ping');
  assert.equal(good.closed, null);

  // HTTP too.
  let res = await fetch(`${f.http}/sessions/active`);
  assert.equal(res.status, 401, 'HTTP without a token');
  const body = await res.json();
  assert.equal(body.error.code, 'unauthorized');
  res = await fetch(`${f.http}/sessions/active?token=T0ken-s3cret`);
  assert.equal(res.status, 200);
  res = await fetch(`${f.http}/sessions/active`, { headers: { Authorization: 'Bearer T0ken-s3cret' } });
  assert.equal(res.status, 200);
}));

test('a client that does not read is closed with 1008; another keeps receiving every event', withFabric({
  gatewayArgs: ['--queue-messages', '16', '--queue-bytes', '1M', '--slow-timeout', '1s'],
}, async (f) => {
  const fast = await f.connect('slow-fast', 'recent=0');
  await fast.request({ action: 'subscribe', topics: ['flood.>', 'session.*'] });
  const slow = await f.connect('slow-slow', 'recent=0');
  await slow.request({ action: 'subscribe', topics: ['flood.>'] });
  const pub = await f.connect('slow-pub', 'recent=0');

  slow.ws._socket.pause(); // stop reading: the kernel buffers fill, then the gateway queue
  const blob = 'z'.repeat(32 * 1024);
  const seqs = [];
  const deadline = Date.now() + 40000;
  let n = 0;
  // Publish until the slow client is gone (the fast one sees its session.disconnected),
  // paced so that the reading client's small queue never overflows.
  while (Date.now() < deadline) {
    const batch = [];
    for (let k = 0; k < 4; k++, n++) batch.push(pub.request({ action: 'publish', event_type: 'flood.x', payload: { n, blob } }, 10000));
    for (const r of await Promise.all(batch)) seqs.push(r.seq);
    await fast.waitEvent((e) => e.seq === seqs[seqs.length - 1], 10000, `flood ${seqs.length}`);
    if (fast.events().some((e) => e.event_type === 'session.disconnected' && e.payload.session === 'slow-slow')) break;
  }
  assert.ok(fast.events().some((e) => e.event_type === 'session.disconnected' && e.payload.session === 'slow-slow'),
    `the slow client was dropped within 40 s (published ${seqs.length} events of 32 KiB)`);
  // Keep publishing a little after the drop; the reader still gets all.
  for (let k = 0; k < 20; k++, n++) seqs.push((await pub.request({ action: 'publish', event_type: 'flood.x', payload: { n, blob } })).seq);
  await fast.waitEvent((e) => e.seq === seqs[seqs.length - 1], 10000, 'the last flood event');
  const fastSeqs = fast.events().filter((e) => e.event_type === 'flood.x').map((e) => e.seq);
  assert.deepEqual(fastSeqs, seqs, 'the reading client got every event, in order');
  assert.ok(!fast.messages.some((m) => m.type === 'gap'), 'no gap for the reading client');

  // The slow client reads again: what was buffered, then the close.
  slow.ws._socket.resume();
  const closed = await slow.waitClose(10000);
  assert.equal(closed.code, 1008, `closed with 1008: ${JSON.stringify(closed)}`);
  assert.match(closed.reason, /queue/i);

  const metrics = await (await fetch(`${f.http}/metrics`)).text();
  assert.match(metrics, /slow|drop/i);
}));

test('a client that stops reading for a while, then reads again, gets every event whole and in order', withFabric({
  gatewayArgs: ['--queue-messages', '4096', '--queue-bytes', '64M', '--slow-timeout', '60s'],
}, async (f) => {
  // More than the loopback socket buffers hold, so writes to it come back
  // short and the rest waits in lws until the socket drains; small events
  // (coalesced into one send) and large ones (sent alone) alternate.
  const reader = await f.connect('pause-reader', 'recent=0');
  await reader.request({ action: 'subscribe', topics: ['flood.>'] });
  const pub = await f.connect('pause-pub', 'recent=0');
  reader.ws._socket.pause();
  const blob = 'p'.repeat(32 * 1024);
  const seqs = [];
  for (let n = 0; n < 900;) {
    const batch = [];
    for (let k = 0; k < 10; k++, n++) {
      const payload = n % 3 === 0 ? { n, blob } : { n };
      batch.push(pub.request({ action: 'publish', event_type: 'flood.x', payload }, 10000));
    }
    for (const r of await Promise.all(batch)) seqs.push(r.seq);
  }
  reader.ws._socket.resume();
  await reader.waitEvent((e) => e.seq === seqs[seqs.length - 1], 30000, 'the last event after reading again');
  const got = reader.events().filter((e) => e.event_type === 'flood.x');
  assert.deepEqual(got.map((e) => e.seq), seqs, 'every event, in order, none twice');
  got.forEach((e, i) => {
    assert.equal(e.payload.n, i);
    assert.equal(e.payload.blob, i % 3 === 0 ? blob : undefined);
  });
  assert.ok(!reader.messages.some((m) => m.type === 'gap'), 'no gap');
  assert.equal(reader.ws.readyState, 1, 'still open');
}));

async function metric(f, name) {
  const text = await (await fetch(`${f.http}/metrics`)).text();
  const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'm'));
  return m ? Number(m[1]) : 0;
}

/**
 * Stops `slow` reading and publishes 32 KiB events through `pub` until the
 * gateway drops some for it (its queue is full). Returns { seqs, publish }.
 */
async function fillQueue(f, slow, pub) {
  slow.ws._socket.pause(); // stop reading: the kernel buffers fill, then the gateway queue
  // 16 of these are half of --queue-bytes 1M: the queue fills by its count.
  const blob = 'z'.repeat(32 * 1024);
  const seqs = [];
  let n = 0;
  const publish = async (count) => {
    const batch = [];
    for (let k = 0; k < count; k++, n++) batch.push(pub.request({ action: 'publish', event_type: 'flood.x', payload: { n, blob } }, 10000));
    for (const r of await Promise.all(batch)) seqs.push(r.seq);
  };
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline && (await metric(f, 'nexus_gateway_drops_total')) < 4) await publish(4);
  assert.ok((await metric(f, 'nexus_gateway_drops_total')) >= 4, `events were dropped for the queue of the client that does not read (published ${seqs.length})`);
  return { seqs, publish };
}

test('a reply to a client whose queue is full of events is not lost: it comes, with a gap for the events', withFabric({
  gatewayArgs: ['--queue-messages', '16', '--queue-bytes', '1M', '--slow-timeout', '30s'],
}, async (f) => {
  const slow = await f.connect('rq-slow', 'recent=0');
  await slow.request({ action: 'subscribe', topics: ['flood.>'] });
  const pub = await f.connect('rq-pub', 'recent=0');
  const { seqs, publish } = await fillQueue(f, slow, pub);

  // Its queue is full of events: a request now must still get its reply.
  slow.send({ action: 'ping', id: 'while-full' });
  await sleep(300);
  await publish(8); // dropped as well; they must not take the reply's room
  slow.ws._socket.resume();
  const reply = await slow.waitFor((m) => m.type === 'reply' && m.id === 'while-full', 15000, 'the reply to the ping sent while the queue was full');
  assert.equal(reply.ok, true, JSON.stringify(reply));
  const gap = await slow.waitFor((m) => m.type === 'gap', 15000, 'a gap notice for the events dropped');
  assert.ok(gap.from <= gap.to, JSON.stringify(gap));
  // Every event is either delivered or inside a gap it was told about.
  await publish(1);
  await slow.waitEvent((e) => e.seq === seqs[seqs.length - 1], 15000, 'an event after the gap');
  const got = new Set(slow.events().map((e) => e.seq));
  const gaps = slow.messages.filter((m) => m.type === 'gap');
  for (const s of seqs) {
    assert.ok(got.has(s) || gaps.some((g) => g.from <= s && s <= g.to), `seq ${s} delivered or announced in a gap: ${JSON.stringify(gaps)}`);
  }
  assert.equal(slow.closed, null, 'the client that reads again stays connected');
}));

test('replies past the reserve of a full queue are never lost silently: the client is closed with 1008', withFabric({
  gatewayArgs: ['--queue-messages', '16', '--queue-bytes', '1M', '--slow-timeout', '2s'],
}, async (f) => {
  const slow = await f.connect('rq2-slow', 'recent=0');
  await slow.request({ action: 'subscribe', topics: ['flood.>'] });
  const pub = await f.connect('rq2-pub', 'recent=0');
  await fillQueue(f, slow, pub);
  const ids = Array.from({ length: 12 }, (_, i) => `many-${i}`);
  for (const id of ids) slow.send({ action: 'ping', id });
  await sleep(500);
  slow.ws._socket.resume(); // reads again before slow_timeout: it must still not lose a reply unnoticed
  const outcome = await Promise.race([
    slow.closePromise.then((c) => ({ closed: c })),
    waitFor(() => ids.every((id) => slow.messages.some((m) => m.type === 'reply' && m.id === id)), { timeout: 15000, what: 'all replies' })
      .then(() => ({ all: true })),
  ]);
  if (!outcome.all) {
    assert.equal(outcome.closed.code, 1008, JSON.stringify(outcome.closed));
    assert.match(outcome.closed.reason, /queue/i);
  }
}));

/** CPU time of process pid in clock ticks (utime + stime, /proc/PID/stat). */
function cpuTicks(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // from field 3 (state)
  return Number(fields[11]) + Number(fields[12]);
}

/** Times thread tid of pid was switched out (each wake-up of its loop is one). */
function threadSwitches(pid, tid) {
  const status = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
  const n = (k) => Number((status.match(new RegExp(`^${k}:\\s*(\\d+)`, 'm')) || [0, 0])[1]);
  return n('voluntary_ctxt_switches') + n('nonvoluntary_ctxt_switches');
}

test('an idle gateway does not wake up: no timer while no queue is full, little CPU', withFabric({
  gatewayArgs: ['--ping-interval', '60s', '--dead-timeout', '120s'],
}, async (f) => {
  const clients = [];
  for (let i = 0; i < 4; i++) {
    const c = await f.connect(`idle-${i}`, 'recent=0');
    await c.request({ action: 'subscribe', topics: ['idle.>'] });
    clients.push(c);
  }
  await sleep(1000); // let the connects settle
  const pid = f.gateway.child.pid;
  // The lws service loop runs on the main thread (tid = pid).
  const ticks0 = cpuTicks(pid), wakes0 = threadSwitches(pid, pid);
  await sleep(5000);
  const ticks = cpuTicks(pid) - ticks0, wakes = threadSwitches(pid, pid) - wakes0;
  assert.ok(wakes <= 3, `the lws thread slept through 5 idle seconds (woke ${wakes} times)`);
  assert.ok(ticks <= 10, `the idle gateway used ${ticks} clock ticks of CPU in 5 s`);
  // Events still go out at once, without a tick.
  const t0 = Date.now();
  const r = await clients[0].request({ action: 'publish', event_type: 'idle.ping', payload: {} });
  for (const c of clients) await c.waitEvent((e) => e.seq === r.seq, 2000, 'the event after the idle time');
  assert.ok(Date.now() - t0 < 1000, `delivered in ${Date.now() - t0} ms`);
}));

test('an HTTP client on the WebSocket path without upgrade gets an HTTP error, not a hang', withFabric(async (f) => {
  const status = await new Promise((resolve, reject) => {
    const req = http.get(`${f.http}/ws/session/plain-http`, (res) => { res.resume(); resolve(res.statusCode); });
    req.setTimeout(5000, () => { req.destroy(); reject(new Error('timeout')); });
    req.on('error', reject);
  });
  assert.ok(status >= 400 && status < 500, `status ${status}`);
}));

test('resume while the broker does not answer: a gap names what could not be read, then live events flow', withFabric({ gatewayArgs: ['--broker-timeout', '300ms'] }, async (f) => {
  const pub = await f.connect('stall-pub');
  const watch = await f.connect('stall-watch', 'recent=0');
  await watch.request({ action: 'subscribe', topics: ['stall.>'] });
  const seqs = [];
  for (let i = 0; i < 5; i++) seqs.push((await pub.request({ action: 'publish', event_type: 'stall.x', payload: { i } })).seq);
  await watch.waitEvent((e) => e.seq === seqs[4], 5000, 'the gateway saw the last event');

  const pid = f.broker.child.pid;
  process.kill(pid, 'SIGSTOP'); // the broker holds its sockets but answers nothing
  let c;
  let gap;
  try {
    c = await f.connect('stall-c', `since=${seqs[0] - 1}&recent=0`);
    await c.request({ action: 'subscribe', topics: ['stall.>'] });
    gap = await c.waitFor((m) => m.type === 'gap', 15000, 'a gap notice');
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  assert.equal(gap.from, seqs[0], JSON.stringify(gap));
  assert.ok(gap.to >= seqs[4], `gap covers every unread event: ${JSON.stringify(gap)}`);
  assert.equal(c.events().length, 0, 'nothing replayed, nothing duplicated');

  // Live events are not held back by the abandoned replay. (Until the
  // gateway's link is back a publish is answered unavailable at once.)
  let next;
  await waitFor(async () => {
    const r = await pub.request({ action: 'publish', event_type: 'stall.x', payload: { i: 5 } }, 10000);
    if (!r.ok) assert.equal(r.error.code, 'unavailable', JSON.stringify(r));
    next = r.seq;
    return r.ok;
  }, { timeout: 15000, interval: 200, what: 'a publish after the broker resumed' });
  await c.waitEvent((e) => e.seq === next, 10000, 'a live event after the gap');
  assert.deepEqual(c.events().map((e) => e.seq), [next]);
}));

test('gateway memory stays bounded when a client sends large messages faster than they are handled', withFabric({ gatewayArgs: ['--command-bytes', '4M', '--dead-timeout', '300s'] }, async (f) => {
  const fs = require('node:fs');
  const pid = f.gateway.child.pid;
  const hwm = () => Number((fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmHWM:\s+(\d+)/) || [])[1]) / 1024;
  const before = hwm();
  const c = await f.connect('big-sender');
  // (--dead-timeout 300s: on a loaded machine the ASan gateway may take
  // over a minute to read the 100 MB, and the client's pong waits behind it.)
  // 400 pings of 256 KB (under max_message and the burst): 100 MB sent
  // at once, against 4 MiB of commands waiting for the worker at most.
  const pad = 'p'.repeat(256 * 1024);
  for (let i = 0; i < 400; i++) c.send({ action: 'ping', id: `big-${i}`, pad });
  // Every one is answered, ok or busy, and the connection stays.
  await c.waitFor(() => c.messages.filter((m) => m.type === 'reply' && String(m.id).startsWith('big-')).length === 400, 90000, '400 replies');
  const replies = c.messages.filter((m) => m.type === 'reply' && String(m.id).startsWith('big-'));
  const busy = replies.filter((m) => !m.ok);
  for (const m of busy) assert.equal(m.error.code, 'busy', JSON.stringify(m.error));
  const peak = hwm();
  // The bound itself, as the gateway reports it: never more than 4 MiB of
  // messages waited for the worker.
  const metrics = await (await fetch(`${f.http}/metrics`)).text();
  const peakCmd = Number((metrics.match(/^nexus_gateway_command_bytes_peak (\d+)$/m) || [])[1]);
  assert.ok(peakCmd > 0 && peakCmd <= 4 * 1024 * 1024, `command bytes peak ${peakCmd}`);
  // And the process: under AddressSanitizer RSS says little (quarantine,
  // redzones, shadow memory), so only the release build is held to it.
  const asan = fs.readFileSync(`/proc/${pid}/maps`, 'utf8').includes('libasan');
  if (!asan) assert.ok(peak - before < 60, `gateway peak RSS grew by ${Math.round(peak - before)} MB (from ${Math.round(before)} MB)`);
  assertOk(await c.request({ action: 'ping' }), 'ping'); // the connection still works
}));

test('resume edge cases: a since past the last seq, and a resume before any subscribe', withFabric(async (f) => {
  const pub = await f.connect('edge-pub');
  const first = await pub.request({ action: 'publish', event_type: 'q.one', payload: { n: 1 } });
  await pub.request({ action: 'publish', event_type: 'other.one', payload: { n: 2 } });
  // since far past the last seq (a broker whose data was reset): live events still come.
  const far = await f.connect('edge-far', 'since=99999999&recent=0');
  assertOk(await far.request({ action: 'subscribe', topics: ['z.>'] }), 'subscribe');
  const live = await pub.request({ action: 'publish', event_type: 'z.live', payload: {} });
  await far.waitEvent((e) => e.seq === live.seq, 5000, 'the live event after a since past the end');
  // resume before subscribing waits for the first subscription, and then
  // replays only what it matches.
  const early = await f.connect('edge-early', 'recent=0');
  const r = await early.request({ action: 'resume', since: 0 });
  assertOk(r, 'resume');
  assert.equal(r.deferred, true, JSON.stringify(r));
  await sleep(200);
  assert.deepEqual(early.events(), [], 'nothing replayed before a subscription');
  assertOk(await early.request({ action: 'subscribe', topics: ['q.>'] }), 'subscribe');
  await early.waitEvent((e) => e.seq === first.seq, 5000, 'the replayed q.one');
  await sleep(200);
  assert.deepEqual(early.events().map((e) => e.event_type), ['q.one'], 'only the subscribed topic is replayed');
}));

test('a resume to clients that do not read does not hold up the others', withFabric({
  gatewayArgs: ['--queue-messages', '64', '--queue-bytes', '256k', '--slow-timeout', '20s'],
}, async (f) => {
  const pub = await f.connect('stall-pub', 'recent=0');
  const blob = 'h'.repeat(8 * 1024);
  for (let i = 0; i < 400; i += 20) {
    await Promise.all(Array.from({ length: 20 }, (_, k) => pub.request({ action: 'publish', event_type: 'hist.x', payload: { n: i + k, blob } }, 10000)));
  }
  // Five clients resume from the start of 3 MB of history and never read.
  const stuck = [];
  for (let i = 0; i < 5; i++) {
    const c = await f.connect(`stall-${i}`, 'since=0&recent=0');
    c.ws._socket.pause();
    c.send({ action: 'subscribe', topics: ['hist.>'] });
    stuck.push(c);
  }
  await sleep(300);
  // Everyone else is served at once, over WebSocket and HTTP.
  const other = await f.connect('stall-other', 'recent=0');
  const worst = [];
  for (let i = 0; i < 5; i++) {
    const t0 = Date.now();
    assertOk(await other.request({ action: 'ping' }, 10000), 'ping');
    worst.push(Date.now() - t0);
    const h0 = Date.now();
    const r = await fetch(`${f.http}/events/stats`, { signal: AbortSignal.timeout(10000) });
    assert.equal(r.status, 200);
    worst.push(Date.now() - h0);
  }
  assert.ok(Math.max(...worst) < 2500, `requests waited ${Math.max(...worst)} ms behind the stuck replays`);
}));

test('message.direct without a target is refused with bad_request naming "to"', withFabric(async (f) => {
  // It used to be acknowledged and reach nobody.
  const a = await f.connect('dm-none-a');
  const b = await f.connect('dm-none-b');
  await b.request({ action: 'subscribe', topics: ['message.*'] });
  for (const msg of [
    { action: 'publish', event_type: 'message.direct', payload: { message: 'hi' } },
    { action: 'publish', event_type: 'message.direct' },
    { action: 'publish', event_type: 'message.direct', payload: 'text' },
    // A target at the top level, but a payload it cannot travel in.
    { action: 'publish', event_type: 'message.direct', to: 'dm-none-b', payload: 'text' },
    { action: 'publish', event_type: 'message.direct', to: 'dm-none-b', payload: [1, 2] },
  ]) {
    assertError(await a.request(msg), 'bad_request', { action: 'publish', mentions: "'to'" });
  }
  assertError(await a.request({ action: 'publish', event_type: 'message.direct', to: 'bad id!', payload: {} }), 'bad_request', { mentions: "'to'" });
  // Two addressees that differ: it went to the payload's one, never named
  // by the caller's 'to'. Refused; the same one twice is fine.
  assertError(await a.request({ action: 'publish', event_type: 'message.direct', to: 'dm-none-b', payload: { to: 'dm-none-c', text: 'for b only' } }),
    'bad_request', { action: 'publish', mentions: "'to'" });
  const same = await a.request({ action: 'publish', event_type: 'message.direct', to: 'dm-none-b', payload: { to: 'dm-none-b', text: 'twice named' } });
  assertOk(same, 'publish');
  assert.equal((await b.waitEvent((e) => e.seq === same.seq, 5000, 'named twice')).payload.text, 'twice named');
  // The connection carries on; with a target it is delivered.
  const ok = await a.request({ action: 'publish', event_type: 'message.direct', to: 'dm-none-b', payload: { message: 'hi' } });
  assertOk(ok, 'publish');
  const got = await b.waitEvent((e) => e.seq === ok.seq, 5000, 'the direct message');
  assert.equal(got.payload.to, 'dm-none-b');

  // Over HTTP too.
  const post = async (path, body) => {
    const res = await fetch(`${f.http}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(5000) });
    return { status: res.status, json: await res.json() };
  };
  let r = await post('/events', { event_type: 'message.direct', session_id: 'dm-http', payload: { message: 'x' } });
  assert.equal(r.status, 400, JSON.stringify(r));
  assert.equal(r.json.error.code, 'bad_request');
  assert.match(r.json.error.message, /'to'/);
  for (const to of ['', 42, 'bad id!']) {
    r = await post('/message', { from: 'dm-http', to, message: 'x' });
    assert.equal(r.status, 400, JSON.stringify(r));
    assert.match(r.json.error.message, /'to'/);
  }
  r = await post('/events', { event_type: 'message.direct', session_id: 'dm-http', to: 'dm-none-b', payload: 'y' });
  assert.equal(r.status, 400, JSON.stringify(r));
  assert.match(r.json.error.message, /object payload/);
  r = await post('/events', { event_type: 'message.direct', session_id: 'dm-http', to: 'dm-none-b', payload: { to: 'dm-none-c', message: 'y' } });
  assert.equal(r.status, 400, JSON.stringify(r));
  assert.match(r.json.error.message, /different sessions/);
  r = await post('/events', { event_type: 'message.direct', session_id: 'dm-http', to: 'dm-none-b', payload: { message: 'y' } });
  assert.equal(r.status, 201, JSON.stringify(r));
  await b.waitEvent((e) => e.seq === r.json.seq, 5000, 'the HTTP direct message');
}));

/** A WebSocket upgrade by hand: resolves the HTTP answer when refused. */
function rawUpgrade(f, path, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port: f.port, path,
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers },
    });
    req.setTimeout(5000, () => req.destroy(new Error(`timeout: upgrade ${path}`)));
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve({ status: 101 }); });
    req.on('response', (res) => { readResponse(res).then(resolve, reject); });
    req.on('error', reject);
    req.end();
  });
}

test('a refused upgrade gets an HTTP status and a JSON error: 404 wrong path, 400 bad session id, 403 origin', withFabric(async (f) => {
  // A wrong path or session id used to drop the connection without an answer.
  for (const [path, status, code, headers] of [
    ['/ws/nowhere', 404, 'not_found'],
    ['/ws/session/', 400, 'bad_request'],
    [`/ws/session/${'x'.repeat(65)}`, 400, 'bad_request'],
    ['/ws/session/bad%20id', 400, 'bad_request'],
    ['/ws/session/ok-id', 403, 'forbidden_origin', { Origin: 'http://evil.example' }],
    // Cut, a capability list (or a name) would be stored wrong in silence.
    [`/ws/session/caps-id?capabilities=${Array.from({ length: 47 }, (_, i) => `skill${String(i).padStart(5, '0')}`).join(',')}`, 400, 'bad_request'],
    [`/ws/session/name-id?name=${'n'.repeat(128)}`, 400, 'bad_request'],
    // Not UTF-8 once decoded: they were dropped in silence (name null, a
    // capability gone).
    ['/ws/session/utf-id?name=%ff%fe', 400, 'bad_request'],
    ['/ws/session/utf-id?capabilities=%c3%28,py', 400, 'bad_request'],
  ]) {
    const r = await rawUpgrade(f, path, headers);
    assert.equal(r.status, status, `${path}: ${r.status} ${r.text}`);
    assert.match(r.type, /^application\/json/, `${path}: ${r.type}`);
    assert.equal(r.json && r.json.error && r.json.error.code, code, `${path}: ${r.text}`);
    assert.equal(typeof r.json.error.message, 'string');
  }
  const c = new WsClient(`${f.wsBase}/ws/session/${'y'.repeat(65)}`);
  assert.equal(await c.unexpected, 400);
  // UTF-8 that is valid is taken as it is.
  await f.connect('utf-ok', `name=${encodeURIComponent('Zoë')}&capabilities=${encodeURIComponent('c++,python,日本')}`);
  const rec = (await (await fetch(`${f.http}/sessions/active`)).json()).sessions.find((x) => x.session === 'utf-ok');
  assert.equal(rec && rec.name, 'Zoë', JSON.stringify(rec));
  assert.deepEqual(rec.capabilities, ['c++', 'python', '日本']);
  // The gateway carries on.
  const ok = await f.connect('after-refusals');
  assertOk(await ok.request({ action: 'ping' }), 'ping');
}));

// RFC 6455 5.1: an unmasked client frame closes the connection with 1002,
// and the log says so once (the receive and the writable callback both
// saw it, and both logged it).
test('a frame without its mask closes with 1002, logged once for the connection', withFabric(async (f) => {
  const LINE = /websocket closed: the client sent a frame without its mask/g;
  const c = await f.connect('unmasked-1', 'recent=0');
  c.ws.send(JSON.stringify({ action: 'ping', id: 'u1' }), { mask: false });
  const closed = await c.waitClose(5000);
  assert.equal(closed.code, 1002, JSON.stringify(closed));
  assert.equal(c.messages.some((m) => m.type === 'reply' && m.id === 'u1'), false, 'not acted on');
  await waitFor(() => LINE.test(f.gateway.output), { timeout: 3000, what: 'the log line' });
  // Another connection, so that anything the first had left to log is out.
  assertOk(await (await f.connect('unmasked-after')).request({ action: 'ping' }), 'ping');
  await sleep(300);
  assert.equal((f.gateway.output.match(LINE) || []).length, 1, f.gateway.output);
}));

test('a connection that stops answering pings is reaped within dead_timeout, and its session goes', withFabric({
  gatewayArgs: ['--ping-interval', '1s', '--dead-timeout', '3s'],
}, async (f) => {
  const watch = await f.connect('reap-watch', 'recent=0');
  await watch.request({ action: 'subscribe', topics: ['session.>'] });
  const alive = await f.connect('reap-alive', 'recent=0');
  const dead = await f.connect('reap-dead', 'recent=0');
  await watch.waitEvent((e) => e.event_type === 'session.connected' && e.payload.session === 'reap-dead', 5000, 'connected');
  // It stops reading its socket: the gateway's pings get no pong.
  dead.ws._socket.pause();
  const t0 = Date.now();
  const disc = await watch.waitEvent((e) => e.event_type === 'session.disconnected' && e.payload.session === 'reap-dead',
    15000, 'session.disconnected of the connection that does not answer');
  const took = Date.now() - t0;
  assert.ok(took >= 2000 && took < 10000, `reaped after ${took} ms (ping 1 s, dead_timeout 3 s)`);
  assert.ok(disc.payload, JSON.stringify(disc));
  // One that answers its pings stays.
  await sleep(1000);
  assert.ok(!watch.events().some((e) => e.event_type === 'session.disconnected' && e.payload.session === 'reap-alive'),
    'the connection that answers pings was not reaped');
  assertOk(await alive.request({ action: 'ping', id: 'still' }), 'ping', 'still');
}));

test('bad topics and patterns over WebSocket: precise errors, the connection stays', withFabric(async (f) => {
  const c = await f.connect('bad-topics', 'recent=0');
  assertError(await c.request({ action: 'publish', event_type: 'a..b', payload: {} }), 'bad_topic', { mentions: 'event_type' });
  assertError(await c.request({ action: 'publish', event_type: 'work.*', payload: {} }), 'bad_topic', { mentions: 'event_type' });
  // What is wrong with it, as the CLI says.
  assertError(await c.request({ action: 'publish', event_type: 'a..b', payload: {} }), 'bad_topic', { mentions: 'empty token' });
  assertError(await c.request({ action: 'publish', event_type: 't'.repeat(300), payload: {} }), 'bad_topic', { mentions: 'over 255 bytes' });
  assertError(await c.request({ action: 'publish', event_type: Array(34).fill('x').join('.'), payload: {} }), 'bad_topic', { mentions: 'more than 32 tokens' });
  assertError(await c.request({ action: 'subscribe', topics: ['a.>.b'] }), 'bad_pattern', { mentions: 'a.>.b' });
  assertError(await c.request({ action: 'history', topics: ['x..y'] }), 'bad_pattern', { mentions: 'x..y' });
  assertOk(await c.request({ action: 'ping', id: 'after' }), 'ping', 'after');
}));

test('a subscribe past 64 patterns is refused whole: none of its patterns is added', withFabric(async (f) => {
  const c = await f.connect('many-subs', 'recent=0');
  const first = Array.from({ length: 60 }, (_, i) => `many.t${i}`);
  const r1 = await c.request({ action: 'subscribe', topics: first, id: 's1' });
  assertOk(r1, 'subscribe', 's1');
  assert.equal(r1.topics.length, 60);
  // 4 already held + 6 new (one twice) = 66 > 64: refused, the set stays 60.
  const more = ['many.t0', 'many.t1', 'many.t2', 'many.t3', 'many.n0', 'many.n1', 'many.n1', 'many.n2', 'many.n3', 'many.n4', 'many.n5'];
  assertError(await c.request({ action: 'subscribe', topics: more, id: 's2' }), 'bad_request', { id: 's2', mentions: '64' });
  const r3 = await c.request({ action: 'unsubscribe', topics: ['many.none'], id: 's3' });
  assertOk(r3, 'unsubscribe', 's3');
  assert.deepEqual([...r3.topics].sort(), [...first].sort(), 'the refused subscribe added nothing');
  // Exactly up to 64 (duplicates counted once) is fine.
  const r4 = await c.request({ action: 'subscribe', topics: ['many.n0', 'many.n1', 'many.n1', 'many.n2', 'many.n3'], id: 's4' });
  assertOk(r4, 'subscribe', 's4');
  assert.equal(r4.topics.length, 64);
  // many.n5 was only in the refused request: its events do not arrive.
  const p = await f.connect('many-pub', 'recent=0');
  assertOk(await p.request({ action: 'publish', event_type: 'many.n5', payload: { k: 1 }, id: 'p1' }), 'publish', 'p1');
  assertOk(await p.request({ action: 'publish', event_type: 'many.n3', payload: { k: 2 }, id: 'p2' }), 'publish', 'p2');
  // Events arrive in seq order: once many.n3 is in, many.n5 (published first) would be too.
  await waitFor(() => c.messages.some((m) => m.type === 'event' && m.event_type === 'many.n3'), { what: 'many.n3 event' });
  assert.ok(!c.messages.some((m) => m.type === 'event' && m.event_type === 'many.n5'), 'many.n5 was never subscribed');
}));

test('a reply larger than the send queue is an error reply, and the reading client stays', withFabric({
  gatewayArgs: ['--queue-bytes', '64k', '--slow-timeout', '1s'],
}, async (f) => {
  const c = await f.connect('big-reply', 'recent=0');
  const big = 'x'.repeat(8000);
  for (let i = 0; i < 12; i++) await c.request({ action: 'publish', event_type: 'big.reply', payload: { big, i } });
  const r = await c.request({ action: 'history', topics: ['big.reply'], limit: 12, id: 'h-big' });
  assertError(r, 'too_large', { id: 'h-big', mentions: 'queue_bytes' });
  // A smaller page fits.
  const small = await c.request({ action: 'history', topics: ['big.reply'], limit: 2, id: 'h-small' });
  assertOk(small, 'history', 'h-small');
  await sleep(2500); // past slow_timeout: a client that reads is not closed
  assert.equal(c.closed, null, `still open: ${JSON.stringify(c.closed)}`);
  assertOk(await c.request({ action: 'ping', id: 'after-big' }), 'ping', 'after-big');
}));

test('an event larger than any send queue takes is a gap told at once, live and in a replay, and the reading client stays', withFabric({
  gatewayArgs: ['--queue-bytes', '64k', '--slow-timeout', '1s'],
}, async (f) => {
  // 64k less its reserve (8k) is 56k for events; this one is ~100k as JSON.
  // It used to start the slow clock of every client it matched: each was
  // closed with 1008 after slow_timeout, though it read everything, and
  // never told of the gap (told when the queue drains; an empty one never
  // does).
  const c = await f.connect('big-event', 'recent=0');
  assertOk(await c.request({ action: 'subscribe', topics: ['big.event'] }), 'subscribe');
  const p = await f.connect('big-event-pub', 'recent=0');
  const big = await p.request({ action: 'publish', event_type: 'big.event', payload: { big: 'e'.repeat(100000) } });
  assertOk(big, 'publish');
  const gap = await c.waitFor((m) => m.type === 'gap', 5000, 'the gap for the big event');
  assert.deepEqual([gap.from, gap.to], [big.seq, big.seq], JSON.stringify(gap));
  const after = await p.request({ action: 'publish', event_type: 'big.event', payload: { small: true } });
  await c.waitEvent((e) => e.seq === after.seq, 5000, 'the small event after it');
  await sleep(1500); // past slow_timeout: the client that reads stays
  assert.equal(c.closed, null, `still open: ${JSON.stringify(c.closed)}`);
  assertOk(await c.request({ action: 'ping', id: 'after-big-event' }), 'ping', 'after-big-event');
  // A replay over it: the same gap, and the events after it.
  c.messages.length = 0;
  c.send({ action: 'resume', since: big.seq - 1, id: 'res-big' });
  const reply = await c.waitFor((m) => m.type === 'reply' && m.id === 'res-big', 5000, 'the resume reply');
  assertOk(reply, 'resume', 'res-big');
  const seen = c.messages.filter((m) => m.type === 'gap' || m.type === 'event').map((m) => m.type === 'gap' ? `gap ${m.from}-${m.to}` : m.seq);
  assert.deepEqual(seen, [`gap ${big.seq}-${big.seq}`, after.seq], JSON.stringify(seen));
  const metrics = await (await fetch(`${f.http}/metrics`)).text();
  assert.match(metrics, /^nexus_gateway_oversize_drops_total 2$/m);
  await sleep(1500);
  assert.equal(c.closed, null, `still open after the replay: ${JSON.stringify(c.closed)}`);
}));

test('a welcome larger than the send queue leaves out its oldest recent events, says how many, and the client stays', withFabric({
  gatewayArgs: ['--queue-bytes', '8k', '--slow-timeout', '1s'],
}, async (f) => {
  const pub = await f.connect('welcome-pub', 'recent=0');
  assertOk(await pub.request({ action: 'subscribe', topics: ['big.welcome'] }), 'subscribe');
  const big = 'w'.repeat(900);
  for (let i = 0; i < 16; i++) await pub.request({ action: 'publish', event_type: 'big.welcome', payload: { big, i } });
  // Seen live by a client, so in the gateway's ring of recent events too.
  await pub.waitEvent((e) => e.payload.i === 15, 5000, 'the last big event');
  const raw = [];
  const c = f.track(new WsClient(`${f.wsBase}/ws/session/welcome-big?recent=16`));
  c.ws.on('message', (d) => raw.push(d.toString()));
  await c.open();
  const w = c.welcome;
  const text = raw.find((t) => t.includes('"connection"'));
  // It fits half the queue (4 KiB), as every reply must.
  assert.ok(text.length <= 4096, `welcome of ${text.length} bytes fits`);
  const kept = w.recent_events;
  assert.ok(kept.length >= 1, `some events are kept: ${text.slice(0, 200)}`);
  assert.equal(w.recent_omitted, 16 - kept.length, `recent_omitted counts what was left out: ${w.recent_omitted}`);
  // The newest are kept, in order (the ring also holds session.connected
  // events); the oldest were left out, no more than needed.
  const is = kept.filter((e) => e.event_type === 'big.welcome').map((e) => e.payload.i);
  assert.ok(is.length >= 1, JSON.stringify(kept.map((e) => e.event_type)));
  assert.deepEqual(is, Array.from({ length: is.length }, (_, k) => 16 - is.length + k));
  const next = JSON.stringify({ type: 'event', seq: 1, event_type: 'big.welcome', session_id: 'welcome-pub', payload: { big, i: 0 }, timestamp: kept[0].timestamp });
  assert.ok(text.length + next.length + 1 > 4096 - 24, `one more event would not have fitted (${text.length} + ${next.length})`);
  // A small welcome leaves nothing out.
  const small = await f.connect('welcome-small', 'recent=2');
  assert.equal(small.welcome.recent_events.length, 2);
  assert.equal(small.welcome.recent_omitted, 0);
  await sleep(1500); // past slow_timeout: the client that reads stays
  assert.equal(c.closed, null, `still open: ${JSON.stringify(c.closed)}`);
  assertOk(await c.request({ action: 'ping', id: 'after-welcome' }), 'ping', 'after-welcome');
}));

test('a hostile client: binary and NUL frames, wrong types, bad ids, fragments, ping floods, churn: precise errors, nothing stored, all stays up', { timeout: 90000 }, withFabric(async (f) => {
  const c = await f.connect('hostile', 'recent=0');
  // The next message from index `from` that is a reply (errors without an id included).
  const nextReply = (from) => c.waitFor((m) => m.type === 'reply', 3000, 'a reply', from);
  // Binary frames are refused whole, even when they hold a valid request.
  let from = c.messages.length;
  c.ws.send(Buffer.from(JSON.stringify({ action: 'publish', event_type: 'bin.stored', payload: {}, id: 'bin' })), { binary: true });
  assertError(await nextReply(from), 'bad_request', { mentions: 'binary' });
  from = c.messages.length;
  c.ws.send(Buffer.from([0xff, 0x00, 0x81]), { binary: true });
  assertError(await nextReply(from), 'bad_request', { mentions: 'binary' });
  // A NUL byte: what follows it is not silently dropped.
  from = c.messages.length;
  c.ws.send('{"action":"publish","event_type":"nul.stored","payload":{},"id":"nul"}\u0000{"x":1}');
  assertError(await nextReply(from), 'bad_json', { id: 'nul', mentions: 'NUL' });
  // Ids that cannot be echoed are errors, not silence.
  for (const raw of ['{"action":"ping","id":{}}', '{"action":"ping","id":1.5}', '{"action":"ping","id":true}']) {
    from = c.messages.length;
    c.send(raw);
    assertError(await nextReply(from), 'bad_request', { mentions: "'id'" });
  }
  from = c.messages.length;
  c.send({ action: 'ping', id: 'i'.repeat(300) });
  const longId = await nextReply(from);
  assertError(longId, 'bad_request', { mentions: '256' });
  assert.equal(longId.id, undefined);
  // A field of the wrong type is named as such, not as missing.
  const cases = [
    [{ action: 5 }, 'bad_request', "'action' must be a string"],
    [{ action: 'publish', event_type: 5, payload: {} }, 'bad_request', "'event_type' must be a string"],
    [{ action: 'publish', event_type: 'message.direct', to: 5, payload: {} }, 'bad_request', "'to' must be a session id"],
    [{ action: 'subscribe', topics: 'a b' }, 'bad_pattern', 'a b'],
    [{ action: 'subscribe', topics: '' }, 'bad_pattern', "''"],
    [{ action: 'claim', work_id: 5 }, 'bad_request', "'work_id' must be a string"],
    [{ action: 'renew', work_id: 'w', token: 'x' }, 'bad_request', "'token' must be a non-negative integer"],
    [{ action: 'release', work_id: 'w', token: -1 }, 'bad_request', "'token' must be a non-negative integer"],
    [{ action: 'resume', since: 'x' }, 'bad_request', "'since' must be a non-negative integer"],
    [{ action: 'history', limit: '10' }, 'bad_request', "'limit'"],
    [{ action: 'history', since_seq: -1 }, 'bad_request', "'since_seq'"],
    [{ action: 'history', cursor: 'x' }, 'bad_request', "'cursor'"],
    [{ action: 'history', order: 'up' }, 'bad_request', "'order'"],
    [{ action: 'history', order: 5 }, 'bad_request', "'order'"],
  ];
  for (const [req, code, mentions] of cases) {
    const r = await c.request(req);
    assertError(r, code, { mentions: mentions.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') });
  }
  const subs = await c.request({ action: 'subscribe', topics: ['ok.topic'] });
  assert.deepEqual(subs.topics, ['ok.topic'], 'the bad patterns were not subscribed');
  // A message in fragments is put together.
  c.ws.send('{"action":"pi', { fin: false });
  c.ws.send('ng","id":', { fin: false });
  c.ws.send('"frag"}', { fin: true });
  assertOk(await c.waitFor((m) => m.id === 'frag', 3000, 'fragmented ping'), 'ping', 'frag');
  // A ping flood is answered by lws and costs the connection nothing.
  for (let i = 0; i < 5000; i++) c.ws.ping('p');
  assertOk(await c.request({ action: 'ping', id: 'after-flood' }, 10000), 'ping', 'after-flood');
  // Bad handshake parameters are refused, not guessed at (since=abc read
  // as 0 used to replay the whole history).
  for (const q of ['since=abc', 'since=-1', 'since=9223372036854775808', 'since=18446744073709551615',
    'since=99999999999999999999', 'recent=-5', 'recent=5000', 'recent=x']) {
    const bad = f.track(new WsClient(`${f.wsBase}/ws/session/hostile-q?${q}`));
    assert.equal(await bad.unexpected, 400, q);
  }
  // Connections opened and dropped fast, in a bounded loop.
  for (let i = 0; i < 60; i++) {
    const w = new WebSocket(`${f.wsBase}/ws/session/churn-${i % 3}`);
    await new Promise((res) => { w.on('open', () => { w.terminate(); res(); }); w.on('error', res); });
  }
  await waitFor(async () => {
    const s = await (await fetch(`${f.http}/sessions/active`)).json();
    return !s.sessions.some((x) => /^churn-/.test(x.session || x.id || ''));
  }, { timeout: 10000, what: 'the churned sessions to be unregistered' });
  // Still up, and nothing of the refused requests was stored.
  assert.equal(c.closed, null, JSON.stringify(c.closed));
  assertOk(await c.request({ action: 'ping', id: 'end' }), 'ping', 'end');
  const h = await c.request({ action: 'history', limit: 1000 });
  const types = h.events.map((e) => e.event_type);
  for (const t of ['bin.stored', 'nul.stored', 'message.direct']) assert.ok(!types.includes(t), `${t} not stored: ${types}`);
}));

test('a gateway that stops (SIGTERM) closes its WebSockets with 1001 going away, not a cut (1006)', withFabric(async (f) => {
  const a = await f.connect('bye-a');
  const b = await f.connect('bye-b', 'recent=0');
  await f.gateway.stop();
  for (const c of [a, b]) {
    const closed = await c.waitClose(5000);
    assert.equal(closed.code, 1001, JSON.stringify(closed));
  }
}));
