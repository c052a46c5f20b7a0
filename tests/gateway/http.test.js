'use strict';
// Every HTTP endpoint of nexus-gateway (docs/gateway.md), good and bad
// requests, against a real nexusd + nexus-gateway per test.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const http = require('node:http');
const { withFabric, sleep, waitFor, readResponse } = require('./lib');

const ISO_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

async function call(f, method, path, body, headers = {}) {
  const init = { method, headers: { ...headers }, signal: AbortSignal.timeout(5000) };
  if (body !== undefined) {
    init.body = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    if (!init.headers['Content-Type']) init.headers['Content-Type'] = 'application/json';
  }
  const res = await fetch(`${f.http}${path}`, init);
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, type: res.headers.get('content-type') || '', headers: res.headers, text, json };
}

function assertJson(r, status) {
  assert.equal(r.status, status, `status ${r.status} (want ${status}): ${r.text.slice(0, 500)}`);
  assert.match(r.type, /^application\/json/, `content type of ${r.text.slice(0, 200)}: ${r.type}`);
  assert.ok(r.json !== undefined, `JSON body: ${r.text.slice(0, 200)}`);
  return r.json;
}

function assertHttpError(r, status, code) {
  const j = assertJson(r, status);
  assert.ok(j.error && typeof j.error === 'object', `{"error":{...}}: ${r.text}`);
  assert.equal(typeof j.error.code, 'string', r.text);
  assert.equal(typeof j.error.message, 'string', r.text);
  if (code) assert.equal(j.error.code, code, r.text);
  return j.error;
}

/** A raw request (no URL normalisation), for paths fetch would clean up. */
function raw(f, method, path) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: f.port, method, path }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.setTimeout(5000, () => { req.destroy(new Error('timeout')); });
    req.on('error', reject);
    req.end();
  });
}

function curl(args) {
  return new Promise((resolve, reject) => {
    execFile('curl', args, { timeout: 10000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)));
  });
}

test('UDC endpoints: /health, /capabilities, /state, /dependencies', withFabric(async (f) => {
  let j = assertJson(await call(f, 'GET', '/health'), 200);
  for (const k of ['status', 'service', 'version', 'timestamp', 'broker']) assert.ok(k in j, `health.${k}: ${JSON.stringify(j)}`);
  assert.match(j.timestamp, ISO_UTC);
  assert.equal(typeof j.status, 'string');

  j = assertJson(await call(f, 'GET', '/capabilities'), 200);
  for (const k of ['service', 'version', 'features', 'endpoints']) assert.ok(k in j, `capabilities.${k}: ${JSON.stringify(j)}`);
  assert.ok(Array.isArray(j.features) || typeof j.features === 'object');
  // Every endpoint the gateway serves (its list left out /metrics and some
  // /work calls): each one listed, and each listed one served.
  for (const e of ['/ws/session/{session_id}', '/ws/events', '/mcp', '/health', '/capabilities', '/state',
    '/dependencies', '/message', '/sessions/active', '/sessions/{id}', '/sessions/capabilities', '/events',
    '/events/history', '/events/recent', '/events/stats', '/work/claim', '/work/renew', '/work/release',
    '/work/complete', '/work/reopen', '/work/claimed', '/metrics']) {
    assert.ok(j.endpoints.includes(e), `${e} in ${JSON.stringify(j.endpoints)}`);
  }
  assert.equal(new Set(j.endpoints).size, j.endpoints.length, `listed once each: ${j.endpoints}`);
  // (A POST endpoint answers GET with 405; /sessions/{id} is templated.)
  for (const e of j.endpoints.filter((x) => !x.startsWith('/ws/') && !x.includes('{'))) {
    const r = await raw(f, 'GET', e);
    assert.notEqual(r.status, 404, `${e} is served: ${r.body.slice(0, 200)}`);
  }

  const ws = await f.connect('state-ws');
  j = assertJson(await call(f, 'GET', '/state'), 200);
  for (const k of ['uptime_seconds', 'connected_sessions', 'websocket_clients', 'events_total', 'events_per_second',
    'errors_last_hour', 'last_restart', 'event_latency_ms', 'broker']) assert.ok(k in j, `state.${k}: ${JSON.stringify(j)}`);
  assert.equal(typeof j.uptime_seconds, 'number');
  assert.ok(j.websocket_clients >= 1, JSON.stringify(j));
  assert.ok(j.connected_sessions >= 1, JSON.stringify(j));
  assert.match(j.last_restart, ISO_UTC);
  await ws.close();

  j = assertJson(await call(f, 'GET', '/dependencies'), 200);
  assert.ok(Array.isArray(j.dependencies), JSON.stringify(j));
  const d = j.dependencies.find((x) => x.name === 'nexusd');
  assert.ok(d, JSON.stringify(j));
  for (const k of ['endpoint', 'status', 'latency_ms']) assert.ok(k in d, `dependency.${k}: ${JSON.stringify(d)}`);
  assert.match(String(d.endpoint), new RegExp(String(f.brokerPorts[0])));
}));

test('POST /message: direct and broadcast', withFabric(async (f) => {
  const target = await f.connect('msg-target');
  const other = await f.connect('msg-other');
  for (const c of [target, other]) await c.request({ action: 'subscribe', topics: ['message.*'] });

  let j = assertJson(await call(f, 'POST', '/message', { from: 'msg-http', to: 'msg-target', subject: 'hi', message: 'hello there', priority: 'high' }), 200);
  assert.equal(j.ok, true);
  assert.equal(typeof j.seq, 'number');
  const dm = await target.waitEvent((e) => e.seq === j.seq, 5000, 'message.direct');
  assert.equal(dm.event_type, 'message.direct');
  assert.equal(dm.session_id, 'msg-http');
  assert.equal(dm.payload.message, 'hello there');
  assert.equal(dm.payload.subject, 'hi');

  j = assertJson(await call(f, 'POST', '/message', { from: 'msg-http', subject: 'all', message: 'to everyone' }), 200);
  const b1 = await target.waitEvent((e) => e.seq === j.seq, 5000, 'broadcast at target');
  const b2 = await other.waitEvent((e) => e.seq === j.seq, 5000, 'broadcast at other');
  assert.equal(b1.event_type, 'message.broadcast');
  assert.equal(b2.payload.message, 'to everyone');
  await sleep(100);
  assert.ok(!other.events().some((e) => e.event_type === 'message.direct'), 'the direct message did not reach another session');

  assertHttpError(await call(f, 'POST', '/message', { from: 'msg-http' }), 400, 'bad_request');
  assertHttpError(await call(f, 'POST', '/message', '{"from": "x", "message": '), 400);
}));

test('sessions: /sessions/active, /sessions/{id}, /sessions/capabilities', withFabric(async (f) => {
  const py = await f.connect('http-py', 'capabilities=python,websocket&name=Py');
  const rs = await f.connect('http-rs', 'capabilities=rust');
  let j = assertJson(await call(f, 'GET', '/sessions/active'), 200);
  assert.ok(Array.isArray(j.sessions));
  assert.equal(j.count, j.sessions.length);
  assert.deepEqual(j.sessions.map((s) => s.session).filter((s) => s.startsWith('http-')).sort(), ['http-py', 'http-rs']);
  const rec = j.sessions.find((s) => s.session === 'http-py');
  assert.deepEqual(rec.capabilities, ['python', 'websocket']);
  assert.equal(rec.name, 'Py');
  assert.ok('last_seen' in rec && 'state' in rec && 'status' in rec, JSON.stringify(rec));

  j = assertJson(await call(f, 'GET', '/sessions/http-py'), 200);
  const one = j.session && typeof j.session === 'object' ? j.session : j;
  assert.equal(one.session, 'http-py');
  assertHttpError(await call(f, 'GET', '/sessions/nobody-here'), 404, 'not_found');

  // The seed's query.
  j = assertJson(await call(f, 'GET', '/sessions/capabilities?skill=python&available=true'), 200);
  assert.deepEqual(j.sessions.map((s) => s.session), ['http-py']);
  assert.equal(j.count, 1);
  await py.request({ action: 'status', state: 'busy' });
  j = assertJson(await call(f, 'GET', '/sessions/capabilities?skill=python&available=true'), 200);
  assert.deepEqual(j.sessions, [], 'a busy session is not available');
  j = assertJson(await call(f, 'GET', '/sessions/capabilities?skill=python'), 200);
  assert.deepEqual(j.sessions.map((s) => s.session), ['http-py']);
  j = assertJson(await call(f, 'GET', '/sessions/capabilities?skill=rust&available=true'), 200);
  assert.deepEqual(j.sessions.map((s) => s.session), ['http-rs']);
  await rs.close();
}));

