'use strict';
// The WebSocket side of bench/soak.py: N clients on the gateway, each
// subscribed to soak.ws.>; every client checks that the seqs it gets only
// go up, and a tenth of them check they have no gap (the soak's WebSocket
// publisher is their only source on soak.ws.*). Clients that are closed
// (the broker restart does not close them; the gateway's slow-client rule
// might) connect again with ?since= and resume. Prints one JSON line of
// counts every 10 s on stdout; stops on SIGTERM.
//
//   node bench/soak_ws.js PORT N

const path = require('node:path');
const WebSocket = require(path.join(__dirname, '..', 'tests', 'gateway', 'node_modules', 'ws'));

const port = Number(process.argv[2]);
const n = Number(process.argv[3] || 5000);
const stats = { open: 0, opened: 0, closed: 0, events: 0, disorder: 0, gaps: 0, errors: 0, resumes: 0 };
const clients = [];
let stopping = false;

function open(i, since) {
  const q = since ? `?since=${since}&recent=0` : '?recent=0';
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/session/soak-ws-${i}${q}`);
  const c = clients[i] || (clients[i] = { last: 0, checkGaps: i % 10 === 0 });
  c.ws = ws;
  ws.on('open', () => {
    stats.open++;
    stats.opened++;
    ws.send(JSON.stringify({ action: 'subscribe', topics: ['soak.ws.>'], id: 's' }));
  });
  ws.on('message', (data) => {
    let m;
    try { m = JSON.parse(data.toString()); } catch { stats.errors++; return; }
    if (m.type === 'event') {
      stats.events++;
      if (m.seq <= c.last) stats.disorder++;
      else if (c.checkGaps && c.last && m.event_type === 'soak.ws.x' && m.payload && m.payload.prev !== undefined) {
        // prev: the seq of the publisher's previous event on soak.ws.x.
        if (m.payload.prev > c.last) stats.gaps++;
      }
      c.last = Math.max(c.last, m.seq);
    } else if (m.type === 'gap') {
      stats.gaps++;
    } else if (m.type === 'reply' && !m.ok) {
      stats.errors++;
    }
  });
  ws.on('error', () => {});
  ws.on('close', () => {
    stats.open--;
    stats.closed++;
    if (stopping) return;
    stats.resumes++;
    setTimeout(() => open(i, c.last), 500 + Math.random() * 1000);
  });
}

(async () => {
  // Open in batches: the gateway is one lws thread.
  for (let i = 0; i < n; i++) {
    open(i, 0);
    if (i % 100 === 99) await new Promise((r) => setTimeout(r, 100));
  }
})();
const timer = setInterval(() => process.stdout.write(JSON.stringify(stats) + '\n'), 10000);
process.on('SIGTERM', () => {
  stopping = true;
  clearInterval(timer);
  process.stdout.write(JSON.stringify(stats) + '\n');
  for (const c of clients) if (c && c.ws) c.ws.terminate();
  setTimeout(() => process.exit(0), 500);
});
