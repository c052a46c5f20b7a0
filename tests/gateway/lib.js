'use strict';
// Helpers for the gateway tests: free loopback ports, a real nexusd and a
// real nexus-gateway per test (temp data dir, stopped afterwards), and a
// small promise-based WebSocket client on top of the `ws` package.
//
// Every wait here is bounded in time: a test that cannot reach a process
// fails with the process logs instead of hanging.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const WebSocket = require('ws');

const ROOT = path.resolve(__dirname, '..', '..');
const NEXUSD = process.env.NEXUSD || path.join(ROOT, 'build', 'broker', 'nexusd');
const NEXUS_GATEWAY = process.env.NEXUS_GATEWAY || path.join(ROOT, 'build', 'gateway', 'nexus-gateway');
const NEXUS_CLI = process.env.NEXUS_CLI || path.join(ROOT, 'build', 'sdk', 'nexus');
const WEB_ROOT = process.env.NEXUS_WEB_ROOT || path.join(ROOT, 'gateway', 'web');
const ARTIFACTS = process.env.NEXUS_TEST_ARTIFACTS || path.join(ROOT, 'tests', 'artifacts');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves with `fn()`'s first truthy value, or rejects after `timeout` ms. */
async function waitFor(fn, { timeout = 5000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const w = typeof what === 'function' ? what() : what;
      throw new Error(`timed out after ${timeout} ms waiting for ${w}` + (last ? `: ${last.message}` : ''));
    }
    await sleep(interval);
  }
}

function portIsFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/** One free loopback port chosen by the kernel. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ port: 0, host: '127.0.0.1' }, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const handedOut = new Set();

/**
 * `n` consecutive free ports (the gateway finds the broker's event endpoints
 * at control port + 1 and + 2, so nexusd gets three in a row).
 */
async function freePorts(n) {
  for (let attempt = 0; attempt < 200; attempt++) {
    // 20000-31999: below the kernel's ephemeral range (32768 on), whose
    // ports outgoing connections take as their local port, and apart from
    // the Python tests' 10000-19999.
    const base = 20000 + Math.floor(Math.random() * (12000 - n));
    const ports = Array.from({ length: n }, (_, i) => base + i);
    if (ports.some((p) => handedOut.has(p))) continue;
    let ok = true;
    for (const p of ports) {
      if (!(await portIsFree(p))) { ok = false; break; }
    }
    if (ok) {
      ports.forEach((p) => handedOut.add(p));
      return ports;
    }
  }
  throw new Error(`no ${n} consecutive free ports found`);
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
    s.setTimeout(500, () => { s.destroy(); resolve(false); });
  });
}

/** Children still running: killed if this process is stopped by a signal
 *  (a ctest timeout, Ctrl-C), so an aborted run leaves no server behind. */
const liveChildren = new Set();
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    for (const c of liveChildren) c.kill('SIGKILL');
    process.exit(128 + os.constants.signals[sig]);
  });
}

/** A child process whose output is kept for failure reports. */
class Proc {
  constructor(name, bin, args) {
    if (!fs.existsSync(bin)) throw new Error(`${name}: binary not found at ${bin} (set NEXUSD / NEXUS_GATEWAY)`);
    this.name = name;
    this.args = args;
    this.output = '';
    this.exited = null;
    this.child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    liveChildren.add(this.child);
    const keep = (d) => {
      this.output += d.toString();
      if (this.output.length > 200000) this.output = this.output.slice(-100000);
    };
    this.child.stdout.on('data', keep);
    this.child.stderr.on('data', keep);
    // 'close', not 'exit': the output that comes at exit (a sanitizer's
    // report) is all in once the pipes have closed.
    this.exitPromise = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        liveChildren.delete(this.child);
        this.exited = { code, signal };
        resolve(this.exited);
      });
    });
  }

  get running() { return this.exited === null; }

  async stop(timeout = 5000) {
    if (!this.running) return this.exited;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.running && this.child.kill('SIGKILL'), timeout);
    const r = await this.exitPromise;
    clearTimeout(t);
    return r;
  }

  logs() {
    return `---- ${this.name} ${this.args.join(' ')} (exit ${JSON.stringify(this.exited)}) ----\n${this.output}`;
  }
}

/**
 * Starts nexusd and nexus-gateway on fresh ports with a temp data dir.
 * opts.gatewayArgs: extra gateway flags (['--rate', '5', ...]).
 * opts.healthToken: token for the readiness probe when --token is used.
 * Returns { port, http, ws(path), stop(), logs() }.
 */
/** nexusd's arguments for a data directory and three consecutive ports. */
function brokerArgs(dataDir, [control, evIn, evOut]) {
  return [
    '--data-dir', dataDir,
    '--control-endpoints', `tcp://127.0.0.1:${control}`,
    '--events-in-endpoints', `tcp://127.0.0.1:${evIn}`,
    '--events-out-endpoints', `tcp://127.0.0.1:${evOut}`,
    '--sync', 'none',
  ];
}