test('events: POST /events, /events/history, /events/recent, /events/stats', withFabric(async (f) => {
  const watch = await f.connect('ev-watch');
  await watch.request({ action: 'subscribe', topics: ['>'] });

  const r = await call(f, 'POST', '/events', { event_type: 'build.done', payload: { ok: true, n: 1 }, session_id: 'ev-http' });
  let j = assertJson(r, 201);
  assert.equal(j.ok, true);
  assert.equal(typeof j.seq, 'number');
  const e = await watch.waitEvent((m) => m.seq === j.seq, 5000, 'build.done');
  assert.equal(e.event_type, 'build.done');
  assert.deepEqual(e.payload, { ok: true, n: 1 });
  assert.equal(e.session_id, 'ev-http');

  const seqs = [j.seq];
  for (let i = 0; i < 4; i++) {
    seqs.push(assertJson(await call(f, 'POST', '/events', { event_type: i % 2 ? 'work.note' : 'build.step', payload: { i } }), 201).seq);
  }
  const before = new Date(Date.now() - 60000).toISOString();

  j = assertJson(await call(f, 'GET', '/events/history?limit=100'), 200);
  assert.ok(Array.isArray(j.events));
  assert.equal(j.count, j.events.length);
  assert.ok('next_cursor' in j);
  for (const s of seqs) assert.ok(j.events.some((x) => x.seq === s), `history holds ${s}`);
  for (const x of j.events) {
    assert.equal(typeof x.seq, 'number');
    assert.equal(typeof x.event_type, 'string');
    assert.equal(typeof x.session_id, 'string');
    assert.match(x.timestamp, ISO_UTC);
  }
  // The seed's queries.
  // Without `since`, the history is "the last N events" (newest first).
  j = assertJson(await call(f, 'GET', '/events/history?event_type=work.*'), 200);
  assert.deepEqual(j.events.map((x) => x.seq).filter((s) => seqs.includes(s)).sort((a, b) => a - b), [seqs[2], seqs[4]]);
  assert.ok(j.events.every((x) => x.event_type.startsWith('work.')), JSON.stringify(j.events));
  j = assertJson(await call(f, 'GET', `/events/history?since=${encodeURIComponent(before)}`), 200);
  for (const s of seqs) assert.ok(j.events.some((x) => x.seq === s));
  // The same moment with a zone offset, and a plain date (midnight UTC).
  const d = new Date(Date.now() - 60000);
  const offset = new Date(d.getTime() + 90 * 60000).toISOString().replace('Z', '+01:30');
  j = assertJson(await call(f, 'GET', `/events/history?since=${encodeURIComponent(offset)}`), 200);
  for (const s of seqs) assert.ok(j.events.some((x) => x.seq === s), `since ${offset} holds ${s}`);
  j = assertJson(await call(f, 'GET', `/events/history?since=${before.slice(0, 10)}`), 200);
  for (const s of seqs) assert.ok(j.events.some((x) => x.seq === s), `since a date holds ${s}`);
  assertHttpError(await call(f, 'GET', `/events/history?since=${encodeURIComponent(before.replace('Z', '+25:00'))}`), 400, 'bad_request');
  j = assertJson(await call(f, 'GET', `/events/history?since=${seqs[2]}`), 200);
  assert.deepEqual(j.events.map((x) => x.seq), [seqs[3], seqs[4]]);
  j = assertJson(await call(f, 'GET', `/events/history?since=${encodeURIComponent(new Date(Date.now() + 3600000).toISOString())}`), 200);
  assert.deepEqual(j.events, []);
  // Paging
  let page = assertJson(await call(f, 'GET', `/events/history?limit=2&since=${seqs[0] - 1}`), 200);
  const paged = page.events.map((x) => x.seq);
  for (let guard = 0; page.next_cursor !== null && page.next_cursor !== undefined && guard < 20; guard++) {
    page = assertJson(await call(f, 'GET', `/events/history?limit=2&since=${seqs[0] - 1}&cursor=${page.next_cursor}`), 200);
    paged.push(...page.events.map((x) => x.seq));
  }
  for (const s of seqs) assert.ok(paged.includes(s), `paged history holds ${s}: ${paged}`);
  assert.deepEqual(paged, [...new Set(paged)].sort((a, b) => a - b), 'pages do not overlap and are in order');
  // Without since the pages go newest first, and following next_cursor with
  // the same query goes on to older events (the second page used to turn
  // to oldest first: duplicates, and the oldest never reached).
  page = assertJson(await call(f, 'GET', '/events/history?limit=2'), 200);
  const back = page.events.map((x) => x.seq);
  for (let guard = 0; page.next_cursor !== null && guard < 50; guard++) {
    page = assertJson(await call(f, 'GET', `/events/history?limit=2&cursor=${page.next_cursor}`), 200);
    back.push(...page.events.map((x) => x.seq));
  }
  assert.equal(page.next_cursor, null, 'the walk back ends');
  assert.deepEqual(back, [...new Set(back)].sort((a, b) => b - a), `newest first, no duplicate: ${back}`);
  for (const s of seqs) assert.ok(back.includes(s), `the walk back reaches ${s}`);
  assert.equal(back[back.length - 1], 1, 'down to the first event');
  j = assertJson(await call(f, 'GET', `/events/history?limit=2&order=asc&cursor=${seqs[1]}`), 200);
  assert.deepEqual(j.events.map((x) => x.seq), [seqs[1], seqs[2]], 'order=asc with a cursor: from it, oldest first');

  assertHttpError(await call(f, 'GET', '/events/history?limit=abc'), 400, 'bad_request');
  assertHttpError(await call(f, 'GET', '/events/history?since=not-a-time'), 400, 'bad_request');

  j = assertJson(await call(f, 'GET', '/events/recent?count=3'), 200);
  assert.equal(j.events.length, 3);
  assert.equal(j.count, 3);
  assert.deepEqual(j.events.map((x) => x.seq).slice(-2), [seqs[3], seqs[4]].filter((s) => j.events.some((x) => x.seq === s)));
  assert.ok(j.events.some((x) => x.seq === seqs[4]), 'the most recent event is there');
  j = assertJson(await call(f, 'GET', '/events/recent'), 200);
  assert.ok(j.events.length >= 5);

  j = assertJson(await call(f, 'GET', '/events/stats'), 200);
  assert.equal(typeof j.events_total, 'number');
  assert.ok(j.events_total >= 5, JSON.stringify(j));
  assert.equal(typeof j.events_per_second, 'number');
  assert.ok(j.by_type && typeof j.by_type === 'object', JSON.stringify(j));
  assert.ok(j.by_type['build.step'] >= 2, JSON.stringify(j.by_type));
  // Seed 003's fields: subscribers (WebSocket clients now), history_size, active.
  assert.equal(j.status, 'success', JSON.stringify(j));
  assert.equal(typeof j.message, 'string', JSON.stringify(j));
  assert.equal(j.subscribers, 1, `the one WebSocket client: ${JSON.stringify(j)}`);
  assert.equal(typeof j.history_size, 'number', JSON.stringify(j));
  assert.ok(j.history_size >= 5, JSON.stringify(j));
  assert.equal(j.active, true, JSON.stringify(j));
  const second = await f.connect('ev-watch-2');
  j = assertJson(await call(f, 'GET', '/events/stats'), 200);
  assert.equal(j.subscribers, 2, JSON.stringify(j));
  assert.equal(second.welcome.subscriber_count, 2, 'the welcome counts the same subscribers');

  // Bad requests
  assertHttpError(await call(f, 'POST', '/events', '{"event_type": "x", payload'), 400);
  assertHttpError(await call(f, 'POST', '/events', '[1,2]'), 400);
  assertHttpError(await call(f, 'POST', '/events', { payload: { a: 1 } }), 400, 'bad_request');
  assertHttpError(await call(f, 'POST', '/events', { event_type: 'bad..topic', payload: {} }), 400);
}));

