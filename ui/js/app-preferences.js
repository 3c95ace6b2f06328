// Settings → App: the checkboxes of the app's preferences (how it lives on this
// machine). Each change is saved at once through set_preferences, which also
// writes or removes the login item; on an error the box goes back and says why.

import { invoke, errorText } from './backend.js';
import { byId, setText } from './dom.js';

export const PREFERENCE_BOXES = ['keep_running_in_background', 'start_on_login', 'start_service_on_open'];

export function createAppPreferences() {
  const message = byId('app-preferences-message');
  const boxes = Object.fromEntries(PREFERENCE_BOXES.map((key) => [key, byId(`pref-${key}`)]));
  let saved = null; // the preferences as last read or saved (all fields, not only the boxes)

  function show(preferences) {
    saved = preferences;
    for (const key of PREFERENCE_BOXES) boxes[key].checked = Boolean(preferences[key]);
  }

  function say(text, kind) {
    setText(message, text);
    message.dataset.kind = kind || '';
  }

  async function save(key) {
    if (!saved) return;
    const value = boxes[key].checked;
    for (const box of Object.values(boxes)) box.disabled = true;
    let wanted;
    try {
      // The other preferences as stored now (the notice may have been recorded
      // since this tab read them): only this box's key changes.
      wanted = { ...(await invoke('get_preferences')), [key]: value };
    } catch (err) {
      for (const box of Object.values(boxes)) box.disabled = false;
      show(saved);
      say(errorText(err), 'error');
      return;
    }
    try {
      show(await invoke('set_preferences', { preferences: wanted }));
      say('Saved.', 'ok');
    } catch (err) {
      show(saved);
      say(errorText(err), 'error');
    } finally {
      for (const box of Object.values(boxes)) box.disabled = false;
    }
  }

  for (const key of PREFERENCE_BOXES) boxes[key].addEventListener('change', () => save(key));
  // The tray's Quit, for desktops without a tray: finishes the batch, stops the service and the database.
  byId('quit-app').addEventListener('click', () => invoke('quit_app').catch((err) => say(errorText(err), 'error')));

  return {
    /** Reads the preferences (again, e.g. when the Settings tab opens). */
    async load() {
      try {
        show(await invoke('get_preferences'));
      } catch (err) {
        say(`Could not read the app's preferences: ${errorText(err)}`, 'error');
      }
    },
  };
}
