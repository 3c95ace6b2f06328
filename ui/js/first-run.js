// First-run flow: shown over the window while the preferences' first_run_done
// is false. Every rule lives in the backend (port validation in save_settings,
// the site_id slug, the script tag, the first-event check, the test event);
// this module only walks the steps: port → site → script tag and first event → finish.

import { invoke, errorText } from './backend.js';
import { byId, setText, setHidden, bindCopyButton } from './dom.js';
import { acceptSnapshot } from './store.js';

const STEPS = ['port', 'site', 'script', 'finish'];
const FIRST_EVENT_POLL_MS = 1000;
const SUGGEST_DELAY_MS = 150;

/**
 * onSettingsChanged(view) is called with get_settings' answer after the port
 * is saved, so the Settings tab shows the new value.
 */
export function createFirstRun({ onSettingsChanged }) {
  const overlay = byId('first-run');
  const portInput = byId('first-run-port');
  const nameInput = byId('first-run-site-name');
  const includeLocalhost = byId('first-run-include-localhost');
  const waiting = byId('first-run-waiting');

  let settings = null; // get_settings' answer: the values saved with the new PORT
  let siteId = null; // the site added in step 2
  let scriptTag = '';
  let pollTimer = null;
  let suggestTimer = null;
  let suggestSeq = 0;

  function showStep(name) {
    for (const step of STEPS) setHidden(byId(`first-run-step-${step}`), step !== name);
    const reached = STEPS.indexOf(name);
    overlay.querySelectorAll('.first-run-steps li').forEach((item) => {
      const index = STEPS.indexOf(item.dataset.step);
      item.dataset.done = String(index < reached);
      if (index === reached) item.setAttribute('aria-current', 'step');
      else item.removeAttribute('aria-current');
    });
    overlay.dataset.step = name;
    if (name === 'script') startPolling();
    else stopPolling();
  }

  async function busy(button, work) {
    button.disabled = true;
    try {
      return await work();
    } finally {
      button.disabled = false;
    }
  }

  // ---- step 1: port ----
  portInput.addEventListener('input', () => setText(byId('first-run-port-echo'), portInput.value.trim() || '—'));
  byId('first-run-use-8000').addEventListener('click', () => {
    portInput.value = '8000';
    portInput.dispatchEvent(new Event('input'));
    portInput.focus();
  });
  byId('first-run-start').addEventListener('click', (event) =>
    busy(event.currentTarget, async () => {
      setText(byId('first-run-port-error'), '');
      const status = byId('first-run-port-status');
      try {
        setText(status, 'Saving…');
        const values = { ...((settings && settings.values) || {}), PORT: portInput.value.trim() };
        await invoke('save_settings', { values });
        settings = await invoke('get_settings');
        onSettingsChanged(settings);
        setText(status, 'Starting the database and the API…');
        acceptSnapshot(await invoke('start_service', { part: 'all' }));
        setText(status, '');
        showStep('site');
        nameInput.focus();
      } catch (err) {
        setText(status, '');
        setText(byId('first-run-port-error'), errorText(err));
        await offerPortPermission();
      }
    }),
  );

  // A port below 1024 refused for want of the permission: the same fix as the
  // #service-error banner's "Allow port N" (desktop/port_access.rs), here in the flow.
  const allowPort = byId('first-run-allow-port');
  async function offerPortPermission() {
    let portError = null;
    try {
      portError = (await invoke('get_snapshot')).port_error;
    } catch {}
    allowPort.hidden = !(portError && portError.helper);
    if (portError) setText(allowPort, `Allow port ${portError.port}`);
  }
  allowPort.addEventListener('click', () =>
    busy(allowPort, async () => {
      setText(byId('first-run-port-error'), '');
      try {
        acceptSnapshot(await invoke('allow_privileged_port'));
        allowPort.hidden = true;
        showStep('site');
        nameInput.focus();
      } catch (err) {
        setText(byId('first-run-port-error'), errorText(err));
      }
    }),
  );

  // ---- step 2: site ----
  nameInput.addEventListener('input', () => {
    clearTimeout(suggestTimer);
    suggestTimer = setTimeout(async () => {
      const seq = ++suggestSeq;
      const name = nameInput.value;
      try {
        const id = name.trim() ? await invoke('suggest_site_id', { name }) : '—';
        if (seq === suggestSeq) {
          setText(byId('first-run-site-id'), id);
          setText(byId('first-run-site-error'), '');
        }
      } catch (err) {
        if (seq === suggestSeq) {
          setText(byId('first-run-site-id'), '—');
          setText(byId('first-run-site-error'), errorText(err));
        }
      }
    }, SUGGEST_DELAY_MS);
  });
  byId('first-run-add-site').addEventListener('click', (event) =>
    busy(event.currentTarget, async () => {
      setText(byId('first-run-site-error'), '');
      try {
        const site = await invoke('add_site', { name: nameInput.value });
        siteId = site.site_id;
        setText(byId('first-run-site-id'), siteId);
        await showScriptTag();
        showStep('script');
      } catch (err) {
        setText(byId('first-run-site-error'), errorText(err));
      }
    }),
  );

  // ---- step 3: script tag, first event ----
  async function showScriptTag() {
    setText(byId('first-run-script-error'), '');
    try {
      scriptTag = await invoke('site_script_tag', { siteId, includeLocalhost: includeLocalhost.checked });
      setText(byId('first-run-script-tag'), scriptTag);
    } catch (err) {
      scriptTag = '';
      setText(byId('first-run-script-tag'), '');
      setText(byId('first-run-script-error'), errorText(err));
    }
  }
  includeLocalhost.addEventListener('change', showScriptTag);
  bindCopyButton(byId('first-run-copy-script'), () => scriptTag);

  function showFirstEvent(seen) {
    const state = seen.arrived ? 'arrived' : 'waiting';
    waiting.dataset.state = state;
    setText(
      byId('first-run-waiting-text'),
      !seen.arrived ? 'Waiting for the first event…'
        : seen.processed ? 'First event received and processed.' : 'First event received.',
    );
  }

  async function pollFirstEvent() {
    pollTimer = null;
    if (!siteId) return;
    try {
      const seen = await invoke('first_event', { siteId });
      showFirstEvent(seen);
      if (seen.processed) return; // nothing more to wait for
    } catch (_) {
      // the database may be busy restarting: ask again next second
    }
    if (overlay.dataset.step === 'script') pollTimer = setTimeout(pollFirstEvent, FIRST_EVENT_POLL_MS);
  }

  function startPolling() {
    if (!pollTimer) pollFirstEvent();
  }

  function stopPolling() {
    clearTimeout(pollTimer);
    pollTimer = null;
  }

  byId('first-run-send-test').addEventListener('click', (event) =>
    busy(event.currentTarget, async () => {
      setText(byId('first-run-test-error'), '');
      try {
        await invoke('send_test_event', { siteId });
        startPolling();
      } catch (err) {
        setText(byId('first-run-test-error'), errorText(err));
      }
    }),
  );
  byId('first-run-next').addEventListener('click', () => showStep('finish'));

  // ---- step 4: finish (or skip) ----
  async function finish(extra) {
    const preferences = await invoke('get_preferences');
    await invoke('set_preferences', { preferences: { ...preferences, ...extra, first_run_done: true } });
    stopPolling();
    setHidden(overlay, true);
  }
  byId('first-run-finish').addEventListener('click', (event) =>
    busy(event.currentTarget, async () => {
      setText(byId('first-run-finish-error'), '');
      try {
        await finish({
          start_on_login: byId('first-run-start-on-login').checked,
          start_service_on_open: byId('first-run-start-service-on-open').checked,
        });
      } catch (err) {
        setText(byId('first-run-finish-error'), errorText(err));
      }
    }),
  );
  byId('first-run-skip').addEventListener('click', (event) =>
    busy(event.currentTarget, async () => {
      try {
        await finish({});
      } catch (err) {
        setText(byId('first-run-error'), errorText(err));
      }
    }),
  );

  /** Shows the flow if the preferences say it was never done. */
  async function openIfNeeded() {
    const preferences = await invoke('get_preferences');
    if (preferences.first_run_done) {
      overlay.dataset.checked = 'true'; // the answer is in: tests wait on this, not on time
      return false;
    }
    settings = await invoke('get_settings');
    portInput.value = (settings.values && settings.values.PORT) || '1000';
    portInput.dispatchEvent(new Event('input'));
    byId('first-run-start-on-login').checked = Boolean(preferences.start_on_login);
    byId('first-run-start-service-on-open').checked = Boolean(preferences.start_service_on_open);
    showStep('port');
    setHidden(overlay, false);
    overlay.dataset.checked = 'true'; // shown: tests wait on this, not on time
    portInput.focus();
    return true;
  }

  return { openIfNeeded };
}
