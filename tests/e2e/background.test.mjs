// End-to-end test of the app living in the background (issue #16, items 4 and 5):
// start the service when the app opens, closing the window keeps collecting (and
// says so the first time), the tray's actions, start on login, and Quit.
//
// Xvfb has no tray host (no StatusNotifierWatcher, no XEmbed tray), so the tray
// menu cannot be clicked here: its actions are run through the app's commands
// `tray_action` and `tray_menu`, which call the very code the tray's items call.
//
// Launch as in desktop.test.mjs: Xvfb, tauri-driver in front of WebKitWebDriver,
// a fresh HOME (its .config is XDG_CONFIG_HOME: the autostart entry goes to
// $HOME/.config/autostart), a MONGO_URL on a free port (the app launches its own
// secantusd-rs) and a free PORT. Run through scripts/test-desktop.sh.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync, readdirSync, readlinkSync, readFileSync, existsSync } from 'node:fs';
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
let configDir;
let autostartFile;
let display;

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

/** Waits (bounded) until `check` holds; fails with `what`. */
async function waitFor(what, check, ms = 30000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Calls an app command as the window does; a rejection becomes an exception. */
async function invoke(command, args = {}) {
  const value = await driver.asyncScript(
    'const done = arguments[arguments.length - 1]; window.__TAURI__.core.invoke(arguments[0], arguments[1]).then((v) => done({ ok: v ?? null }), (e) => done({ error: String(e) }));',
    command,
    args,
  );
  if (value && 'error' in value) throw new Error(`${command}: ${value.error}`);
  return value.ok;
}

/** The app's saved preferences, read from its file (what survives a restart). */
function savedPreferences() {
  const file = join(configDir, 'preferences.json');
  return existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {};
}

/** Whether the app's window is mapped (shown) on the X server: a hidden window is unmapped. */
function windowShown() {
  const tree = execFileSync('xwininfo', ['-root', '-tree'], { env: { ...process.env, DISPLAY: display } }).toString();
  const ids = [...tree.matchAll(/^\s*(0x[0-9a-f]+) "Analytics Desk"/gm)].map((m) => m[1]);
  return ids.some((id) => {
    const info = execFileSync('xwininfo', ['-id', id], { env: { ...process.env, DISPLAY: display } }).toString();
    return /Map State: IsViewable/.test(info);
  });
}

async function saveScreenshot(name) {
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

async function launch() {
  await driver.start({ browserName: 'wry', 'tauri:options': { application: APP } });
  await driver.call('POST', driver.s('/window/rect'), { width: 1280, height: 860 }).catch(() => {});
  await driver.until('the window', () => driver.find('#start-all'), 30000);
}

before(async () => {
  assert.ok(APP, 'APP_BINARY must point at the built analytics-desk');
  const work = (workDir = mkdtempSync(join(tmpdir(), 'analytics-desk-bg-')));
  apiPort = await freePort();
  dbPort = await freePort();
  writeFileSync(join(work, '.env'), `PORT=${apiPort}\nMONGO_URL=mongodb://127.0.0.1:${dbPort}/e2e\nPOLL_MS=100\n`);
  const home = join(work, 'home');
  mkdirSync(home);
  configDir = join(home, '.config', 'analytics-desk');
  // The first-run flow is tests/e2e/first-run.test.mjs's: done here, so it does not cover the window.
  mkdirSync(configDir, { recursive: true });
  writeFileSync(join(configDir, 'preferences.json'), JSON.stringify({ first_run_done: true }));
  autostartFile = join(home, '.config', 'autostart', 'Analytics Desk.desktop');
  const env = {
    ...process.env,
    HOME: home,
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_DATA_HOME: join(home, '.local', 'share'),
    XDG_CACHE_HOME: join(home, '.cache'),
    RUST_LOG: 'info',
  };
  if (!env.DISPLAY) {
    // Xvfb picks a free display, and writes its number to fd 3 once it accepts clients.
    const xvfb = run('Xvfb', ['-displayfd', '3', '-screen', '0', '1400x1000x24', '-nolisten', 'tcp'], {
      stdio: ['ignore', 'inherit', 'pipe', 'pipe'],
    });
    const number = await new Promise((resolve, reject) => {
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
    env.DISPLAY = `:${number}`;
  }
  display = env.DISPLAY;
  const driverPort = await freePort();
  const nativePort = await freePort();
  run(TAURI_DRIVER, ['--port', String(driverPort), '--native-port', String(nativePort), '--native-driver', '/usr/bin/WebKitWebDriver'], { cwd: work, env });
  driver = new WebDriver(`http://127.0.0.1:${driverPort}`);
  await driver.until('tauri-driver', async () => (await fetch(`${driver.base}/status`)).ok);
  await launch();
});

after(async () => {
  await driver?.quit();
  const pid = appPid();
  if (pid) process.kill(pid, 'SIGTERM');
  for (const child of children.reverse()) child.kill('SIGTERM');
});

test('the app lives in the background: start on open, close to the tray, tray actions, login item, quit', async (t) => {
  await t.test('with start_service_on_open saved, the next launch starts the service without a click', async () => {
    assert.equal(await answers(apiPort), false, 'nothing runs before the preference');
    const preferences = await invoke('get_preferences');
    assert.equal(preferences.start_service_on_open, false, 'off until the user turns it on');
    await invoke('set_preferences', { preferences: { ...preferences, start_service_on_open: true } });
    assert.equal(savedPreferences().start_service_on_open, true);

    const pid = appPid();
    assert.ok(pid, 'the app process is found');
    process.kill(pid, 'SIGTERM');
    await waitFor('the first app to exit', () => appPid() === null);
    await driver.quit();
    await launch();
    await waitFor('the API to answer without Start being clicked', () => answers(apiPort), 60000);
    const health = await fetch(`http://127.0.0.1:${apiPort}/health`);
    assert.equal(health.status, 200);
    await driver.until('the window shows it running', async () => /running/i.test(await driver.text('#api-status')));
  });

  await t.test('the Settings tab has an App section with the three preferences', async () => {
    await driver.click('#tab-settings');
    await driver.until('preferences loaded', () =>
      driver.script("return document.getElementById('pref-start_service_on_open').checked"),
    );
    const boxes = await driver.script(
      "return ['keep_running_in_background', 'start_on_login', 'start_service_on_open'].map((k) => document.getElementById('pref-' + k).checked)",
    );
    assert.deepEqual(boxes, [true, false, true]);
    await driver.script("document.getElementById('app-preferences').scrollIntoView({ block: 'center' })");
    await saveScreenshot('background-settings-app');
  });

  await t.test('start_on_login writes and removes the autostart entry', async () => {
    assert.equal(existsSync(autostartFile), false);
    await driver.click('#pref-start_on_login');
    await waitFor('the autostart entry', () => existsSync(autostartFile));
    const entry = readFileSync(autostartFile, 'utf8');
    assert.match(entry, /\[Desktop Entry\]/);
    assert.ok(entry.includes(`Exec=${APP}`), `the entry launches this app: ${entry}`);
    await driver.until('saved', async () => /saved/i.test(await driver.text('#app-preferences-message')));
    assert.equal(savedPreferences().start_on_login, true);

    await driver.click('#pref-start_on_login');
    await waitFor('the autostart entry removed', () => !existsSync(autostartFile));
    await waitFor('start_on_login saved off', () => savedPreferences().start_on_login === false);
  });

  await t.test('closing the window the first time says so, then hides it while the API keeps answering', async () => {
    await driver.click('#tab-overview');
    assert.ok(windowShown(), 'the window is on screen');
    // The window's own close(): the same CloseRequested event as the window
    // manager's close button. (WebDriver's "close window" cannot stand in: closing
    // the session's last window ends the session, and the driver kills the app.)
    await driver.script("window.__TAURI__.window.getCurrentWindow().close(); return true;");
    await driver.until('the notice', () => driver.script("return !document.getElementById('background-notice').hidden"));
    assert.ok(windowShown(), 'the window stays until the user has read the notice');
    await saveScreenshot('background-first-close-notice');
    // Clicked from a script: a WebDriver click waits for the page to paint again,
    // which a hidden window never does.
    await driver.script("document.getElementById('background-notice-ok').click(); return true;");
    await waitFor('the window hidden', () => !windowShown());
    assert.equal(savedPreferences().background_notice_shown, true, 'the notice is recorded');
    assert.ok(appPid(), 'the app still runs');
    const health = await fetch(`http://127.0.0.1:${apiPort}/health`);
    assert.equal(health.status, 200, 'the API still answers with the window closed');
  });

  await t.test("the tray's actions (through the app's commands): status, Stop, Start, Open", async () => {
    const menu = await invoke('tray_menu');
    assert.match(menu.status, /^Running · \d+ queued$/);
    const enabled = menu.items.filter((item) => item.enabled).map((item) => item.id);
    assert.deepEqual(enabled, ['stop', 'open', 'quit']);

    await invoke('tray_action', { id: 'stop' });
    await waitFor('the API stopped', async () => !(await answers(apiPort)));
    await driver.until('the tray says stopped', async () => /^Stopped( · \d+ queued)?$/.test((await invoke('tray_menu')).status));
    await invoke('tray_action', { id: 'start' });
    await waitFor('the API answering again', () => answers(apiPort), 60000);
    await assert.rejects(invoke('tray_action', { id: 'reboot' }), /unknown tray action "reboot"/);

    await invoke('tray_action', { id: 'open' });
    await waitFor('the window shown again', () => windowShown());
    // Told once: the second close hides at once.
    await driver.script("window.__TAURI__.window.getCurrentWindow().close(); return true;");
    await waitFor('the window hidden without a notice', () => !windowShown());
    assert.ok(await answers(apiPort));
    await invoke('tray_action', { id: 'open' });
    await waitFor('the window shown again', () => windowShown());
  });

  await t.test("Quit (the tray's) finishes the batch, stops the API and the database, and exits", async () => {
    assert.ok(await answers(dbPort), 'the managed database runs');
    // Fire and forget, after the script has answered: the app exits before
    // quit_app could. Should the exit still beat the answer, the driver's error
    // says nothing: the waits below are the test.
    await driver
      // Settings → App's Quit button, which calls what the tray's Quit calls.
      .script("setTimeout(() => document.getElementById('quit-app').click(), 200); return true;")
      .catch(() => {});
    await waitFor('the app to exit', () => appPid() === null);
    assert.equal(await answers(apiPort), false, 'the API stopped');
    await waitFor('the database stopped', async () => !(await answers(dbPort)), 20000);
  });
});
