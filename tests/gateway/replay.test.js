'use strict';
// History replays (?since= and the resume action) against a real nexusd +
// nexus-gateway: a replay runs in slices between the worker's other
// commands, so however slowly its client reads and however long the
// history, everyone else is answered at once; and the client still gets
// every event once, in order, with no gap.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const { withFabric, WsClient, sleep, waitFor, restartOnFreshStore, NEXUS_CLI } = require('./lib');

/** Publishes n events of about `size` bytes on topic through the CLI; their seqs. */
function fill(f, topic, n, size = 1000) {
  const pad = 'r'.repeat(size);
  let lines = '';
  for (let i = 0; i < n; i++) lines += JSON.stringify({ i, pad }) + '\n';
  return new Promise((resolve, reject) => {
    const child = execFile(NEXUS_CLI, ['pub', topic, '--lines', '--ack', '--endpoint', `tcp://127.0.0.1:${f.brokerPorts[0]}`],
      { timeout: 120000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
        if (err) return reject(new Error(`nexus pub --lines: ${err.message}\n${stderr}`));
        const seqs = stdout.trim().split('\n').map(Number);
        if (seqs.length !== n) return reject(new Error(`${seqs.length} seqs for ${n} lines`));
        resolve(seqs);
      });
    child.stdin.end(lines);
  });
}

/** Reads 5 ms out of every `pauseMs` from c's socket, until stop() is called. */
function trickle(c, pauseMs) {
  const s = c.ws._socket;
  let stopped = false, timer;
  const tick = () => {
    if (stopped || c.closed) return;
    s.pause();
    timer = setTimeout(() => { s.resume(); timer = setTimeout(tick, 5); }, pauseMs);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); s.resume(); };
}

/** ms that each of `count` pings of c took, one every 100 ms. */
async function pings(c, count) {
  const took = [];
  for (let k = 0; k < count; k++) {
    const t0 = Date.now();
    const r = await c.request({ action: 'ping' }, 30000);
    assert.equal(r.ok, true, JSON.stringify(r));
    took.push(Date.now() - t0);
    await sleep(100);
  }
  return took;
}

function assertEvery(c, seqs, what) {
  const got = c.events().filter((e) => e.event_type === 'rp.x').map((e) => e.seq);
  assert.equal(got.length, seqs.length, `${what}: ${got.length} events of ${seqs.length}`);
  assert.deepEqual(got, seqs, `${what}: every event once, in seq order`);
  assert.ok(!c.messages.some((m) => m.type === 'gap'), `${what}: no gap`);
}

test('a replay to a client that reads slowly holds up no one, and the client gets every event once, in order, live ones too', { timeout: 240000 }, withFabric({
  gatewayArgs: ['--slow-timeout', '60s', '--queue-messages', '256'],
}, async (f) => {
  // 30 000 events of 1 KiB: the replay used to run whole on the worker,
  // as fast as its client read; a client reading 5 ms in 200 held every
  // other client's actions for seconds.
  const seqs = await fill(f, 'rp.x', 30000);
  const other = await f.connect('rp-other', 'recent=0');
  const slow = f.track(new WsClient(`${f.wsBase}/ws/session/rp-slow?since=0&recent=0`));
  await slow.open(10000);
  const stop = trickle(slow, 200);
  slow.send({ action: 'subscribe', topics: ['rp.>'], id: 'sub' });
  await slow.waitEvent(() => true, 10000, 'the first replayed event');
  // Live events published during the replay are held, then come after the
  // history, once each: four times what the client's queue holds, which
  // the catch-up must feed in as the client reads, not drop as a gap.
  const published = fill(f, 'rp.x', 1000);
  const took = await pings(other, 15);
  const replayedMeanwhile = slow.events().length;
  const lives = await published;
  assert.ok(Math.max(...took) < 500, `pings waited ${took.join(' ')} ms behind a slow replay`);
  assert.ok(replayedMeanwhile < seqs.length, `the replay was still running during the pings (${replayedMeanwhile})`);
  const live = await other.request({ action: 'publish', event_type: 'rp.x', payload: { live: true } });
  stop();
  await slow.waitEvent((e) => e.seq === live.seq, 60000, 'the live event after the replay');
  assertEvery(slow, [...seqs, ...lives, live.seq], 'slow reader');
  assert.equal(slow.ws.readyState, 1, 'still open');
}));