test('work: the seed curl example, claim, denied 409, release, complete, /work/claimed', withFabric(async (f) => {
  const watch = await f.connect('work-watch');
  await watch.request({ action: 'subscribe', topics: ['work.*'] });

  // The seed's example, only the port changed.
  const out = await curl(['-sS', '-w', '\n%{http_code} %{content_type}', '-X', 'POST', `http://localhost:${f.port}/work/claim`,
    '-H', 'Content-Type: application/json',
    '-d', `{
    "session_id": "session-3",
    "work_id": "deploy-dashboard",
    "work_description": "Deploy dashboard to production"
  }`]);
  const lines = out.trimEnd().split('\n');
  const [code, ctype] = lines.pop().split(' ');
  assert.equal(code, '200', out);
  assert.match(ctype, /^application\/json/);
  const claim = JSON.parse(lines.join('\n'));
  assert.equal(claim.ok, true, out);
  assert.equal(claim.holder, 'session-3');
  assert.equal(typeof claim.token, 'number');
  assert.ok('expires_at' in claim);
  const ev = await watch.waitEvent((e) => e.event_type === 'work.claimed' && e.payload.work_id === 'deploy-dashboard', 5000, 'work.claimed');
  assert.equal(ev.session_id, 'session-3');
  assert.equal(ev.payload.description, 'Deploy dashboard to production');

  // Denied: 409 with the holder.
  let r = await call(f, 'POST', '/work/claim', { session_id: 'session-4', work_id: 'deploy-dashboard' });
  const err = assertHttpError(r, 409, 'denied');
  assert.equal(err.holder, 'session-3');
  assert.ok('expires_at' in err && 'state' in err, r.text);

  // /work/claimed
  let j = assertJson(await call(f, 'GET', '/work/claimed'), 200);
  assert.equal(j.count, j.claims.length);
  const rec = j.claims.find((c) => c.work_id === 'deploy-dashboard');
  assert.ok(rec, r.text);
  assert.equal(rec.holder, 'session-3');
  assert.equal(rec.state, 'claimed');
  assert.equal(rec.description, 'Deploy dashboard to production');
  j = assertJson(await call(f, 'GET', '/work/claimed?holder=session-4'), 200);
  assert.deepEqual(j.claims, []);
  assert.equal(j.count, 0);
  assert.equal(j.truncated, false);
  // Pages: ?limit= and ?after=, truncated while more match.
  for (const w of ['pg-1', 'pg-2']) assertJson(await call(f, 'POST', '/work/claim', { session_id: 'session-4', work_id: w }), 200);
  j = assertJson(await call(f, 'GET', '/work/claimed?holder=session-4&limit=1'), 200);
  assert.deepEqual([j.claims.map((c) => c.work_id), j.count, j.truncated, j.matched], [['pg-1'], 1, true, 2], JSON.stringify(j));
  j = assertJson(await call(f, 'GET', '/work/claimed?holder=session-4&limit=1&after=pg-1'), 200);
  assert.deepEqual([j.claims.map((c) => c.work_id), j.truncated, j.matched], [['pg-2'], false, 2], JSON.stringify(j));
  let e2 = assertHttpError(await call(f, 'GET', `/work/claimed?after=${'w'.repeat(257)}`), 400, 'bad_request');
  assert.match(e2.message, /after/);
  e2 = assertHttpError(await call(f, 'GET', '/work/claimed?after=%C3'), 400, 'bad_request');
  assert.match(e2.message, /after/);
  for (const bad of ['0', '100001', '-1', 'x']) {
    const e = assertHttpError(await call(f, 'GET', `/work/claimed?limit=${bad}`), 400, 'bad_request');
    assert.match(e.message, /limit/);
  }
  j = assertJson(await call(f, 'GET', '/sessions/active?limit=1'), 200);
  assert.equal(j.sessions.length, 1);
  assert.equal(j.truncated, true, 'more than one session is active');
  j = assertJson(await call(f, 'GET', `/sessions/active?limit=100000&after=${j.sessions[0].session}`), 200);
  assert.ok(j.sessions.length >= 1 && j.truncated === false, JSON.stringify(j));

  // Stale token, missing fields, bad JSON.
  assertHttpError(await call(f, 'POST', '/work/release', { session_id: 'session-3', work_id: 'deploy-dashboard', token: claim.token + 100 }), 409, 'stale_token');
  let e = assertHttpError(await call(f, 'POST', '/work/release', { session_id: 'session-3', work_id: 'deploy-dashboard' }), 400, 'bad_request');
  assert.match(e.message, /token/);
  e = assertHttpError(await call(f, 'POST', '/work/claim', { session_id: 'session-3' }), 400, 'bad_request');
  assert.match(e.message, /work_id/);
  e = assertHttpError(await call(f, 'POST', '/work/claim', { work_id: 'x' }), 400, 'bad_request');
  assert.match(e.message, /session_id/);
  assertHttpError(await call(f, 'POST', '/work/claim', '{not json'), 400, 'bad_json');
  // Not JSON and not UTF-8: the parser's error quotes the bad bytes, and
  // the message still comes back (found by fuzz_gateway: it was dropped).
  e = assertHttpError(await call(f, 'POST', '/work/claim', Buffer.from('7b2261635ce4a3a3a3a15c', 'hex')), 400, 'bad_json');
  assert.match(e.message, /not valid JSON.*line 1/);
  // A NUL byte inside the body: refused, not cut there (what followed it
  // was dropped without a word).
  e = assertHttpError(await call(f, 'POST', '/events', Buffer.concat([Buffer.from('{"event_type":"nul.x","session_id":"s","payload":{}}'), Buffer.from([0]), Buffer.from('garbage')])), 400, 'bad_json');
  assert.match(e.message, /NUL byte \(at offset 52\)/);
  // A since that is no seq and no time names since, not since_seq.
  for (const bad of ['-5', '+5', '99999999999999999999999']) {
    e = assertHttpError(await call(f, 'GET', `/events/history?since=${encodeURIComponent(bad)}`), 400, 'bad_request');
    assert.match(e.message, /^since must be/, bad);
  }
  assertHttpError(await call(f, 'POST', '/work/complete', { session_id: 'session-3', token: 1 }), 400, 'bad_request');

  // Release, then another session claims and completes.
  j = assertJson(await call(f, 'POST', '/work/release', { session_id: 'session-3', work_id: 'deploy-dashboard', token: claim.token, reason: 'handing over' }), 200);
  assert.equal(j.ok, true);
  assert.equal(j.state, 'released');
  j = assertJson(await call(f, 'POST', '/work/claim', { session_id: 'session-4', work_id: 'deploy-dashboard', ttl_ms: 60000 }), 200);
  assert.equal(j.holder, 'session-4');
  assert.ok(j.token > claim.token);
  const j2 = assertJson(await call(f, 'POST', '/work/complete', { session_id: 'session-4', work_id: 'deploy-dashboard', token: j.token, result: { url: 'https://example' } }), 200);
  assert.equal(j2.ok, true);
  assert.equal(j2.state, 'completed');
  const done = await watch.waitEvent((x) => x.event_type === 'work.completed', 5000, 'work.completed');
  assert.deepEqual(done.payload.result, { url: 'https://example' });
  j = assertJson(await call(f, 'GET', '/work/claimed'), 200);
  assert.ok(!j.claims.some((c) => c.work_id === 'deploy-dashboard' && c.state === 'claimed'), 'completed work is not listed as claimed');

  // Claiming as a session a WebSocket client hosts: allowed for the gateway's own sessions.
  const hosted = await f.connect('work-hosted');
  const h = await call(f, 'POST', '/work/claim', { session_id: 'work-hosted', work_id: 'hosted-job' });
  assert.ok([200, 403].includes(h.status), `hosted session claim: ${h.status} ${h.text}`);
  await hosted.close();
}));

test('/metrics is Prometheus text', withFabric(async (f) => {
  const c = await f.connect('metrics-ws');
  await c.request({ action: 'subscribe', topics: ['>'] });
  await c.request({ action: 'publish', event_type: 'm.x', payload: {} });
  const r = await call(f, 'GET', '/metrics');
  assert.equal(r.status, 200);
  assert.match(r.type, /^text\/plain/);
  const lines = r.text.split('\n').filter((l) => l.length);
  const samples = lines.filter((l) => !l.startsWith('#'));
  assert.ok(samples.length >= 5, r.text);
  for (const l of samples) {
    assert.match(l, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?([0-9.e+-]+|NaN|\+Inf|-Inf)( \d+)?$/, `sample line: ${l}`);
  }
  // Every sampled metric family has a TYPE line.
  const families = new Set(samples.map((l) => l.match(/^[a-zA-Z_:][a-zA-Z0-9_:]*/)[0].replace(/_(bucket|sum|count)$/, '')));
  for (const fam of families) {
    assert.ok(lines.some((l) => l.startsWith(`# TYPE ${fam} `) || l.startsWith(`# TYPE ${fam}_`)), `# TYPE for ${fam}`);
  }
  const text = r.text;
  assert.match(text, /connection/i, 'connections');
  assert.match(text, /events?_(in|received|published)/i, 'events in');
  assert.match(text, /events?_(out|sent|delivered)/i, 'events out');
  assert.match(text, /drop/i, 'drops');
  assert.match(text, /queue/i, 'queue depths');
  assert.match(text, /_bucket\{[^}]*le="\+Inf"\}/, 'a latency histogram');
  assert.match(text, /# TYPE \S+ histogram/);
}));

test('dashboard files, content types, 404, 405, traversal', withFabric(async (f) => {
  let r = await call(f, 'GET', '/');
  assert.equal(r.status, 200);
  assert.match(r.type, /^text\/html/);
  assert.match(r.text, /<title>[^<]*nexus/i);
  r = await call(f, 'GET', '/app.js');
  assert.equal(r.status, 200);
  assert.match(r.type, /javascript/);
  r = await call(f, 'GET', '/style.css');
  assert.equal(r.status, 200);
  assert.match(r.type, /^text\/css/);
  r = await call(f, 'GET', '/index.html');
  assert.equal(r.status, 200);

  assertHttpError(await call(f, 'GET', '/no/such/path'), 404, 'not_found');
  assertHttpError(await call(f, 'GET', '/nope.js'), 404);
  assertHttpError(await call(f, 'POST', '/health', {}), 405);
  assertHttpError(await call(f, 'GET', '/work/claim'), 405);
  assertHttpError(await call(f, 'GET', '/events', undefined), 405);
  assertHttpError(await call(f, 'DELETE', '/sessions/active'), 405);
  assertHttpError(await call(f, 'PUT', '/work/claimed', {}), 405);

  for (const p of ['/../../../../etc/passwd', '/..%2f..%2f..%2f..%2fetc%2fpasswd', '/%2e%2e/%2e%2e/%2e%2e/etc/passwd', '/style.css/../../CMakeLists.txt']) {
    const x = await raw(f, 'GET', p);
    assert.ok(!/root:.*:0:0:/.test(x.body), `traversal ${p} served /etc/passwd`);
    assert.ok(!/cmake_minimum_required/i.test(x.body), `traversal ${p} served a file outside the web root`);
  }

  // A body over --max-body (1M default) is refused, not crashing the gateway.
  r = await call(f, 'POST', '/events', JSON.stringify({ event_type: 'big.x', payload: 'x'.repeat(2 * 1024 * 1024) }));
  assert.ok(r.status === 413 || r.status === 400, `oversized body: ${r.status}`);
  // /mcp answers it as JSON-RPC (its clients read nothing else).
  r = await call(f, 'POST', '/mcp', JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'ping', params: { x: 'x'.repeat(2 * 1024 * 1024) } }),
    { Accept: 'application/json, text/event-stream' });
  assert.equal(r.status, 413, r.text.slice(0, 300));
  assert.equal(r.json && r.json.jsonrpc, '2.0', r.text.slice(0, 300));
  assert.equal(r.json.error.code, -32600, r.text.slice(0, 300));
  assert.match(r.json.error.message, /max_body/);
  assertJson(await call(f, 'GET', '/health'), 200);
}));

/** A raw request with a body sent as given: chunked when contentLength is
 *  null, else with that Content-Length. Resolves status and parsed body. */
