'use strict';
// The fabric's MCP server, driven by the official MCP TypeScript SDK client
// (@modelcontextprotocol/sdk) over both transports: `nexus mcp` over stdio
// (StdioClientTransport) and the gateway's /mcp over Streamable HTTP
// (StreamableHTTPClientTransport), against a real nexusd and gateway.
// Every tool is called with good and bad arguments; get_events resume
// hands out each event exactly once across restarts of the MCP server and
// of the broker; a parked wait_for_events holds nobody else up.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
const { StdioClientTransport } = require('@modelcontextprotocol/sdk/client/stdio.js');
const { StreamableHTTPClientTransport } = require('@modelcontextprotocol/sdk/client/streamableHttp.js');
const { withFabric, NEXUS_CLI, NEXUSD, Proc, canConnect, waitFor, sleep, sanitizerReport, stopBrokerSeenDown } = require('./lib');

const TOOLS = ['register_session', 'list_sessions', 'list_channels', 'publish_event', 'get_events',
  'unregister_session', 'notify', 'claim_work', 'renew_work', 'release_work', 'complete_work',
  'list_claims', 'send_message', 'wait_for_events'];

/** A stdio MCP client running `nexus mcp` against the fabric's broker. */
async function stdioClient(f, args = [], env = {}) {
  const stateHome = f.mcpState || (f.mcpState = fs.mkdtempSync(path.join(os.tmpdir(), 'nexus-mcp-state-')));
  const stderr = [];
  const transport = new StdioClientTransport({
    command: NEXUS_CLI,
    args: ['mcp', ...args],
    env: { ...process.env, NEXUS_ENDPOINT: `tcp://127.0.0.1:${f.brokerPorts[0]}`, XDG_STATE_HOME: stateHome, ...env },
    stderr: 'pipe',
  });
  transport.stderr.on('data', (d) => stderr.push(d.toString()));
  const client = new Client({ name: 'nexus-test', version: '1.0.0' });
  await client.connect(transport);
  client.logs = () => stderr.join('');
  return client;
}

/** The gateway's count of parked /mcp waits (/metrics). */
async function mcpWaits(f) {
  const text = await (await fetch(`${f.http}/metrics`)).text();
  const m = text.match(/^nexus_gateway_mcp_waits (\d+)$/m);
  assert.ok(m, 'nexus_gateway_mcp_waits in /metrics');
  return Number(m[1]);
}

/** An HTTP MCP client of the fabric's gateway. */
async function httpClient(f, query = '', headers = {}) {
  const transport = new StreamableHTTPClientTransport(new URL(`${f.http}/mcp${query}`), { requestInit: { headers } });
  const client = new Client({ name: 'nexus-test', version: '1.0.0' });
  await client.connect(transport);
  client.transportRef = transport;
  client.logs = () => '';
  return client;
}

/** Closes c; a `nexus mcp` must exit without a sanitizer report (it sees
 *  its stdin close and exits, so LeakSanitizer runs). */
async function closeClean(c) {
  await c.close();
  if (c.logs()) assert.match(c.logs(), /stdin closed: stopping/, 'it ended on its own');
  const report = sanitizerReport({ output: c.logs() });
  assert.equal(report, '', `nexus mcp printed a sanitizer report:\n${report}`);
}

async function ok(c, name, args = {}) {
  const r = await c.callTool({ name, arguments: args });
  assert.equal(r.isError, false, `${name} ${JSON.stringify(args)}: ${JSON.stringify(r)}\n${c.logs()}`);
  assert.ok(r.structuredContent && typeof r.structuredContent === 'object', JSON.stringify(r));
  assert.deepEqual(JSON.parse(r.content[0].text), r.structuredContent, 'text and structured content agree');
  return r.structuredContent;
}

async function fails(c, name, args, code, mentions) {
  const r = await c.callTool({ name, arguments: args });
  assert.equal(r.isError, true, `${name} ${JSON.stringify(args)} should fail: ${JSON.stringify(r)}`);
  const e = r.structuredContent.error;
  assert.equal(e.code, code, `${name} ${JSON.stringify(args)}: ${JSON.stringify(r)}`);
  assert.ok(r.content[0].text.startsWith(`${code}: `), r.content[0].text);
  if (mentions) assert.match(e.message, mentions, JSON.stringify(e));
  return e;
}

