// The tracker script (GET /script.js) in a real browser: headless Debian chromium
// driven by playwright-core loads test pages from a small web server on another
// origin, navigates like a single-page app and fires custom events; the test
// then reads exactly what the real analytics-service stored (over a SecantusDB
// server of its own) and what GET /stats says.
//
// Run through scripts/test-browser.sh, which installs chromium and the npm
// packages, builds the service and sets SERVICE_BINARY and SECANTUSD_BIN.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { MongoClient } from 'mongodb';
import { answers, freePort } from '../common/net.mjs';

const targetDir = process.env.CARGO_TARGET_DIR ?? join(homedir(), '.cache', 'analytics-desk', 'target');
const SERVICE = process.env.SERVICE_BINARY ?? join(targetDir, 'debug', 'analytics-service');
const SECANTUSD = process.env.SECANTUSD_BIN;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const POLL_MS = 50;
const DATABASE = 'tracker_browser_test';
// The site of the control events, which prove that nothing more is on its way.
const CONTROL_SITE = 'control-site';

const children = [];
let workDir;
let apiPort;
let pagePort;
let pageServer;
let browser;
let mongo;
let serviceLog = '';
// Script errors on any test page: the tracker must never throw.
const pageErrors = [];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns something truthy, or fails after `ms`. */
async function eventually(what, check, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) {
      const tail = serviceLog.trim().split('\n').slice(-20).join('\n');
      throw new Error(`timed out waiting for ${what}; the last lines of the service and database logs:\n${tail}`);
    }
    await sleep(50);
  }
}

function run(program, args, options = {}) {
  const child = spawn(program, args, { stdio: ['ignore', 'ignore', 'pipe'], ...options });
  child.stderr.on('data', (chunk) => { serviceLog += chunk; });
  children.push(child);
  return child;
}

// One page for every test: which <script> attributes it carries comes from the
// query (?v=…), so the path the tracker reports is the page's own.
const VARIANTS = {
  spa: 'data-site="test-site" data-include-localhost',
  local: 'data-site="local-site"',
  public: 'data-site="public-site"',
  dnt: 'data-site="dnt-site" data-include-localhost data-respect-dnt',
  'dnt-ignored': 'data-site="dnt-ignored-site" data-include-localhost',
  nosite: 'data-include-localhost',
};

function page(variant) {
  const attributes = VARIANTS[variant];
  return `<!doctype html><html><head><meta charset="utf-8"><title>${variant}</title>
<script defer src="http://127.0.0.1:${apiPort}/script.js" ${attributes}></script>
</head><body><h1>Test page: ${variant}</h1></body></html>`;
}