async function startFabric(opts = {}) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'nexus-gw-test-'));
  const [control, evIn, evOut] = await freePorts(3);
  const [gwPort] = await freePorts(1);
  const procs = [];
  const fabric = {
    dataDir,
    port: gwPort,
    brokerPorts: [control, evIn, evOut],
    http: `http://127.0.0.1:${gwPort}`,
    wsBase: `ws://127.0.0.1:${gwPort}`,
    procs,
    logs: () => procs.map((p) => p.logs()).join('\n'),
    async stop() {
      for (const p of procs.slice().reverse()) await p.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
  try {
    const broker = new Proc('nexusd', NEXUSD, [...brokerArgs(dataDir, fabric.brokerPorts), ...(opts.brokerArgs || [])]);
    procs.push(broker);
    fabric.broker = broker;
    await waitFor(async () => {
      if (!broker.running) throw new Error('nexusd exited');
      return (await canConnect(control)) && (await canConnect(evOut));
    }, { timeout: 10000, what: 'nexusd to listen' });

    // A free port can be taken between the probe and the bind (another
    // test's outgoing connection may get it as its local port): a gateway
    // that cannot listen is started again on another port, at most 3 times.
    const headers = opts.healthToken ? { Authorization: `Bearer ${opts.healthToken}` } : {};
    for (let attempt = 1; ; attempt++) {
      // gatewayWrap: a command the gateway runs under (e.g. prlimit).
      const wrap = opts.gatewayWrap || [];
      const gw = new Proc('nexus-gateway', wrap.length ? wrap[0] : NEXUS_GATEWAY, [
        ...wrap.slice(1), ...(wrap.length ? [NEXUS_GATEWAY] : []),
        '--port', String(fabric.port),
        '--broker', `tcp://127.0.0.1:${control}`,
        '--web-root', WEB_ROOT,
        ...(opts.gatewayArgs || []),
      ]);
      procs.push(gw);
      fabric.gateway = gw;
      try {
        await waitFor(async () => {
          if (!gw.running) throw new Error('nexus-gateway exited');
          // Its own "listening" line first: with another test's gateway on
          // the same port (taken between the probe and the bind), /health
          // would answer from that one while ours fails to listen.
          if (!/ listening on http:\/\//.test(gw.output)) return false;
          const r = await fetch(`${fabric.http}/health`, { headers, signal: AbortSignal.timeout(1000) });
          if (r.status !== 200) return false;
          const h = await r.json();
          // Ready once the gateway reports its broker link as up (or says nothing about it).
          return !h.broker || !/down|unavailable|disconnected|error/i.test(JSON.stringify(h.broker));
        }, { timeout: 10000, what: 'nexus-gateway /health' });
        break;
      } catch (e) {
        await gw.stop();
        if (attempt >= 3 || !/cannot listen on/.test(gw.output)) throw e;
        procs.splice(procs.indexOf(gw), 1);
        const [next] = await freePorts(1);
        fabric.port = next;
        fabric.http = `http://127.0.0.1:${next}`;
        fabric.wsBase = `ws://127.0.0.1:${next}`;
      }
    }
  } catch (e) {
    const logs = fabric.logs();
    await fabric.stop().catch(() => {});
    e.message += '\n' + logs;
    throw e;
  }
  return fabric;
}

/**
 * A WebSocket client that keeps every message it receives and lets a test
 * wait for one matching a predicate, or send a request and wait for its reply.
 */
class WsClient {
  constructor(url, wsOptions = {}) {
    this.url = url;
    this.messages = [];   // every parsed message, in arrival order
    this.raw = [];        // and its text, as it came
    this.waiters = [];
    this.nextId = 1;
    this.closed = null;   // { code, reason } once closed
    this.ws = new WebSocket(url, wsOptions);
    this.ws.on('message', (data, isBinary) => {
      let msg;
      try { msg = JSON.parse(data.toString()); } catch { msg = { type: '__unparsable', raw: data.toString(), isBinary }; }
      this.messages.push(msg);
      this.raw.push(data.toString());
      this._check();
    });
    this.closePromise = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closed = { code, reason: reason.toString() };
        this._check();
        resolve(this.closed);
      });
    });
    this.ws.on('error', (err) => { this.error = err; this._check(); });
    this.unexpected = new Promise((resolve) => {
      this.ws.on('unexpected-response', (req, res) => {
        this.httpStatus = res.statusCode;
        resolve(res.statusCode);
        res.resume();
        // We own the failed handshake now: end it (emits 'close' with 1006).
        setImmediate(() => { try { this.ws.terminate(); } catch { /* ignore */ } });
      });
    });
  }

  /** Resolves when open and the welcome (seed 003's type "connection") has arrived. */
  async open(timeout = 5000) {
    await this.waitFor((m) => m.type === 'connection', timeout, 'welcome');
    this.welcome = this.messages.find((m) => m.type === 'connection');
    return this;
  }

  _check() {
    for (const w of this.waiters.slice()) {
      // Each message is looked at once per waiter (a long replay would
      // otherwise cost a scan of every message so far per message).
      let m;
      let i = w.seen !== undefined && w.seen <= this.messages.length ? w.seen : w.from;
      for (; i < this.messages.length && !m; i++) if (w.pred(this.messages[i])) m = this.messages[i];
      w.seen = i;
      if (m) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(m);
      } else if (this.closed || this.error) {
        if (this.closed) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          clearTimeout(w.timer);
          w.reject(new Error(`${this.url}: closed (${this.closed.code} ${this.closed.reason}) while waiting for ${w.what}`));
        }
      }
    }
  }

  /** First message (from index `from`) matching `pred`. */
  waitFor(pred, timeout = 5000, what = 'message', from = 0) {
    return new Promise((resolve, reject) => {
      const w = { pred, resolve, reject, what, from };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`${this.url}: timed out after ${timeout} ms waiting for ${what}; got ${JSON.stringify(this.messages.slice(-5))}`));
      }, timeout);
      this.waiters.push(w);
      this._check();
    });
  }

  waitEvent(pred, timeout = 5000, what = 'event') {
    return this.waitFor((m) => m.type === 'event' && pred(m), timeout, what);
  }

  events() { return this.messages.filter((m) => m.type === 'event'); }

  send(obj) { this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj)); }

  /** Sends obj with a fresh id and resolves with the reply carrying it. */
  request(obj, timeout = 5000) {
    const id = obj.id !== undefined ? obj.id : `r${this.nextId++}`;
    this.send({ ...obj, id });
    return this.waitFor((m) => m.type === 'reply' && m.id === id, timeout, `reply to ${JSON.stringify(obj).slice(0, 120)}`);
  }

  /** Resolves with {code, reason} when closed, or rejects after timeout. */
  waitClose(timeout = 5000) {
    return Promise.race([
      this.closePromise,
      sleep(timeout).then(() => { throw new Error(`${this.url}: not closed within ${timeout} ms`); }),
    ]);
  }

  close() {
    if (this.closed) return Promise.resolve(this.closed);
    try { this.ws.close(1000); } catch { /* ignore */ }
    return Promise.race([this.closePromise, sleep(2000).then(() => { this.ws.terminate(); })]);
  }
}