function rawBody(f, method, path, body, { contentLength, headers = {}, agent } = {}) {
  return new Promise((resolve, reject) => {
    const h = { 'Content-Type': 'application/json', ...headers };
    if (contentLength !== null && body !== undefined) h['Content-Length'] = String(contentLength ?? Buffer.byteLength(body));
    const req = http.request({ host: '127.0.0.1', port: f.port, method, path, headers: h, agent }, (res) => {
      readResponse(res).then((r) => resolve({ ...r, reused: req.reusedSocket }), reject);
    });
    req.setTimeout(5000, () => { req.destroy(new Error(`timeout: ${method} ${path}`)); });
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

test('POST edge cases: empty body, chunked body (411), a body after a refusal is not acted on', withFabric({ gatewayArgs: ['--token', 'T0ken-s3cret'], healthToken: 'T0ken-s3cret' }, async (f) => {
  const auth = { Authorization: 'Bearer T0ken-s3cret' };
  // Content-Length: 0 is answered (bad JSON), not left hanging.
  let r = await rawBody(f, 'POST', '/events', '', { contentLength: 0, headers: auth });
  assert.equal(r.status, 400, r.text);
  assert.ok(r.json && r.json.error && typeof r.json.error.code === 'string', r.text);
  // Chunked: the gateway needs the length up front.
  r = await rawBody(f, 'POST', '/events', JSON.stringify({ event_type: 'edge.chunked', payload: {} }), { contentLength: null, headers: auth });
  assert.equal(r.status, 411, r.text);
  assert.equal(r.json.error.code, 'length_required');
  // Refused for its token: the body that follows is read and dropped.
  for (const headers of [{}, { Authorization: 'Bearer wrong' }]) {
    r = await rawBody(f, 'POST', '/events', JSON.stringify({ event_type: 'edge.refused', payload: { x: 1 } }), { headers });
    assert.equal(r.status, 401, r.text);
    assert.equal(r.json.error.code, 'unauthorized');
  }
  // The same connection and gateway carry on; nothing was published.
  r = await rawBody(f, 'POST', '/events', JSON.stringify({ event_type: 'edge.ok', session_id: 'edge-s', payload: { y: 2 } }), { headers: auth });
  assert.equal(r.status, 201, r.text);
  const j = assertJson(await call(f, 'GET', '/events/history?limit=1000', undefined, auth), 200);
  const types = j.events.map((e) => e.event_type);
  assert.ok(types.includes('edge.ok'), JSON.stringify(types));
  assert.ok(!types.includes('edge.refused'), `a refused POST published: ${JSON.stringify(types)}`);
  assert.ok(!types.includes('edge.chunked'), `a 411 POST published: ${JSON.stringify(types)}`);
}));

// A token from the tokens file may act only as its sessions, over HTTP as
// over WebSocket: the body's session_id / from cannot speak for another.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const TOKENS_FILE = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nexus-gw-tokens-')), 'tokens');
fs.writeFileSync(TOKENS_FILE, '# test tokens\ntok-bob bob\ntok-any *\n');

test('HTTP calls act only as the sessions their token allows', withFabric({ gatewayArgs: ['--tokens-file', TOKENS_FILE], healthToken: 'tok-any' }, async (f) => {
  const bob = { Authorization: 'Bearer tok-bob' };
  const any = { Authorization: 'Bearer tok-any' };
  let e = assertHttpError(await call(f, 'POST', '/events', { event_type: 'spoof.event', session_id: 'alice', payload: {} }, bob), 403, 'forbidden');
  assert.match(e.message, /alice/);
  assertJson(await call(f, 'POST', '/events', { event_type: 'own.event', session_id: 'bob', payload: {} }, bob), 201);
  assertHttpError(await call(f, 'POST', '/work/claim', { session_id: 'alice', work_id: 'w-spoof' }, bob), 403, 'forbidden');
  const claim = assertJson(await call(f, 'POST', '/work/claim', { session_id: 'bob', work_id: 'w-own' }, bob), 200);
  assertHttpError(await call(f, 'POST', '/work/complete', { session_id: 'alice', work_id: 'w-own', token: claim.token }, bob), 403, 'forbidden');
  assertHttpError(await call(f, 'POST', '/message', { from: 'alice', to: 'carol', message: 'hi' }, bob), 403, 'forbidden');
  assertJson(await call(f, 'POST', '/message', { from: 'bob', to: 'carol', message: 'hi' }, bob), 200);
  // The token for any session may act as alice.
  assertJson(await call(f, 'POST', '/work/claim', { session_id: 'alice', work_id: 'w-alice' }, any), 200);
  // Acting as no session is refused with tokens: no sourceless event, no
  // request outside every session's rate limit. (bob's token allows only
  // bob: it acts as bob then, see the next test.)
  for (const tok of [any]) {
    e = assertHttpError(await call(f, 'POST', '/events', { event_type: 'anon.event', payload: {} }, tok), 403, 'forbidden');
    assert.match(e.message, /session_id/);
    e = assertHttpError(await call(f, 'POST', '/message', { to: 'carol', message: 'anon' }, tok), 403, 'forbidden');
    assert.match(e.message, /'from'/);
  }
  // Nothing was published or claimed in alice's name with bob's token.
  const j = assertJson(await call(f, 'GET', '/events/history?limit=1000', undefined, any), 200);
  const types = j.events.map((ev) => ev.event_type);
  assert.ok(!types.includes('spoof.event'), JSON.stringify(types));
  assert.ok(!types.includes('anon.event'), JSON.stringify(types));
  assert.ok(!j.events.some((ev) => ev.session_id === ''), `no event without a source: ${JSON.stringify(j.events)}`);
  const claimed = assertJson(await call(f, 'GET', '/work/claimed', undefined, any), 200);
  assert.ok(!JSON.stringify(claimed).includes('w-spoof'), JSON.stringify(claimed));
}));

const SOLO_TOKENS = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nexus-gw-tokens-')), 'tokens');
fs.writeFileSync(SOLO_TOKENS, '# one session, two, any\ntok-solo solo\ntok-two two-a,two-b\ntok-star *\n');

test('a token that allows exactly one session acts as it when the body names none', withFabric({ gatewayArgs: ['--tokens-file', SOLO_TOKENS, '--token', 'tok-shared'], healthToken: 'tok-star' }, async (f) => {
  const solo = { Authorization: 'Bearer tok-solo' };
  const ev = assertJson(await call(f, 'POST', '/events', { event_type: 'solo.event', payload: { n: 1 } }, solo), 201);
  const msg = assertJson(await call(f, 'POST', '/message', { message: 'hi all' }, solo), 200);
  const claim = assertJson(await call(f, 'POST', '/work/claim', { work_id: 'w-solo' }, solo), 200);
  assert.equal(claim.holder, 'solo', JSON.stringify(claim));
  const rel = assertJson(await call(f, 'POST', '/work/release', { work_id: 'w-solo', token: claim.token }, solo), 200);
  assert.equal(rel.state, 'released', JSON.stringify(rel));
  const again = assertJson(await call(f, 'POST', '/work/claim', { work_id: 'w-solo2' }, solo), 200);
  assertJson(await call(f, 'POST', '/work/complete', { work_id: 'w-solo2', token: again.token, result: { ok: 1 } }, solo), 200);
  // It is still only that session, and a field of the wrong type is an
  // error, not a silent fallback to it.
  assertHttpError(await call(f, 'POST', '/events', { event_type: 'solo.spoof', session_id: 'other', payload: {} }, solo), 403, 'forbidden');
  let e = assertHttpError(await call(f, 'POST', '/events', { event_type: 'solo.bad', session_id: 42, payload: {} }, solo), 400, 'bad_request');
  assert.match(e.message, /session_id/);
  e = assertHttpError(await call(f, 'POST', '/message', { from: ['solo'], message: 'x' }, solo), 400, 'bad_request');
  assert.match(e.message, /'from'/);
  // A token of several sessions, '*' or the shared token must still name one.
  for (const tok of ['tok-two', 'tok-star', 'tok-shared']) {
    const h = { Authorization: `Bearer ${tok}` };
    e = assertHttpError(await call(f, 'POST', '/events', { event_type: 'anon.event', payload: {} }, h), 403, 'forbidden');
    assert.match(e.message, /session_id/, `${tok}: ${e.message}`);
    e = assertHttpError(await call(f, 'POST', '/message', { message: 'anon' }, h), 403, 'forbidden');
    assert.match(e.message, /'from'/, `${tok}: ${e.message}`);
    e = assertHttpError(await call(f, 'POST', '/work/claim', { work_id: `w-${tok}` }, h), 400, 'bad_request');
    assert.match(e.message, /session_id/, `${tok}: ${e.message}`);
  }
  assertJson(await call(f, 'POST', '/events', { event_type: 'two.event', session_id: 'two-b', payload: {} }, { Authorization: 'Bearer tok-two' }), 201);
  const j = assertJson(await call(f, 'GET', '/events/history?limit=1000', undefined, { Authorization: 'Bearer tok-star' }), 200);
  const bySeq = new Map(j.events.map((x) => [x.seq, x]));
  assert.equal(bySeq.get(ev.seq).session_id, 'solo', JSON.stringify(bySeq.get(ev.seq)));
  assert.equal(bySeq.get(msg.seq).session_id, 'solo', JSON.stringify(bySeq.get(msg.seq)));
  const types = j.events.map((x) => x.event_type);
  for (const t of ['solo.spoof', 'solo.bad', 'anon.event']) assert.ok(!types.includes(t), `${t} not stored: ${types}`);
  assert.ok(!j.events.some((x) => x.session_id === ''), 'no event without a source');
}));

test('GET /health answers 503 while the broker does not answer (default broker_timeout 5 s)', withFabric(async (f) => {
  f.broker.child.kill('SIGSTOP');
  try {
    const t0 = Date.now();
    let status = 0;
    let text = '';
    try {
      const res = await fetch(`${f.http}/health`, { signal: AbortSignal.timeout(12000) });
      status = res.status;
      text = await res.text();
    } catch (e) {
      text = String(e);
    }
    assert.equal(status, 503, `an answer, not a cut connection: ${text}`);
    const j = JSON.parse(text);
    assert.equal(j.status, 'degraded', text);
    assert.equal(j.broker.status, 'down', text);
    assert.ok(Date.now() - t0 < 9000, `answered within the broker timeout (${Date.now() - t0} ms)`);
  } finally {
    f.broker.child.kill('SIGCONT');
  }
  // Healthy again once the gateway's link is back: the timed-out probe
  // took it down, libnexus's background thread hears the broker again.
  await waitFor(async () => (await call(f, 'GET', '/health')).status === 200,
    { timeout: 10000, interval: 100, what: '/health to be 200 again' });
}));

test('HTTP calls that act as a session share its rate limit (429 rate_limited)', withFabric({ gatewayArgs: ['--rate', '1', '--burst', '2'] }, async (f) => {
  // Each call from an address of its own (an open gateway limits addresses
  // too): what refuses them is the session's bucket.
  const statuses = [];
  for (let i = 0; i < 5; i++) {
    const r = await postFrom(f, `127.0.1.${i + 1}`, '/events', { event_type: 'rl.http', session_id: 'rl-h', payload: { i } });
    statuses.push(r.status);
    if (r.status === 429) assert.match(assertHttpError(r, 429, 'rate_limited').message, /session/);
  }
  const passed = statuses.filter((s) => s === 201).length;
  assert.ok(passed >= 2 && passed <= 3, `the burst of 2 (plus at most one refill) passes: ${statuses}`);
  assert.ok(statuses.includes(429), `the rest is refused: ${statuses}`);
  // Another session is not affected, nor are GETs.
  assertJson(await postFrom(f, '127.0.1.9', '/events', { event_type: 'rl.http', session_id: 'rl-other', payload: {} }), 201);
  assertJson(await call(f, 'GET', '/health'), 200);
}));

/** A JSON POST from a given loopback source address (a new connection). */
function postFrom(f, localAddress, path, body) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request({
      host: '127.0.0.1', port: f.port, method: 'POST', path, localAddress, agent: false,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) },
    }, (res) => { readResponse(res).then(resolve, reject); });
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(data);
  });
}

