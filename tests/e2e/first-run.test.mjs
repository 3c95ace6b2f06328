// End-to-end test of the first-run flow in the real desktop window (Xvfb,
// tauri-driver, WebKitWebDriver), on a fresh config dir: the port (1000
// suggested; a free port >= 1024 is typed, as port 1000 needs the installed
// package's permission), a first site, its script tag with the API's real
// origin, a test event that turns "waiting" green, Finish; the next launch does
// not show the flow again; "Skip setup" marks it done too. Screenshots of each
// step: first-run-*.png.
//
// Run through scripts/test-desktop.sh, which builds the app and sets APP_BINARY
// and TAURI_DRIVER.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync, readdirSync, readlinkSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebDriver, pngInk } from './webdriver.mjs';
import { answers, freePort } from '../common/net.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const screenshots = process.env.SCREENSHOT_DIR ?? join(repo, 'target', 'e2e-screenshots');
const APP = process.env.APP_BINARY;
const TAURI_DRIVER = process.env.TAURI_DRIVER ?? 'tauri-driver';

const children = [];
let driver;
let apiPort;
let dbPort;
let workDir;

function run(program, args, options) {
  const child = spawn(program, args, { stdio: ['ignore', 'inherit', 'pipe'], ...options });
  child.stderr.on('data', (chunk) => process.stderr.write(chunk));
  children.push(child);
  return child;
}

/** The pid of the running app binary. */
function appPid() {
  for (const entry of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    try {
      if (readlinkSync(`/proc/${entry}/exe`) === APP) return Number(entry);
    } catch {}
  }
  return null;
}

async function saveScreenshot(name) {
  // A blank view is one colour (or nearly): fail on it (WebKit paints a moment later).
  const drawn = (ink) => ink.inked > 0.03 && ink.colours > 24;
  let png;
  let ink;
  // The shot shows the last painted frame: wait for two frames after the DOM changed.
  await driver.asyncScript(
    'const done = arguments[arguments.length - 1]; requestAnimationFrame(() => requestAnimationFrame(() => done(true)));',
  );
  await driver
    .until(`screenshot ${name} drawn`, async () => {
      png = await driver.screenshot();
      ink = pngInk(png);
      return drawn(ink);
    }, 30000)
    .catch(() => {});
  mkdirSync(screenshots, { recursive: true });
  writeFileSync(join(screenshots, `${name}.png`), png);
  assert.ok(ink && drawn(ink), `screenshot ${name} looks blank: ${JSON.stringify(ink)}`);
}

/** Calls a backend command from the page, as the UI does. */
async function command(name, args = {}) {
  const value = await driver.asyncScript(
    "const done = arguments[arguments.length - 1]; window.__TAURI__.core.invoke(arguments[0], arguments[1]).then((v) => done({ ok: v }), (e) => done({ error: String(e) }));",
    name,
    args,
  );
  if (value.error !== undefined) throw new Error(`${name}: ${value.error}`);
  return value.ok;
}

const shown = (id) => driver.script(`const e = document.getElementById('${id}'); return Boolean(e) && !e.hidden;`);
const value = (id) => driver.script(`return document.getElementById('${id}').value;`);
const dataset = (id, key) => driver.script(`return document.getElementById('${id}').dataset['${key}'];`);

async function launch() {
  await driver.start({ browserName: 'wry', 'tauri:options': { application: APP } });
  await driver.call('POST', driver.s('/window/rect'), { width: 1280, height: 860 }).catch(() => {});
  await driver.until('the window', () => driver.find('#start-all'));
  // The flow asked for the preferences (shown or not, from here on it is decided).
  await driver.until('the first-run check', async () => (await dataset('first-run', 'checked')) === 'true');
}

/** Quits the app as a desktop session does (SIGTERM), and waits for its database to stop. */
async function quitApp() {
  const pid = appPid();
  assert.ok(pid, 'the app process is found');
  process.kill(pid, 'SIGTERM');
  await driver.until('the app and its database gone', async () => !appPid() && !(await answers(dbPort)), 30000);
  await driver.quit();
}

before(async () => {
  assert.ok(APP, 'APP_BINARY must point at the built analytics-desk');
  const work = (workDir = mkdtempSync(join(tmpdir(), 'analytics-desk-first-run-')));
  apiPort = await freePort();
  dbPort = await freePort();
  // No PORT: the flow suggests the default (1000). The database on a free port.
  writeFileSync(join(work, '.env'), `MONGO_URL=mongodb://127.0.0.1:${dbPort}/first_run\nPOLL_MS=100\n`);
  const env = {
    ...process.env,
    HOME: join(work, 'home'),
    XDG_CONFIG_HOME: join(work, 'config'),
    XDG_DATA_HOME: join(work, 'data'),
    XDG_CACHE_HOME: join(work, 'cache'),
    RUST_LOG: 'info',
  };
  mkdirSync(env.HOME, { recursive: true });
  if (!env.DISPLAY) {
    // Xvfb picks a free display, and writes its number to fd 3 once it accepts clients.
    const xvfb = run('Xvfb', ['-displayfd', '3', '-screen', '0', '1400x1000x24', '-nolisten', 'tcp'], {
      stdio: ['ignore', 'inherit', 'pipe', 'pipe'],
    });
    const display = await new Promise((resolve, reject) => {
      let written = '';
      const timer = setTimeout(() => reject(new Error('Xvfb gave no display within 30 s')), 30000);
      xvfb.stdio[3].on('data', (chunk) => {
        written += chunk;
        if (written.includes('\n')) {
          clearTimeout(timer);
          resolve(written.trim());
        }
      });
      xvfb.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`Xvfb exited (${code})`));
      });
    });
    env.DISPLAY = `:${display}`;
  }
  const driverPort = await freePort();
  const nativePort = await freePort();
  run(TAURI_DRIVER, ['--port', String(driverPort), '--native-port', String(nativePort), '--native-driver', '/usr/bin/WebKitWebDriver'], { cwd: work, env });
  driver = new WebDriver(`http://127.0.0.1:${driverPort}`);
  await driver.until('tauri-driver', async () => (await fetch(`${driver.base}/status`)).ok);
});

