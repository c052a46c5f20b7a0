/* nexus dashboard: one WebSocket back to the gateway that served this page,
 * plus a few HTTP reads. Plain ES2020, no build step, no dependencies.
 *
 * Events are kept by seq: every event is counted and shown once (dedupe by
 * seq), and after a drop the dashboard reconnects with backoff and resumes
 * with ?since=<last seq seen>, so nothing is lost or shown twice.
 */
(() => {
  'use strict';

  const MAX_EVENTS = 1000;        // events kept for the stream
  const MAX_RENDERED = 400;       // rows in the DOM
  const CHART_SECONDS = 60;
  const BACKOFF_MIN = 500;
  const BACKOFF_MAX = 15000;

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const token = params.get('token') || '';
  // ?session=NAME: with a tokens file, a token may act only as the sessions
  // it lists, so the dashboard must connect as one of them.
  const asked = params.get('session') || '';
  const sessionId = /^[A-Za-z0-9_:@-]{1,64}$/.test(asked)
    ? asked : `dashboard-${Math.random().toString(16).slice(2, 10)}`;

  const state = {
    ws: null,
    connected: false,
    attempt: 0,
    reconnectTimer: null,
    lastSeq: 0,             // highest event seq seen
    storeId: null,          // the store lastSeq belongs to (the welcome's store_id)
    seen: new Set(),        // seqs seen (bounded; below seenFloor counts as seen)
    seenFloor: 0,
    events: [],             // kept events, ascending seq
    received: 0,            // distinct events received
    paused: false,
    pendingWhilePaused: 0,
    filters: [],            // compiled patterns; empty = everything
    sessions: new Map(),
    claims: new Map(),      // work_id -> claim
    sessionsMatched: null,  // all the broker has, when the list is one page of them
    claimsMatched: null,
    buckets: new Map(),     // unix second -> events
    clockOffset: 0,         // server ms - browser ms
    reqId: 1,
    pending: new Map(),     // request id -> {resolve, reject, timer}
    fabricTotal: null,
  };

  /* ---- small helpers ---------------------------------------------------- */

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function authHeaders() {
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  async function getJson(path) {
    const res = await fetch(path, { headers: authHeaders(), cache: 'no-store' });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      const e = new Error((body.error && body.error.message) || `HTTP ${res.status}`);
      e.status = res.status;
      throw e;
    }
    return body;
  }

  /** Any time value the gateway may send (µs, ms, s since epoch, or ISO) → ms. */
  function toMs(v) {
    if (v === null || v === undefined || v === '') return NaN;
    if (typeof v === 'number') {
      if (v > 1e14) return v / 1000;     // µs
      if (v > 1e11) return v;            // ms
      return v * 1000;                   // s
    }
    if (typeof v === 'string' && /^\d+(\.\d+)?$/.test(v)) return toMs(Number(v));
    return Date.parse(v);
  }

  const serverNow = () => Date.now() + state.clockOffset;

  function ago(ms) {
    if (!Number.isFinite(ms)) return '–';
    const s = Math.max(0, Math.round((serverNow() - ms) / 1000));
    if (s < 60) return `${s}s ago`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s ago`;
    return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ago`;
  }

  function fmtTime(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return '';
    const p = (n, w = 2) => String(n).padStart(w, '0');
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  }

  function typeClass(t) {
    const head = String(t).split('.')[0];
    return ['work', 'session', 'status', 'message', 'help'].includes(head) ? `t-${head}` : 't-other';
  }

  function debounce(fn, ms) {
    let t = null;
    return () => {
      if (t) return;
      t = setTimeout(() => { t = null; fn(); }, ms);
    };
  }

  /* ---- topic patterns: `*` one token, `>` one or more trailing tokens --- */

  function compilePattern(p) {
    p = p.trim();
    if (!p) return null;
    if (p === '>' || p === 'broadcast') return () => true;
    const parts = p.split('.');
    if (parts.some((x) => x === '')) throw new Error(`bad pattern "${p}"`);
    parts.forEach((x, i) => {
      if (x === '>' && i !== parts.length - 1) throw new Error(`">" must be last in "${p}"`);
      if ((x.includes('*') && x !== '*') || (x.includes('>') && x !== '>')) throw new Error(`a wildcard must be a whole token in "${p}"`);
    });
    return (topic) => {
      const t = topic.split('.');
      for (let i = 0; i < parts.length; i++) {
        if (parts[i] === '>') return t.length > i;
        if (i >= t.length) return false;
        if (parts[i] !== '*' && parts[i] !== t[i]) return false;
      }
      return t.length === parts.length;
    };
  }

  function setFilter(text) {
    const input = $('filter');
    try {
      state.filters = text.split(/[,\s]+/).map(compilePattern).filter(Boolean);
      input.classList.remove('invalid');
      input.title = '';
    } catch (e) {
      input.classList.add('invalid');
      input.title = e.message;
      return;
    }
    renderEvents(true);
  }

  const matchesFilter = (e) => state.filters.length === 0 || state.filters.some((f) => f(e.event_type));

  /* ---- connection ------------------------------------------------------- */

  function setStatus(s, text) {
    const st = $('status');
    st.dataset.state = s;
    st.textContent = text;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const q = new URLSearchParams();
    if (state.lastSeq > 0) {
      q.set('since', String(state.lastSeq));
      // The seq means something only in its store: the gateway resets a
      // cursor of another store instead of skipping (type "reset").
      if (state.storeId) q.set('store', state.storeId);
      q.set('recent', '0');
    } else {
      q.set('recent', '100');
    }
    q.set('name', 'dashboard');
    if (token) q.set('token', token);
    const url = `${proto}://${location.host}/ws/session/${sessionId}?${q}`;
    setStatus('connecting', state.attempt ? `reconnecting (try ${state.attempt + 1})…` : 'connecting…');
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    const resuming = state.lastSeq > 0;

    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch { return; }
      if (msg.type === 'event') onEvent(msg, true);
      else if (msg.type === 'reply') onReply(msg);
      else if (msg.type === 'connection') onWelcome(msg, resuming); // the welcome (seed 003)
      else if (msg.type === 'gap') onGap(msg);
      else if (msg.type === 'reset') onReset(msg);
    };
    ws.onclose = (ev) => {
      if (state.ws !== ws) return;
      state.ws = null;
      state.connected = false;
      for (const [, p] of state.pending) { clearTimeout(p.timer); p.reject(new Error('connection closed')); }
      state.pending.clear();
      scheduleReconnect(ev.code, ev.reason);
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  function scheduleReconnect(code, reason) {
    const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** state.attempt);
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    state.attempt++;
    const why = code ? ` (${code}${reason ? ` ${reason}` : ''})` : '';
    setStatus('closed', `disconnected${why} · retry in ${(delay / 1000).toFixed(1)}s`);
    state.reconnectTimer = setTimeout(connect, delay);
  }

  function request(obj, timeout = 10000) {
    return new Promise((resolve, reject) => {
      const ws = state.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) { reject(new Error('not connected')); return; }
      const id = `d${state.reqId++}`;
      const timer = setTimeout(() => { state.pending.delete(id); reject(new Error('no reply')); }, timeout);
      state.pending.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ ...obj, id }));
    });
  }

  function onReply(msg) {
    const p = state.pending.get(msg.id);
    if (!p) return;
    state.pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.ok) p.resolve(msg);
    else {
      const err = new Error((msg.error && (msg.error.message || msg.error.code)) || 'error');
      err.code = msg.error && msg.error.code;
      p.reject(err);
    }
  }

  async function onWelcome(w, resuming) {
    if (typeof w.store_id === 'string') state.storeId = w.store_id;
    state.connected = true;
    state.attempt = 0;
    setStatus('live', 'live');
    $('session-id').textContent = w.session_id || sessionId;
    // Recent events from the welcome (first connection only: a resume gets
    // exactly the events after `since` instead).
    const baseline = state.lastSeq;
    if (!resuming && Array.isArray(w.recent_events)) {
      for (const e of w.recent_events) onEvent(e, false);
    }
    // What the token may read (the welcome's may_read): a token limited by
    // sub= is refused '>', so the dashboard asks for its patterns instead.
    // A gateway that does not say reads everything.
    const topics = Array.isArray(w.may_read) ? w.may_read.filter((p) => typeof p === 'string') : ['>'];
    if (topics.length === 0) {
      setStatus('live', 'live · this token may read no events');
      refreshSessions();
      refreshClaims();
      refreshStats();
      return;
    }
    try {
      // Subscribing starts the flow; on a ?since= connection the gateway
      // replays history after since first, then live events.
      await request({ action: 'subscribe', topics });
      if (!resuming) {
        // Events published between the welcome and the subscription: replay
        // them from the welcome's last seq (duplicates are dropped by seq).
        const from = Math.max(baseline, typeof w.last_seq === 'number' ? w.last_seq : 0, state.lastSeq);
        await request({ action: 'resume', since: from });
      }
      syncClock();
    } catch (e) {
      setStatus('error', `subscribe failed: ${e.message}`);
    }
    refreshSessions();
    refreshClaims();
    refreshStats();
  }

  /** The broker's store is another one (a fresh data directory) or was set
   *  back: its seqs start again, so what was seen by seq says nothing. The
   *  gateway replays the store from its first event; forget the old seqs. */
  function onReset(r) {
    state.storeId = r.store_id || null;
    state.lastSeq = 0;
    state.seen.clear();
    state.seenFloor = 0;
    state.events = [];
    renderEvents();
    setStatus('live', `store changed (${r.store_id || 'unknown'}): reloading its events`);
  }

  function onGap(g) {
    // Events for this client were dropped: fetch them again by seq.
    const since = Math.max(0, (Number(g.from) || 1) - 1);
    request({ action: 'resume', since }).catch(() => {});
  }

  async function syncClock() {
    try {
      const t0 = Date.now();
      const r = await request({ action: 'ping' });
      const t1 = Date.now();
      const server = toMs(r.ts);
      // Only a real skew matters (another machine); on one machine the
      // estimate's noise would just make countdowns jitter.
      if (Number.isFinite(server)) {
        const offset = server - (t0 + t1) / 2;
        state.clockOffset = Math.abs(offset) > Math.max(1000, t1 - t0) ? offset : 0;
      }
    } catch { /* keep the previous offset */ }
  }

  /* ---- events ----------------------------------------------------------- */

  function markSeen(seq) {
    if (seq <= state.seenFloor || state.seen.has(seq)) return false;
    state.seen.add(seq);
    if (state.seen.size > 20000) {
      const sorted = [...state.seen].sort((a, b) => a - b);
      const drop = sorted.slice(0, 10000);
      drop.forEach((s) => state.seen.delete(s));
      state.seenFloor = drop[drop.length - 1];
    }
    return true;
  }

  function onEvent(e, live) {
    if (typeof e.seq !== 'number' || !markSeen(e.seq)) return;
    state.received++;
    if (e.seq > state.lastSeq) state.lastSeq = e.seq;
    if (state.fabricTotal !== null && live) state.fabricTotal++;

    // Chart: bucket by the event's own (server) time.
    const ts = Date.parse(e.timestamp);
    const sec = Math.floor((Number.isFinite(ts) ? ts : serverNow()) / 1000);
    if (sec > Math.floor(serverNow() / 1000) - CHART_SECONDS - 2) state.buckets.set(sec, (state.buckets.get(sec) || 0) + 1);

    // Keep events ordered by seq (a replay may fill in older ones).
    const evs = state.events;
    let inOrder = true;
    if (evs.length === 0 || evs[evs.length - 1].seq < e.seq) evs.push(e);
    else {
      let i = evs.length - 1;
      while (i >= 0 && evs[i].seq > e.seq) i--;
      evs.splice(i + 1, 0, e);
      inOrder = false;
    }
    if (evs.length > MAX_EVENTS) evs.splice(0, evs.length - MAX_EVENTS);

    if (state.paused) {
      if (matchesFilter(e)) state.pendingWhilePaused++;
      updatePauseButton();
    } else if (inOrder) {
      if (matchesFilter(e)) prependEventRow(e, live);
    } else {
      renderEvents(true);
    }

    applyToPanels(e);
    scheduleCounters();
  }

  function eventRow(e, fresh) {
    const li = el('li', `event${fresh ? ' fresh' : ''}`);
    li.dataset.testid = 'event';
    li.dataset.seq = String(e.seq);
    li.dataset.type = e.event_type;
    li.appendChild(el('span', 'seq', `#${e.seq}`));
    li.appendChild(el('span', 'time', fmtTime(e.timestamp)));
    const t = el('span', `type ${typeClass(e.event_type)}`, e.event_type);
    t.title = e.event_type;
    li.appendChild(t);
    const from = el('span', 'from', e.session_id);
    from.title = e.session_id;
    li.appendChild(from);
    let text;
    try { text = JSON.stringify(e.payload); } catch { text = String(e.payload); }
    const p = el('span', 'payload', text);
    p.title = 'click to expand';
    p.addEventListener('click', () => {
      p.classList.toggle('open');
      if (p.classList.contains('open')) p.textContent = JSON.stringify(e.payload, null, 2);
      else p.textContent = text;
    });
    li.appendChild(p);
    return li;
  }

  function prependEventRow(e, fresh) {
    const list = $('events');
    list.insertBefore(eventRow(e, fresh), list.firstChild);
    while (list.children.length > MAX_RENDERED) list.removeChild(list.lastChild);
    updateStreamInfo();
  }

  function renderEvents() {
    const list = $('events');
    const frag = document.createDocumentFragment();
    let n = 0;
    for (let i = state.events.length - 1; i >= 0 && n < MAX_RENDERED; i--) {
      const e = state.events[i];
      if (!matchesFilter(e)) continue;
      frag.appendChild(eventRow(e, false));
      n++;
    }
    list.replaceChildren(frag);
    updateStreamInfo();
  }

  function updateStreamInfo() {
    const shown = $('events').children.length;
    const f = $('filter').value.trim();
    let text = `${shown} shown of ${state.events.length} kept`;
    if (f) text += ` · filter ${f}`;
    if (state.paused) text += ` · paused (${state.pendingWhilePaused} new)`;
    $('stream-info').textContent = text;
  }

  function updatePauseButton() {
    const b = $('pause');
    b.setAttribute('aria-pressed', String(state.paused));
    b.textContent = state.paused ? `Resume${state.pendingWhilePaused ? ` (${state.pendingWhilePaused} new)` : ''}` : 'Pause';
    updateStreamInfo();
  }

  /* ---- sessions and claims ---------------------------------------------- */

  const refreshSessionsSoon = debounce(() => refreshSessions(), 150);
  const refreshClaimsSoon = debounce(() => refreshClaims(), 300);

  function applyToPanels(e) {
    const t = e.event_type;
    const p = e.payload && typeof e.payload === 'object' ? e.payload : {};
    if (t.startsWith('session.') || t === 'status.update') {
      if (t === 'session.disconnected' && p.session) {
        state.sessions.delete(p.session);
        renderSessions();
      } else if (t === 'status.update' && p.session && state.sessions.has(p.session)) {
        const s = state.sessions.get(p.session);
        Object.assign(s, { state: p.state ?? s.state, current_work: p.current_work, text: p.text, last_seen: e.timestamp });
        renderSessions();
      }
      refreshSessionsSoon();
    }
    if (t.startsWith('work.')) {
      if (t === 'work.claimed' && p.work_id) {
        state.claims.set(p.work_id, { work_id: p.work_id, holder: p.holder || e.session_id, token: p.token,
          expires_at: p.expires_at, claimed_at: e.timestamp, description: p.description, state: 'claimed' });
      } else if ((t === 'work.released' || t === 'work.completed') && p.work_id) {
        const c = state.claims.get(p.work_id);
        if (c && (c.token === undefined || p.token === undefined || c.token === p.token)) state.claims.delete(p.work_id);
      }
      renderClaims();
      refreshClaimsSoon();
    }
  }

  /* A list the gateway cut (more than its page of 1000): the panel says
     so and the counter shows how many there are in all, not the page.   */
  function pageNote(r, shown) {
    if (!r.truncated) return { matched: null, text: '' };
    const matched = Number.isInteger(r.matched) ? r.matched : null;
    const all = matched === null ? 'more' : matched.toLocaleString('en-US');
    return { matched, text: `showing the first ${shown.toLocaleString('en-US')} of ${all}` };
  }

  async function refreshSessions() {
    try {
      const r = await getJson('/sessions/active');
      state.sessions = new Map((r.sessions || []).map((s) => [s.session, s]));
      const note = pageNote(r, state.sessions.size);
      state.sessionsMatched = note.matched;
      $('sessions-updated').textContent = note.text;
      renderSessions();
      if (state.brokerDown) {
        state.brokerDown = false;
        if (state.connected) setStatus('live', 'live');
      }
    } catch (e) {
      $('sessions-updated').textContent = `unavailable: ${e.message}`;
      // The WebSocket to the gateway is up, the broker behind it is not:
      // the pill says so, not "live".
      if (e.status === 503 && state.connected) {
        state.brokerDown = true;
        setStatus('degraded', 'live · broker unavailable');
      }
    }
  }

  async function refreshClaims() {
    try {
      const r = await getJson('/work/claimed');
      const next = new Map();
      for (const c of r.claims || []) if (!c.state || c.state === 'claimed') next.set(c.work_id, c);
      state.claims = next;
      const note = pageNote(r, next.size);
      state.claimsMatched = note.matched;
      $('claims-updated').textContent = note.text;
      renderClaims();
    } catch { /* the event-driven view stays */ }
  }

  async function refreshStats() {
    try {
      const r = await getJson('/events/stats');
      if (typeof r.events_total === 'number') state.fabricTotal = r.events_total;
    } catch { /* keep */ }
    scheduleCounters();
  }

  function renderSessions() {
    const list = $('sessions');
    const frag = document.createDocumentFragment();
    const ids = [...state.sessions.keys()].sort();
    for (const id of ids) {
      const s = state.sessions.get(id);
      const li = el('li', 'card');
      li.dataset.testid = 'session';
      li.dataset.session = id;
      const top = el('div', 'card-top');
      const name = el('span', 'card-id', id);
      name.title = s.name ? `${id} (${s.name})` : id;
      top.appendChild(name);
      const badges = el('span', 'badges');
      const st = s.state || 'available';
      const b = el('span', `badge ${st}`, st);
      b.dataset.testid = 'session-state';
      badges.appendChild(b);
      if (s.status && s.status !== 'active') badges.appendChild(el('span', `badge ${s.status}`, s.status));
      top.appendChild(badges);
      li.appendChild(top);

      const sub = [];
      if (s.name && s.name !== id) sub.push(s.name);
      if (s.current_work) sub.push(`working on ${s.current_work}`);
      if (s.text) sub.push(s.text);
      const hb = el('div', 'card-sub');
      const lastSeen = toMs(s.last_seen);
      const hbSpan = el('span', 'heartbeat', `heartbeat ${ago(lastSeen)}`);
      hbSpan.dataset.testid = 'session-heartbeat';
      hbSpan.dataset.lastSeen = String(lastSeen);
      hb.appendChild(hbSpan);
      if (sub.length) hb.appendChild(document.createTextNode(` · ${sub.join(' · ')}`));
      li.appendChild(hb);

      if (Array.isArray(s.capabilities) && s.capabilities.length) {
        const chips = el('div', 'chips');
        chips.dataset.testid = 'session-capabilities';
        for (const c of s.capabilities) chips.appendChild(el('span', 'chip', c));
        li.appendChild(chips);
      }
      frag.appendChild(li);
    }
    list.replaceChildren(frag);
    $('sessions-empty').hidden = ids.length > 0;
    scheduleCounters();
  }

  function renderClaims() {
    const list = $('claims');
    const frag = document.createDocumentFragment();
    const ids = [...state.claims.keys()].sort();
    for (const id of ids) {
      const c = state.claims.get(id);
      const li = el('li', 'card');
      li.dataset.testid = 'claim';
      li.dataset.workId = id;
      const exp = toMs(c.expires_at);
      const started = toMs(c.claimed_at);
      li.dataset.expires = String(exp);
      li.dataset.started = String(started);
      const top = el('div', 'card-top');
      const name = el('span', 'card-id', id);
      name.title = id;
      top.appendChild(name);
      const cd = el('span', 'countdown', '');
      cd.dataset.testid = 'claim-countdown';
      top.appendChild(cd);
      li.appendChild(top);
      const sub = el('div', 'card-sub');
      const holder = el('span', 'holder', c.holder);
      holder.dataset.testid = 'claim-holder';
      sub.appendChild(document.createTextNode('held by '));
      sub.appendChild(holder);
      if (c.token !== undefined) sub.appendChild(document.createTextNode(` · token ${c.token}`));
      if (c.description) sub.appendChild(document.createTextNode(` · ${c.description}`));
      li.appendChild(sub);
      const bar = el('div', 'lease');
      bar.appendChild(el('span'));
      li.appendChild(bar);
      frag.appendChild(li);
    }
    list.replaceChildren(frag);
    $('claims-empty').hidden = ids.length > 0;
    tickCountdowns();
    scheduleCounters();
  }

  function tickCountdowns() {
    const now = serverNow();
    let expired = false;
    for (const li of $('claims').children) {
      const exp = Number(li.dataset.expires);
      const started = Number(li.dataset.started);
      const cd = li.querySelector('.countdown');
      const bar = li.querySelector('.lease');
      if (!Number.isFinite(exp)) { cd.textContent = '–'; continue; }
      const left = exp - now;
      cd.classList.toggle('soon', left > 0 && left < 10000);
      cd.classList.toggle('over', left <= 0);
      bar.classList.toggle('soon', left < 10000);
      if (left <= 0) {
        cd.textContent = 'expired';
        expired = true;
      } else {
        const s = Math.ceil(left / 1000);
        cd.textContent = s >= 3600 ? `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m` :
          s >= 60 ? `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s` : `${s}s`;
      }
      const total = Number.isFinite(started) && exp > started ? exp - started : 30000;
      bar.firstChild.style.width = `${Math.max(0, Math.min(100, (left / total) * 100))}%`;
    }
    for (const span of $('sessions').querySelectorAll('.heartbeat')) {
      span.textContent = `heartbeat ${ago(Number(span.dataset.lastSeen))}`;
    }
    // A renewal publishes no event: a lease that seems over is asked for
    // (every 2 s at most) rather than shown expired until the next poll.
    if (expired && state.connected && Date.now() - (state.claimsAskedAt || 0) > 2000) {
      state.claimsAskedAt = Date.now();
      refreshClaims();
    }
  }

  /* ---- counters and chart ----------------------------------------------- */

  let countersQueued = false;
  function scheduleCounters() {
    if (countersQueued) return;
    countersQueued = true;
    requestAnimationFrame(() => { countersQueued = false; renderCounters(); });
  }

  function rateLastSeconds(n) {
    const now = Math.floor(serverNow() / 1000);
    let sum = 0;
    for (let s = now - n; s < now; s++) sum += state.buckets.get(s) || 0;
    return sum / n;
  }

  function renderCounters() {
    $('count-received').textContent = state.received.toLocaleString('en-US');
    $('count-total').textContent = state.fabricTotal === null ? '–' : state.fabricTotal.toLocaleString('en-US');
    $('count-seq').textContent = state.lastSeq ? String(state.lastSeq) : '–';
    const total = (matched, size) => (matched !== null && matched > size ? matched : size).toLocaleString('en-US');
    $('count-sessions').textContent = total(state.sessionsMatched, state.sessions.size);
    $('count-claims').textContent = total(state.claimsMatched, state.claims.size);
    const r = rateLastSeconds(10);
    $('count-rate').textContent = r >= 10 ? r.toFixed(0) : r.toFixed(1);
  }

  function drawChart() {
    const canvas = $('rate-chart');
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 360;
    const h = canvas.clientHeight || 64;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);

    const now = Math.floor(serverNow() / 1000);
    for (const k of state.buckets.keys()) if (k < now - CHART_SECONDS - 2) state.buckets.delete(k);
    const values = [];
    for (let s = now - CHART_SECONDS; s < now; s++) values.push(state.buckets.get(s) || 0);
    const peak = Math.max(...values);
    const top = Math.max(5, peak);
    $('rate-peak').textContent = String(peak);

    ctx.strokeStyle = '#e4e8ee';
    ctx.lineWidth = 1;
    for (const f of [0.5, 1]) {
      const y = Math.round(h - 2 - (h - 6) * f) + 0.5;
      ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
    }
    const bw = w / CHART_SECONDS;
    ctx.fillStyle = '#2457c5';
    values.forEach((v, i) => {
      if (!v) return;
      const bh = Math.max(1, (h - 6) * (v / top));
      ctx.fillRect(i * bw + 0.5, h - 2 - bh, Math.max(1, bw - 1.5), bh);
    });
    ctx.fillStyle = '#687385';
    ctx.font = '10px system-ui, sans-serif';
    ctx.fillText(String(top), 2, 10);
  }

  /* ---- publish form ----------------------------------------------------- */

  async function publish(ev) {
    ev.preventDefault();
    const topicEl = $('publish-topic');
    const payloadEl = $('publish-payload');
    const out = $('publish-result');
    const topic = topicEl.value.trim();
    out.className = 'muted';
    if (!topic) { topicEl.classList.add('invalid'); out.className = 'err'; out.textContent = 'a topic is needed'; return; }
    topicEl.classList.remove('invalid');
    let payload = null;
    const text = payloadEl.value.trim();
    if (text) {
      try { payload = JSON.parse(text); } catch (e) {
        payloadEl.classList.add('invalid');
        out.className = 'err';
        out.textContent = `payload is not JSON: ${e.message}`;
        return;
      }
    }
    payloadEl.classList.remove('invalid');
    const req = { action: 'publish', event_type: topic, payload };
    if (topic === 'message.direct' && payload && typeof payload === 'object' && payload.to) req.to = payload.to;
    $('publish-send').disabled = true;
    out.textContent = 'publishing…';
    try {
      let seq;
      if (state.ws && state.ws.readyState === WebSocket.OPEN) {
        seq = (await request(req)).seq;
      } else {
        const res = await fetch('/events', { method: 'POST', headers: { 'Content-Type': 'application/json', ...authHeaders() },
          body: JSON.stringify({ event_type: topic, payload, session_id: sessionId }) });
        const body = await res.json().catch(() => ({}));
        if (!res.ok) throw new Error((body.error && body.error.message) || `HTTP ${res.status}`);
        seq = body.seq;
      }
      out.className = 'ok';
      out.textContent = `published as #${seq}`;
    } catch (e) {
      out.className = 'err';
      out.textContent = `not published: ${e.message}`;
    } finally {
      $('publish-send').disabled = false;
    }
  }

  /* ---- wiring ----------------------------------------------------------- */

  function init() {
    $('session-id').textContent = sessionId;
    $('filter').addEventListener('input', (e) => setFilter(e.target.value));
    $('pause').addEventListener('click', () => {
      state.paused = !state.paused;
      if (!state.paused) { state.pendingWhilePaused = 0; renderEvents(); }
      updatePauseButton();
    });
    $('clear').addEventListener('click', () => {
      state.events = [];
      state.pendingWhilePaused = 0;
      renderEvents();
    });
    $('publish-form').addEventListener('submit', publish);
    $('publish-payload').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) publish(e);
    });

    setInterval(() => { tickCountdowns(); renderCounters(); }, 250);
    setInterval(drawChart, 1000);
    setInterval(() => { if (state.connected) refreshSessions(); }, 5000);
    setInterval(() => { if (state.connected) { refreshStats(); refreshClaims(); } }, 10000);
    setInterval(() => { if (state.connected) syncClock(); }, 60000);
    drawChart();
    renderSessions();
    renderClaims();
    connect();

    // For tests and debugging in the console.
    window.nexusDashboard = {
      state,
      sessionId,
      get lastSeq() { return state.lastSeq; },
      seqs: () => state.events.map((e) => e.seq),
      dropConnection: () => { if (state.ws) state.ws.close(4000, 'dropped by test'); },
    };
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