test('HTTP calls acting as no session are limited per client address, in a bounded table (open gateway)', { timeout: 120000 }, withFabric({ gatewayArgs: ['--rate', '1', '--burst', '2'] }, async (f) => {
  const statuses = [];
  for (let i = 0; i < 5; i++) {
    const r = await postFrom(f, '127.0.0.1', '/events', { event_type: 'rl.anon', payload: { i } });
    statuses.push(r.status);
    if (r.status === 429) assert.match(assertHttpError(r, 429, 'rate_limited').message, /address/);
  }
  const passed = statuses.filter((st) => st === 201).length;
  assert.ok(passed >= 2 && passed <= 3, `the burst of 2 (plus at most one refill) passes: ${statuses}`);
  assert.ok(statuses.includes(429), `the rest is refused: ${statuses}`);
  // Another address has its own bucket.
  assertJson(await postFrom(f, '127.0.0.2', '/events', { event_type: 'rl.anon', payload: { other: true } }), 201);
  // POST /message without from shares the address's bucket, and naming a
  // session (a new one each time) does not escape it on an open gateway.
  // Each address spends its burst, then asks once more at once; only a
  // second gone by (a refill at rate 1) may let that through.
  const after = [
    ['127.0.0.9', '/message', { message: 'anon' }],
    ['127.0.0.10', '/events', { event_type: 'rl.named', session_id: 'rl-named-1', payload: {} }],
    ['127.0.0.11', '/events', { event_type: 'rl.named', session_id: 'rl-named-2', payload: {} }],
  ];
  for (const [addr, path, body] of after) {
    const t0 = Date.now();
    for (let i = 0; i < 2; i++) assertJson(await postFrom(f, addr, '/events', { event_type: 'rl.spend', payload: { i } }), 201);
    const r = await postFrom(f, addr, path, body);
    if (Date.now() - t0 < 900) assertHttpError(r, 429, 'rate_limited');
  }
  assertJson(await postFrom(f, '127.0.0.3', '/events', { event_type: 'rl.named', session_id: 'rl-named-3', payload: {} }), 201);
  // The refused calls stored nothing.
  const h = assertJson(await call(f, 'GET', '/events/history?event_type=rl.anon&limit=100'), 200);
  assert.equal(h.events.length, passed + 1, JSON.stringify(h.events.map((e) => e.payload)));
  // Many addresses: the table stays within its bound and the gateway answers.
  const addrs = Array.from({ length: 1100 }, (_, k) => `127.0.${4 + Math.floor(k / 250)}.${1 + (k % 250)}`);
  for (let k = 0; k < addrs.length; k += 10) {
    const rs = await Promise.all(addrs.slice(k, k + 10).map((a) => postFrom(f, a, '/events', { event_type: 'rl.many', payload: {} })));
    rs.forEach((r) => assert.equal(r.status, 201, r.text));
  }
  const m = await call(f, 'GET', '/metrics');
  const n = Number(/^nexus_gateway_rate_addresses (\d+)$/m.exec(m.text)[1]);
  assert.ok(n > 0 && n <= 1024, `addresses held: ${n}`);
  assertJson(await call(f, 'GET', '/health'), 200);
}));

test('PUT and PATCH with 64 KB bodies: 405 with Allow on a kept-alive connection, the gateway carries on', withFabric(async (f) => {
  // They used to reach the worker before their body was read: the body was
  // appended while the worker freed it, and its rest read as a request.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const big = JSON.stringify({ event_type: 'put.body', payload: 'x'.repeat(64 * 1024) });
    let reused = 0;
    for (let i = 0; i < 5; i++) {
      for (const [method, path, allow] of [['PUT', '/events', 'POST'], ['PATCH', '/work/claim', 'POST'],
        ['PUT', '/sessions/active', 'GET'], ['PATCH', '/sessions/someone', 'GET'], ['PUT', '/style.css', 'GET']]) {
        const r = await rawBody(f, method, path, big, { agent });
        assert.equal(r.status, 405, `${method} ${path}: ${r.status} ${r.text.slice(0, 200)}`);
        assert.equal(r.json && r.json.error && r.json.error.code, 'method_not_allowed', r.text.slice(0, 200));
        assert.equal(r.headers.allow, allow, `${method} ${path}: Allow ${r.headers.allow}`);
        if (r.reused) reused++;
      }
      const h = await rawBody(f, 'GET', '/health', undefined, { agent });
      assert.equal(h.status, 200, h.text.slice(0, 200));
      if (h.reused) reused++;
    }
    assert.ok(reused >= 20, `the connection was kept alive (${reused} reused)`);
    // A GET with a body is answered once, the body dropped.
    const g = await rawBody(f, 'GET', '/sessions/active', big, { agent });
    assertJson({ ...g, type: g.headers['content-type'] || '' }, 200);
    assert.equal((await rawBody(f, 'GET', '/health', undefined, { agent })).status, 200);
    // The wrong GET/POST method has its Allow header too.
    const w = await rawBody(f, 'GET', '/work/claim', undefined, { agent });
    assert.equal(w.status, 405, w.text);
    assert.equal(w.headers.allow, 'POST');
  } finally {
    agent.destroy();
  }
  const j = assertJson(await call(f, 'GET', '/events/history?limit=1000'), 200);
  assert.ok(!j.events.some((e) => e.event_type === 'put.body'), 'nothing was published');
  assert.ok(f.gateway.running, 'the gateway is up');
}));

test('query arguments are decoded once: %2B, %26, %3D and + in values', withFabric(async (f) => {
  // lws hands them over decoded; decoding again turned "c%2B%2B" into "c  "
  // and split a value at its "%26".
  await f.connect('q-cpp', `capabilities=${encodeURIComponent('c++,r&d')}`);
  await f.connect('q-py', 'capabilities=python');
  let j = assertJson(await call(f, 'GET', `/sessions/capabilities?skill=${encodeURIComponent('c++')}`), 200);
  assert.deepEqual(j.sessions.map((s) => s.session), ['q-cpp'], JSON.stringify(j));
  j = assertJson(await call(f, 'GET', `/sessions/capabilities?skill=${encodeURIComponent('r&d')}&available=true`), 200);
  assert.deepEqual(j.sessions.map((s) => s.session), ['q-cpp'], JSON.stringify(j));
  // Form encoding's + is a space.
  await f.connect('q-ml', `capabilities=${encodeURIComponent('machine learning')}`);
  j = assertJson(await call(f, 'GET', '/sessions/capabilities?skill=machine+learning'), 200);
  assert.deepEqual(j.sessions.map((s) => s.session), ['q-ml'], JSON.stringify(j));
  j = assertJson(await call(f, 'GET', `/sessions/capabilities?skill=${encodeURIComponent('a=b')}`), 200);
  assert.deepEqual(j.sessions, [], JSON.stringify(j));

  const seq = assertJson(await call(f, 'POST', '/events', { event_type: 'q.one', session_id: 'q-pub', payload: {} }), 201).seq;
  // A time with an explicit +00:00 offset.
  const since = new Date(Date.now() - 60000).toISOString().replace('Z', '+00:00');
  j = assertJson(await call(f, 'GET', `/events/history?since=${encodeURIComponent(since)}`), 200);
  assert.ok(j.events.some((e) => e.seq === seq), JSON.stringify(j));
  j = assertJson(await call(f, 'GET', `/work/claimed?holder=${encodeURIComponent('a&holder=q-pub')}`), 200);
  assert.deepEqual(j.claims, [], JSON.stringify(j));
}));

