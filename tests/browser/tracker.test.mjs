// The tracker script (GET /script.js) in a real browser: headless Debian chromium
// driven by playwright-core loads test pages from a small web server on another
// origin, navigates like a single-page app and fires custom events; the test
// then reads exactly what the real analytics-service stored (over a SecantusDB
// server of its own) and what GET /stats says. The tests of issue #14's fields
// and extensions point the tracker (data-api) at a small receiver of their own
// and check the exact bodies it sends.
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
let receiverPort;
let receiverServer;
// The bodies the receiver got, in arrival order (cleared by each test using it).
const received = [];
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
  // Issue #14: the tracker sending to the receiver, with the extensions.
  bodies: () => `data-site="body-site" data-include-localhost data-api="http://127.0.0.1:${receiverPort}/"`,
  links: () => `data-site="body-site" data-include-localhost data-api="http://127.0.0.1:${receiverPort}"`,
  missing: () => `data-site="body-site" data-include-localhost data-api="http://127.0.0.1:${receiverPort}"`,
  stored: 'data-site="stored-site" data-include-localhost',
  // Issue #16: excluding your own visits (/exclude-me's cookie, the localStorage flag).
  excluded: 'data-site="excluded-site" data-include-localhost',
  // No tracker: a page on another site linking to ?to=.
  source: null,
};

// Extension scripts and content of the variants that have them.
const EXTRAS = {
  links: {
    extensions: ['script.outbound.js', 'script.file-downloads.js'],
    html: () => `<a id="in" href="/nowhere/inside">inside</a>
<a id="page" href="/nowhere/page.html">a page</a>
<a id="out" href="http://shop.test:${pagePort}/nowhere/out?x=1">elsewhere</a>
<a id="pdf" href="/nowhere/guide.pdf?v=2">the guide</a>
<a id="zip" href="http://shop.test:${pagePort}/nowhere/app.ZIP"><span id="zip-inner">the app</span></a>`,
  },
  missing: { extensions: ['script.404.js'], status: 404 },
  source: { html: (url) => `<a id="go" href="${url.searchParams.get('to')}">go</a>` },
};