/** Every tool, good and bad arguments, over client c (acting as `me`). */
async function exercise(c, me, other) {
  const tools = (await c.listTools()).tools;
  assert.deepEqual(tools.map((t) => t.name), TOOLS);
  for (const t of tools) {
    assert.equal(t.inputSchema.type, 'object', t.name);
    assert.ok(t.description.length > 40, `${t.name} is described for an agent`);
  }
  const claim = tools.find((t) => t.name === 'claim_work').inputSchema;
  assert.deepEqual(claim.required, ['work_id']);
  assert.equal(claim.properties.work_id.maxLength, 256, 'bounds from the op table');
  assert.equal(claim.properties.ttl_ms.minimum, 100);
  assert.deepEqual(tools.find((t) => t.name === 'renew_work').inputSchema.required, ['work_id', 'token']);
  assert.deepEqual(tools.find((t) => t.name === 'list_claims').inputSchema.properties.state.enum,
    ['claimed', 'released', 'expired', 'completed', 'open']);

  // register_session
  let r = await ok(c, 'register_session', { name: 'tester', capabilities: ['c', 'review'] });
  assert.equal(r.session_id, me);
  assert.equal(typeof r.cursor, 'number');
  await fails(c, 'register_session', { session_id: 'bad id!' }, 'bad_request', /session_id/);
  await fails(c, 'register_session', { capabilities: 'c' }, 'bad_request', /capabilities/);
  await fails(c, 'register_session', { nonsense: 1 }, 'bad_request', /nonsense/);

  // list_sessions
  r = await ok(c, 'list_sessions');
  const mine = r.sessions.find((s) => s.session === me);
  assert.ok(mine, JSON.stringify(r));
  assert.equal(mine.name, 'tester');
  assert.deepEqual(mine.capabilities, ['c', 'review']);
  r = await ok(c, 'list_sessions', { capability: 'review' });
  assert.ok(r.sessions.some((s) => s.session === me));
  await fails(c, 'list_sessions', { all: 'yes' }, 'bad_request', /all/);
  r = await ok(c, 'list_sessions', { limit: 1 });
  assert.equal(r.sessions.length, 1, JSON.stringify(r));
  assert.equal(typeof r.truncated, 'boolean', JSON.stringify(r));
  assert.ok(Number.isInteger(r.matched) && r.matched >= r.sessions.length, JSON.stringify(r));
  r = await ok(c, 'list_sessions', { after: me });
  assert.ok(r.sessions.every((s) => s.session > me), JSON.stringify(r));
  await fails(c, 'list_sessions', { limit: 0 }, 'bad_request', /limit/);

  // list_channels: this server's own subscription is one of them.
  r = await ok(c, 'list_channels');
  assert.ok(Array.isArray(r.channels) && r.channels.length >= 1, JSON.stringify(r));
  assert.ok(r.channels.every((ch) => typeof ch.prefix === 'string' && ch.subscribers >= 1));
  await fails(c, 'list_channels', { x: 1 }, 'bad_request', /'x'/);

  // publish_event
  r = await ok(c, 'publish_event', { event_type: 'mcp.test.one', payload: { n: 1 } });
  const seq1 = r.seq;
  assert.ok(seq1 > 0);
  await fails(c, 'publish_event', { event_type: 'a..b' }, 'bad_topic', /event_type/);
  await fails(c, 'publish_event', { payload: 1 }, 'bad_request', /event_type/);
  await fails(c, 'publish_event', { event_type: 'message.direct', payload: { x: 1 } }, 'bad_request', /'to'/);

  // get_events
  r = await ok(c, 'get_events', { patterns: ['mcp.test.>'], since_seq: seq1 - 1 });
  assert.deepEqual(r.events.map((e) => [e.seq, e.event_type, e.session_id, e.payload.n]), [[seq1, 'mcp.test.one', me, 1]]);
  await fails(c, 'get_events', { patterns: ['a..b'] }, 'bad_pattern', /a\.\.b/);
  await fails(c, 'get_events', { limit: 0 }, 'bad_request', /limit/);
  await fails(c, 'get_events', { order: 'sideways' }, 'bad_request', /order/);
  // Arguments that exclude each other are said, not one dropped.
  await fails(c, 'get_events', { resume: true, since_seq: 1 }, 'bad_request', /exclude/);
  await fails(c, 'get_events', { resume: true, order: 'desc' }, 'bad_request', /oldest first/);

  // notify: always an event
  r = await ok(c, 'notify', { title: 'build', message: 'green', level: 'info' });
  assert.equal(r.event_type, `notify.${me}`);
  const n = await ok(c, 'get_events', { patterns: ['notify.>'], since_seq: r.seq - 1 });
  assert.deepEqual(n.events[0].payload, { title: 'build', message: 'green', level: 'info', from: me });
  await fails(c, 'notify', { title: 'x' }, 'bad_request', /message/);
  await fails(c, 'notify', { title: 'x', message: 'y', level: 'loud' }, 'bad_request', /level/);

  // claim, renew, release, complete, list
  const w = `w-${me}`;
  const granted = await ok(c, 'claim_work', { work_id: w, ttl_ms: 60000, description: 'test work' });
  assert.equal(granted.holder, me);
  assert.ok(granted.token > 0);
  const again = await fails(c, 'claim_work', { work_id: w }, 'conflict');
  assert.equal(again.token, granted.token, 'the broker\'s extra fields come with the error');
  await fails(c, 'claim_work', { work_id: '' }, 'bad_request', /work_id/);
  await fails(c, 'claim_work', { work_id: w, ttl_ms: 5 }, 'bad_request', /ttl_ms/);
  r = await ok(c, 'renew_work', { work_id: w, token: granted.token, ttl_ms: 30000 });
  assert.equal(r.token, granted.token);
  await fails(c, 'renew_work', { work_id: w, token: granted.token + 1000 }, 'stale_token');
  await fails(c, 'renew_work', { work_id: w }, 'bad_request', /token/);
  r = await ok(c, 'list_claims', { mine: true });
  assert.deepEqual(r.claims.map((x) => x.work_id), [w]);
  await fails(c, 'list_claims', { state: 'weird' }, 'bad_request', /state/);
  r = await ok(c, 'release_work', { work_id: w, token: granted.token, reason: 'done for now' });
  assert.equal(r.state, 'released');
  await fails(c, 'release_work', { work_id: w, token: granted.token }, 'conflict');
  await fails(c, 'release_work', { work_id: w }, 'bad_request', /token/);
  await fails(c, 'release_work', { work_id: w, token: 'one' }, 'bad_request', /token/);
  await fails(c, 'release_work', { work_id: w, token: granted.token, reason: 7 }, 'bad_request', /reason/);
  const g2 = await ok(c, 'claim_work', { work_id: w });
  assert.ok(g2.token > granted.token, 'fencing tokens only grow');
  r = await ok(c, 'complete_work', { work_id: w, token: g2.token, result: { ok: true } });
  assert.equal(r.state, 'completed');
  await fails(c, 'complete_work', { work_id: 'never-claimed', token: 1 }, 'not_found');
  await fails(c, 'complete_work', { token: g2.token }, 'bad_request', /work_id/);
  await fails(c, 'complete_work', { work_id: w, token: -1 }, 'bad_request', /token/);
  await fails(c, 'claim_work', { work_id: w }, 'denied');

  // send_message: a direct message; the target sees it, it is also ours.
  r = await ok(c, 'send_message', { to: other, message: 'hello', subject: 'hi' });
  const dm = await ok(c, 'get_events', { patterns: ['message.direct'], since_seq: r.seq - 1 });
  assert.deepEqual(dm.events[0].payload, { to: other, from: me, message: 'hello', subject: 'hi' });
  await fails(c, 'send_message', { to: 'bad id!', message: 'x' }, 'bad_request', /'to'/);
  await fails(c, 'send_message', { to: other }, 'bad_request', /message/);

  // wait_for_events: times out empty, or returns what comes.
  const t0 = Date.now();
  const lastSeq = (await ok(c, 'get_events', { limit: 1 })).cursor;
  r = await ok(c, 'wait_for_events', { patterns: ['mcp.never.>'], timeout_seconds: 1, resume: false, since_seq: lastSeq });
  assert.equal(r.timed_out, true);
  assert.deepEqual(r.events, []);
  assert.ok(Date.now() - t0 >= 900, 'it waited');
  await fails(c, 'wait_for_events', { timeout_seconds: 0 }, 'bad_request', /timeout_seconds/);
  await fails(c, 'wait_for_events', { patterns: 'x' }, 'bad_request', /patterns/);

  // An unknown tool is a protocol error.
  await assert.rejects(c.callTool({ name: 'teleport', arguments: {} }), /teleport/);

  // unregister, then acting tools say so; register again.
  await fails(c, 'unregister_session', { session_id: other }, 'bad_request', /session_id/);
  r = await ok(c, 'unregister_session');
  assert.equal(r.session_id, me);
  await fails(c, 'unregister_session', {}, 'not_found', /register_session/);
  await fails(c, 'claim_work', { work_id: 'after' }, 'not_found', /register_session/);
  r = await ok(c, 'register_session', {});
  assert.equal(r.session_id, me);
  await ok(c, 'claim_work', { work_id: `after-${me}` });
}

