// End-to-end test of the real desktop app: Xvfb, tauri-driver in front of
// WebKitWebDriver, a fresh config dir, and a MONGO_URL on a local port where
// nothing answers (so the app launches its own secantusd-rs sidecar). Drives the
// window like a person and saves screenshots of each view under target/.
//
// Run through scripts/test-desktop.sh, which builds the app and sets APP_BINARY
// and TAURI_DRIVER.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync, readdirSync, readlinkSync } from 'node:fs';
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
let sizeBeforeQuit;
let workDir;
let appEnv;

// Everything the app logs (its stderr reaches us through tauri-driver).
let appLog = '';

function run(program, args, options) {
  const child = spawn(program, args, { stdio: ['ignore', 'inherit', 'pipe'], ...options });
  child.stderr.on('data', (chunk) => {
    appLog += chunk;
    process.stderr.write(chunk);
  });
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
  // A blank view is one colour (or nearly): fail on it. WebKit paints what the
  // DOM already holds a moment later, so a blank shot is taken again (for a while).
  const drawn = (ink) => ink.inked > 0.03 && ink.colours > 24;
  let png;
  let ink;
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

/** The snapshot the window shows (the engine's status, counters and more), as the UI reads it. */
async function snapshot() {
  const value = await driver.asyncScript(
    "const done = arguments[arguments.length - 1]; window.__TAURI__.core.invoke('get_snapshot').then(done, (e) => done({ error: String(e) }));",
  );
  if (value && value.error) throw new Error(`get_snapshot: ${value.error}`);
  return value;
}

const digits = (text) => Number(String(text).replace(/[^0-9]/g, '') || NaN);

async function postEvent(event) {
  const response = await fetch(`http://127.0.0.1:${apiPort}/event`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(event),
  });
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { status: 'queued' });
}

before(async () => {
  assert.ok(APP, 'APP_BINARY must point at the built analytics-desk');
  const work = (workDir = mkdtempSync(join(tmpdir(), 'analytics-desk-e2e-')));
  apiPort = await freePort();
  dbPort = await freePort();
  // The first run is seeded from .env in the working directory.
  writeFileSync(join(work, '.env'), `PORT=${apiPort}\nMONGO_URL=mongodb://127.0.0.1:${dbPort}/e2e\nPOLL_MS=100\n`);
  // The first-run flow is tests/e2e/first-run.test.mjs's: done here, so it does not cover the window.
  mkdirSync(join(work, 'config', 'analytics-desk'), { recursive: true });
  writeFileSync(join(work, 'config', 'analytics-desk', 'preferences.json'), JSON.stringify({ first_run_done: true }));
  const env = {
    ...process.env,
    XDG_CONFIG_HOME: join(work, 'config'),
    XDG_DATA_HOME: join(work, 'data'),
    XDG_CACHE_HOME: join(work, 'cache'),
    RUST_LOG: 'info',
  };
  appEnv = env;
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
  // Both ports free ones, so that nothing else on the machine (another run) interferes.
  const driverPort = await freePort();
  const nativePort = await freePort();
  run(TAURI_DRIVER, ['--port', String(driverPort), '--native-port', String(nativePort), '--native-driver', '/usr/bin/WebKitWebDriver'], { cwd: work, env });
  driver = new WebDriver(`http://127.0.0.1:${driverPort}`);
  await driver.until('tauri-driver', async () => (await fetch(`${driver.base}/status`)).ok);
  await driver.start({ browserName: 'wry', 'tauri:options': { application: APP } });
  await driver.call('POST', driver.s('/window/rect'), { width: 1280, height: 860 }).catch(() => {});
});

after(async () => {
  await driver?.quit();
  for (const child of children.reverse()) child.kill('SIGTERM');
});