test('broker-side failures are 5xx: POST /work/claim with the broker stopped answers 504, not 400', withFabric({ gatewayArgs: ['--broker-timeout', '500ms'] }, async (f) => {
  f.broker.child.kill('SIGSTOP');
  try {
    const t0 = Date.now();
    const r = await call(f, 'POST', '/work/claim', { session_id: 'stopped-1', work_id: 'w-stopped' });
    const e = assertHttpError(r, 504, 'timeout');
    assert.ok(e.message.length > 0, r.text);
    // A session the gateway registered already: the claim itself times out.
    const p = await call(f, 'POST', '/events', { event_type: 'stopped.x', session_id: 'stopped-2', payload: {} });
    assert.ok([503, 504].includes(p.status), `${p.status} ${p.text}`);
    assert.ok(Date.now() - t0 < 4000, `bounded by broker_timeout (${Date.now() - t0} ms)`);
  } finally {
    f.broker.child.kill('SIGCONT');
  }
  // Healthy again once the gateway's link is back (its next probe; until
  // then requests are answered 503 at once, not after broker_timeout).
  const { waitFor } = require('./lib');
  await waitFor(async () => (await call(f, 'GET', '/health')).status === 200,
    { timeout: 10000, interval: 100, what: '/health to be 200 again' });
}));

test('a broker that is gone: requests are 503 unavailable (never sent), not 504; the log says when it went and came back', { timeout: 60000 }, withFabric({
  gatewayArgs: ['--broker-timeout', '700ms', '--heartbeat', '300ms'],
}, async (f) => {
  const { restartOnFreshStore, waitFor } = require('./lib');
  const fresh = await restartOnFreshStore(f); // the old broker is stopped first
  await fresh.stop(); // and now none answers
  await waitFor(() => /lost the broker at tcp:\/\/127\.0\.0\.1:\d+: requests fail \(503/.test(f.gateway.output),
    { timeout: 10000, what: 'the gateway to log the lost broker' });
  const t0 = Date.now();
  const r = await call(f, 'POST', '/events', { event_type: 'gone.x', payload: {} });
  const e = assertHttpError(r, 503, 'unavailable');
  assert.match(e.message, /not sent/, r.text);
  assert.ok(Date.now() - t0 < 4000, `bounded by broker_timeout (${Date.now() - t0} ms)`);
  const again = await restartOnFreshStore(f);
  try {
    await waitFor(() => /the broker at tcp:\/\/127\.0\.0\.1:\d+ answers again/.test(f.gateway.output),
      { timeout: 15000, what: 'the gateway to log the broker back' });
    assertJson(await call(f, 'POST', '/events', { event_type: 'back.x', payload: {} }), 201);
  } finally {
    await again.stop();
  }
}));

test('API requests from another origin get 403 forbidden_origin; POST bodies must be application/json (415)', withFabric(async (f) => {
  // A web page elsewhere could otherwise POST text/plain (no preflight) to
  // the gateway on localhost.
  const body = JSON.stringify({ event_type: 'csrf.x', session_id: 'csrf-s', payload: {} });
  const evil = { Origin: 'http://evil.example' };
  let r = await rawBody(f, 'POST', '/events', body, { headers: { ...evil, 'Content-Type': 'text/plain' } });
  assert.equal(r.status, 403, r.text);
  assert.equal(r.json.error.code, 'forbidden_origin', r.text);
  r = await rawBody(f, 'POST', '/events', body, { headers: evil });
  assert.equal(r.status, 403, r.text);
  assert.equal(r.json.error.code, 'forbidden_origin', r.text);
  r = await rawBody(f, 'GET', '/events/history', undefined, { headers: evil });
  assert.equal(r.status, 403, r.text);
  assert.equal(r.json.error.code, 'forbidden_origin', r.text);
  // The dashboard's files are not API: served whatever the origin.
  r = await rawBody(f, 'GET', '/app.js', undefined, { headers: evil });
  assert.equal(r.status, 200);

  // Same origin, or no Origin (not a browser): fine, if the body is JSON.
  const same = { Origin: `http://127.0.0.1:${f.port}` };
  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonx']) {
    r = await rawBody(f, 'POST', '/events', body, { headers: { ...same, 'Content-Type': type } });
    assert.equal(r.status, 415, `${type}: ${r.text}`);
    assert.equal(r.json.error.code, 'unsupported_media_type', r.text);
    assert.match(r.json.error.message, /application\/json/);
  }
  r = await rawBody(f, 'POST', '/events', body, { headers: { 'Content-Type': '' } });
  assert.equal(r.status, 415, r.text);
  r = await rawBody(f, 'POST', '/events', body, { headers: { ...same, 'Content-Type': 'application/json; charset=utf-8' } });
  assert.equal(r.status, 201, r.text);
  r = await rawBody(f, 'POST', '/events', body, { headers: { 'Content-Type': 'Application/JSON' } });
  assert.equal(r.status, 201, r.text);
  const j = assertJson(await call(f, 'GET', '/events/history?limit=1000'), 200);
  assert.equal(j.events.filter((e) => e.event_type === 'csrf.x').length, 2, JSON.stringify(j.events));
  assertJson(await call(f, 'GET', '/health'), 200);
}));

test('--allowed-origins lets the listed origins call the API', withFabric({ gatewayArgs: ['--allowed-origins', 'http://ok.example'] }, async (f) => {
  const body = JSON.stringify({ event_type: 'origin.ok', session_id: 'origin-s', payload: {} });
  let r = await rawBody(f, 'POST', '/events', body, { headers: { Origin: 'http://ok.example' } });
  assert.equal(r.status, 201, r.text);
  r = await rawBody(f, 'POST', '/events', body, { headers: { Origin: 'http://evil.example' } });
  assert.equal(r.status, 403, r.text);
  assert.equal(r.json.error.code, 'forbidden_origin');
}));

/** Writes `text` on a new socket; resolves with what came back before the close (or after `wait` ms). */
function rawSocket(f, text, wait = 4000) {
  const net = require('node:net');
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s = net.connect({ port: f.port, host: '127.0.0.1' });
    let out = '';
    s.on('data', (d) => { out += d; });
    s.on('close', () => resolve({ out, ms: Date.now() - t0, closed: true }));
    s.on('error', () => {});
    s.setTimeout(wait, () => { s.destroy(); resolve({ out, ms: Date.now() - t0, closed: false }); });
    s.write(text);
  });
}

/** Status line and JSON body of one raw request. */
async function rawStatus(f, text) {
  const r = await rawSocket(f, text);
  const m = /^HTTP\/1\.1 (\d+)/.exec(r.out);
  let body = null;
  try { body = JSON.parse(r.out.slice(r.out.indexOf('\r\n\r\n') + 4)); } catch { /* not JSON */ }
  return { status: m ? Number(m[1]) : 0, body, out: r.out };
}

const rebindGet = (path, host, extra = '') => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n${extra}\r\n`;
const rebindUpgrade = (host) => rebindGet('/ws/session/rebind-s', host,
  `Origin: http://${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n`);