test('a client that reads at once replays a long history without holding up the others; the resume reply counts it and comes after it', { timeout: 240000 }, withFabric(async (f) => {
  const seqs = await fill(f, 'rp.x', 20000);
  const other = await f.connect('rp-other2', 'recent=0');
  // The gateway may still be delivering the end of the fill live: once a
  // marker has come, everything before it has too. (Waited for on another
  // connection: what `fast` got live a resume would not send again.)
  await other.request({ action: 'subscribe', topics: ['rp.>'] });
  const marker = await other.request({ action: 'publish', event_type: 'rp.x', payload: { marker: true } });
  await other.waitEvent((e) => e.seq === marker.seq, 30000, 'the marker');
  seqs.push(marker.seq);
  const fast = await f.connect('rp-fast', 'recent=0');
  await fast.request({ action: 'subscribe', topics: ['rp.>'] });
  fast.messages.length = 0;
  fast.send({ action: 'resume', since: 0, id: 'res' });
  const took = await pings(other, 8);
  const reply = await fast.waitFor((m) => m.type === 'reply' && m.id === 'res', 60000, 'the resume reply');
  assert.equal(reply.ok, true, JSON.stringify(reply));
  assert.equal(reply.replayed, seqs.length, JSON.stringify(reply));
  assert.equal(reply.superseded, undefined, JSON.stringify(reply));
  const at = fast.messages.indexOf(reply);
  const last = fast.messages.findIndex((m) => m.type === 'event' && m.seq === seqs[seqs.length - 1]);
  assert.ok(last >= 0 && last < at, `the reply (message ${at}) comes after the last replayed event (${last})`);
  assertEvery(fast, seqs, 'fast reader');
  assert.ok(Math.max(...took) < 500, `pings waited ${took.join(' ')} ms behind a replay`);

  // What it got, a resume does not send again: all of it got, nothing.
  fast.messages.length = 0;
  const again = await fast.request({ action: 'resume', since: 0 }, 30000);
  assert.equal(again.ok, true, JSON.stringify(again));
  assert.equal(again.replayed, 0, JSON.stringify(again));
  assert.equal(fast.events().length, 0, 'nothing sent again');

  // A resume while one runs replaces it: the first is answered with what it
  // replayed (superseded), the second replays from its own since (less
  // what the first sent already). On a connection that got none of them.
  const fresh = await f.connect('rp-fresh', 'recent=0');
  await fresh.request({ action: 'subscribe', topics: ['rp.>'] });
  fresh.send({ action: 'resume', since: 0, id: 'first' });
  fresh.send({ action: 'resume', since: seqs[seqs.length - 10], id: 'second' });
  const first = await fresh.waitFor((m) => m.type === 'reply' && m.id === 'first', 30000, 'the first resume reply');
  const second = await fresh.waitFor((m) => m.type === 'reply' && m.id === 'second', 30000, 'the second resume reply');
  assert.equal(first.ok, true, JSON.stringify(first));
  assert.ok(first.superseded === true || first.replayed === seqs.length, JSON.stringify(first));
  assert.equal(second.ok, true, JSON.stringify(second));
  const beforeFirst = fresh.messages.slice(0, fresh.messages.indexOf(first)).filter((m) => m.type === 'event');
  const firstTail = beforeFirst.filter((e) => e.seq > seqs[seqs.length - 10]).length;
  assert.equal(second.replayed, 9 - firstTail, JSON.stringify(second));
  const tail = fresh.events().slice(-9).map((e) => e.seq);
  assert.deepEqual(tail, seqs.slice(-9), 'the second resume ends with the events after its since');
  const all = fresh.events().map((e) => e.seq);
  assert.equal(new Set(all).size, all.length, 'no event twice');
}));