test('the desktop app runs the pipeline, shows it live, browses stats and applies settings', async (t) => {
  await t.test('opens on the overview with the service stopped', async () => {
    await driver.until('the window', () => driver.find('#start-all'));
    assert.match(await driver.call('GET', driver.s('/title')), /Analytics Desk/);
    await driver.until('status text', async () => /stopped/i.test(await driver.text('#api-status')));
    await saveScreenshot('1-overview-stopped');
  });

  await t.test('a second launch brings the first window forward and exits', async () => {
    assert.ok(process.env.DBUS_SESSION_BUS_ADDRESS, 'run under a D-Bus session (scripts/test-desktop.sh uses dbus-run-session)');
    const second = spawn(APP, [], { cwd: workDir, env: appEnv, stdio: 'ignore' });
    const exit = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve('still running after 15 s'), 15000);
      second.once('exit', (code) => {
        clearTimeout(timer);
        resolve(code);
      });
    });
    if (exit !== 0) second.kill('SIGKILL');
    assert.equal(exit, 0, 'the second instance handed over to the first and exited');
    assert.ok(await driver.find('#start-all'), 'the first window is still there');
  });

  await t.test('Start launches the local database, the API and the worker', async () => {
    await driver.click('#start-all');
    await driver.until('API running', async () => /running/i.test(await driver.text('#api-status')), 60000);
    await driver.until('worker running', async () => /running/i.test(await driver.text('#worker-status')));
    assert.match(await driver.text('#db-status'), /running|secantusd|mongod/i);
    assert.ok(await answers(dbPort), 'the managed database listens on the MONGO_URL port');
    assert.match(await driver.text('#api-url'), new RegExp(`${apiPort}`));
  });

  const sent = [];
  for (let i = 0; i < 24; i++) sent.push({ site_id: 'shop', event_type: 'page_view', path: ['/', '/pricing', '/docs', '/pricing'][i % 4], user_id: `u${i % 7}` });
  for (let i = 0; i < 5; i++) sent.push({ site_id: 'blog', event_type: 'page_view', path: `/post/${i}`, user_id: 'reader' });

  await t.test('queued events show as queue depth, then as processed totals', async () => {
    await driver.click('#stop-worker');
    await driver.until('worker stopped', async () => /stopped/i.test(await driver.text('#worker-status')));
    for (const event of sent) await postEvent(event);
    await driver.until('queue depth 29', async () => digits(await driver.text('#queue-depth')) === 29);

    await driver.click('#start-worker');
    await driver.until('queue drained', async () => digits(await driver.text('#queue-depth')) === 0);
    await driver.until('29 processed', async () => digits(await driver.text('#total-events')) === 29);
    const chart = await driver.script(
      "const c = document.querySelector('#pipeline-chart canvas'); return [typeof window.uPlot, c ? c.width * c.height : 0]",
    );
    assert.equal(chart[0], 'function', 'the chart library loaded');
    assert.ok(chart[1] > 10000, 'the live chart has a canvas');
    await saveScreenshot('2-overview-running');
  });

  await t.test('the Sites view lists sites and shows exact stats and top paths', async () => {
    await driver.click('#tab-sites');
    const row = await driver.until('site row', () => driver.find('.site-row[data-site="shop"]'));
    assert.ok(await driver.find('.site-row[data-site="blog"]'));
    await driver.clickElement(row);
    await driver.until('site totals', async () => digits(await driver.text('#site-total-events')) === 24);
    assert.equal(digits(await driver.text('#site-unique-users')), 7);
    await driver.until('top paths', async () => (await driver.findAll('#top-paths-table tbody tr')).length === 3);
    const paths = await driver.script(
      "return [...document.querySelectorAll('#top-paths-table tbody tr')].map(r => [r.querySelector('td.path').textContent.trim(), r.querySelector('td.count').textContent.trim()])",
    );
    assert.deepEqual(paths.map(([p, c]) => [p, digits(c)]), [['/pricing', 12], ['/', 6], ['/docs', 6]]);
    await saveScreenshot('3-sites');
  });

  await t.test('Settings validate as you type and a saved BATCH_SIZE is applied', async () => {
    await driver.click('#tab-settings');
    await driver.until('settings loaded', async () => {
      const id = await driver.find('#setting-BATCH_SIZE');
      return id && (await driver.call('GET', driver.s(`/element/${id}/property/value`))) === '1000';
    });
    await driver.type('#setting-BATCH_SIZE', '0');
    await driver.until('a field error', async () => /1 to 100000/.test(await driver.text('#error-BATCH_SIZE')));
    await saveScreenshot('4-settings-invalid');

    await driver.type('#setting-BATCH_SIZE', '5');
    await driver.until('no field error', async () => (await driver.text('#error-BATCH_SIZE')).trim() === '');
    // The log lines shown so far, to tell the restart's new ones.
    await driver.script("document.querySelectorAll('#log-lines .log-line').forEach((line) => { line.dataset.seen = '1'; })");
    await driver.click('#save-settings');
    await driver.until('saved', async () => /saved/i.test(await driver.text('#settings-message')));
    await saveScreenshot('5-settings-saved');

    await driver.click('#tab-overview');
    await driver.until('worker restarted with batch size 5', async () => {
      const { worker, worker_batch_size: batchSize } = await snapshot();
      return worker.state === 'running' && batchSize === 5;
    });
    await driver.until('API running again', async () => /running/i.test(await driver.text('#api-status')));
    await driver.until('worker running again', async () => /running/i.test(await driver.text('#worker-status')));
    await driver.until('the restart in the log panel', () => driver.find('#log-lines .log-line:not([data-seen])'));
  });

  await t.test('Stop stops the API', async () => {
    await driver.click('#stop-all');
    await driver.until('API stopped', async () => /stopped/i.test(await driver.text('#api-status')));
    await driver.until('worker stopped', async () => /stopped/i.test(await driver.text('#worker-status')));
    assert.equal(await answers(apiPort), false, 'nothing listens after Stop');
  });

  await t.test('quitting the app stops the service gracefully and its database', async () => {
    assert.ok(await answers(dbPort), 'the managed database runs until the app quits');
    await driver.click('#start-worker');
    await driver.until('worker running', async () => /running/i.test(await driver.text('#worker-status')));
    // A size of the user's own, which the next launch must restore.
    await driver.call('POST', driver.s('/window/rect'), { width: 1100, height: 720 });
    sizeBeforeQuit = await driver
      .until('the window resized', async () => {
        const rect = await driver.call('GET', driver.s('/window/rect'));
        return rect.width === 1100 && rect.height === 720 && rect;
      })
      .catch(() => driver.call('GET', driver.s('/window/rect')));
    assert.deepEqual([sizeBeforeQuit.width, sizeBeforeQuit.height], [1100, 720], 'not the default 1200×800');
    // SIGTERM is how a desktop session asks an app to quit (logout, shutdown).
    const pid = appPid();
    assert.ok(pid, 'the app process is found');
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + 20000;
    while ((await answers(dbPort)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    assert.equal(await answers(dbPort), false, 'the managed database stopped with the app');
    const clean = /worker stopped[\s\S]*local database stopped/;
    while (!clean.test(appLog) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    assert.match(appLog, clean, 'worker, then database, stopped cleanly');
  });

  await t.test('the next launch restores the window size', async () => {
    await driver.quit();
    await driver.start({ browserName: 'wry', 'tauri:options': { application: APP } });
    await driver.until('the window', () => driver.find('#start-all'));
    const size = await driver.call('GET', driver.s('/window/rect'));
    assert.deepEqual([size.width, size.height], [sizeBeforeQuit.width, sizeBeforeQuit.height]);
    process.kill(appPid(), 'SIGTERM');
  });
});