test('nexus mcp over stdio: the tools, good and bad arguments', withFabric(async (f) => {
  const c = await stdioClient(f, ['--session', 'stdio-agent', '--name', 'first']);
  try {
    assert.equal(c.getServerVersion().name, 'nexus');
    await exercise(c, 'stdio-agent', 'someone-else');
  } finally {
    await closeClean(c);
  }
}));

test('/mcp over Streamable HTTP: the tools, good and bad arguments, transport errors', withFabric(async (f) => {
  const c = await httpClient(f, '?session=http-agent&name=first');
  try {
    assert.equal(c.getServerVersion().name, 'nexus-gateway');
    assert.match(c.transportRef.sessionId, /^[0-9a-f]{32}$/);
    await exercise(c, 'http-agent', 'someone-else');
  } finally {
    await closeClean(c);
  }
  // The transport's own refusals.
  const post = (headers, body) => fetch(`${f.http}/mcp`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', ...headers }, body,
  });
  let res = await post({ 'Mcp-Session-Id': 'f'.repeat(32) }, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }));
  assert.equal(res.status, 404, 'an unknown session: initialize again');
  res = await post({}, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }));
  assert.equal(res.status, 400);
  res = await post({}, '{"jsonrpc":');
  assert.equal(res.status, 400);
  // A body that does not parse is a JSON-RPC parse error, as over stdio
  // (it was the REST error shape, which an MCP client cannot read).
  let j = await res.json();
  assert.deepEqual([j.jsonrpc, j.id, j.error && j.error.code], ['2.0', null, -32700], JSON.stringify(j));
  assert.match(j.error.message, /not valid JSON/);
  res = await post({}, '[' + '['.repeat(40) + ']'.repeat(40) + ']');
  j = await res.json();
  assert.deepEqual([res.status, j.error && j.error.code], [400, -32700], JSON.stringify(j));
  // A batch (valid JSON, no message: MCP has no batches) is an invalid
  // request, as over stdio, not a parse error.
  res = await post({}, JSON.stringify([{ jsonrpc: '2.0', id: 1, method: 'ping' }]));
  j = await res.json();
  assert.deepEqual([res.status, j.error && j.error.code], [400, -32600], JSON.stringify(j));
  // An MCP-Protocol-Version we do not speak is a 400 that says which we do
  // (the SDK client sends the negotiated one on every request above).
  res = await post({ 'MCP-Protocol-Version': '1999-01-01' }, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }));
  assert.equal(res.status, 400);
  assert.match((await res.json()).error.message, /1999-01-01.*2025-06-18/);
  // initialize negotiates in its body: the header does not refuse it.
  res = await post({ 'MCP-Protocol-Version': '1999-01-01' }, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '1999-01-01', capabilities: {}, clientInfo: { name: 't', version: '1' } } }));
  assert.equal(res.status, 200);
  assert.equal((await res.json()).result.protocolVersion, '2025-11-25');
  // A parked wait the client cancels ends: its request is answered 202 at
  // once, and the session can wait again.
  const sid = res.headers.get('mcp-session-id');
  const call = (id, args) => post({ 'Mcp-Session-Id': sid }, JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'wait_for_events', arguments: args } }));
  const parked = call(7, { patterns: ['never.happens'], timeout_seconds: 20 });
  await waitFor(async () => (await mcpWaits(f)) === 1, { timeout: 10000, what: 'the wait is parked' });
  res = await post({ 'Mcp-Session-Id': sid }, JSON.stringify({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 7 } }));
  assert.equal(res.status, 202);
  const t0 = Date.now();
  res = await Promise.race([parked, sleep(5000).then(() => ({ status: 'still parked' }))]);
  assert.equal(res.status, 202, 'the cancelled wait\'s request is answered');
  assert.ok(Date.now() - t0 < 5000);
  res = await call(8, { patterns: ['never.happens'], timeout_seconds: 1 });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).result.structuredContent.timed_out, true);
  assert.equal(await mcpWaits(f), 0, 'no wait is left counted');
  res = await post({ Origin: 'http://evil.example' }, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: {} }));
  assert.equal(res.status, 403, 'DNS rebinding: a foreign Origin is refused');
  res = await fetch(`${f.http}/mcp`, { headers: { Accept: 'text/event-stream' } });
  assert.equal(res.status, 405, 'no stream of our own on GET');
  assert.equal(res.headers.get('allow'), 'POST');
  // A session id that is no id: said so (400), not "this token may not".
  res = await fetch(`${f.http}/mcp?session=bad%20id`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } }),
  });
  const bad = await res.json();
  assert.equal(res.status, 400, JSON.stringify(bad));
  assert.match(bad.error.message, /session must be 1\.\.64/);
}));

