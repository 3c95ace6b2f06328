// Analytics Desk front-end: wires the views to the backend.
//
// Data flow: every Snapshot (get_snapshot, start/stop answers, `pipeline`
// events) goes into the store; the Overview re-renders from the newest one.
// Live numbers are only ever pushed by the backend; the Sites tab reads
// stats on a timer while it is open.

import { hasBackend, invoke, listen, errorText } from './js/backend.js';
import { byId } from './js/dom.js';
import { createPipelineChart } from './js/chart.js';
import { createLogView, logKey } from './js/logs.js';
import { createOverview } from './js/overview.js';
import { createPortAccess } from './js/port-access.js';
import { createSites } from './js/sites.js';
import { createSettings } from './js/settings.js';
import { createBackup } from './js/backup.js';
import { createTabs } from './js/tabs.js';
import { createFirstRun } from './js/first-run.js';
import { createAppPreferences } from './js/app-preferences.js';
import { createBackgroundNotice } from './js/background-notice.js';
import { acceptSnapshot, setSettings, subscribe } from './js/store.js';

const overview = createOverview();
const chart = createPipelineChart(byId('pipeline-chart'));
const logs = createLogView(byId('log-lines'), byId('logs-jump'));
const sites = createSites();
const settings = createSettings();
createBackup();
const firstRun = createFirstRun({ onSettingsChanged: (view) => { setSettings(view); settings.load(view); } });
const appPreferences = createAppPreferences();

subscribe(() => overview.render());
overview.render();
const portAccess = createPortAccess({ onFixed: () => overview.clearError() });
subscribe(() => portAccess.render());
portAccess.render();

createTabs((name) => {
  if (name === 'sites') sites.show();
  else sites.hide();
  if (name === 'overview') logs.reveal();
  if (name === 'settings') appPreferences.load();
});

async function start() {
  if (!hasBackend()) {
    overview.showError('Not connected', 'The Analytics Desk backend is not available. Open this window from the app.');
    return;
  }

  firstRun.openIfNeeded().catch((err) => overview.showError('Could not read the preferences', errorText(err)));

  // Ask for the current state first, but subscribe right away: events that
  // arrive while the answers are on their way must not be lost.
  const snapshotCall = invoke('get_snapshot');
  const settingsCall = invoke('get_settings');
  const logsCall = invoke('recent_logs');
  createBackgroundNotice();
  appPreferences.load();

  let logBuffer = []; // `log` events received before recent_logs answered
  listen('pipeline', (snapshot) => {
    overview.markPipeline();
    chart.push(snapshot);
    acceptSnapshot(snapshot);
  }).catch((err) => overview.showError('Live updates unavailable', errorText(err)));
  listen('log', (line) => {
    if (!line || typeof line !== 'object') return;
    if (logBuffer) logBuffer.push(line);
    else logs.append([line]);
  }).catch(() => {});

  snapshotCall
    .then((snapshot) => { if (acceptSnapshot(snapshot)) chart.push(snapshot); })
    .catch((err) => overview.showError('Could not read the service state', errorText(err)));

  settingsCall
    .then((result) => { setSettings(result); settings.load(result); })
    .catch((err) => settings.loadFailed(err));

  try {
    const recent = await logsCall;
    const lines = Array.isArray(recent) ? recent : [];
    // A line can be both in recent_logs and in an early event: show it once.
    const seen = new Set(lines.map(logKey));
    logs.append([...lines, ...logBuffer.filter((line) => !seen.has(logKey(line)))]);
  } catch (_) {
    logs.append(logBuffer);
  } finally {
    logBuffer = null;
  }
}

start();
