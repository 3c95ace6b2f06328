// Settings tab: the six values, validated by the backend as the user types
// (debounced), saved with save_settings.

import { invoke, errorText } from './backend.js';
import { byId, setText } from './dom.js';
import { partsPhrase } from './format.js';
import { setSettings } from './store.js';

export const SETTING_KEYS = ['MONGO_URL', 'PORT', 'HOST', 'BATCH_SIZE', 'POLL_MS', 'QUEUE_NAME'];
const VALIDATE_DELAY_MS = 250;

export function createSettings() {
  const form = byId('settings-form');
  const saveButton = byId('save-settings');
  const revertButton = byId('revert-settings');
  const message = byId('settings-message');
  const inputs = Object.fromEntries(SETTING_KEYS.map((key) => [key, byId(`setting-${key}`)]));

  let stored = null; // values as last loaded/saved (masked), to tell whether the form is dirty
  let errors = {}; // key → message, from the last validation
  let validateTimer = null;
  let validateSeq = 0; // answers can come back out of order; only the newest counts
  let saving = false;
  let settingsMeta = null; // the last get_settings answer (for its `path`)

  function currentValues() {
    return Object.fromEntries(SETTING_KEYS.map((key) => [key, inputs[key].value]));
  }

  function isDirty() {
    return Boolean(stored) && SETTING_KEYS.some((key) => inputs[key].value !== (stored[key] ?? ''));
  }

  function hasErrors() {
    return Object.values(errors).some(Boolean);
  }

  function updateButtons() {
    saveButton.disabled = saving || hasErrors();
    revertButton.disabled = saving || !isDirty();
    setText(saveButton, saving ? 'Saving…' : 'Save');
    byId('settings-hint').hidden = !hasErrors(); // say why Save is disabled
  }

  function setMessage(text, kind) {
    setText(message, text);
    message.dataset.kind = kind || '';
  }

  /** Shows one message under each field; keys we have no field for go to the form message. */
  function showErrors(next) {
    errors = next && typeof next === 'object' ? next : {};
    for (const key of SETTING_KEYS) {
      const text = errors[key] ? String(errors[key]) : '';
      setText(byId(`error-${key}`), text);
      inputs[key].classList.toggle('invalid', Boolean(text));
      inputs[key].setAttribute('aria-invalid', String(Boolean(text)));
    }
    const other = Object.entries(errors).filter(([key, text]) => text && !SETTING_KEYS.includes(key));
    if (other.length) setMessage(other.map(([key, text]) => `${key}: ${text}`).join(' '), 'error');
    updateButtons();
  }

  async function validateNow() {
    clearTimeout(validateTimer);
    const seq = ++validateSeq;
    try {
      const result = await invoke('validate_settings', { values: currentValues() });
      if (seq === validateSeq) showErrors((result && result.errors) || {});
    } catch (err) {
      if (seq === validateSeq) setMessage(errorText(err), 'error');
    }
  }

  function fill(values) {
    stored = { ...values };
    for (const key of SETTING_KEYS) inputs[key].value = values[key] ?? '';
    updateButtons();
  }

  for (const key of SETTING_KEYS) {
    inputs[key].addEventListener('input', () => {
      setMessage('', ''); // "Saved." or an old error no longer describes the form
      updateButtons();
      clearTimeout(validateTimer);
      validateTimer = setTimeout(validateNow, VALIDATE_DELAY_MS);
    });
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault(); // Enter in a field saves too
    if (saving || hasErrors()) return;
    clearTimeout(validateTimer);
    validateSeq++; // a validation still in flight must not overwrite what save says
    saving = true;
    updateButtons();
    setMessage('', '');
    try {
      const result = await invoke('save_settings', { values: currentValues() });
      const values = (result && result.values) || currentValues();
      fill(values);
      showErrors({});
      const restarted = (result && Array.isArray(result.restarted)) ? result.restarted : [];
      setMessage(restarted.length ? `Saved. Restarted ${partsPhrase(restarted)}.` : 'Saved.', 'ok');
      setSettings({ ...(settingsMeta || {}), values });
    } catch (err) {
      setMessage(errorText(err), 'error');
      validateNow(); // point at the field(s) at fault
      refreshStored(); // a failed restart after a successful save still changed the stored values
    } finally {
      saving = false;
      updateButtons();
    }
  });

  revertButton.addEventListener('click', () => {
    if (!stored) return;
    fill(stored);
    setMessage('', '');
    validateNow();
  });

  /**
   * Re-reads the stored settings without touching the inputs (they may hold
   * edits that were rejected): updates what "unchanged" means and what the
   * rest of the UI (curl example) uses.
   */
  async function refreshStored() {
    try {
      const settings = await invoke('get_settings');
      if (!settings || !settings.values) return;
      settingsMeta = settings;
      stored = { ...settings.values };
      setSettings(settings);
      updateButtons();
    } catch (_) {
      // keep what we have; the message already says what went wrong
    }
  }

  /** Displays what get_settings returned, then checks it (stored values can be invalid too). */
  function load(settings) {
    settingsMeta = settings;
    fill((settings && settings.values) || {});
    setText(byId('settings-path'), (settings && settings.path) || '—');
    validateNow();
  }

  function loadFailed(err) {
    setMessage(`Could not load the settings: ${errorText(err)}`, 'error');
  }

  return { load, loadFailed };
}
