'use strict';
// Issue 18, findings 3, 4 and 8 on the gateway's side: what one client can
// make the gateway spend, and what that costs the others.
//
// 3: one WebSocket message held the gateway's worker 5 s (JSON deeper than
//    32 levels went to the broker, which answered bad_msgpack without an id,
//    and the gateway waited out its broker timeout); five of them made
//    another client's request take 24.9 s. Now every action is checked in
//    the gateway (the op table's field types, the nesting depth) and answered
//    at once with the request's id; another client's request is answered
//    while they come in.
// 4: with no descriptors left the gateway spun on accept() (100 % CPU,
//    ~140 000 log lines/s). Now it backs off and logs once per interval;
//    plain HTTP connections count against max_connections too.
// 8: a WebSocket client that does not read is bounded in bytes
//    (queue_bytes), and costs the other clients nothing.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const { withFabric, WsClient, sleep, waitFor } = require('./lib');

/** A JSON value nested `depth` arrays deep. */
function deep(depth) {
  return '['.repeat(depth) + '1' + ']'.repeat(depth);
}

function assertError(reply, code, id, mentions) {
  assert.equal(reply.type, 'reply', JSON.stringify(reply));
  assert.equal(reply.ok, false, JSON.stringify(reply));
  assert.equal(reply.error.code, code, JSON.stringify(reply));
  if (id !== undefined) assert.equal(reply.id, id, JSON.stringify(reply));
  if (mentions) assert.match(reply.error.message, mentions, JSON.stringify(reply));
}

test('finding 3: JSON nested too deep is refused at once with the request id, anywhere in the message',
  withFabric(async (f) => {
    const c = await f.connect('deep-1');
    const cases = [
      ['publish payload', (id) => `{"action":"publish","id":"${id}","event_type":"t.x","payload":${deep(40)}}`, 'bad_json'],
      ['complete result', (id) => `{"action":"complete","id":"${id}","key":"k","token":1,"result":${deep(40)}}`, 'bad_json'],
      ['status metadata', (id) => `{"action":"status","id":"${id}","status":"idle","metadata":{"a":${deep(40)}}}`, 'bad_json'],
      ['unknown key', (id) => `{"action":"ping","id":"${id}","extra":${deep(40)}}`, 'bad_json'],
      ['very deep', (id) => `{"action":"ping","id":"${id}","x":${deep(5000)}}`, 'bad_json'],
    ];
    for (const [what, make, code] of cases) {
      const id = `deep-${what}`;
      const t0 = Date.now();
      c.send(make(id));
      const r = await c.waitFor((m) => m.type === 'reply' && m.id === id, 4000, `reply to ${what}`);
      assertError(r, code, id, /nested|deep/);
      // The gateway's broker timeout is 5 s: an answer well before it was
      // not a timeout.
      assert.ok(Date.now() - t0 < 4000, `${what}: answered before the broker timeout`);
    }
    // Deep and not JSON otherwise: refused without an id (one read out
    // of text that is not JSON would be a guess).
    c.send(`{"action":"ping","id":"deep-broken", oops ${deep(40)}}`);
    const broken = await c.waitFor((m) => m.type === 'reply' && m.id === undefined, 4000,
      'reply to a deep message that is not JSON');
    assertError(broken, 'bad_json', undefined, /nested/);
    // The connection and the gateway are still fine.
    const ok = await c.request({ action: 'publish', event_type: 't.x', payload: { a: [[[1]]] } });
    assert.equal(ok.ok, true, JSON.stringify(ok));
  }));

test('finding 3: one client\'s requests never hold up another client\'s', withFabric(async (f) => {
  const bad = await f.connect('flood-1');
  const good = await f.connect('good-1');
  // Five deep messages (each once held the worker for the broker timeout),
  // then another client's status: it is answered before the first of them
  // could have timed out.
  for (let i = 0; i < 5; i++)
    bad.send(`{"action":"publish","id":"b${i}","event_type":"t.x","payload":${deep(40)}}`);
  const t0 = Date.now();
  const r = await good.request({ action: 'status', status: 'busy' }, 4000);
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.ok(Date.now() - t0 < 4000);
  for (let i = 0; i < 5; i++) {
    const e = await bad.waitFor((m) => m.type === 'reply' && m.id === `b${i}`, 4000, `reply b${i}`);
    assertError(e, 'bad_json', `b${i}`, /nested/);
  }
}));

/** CPU ticks (user + system, 1/100 s) of process pid so far. */
function cpuTicks(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(')')[1].trim().split(/\s+/);
  return Number(f[11]) + Number(f[12]);
}