const TOKENS = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nexus-mcp-tokens-')), 'tokens');
fs.writeFileSync(TOKENS, 'tok-a agent-a\ntok-any *\n', { mode: 0o600 });

test('/mcp with tokens: no token, no session; a token acts only as its sessions', withFabric({
  gatewayArgs: ['--tokens-file', TOKENS], healthToken: 'tok-any',
}, async (f) => {
  await assert.rejects(httpClient(f), /401|token/);
  await assert.rejects(httpClient(f, '', { Authorization: 'Bearer wrong' }), /401|token/);
  await assert.rejects(httpClient(f, '?session=agent-b', { Authorization: 'Bearer tok-a' }), /403|may not act/);
  // A token that names one session acts as it without saying so.
  const a = await httpClient(f, '', { Authorization: 'Bearer tok-a' });
  try {
    assert.equal((await ok(a, 'register_session', { name: 'a' })).session_id, 'agent-a');
    await fails(a, 'register_session', { session_id: 'agent-b' }, 'forbidden', /agent-b/);
    await ok(a, 'claim_work', { work_id: 'tok-w' });
  } finally {
    await closeClean(a);
  }
  // A '*' token may act as a new session.
  const any = await httpClient(f, '', { Authorization: 'Bearer tok-any' });
  try {
    const me = (await ok(any, 'register_session', {})).session_id;
    assert.match(me, /^mcp-[0-9a-f]{12}$/);
    await fails(any, 'claim_work', { work_id: 'tok-w' }, 'denied', /agent-a/);
  } finally {
    await any.close();
  }
}));

