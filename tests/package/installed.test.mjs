// The installed package, used as a normal user would (issue #16): run by
// scripts/test-package.sh as a fresh non-root user, after `apt install ./*.deb`.
// Launches /usr/bin/analytics-desk through tauri-driver under Xvfb, with the
// defaults (no .env, no settings): the first-run flow's Start serves on port
// 1000 through the packaged port helper; a page on localhost carrying the
// <script> tag the flow gives sends a page view that the window shows; closing
// the window keeps the API up; the tray's Quit stops the API and the database.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync, readdirSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:http';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebDriver, pngInk } from '../e2e/webdriver.mjs';
import { answers, freePort } from '../common/net.mjs';

const tests = join(dirname(fileURLToPath(import.meta.url)), '..');
const APP = process.env.APP_BINARY ?? '/usr/bin/analytics-desk';
const TAURI_DRIVER = process.env.TAURI_DRIVER ?? 'tauri-driver';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const screenshots = process.env.SCREENSHOT_DIR ?? join(tests, '..', 'screenshots');
const API_PORT = 1000;
const DB_PORT = 27017; // the default MONGO_URL's
const SITE = 'my-blog';

const children = [];
let driver;
let pageServer;

function run(program, args, options) {
  const child = spawn(program, args, { stdio: ['ignore', 'inherit', 'inherit'], ...options });
  children.push(child);
  return child;
}

/** Pids of processes whose executable is `path`. */
function pidsOf(path) {
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    try {
      if (readlinkSync(`/proc/${entry}/exe`) === path) pids.push(Number(entry));
    } catch {}
  }
  return pids;
}

async function saveScreenshot(name) {
  const drawn = (ink) => ink.inked > 0.03 && ink.colours > 24;
  let png;
  // The shot shows the last painted frame: wait for two frames after the DOM changed.
  await driver.asyncScript(
    'const done = arguments[arguments.length - 1]; requestAnimationFrame(() => requestAnimationFrame(() => done(true)));',
  );
  await driver
    .until(`screenshot ${name} drawn`, async () => {
      png = await driver.screenshot();
      return drawn(pngInk(png));
    }, 30000)
    .catch(() => {});
  mkdirSync(screenshots, { recursive: true });
  writeFileSync(join(screenshots, `${name}.png`), png);
  assert.ok(drawn(pngInk(png)), `screenshot ${name} looks blank`);
}

/** What the window's backend answers to a command, as the UI calls it. */
async function invoke(command, args = {}) {
  const value = await driver.asyncScript(
    'const [c, a, done] = arguments; window.__TAURI__.core.invoke(c, a).then((v) => done({ ok: v }), (e) => done({ error: String(e) }));',
    command,
    args,
  );
  if (value.error !== undefined) throw new Error(`${command}: ${value.error}`);
  return value.ok;
}

