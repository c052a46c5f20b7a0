'use strict';
// Two agents on two hosts coordinate through the fabric over MCP (run by
// tests/integration/test_mcp_hosts.py, which makes the hosts: network
// namespaces). Agent B runs `nexus mcp` on host B (stdio; started here
// under `ip netns exec`), reaching the broker on host A over TCP. Agent C
// is this process, on host C with nothing of nexus installed: it speaks
// Streamable HTTP to the gateway's /mcp on host A. Both use the official
// MCP SDK client. Prints one JSON line of what happened; exit 0 when every
// step went as it should.
//
// Environment: GATEWAY (http://A:port), TOKEN, HOST_B_PREFIX (JSON argv,
// e.g. ["ip","netns","exec","nxb"]), NEXUS_CLI, BROKER (tcp://A:port),
// STATE (a directory for host B's state).

const assert = require('node:assert/strict');
const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
const { StdioClientTransport } = require('@modelcontextprotocol/sdk/client/stdio.js');
const { StreamableHTTPClientTransport } = require('@modelcontextprotocol/sdk/client/streamableHttp.js');

const env = process.env;

async function call(c, name, args = {}) {
  const r = await c.callTool({ name, arguments: args });
  return r.isError ? { error: r.structuredContent.error } : r.structuredContent;
}

async function main() {
  const prefix = JSON.parse(env.HOST_B_PREFIX);
  const stderr = [];
  const tb = new StdioClientTransport({
    command: prefix[0],
    args: [...prefix.slice(1), env.NEXUS_CLI, 'mcp', '--session', 'agent-b', '--name', 'on host B'],
    env: { ...process.env, NEXUS_ENDPOINT: env.BROKER, NEXUS_TOKEN: env.TOKEN, XDG_STATE_HOME: env.STATE },
    stderr: 'pipe',
  });
  tb.stderr.on('data', (d) => stderr.push(d.toString()));
  const b = new Client({ name: 'agent-b', version: '1' });
  const c = new Client({ name: 'agent-c', version: '1' });
  const tc = new StreamableHTTPClientTransport(new URL(`${env.GATEWAY}/mcp?session=agent-c&name=on%20host%20C`),
    { requestInit: { headers: { Authorization: `Bearer ${env.TOKEN}` } } });
  const out = {};
  try {
    await b.connect(tb);
    await c.connect(tc);
    // Each sees the other.
    const seenByC = (await call(c, 'list_sessions')).sessions.map((s) => `${s.session}:${s.name}`);
    assert.ok(seenByC.includes('agent-b:on host B'), JSON.stringify(seenByC));
    assert.ok((await call(b, 'list_sessions')).sessions.some((s) => s.session === 'agent-c'));
    await call(c, 'get_events', { resume: true });
    await call(b, 'get_events', { resume: true });

    // B claims the deploy; C is denied and told who holds it.
    const grant = await call(b, 'claim_work', { work_id: 'deploy-prod', description: 'deploy from B' });
    assert.equal(grant.holder, 'agent-b', JSON.stringify(grant));
    const denied = await call(c, 'claim_work', { work_id: 'deploy-prod' });
    assert.equal(denied.error.code, 'denied', JSON.stringify(denied));
    assert.equal(denied.error.holder, 'agent-b');

    // C waits for a word from B; B finishes and says so directly.
    const waiting = c.callTool({ name: 'wait_for_events', arguments: { patterns: ['message.direct', 'work.>'], timeout_seconds: 15 } });
    await new Promise((r) => setTimeout(r, 300));
    const released = await call(b, 'release_work', { work_id: 'deploy-prod', token: grant.token, reason: 'over to C' });
    assert.equal(released.state, 'released');
    await call(b, 'send_message', { to: 'agent-c', message: 'deploy is yours', subject: 'handover' });
    let woke = (await waiting).structuredContent;
    const got = [...woke.events];
    // The release and the message may come in one answer or two.
    for (let i = 0; i < 5 && !got.some((e) => e.event_type === 'message.direct'); i++) {
      woke = await call(c, 'wait_for_events', { patterns: ['message.direct', 'work.>'], timeout_seconds: 5 });
      got.push(...woke.events);
    }
    const msg = got.find((e) => e.event_type === 'message.direct');
    assert.ok(msg, JSON.stringify(got));
    assert.deepEqual([msg.session_id, msg.payload.to, msg.payload.message], ['agent-b', 'agent-c', 'deploy is yours']);
    assert.ok(got.some((e) => e.event_type === 'work.released' && e.payload.work_id === 'deploy-prod'));

    // C claims it now, with a higher fencing token, completes it and thanks B.
    const mine = await call(c, 'claim_work', { work_id: 'deploy-prod' });
    assert.equal(mine.holder, 'agent-c', JSON.stringify(mine));
    assert.ok(mine.token > grant.token);
    assert.equal((await call(b, 'renew_work', { work_id: 'deploy-prod', token: grant.token })).error.code, 'stale_token');
    assert.equal((await call(c, 'complete_work', { work_id: 'deploy-prod', token: mine.token, result: { ok: true } })).state, 'completed');
    await call(c, 'send_message', { to: 'agent-b', message: 'done, thanks' });
    // B's own message to C is in its stream too (a sender sees what it sent).
    const back = [];
    for (let i = 0; i < 5 && !back.some((e) => e.session_id === 'agent-c'); i++)
      back.push(...(await call(b, 'wait_for_events', { patterns: ['message.direct'], timeout_seconds: 10 })).events);
    assert.deepEqual(back.map((e) => [e.session_id, e.payload.message]),
      [['agent-b', 'deploy is yours'], ['agent-c', 'done, thanks']]);
    const claims = (await call(b, 'list_claims', { prefix: 'deploy-' })).claims;
    assert.deepEqual(claims.map((x) => [x.work_id, x.state, x.holder]), [['deploy-prod', 'completed', 'agent-c']]);
    out.ok = true;
    out.tokens = [grant.token, mine.token];
  } catch (e) {
    out.ok = false;
    out.error = String(e.stack || e);
    out.stderr_b = stderr.join('').slice(-4000);
  } finally {
    await b.close().catch(() => {});
    await c.close().catch(() => {});
  }
  console.log(JSON.stringify(out));
  process.exit(out.ok ? 0 : 1);
}

main();
