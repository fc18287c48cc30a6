// The local fleet's status page in a real headless browser (Debian's chromium driven by
// playwright-core, both installed by `scripts/browser.sh install`): it renders the fleet, and a
// node killed outright shows as unhealthy and then replaced, without a reload.
//
//   node tests/browser/status_page.mjs http://127.0.0.1:8550/     (or NODEFLEET_CONSOLE_URL)
//
// cli/tests/status_page.rs runs it against `nodefleet up --console 127.0.0.1:0`. It kills a
// real process: the serving node whose pid /api/status gives.
//
// What it proves, in order:
//  1. the page shows `desired_nodes` nodes healthy, each under its zone (data-zone) and with
//     the task /api/status gives;
//  2. after SIGKILL of one node's process, the page shows that node not healthy (locally it is
//     down for a few hundred milliseconds; the page long-polls every status the fleet
//     publishes, so it draws that);
//  3. then the same node id healthy on a different task, marked as replaced from the old one
//     (data-replaced-from), and an event about the replacement;
//  4. the request and latency charts drew the traffic the script sent through the gateway;
//  5. all of it without a reload: window.__nodefleetPageLoadedAt is unchanged and the page
//     never navigated again.
// A MutationObserver inside the page records every data-health / data-task /
// data-replaced-from each node card ever showed, so no state the page rendered is missed
// between two looks from here.
//
// NODEFLEET_SCREENSHOT=path.png saves a full-page screenshot at the end (the README's picture).
// Exit 0 on success; 1 with a one-line reason on stderr otherwise.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
// Where `scripts/browser.sh install` puts playwright-core (ES modules ignore NODE_PATH, so the
// script resolves it from there itself).
const TOOLS = process.env.NODEFLEET_BROWSER_TOOLS || path.resolve(here, '../../tools/browser');
const CHROMIUM = process.env.NODEFLEET_CHROMIUM || '/usr/bin/chromium';
// Bound of every wait on the fleet: a replacement takes 1-3 s locally; this is for a loaded
// two-core CI machine.
const WAIT_MS = 60_000;
// Bound of waits on the page alone (it polls every second; a few polls are enough).
const PAGE_WAIT_MS = 15_000;
// The whole run, whatever hangs: the waits above added up, with room.
const RUN_MS = 180_000;
// Requests the script sends through the gateway so the charts have traffic to draw.
const REQUESTS = 40;
// How far the fleet's clock (event times) may be from ours: the same machine, so only rounding.
const CLOCK_SLACK_MS = 1_000;

class Failure extends Error {}
const fail = (message) => { throw new Failure(message); };

function loadPlaywright() {
  try {
    return createRequire(path.join(TOOLS, 'package.json'))('playwright-core');
  } catch (error) {
    fail(`playwright-core is not installed in ${TOOLS} (${error.code || error.message}): run scripts/browser.sh install`);
  }
}

async function getJson(url) {
  const answer = await fetch(url, { cache: 'no-store', signal: AbortSignal.timeout(5_000) });
  if (!answer.ok) fail(`GET ${url}: HTTP ${answer.status}`);
  return answer.json();
}

// Inside the page: records, per node id, every (health, task, replacedFrom) its card showed.
function installRecorder() {
  const record = (window.__nodefleetRecord = {});
  const scan = () => {
    for (const el of document.querySelectorAll('[data-node]')) {
      const id = el.getAttribute('data-node');
      const seen = {
        t: Date.now(),
        health: el.getAttribute('data-health'),
        task: el.getAttribute('data-task'),
        zone: el.getAttribute('data-zone'),
        replacedFrom: el.getAttribute('data-replaced-from'),
      };
      const list = (record[id] = record[id] || []);
      const last = list[list.length - 1];
      if (!last || last.health !== seen.health || last.task !== seen.task || last.replacedFrom !== seen.replacedFrom) {
        list.push(seen);
      }
    }
  };
  new MutationObserver(scan).observe(document.body, {
    subtree: true,
    childList: true,
    attributes: true,
    attributeFilter: ['data-node', 'data-health', 'data-task', 'data-replaced-from'],
  });
  scan();
}

// Inside the page: the rendered events as {at, kind, subject, text}.
function renderedEvents() {
  return [...document.querySelectorAll('[data-event-at]')].map((row) => ({
    at: Number(row.getAttribute('data-event-at')),
    kind: row.getAttribute('data-kind'),
    subject: row.getAttribute('data-subject'),
    text: row.textContent,
  }));
}

async function sendTraffic(gateway) {
  let ok = 0;
  for (let i = 0; i < REQUESTS; i++) {
    const answer = await fetch(gateway, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: i, method: 'eth_blockNumber', params: [] }),
      signal: AbortSignal.timeout(5_000),
    });
    if (answer.ok) ok++;
    await answer.arrayBuffer();
  }
  if (ok === 0) fail(`none of ${REQUESTS} requests to the gateway ${gateway} answered 200`);
  return ok;
}

