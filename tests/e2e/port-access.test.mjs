// End-to-end test of the port error's two buttons in the real window. The app
// runs as root here, so it is started without CAP_NET_BIND_SERVICE (setpriv
// drops it from the bounding set: it then binds like a normal user, and so does
// the helper beside it, which lacks the file capability in a build tree). A
// stand-in `pkexec` on PATH records what "Allow port N" runs.
//
// Run like desktop.test.mjs (APP_BINARY, TAURI_DRIVER; scripts/test-desktop.sh);
// the port helper must be built beside the app (cargo build --bin analytics-bind-port).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync, existsSync, readFileSync, chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebDriver, pngInk } from './webdriver.mjs';
import { answers, freePort } from '../common/net.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const screenshots = process.env.SCREENSHOT_DIR ?? join(repo, 'target', 'e2e-screenshots');
const APP = process.env.APP_BINARY;
const TAURI_DRIVER = process.env.TAURI_DRIVER ?? 'tauri-driver';
const HELPER = APP ? join(dirname(APP), 'analytics-bind-port') : '';

const children = [];
let driver;
let work;
let lowPort;

function run(program, args, options) {
  const child = spawn(program, args, { stdio: ['ignore', 'inherit', 'inherit'], ...options });
  children.push(child);
  return child;
}

/** A free port below 1024 (not 1000, which other tests use). */
async function freeLowPort() {
  for (let i = 0; i < 200; i++) {
    const port = 600 + Math.floor(Math.random() * 390);
    const free = await new Promise((resolve) => {
      const server = createServer().once('error', () => resolve(false)).listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port between 600 and 989');
}

function script(path, body) {
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

const isShown = (css) => driver.script(`const n = document.querySelector(${JSON.stringify(css)}); return Boolean(n) && !n.hidden && n.offsetParent !== null;`);

before(async () => {
  assert.ok(APP, 'APP_BINARY must point at the built analytics-desk');
  assert.ok(existsSync(HELPER), `the port helper must be built beside the app: ${HELPER}`);
  work = mkdtempSync(join(tmpdir(), 'analytics-desk-port-e2e-'));
  lowPort = await freeLowPort();
  const dbPort = await freePort();
  writeFileSync(join(work, '.env'), `PORT=${lowPort}\nMONGO_URL=mongodb://127.0.0.1:${dbPort}/e2e\nPOLL_MS=100\n`);
  // The first-run flow is tests/e2e/first-run.test.mjs's: done here, so it does not cover the window.
  mkdirSync(join(work, 'config', 'analytics-desk'), { recursive: true });
  writeFileSync(join(work, 'config', 'analytics-desk', 'preferences.json'), JSON.stringify({ first_run_done: true }));
  const bin = join(work, 'bin');
  mkdirSync(bin);
  script(join(bin, 'pkexec'), `printf '%s\\n' "$@" > ${join(work, 'pkexec-args')}`);
  const app = script(
    join(work, 'analytics-desk-unprivileged'),
    `exec setpriv --inh-caps=-net_bind_service --bounding-set=-net_bind_service ${APP} "$@"`,
  );
  const env = {
    ...process.env,
    PATH: `${bin}:${process.env.PATH}`,
    XDG_CONFIG_HOME: join(work, 'config'),
    XDG_DATA_HOME: join(work, 'data'),
    XDG_CACHE_HOME: join(work, 'cache'),
    RUST_LOG: 'info',
  };
  if (!env.DISPLAY) {
    const xvfb = run('Xvfb', ['-displayfd', '3', '-screen', '0', '1400x1000x24', '-nolisten', 'tcp'], {
      stdio: ['ignore', 'inherit', 'inherit', 'pipe'],
    });
    env.DISPLAY = `:${await new Promise((resolve, reject) => {
      let written = '';
      const timer = setTimeout(() => reject(new Error('Xvfb gave no display within 30 s')), 30000);
      xvfb.stdio[3].on('data', (chunk) => {
        written += chunk;
        if (written.includes('\n')) {
          clearTimeout(timer);
          resolve(written.trim());
        }
      });
    })}`;
  }
  const driverPort = await freePort();
  const nativePort = await freePort();
  run(TAURI_DRIVER, ['--port', String(driverPort), '--native-port', String(nativePort), '--native-driver', '/usr/bin/WebKitWebDriver'], { cwd: work, env });
  driver = new WebDriver(`http://127.0.0.1:${driverPort}`);
  await driver.until('tauri-driver', async () => (await fetch(`${driver.base}/status`)).ok);
  await driver.start({ browserName: 'wry', 'tauri:options': { application: app } });
  await driver.call('POST', driver.s('/window/rect'), { width: 1280, height: 860 }).catch(() => {});
});

after(async () => {
  await driver?.quit();
  for (const child of children.reverse()) child.kill('SIGTERM');
});

test('a refused port below 1024 offers Allow (pkexec setcap on the helper) and Use port 8000', async (t) => {
  await t.test('Start fails on the low port and the banner shows both buttons', async () => {
    await driver.until('the window', () => driver.find('#start-all'));
    await driver.click('#start-all');
    await driver.until('the port fix', () => isShown('#port-fix'), 60000);
    assert.ok(await isShown('#allow-port'), 'Allow shows: the helper is there, lacking only the capability');
    assert.equal(await driver.text('#allow-port'), `Allow port ${lowPort}`);
    assert.ok(await isShown('#use-port-8000'));
    assert.match(await driver.text('#service-error-body'), new RegExp(`cannot listen on 127\\.0\\.0\\.1:${lowPort}`));
    assert.match(await driver.text('#service-error-body'), /setcap cap_net_bind_service=\+ep .*analytics-bind-port/);
    await driver.until('the banner drawn', async () => {
      const ink = pngInk(await driver.screenshot());
      return ink.inked > 0.03 && ink.colours > 24;
    });
    mkdirSync(screenshots, { recursive: true });
    writeFileSync(join(screenshots, 'port-error.png'), await driver.screenshot());
  });

  await t.test('Allow runs pkexec setcap on the helper, then starts again', async () => {
    await driver.click('#allow-port');
    const recorded = join(work, 'pkexec-args');
    await driver.until('pkexec ran', () => existsSync(recorded));
    assert.equal(readFileSync(recorded, 'utf8'), `setcap\ncap_net_bind_service=+ep\n${HELPER}\n`);
    // The stand-in gave no capability, so the retried Start is refused again and says so.
    await driver.until('the retry refused', async () => (await isShown('#port-fix-error'))
      && new RegExp(`cannot listen on 127\\.0\\.0\\.1:${lowPort}`).test(await driver.text('#port-fix-error')));
    assert.ok(await isShown('#allow-port'), 'the buttons stay while the port is refused');
  });

  await t.test('Use port 8000 saves the port and starts there', async () => {
    const taken = await answers(8000);
    await driver.click('#use-port-8000');
    if (taken) {
      // Something else on this machine listens on 8000: the banner says so.
      await driver.until('in use', async () => /already in use/.test(await driver.text('#service-error-body')));
      return;
    }
    await driver.until('API running on 8000', async () => /running/i.test(await driver.text('#api-status')), 30000);
    assert.match(await driver.text('#api-url'), /:8000/);
    assert.equal(await isShown('#port-fix'), false, 'the fix is gone once the service runs');
    assert.equal(await isShown('#service-error'), false, 'so is the start error');
  });
});
