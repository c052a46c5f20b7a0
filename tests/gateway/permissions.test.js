'use strict';
// Gateway clients' token permissions (issue 14): a line of the gateway's
// tokens_file may say which topics its holder publishes (pub=) and reads
// (sub=), as the broker's do. Over WebSocket and HTTP: what is outside is
// refused with `forbidden` and a message naming the token's patterns, and
// nothing outside sub= is shown, live, in history, or in the welcome.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
const { StreamableHTTPClientTransport } = require('@modelcontextprotocol/sdk/client/streamableHttp.js');
const { withFabric, sleep } = require('./lib');

const TOKENS = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nexus-gw-perm-')), 'tokens');
fs.writeFileSync(TOKENS, [
  '# a CI runner: builds only',
  'tok-ci name=ci sessions=ci pub=build.> sub=build.>',
  '# a reader of work events that may not publish',
  'tok-ro name=ro sessions=ro sub=work.>,message.> pub=',
  '# the first format: everything but the broker\'s topics',
  'tok-all *',
  '',
].join('\n'));

async function call(f, method, p, body, token) {
  const init = { method, headers: { Authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(5000) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const res = await fetch(`${f.http}${p}`, init);
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, text, json };
}

function forbidden(r, mention) {
  assert.equal(r.ok, false, JSON.stringify(r));
  assert.equal(r.error.code, 'forbidden', JSON.stringify(r));
  if (mention) assert.ok(r.error.message.includes(mention), JSON.stringify(r));
}

test('WebSocket: subscribe, publish and history outside a token\'s patterns are forbidden; nothing outside sub= is shown', withFabric({ gatewayArgs: ['--tokens-file', TOKENS], healthToken: 'tok-all' }, async (f) => {
  // A valid token for another session is 403 (known, not allowed); a
  // token that is no token is 401.
  const { WsClient } = require('./lib');
  const other = f.track(new WsClient(`${f.wsBase}/ws/session/ro?token=tok-ci`));
  assert.equal(await other.unexpected, 403, 'tok-ci for session ro');
  const wrong = f.track(new WsClient(`${f.wsBase}/ws/session/ro?token=tok-nope`));
  assert.equal(await wrong.unexpected, 401, 'a token that is none');
  const ci = await f.connect('ci', 'token=tok-ci&recent=20');
  const ro = await f.connect('ro', 'token=tok-ro&recent=0');
  const all = await f.connect('all-1', 'token=tok-all&recent=0');
  forbidden(await ci.request({ action: 'subscribe', topics: ['repo.>'], id: 1 }), 'build.>');
  forbidden(await ci.request({ action: 'subscribe', topics: ['>'], id: 2 }));
  forbidden(await ci.request({ action: 'subscribe', topics: ['build.>', 'work.*'], id: 3 }), 'work.*');
  const sub = await ci.request({ action: 'subscribe', topics: ['build.>'], id: 4 });
  assert.deepEqual(sub.topics, ['build.>'], 'the refused subscribes added nothing');
  assert.equal((await ro.request({ action: 'subscribe', topics: ['work.>', 'message.*'], id: 5 })).ok, true);
  assert.equal((await all.request({ action: 'subscribe', topics: ['>'], id: 6 })).ok, true);

  forbidden(await ci.request({ action: 'publish', event_type: 'repo.push', payload: {}, id: 7 }), 'build.>');
  forbidden(await ro.request({ action: 'publish', event_type: 'work.note', payload: {}, id: 8 }));
  forbidden(await all.request({ action: 'publish', event_type: 'work.claimed', payload: { work_id: 'x' }, id: 9 }), 'names its first token');
  const ok = await ci.request({ action: 'publish', event_type: 'build.done', payload: { n: 1 }, id: 10 });
  assert.equal(ok.ok, true, JSON.stringify(ok));
  await all.request({ action: 'publish', event_type: 'work.note', payload: { n: 2 }, id: 11 });
  await all.request({ action: 'publish', event_type: 'repo.push', payload: { n: 3 }, id: 12 });
  await all.waitEvent((e) => e.event_type === 'repo.push', 5000, 'repo.push at the * token');
  await ro.waitEvent((e) => e.event_type === 'work.note', 5000, 'work.note at ro');
  await ci.waitEvent((e) => e.event_type === 'build.done', 5000, 'build.done at ci');
  await sleep(300);
  assert.ok(!ci.events().some((e) => !e.event_type.startsWith('build.')), JSON.stringify(ci.events()));
  assert.ok(!ro.events().some((e) => e.event_type === 'build.done' || e.event_type === 'repo.push'), JSON.stringify(ro.events()));

  // Direct messages: ro (sub message.>) gets its own; ci, whose sub= has
  // no message.*, does not, though it is the target.
  await all.request({ action: 'publish', event_type: 'message.direct', to: 'ro', payload: { text: 'for ro' }, id: 13 });
  await all.request({ action: 'publish', event_type: 'message.direct', to: 'ci', payload: { text: 'for ci' }, id: 14 });
  const dm = await ro.waitEvent((e) => e.event_type === 'message.direct', 5000, 'the direct message to ro');
  assert.equal(dm.to, 'ro', JSON.stringify(dm));
  await sleep(300);
  assert.ok(!ci.events().some((e) => e.event_type === 'message.direct'), 'ci may not read message.*');

  forbidden(await ci.request({ action: 'history', topics: ['repo.>'], id: 15 }), 'build.>');
  forbidden(await ci.request({ action: 'history', id: 16 }));
  // The single `pattern` field is held to sub= as `topics` is: outside it
  // forbidden, inside it answered (it was read as every event, refused).
  forbidden(await ci.request({ action: 'history', pattern: 'repo.>', id: 19 }), 'build.>');
  const one = await ci.request({ action: 'history', pattern: 'build.>', id: 20 });
  assert.ok(one.ok && one.events.length >= 1 && one.events.every((e) => e.event_type.startsWith('build.')), JSON.stringify(one));
  const h = await ci.request({ action: 'history', topics: ['build.>'], id: 17 });
  assert.ok(h.ok && h.events.every((e) => e.event_type.startsWith('build.')), JSON.stringify(h));
  const hr = await ro.request({ action: 'history', topics: ['message.direct'], id: 18 });
  assert.deepEqual(hr.events.map((e) => e.payload.text), ['for ro'], JSON.stringify(hr));
  // A welcome shows only what the token may read.
  const late = await f.connect('ci', 'token=tok-ci&recent=50');
  const shown = late.welcome.recent_events.map((e) => e.event_type);
  assert.ok(shown.length > 0 && shown.every((t) => t.startsWith('build.')), JSON.stringify(shown));
}));

test('HTTP: a publish or a history outside a token\'s patterns is 403 forbidden; recent events are filtered', withFabric({ gatewayArgs: ['--tokens-file', TOKENS], healthToken: 'tok-all' }, async (f) => {
  let r = await call(f, 'POST', '/events', { event_type: 'repo.push', session_id: 'ci', payload: {} }, 'tok-ci');
  assert.equal(r.status, 403, r.text);
  assert.equal(r.json.error.code, 'forbidden', r.text);
  assert.ok(r.json.error.message.includes('build.>'), r.text);
  r = await call(f, 'POST', '/events', { event_type: 'build.ok', session_id: 'ci', payload: {} }, 'tok-ci');
  assert.equal(r.status, 201, r.text);
  r = await call(f, 'POST', '/message', { from: 'ro', to: 'ci', message: 'no' }, 'tok-ro');
  assert.equal(r.status, 403, r.text);
  r = await call(f, 'POST', '/events', { event_type: 'work.completed', session_id: 'x', payload: {} }, 'tok-all');
  assert.equal(r.status, 403, `the broker's own topic: ${r.text}`);
  r = await call(f, 'POST', '/events', { event_type: 'repo.push', session_id: 'x', payload: {} }, 'tok-all');
  assert.equal(r.status, 201, r.text);
  r = await call(f, 'GET', '/events/history?event_type=repo.>', undefined, 'tok-ci');
  assert.equal(r.status, 403, r.text);
  r = await call(f, 'GET', '/events/history', undefined, 'tok-ci');
  assert.equal(r.status, 403, `history of everything: ${r.text}`);
  r = await call(f, 'GET', '/events/history?event_type=build.>', undefined, 'tok-ci');
  assert.equal(r.status, 200, r.text);
  assert.ok(r.json.events.length >= 1 && r.json.events.every((e) => e.event_type.startsWith('build.')), r.text);
  r = await call(f, 'GET', '/events/recent?count=50', undefined, 'tok-ci');
  assert.equal(r.status, 200, r.text);
  assert.ok(r.json.events.every((e) => e.event_type.startsWith('build.')), `recent, filtered: ${r.text}`);
  // The count is of events the token reads: newer events it may not read
  // do not push its own out (the newest N of everything, filtered after,
  // answered [] here).
  for (let i = 0; i < 5; i++) {
    r = await call(f, 'POST', '/events', { event_type: 'repo.push', session_id: 'x', payload: { i } }, 'tok-all');
    assert.equal(r.status, 201, r.text);
  }
  r = await call(f, 'GET', '/events/recent?count=1', undefined, 'tok-ci');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.events.map((e) => e.event_type), ['build.ok'], `recent count=1 for tok-ci: ${r.text}`);
  r = await call(f, 'GET', '/events/recent?count=2', undefined, 'tok-ro');
  assert.equal(r.status, 200, r.text);
  assert.ok(r.json.events.every((e) => /^(work|message)\./.test(e.event_type)), r.text);
  // /events/stats names only the topics the token may read.
  r = await call(f, 'GET', '/events/stats', undefined, 'tok-ci');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(Object.keys(r.json.by_type).filter((k) => !k.startsWith('build.')), [], `stats for tok-ci: ${r.text}`);
  assert.ok(r.json.by_type['build.ok'] >= 1, r.text);
  r = await call(f, 'GET', '/events/stats', undefined, 'tok-all');
  assert.ok(r.json.by_type['repo.push'] >= 5, `tok-all sees repo.push: ${r.text}`);
}));