test('DNS rebinding: an open gateway answers only to its addresses, localhost and allowed_hosts; the refused get 403 forbidden_host', withFabric({
  gatewayArgs: ['--allowed-hosts', 'box.vpn'],
}, async (f) => {
  // A page of attacker.example whose name now resolves to 127.0.0.1 is, to
  // the browser, same-origin with itself: Origin and Host agree. It read
  // the sessions and published as anyone before.
  const evil = `attacker.example:${f.port}`;
  let r = await rawStatus(f, rebindGet('/sessions/active', evil, `Origin: http://${evil}\r\n`));
  assert.equal(r.status, 403, r.out);
  assert.equal(r.body.error.code, 'forbidden_host', r.out);
  assert.match(r.body.error.message, /attacker\.example.*allowed_hosts/);
  r = await rawStatus(f, rebindGet('/sessions/active', evil)); // a same-origin GET sends no Origin
  assert.equal(r.status, 403, r.out);
  r = await rawStatus(f, rebindGet('/', evil));
  assert.equal(r.status, 403, 'the dashboard page too');
  const body = '{"event_type":"rebind.x","payload":1}';
  r = await rawStatus(f, `POST /events HTTP/1.1\r\nHost: ${evil}\r\nOrigin: http://${evil}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
  assert.equal(r.status, 403, r.out);
  r = await rawStatus(f, rebindUpgrade(evil));
  assert.equal(r.status, 403, r.out);
  assert.equal(r.body.error.code, 'forbidden_host', r.out);
  // A name too long for the gateway's buffer is refused, not taken for "no
  // Host" (a 253-byte DNS name let every request through); so is an Origin
  // too long to compare (a page of a long-named site opened WebSockets).
  const longName = `${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.${'d'.repeat(60)}.example`;
  r = await rawStatus(f, rebindGet('/sessions/active', `${longName}:${f.port}`));
  assert.equal(r.status, 403, `a 260-byte Host: ${r.out.slice(0, 200)}`);
  r = await rawStatus(f, rebindGet('/ws/session/long-origin', `127.0.0.1:${f.port}`,
    `Origin: http://${longName}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n`));
  assert.equal(r.status, 403, `a 270-byte Origin on an upgrade: ${r.out.slice(0, 200)}`);
  r = await rawStatus(f, rebindGet('/sessions/active', `127.0.0.1:${f.port}`, `Origin: http://${longName}\r\n`));
  assert.equal(r.status, 403, `a 270-byte Origin on the API: ${r.out.slice(0, 200)}`);
  r = await rawStatus(f, rebindGet('/sessions/active', '[::1]evil.example'));
  assert.equal(r.status, 403, `[::1] followed by a name: ${r.out.slice(0, 200)}`);
  // /health answers probes by any name, as it does without a token.
  assert.equal((await rawStatus(f, rebindGet('/health', evil))).status, 200);
  // Its addresses, localhost and the listed name are the gateway's own.
  for (const host of [`127.0.0.1:${f.port}`, '127.0.0.1', `localhost:${f.port}`, 'LocalHost.', `app.localhost:${f.port}`, `[::1]:${f.port}`, `box.vpn:${f.port}`, 'BOX.VPN']) {
    r = await rawStatus(f, rebindGet('/sessions/active', host));
    assert.equal(r.status, 200, `${host}: ${r.out.slice(0, 300)}`);
  }
  r = await rawStatus(f, rebindUpgrade(`box.vpn:${f.port}`));
  assert.equal(r.status, 101, r.out.slice(0, 300));
  // Nothing was published by the refused requests.
  const j = assertJson(await call(f, 'GET', '/events/history?event_type=rebind.x'), 200);
  assert.deepEqual(j.events, []);
  // Same origin means a web page's scheme too.
  r = await rawStatus(f, rebindGet('/sessions/active', `127.0.0.1:${f.port}`, `Origin: ftp://127.0.0.1:${f.port}\r\n`));
  assert.equal(r.status, 403, r.out);
  assert.equal(r.body.error.code, 'forbidden_origin', r.out);
}));

test('DNS rebinding: a gateway with tokens answers to any name (a rebound page has no token)', withFabric({
  gatewayArgs: ['--token', 'tok-rebind'], healthToken: 'tok-rebind',
}, async (f) => {
  const host = `box.example:${f.port}`;
  let r = await rawStatus(f, rebindGet('/sessions/active', host));
  assert.equal(r.status, 401, r.out);
  r = await rawStatus(f, rebindGet('/sessions/active', host, 'Authorization: Bearer tok-rebind\r\n'));
  assert.equal(r.status, 200, r.out.slice(0, 300));
}));

test('hostile HTTP: bad Content-Length, wrong types, odd query values: precise 4xx JSON errors, nothing stored', withFabric(async (f) => {
  // A Content-Length that is not a number (or past any size) is answered at
  // once (it used to wait for a body whose end cannot be known), then closed.
  for (const [len, status, code] of [['-5', 400, 'bad_request'], ['abc', 400, 'bad_request'], ['99999999999999999999', 400, 'bad_request'], ['12x', 400, 'bad_request']]) {
    const r = await rawSocket(f, `POST /events HTTP/1.1\r\nHost: 127.0.0.1:${f.port}\r\nContent-Type: application/json\r\nContent-Length: ${len}\r\n\r\n{"event_type":"cl.stored"}`);
    assert.match(r.out, new RegExp(`^HTTP/1\\.1 ${status} `), `Content-Length ${len}: ${r.out.slice(0, 200)}`);
    const body = JSON.parse(r.out.slice(r.out.indexOf('\r\n\r\n') + 4));
    assert.equal(body.error.code, code, r.out);
    assert.ok(r.closed && r.ms < 3000, `answered and closed in ${r.ms} ms`);
  }
  // Wrong types are named as such.
  const cases = [
    [{ event_type: 5, payload: {} }, '/events', "'event_type' must be a string"],
    [{ event_type: 'message.direct', to: 5, payload: {} }, '/events', "'to' must be a session id"],
    [{ event_type: 'message.direct', payload: { to: ['x'] } }, '/events', "'to' must be a session id"],
    [{ message: 5 }, '/message', "'message' must be a string"],
    [{ session_id: 'hx', work_id: 5 }, '/work/claim', "'work_id' must be a string"],
    [{ session_id: 'hx', work_id: 'w', token: 'x' }, '/work/release', 'non-negative integer'],
    [{ session_id: 'hx', work_id: 'w', token: 1.5 }, '/work/complete', 'non-negative integer'],
  ];
  for (const [body, p, mentions] of cases) {
    const e = assertHttpError(await call(f, 'POST', p, body), 400, 'bad_request');
    assert.ok(e.message.includes(mentions), `${p} ${JSON.stringify(body)}: ${e.message}`);
  }
  // Query values that are not what they claim to be.
  assertHttpError(await call(f, 'GET', '/sessions/capabilities?available=maybe'), 400, 'bad_request');
  assertJson(await call(f, 'GET', '/sessions/capabilities?available=false'), 200);
  for (const q of ['limit=abc', 'limit=-1', 'limit=99999999999999999999', 'since=-5', 'cursor=abc', 'order=up']) {
    assertHttpError(await call(f, 'GET', `/events/history?${q}`), 400, 'bad_request');
  }
  assertHttpError(await call(f, 'GET', '/events/history?event_type=a%20b'), 400, 'bad_pattern');
  assertHttpError(await call(f, 'GET', '/events/recent?count=-5'), 400, 'bad_request');
  assertHttpError(await call(f, 'GET', '/sessions/%E2%98%83'), 404, 'not_found');
  // Still up; nothing of it was stored.
  assertJson(await call(f, 'GET', '/health'), 200);
  const j = assertJson(await call(f, 'GET', '/events/history?limit=1000'), 200);
  const types = j.events.map((e) => e.event_type);
  assert.ok(!types.includes('cl.stored') && !types.includes('message.direct'), JSON.stringify(types));
}));

test('a request over the broker\'s max_request is 413 too_large at once, in libnexus\'s words, never a 503 to try again', withFabric({
  brokerArgs: ['--max-request', '64k'], gatewayArgs: ['--max-body', '8M'],
}, async (f) => {
  const t0 = Date.now();
  const r = await call(f, 'POST', '/events', { event_type: 'big.http', payload: 'x'.repeat(100 << 10) });
  const e = assertHttpError(r, 413, 'too_large');
  assert.match(JSON.stringify(e), /max_request/, 'it says which limit');
  assert.ok(Date.now() - t0 < 3000, 'not after the broker timeout');
  // What fits still goes.
  assertJson(await call(f, 'POST', '/events', { event_type: 'big.http', payload: 'x'.repeat(1000) }), 201);
}));

test('work over HTTP and WebSocket: renew and reopen, as the CLI and MCP have them', withFabric(async (f) => {
  let r = await call(f, 'POST', '/work/claim', { session_id: 'rr-http', work_id: 'rr-job', ttl_ms: 5000 });
  const claim = assertJson(r, 200);
  r = await call(f, 'POST', '/work/renew', { session_id: 'rr-http', work_id: 'rr-job', token: claim.token, ttl_ms: 600000 });
  const renewed = assertJson(r, 200);
  assert.ok(renewed.expires_at > claim.expires_at, JSON.stringify(renewed));
  assertJson(await call(f, 'POST', '/work/complete', { session_id: 'rr-http', work_id: 'rr-job', token: claim.token }), 200);
  const reopened = assertJson(await call(f, 'POST', '/work/reopen', { session_id: 'rr-http', work_id: 'rr-job' }), 200);
  assert.equal(reopened.state, 'open', JSON.stringify(reopened));
  // Over WebSocket: claimed again, completed, reopened.
  const c = await f.connect('rr-ws', 'recent=0');
  const again = await c.request({ action: 'claim', work_id: 'rr-job', ttl_ms: 30000 });
  assert.equal(again.ok, true, JSON.stringify(again));
  assert.equal((await c.request({ action: 'complete', work_id: 'rr-job', token: again.token })).ok, true);
  const ws = await c.request({ action: 'reopen', work_id: 'rr-job' });
  assert.equal(ws.ok, true, JSON.stringify(ws));
  assert.equal(ws.state, 'open', JSON.stringify(ws));
  const twice = await c.request({ action: 'reopen', work_id: 'rr-job' });
  assert.equal(twice.ok, false, JSON.stringify(twice));
  assert.equal(twice.error.code, 'conflict', JSON.stringify(twice));
}));

test('query arguments are never cut: over 1023 bytes is 414; /mcp keeps a capability list of 516 bytes whole', withFabric(async (f) => {
  const r = await call(f, 'GET', `/state?x=${'a'.repeat(1100)}`);
  assertHttpError(r, 414, 'too_large');
  const caps = Array.from({ length: 47 }, (_, i) => `skill${String(i).padStart(5, '0')}`);
  const init = await call(f, 'POST', `/mcp?session=caps-mcp&capabilities=${caps.join(',')}`,
    { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } },
    { Accept: 'application/json, text/event-stream' });
  assert.equal(init.status, 200, init.text);
  const j = assertJson(await call(f, 'GET', '/sessions/caps-mcp'), 200);
  const one = j.session && typeof j.session === 'object' ? j.session : j;
  assert.deepEqual(one.capabilities, caps);
}));

test('the secret of an HTTP work call\'s session is kept while the session lives, then forgotten (bounded memory)', { timeout: 60000 }, withFabric({ gatewayArgs: ['--http-session-ttl', '1s', '--heartbeat', '200ms'] }, async (f) => {
  const remembered = async () => assertJson(await call(f, 'GET', '/state'), 200).sessions_remembered;
  const ws = await f.connect('keep-ws', 'recent=0');
  const n0 = await remembered();
  assert.ok(n0 >= 1, `the WebSocket session's secret is kept: ${n0}`);
  const idle = assertJson(await call(f, 'POST', '/work/claim', { session_id: 'idle-http', work_id: 'idle-job', ttl_ms: 60000 }), 200);
  const busy = assertJson(await call(f, 'POST', '/work/claim', { session_id: 'busy-http', work_id: 'busy-job', ttl_ms: 60000 }), 200);
  assert.equal(await remembered(), n0 + 2, 'both HTTP sessions remembered');
  assertJson(await call(f, 'GET', '/sessions/idle-http'), 200);
  // busy-http acts every 300 ms; idle-http does nothing more. The broker
  // times idle-http out 1 s after its last call; the gateway forgets its
  // secret after that (here ~3.6 s), and only its.
  let stop = false;
  const keepBusy = (async () => {
    while (!stop) {
      assertJson(await call(f, 'POST', '/work/renew', { session_id: 'busy-http', work_id: 'busy-job', token: busy.token }), 200);
      await sleep(300);
    }
  })();
  try {
    await waitFor(async () => (await remembered()) === n0 + 1, { timeout: 15000, what: 'idle-http\'s secret forgotten' });
    const gone = await call(f, 'GET', '/sessions/idle-http');
    assert.ok(gone.status === 404 || (gone.json && gone.json.status === 'gone' && gone.json.claims === 0),
      `the broker let idle-http go before the gateway forgot its secret: ${gone.text}`);
    await sleep(1500);
    assert.equal(await remembered(), n0 + 1, 'busy-http and the WebSocket session stay remembered');
  } finally {
    stop = true;
    await keepBusy;
  }
  // The claim went with the session (its holder timed out); a new call as
  // idle-http registers it afresh and acts.
  const again = assertJson(await call(f, 'POST', '/work/claim', { session_id: 'idle-http', work_id: 'idle-job', ttl_ms: 60000 }), 200);
  assert.ok(again.token > idle.token, JSON.stringify(again));
  assert.equal(await remembered(), n0 + 2);
  assert.equal((await ws.request({ action: 'status', state: 'busy' })).ok, true, 'the WebSocket session acts still');
  await ws.close();
}));

test('history says which events retention removed past since or the cursor (gap), over HTTP and WebSocket', withFabric({ brokerArgs: ['--retain-events', '5'] }, async (f) => {
  const ws = await f.connect('gap-ws');
  const seqs = [];
  for (let i = 0; i < 20; i++) {
    seqs.push(assertJson(await call(f, 'POST', '/events', { event_type: 'gap.e', payload: { i } }), 201).seq);
  }
  // The oldest event the store still holds (every topic counts toward the 5).
  const first = assertJson(await call(f, 'GET', '/events/history?since=0&limit=1'), 200).events[0].seq;
  assert.ok(first > seqs[2] + 1 && first <= seqs[15], `retention kept from ${first}`);
  assert.equal(assertJson(await call(f, 'GET', '/events/history?since=0&limit=1'), 200).gap, undefined,
    'since=0 reads from the start: never a gap');

  let j = assertJson(await call(f, 'GET', `/events/history?since=${seqs[1]}&event_type=gap.*`), 200);
  assert.deepEqual(j.gap, { from: seqs[1] + 1, to: first - 1 }, JSON.stringify(j));
  assert.deepEqual(j.events.map((x) => x.seq), seqs.filter((s) => s >= first));
  j = assertJson(await call(f, 'GET', `/events/history?since=${seqs[1]}&cursor=${seqs[2]}`), 200);
  assert.deepEqual(j.gap, { from: seqs[2], to: first - 1 }, `a cursor is where the page starts: ${JSON.stringify(j)}`);
  j = assertJson(await call(f, 'GET', `/events/history?since=${first - 1}`), 200);
  assert.equal(j.gap, undefined, `nothing removed after ${first - 1}: ${JSON.stringify(j)}`);
  j = assertJson(await call(f, 'GET', `/events/history?since=${seqs[1]}&order=desc`), 200);
  assert.equal(j.gap, undefined, 'newest first reads no range after since');
  j = assertJson(await call(f, 'GET', '/events/history'), 200);
  assert.equal(j.gap, undefined, 'the newest events: no gap');

  let r = await ws.request({ action: 'history', topics: ['gap.>'], since_seq: seqs[1] });
  assert.ok(r.ok, JSON.stringify(r));
  assert.deepEqual(r.gap, { from: seqs[1] + 1, to: first - 1 }, JSON.stringify(r));
  r = await ws.request({ action: 'history', topics: ['gap.>'], since_seq: seqs[18] });
  assert.ok(r.ok && r.gap === undefined && r.events.length === 1, JSON.stringify(r));
}));

test('HTTP pipelining: answered in order; a request lws cannot read behind one with a body is refused (400, closed), nothing of it done; the gateway serves everyone', withFabric(async (f) => {
  const get = (p) => `GET ${p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;
  const post = (type) => {
    const body = JSON.stringify({ event_type: type, payload: { n: 1 } });
    return `POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  };
  const statuses = (out) => [...out.matchAll(/HTTP\/1\.1 (\d+)/g)].map((m) => Number(m[1]));
  const stored = async (type) => assertJson(await call(f, 'GET', `/events/history?since=0&event_type=${type}`), 200).count;
  const pairs = [
    // lws 4.1 spun its service thread for good on the first two.
    [get('/health') + post('pipe.a'), [200, 400], { 'pipe.a': 0 }],
    [post('pipe.b') + post('pipe.c'), [201, 400], { 'pipe.b': 1, 'pipe.c': 0 }],
    [post('pipe.d') + get('/health'), [201, 200], { 'pipe.d': 1 }],
    [get('/health') + get('/state'), [200, 200], {}],
  ];
  for (const [text, want, done] of pairs) {
    const r = await rawSocket(f, text, 3000);
    assert.deepEqual(statuses(r.out), want, r.out);
    if (want.includes(400)) {
      assert.ok(r.closed, 'the connection is closed after the refusal');
      assert.match(r.out, /"code":"bad_request".*pipelin/, r.out);
    }
    // The gateway goes on answering every client (a bounded wait, not a timing bar).
    const h = await call(f, 'GET', '/health');
    assert.equal(h.status, 200, `after ${JSON.stringify(text.slice(0, 40))}: ${h.text}`);
    for (const [type, n] of Object.entries(done)) assert.equal(await stored(type), n, `${type} stored ${n} time(s)`);
  }
  // The next request sent while the first is in flight (the broker held):
  // both answered, in order, the first done once (it was once refused as
  // "not taken" after it was done).
  const net = require('node:net');
  const s = net.connect({ port: f.port, host: '127.0.0.1' });
  let out = '';
  s.on('data', (d) => { out += d; });
  await new Promise((resolve) => s.on('connect', resolve));
  f.broker.child.kill('SIGSTOP');
  try {
    s.write(post('pipe.late'));
    await sleep(300);
    s.write(get('/health'));
    await sleep(700);
  } finally {
    f.broker.child.kill('SIGCONT');
  }
  await waitFor(() => statuses(out).length >= 2, { timeout: 10000, what: 'both answers' });
  s.destroy();
  assert.deepEqual(statuses(out), [201, 200], out);
  assert.equal(await stored('pipe.late'), 1);
  // A POST on a kept-alive connection after the answer to the one before is fine.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  for (let i = 0; i < 3; i++) {
    const r = await rawBody(f, 'POST', '/events', JSON.stringify({ event_type: 'pipe.ok', payload: { i } }), { agent });
    assert.equal(r.status, 201, r.text);
  }
  agent.destroy();
  assert.equal(await stored('pipe.ok'), 3);
}));