/** Connects `session` and waits for the welcome. */
async function connect(fabric, session, query = '', wsOptions = {}) {
  const c = new WsClient(`${fabric.wsBase}/ws/session/${session}${query ? `?${query}` : ''}`, wsOptions);
  return c.open();
}

const SANITIZER = /(AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|ThreadSanitizer|runtime error:)/;

/** The first lines of a sanitizer report in a process's output, or ''. */
function sanitizerReport(proc) {
  if (!proc) return '';
  const at = proc.output.search(SANITIZER);
  return at < 0 ? '' : proc.output.slice(Math.max(0, at - 200), at + 4000);
}

/** Wraps a test body: starts a fabric, always stops it, attaches logs on failure. */
function withFabric(opts, body) {
  if (typeof opts === 'function') { body = opts; opts = {}; }
  return async (t) => {
    const fabric = await startFabric(opts);
    const clients = [];
    fabric.connect = async (session, query, wsOptions) => {
      const c = await connect(fabric, session, query, wsOptions);
      clients.push(c);
      return c;
    };
    fabric.track = (c) => { clients.push(c); return c; };
    try {
      await body(fabric, t);
    } catch (e) {
      // Some errors (fetch's TimeoutError, a DOMException) have a read-only
      // message: wrap those so the fabric's logs still reach the report.
      const logs = '\n' + fabric.logs().slice(-8000);
      try { e.message += logs; } catch {
        const w = new Error(`${e.name}: ${e.message}${logs}`);
        w.cause = e;
        throw w;
      }
      throw e;
    } finally {
      for (const c of clients) {
        if (!c.closed) { try { c.ws.terminate(); } catch { /* ignore */ } }
      }
      await fabric.stop();
    }
    // The gateway runs under ASan/UBSan in the sanitizer build: a report
    // (a leak is printed at exit, after the stop above) fails the test.
    const report = sanitizerReport(fabric.gateway);
    if (report) throw new Error(`nexus-gateway printed a sanitizer report:\n${report}`);
  };
}