after(async () => {
  const pid = appPid();
  if (pid) process.kill(pid, 'SIGTERM');
  await driver?.quit();
  for (const child of children.reverse()) child.kill('SIGTERM');
});

test('the first-run flow: port, site, script tag, first event, finish; not shown again', async (t) => {
  await t.test('a fresh start shows the flow with port 1000 suggested', async () => {
    await launch();
    assert.ok(await shown('first-run'), 'the first-run flow is shown');
    assert.ok(await shown('first-run-step-port'));
    assert.equal(await value('first-run-port'), '1000');
    assert.match(await driver.text('#first-run-port-help'), /below 1024/);
    await saveScreenshot('first-run-1-port');
  });

  await t.test('a bad port is refused with the engine\'s own message, and nothing starts', async () => {
    await driver.type('#first-run-port', '70000');
    await driver.click('#first-run-start');
    await driver.until('the port error', async () => /PORT.*1 to 65535/.test(await driver.text('#first-run-port-error')));
    assert.ok(await shown('first-run-step-port'), 'still on the port step');
    assert.equal((await command('get_snapshot')).api.state, 'stopped');
    assert.equal((await command('get_settings')).values.PORT, '1000', 'nothing saved');
  });

  await t.test('"Use 8000 instead" fills the port; the chosen port is saved and the service starts', async () => {
    await driver.click('#first-run-use-8000');
    assert.equal(await value('first-run-port'), '8000');
    // Port 1000 (and 8000, maybe taken here) is the installed package's test: a free port.
    await driver.type('#first-run-port', String(apiPort));
    await driver.click('#first-run-start');
    await driver.until('the site step', () => shown('first-run-step-site'), 60000);
    const snapshot = await command('get_snapshot');
    assert.equal(snapshot.api.state, 'running');
    assert.equal(snapshot.api_url, `http://localhost:${apiPort}`);
    assert.equal((await command('get_settings')).values.PORT, String(apiPort), 'saved through save_settings');
  });

  await t.test('a site name becomes its site_id; adding it shows the script tag with the real origin', async () => {
    await driver.type('#first-run-site-name', 'My Shop');
    await driver.until('the site_id shown', async () => (await driver.text('#first-run-site-id')) === 'my-shop');
    await saveScreenshot('first-run-2-site');
    await driver.click('#first-run-add-site');
    await driver.until('the script step', () => shown('first-run-step-script'));
    const tag = `<script defer data-site="my-shop" src="http://localhost:${apiPort}/script.js"></script>`;
    await driver.until('the script tag', async () => (await driver.text('#first-run-script-tag')) === tag);
    assert.equal(await dataset('first-run-waiting', 'state'), 'waiting');
    assert.match(await driver.text('#first-run-waiting'), /waiting for the first event/i);
    assert.deepEqual((await command('added_sites')).map((s) => [s.site_id, s.name]), [['my-shop', 'My Shop']]);
    await saveScreenshot('first-run-3-script-waiting');
  });

  await t.test('"Send a test event" goes through the API and "waiting" turns green', async () => {
    await driver.click('#first-run-send-test');
    await driver.until('the first event arrived', async () => (await dataset('first-run-waiting', 'state')) === 'arrived');
    assert.match(await driver.text('#first-run-waiting'), /first event received/i);
    assert.equal((await driver.text('#first-run-test-error')).trim(), '');
    await driver.until('processed', async () => /processed/i.test(await driver.text('#first-run-waiting')));
    await saveScreenshot('first-run-4-event-arrived');
  });

  await t.test('Finish saves the choices and first_run_done, and closes the flow', async () => {
    await driver.click('#first-run-next');
    await driver.until('the finish step', () => shown('first-run-step-finish'));
    assert.equal(await driver.script("return document.getElementById('first-run-start-on-login').checked"), false, 'off by default');
    assert.equal(await driver.script("return document.getElementById('first-run-start-service-on-open').checked"), false);
    await saveScreenshot('first-run-5-finish');
    await driver.click('#first-run-finish');
    await driver.until('the flow closed', async () => !(await shown('first-run')));
    const saved = JSON.parse(readFileSync(join(workDir, 'config', 'analytics-desk', 'preferences.json'), 'utf8'));
    assert.equal(saved.first_run_done, true);
    assert.equal(saved.start_on_login, false);
    assert.equal(saved.start_service_on_open, false);
  });

  await t.test('the next launch does not show the flow again', async () => {
    await quitApp();
    await launch();
    assert.equal(await shown('first-run'), false, 'the first-run flow stays hidden');
    assert.ok(await shown('view-overview'), 'the overview is what opens');
  });

  await t.test('"Skip setup" also marks the first run done', async () => {
    await quitApp();
    const file = join(workDir, 'config', 'analytics-desk', 'preferences.json');
    const kept = JSON.parse(readFileSync(file, 'utf8'));
    writeFileSync(file, JSON.stringify({ ...kept, first_run_done: false }));
    await launch();
    assert.ok(await shown('first-run'), 'shown again while not done');
    assert.equal(await value('first-run-port'), String(apiPort), 'the saved port is suggested');
    await driver.click('#first-run-skip');
    await driver.until('the flow closed', async () => !(await shown('first-run')));
    assert.equal(JSON.parse(readFileSync(file, 'utf8')).first_run_done, true);
  });
});