async function run(pageUrl, log) {
  const base = new URL(pageUrl);
  const statusUrl = new URL('/api/status', base).href;
  const { chromium } = loadPlaywright();
  if (!fs.existsSync(CHROMIUM)) fail(`${CHROMIUM} is missing: run scripts/browser.sh install`);

  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'nodefleet-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = context.pages()[0] || (await context.newPage());
    const pageErrors = [];
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await page.goto(base.href, { waitUntil: 'load' });
    let navigations = 0;
    page.on('framenavigated', (frame) => { if (frame === page.mainFrame()) navigations++; });
    const loadedAt = await page.evaluate(() => window.__nodefleetPageLoadedAt);
    if (typeof loadedAt !== 'number') fail('the page did not set window.__nodefleetPageLoadedAt');
    await page.evaluate(installRecorder);

    // 1. The fleet, all healthy, as /api/status has it.
    const first = await getJson(statusUrl);
    const desired = first.desired_nodes;
    if (!(desired > 0)) fail(`/api/status has no desired_nodes: ${JSON.stringify(first).slice(0, 300)}`);
    await page.waitForFunction(
      (n) => document.querySelectorAll('[data-node][data-health=healthy]').length >= n,
      desired, { timeout: WAIT_MS, polling: 100 },
    ).catch(() => fail(`the page did not show ${desired} healthy nodes within ${WAIT_MS} ms`));
    const status = await getJson(statusUrl);
    const victim = status.nodes.find((n) => n.healthy && n.pid && n.task);
    if (!victim) fail(`/api/status has no healthy node with a pid: ${JSON.stringify(status.nodes)}`);
    for (const zone of status.zones) {
      const column = await page.locator(`[data-zone-column="${zone}"]`).count();
      if (column !== 1) fail(`the page has ${column} columns for zone ${zone}, not 1`);
    }
    await page.waitForFunction(
      (nodes) => nodes.every((n) => document.querySelector(
        `[data-zone-column="${n.zone}"] [data-node="${n.id}"][data-task="${n.task}"]`)),
      status.nodes.filter((n) => n.task), { timeout: PAGE_WAIT_MS, polling: 100 },
    ).catch(() => fail('the page does not show every node under its zone with its task'));
    // The header, the snapshot timeline and the updater match one document of /api/status
    // (read in the page and compared at once, so a change between two polls is no mismatch).
    const mismatch = () => page.evaluate(async () => {
      const s = await (await fetch('/api/status', { cache: 'no-store' })).json();
      const rows = [...document.querySelectorAll('[data-snapshot]')].map((r) => r.getAttribute('data-snapshot'));
      const published = document.querySelector('tr.pub[data-snapshot]')?.getAttribute('data-snapshot') || null;
      const updater = document.querySelector('[data-updater]')?.getAttribute('data-updater') || null;
      const summary = document.querySelector('#health-summary');
      const problems = [];
      if (rows.join() !== s.snapshots.map((x) => x.id).join()) problems.push(`snapshots ${rows} not ${s.snapshots.map((x) => x.id)}`);
      if (s.latest_snapshot && published !== s.latest_snapshot) problems.push(`published ${published} not ${s.latest_snapshot}`);
      if (updater !== (s.updater ? s.updater.id : null)) problems.push(`updater ${updater} not ${s.updater && s.updater.id}`);
      if (Number(summary.getAttribute('data-desired')) !== s.desired_nodes) problems.push('desired nodes');
      if (!document.querySelector('#gateway').textContent.includes(s.gateway)) problems.push('gateway');
      return problems.join('; ');
    });
    const rendered = async () => {
      const deadline = Date.now() + PAGE_WAIT_MS;
      let last = '';
      while (Date.now() < deadline) {
        last = await mismatch();
        if (!last) return;
        await page.waitForTimeout(200);
      }
      fail(`the page does not show what /api/status says: ${last}`);
    };
    await rendered();
    const shownAt = Number(await page.getAttribute('#updated-at', 'data-ms'));
    log(`page shows ${desired} healthy nodes; killing ${victim.id} (pid ${victim.pid}, task ${victim.task})`);

    // 2 and 3. Kill it; wait for the same node id healthy on another task.
    const killedAt = Date.now();
    process.kill(victim.pid, 'SIGKILL');
    await page.waitForFunction(
      ({ id, task, since }) => (window.__nodefleetRecord[id] || []).some(
        (s) => s.t >= since && s.health === 'healthy' && s.task && s.task !== task),
      { id: victim.id, task: victim.task, since: killedAt }, { timeout: WAIT_MS, polling: 100 },
    ).catch(() => fail(`the page did not show ${victim.id} healthy on a new task within ${WAIT_MS} ms of the kill`));
    const history = (await page.evaluate((id) => window.__nodefleetRecord[id], victim.id))
      .filter((s) => s.t >= killedAt);
    const back = history.findIndex((s) => s.health === 'healthy' && s.task && s.task !== victim.task);
    const newTask = history[back].task;
    const notHealthy = history.slice(0, back).filter((s) => s.health !== 'healthy');
    const marked = history.some((s) => s.task === newTask && s.replacedFrom === victim.task);
    if (!marked) fail(`${victim.id} came back on ${newTask} but its card never said it replaced ${victim.task}: ${JSON.stringify(history)}`);

    // The events: one about the replacement (naming the node or its new task), and, if the
    // page never caught the node down, one naming the lost task.
    const since = killedAt - CLOCK_SLACK_MS;
    const about = (e, words) => e.at >= since && words.some((w) => e.subject === w || e.text.includes(w));
    await page.waitForFunction(
      ({ since, words }) => [...document.querySelectorAll('[data-event-at]')].some((row) =>
        Number(row.getAttribute('data-event-at')) >= since
        && words.some((w) => row.getAttribute('data-subject') === w || row.textContent.includes(w))),
      { since, words: [victim.id, newTask] }, { timeout: PAGE_WAIT_MS, polling: 100 },
    ).catch(() => fail(`no event about the replacement of ${victim.id} appeared on the page within ${PAGE_WAIT_MS} ms`));
    const events = await page.evaluate(renderedEvents);
    const replacement = events.filter((e) => about(e, [victim.id, newTask]));
    const lossEvents = events.filter((e) => about(e, [victim.task]));
    // The page long-polls every status the fleet publishes, so the node's down state (a fifth
    // of a second at least: the reconcile that finds it lost publishes it) must be drawn.
    if (notHealthy.length === 0) {
      fail(`the page never showed ${victim.id} down: its card went from ${victim.task} to ${newTask} healthy `
        + `with no state in between (events naming the lost task: ${lossEvents.length})`);
    }
    const downFor = `${notHealthy.map((s) => s.health).join(' → ')} on the page`;
    log(`${victim.id}: ${downFor}; replaced ${victim.task} → ${newTask}, healthy ${history[back].t - killedAt} ms after the kill`);
    log(`events: ${[...new Set([...lossEvents, ...replacement])].map((e) => `${e.kind} ${e.subject}`).join('; ')}`);

    // 4. The charts draw the traffic sent now.
    const gateway = status.gateway;
    const sent = await sendTraffic(gateway);
    await page.waitForFunction(
      (n) => {
        const rps = document.querySelector('#chart-rps');
        const lat = document.querySelector('#chart-latency');
        const drawn = (svg, series) => (svg.querySelector(`path[data-series="${series}"]`)?.getAttribute('d') || '').length > 0;
        return rps && lat && Number(rps.getAttribute('data-total-requests')) >= n
          && Number(rps.getAttribute('data-points')) > 0 && drawn(rps, 'requests') && drawn(lat, 'p50') && drawn(lat, 'p99');
      },
      sent, { timeout: PAGE_WAIT_MS, polling: 100 },
    ).catch(async () => {
      const seen = await page.evaluate(() => document.querySelector('#chart-rps')?.getAttribute('data-total-requests'));
      fail(`the charts did not draw the ${sent} requests sent through ${gateway} (the chart counts ${seen})`);
    });
    log(`charts drew the ${sent} requests sent through the gateway`);

    // 5. Live, not reloaded.
    const laterAt = Number(await page.getAttribute('#updated-at', 'data-ms'));
    if (!(laterAt > shownAt)) fail(`#updated-at did not move on (${shownAt} then ${laterAt})`);
    const loadedNow = await page.evaluate(() => window.__nodefleetPageLoadedAt);
    if (loadedNow !== loadedAt || navigations !== 0) {
      fail(`the page reloaded (loaded at ${loadedAt}, now ${loadedNow}; ${navigations} navigations)`);
    }
    if (pageErrors.length) fail(`the page threw: ${pageErrors.join('; ')}`);

    if (process.env.NODEFLEET_SCREENSHOT) {
      await page.screenshot({ path: process.env.NODEFLEET_SCREENSHOT, fullPage: true });
      log(`screenshot: ${process.env.NODEFLEET_SCREENSHOT}`);
    }
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

const pageUrl = process.argv[2] || process.env.NODEFLEET_CONSOLE_URL;
const log = (line) => console.log(`status page: ${line}`);
if (!pageUrl) {
  console.error('usage: node tests/browser/status_page.mjs <console URL> (or NODEFLEET_CONSOLE_URL)');
  process.exit(2);
}
const guard = setTimeout(() => {
  console.error(`status page test failed: still running after ${RUN_MS} ms`);
  process.exit(1);
}, RUN_MS);
try {
  await run(pageUrl, log);
  log('ok');
  clearTimeout(guard);
} catch (error) {
  console.error(`status page test failed: ${error instanceof Failure ? error.message : error.stack || error}`);
  process.exit(1);
}
