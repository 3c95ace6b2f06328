// End-to-end test of the Settings tab's Back up… and Restore… in the real
// desktop window (launched as tests/e2e/desktop.test.mjs does): a backup of
// the events shown, a path refused with the field named, and a restore of the
// backup just written that adds nothing (every event is already stored).
//
// Run one e2e file at a time (see scripts/test-desktop.sh for APP_BINARY and TAURI_DRIVER).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync, readdirSync, readlinkSync, existsSync } from 'node:fs';
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

test('Back up… saves every event and Restore… of that file adds nothing', async (t) => {
  await t.test('the service runs and has events', async () => {
    await driver.until('the window', () => driver.find('#start-all'));
    await driver.click('#start-all');
    await driver.until('API running', async () => /running/i.test(await driver.text('#api-status')), 60000);
    await driver.until('worker running', async () => /running/i.test(await driver.text('#worker-status')));
    for (let i = 0; i < 10; i++) await postEvent({ site_id: 'shop', event_type: 'page_view', path: `/p${i % 3}`, user_id: `u${i % 4}` });
    await driver.until('10 processed', async () => (await snapshot()).total_events === 10);
  });

  let backupPath;
  await t.test('Back up… writes the file and shows where', async () => {
    await driver.click('#tab-settings');
    await driver.click('#backup-now');
    await driver.until('backed up', async () => /Backed up 10 events/.test(await driver.text('#backup-message')), 30000);
    const id = await driver.find('#restore-path');
    backupPath = await driver.call('GET', driver.s(`/element/${id}/property/value`));
    assert.match(backupPath, /analytics-desk-backup-\d{4}-\d{2}-\d{2}\.ndjson\.gz$/);
    assert.ok(existsSync(backupPath), `the file ${backupPath} exists`);
    assert.match(await driver.text('#backup-message'), /no passwords or tokens/);
  });

  await t.test('Restore… refuses a relative path, naming the field', async () => {
    await driver.type('#restore-path', 'backup.ndjson.gz');
    await driver.click('#restore-backup');
    await driver.until('refused', async () => /Backup file: give the full path/.test(await driver.text('#backup-message')));
    assert.equal(await driver.script("return document.querySelector('#backup-message').dataset.kind"), 'error');
  });

  await t.test('Restore… of the backup skips every event already stored', async () => {
    await driver.type('#restore-path', backupPath);
    await driver.click('#restore-backup');
    await driver.until('restored', async () => /Restored 0 events; skipped 10 already stored/.test(await driver.text('#backup-message')), 30000);
    assert.equal((await snapshot()).total_events, 10, 'nothing added');
    await driver.script("document.querySelector('#backup-card').scrollIntoView()");
    await saveScreenshot('backup-restore');
  });

  await t.test('quitting stops the database', async () => {
    const pid = appPid();
    assert.ok(pid, 'the app process is found');
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + 20000;
    while ((await answers(dbPort)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    assert.equal(await answers(dbPort), false, 'the managed database stopped with the app');
  });
});