/**
 * Stops the fabric's broker and starts another on the same endpoints with a
 * fresh data directory: another store behind the same gateway. Resolves
 * with { broker, stop() } once it listens; stop() ends it and removes its
 * directory (call it in a finally). connectNew(prefix) then resolves with a
 * connection whose welcome names a store other than oldStore: the gateway
 * has reconnected to the new broker.
 */
async function restartOnFreshStore(fabric) {
  await fabric.broker.stop();
  const fresh = fs.mkdtempSync(path.join(os.tmpdir(), 'nexus-gw-test-fresh-'));
  const [control] = fabric.brokerPorts;
  const broker = new Proc('nexusd (fresh store)', NEXUSD, brokerArgs(fresh, fabric.brokerPorts));
  fabric.procs.splice(fabric.procs.indexOf(fabric.broker), 0, broker);
  const stop = async () => {
    await broker.stop();
    fs.rmSync(fresh, { recursive: true, force: true });
  };
  const connectNew = async (prefix, oldStore) => {
    let fresher;
    await waitFor(async () => {
      const c = await fabric.connect(`${prefix}-${Date.now()}`, 'recent=0');
      const ok = c.welcome.store_id && c.welcome.store_id !== oldStore;
      if (ok) fresher = c; else c.close();
      return ok;
    }, { timeout: 15000, interval: 300, what: 'the gateway on the new store' });
    return fresher;
  };
  try {
    await waitFor(async () => broker.running && (await canConnect(control)), { timeout: 10000, what: 'the new nexusd' });
  } catch (e) {
    await stop();
    throw e;
  }
  return { broker, stop, connectNew };
}

/**
 * Kills the fabric's broker with SIGKILL and starts it again on the same
 * data directory and endpoints (a crash and a restart), downMs after the
 * kill. Resolves once it listens; the new process is fabric.broker from
 * then on.
 */
async function killAndRestartBroker(fabric, { downMs = 0 } = {}) {
  const old = fabric.broker;
  const killed = Date.now();
  old.child.kill('SIGKILL');
  await old.exitPromise;
  if (downMs > 0) await sleep(Math.max(0, killed + downMs - Date.now()));
  const [control, , evOut] = fabric.brokerPorts;
  const broker = new Proc('nexusd (restarted)', NEXUSD, brokerArgs(fabric.dataDir, fabric.brokerPorts));
  fabric.procs.splice(fabric.procs.indexOf(old) + 1, 0, broker);
  fabric.broker = broker;
  await waitFor(async () => {
    if (!broker.running) throw new Error('the restarted nexusd exited');
    return (await canConnect(control)) && (await canConnect(evOut));
  }, { timeout: 15000, interval: 100, what: 'the restarted nexusd to listen' });
  return broker;
}

/**
 * Makes sure the gateway's event stream is up (an event published through
 * it comes back on a WebSocket named `name`), stops the broker, and waits
 * until /health says degraded. Resolves with the milliseconds from the
 * stop to that answer: the gateway should see the broker go by its
 * connection, not by a request that waits out broker_timeout.
 */
async function stopBrokerSeenDown(fabric, name) {
  const ws = await fabric.connect(name, 'recent=0');
  const topic = `${name}.ready`;
  if (!(await ws.request({ action: 'subscribe', topics: [`${name}.>`] })).ok) throw new Error('subscribe failed');
  if (!(await ws.request({ action: 'publish', event_type: topic, payload: {} })).ok) throw new Error('publish failed');
  await ws.waitEvent((m) => JSON.stringify(m).includes(topic), 10000, `the ${topic} event`);
  await fabric.broker.stop();
  const down = Date.now();
  await waitFor(async () => (await fetch(`${fabric.http}/health`, { signal: AbortSignal.timeout(40000) })).status === 503,
    { timeout: 45000, interval: 200, what: '/health to say degraded' });
  return Date.now() - down;
}

function randomId(prefix = 's') {
  return `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
}

/** Reads an http.IncomingMessage to its end: { status, type, headers, text, json }. */
function readResponse(res) {
  return new Promise((resolve, reject) => {
    let text = '';
    res.on('data', (d) => { text += d; });
    res.on('error', reject);
    res.on('end', () => {
      let json;
      try { json = JSON.parse(text); } catch { json = undefined; }
      resolve({ status: res.statusCode, type: res.headers['content-type'] || '', headers: res.headers, text, json });
    });
  });
}

module.exports = {
  ROOT, NEXUSD, NEXUS_GATEWAY, NEXUS_CLI, WEB_ROOT, ARTIFACTS, Proc, canConnect,
  sleep, waitFor, freePort, freePorts, startFabric, WsClient, connect, withFabric, randomId, sanitizerReport,
  readResponse, restartOnFreshStore, killAndRestartBroker, stopBrokerSeenDown,
};