test('get_events / wait_for_events: since_seq of another store, or beyond the last seq, is a reset, not a silent empty page', withFabric(async (f) => {
  const c = await stdioClient(f, ['--session', 'store-keeper']);
  const seqs = [];
  for (let i = 0; i < 3; i++) seqs.push((await ok(c, 'publish_event', { event_type: 'keep.e', payload: { i } })).seq);
  const first = await ok(c, 'get_events', { patterns: ['keep.>'], since_seq: 0 });
  assert.match(first.store_id, /^[0-9a-f]{16}$/, JSON.stringify(first));
  assert.equal(first.reset, undefined);
  const same = await ok(c, 'get_events', { patterns: ['keep.>'], since_seq: seqs[0], store: first.store_id });
  assert.deepEqual(same.events.map((e) => e.seq), seqs.slice(1));
  assert.equal(same.reset, undefined, JSON.stringify(same));
  // A cursor beyond the store's end (the broker moved to a fresh data dir).
  const beyond = await ok(c, 'get_events', { patterns: ['keep.>'], since_seq: seqs[2] + 1000 });
  assert.equal(beyond.reset && beyond.reset.why, 'beyond_last_seq', JSON.stringify(beyond));
  assert.deepEqual(beyond.events.map((e) => e.seq), seqs, 'the page starts at the store\'s first event');
  // A cursor of another store, even below this one's last seq.
  const other = await ok(c, 'get_events', { patterns: ['keep.>'], since_seq: 1, store: '0123456789abcdef' });
  assert.equal(other.reset && other.reset.why, 'another_store', JSON.stringify(other));
  assert.equal(other.reset.cursor_store_id, '0123456789abcdef');
  assert.equal(other.reset.store_id, first.store_id);
  assert.deepEqual(other.events.map((e) => e.seq), seqs);
  // A wait with such a cursor answers at once with the reset.
  const t0 = Date.now();
  const waited = await ok(c, 'wait_for_events', { patterns: ['keep.>'], since_seq: seqs[2] + 1000, timeout_seconds: 20 });
  assert.ok(Date.now() - t0 < 5000, 'not a wait for the timeout');
  assert.equal(waited.reset && waited.reset.why, 'beyond_last_seq', JSON.stringify(waited));
  assert.equal(waited.timed_out, false);
  await closeClean(c);
}));

test('nexus mcp started before its broker: initialize at once, tools say unavailable, then it registers', withFabric(async (f) => {
  const broker = f.broker;
  await broker.stop();
  const t0 = Date.now();
  const c = await stdioClient(f, ['--session', 'early-bird']);
  const took = Date.now() - t0;
  assert.ok(took < 4000, `initialize answered in ${took} ms, not after the connect's and register's timeouts`);
  for (const [name, args] of [['publish_event', { event_type: 'early.e' }],
    ['claim_work', { work_id: 'early/1' }]]) {
    const r = await c.callTool({ name, arguments: args });
    assert.equal(r.isError, true, `${name} with no broker: ${JSON.stringify(r)}`);
    assert.equal(r.structuredContent.error.code, 'unavailable', `${name}: ${JSON.stringify(r)}`);
  }
  assert.match(c.logs(), /does not answer yet/, 'the log says the broker is not there yet');
  const again = new Proc('nexusd', NEXUSD, broker.args);
  f.procs.splice(f.procs.indexOf(broker), 1, again);
  f.broker = again;
  await waitFor(() => canConnect(f.brokerPorts[0]), { timeout: 10000, what: 'nexusd' });
  await waitFor(async () => (await c.callTool({ name: 'claim_work', arguments: { work_id: 'early/1' } })).isError === false,
    { timeout: 20000, what: 'the session to register once the broker answers' });
  const me = await ok(c, 'list_sessions', {});
  assert.ok(me.sessions.some((s) => s.session === 'early-bird'), JSON.stringify(me));
  await closeClean(c);
}));

test('get_events resume: every event exactly once across restarts of the MCP server and the broker', withFabric(async (f) => {
  const seen = [];
  const published = [];
  const pub = async (c, n) => {
    for (let i = 0; i < n; i++) published.push((await ok(c, 'publish_event', { event_type: 'resume.e', payload: { i: published.length } })).seq);
  };
  const take = async (c) => {
    // Small pages: the cursor moves page by page.
    for (let page = 0; page < 100; page++) {
      const r = await ok(c, 'get_events', { patterns: ['resume.>'], resume: true, limit: 3 });
      seen.push(...r.events.map((e) => e.seq));
      if (!r.more && r.events.length === 0) return;
    }
  };
  let c = await stdioClient(f, ['--session', 'resumer']);
  await take(c); // nothing yet: the cursor moves to now
  await pub(c, 5);
  await take(c);
  await closeClean(c);

  // The MCP server restarts: a new process takes the session back.
  const side = await stdioClient(f, ['--session', 'publisher']);
  await pub(side, 4);
  c = await stdioClient(f, ['--session', 'resumer']);
  await take(c);
  await pub(side, 2);

  // The broker restarts (clean stop), the servers stay.
  const broker = f.broker;
  await broker.stop();
  const again = new Proc('nexusd', NEXUSD, broker.args);
  f.procs.splice(f.procs.indexOf(broker), 1, again);
  f.broker = again;
  await waitFor(() => canConnect(f.brokerPorts[0]), { timeout: 10000, what: 'nexusd again' });
  await waitFor(async () => (await side.callTool({ name: 'publish_event', arguments: { event_type: 'probe.x' } })).isError === false,
    { timeout: 15000, what: 'the broker to answer the MCP server again' });
  await pub(side, 3);
  await take(c);
  await closeClean(c);
  c = await stdioClient(f, ['--session', 'resumer']);
  await pub(side, 2);
  await take(c);
  await closeClean(c);
  await closeClean(side);
  assert.deepEqual(seen, published, 'each event once, in order');
  assert.equal(published.length, 16);
}));