test('/mcp: the tools hold a token\'s pub= and sub= as every other route does', withFabric({ gatewayArgs: ['--tokens-file', TOKENS], healthToken: 'tok-all' }, async (f) => {
  const mcp = async (token) => {
    const transport = new StreamableHTTPClientTransport(new URL(`${f.http}/mcp`),
      { requestInit: { headers: { Authorization: `Bearer ${token}` } } });
    const client = new Client({ name: 'perm-test', version: '1.0.0' });
    await client.connect(transport);
    return client;
  };
  const call = async (c, name, args) => {
    const r = await c.callTool({ name, arguments: args });
    return { isError: r.isError, body: r.structuredContent };
  };
  const refused = (r, mention, what) => {
    assert.equal(r.isError, true, `${what}: ${JSON.stringify(r)}`);
    assert.equal(r.body.error.code, 'forbidden', `${what}: ${JSON.stringify(r)}`);
    if (mention) assert.ok(r.body.error.message.includes(mention), `${what}: ${JSON.stringify(r)}`);
  };
  const all = await mcp('tok-all');
  const ci = await mcp('tok-ci');
  try {
    const secret = await call(all, 'publish_event', { event_type: 'secret.y', payload: { pw: 'hunter2' } });
    assert.equal(secret.isError, false, JSON.stringify(secret));
    refused(await call(ci, 'publish_event', { event_type: 'secret.z', payload: {} }), 'build.>', 'publish outside pub=');
    refused(await call(ci, 'send_message', { to: 'ro', message: 'hi' }), 'build.>', 'a direct message outside pub=');
    refused(await call(ci, 'notify', { title: 't', message: 'm' }), 'build.>', 'notify outside pub=');
    refused(await call(ci, 'get_events', { patterns: ['secret.>'] }), 'build.>', 'get_events outside sub=');
    refused(await call(ci, 'get_events', {}), null, 'get_events of every event');
    refused(await call(ci, 'wait_for_events', { patterns: ['secret.>'], timeout_seconds: 1 }), 'build.>', 'wait_for_events outside sub=');
    const pub = await call(ci, 'publish_event', { event_type: 'build.mcp', payload: { n: 1 } });
    assert.equal(pub.isError, false, JSON.stringify(pub));
    const got = await call(ci, 'get_events', { patterns: ['build.>'] });
    assert.equal(got.isError, false, JSON.stringify(got));
    const types = got.body.events.map((e) => e.event_type);
    assert.ok(types.includes('build.mcp') && types.every((t) => t.startsWith('build.')), JSON.stringify(types));
    const h = await call(all, 'get_events', { patterns: ['secret.>'] });
    assert.deepEqual(h.body.events.map((e) => e.event_type), ['secret.y'], 'nothing ci tried was stored');
  } finally {
    await ci.close();
    await all.close();
  }
}));

