// Header (status pills, Start/Stop all), the Overview cards, and the
// service error banner. render() draws all of it from the latest Snapshot.

import { invoke, errorText } from './backend.js';
import { byId, el, setText, setHidden, bindCopyButton } from './dom.js';
import {
  apiBase, curlExample, databaseKind, databaseStatus, DASH, fmtInt, fmtRate,
  partState, partStatusText, stateWord,
} from './format.js';
import { acceptSnapshot, getState } from './store.js';

// Button id → [command, part].
const ACTIONS = {
  'start-all': ['start_service', 'all'],
  'stop-all': ['stop_service', 'all'],
  'start-api': ['start_service', 'api'],
  'stop-api': ['stop_service', 'api'],
  'start-worker': ['start_service', 'worker'],
  'stop-worker': ['stop_service', 'worker'],
};

const PART_NAMES = { all: 'the service', api: 'the API', worker: 'the worker' };

// A start can take a while (it may launch the local database first). If a
// call has not answered after this long, the buttons follow the state again
// so the user is never locked out by a call that hangs.
const BUSY_LOCK_MS = 20000;

const canStart = (state) => state === 'stopped' || state === 'failed';
const canStop = (state) => state === 'running' || state === 'starting';

export function createOverview() {
  const buttons = {};
  for (const id of Object.keys(ACTIONS)) {
    buttons[id] = byId(id);
    buttons[id].dataset.label = buttons[id].textContent;
  }

  const pending = {}; // command → { id, since } while a start_service / stop_service call is in flight
  let commandError = null; // { title, text } from the last failed start/stop
  const dismissed = new Set(); // banner texts the user closed
  let bannerKey = null; // what the banner shows now, to rebuild it only on change
  let lastPipelineAt = 0; // Date.now() of the last `pipeline` event

  // ---- actions ----------------------------------------------------------

  function isLocked(cmd) {
    const call = pending[cmd];
    return Boolean(call) && Date.now() - call.since < BUSY_LOCK_MS;
  }

  async function run(id) {
    const [cmd, part] = ACTIONS[id];
    if (isLocked(cmd)) return;
    const call = { id, since: Date.now() };
    pending[cmd] = call;
    render();
    setTimeout(render, BUSY_LOCK_MS + 50); // unlock even if no event re-renders meanwhile
    try {
      const snapshot = await invoke(cmd, { part });
      commandError = null;
      acceptSnapshot(snapshot); // re-renders through the store
    } catch (err) {
      const verb = cmd === 'start_service' ? 'start' : 'stop';
      const text = errorText(err);
      commandError = { title: `Could not ${verb} ${PART_NAMES[part]}`, text };
      dismissed.delete(text); // a new failure shows even if the same text was closed before
    } finally {
      if (pending[cmd] === call) pending[cmd] = null;
      render();
    }
  }

  for (const id of Object.keys(ACTIONS)) buttons[id].addEventListener('click', () => run(id));

  // The quarantine's "Requeue": entries set aside go back into the queue.
  byId('requeue-quarantine').addEventListener('click', async () => {
    try {
      acceptSnapshot(await invoke('requeue_quarantine'));
      commandError = null;
    } catch (err) {
      const text = errorText(err);
      commandError = { title: 'Could not requeue the quarantine', text };
      dismissed.delete(text);
    } finally {
      render();
    }
  });

  byId('service-error-close').addEventListener('click', () => {
    for (const item of bannerItems(getState().snapshot)) dismissed.add(item.text);
    render();
  });

  bindCopyButton(byId('copy-url'), () => byId('api-url').textContent);
  bindCopyButton(byId('copy-curl'), () => byId('curl-example').textContent);

  // ---- banner -----------------------------------------------------------

  function bannerItems(snapshot) {
    const items = [];
    if (commandError) items.push(commandError);
    const last = snapshot && snapshot.last_error;
    if (last && !items.some((item) => item.text === last)) items.push({ title: 'Service error', text: String(last) });
    return items;
  }

  /**
   * One error message. Start errors may end with a command to run (the
   * port-1000 case: "... grant the capability once: sudo setcap ... /path");
   * it goes on a line of its own, in monospace, with a copy button.
   * `Backticked` parts are set as code too.
   */
  function messageNodes(text) {
    const paragraph = (part) => {
      const p = el('p', { className: 'banner-text' });
      part.split('`').forEach((piece, i) => {
        p.append(i % 2 ? el('code', { text: piece }) : document.createTextNode(piece));
      });
      return p;
    };
    const match = /(^|\s)(sudo\s[^\n`]+)/.exec(text);
    if (!match) return [paragraph(text)];

    const command = match[2].trim().replace(/[.,;)]+$/, '');
    const start = match.index + match[1].length;
    const before = text.slice(0, start).trimEnd();
    const after = text.slice(start + command.length).replace(/^[.,;)]\s*/, '').trim();
    const copy = el('button', { className: 'btn btn-sm', text: 'Copy', attrs: { type: 'button' } });
    bindCopyButton(copy, () => command);
    const nodes = [];
    if (before) nodes.push(paragraph(before));
    nodes.push(el('div', { className: 'banner-command' }, [el('code', { text: command }), copy]));
    if (after) nodes.push(paragraph(after));
    return nodes;
  }

  function renderBanner(snapshot) {
    const items = bannerItems(snapshot);
    // Forget closed messages that went away, so they show again if they come back.
    for (const text of dismissed) if (!items.some((item) => item.text === text)) dismissed.delete(text);
    const shown = items.filter((item) => !dismissed.has(item.text));
    const key = JSON.stringify(shown);
    if (key === bannerKey) return; // unchanged: don't disturb a text selection every second
    bannerKey = key;
    const body = byId('service-error-body');
    body.replaceChildren();
    for (const item of shown) {
      body.append(el('div', { className: 'banner-item' }, [
        el('strong', { className: 'banner-title', text: item.title }),
        ...messageNodes(item.text),
      ]));
    }
    setHidden(byId('service-error'), shown.length === 0);
  }

  // ---- render -----------------------------------------------------------

  function renderButtons(api, worker) {
    const enabled = {
      'start-all': canStart(api) || canStart(worker),
      'stop-all': canStop(api) || canStop(worker),
      'start-api': canStart(api),
      'stop-api': canStop(api),
      'start-worker': canStart(worker),
      'stop-worker': canStop(worker),
    };
    // While a start runs, the Start buttons wait (no double starts); the Stop
    // buttons keep following the live state so a part that is already up (or
    // a start that takes long) can be stopped. The same the other way round.
    // The backend serialises the actions itself.
    for (const [id, button] of Object.entries(buttons)) {
      const cmd = ACTIONS[id][0];
      button.disabled = isLocked(cmd) || !enabled[id];
      const mine = isLocked(cmd) && pending[cmd].id === id;
      setText(button, mine ? (cmd === 'start_service' ? 'Starting…' : 'Stopping…') : button.dataset.label);
      button.setAttribute('aria-busy', String(mine));
    }
  }

  function setPill(id, state, word) {
    const pill = byId(`pill-${id}`);
    pill.dataset.state = state;
    setText(byId(`pill-${id}-value`), word);
  }

  function render() {
    const { snapshot, settings } = getState();
    const snap = snapshot || {};
    const api = partState(snap.api);
    const worker = partState(snap.worker);
    const db = snap.database || null;
    const dbState = (db && db.state) || 'unknown';

    // Header
    setPill('api', api, stateWord(api));
    setPill('worker', worker, stateWord(worker));
    setPill('db', dbState, db ? stateWord(dbState) : DASH);
    renderButtons(api, worker);

    // Numbers
    setText(byId('queue-depth'), fmtInt(snap.queue_depth));
    setText(byId('quarantined'), fmtInt(snap.quarantined));
    setHidden(byId('quarantine-line'), !(snap.quarantined > 0));
    setText(byId('ingested-rate'), fmtRate(snap.ingested_per_sec));
    setText(byId('processed-rate'), fmtRate(snap.processed_per_sec));
    setText(byId('total-events'), fmtInt(snap.total_events));
    setText(byId('events-queued'), fmtInt(snap.events_queued));
    setText(byId('events-processed'), fmtInt(snap.events_processed));

    // Service card
    byId('api-dot').dataset.state = api;
    byId('worker-dot').dataset.state = worker;
    setText(byId('api-status'), partStatusText(snap.api, { withPort: true }));
    setText(byId('worker-status'), partStatusText(snap.worker));

    // Where to send events. While the API is stopped, show where it will listen.
    const base = apiBase(api === 'running' ? snap : null, settings);
    const url = byId('api-url');
    setText(url, `${base}/event`);
    url.classList.toggle('inactive', api !== 'running');
    url.title = api === 'running' ? 'The API is listening here' : 'The API is not running; this is where it will listen';
    setText(byId('curl-example'), curlExample(base));

    // Database card
    const status = databaseStatus(db);
    byId('db-dot').dataset.state = dbState;
    setText(byId('db-status'), status.text);
    let note = status.note;
    const serviceUp = api === 'running' || worker === 'running';
    if (serviceUp && (dbState === 'external' || dbState === 'running') && snap.queue_depth === null && snap.total_events === null) {
      note = 'The database does not answer right now, so the figures are unavailable.';
    }
    setText(byId('db-note'), note);
    setText(byId('db-kind'), db && db.kind ? databaseKind(db.kind) : (dbState === 'external' ? 'Not managed by the app' : DASH));
    setText(byId('db-version'), (db && db.version) || DASH);
    setText(byId('db-path'), (db && db.data_path) || DASH);
    setText(byId('db-url'), (db && db.url) || DASH);

    renderBanner(snapshot);
  }

  // ---- live indicator ---------------------------------------------------

  function renderLive() {
    const indicator = byId('live-indicator');
    const age = Date.now() - lastPipelineAt;
    const live = lastPipelineAt > 0 && age < 3000;
    indicator.dataset.live = String(live);
    if (!lastPipelineAt) setText(indicator, 'Waiting for updates');
    else if (live) setText(indicator, 'Live');
    else setText(indicator, `No updates for ${Math.round(age / 1000)} s`);
  }
  // A local clock only (no backend call): ages the "Live" badge when events stop.
  setInterval(renderLive, 1000);

  /** Called for each `pipeline` event. */
  function markPipeline() {
    lastPipelineAt = Date.now();
    renderLive();
  }

  /** Shows an error from loading (e.g. get_snapshot failed) in the banner. */
  function showError(title, text) {
    commandError = { title, text };
    dismissed.delete(text);
    render();
  }

  /** Forgets the last start/stop error (a fix elsewhere started the service). */
  function clearError() {
    commandError = null;
    render();
  }

  return { render, markPipeline, showError, clearError };
}