function page(variant, url) {
  const attributes = typeof VARIANTS[variant] === 'function' ? VARIANTS[variant]() : VARIANTS[variant];
  const extra = EXTRAS[variant] ?? {};
  const api = `http://127.0.0.1:${apiPort}`;
  const scripts = attributes === null ? [] : [`<script defer src="${api}/script.js" ${attributes}></script>`,
    ...(extra.extensions ?? []).map((name) => `<script defer src="${api}/${name}"></script>`)];
  const body = extra.html ? extra.html(url) : `<h1>Test page: ${variant}</h1>`;
  return `<!doctype html><html><head><meta charset="utf-8"><title>${variant}</title>
${scripts.join('\n')}
</head><body>${body}</body></html>`;
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
    // Where the test pages' links lead: no content, so the page stays.
    if (url.pathname.startsWith('/nowhere/')) {
      response.writeHead(204).end();
      return;
    }
    if (url.pathname === '/favicon.ico' || !(variant in VARIANTS)) {
      response.writeHead(404).end();
      return;
    }
    const status = EXTRAS[variant]?.status ?? 200;
    response.writeHead(status, { 'content-type': 'text/html; charset=utf-8' }).end(page(variant, url));
  });
  await new Promise((resolve) => pageServer.listen(pagePort, '127.0.0.1', resolve));

  // A stand-in for POST /event that records each body and takes it.
  receiverPort = await freePort();
  receiverServer = createServer((request, response) => {
    let body = '';
    request.setEncoding('utf8');
    request.on('data', (chunk) => { body += chunk; });
    request.on('end', () => {
      if (request.method === 'POST' && request.url === '/event') received.push(body);
      response.writeHead(200, { 'access-control-allow-origin': '*', 'content-type': 'application/json' });
      response.end('{"status":"queued"}');
    });
  });
  await new Promise((resolve) => receiverServer.listen(receiverPort, '127.0.0.1', resolve));

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
  receiverServer?.close();
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
  // The page's own host name is stored (it is 127.0.0.1 here); the client's address never is.
  const withoutHostname = events.map(({ hostname, ...rest }) => rest);
  assert.ok(!JSON.stringify(withoutHostname).includes('127.0.0.1'), 'no address stored');
  assert.deepEqual(await context.cookies(), [], 'no cookie');
  assert.deepEqual(pageErrors.splice(0), [], 'no script error on the page');

  const answer = await (await fetch(`http://127.0.0.1:${apiPort}/stats?site_id=test-site`)).json();
  const { total_events, unique_users, top_paths, events_by_type } = answer;
  assert.deepEqual({ total_events, unique_users, top_paths, events_by_type }, {
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
    const { context, tab, posts } = page;
    await tab.goto(url);
    await tab.waitForFunction(() => window.analytics);
    await eventually(`${site}'s page view`, async () => (await processedCount(site)) === 1);
    await controlArrives(page);
    assert.deepEqual(posts.map((p) => JSON.parse(p.body).site_id), [site], `one page view sent for ${site}, nothing more`);
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

// ---- Issue #14: what the tracker and its extensions send ----

/**
 * The bodies a page sent to the receiver, in the order it sent them, once
 * nothing more is on its way (a control beacon, sent last, arrived, and every
 * request before it was answered); each event_id checked (random, unique) and
 * removed, so that the rest can be compared exactly.
 */
async function bodiesSent({ tab, posts, answered }) {
  const control = JSON.stringify({ site_id: CONTROL_SITE, event_type: 'control', path: `/control/${++controls}` });
  const sent = await tab.evaluate(([url, body]) => navigator.sendBeacon(url, body), [`http://127.0.0.1:${receiverPort}/event`, control]);
  assert.ok(sent, 'the browser took the control beacon');
  await eventually('the control at the receiver', () => received.includes(control));
  const isControl = (post) => post.body === control;
  await eventually('the control request', () => posts.find(isControl));
  await eventually('an answer to every request before the control', () => posts.every((p) => answered.has(p.request)));
  assert.equal(posts.findIndex(isControl), posts.length - 1, 'the control is the last request');
  posts.pop();
  const bodies = posts.map((p) => p.body);
  assert.ok(posts.every((p) => p.method === 'POST'));
  assert.deepEqual(received.filter((b) => b !== control).sort(), [...bodies].sort(), 'the receiver got exactly what the page sent');
  const events = bodies.map((body) => JSON.parse(body));
  const ids = events.map((e) => e.event_id);
  assert.ok(ids.every((id) => /^\d+(-\d+){3}$/.test(id)), `random event_ids: ${ids}`);
  assert.equal(new Set(ids).size, ids.length, `one event_id per event: ${ids}`);
  for (const event of events) delete event.event_id;
  return events;
}

test('each event sends url and screen_width, the first page view of a load the referrer, custom events their props', async () => {
  received.length = 0;
  const page = await openPage();
  const { context, tab } = page;
  // Arrive by a link from another site, so that the page has a referrer.
  const landing = `http://127.0.0.1:${pagePort}/landing?v=bodies&utm_source=news`;
  await tab.goto(`http://shop.test:${pagePort}/from?v=source&to=${encodeURIComponent(landing)}`);
  await Promise.all([tab.waitForURL(landing), tab.click('#go')]);
  await tab.waitForFunction(() => window.analytics);
  assert.equal(await tab.evaluate(() => document.referrer), `http://shop.test:${pagePort}/`);

  // A single-page app's navigations: a new path is a view (no referrer), a new
  // query on the same path is not.
  await tab.evaluate(() => history.pushState({}, '', '/pricing?plan=pro'));
  await tab.evaluate(() => history.replaceState({}, '', '/pricing?plan=team'));
  await tab.evaluate(() => window.analytics.track('signup', { props: { plan: 'pro', seats: 3 } }));
  const many = Object.fromEntries(Array.from({ length: 35 }, (_, i) => [`k${i}`, `v${i}`]));
  await tab.evaluate((props) => window.analytics.track('many props', { props }), many);
  await tab.evaluate(() => window.analytics.track('download', { path: '/files/guide.pdf', props: {} }));
  await tab.evaluate(() => history.back());
  await tab.waitForFunction(() => location.pathname === '/landing');
  const events = await bodiesSent(page);

  const screen_width = await tab.evaluate(() => screen.width);
  assert.ok(Number.isInteger(screen_width) && screen_width > 0, `screen.width ${screen_width}`);
  const at = (path) => `http://127.0.0.1:${pagePort}${path}`;
  const common = { site_id: 'body-site', screen_width };
  const first30 = Object.fromEntries(Object.entries(many).slice(0, 30));
  assert.deepEqual(events, [
    { ...common, event_type: 'page_view', path: '/landing', url: landing, referrer: `http://shop.test:${pagePort}/` },
    { ...common, event_type: 'page_view', path: '/pricing', url: at('/pricing?plan=pro') },
    { ...common, event_type: 'signup', path: '/pricing', url: at('/pricing?plan=team'), props: { plan: 'pro', seats: '3' } },
    { ...common, event_type: 'many props', path: '/pricing', url: at('/pricing?plan=team'), props: first30 },
    { ...common, event_type: 'download', path: '/files/guide.pdf', url: at('/pricing?plan=team') },
    // Back to the landing page: a view of its own, without the load's referrer.
    { ...common, event_type: 'page_view', path: '/landing', url: landing },
  ]);
  assert.deepEqual(pageErrors.splice(0), [], 'no script error on the page');
  await context.close();
});

test('the extensions send outbound link clicks and file downloads with their url, and 404 pages with their path', async () => {
  received.length = 0;
  const page = await openPage();
  const { context, tab } = page;
  const links = `http://127.0.0.1:${pagePort}/links?v=links`;
  await tab.goto(links);
  await tab.waitForFunction(() => window.analytics);
  // Links that are neither outbound nor files send nothing; the others send
  // their event (a middle click too: a new tab), a zip on another host both.
  for (const selector of ['#in', '#page', '#out', '#pdf', '#zip-inner']) await tab.click(selector);
  await tab.click('#out', { button: 'middle' });
  const events = await bodiesSent(page);

  const screen_width = await tab.evaluate(() => screen.width);
  const common = { site_id: 'body-site', path: '/links', url: links, screen_width };
  const outbound = (url) => ({ ...common, event_type: 'Outbound Link: Click', props: { url } });
  const download = (url) => ({ ...common, event_type: 'File Download', props: { url } });
  const out = `http://shop.test:${pagePort}/nowhere/out?x=1`;
  const zip = `http://shop.test:${pagePort}/nowhere/app.ZIP`;
  assert.deepEqual(events, [
    { ...common, event_type: 'page_view' },
    outbound(out),
    download(`http://127.0.0.1:${pagePort}/nowhere/guide.pdf?v=2`),
    outbound(zip),
    download(zip),
    outbound(out),
  ]);
  await context.close();

  // A "not found" page: its page view, then the 404 event with the path.
  received.length = 0;
  const missing = await openPage();
  const url = `http://127.0.0.1:${pagePort}/no/such/page?v=missing`;
  const response = await missing.tab.goto(url);
  assert.equal(response.status(), 404);
  await missing.tab.waitForFunction(() => window.analytics);
  const notFound = await bodiesSent(missing);
  const base = { site_id: 'body-site', path: '/no/such/page', url, screen_width };
  assert.deepEqual(notFound, [
    { ...base, event_type: 'page_view' },
    { ...base, event_type: '404', props: { path: '/no/such/page' } },
  ]);
  assert.deepEqual(pageErrors.splice(0), [], 'no script error on any page');
  await missing.context.close();
});

test('the server stores the tracker fields (referrer of the first view, props, hostname)', async () => {
  const page = await openPage();
  const { context, tab } = page;
  const landing = `http://127.0.0.1:${pagePort}/landing?v=stored&utm_source=news`;
  await tab.goto(`http://shop.test:${pagePort}/from?v=source&to=${encodeURIComponent(landing)}`);
  await Promise.all([tab.waitForURL(landing), tab.click('#go')]);
  await tab.waitForFunction(() => window.analytics);
  await eventually('the first page view', async () => (await processedCount('stored-site')) === 1);
  await tab.evaluate(() => window.analytics.track('signup', { props: { plan: 'pro' } }));
  await eventually('the custom event', async () => (await processedCount('stored-site')) === 2);
  await controlArrives(page);
  const events = await storedEvents('stored-site');
  assert.deepEqual(events.map((e) => e.event_type), ['page_view', 'signup']);
  assert.ok(events[0].referrer, `the first view's referrer is stored: ${JSON.stringify(events[0])}`);
  assert.equal(events[0].utm_source, 'news');
  assert.equal(events[0].hostname, '127.0.0.1');
  assert.deepEqual(events[1].props, { plan: 'pro' });
  assert.equal(events[0].props, undefined);
  assert.ok(!JSON.stringify(events).includes('utm_source=news'), 'the full URL is not stored');
  await context.close();
});

test('/exclude-me excludes this browser (its button, a cookie) and counts it again; the localStorage flag silences the tracker', async () => {
  const { context, tab, posts } = await openPage();
  const excludeMe = `http://127.0.0.1:${apiPort}/exclude-me`;
  /** Loads the tracked page; resolves once its page view was sent. */
  const pageView = async () => {
    const before = posts.length;
    await tab.goto(`http://127.0.0.1:${pagePort}/?v=excluded`);
    await eventually('the page view sent', () => posts[before]);
  };
  /** The events the API dropped as coming from an excluded browser (GET /metrics). */
  const droppedExcluded = async () => {
    const metrics = await (await fetch(`http://127.0.0.1:${apiPort}/metrics`)).text();
    const line = metrics.split('\n').find((l) => l.startsWith('analytics_events_dropped_total{') && l.includes('reason="excluded_browser"'));
    return line ? Number(line.trim().split(/\s+/).pop()) : 0;
  };

  // The page's own button, as a person clicks it (a real form post from the API's origin).
  await tab.goto(excludeMe);
  await tab.getByRole('button', { name: 'Exclude this browser' }).click();
  await tab.waitForURL(excludeMe);
  assert.match(await tab.textContent('body'), /This browser is excluded/);
  await pageView();
  await eventually('the page view dropped as from an excluded browser', async () => (await droppedExcluded()) === 1);
  assert.deepEqual(await storedEvents('excluded-site'), [], 'nothing stored from an excluded browser');

  await tab.goto(excludeMe);
  await tab.getByRole('button', { name: 'Count this browser again' }).click();
  await tab.waitForURL(excludeMe);
  assert.match(await tab.textContent('body'), /This browser is counted/);
  await pageView();
  await eventually('the page view stored once counted again', async () => (await storedEvents('excluded-site')).length === 1);
  await context.close();

  // The flag on the site's own origin: the tracker sends nothing at all.
  const flagged = await openPage({ initScript: "localStorage.setItem('analytics_desk_ignore', 'true')" });
  await flagged.tab.goto(`http://127.0.0.1:${pagePort}/?v=excluded&flag=1`);
  await flagged.tab.waitForFunction(() => window.analytics && typeof window.analytics.track === 'function');
  await flagged.tab.evaluate(() => window.analytics.track('signup'));
  await controlArrives(flagged);
  assert.deepEqual(flagged.posts.map((p) => p.body), [], 'no page view, no custom event');
  assert.equal((await storedEvents('excluded-site')).length, 1, 'still only the counted one');
  assert.equal(await droppedExcluded(), 1, 'and the one dropped before');
  await flagged.context.close();
});