test('a replay whose client goes away ends with it, and the gateway carries on', withFabric({
  gatewayArgs: ['--queue-messages', '64', '--queue-bytes', '256k'],
}, async (f) => {
  await fill(f, 'rp.x', 3000);
  const stuck = [];
  for (let i = 0; i < 5; i++) {
    const c = f.track(new WsClient(`${f.wsBase}/ws/session/rp-gone-${i}?since=0&recent=0`));
    await c.open(10000);
    c.ws._socket.pause(); // reads nothing: its replay parks
    c.send({ action: 'subscribe', topics: ['rp.>'] });
    stuck.push(c);
  }
  const replays = async () => {
    const m = (await (await fetch(`${f.http}/metrics`)).text()).match(/^nexus_gateway_replays (\d+)/m);
    assert.ok(m, 'nexus_gateway_replays in /metrics');
    return Number(m[1]);
  };
  await waitFor(async () => (await replays()) === 5, { timeout: 10000, what: 'five replays parked' });
  for (const c of stuck) c.ws.terminate();
  await waitFor(async () => (await replays()) === 0, { timeout: 10000, what: 'the replays of the gone clients to end' });
  const other = await f.connect('rp-after', 'recent=0');
  assert.equal((await other.request({ action: 'ping' })).ok, true);
}));

test('a replay parked when the broker moves to a fresh store starts over there: a reset, then the new store\'s events, none of the old', { timeout: 120000 }, withFabric({
  gatewayArgs: ['--queue-messages', '64', '--slow-timeout', '60s'],
}, async (f) => {
  await fill(f, 'rp.x', 2000, 10000); // 20 MB: more than the sockets' buffers hold
  const x = f.track(new WsClient(`${f.wsBase}/ws/session/rp-reset?since=0&recent=0`));
  await x.open(10000);
  x.ws._socket.pause(); // its replay parks with an old-store event in hand
  x.send({ action: 'subscribe', topics: ['rp.>'] });
  await sleep(500);
  const s1 = x.welcome.store_id;

  const fresh = await restartOnFreshStore(f);
  try {
    const probe = await fresh.connectNew('rp-probe', s1);
    const news = [];
    for (let i = 0; i < 3; i++) {
      news.push((await probe.request({ action: 'publish', event_type: 'rp.x', payload: { tag: 'two', i } })).seq);
    }
    x.ws._socket.resume();
    const reset = await x.waitFor((m) => m.type === 'reset', 30000, 'the reset');
    assert.equal(reset.cursor_store_id, s1, JSON.stringify(reset));
    await x.waitEvent((e) => e.payload && e.payload.tag === 'two' && e.payload.i === 2, 30000, "the new store's last event");
    const after = x.messages.slice(x.messages.indexOf(reset)).filter((m) => m.type === 'event');
    assert.deepEqual(after.map((e) => [e.seq, e.payload.tag]), news.map((q) => [q, 'two']),
      "after the reset: the new store's events, once each, none of the old store's");
  } finally {
    await fresh.stop();
  }
}));

