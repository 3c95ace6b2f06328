// Measures the desktop app as a person meets it: time until the window is ready,
// and memory (PSS, so shared libraries count once) of the app and its WebKit
// processes, idle with the service stopped and idle with it running. The managed
// database is measured apart. Prints medians over RUNS launches.
//
//   APP_BINARY=.../analytics-desk TAURI_DRIVER=.../tauri-driver node scripts/measure-desktop.mjs
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebDriver } from '../tests/e2e/webdriver.mjs';

const APP = process.env.APP_BINARY;
const TAURI_DRIVER = process.env.TAURI_DRIVER ?? 'tauri-driver';
const RUNS = Number(process.env.RUNS ?? 3);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const freePort = () =>
  new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });

/** pid → parent pid, for every process. */
function processTable() {
  const table = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      table.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {}
  }
  return table;
}

const pssKiB = (pid) => {
  try {
    return Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))[1]);
  } catch {
    return 0;
  }
};
const exe = (pid) => {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return '';
  }
};

/** PSS in MiB of the app and its descendants, the database (secantusd-rs/mongod) apart. */
function memory() {
  const table = processTable();
  const app = [...table.keys()].find((pid) => exe(pid) === APP);
  const tree = new Set([app]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, parent] of table) if (tree.has(parent) && !tree.has(pid)) (tree.add(pid), (grew = true));
  }
  let appKiB = 0, dbKiB = 0;
  const parts = {};
  for (const pid of tree) {
    const name = exe(pid).split('/').pop();
    parts[name] = (parts[name] ?? 0) + pssKiB(pid) / 1024;
    if (/secantusd-rs|mongod/.test(name)) dbKiB += pssKiB(pid);
    else appKiB += pssKiB(pid);
  }
  if (process.env.VERBOSE) console.error(parts);
  return { app: appKiB / 1024, db: dbKiB / 1024, processes: tree.size };
}

async function once() {
  const work = mkdtempSync(join(tmpdir(), 'analytics-desk-measure-'));
  writeFileSync(join(work, '.env'), `PORT=${await freePort()}\nMONGO_URL=mongodb://127.0.0.1:${await freePort()}/measure\n`);
  const display = ':' + (500 + Math.floor(Math.random() * 400));
  const env = { ...process.env, DISPLAY: display, XDG_CONFIG_HOME: join(work, 'c'), XDG_DATA_HOME: join(work, 'd') };
  const xvfb = spawn('Xvfb', [display, '-screen', '0', '1400x1000x24', '-nolisten', 'tcp'], { stdio: 'ignore' });
  await sleep(800);
  const port = await freePort();
  const nativePort = await freePort();
  const driverProcess = spawn(
    TAURI_DRIVER,
    ['--port', String(port), '--native-port', String(nativePort), '--native-driver', '/usr/bin/WebKitWebDriver'],
    { cwd: work, env, stdio: 'ignore' },
  );
  const driver = new WebDriver(`http://127.0.0.1:${port}`);
  try {
    await driver.until('tauri-driver', async () => (await fetch(`${driver.base}/status`)).ok);
    const launched = Date.now();
    await driver.start({ browserName: 'wry', 'tauri:options': { application: APP } });
    await driver.until('the window', async () => /stopped/i.test(await driver.text('#api-status')));
    const readyMs = Date.now() - launched;
    await sleep(10000);
    const stopped = memory();
    await driver.click('#start-all');
    await driver.until('running', async () => /running/i.test(await driver.text('#worker-status')), 60000);
    await sleep(10000);
    const running = memory();
    return { readyMs, stopped, running };
  } finally {
    await driver.quit();
    driverProcess.kill();
    xvfb.kill();
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results = [];
for (let i = 0; i < RUNS; i++) results.push(await once());
const row = (name, pick) => `| ${name} | ${median(results.map(pick)).toFixed(0)} | ${results.map(pick).map((x) => x.toFixed(0)).join(', ')} |`;
console.log(`Analytics Desk, ${RUNS} launches (medians; each run in brackets)\n`);
console.log('| figure | median | runs |\n|---|---|---|');
console.log(row('window ready after launch (ms)', (r) => r.readyMs));
console.log(row('app + WebKit, idle, service stopped (MiB PSS)', (r) => r.stopped.app));
console.log(row('app + WebKit, idle, service running (MiB PSS)', (r) => r.running.app));
console.log(row('managed secantusd-rs, idle (MiB PSS)', (r) => r.running.db));