test('/mcp: a parked wait_for_events holds nobody up; it wakes on a matching event; direct messages are private', withFabric(async (f) => {
  const a = await httpClient(f, '?session=waiter');
  const b = await httpClient(f, '?session=talker');
  const w = await stdioClient(f, ['--session', 'watcher']);
  try {
    await ok(a, 'get_events', { resume: true }); // the cursor moves to now
    const t0 = Date.now();
    const waiting = a.callTool({ name: 'wait_for_events', arguments: { patterns: ['message.direct'], timeout_seconds: 10 } });
    await sleep(300);
    // Meanwhile the gateway answers others at once.
    for (let i = 0; i < 5; i++) await ok(b, 'list_sessions');
    const health = await fetch(`${f.http}/health`);
    assert.equal(health.status, 200);
    assert.ok(Date.now() - t0 < 3000, `others were answered while the wait was parked (${Date.now() - t0} ms)`);
    // An event that does not match leaves it waiting; a direct message to it ends it.
    await ok(b, 'publish_event', { event_type: 'other.thing' });
    await ok(b, 'send_message', { to: 'someone', message: 'not for the waiter' });
    const sent = await ok(b, 'send_message', { to: 'waiter', message: 'for you' });
    const got = (await waiting).structuredContent;
    assert.equal(got.timed_out, false);
    assert.deepEqual(got.events.map((e) => [e.seq, e.payload.message, e.session_id]), [[sent.seq, 'for you', 'talker']]);
    assert.ok(Date.now() - t0 < 8000, 'woken by the event, not by the timeout');
    // Another session never sees the two direct messages.
    const seenByWatcher = await ok(w, 'get_events', { patterns: ['message.direct'], since_seq: 0, limit: 100 });
    assert.deepEqual(seenByWatcher.events, []);
    // Over stdio too, a wait wakes on a matching event.
    await ok(w, 'get_events', { resume: true });
    const ws = w.callTool({ name: 'wait_for_events', arguments: { patterns: ['deploy.*'], timeout_seconds: 10 } });
    await sleep(300);
    await ok(b, 'publish_event', { event_type: 'deploy.done', payload: 'ok' });
    const wr = (await ws).structuredContent;
    assert.deepEqual(wr.events.map((e) => e.event_type), ['deploy.done']);
  } finally {
    await closeClean(a);
    await closeClean(b);
    await closeClean(w);
  }
}));

test('nexus mcp subscribes to what its waits look for (list_channels shows it), and such a wait wakes on its event, direct messages too', withFabric(async (f) => {
  const w = await stdioClient(f, ['--session', 'narrow']);
  const b = await httpClient(f, '?session=sender');
  const prefixes = async () => (await ok(b, 'list_channels')).channels.map((ch) => ch.prefix);
  /** Parks a wait of w, then sends with send() after the wait's first
   *  look again (1 s after a new subscription): the wait must end on the
   *  event's wake-up, well before its next look (30 s later). */
  const wakes = async (patterns, send) => {
    await ok(w, 'get_events', { resume: true }); // the cursor moves to now
    const waiting = w.callTool({ name: 'wait_for_events', arguments: { patterns, timeout_seconds: 30 } });
    await sleep(1500);
    const sent = await send();
    const t = Date.now();
    const got = (await waiting).structuredContent;
    assert.equal(got.timed_out, false);
    assert.deepEqual(got.events.map((e) => e.seq), [sent.seq], JSON.stringify(got));
    assert.ok(Date.now() - t < 5000, `woken by the event (${Date.now() - t} ms), not by a look 30 s on`);
    return got.events[0];
  };
  try {
    await ok(w, 'register_session', {});
    assert.ok(!(await prefixes()).includes('narrow.topic.'), 'nothing subscribed before a wait');
    const ev = await wakes(['narrow.topic.>'], () => ok(b, 'publish_event', { event_type: 'narrow.topic.x', payload: 1 }));
    assert.equal(ev.event_type, 'narrow.topic.x');
    assert.ok((await prefixes()).includes('narrow.topic.'), 'list_channels shows what the agent listens to');
    const dm = await wakes(['message.direct'], () => ok(b, 'send_message', { to: 'narrow', message: 'psst' }));
    assert.deepEqual([dm.session_id, dm.payload.message], ['sender', 'psst']);
    assert.ok((await prefixes()).includes('session.narrow.direct'), 'its own direct messages, not everyone\'s');
    assert.ok(!(await prefixes()).includes('session.'), 'no subscription to every session');
  } finally {
    await closeClean(w);
    await closeClean(b);
  }
}));