test('at max_clients + 256 connections the listener is paused: no descriptor beyond them, ulimit -n brought down to the need',
  withFabric({ gatewayArgs: ['--max-clients', '40'] }, async (f) => {
    const pid = f.gateway.child.pid;
    // 40 + 256 HTTP and WebSocket connections, and 64 descriptors kept for
    // the broker link and files: lws sizes its tables by the soft limit.
    const limits = fs.readFileSync(`/proc/${pid}/limits`, 'utf8');
    const soft = Number(/^Max open files\s+(\d+)/m.exec(limits)[1]);
    assert.equal(soft, 40 + 256 + 64, limits);
    const keeper = await f.connect('cap-keeper');
    const socks = [];
    for (let i = 0; i < 340; i++) {
      const s = net.connect(f.port, '127.0.0.1');
      s.on('error', () => {});
      socks.push(s);
    }
    await waitFor(() => /connection limit reached: 294 connections/.test(f.gateway.output),
      { timeout: 10000, what: 'the limit log line' });
    await sleep(500);
    const sockets = fs.readdirSync(`/proc/${pid}/fd`)
      .filter((d) => { try { return fs.readlinkSync(`/proc/${pid}/fd/${d}`).startsWith('socket:'); } catch { return false; } });
    // 294 clients, the listener, the broker link's few: none of the 46 in the backlog.
    assert.ok(sockets.length < 294 + 30, `sockets ${sockets.length}`);
    assert.doesNotMatch(f.gateway.output, /cannot accept connections/);
    assert.equal((await keeper.request({ action: 'ping' })).ok, true);
    for (const s of socks.slice(0, 100)) s.destroy();
    // The ones waiting are taken once others closed; then a new client is served.
    for (const s of socks.slice(100)) s.destroy();
    const again = await f.connect('cap-again');
    assert.equal((await again.request({ action: 'ping' })).ok, true);
  }));

test('finding 4: out of descriptors, the gateway stops accepting with one log line, no busy loop; connected clients are served',
  withFabric({ gatewayWrap: ['/usr/bin/prlimit', '--nofile=160'] }, async (f) => {
    const pid = f.gateway.child.pid;
    const keeper = await f.connect('fd-keeper');
    assert.equal((await keeper.request({ action: 'subscribe', topics: ['fd.>'] })).ok, true);
    assert.match(f.gateway.output, /ulimit -n is 160: at most 96 connections/);
    // 200 plain TCP connections (as HTTP clients that say nothing yet):
    // more than the descriptors allow.
    const socks = [];
    for (let i = 0; i < 200; i++) {
      const s = net.connect(f.port, '127.0.0.1');
      s.on('error', () => {});
      socks.push(s);
    }
    await waitFor(() => /connection limit reached/.test(f.gateway.output), { timeout: 10000, what: 'the limit log line' });
    const t0 = cpuTicks(pid);
    const lines0 = f.gateway.output.split('\n').length;
    await sleep(3000);
    const spent = cpuTicks(pid) - t0;
    const lines = f.gateway.output.split('\n').length - lines0;
    // A busy loop on accept() took a whole core and logged ~140 000 lines/s.
    assert.ok(spent < 100, `gateway CPU over 3 s at the limit: ${spent / 100} s`);
    assert.ok(lines < 10, `log lines over 3 s at the limit: ${lines}:\n${f.gateway.output.slice(-2000)}`);
    const fds = fs.readdirSync(`/proc/${pid}/fd`).length;
    assert.ok(fds <= 160, `descriptors ${fds}`);
    // It stopped accepting before accept() ran out of descriptors: the
    // listener is paused at the limit, not retried into EMFILE.
    assert.doesNotMatch(f.gateway.output, /cannot accept connections/);
    // The connected client is served: a request, and an event.
    const pub = await keeper.request({ action: 'publish', event_type: 'fd.x', payload: { n: 1 } });
    assert.equal(pub.ok, true, JSON.stringify(pub));
    await keeper.waitEvent((e) => e.seq === pub.seq, 5000, 'its event');
    // Once connections close, new ones are accepted again.
    for (const s of socks) s.destroy();
    const again = await f.connect('fd-again');
    assert.equal((await again.request({ action: 'ping' })).ok, true);
    const h = await fetch(`${f.http}/health`);
    assert.equal(h.status, 200);
  }));

// A refusal at max_clients names what was refused: a watcher (/ws/events)
// has no session, and the log read "websocket refused for session : ...".
test('max_clients refusals: 503 busy, and the log names the session or the watcher',
  withFabric({ gatewayArgs: ['--max-clients', '1'] }, async (f) => {
    const keeper = await f.connect('cap-one');
    const watcher = new WsClient(`${f.wsBase}/ws/events`);
    assert.equal(await watcher.unexpected, 503);
    const other = new WsClient(`${f.wsBase}/ws/session/cap-two`);
    assert.equal(await other.unexpected, 503);
    await waitFor(() => /websocket refused for session cap-two: max_clients \(1\) reached/.test(f.gateway.output),
      { timeout: 3000, what: 'the session refusal line' });
    assert.match(f.gateway.output, /websocket refused for the watcher \/ws\/events: max_clients \(1\) reached/);
    assert.doesNotMatch(f.gateway.output, /for session :/);
    assert.equal((await keeper.request({ action: 'ping' })).ok, true);
  }));