// With web_root none ("by choice") / said the gateway "did not find its
// dashboard files" and told to start it with --web-root: it says it
// serves none by choice. A web_root without the files still says that.
test('no dashboard: / says "by choice" with web_root none, "did not find" when the files are missing', withFabric({ gatewayArgs: ['--web-root', 'none'] }, async (f) => {
  const r = await raw(f, 'GET', '/');
  assert.equal(r.status, 404, r.body);
  assert.match(r.body, /serves no dashboard, by choice/);
  assert.match(r.body, /web_root none/);
  assert.doesNotMatch(r.body, /did not find|Start it with/);
  assert.equal((await call(f, 'GET', '/health')).status, 200);
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'nexus-gw-noweb-'));
  await withFabric({ gatewayArgs: ['--web-root', empty] }, async (g) => {
    const m = await raw(g, 'GET', '/');
    assert.equal(m.status, 404, m.body);
    assert.match(m.body, /did not find its dashboard files/);
    assert.match(m.body, /--web-root DIR/);
  })();
  fs.rmSync(empty, { recursive: true, force: true });
}));

// A gateway whose broker_token the broker refuses says which of its
// settings is wrong: broker_token (it named NEXUS_TOKEN, libnexus's
// environment variable, which the gateway does not read for it).
test('a refused --broker-token names broker_token, not NEXUS_TOKEN', { timeout: 30000 }, withFabric({ brokerArgs: ['--token', 'btok-ok'], gatewayArgs: ['--broker-token', 'btok-ok'] }, async (f) => {
  const { Proc, NEXUS_GATEWAY, freePort } = require('./lib');
  const port = await freePort();
  const gw = new Proc('nexus-gateway (wrong broker token)', NEXUS_GATEWAY, ['--port', String(port),
    '--broker', `tcp://127.0.0.1:${f.brokerPorts[0]}`, '--broker-token', 'wrong', '--web-root', 'none']);
  f.procs.push(gw);
  const exited = await Promise.race([gw.exitPromise, sleep(15000).then(() => null)]);
  await gw.stop();
  assert.ok(exited && exited.code !== 0, `it stops: ${JSON.stringify(exited)}\n${gw.output}`);
  assert.match(gw.output, /refused this client's token \(broker_token\)/, gw.output);
  assert.doesNotMatch(gw.output, /NEXUS_TOKEN/, gw.output);
  // Without broker_token, NEXUS_TOKEN from the environment is presented
  // (operations.md): --print-config shows broker_token empty, the log says.
  const port2 = await freePort();
  process.env.NEXUS_TOKEN = 'btok-ok';
  let gw2;
  try {
    gw2 = new Proc('nexus-gateway (NEXUS_TOKEN)', NEXUS_GATEWAY, ['--port', String(port2),
      '--broker', `tcp://127.0.0.1:${f.brokerPorts[0]}`, '--web-root', 'none']);
  } finally {
    delete process.env.NEXUS_TOKEN;
  }
  f.procs.push(gw2);
  await waitFor(() => /connected to the broker/.test(gw2.output), { timeout: 15000, what: 'the gateway with NEXUS_TOKEN connects' });
  await gw2.stop();
  assert.match(gw2.output, /the token presented to the broker is NEXUS_TOKEN from the environment/, gw2.output);
}));