test('one wait at a time: a second wait_for_events is refused and the first goes on, over stdio and HTTP', withFabric(async (f) => {
  const b = await httpClient(f, '?session=pinger');
  try {
    for (const c of [await stdioClient(f, ['--session', 'twice-s']), await httpClient(f, '?session=twice-h')]) {
      try {
        await ok(c, 'get_events', { resume: true }); // the cursor moves to now
        const first = c.callTool({ name: 'wait_for_events', arguments: { patterns: ['twice.a'], timeout_seconds: 20 } });
        // stdio reads requests in order; over HTTP, wait until the first is parked.
        if (c.transportRef) await waitFor(async () => (await mcpWaits(f)) === 1, { timeout: 10000, what: 'the first wait is parked' });
        await assert.rejects(c.callTool({ name: 'wait_for_events', arguments: { patterns: ['twice.b'], timeout_seconds: 20 } }),
          /still waiting: one at a time/);
        // Other calls of the session are answered while its wait is parked.
        assert.ok(Array.isArray((await ok(c, 'list_sessions')).sessions));
        const sent = await ok(b, 'publish_event', { event_type: 'twice.a' });
        const r = (await first).structuredContent;
        assert.equal(r.timed_out, false);
        assert.deepEqual(r.events.map((e) => e.seq), [sent.seq]);
      } finally {
        await closeClean(c);
      }
    }
  } finally {
    await closeClean(b);
  }
}));

// With the broker down, a tool over the gateway's /mcp is answered
// unavailable at once, not after broker_timeout (30 s here) on the
// gateway's one worker, with every other request behind it.
test('gateway /mcp with the broker down: tools answer unavailable at once', withFabric({ gatewayArgs: ['--broker-timeout', '30s'] }, async (f) => {
  const c = await httpClient(f);
  const seen = await stopBrokerSeenDown(f, 'mcpdown');
  assert.ok(seen < 10000, `the gateway saw the broker go in ${seen} ms`);
  const started = Date.now();
  const e = await fails(c, 'list_sessions', {}, 'unavailable');
  assert.match(e.message, /no connection to the broker/, JSON.stringify(e));
  assert.ok(Date.now() - started < 10000, `answered in ${Date.now() - started} ms`);
  await c.close();
}));

/** `nexus mcp` on raw stdio: send(line), next() the next reply line. */
function rawStdio(f, args = [], env = {}) {
  const { spawn } = require('node:child_process');
  const stateHome = f.mcpState || (f.mcpState = fs.mkdtempSync(path.join(os.tmpdir(), 'nexus-mcp-state-')));
  const p = spawn(NEXUS_CLI, ['mcp', ...args], {
    env: { ...process.env, NEXUS_ENDPOINT: `tcp://127.0.0.1:${f.brokerPorts[0]}`, XDG_STATE_HOME: stateHome, ...env },
  });
  let out = '';
  let err = '';
  const waiters = [];
  p.stdout.on('data', (d) => { out += d; waiters.splice(0).forEach((w) => w()); });
  p.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((resolve) => p.on('exit', (code) => resolve(code)));
  return {
    send: (m) => p.stdin.write(`${typeof m === 'string' ? m : JSON.stringify(m)}\n`),
    async next(ms = 10000) {
      const deadline = Date.now() + ms;
      while (!out.includes('\n')) {
        if (Date.now() > deadline) throw new Error(`no reply line within ${ms} ms; stderr: ${err}`);
        await new Promise((r) => { waiters.push(r); setTimeout(r, 100); });
      }
      const i = out.indexOf('\n');
      const line = out.slice(0, i);
      out = out.slice(i + 1);
      return JSON.parse(line);
    },
    async exit(ms = 10000) {
      return Promise.race([exited, sleep(ms).then(() => { p.kill('SIGKILL'); return 'killed'; })]);
    },
    stderr: () => err,
    close() { p.stdin.end(); return this.exit(); },
  };
}

const INIT = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } };

test('refused registrations are said as such: nexus mcp exits with the reason, /mcp answers 4xx, a failed switch keeps the session', withFabric(async (f) => {
  // A session id that cannot be one: usage, before any broker is asked.
  let m = rawStdio(f, ['--session', 'bad.id!']);
  assert.equal(await m.exit(), 2, m.stderr());
  assert.match(m.stderr(), /is no session id/);
  // carol is active on another connection (a `nexus mcp` with its own state dir).
  const carol = await stdioClient(f, ['--session', 'carol']);
  const elsewhere = fs.mkdtempSync(path.join(os.tmpdir(), 'nexus-mcp-state-'));
  m = rawStdio(f, ['--session', 'carol'], { XDG_STATE_HOME: elsewhere });
  assert.equal(await m.exit(), 1, `refused, not served with tools that say "try again": ${m.stderr()}`);
  assert.match(m.stderr(), /cannot register the session carol: forbidden/, m.stderr());
  // /mcp's initialize: the broker's refusal keeps its status (403), not 503.
  const r = await fetch(`${f.http}/mcp?session=carol`, {
    method: 'POST', body: JSON.stringify(INIT),
    headers: { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' },
  });
  const body = await r.text();
  assert.equal(r.status, 403, body);
  assert.match(body, /forbidden/);
  // A switch to carol that the broker refuses leaves the MCP session as it was.
  const c = await httpClient(f, '?session=dave');
  try {
    await ok(c, 'claim_work', { work_id: 'dave/1' });
    await fails(c, 'register_session', { session_id: 'carol' }, 'forbidden', /still acts as 'dave'/);
    const again = await ok(c, 'claim_work', { work_id: 'dave/2' });
    assert.equal(again.holder, 'dave', JSON.stringify(again));
  } finally {
    await c.close();
  }
  await closeClean(carol);
  fs.rmSync(elsewhere, { recursive: true, force: true });
}));

test('a \\u0000 in a string is refused with the request\'s id (stdio and HTTP), and the server goes on', withFabric(async (f) => {
  const call = { jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'publish_event', arguments: { event_type: 'nul.e', payload: '\u0000nul' } } };
  const m = rawStdio(f, ['--session', 'nul-stdio']);
  try {
    m.send(INIT);
    assert.equal((await m.next()).id, 1);
    m.send({ jsonrpc: '2.0', method: 'notifications/initialized' });
    m.send(call);
    const rep = await m.next();
    assert.equal(rep.id, 9, JSON.stringify(rep));
    assert.equal(rep.error && rep.error.code, -32602, JSON.stringify(rep));
    assert.match(rep.error.message, /u0000/);
    m.send({ ...call, id: 10, params: { ...call.params, arguments: { event_type: 'nul.e', payload: 'fine' } } });
    const fine = await m.next();
    assert.equal(fine.id, 10);
    assert.equal(fine.result.isError, false, JSON.stringify(fine));
  } finally {
    assert.equal(await m.close(), 0, m.stderr());
  }
  const c = await httpClient(f);
  try {
    const sid = c.transportRef.sessionId;
    const r = await fetch(`${f.http}/mcp`, {
      method: 'POST', body: JSON.stringify(call),
      headers: { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', 'Mcp-Session-Id': sid, 'Mcp-Protocol-Version': '2025-06-18' },
    });
    const j = await r.json();
    assert.equal(r.status, 400);
    assert.equal(j.id, 9, JSON.stringify(j));
    assert.equal(j.error.code, -32602, JSON.stringify(j));
    await ok(c, 'publish_event', { event_type: 'nul.e', payload: 'still here' });
  } finally {
    await c.close();
  }
}));

test('get_events says which events retention removed past the cursor (gap), never a silent skip', withFabric({ brokerArgs: ['--retain-events', '5'] }, async (f) => {
  const c = await stdioClient(f, ['--session', 'gap-reader']);
  const seqs = [];
  for (let i = 0; i < 3; i++) seqs.push((await ok(c, 'publish_event', { event_type: 'gap.e', payload: { i } })).seq);
  const first = await ok(c, 'get_events', { patterns: ['gap.>'], resume: true });
  assert.deepEqual(first.events.map((e) => e.seq), seqs);
  assert.equal(first.gap, undefined);
  for (let i = 3; i < 20; i++) seqs.push((await ok(c, 'publish_event', { event_type: 'gap.e', payload: { i } })).seq);
  // Retention keeps the 5 newest: seqs[15..19].
  const next = await ok(c, 'get_events', { patterns: ['gap.>'], resume: true });
  assert.deepEqual(next.gap, { from: first.cursor + 1, to: seqs[15] - 1 }, JSON.stringify(next));
  assert.deepEqual(next.events.map((e) => e.seq), seqs.slice(15));
  const since = await ok(c, 'get_events', { patterns: ['gap.>'], since_seq: seqs[1] });
  assert.deepEqual(since.gap, { from: seqs[1] + 1, to: seqs[15] - 1 }, JSON.stringify(since));
  const none = await ok(c, 'get_events', { patterns: ['gap.>'], since_seq: seqs[15] - 1 });
  assert.equal(none.gap, undefined, JSON.stringify(none));
  assert.deepEqual(none.events.map((e) => e.seq), seqs.slice(15));
  await closeClean(c);
}));

test('nexus mcp refused at the handshake says why (a wrong token)', withFabric({ brokerArgs: ['--token', 'btok-1'], gatewayArgs: ['--broker-token', 'btok-1'] }, async (f) => {
  const m = rawStdio(f, [], { NEXUS_TOKEN: 'wrong' });
  const code = await m.exit();
  assert.notEqual(code, 0, m.stderr());
  assert.match(m.stderr(), /^nexus: .{10,}/m, `a reason, not an empty "nexus: ": ${JSON.stringify(m.stderr())}`);
}));