/** Polls `check` every 100 ms until it is truthy, for at most `ms`. */
async function until(what, check, ms = 30000) {
  const deadline = Date.now() + ms;
  for (let i = 0; i < Math.ceil(ms / 100) + 10 && Date.now() < deadline; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

before(async () => {
  assert.notEqual(process.getuid(), 0, 'this test runs as a normal user');
  assert.equal(await answers(API_PORT), false, 'port 1000 is free before the app starts');
  assert.equal(await answers(DB_PORT), false, 'nothing answers on 27017: the app must launch its own database');
  const caps = spawnSync('/usr/sbin/getcap', ['/usr/bin/analytics-bind-port'], { encoding: 'utf8' });
  assert.match(caps.stdout, /cap_net_bind_service/, `the package gave the helper its capability: ${caps.stdout}${caps.stderr}`);

  const env = { ...process.env, RUST_LOG: 'info' };
  const xvfb = run('Xvfb', ['-displayfd', '3', '-screen', '0', '1400x1000x24', '-nolisten', 'tcp'], {
    stdio: ['ignore', 'inherit', 'inherit', 'pipe'],
  });
  env.DISPLAY = await new Promise((resolve, reject) => {
    let written = '';
    const timer = setTimeout(() => reject(new Error('Xvfb gave no display within 30 s')), 30000);
    xvfb.stdio[3].on('data', (chunk) => {
      written += chunk;
      if (written.includes('\n')) {
        clearTimeout(timer);
        resolve(`:${written.trim()}`);
      }
    });
  });
  const driverPort = await freePort();
  const nativePort = await freePort();
  run(TAURI_DRIVER, ['--port', String(driverPort), '--native-port', String(nativePort), '--native-driver', '/usr/bin/WebKitWebDriver'], { env });
  driver = new WebDriver(`http://127.0.0.1:${driverPort}`);
  await driver.until('tauri-driver', async () => (await fetch(`${driver.base}/status`)).ok);
  await driver.start({ browserName: 'wry', 'tauri:options': { application: APP } });
});

after(async () => {
  await driver?.quit();
  pageServer?.close();
  for (const pid of pidsOf(APP)) process.kill(pid, 'SIGTERM');
  for (const child of children.reverse()) child.kill('SIGTERM');
});

// Rendered, not just present (a fixed overlay has no offsetParent, so its boxes are asked).
const shown = (id) => driver.script(`const n = document.getElementById(${JSON.stringify(id)}); return Boolean(n) && !n.hidden && n.getClientRects().length > 0;`);

test('a normal user installs the package, clicks Start and collects on localhost:1000', async (t) => {
  let scriptTag;

  await t.test('the first run offers port 1000, and Start serves it with nothing typed', async () => {
    await driver.until('the first-run flow', () => shown('first-run'), 60000);
    assert.equal(await driver.script("return document.getElementById('first-run-port').value"), '1000');
    await saveScreenshot('installed-1-first-run');
    await driver.click('#first-run-start');
    await driver.until('the site step, or an error', async () =>
      (await shown('first-run-step-site')) || (await driver.text('#first-run-port-error')).trim() !== '', 90000);
    assert.equal((await driver.text('#first-run-port-error')).trim(), '', 'Start on port 1000 succeeded');
    const snapshot = await invoke('get_snapshot');
    assert.equal(snapshot.api.state, 'running');
    assert.match(snapshot.api_url, /:1000$/);
    const health = await fetch(`http://localhost:${API_PORT}/health`);
    assert.equal(health.status, 200, 'the API answers on port 1000');
    assert.ok(await answers(DB_PORT), 'the app launched its own database');
  });

  await t.test('a first site gives the script tag to paste', async () => {
    await driver.type('#first-run-site-name', 'My Blog');
    await driver.until('the site_id', async () => (await driver.text('#first-run-site-id')) === SITE);
    await driver.click('#first-run-add-site');
    await driver.until('the script step', () => shown('first-run-step-script'));
    // The page below is served from localhost: count it, as a developer would.
    await driver.click('#first-run-include-localhost');
    await driver.until('the tag for localhost pages', async () => /data-include-localhost/.test(await driver.text('#first-run-script-tag')));
    scriptTag = await driver.text('#first-run-script-tag');
    assert.match(scriptTag, new RegExp(`data-site="${SITE}".*:1000/script\\.js`));
    assert.equal(await driver.script("return document.getElementById('first-run-waiting').dataset.state"), 'waiting');
  });

  await t.test('a page on localhost with that tag, in Chromium, sends a page view the window shows', async () => {
    const page = `<!doctype html><html><head><title>My blog</title>${scriptTag}</head><body><h1>Hello</h1></body></html>`;
    pageServer = createServer((request, response) => {
      response.writeHead(200, { 'content-type': 'text/html' });
      response.end(page);
    });
    const pagePort = await freePort();
    await new Promise((resolve) => pageServer.listen(pagePort, '127.0.0.1', resolve));

    const { chromium } = await import(join(tests, 'browser', 'node_modules', 'playwright-core', 'index.mjs'));
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      chromiumSandbox: false,
      // Headless Chromium says "HeadlessChrome", which the API drops as a bot:
      // present it as the desktop Chrome a visitor would use.
      args: ['--headless=new', '--user-agent=Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36'],
    });
    try {
      const tab = await browser.newPage();
      await tab.goto(`http://localhost:${pagePort}/blog/first-post`);
      await driver.until('"waiting" turned green', async () =>
        (await driver.script("return document.getElementById('first-run-waiting').dataset.state")) === 'arrived', 60000);
    } finally {
      await browser.close();
    }
    await driver.until('processed', async () => /processed/i.test(await driver.text('#first-run-waiting')), 60000);
    await saveScreenshot('installed-2-first-page-view');
    const stats = await invoke('site_stats', { siteId: SITE });
    assert.equal(stats.total_events, 1, `one page view: ${JSON.stringify(stats)}`);
    assert.deepEqual(stats.top_paths.map((row) => row.path), ['/blog/first-post']);

    await driver.click('#first-run-next');
    await driver.until('the finish step', () => shown('first-run-step-finish'));
    await driver.click('#first-run-finish');
    await driver.until('the flow closed', async () => !(await shown('first-run')));
    await driver.click('#tab-sites');
    await driver.until('the site in the Sites tab', async () => (await driver.text('#view-sites')).includes(SITE));
    await saveScreenshot('installed-3-sites');
  });

  await t.test('closing the window keeps collecting; Quit stops the API and the database', async () => {
    const [pid] = pidsOf(APP);
    assert.ok(pid, 'the app runs');
    // The window's own close(), as its title bar's X does (WebDriver's "close
    // window" would end the session, and tauri-driver would kill the app).
    await driver.script('window.__TAURI__.window.getCurrentWindow().close(); return true;');
    await driver.until('the first-close notice', () => shown('background-notice'));
    await driver.script("document.getElementById('background-notice-ok').click(); return true;");
    await until('the notice recorded', async () => (await invoke('get_preferences')).background_notice_shown === true);
    for (let i = 0; i < 3; i++) {
      const health = await fetch(`http://localhost:${API_PORT}/health`);
      assert.equal(health.status, 200, 'the API still answers with the window closed');
    }
    assert.ok(pidsOf(APP).includes(pid), 'the app lives on in the background');

    // The tray's Quit (through the command its menu item calls: Xvfb has no tray host).
    await invoke('tray_action', { id: 'quit' }).catch(() => {});
    await until('the app gone', async () => !pidsOf(APP).includes(pid), 60000);
    assert.equal(await answers(API_PORT), false, 'port 1000 is closed');
    assert.equal(await answers(DB_PORT), false, 'the managed database stopped');
    assert.deepEqual(pidsOf('/usr/bin/secantusd-rs'), [], 'no database process is left');
  });
});