before(async () => {
  assert.ok(SECANTUSD, 'SECANTUSD_BIN must point at secantusd-rs (scripts/test-browser.sh sets it)');
  workDir = mkdtempSync(join(tmpdir(), 'analytics-desk-browser-'));

  const dbPort = await freePort();
  run(SECANTUSD, ['--port', String(dbPort), '--storage-path', join(workDir, 'db'), '--cache-size', '256M']);
  await eventually('secantusd-rs to listen', () => answers(dbPort), 60000);
  const mongoUrl = `mongodb://127.0.0.1:${dbPort}/${DATABASE}`;

  apiPort = await freePort();
  // A working dir of its own, so no .env of the developer's is read.
  run(SERVICE, ['all'], {
    cwd: workDir,
    env: { PATH: process.env.PATH, HOME: workDir, RUST_LOG: 'info', PORT: String(apiPort), HOST: '127.0.0.1', MONGO_URL: mongoUrl, POLL_MS: String(POLL_MS) },
  });
  await eventually('the service to answer', async () => {
    try {
      return (await fetch(`http://127.0.0.1:${apiPort}/stats?site_id=none`)).ok;
    } catch {
      return false;
    }
  }, 60000);

  pagePort = await freePort();
  pageServer = createServer((request, response) => {
    const url = new URL(request.url, 'http://page');
    const variant = url.searchParams.get('v') ?? 'spa';
    if (url.pathname === '/favicon.ico' || !(variant in VARIANTS)) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page(variant));
  });
  await new Promise((resolve) => pageServer.listen(pagePort, '127.0.0.1', resolve));

  mongo = new MongoClient(mongoUrl, { serverSelectionTimeoutMS: 5000 });
  await mongo.connect();

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // A public-looking host name for the page, to show that only local pages are ignored.
      '--host-resolver-rules=MAP shop.test 127.0.0.1',
      // Headless Chromium says "HeadlessChrome", which the API drops as a bot (issue #14):
      // present this test's browser as the desktop Chrome it stands for.
      '--user-agent=Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36',
    ],
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  await mongo?.close().catch(() => {});
  pageServer?.close();
  for (const child of children.reverse()) {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await Promise.race([new Promise((r) => child.once('exit', r)), sleep(10000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

/** Every event stored for `site` (processed or still queued), oldest first. */
async function storedEvents(site) {
  const db = mongo.db(DATABASE);
  // The worker may move an event between two reads: `events` is read again after
  // the queue, and an event found twice (the same _id) is counted once.
  const found = new Map();
  for (const collection of ['events', 'events_queue', 'events']) {
    for (const event of await db.collection(collection).find({ site_id: site }).toArray()) found.set(String(event._id), event);
  }
  return [...found.values()].sort((a, b) => a.ingested_at - b.ingested_at || String(a._id).localeCompare(String(b._id)));
}

async function processedCount(site) {
  return mongo.db(DATABASE).collection('events').countDocuments({ site_id: site });
}

/**
 * A fresh page (own context: no shared cache) that records every request to
 * /event, in the order the page made them, and which of them have been answered.
 */
async function openPage({ initScript } = {}) {
  const context = await browser.newContext();
  if (initScript) await context.addInitScript(initScript);
  const tab = await context.newPage();
  const posts = [];
  const answered = new Set();
  tab.on('request', (request) => {
    if (request.url().endsWith('/event')) posts.push({ method: request.method(), body: request.postData(), request });
  });
  const settle = (request) => answered.add(request);
  tab.on('requestfinished', settle);
  tab.on('requestfailed', settle);
  tab.on('pageerror', (error) => pageErrors.push(error.message));
  return { context, tab, posts, answered };
}

let controls = 0;

/**
 * Proves that the page has nothing more on its way to /event, instead of waiting
 * a while for stragglers: the page sends a control event after everything else
 * (a beacon, as the tracker sends its own, to CONTROL_SITE), which must arrive
 * and be the page's last request; then every request it made before must have
 * been answered (so stored, if the API took it). Removes the control from `posts`.
 */
async function controlArrives({ tab, posts, answered }) {
  const path = `/control/${++controls}`;
  const body = JSON.stringify({ site_id: CONTROL_SITE, event_type: 'control', path });
  const sent = await tab.evaluate(([url, body]) => navigator.sendBeacon(url, body), [`http://127.0.0.1:${apiPort}/event`, body]);
  assert.ok(sent, 'the browser took the control beacon');
  const stored = async () => (await storedEvents(CONTROL_SITE)).filter((e) => e.path === path).length;
  await eventually(`the control event ${path}`, async () => (await stored()) > 0);
  // The page's requests are reported in the order it made them: once the
  // control's is, so is every one before it.
  const isControl = (post) => post.body === body;
  const control = await eventually(`the control request ${path}`, () => posts.find(isControl));
  await eventually(`an answer to every request before ${path}`, () => posts.every((p) => answered.has(p.request)));
  const made = posts.map(({ method, body }) => ({ method, body }));
  assert.equal(posts.indexOf(control), posts.length - 1, `the control is the page's last request: ${JSON.stringify(made)}`);
  assert.equal(await stored(), 1, 'the control event stored once');
  posts.pop();
  for (const post of posts) delete post.request;
}

/** The anonymous id the server should derive: see src-tauri/src/ingest/anonymous_id.rs. */
function expectedUserId(salt, site, ip, userAgent) {
  const hash = createHash('sha256');
  hash.update(salt);
  hash.update(site);
  hash.update(Buffer.from([0]));
  hash.update(ip);
  hash.update(Buffer.from([0]));
  hash.update(userAgent);
  return hash.digest('hex').slice(0, 32);
}

test('page views on load and SPA navigation, and custom events, stored exactly once with one anonymous id', async () => {
  const page = await openPage();
  const { context, tab, posts } = page;
  await tab.goto(`http://127.0.0.1:${pagePort}/?v=spa`);
  await tab.waitForFunction(() => window.analytics && typeof window.analytics.track === 'function');
  const processed = (n) => eventually(`${n} processed events`, async () => (await processedCount('test-site')) >= n);
  await processed(1);

  // A router's navigations: two pushes, a replace to the same path (not a new
  // view), then the back button (popstate).
  // Each step waits for its event, so that arrival order is navigation order.
  await tab.evaluate(() => history.pushState({}, '', '/pricing'));
  await processed(2);
  await tab.evaluate(() => history.pushState({}, '', '/docs'));
  await tab.evaluate(() => history.replaceState({ scrolled: true }, '', '/docs'));
  await processed(3);
  await tab.evaluate(() => history.back());
  await tab.waitForFunction(() => location.pathname === '/pricing');
  await processed(4);
  await tab.evaluate(() => window.analytics.track('signup'));
  await processed(5);
  await tab.evaluate(() => window.analytics.track('download', { path: '/files/guide.pdf' }));
  await processed(6);
  // Anything extra would be on its way before the control event.
  await controlArrives(page);

  const events = await storedEvents('test-site');
  assert.deepEqual(
    events.map((e) => [e.event_type, e.path]),
    [
      ['page_view', '/'],
      ['page_view', '/pricing'],
      ['page_view', '/docs'],
      ['page_view', '/pricing'],
      ['signup', '/pricing'],
      ['download', '/files/guide.pdf'],
    ],
  );
  assert.equal(posts.length, 6, `one request per event: ${JSON.stringify(posts)}`);
  assert.ok(posts.every((p) => p.method === 'POST' && !JSON.parse(p.body).user_id), 'no user_id from the browser');
  const eventIds = events.map((e) => e.event_id);
  assert.equal(new Set(eventIds).size, 6, `one event_id per event, stored: ${eventIds}`);
  assert.ok(eventIds.every((id) => /^\d+(-\d+){3}$/.test(id)), `random event_ids: ${eventIds}`);

  const userIds = new Set(events.map((e) => e.user_id));
  assert.equal(userIds.size, 1, `one visitor: ${[...userIds]}`);
  const [userId] = userIds;
  assert.match(userId, /^[0-9a-f]{32}$/);
  const today = new Date().toISOString().slice(0, 10);
  const salt = await mongo.db(DATABASE).collection('salts').findOne({ _id: today });
  const userAgent = await tab.evaluate(() => navigator.userAgent);
  assert.equal(userId, expectedUserId(salt.salt.buffer, 'test-site', '127.0.0.1', userAgent));
  assert.ok(!JSON.stringify(events).includes('127.0.0.1'), 'no address stored');
  assert.deepEqual(await context.cookies(), [], 'no cookie');
  assert.deepEqual(pageErrors.splice(0), [], 'no script error on the page');

  const stats = await (await fetch(`http://127.0.0.1:${apiPort}/stats?site_id=test-site`)).json();
  assert.deepEqual(stats, {
    total_events: 6,
    unique_users: 1,
    top_paths: [
      { path: '/pricing', count: 3 },
      { path: '/', count: 1 },
      { path: '/docs', count: 1 },
      { path: '/files/guide.pdf', count: 1 },
    ],
    events_by_type: [
      { event_type: 'page_view', count: 4 },
      { event_type: 'download', count: 1 },
      { event_type: 'signup', count: 1 },
    ],
  });
  await context.close();
});

test('nothing is sent from a local page without data-include-localhost, under DNT with data-respect-dnt, or without data-site', async () => {
  const dnt = () => Object.defineProperty(Navigator.prototype, 'doNotTrack', { get: () => '1' });
  const gpc = () => Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true });
  const silent = [
    { url: `http://127.0.0.1:${pagePort}/?v=local`, site: 'local-site' },
    { url: `http://localhost:${pagePort}/?v=local`, site: 'local-site' },
    { url: `http://127.0.0.1:${pagePort}/?v=dnt`, site: 'dnt-site', initScript: dnt },
    { url: `http://127.0.0.1:${pagePort}/?v=dnt`, site: 'dnt-site', initScript: gpc },
    { url: `http://127.0.0.1:${pagePort}/?v=nosite`, site: null },
  ];
  // Controls, so that the silence above is the rules' doing: a public host name
  // needs no opt-in, and DNT is ignored when the site did not opt in.
  const heard = [
    { url: `http://shop.test:${pagePort}/?v=public`, site: 'public-site' },
    { url: `http://127.0.0.1:${pagePort}/?v=dnt-ignored`, site: 'dnt-ignored-site', initScript: dnt },
  ];
  const silentPosts = [];
  for (const { url, initScript } of silent) {
    const page = await openPage({ initScript });
    const { context, tab, posts } = page;
    await tab.goto(url);
    await tab.waitForFunction(() => window.analytics);
    await tab.evaluate(() => history.pushState({}, '', '/next'));
    await tab.evaluate(() => window.analytics.track('signup'));
    // Anything the tracker sent would be on its way before the control event.
    await controlArrives(page);
    silentPosts.push(...posts);
    await context.close();
  }
  for (const { url, site, initScript } of heard) {
    const page = await openPage({ initScript });
    const { context, tab } = page;
    await tab.goto(url);
    await tab.waitForFunction(() => window.analytics);
    await eventually(`${site}'s page view`, async () => (await processedCount(site)) === 1);
    await controlArrives(page);
    assert.equal((await storedEvents(site)).length, 1, `one page view stored for ${site}, nothing more`);
    await context.close();
  }

  assert.deepEqual(silentPosts, [], 'no request to /event');
  for (const site of ['local-site', 'dnt-site']) {
    assert.deepEqual(await storedEvents(site), [], `nothing stored for ${site}`);
  }
  const all = await mongo.db(DATABASE).collection('events').distinct('site_id');
  assert.ok(!all.includes(null) && !all.includes(''), JSON.stringify(all));
  assert.equal((await storedEvents('public-site'))[0].path, '/');
  assert.deepEqual(pageErrors.splice(0), [], 'no script error on any page');
});