test('a broker whose history pages are smaller than a slice (history_limit 40) still replays every event once, in order, with no gap', { timeout: 60000 }, withFabric({
  brokerArgs: ['--history-limit', '40'],
}, async (f) => {
  // The gateway asks for slices of 500; the broker refused a limit above
  // its history_limit, and every replay ended in a gap.
  const seqs = await fill(f, 'rp.x', 1234, 100);
  const c = f.track(new WsClient(`${f.wsBase}/ws/session/rp-small?since=0&recent=0`));
  await c.open(10000);
  c.send({ action: 'subscribe', topics: ['rp.>'], id: 'sub' });
  await c.waitEvent((e) => e.seq === seqs[seqs.length - 1], 30000, 'the last replayed event');
  assertEvery(c, seqs, 'pages of 40');
  // The resume action over pages of 40, on a connection that got none of
  // them (what c got, a resume would not send again).
  const d = await f.connect('rp-small-2', 'recent=0');
  await d.request({ action: 'subscribe', topics: ['rp.>'] });
  d.send({ action: 'resume', since: seqs[99], id: 'res' });
  const reply = await d.waitFor((m) => m.type === 'reply' && m.id === 'res', 30000, 'the resume reply');
  assert.equal(reply.ok, true, JSON.stringify(reply));
  assert.equal(reply.replayed, seqs.length - 100, JSON.stringify(reply));
  assertEvery(d, seqs.slice(100), 'resume over pages of 40');
  // And c, which got them all, gets none again.
  c.messages.length = 0;
  const none = await c.request({ action: 'resume', since: seqs[99] }, 30000);
  assert.equal(none.replayed, 0, JSON.stringify(none));
  assert.equal(c.events().length, 0, 'nothing sent again');
}));

// A client that subscribes, receives live events and then resumes from an
// older seq got the live ones again from the replay (duplicates, out of
// order). The replay sends only what the connection did not get: the
// events after since before its live run, then the newer ones.
test('a resume after live events does not send again what the connection got live', { timeout: 60000 }, withFabric(async (f) => {
  const pub = await f.connect('rl-pub', 'recent=0');
  const publish = async (t, n) => {
    const seqs = [];
    for (let i = 0; i < n; i++) seqs.push((await pub.request({ action: 'publish', event_type: t, payload: { i } })).seq);
    return seqs;
  };
  const before = await publish('rl.x', 5);
  const c = await f.connect('rl-reader', 'recent=0');
  assert.equal((await c.request({ action: 'subscribe', topics: ['rl.>'] })).ok, true);
  const live = await publish('rl.x', 10);
  await c.waitEvent((e) => e.seq === live[9], 5000, 'the live events');
  const seqsOf = () => c.events().map((e) => e.seq);

  // 1. Since before the live run: the five older events, once, none of the live ones again.
  let r = await c.request({ action: 'resume', since: before[0] - 1 }, 10000);
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.replayed, 5, JSON.stringify(r));
  let more = await publish('rl.x', 3);
  await c.waitEvent((e) => e.seq === more[2], 5000, 'live events after the resume');
  let seqs = seqsOf();
  assert.equal(new Set(seqs).size, seqs.length, `no duplicate: ${seqs}`);
  assert.deepEqual([...seqs].sort((a, b) => a - b), [...before, ...live, ...more]);
  assert.deepEqual(seqs, [...live, ...before, ...more], 'live, then the older ones, then live');

  // 2. Since inside what it got: nothing again.
  r = await c.request({ action: 'resume', since: live[4] }, 10000);
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.replayed, 0, JSON.stringify(r));
  more = await publish('rl.x', 2);
  await c.waitEvent((e) => e.seq === more[1], 5000, 'live events after the second resume');
  seqs = seqsOf();
  assert.equal(new Set(seqs).size, seqs.length, `no duplicate: ${seqs}`);

  // 3. A pattern added after live events: its older events were never
  // sent here, and a resume sends them (never skipped with the others).
  const other = await publish('rl2.y', 3);
  assert.equal((await c.request({ action: 'subscribe', topics: ['rl2.>'] })).ok, true);
  r = await c.request({ action: 'resume', since: before[0] - 1 }, 10000);
  assert.equal(r.ok, true, JSON.stringify(r));
  more = await publish('rl2.y', 1);
  await c.waitEvent((e) => e.seq === more[0], 5000, 'live events after the third resume');
  seqs = seqsOf();
  for (const s of other) assert.ok(seqs.includes(s), `${s} of the added pattern was sent: ${seqs}`);
  assert.equal(seqs.filter((s) => s === more[0]).length, 1, 'the new live event once');
}));