test('/mcp: one token holds at most 100 MCP sessions; past that its least recently used goes, others are untouched', withFabric({ gatewayArgs: ['--tokens-file', TOKENS], healthToken: 'tok-all' }, async (f) => {
  const init = (token) => fetch(`${f.http}/mcp`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', Authorization: `Bearer ${token}` },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'flood', version: '1' } } }),
    signal: AbortSignal.timeout(10000),
  });
  const list = (token, id) => fetch(`${f.http}/mcp`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', Authorization: `Bearer ${token}`, 'Mcp-Session-Id': id, 'MCP-Protocol-Version': '2025-06-18' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' }),
    signal: AbortSignal.timeout(10000),
  });
  const mine = await init('tok-ci');
  assert.equal(mine.status, 200, await mine.text());
  const ciSession = mine.headers.get('mcp-session-id');
  const ids = [];
  for (let i = 0; i < 110; i++) {
    const r = await init('tok-all');
    assert.equal(r.status, 200, `initialize ${i}: ${await r.text()}`);
    ids.push(r.headers.get('mcp-session-id'));
  }
  const metrics = await (await fetch(`${f.http}/metrics`, { headers: { Authorization: 'Bearer tok-all' } })).text();
  const open = Number((metrics.match(/^nexus_gateway_mcp_sessions (\d+)$/m) || [])[1]);
  assert.equal(open, 101, `100 of tok-all's and ci's one: ${open}`);
  assert.equal((await list('tok-all', ids[0])).status, 404, 'the first ten went (least recently used)');
  assert.equal((await list('tok-all', ids[109])).status, 200, 'the newest is there');
  assert.equal((await list('tok-ci', ciSession)).status, 200, 'another token\'s session is untouched');
}));
