// The first-close notice: the backend sends `background-notice` when the window
// is closed while it keeps collecting and the user was never told. "Keep running"
// records that (hide_to_background) and hides the window; "Quit" quits the app.

import { invoke, listen, errorText } from './backend.js';
import { byId } from './dom.js';

export function createBackgroundNotice() {
  const notice = byId('background-notice');
  const ok = byId('background-notice-ok');

  ok.addEventListener('click', async () => {
    try {
      await invoke('hide_to_background');
      notice.hidden = true;
    } catch (err) {
      byId('background-notice-text').textContent = errorText(err);
    }
  });
  byId('background-notice-quit').addEventListener('click', () => invoke('quit_app').catch(() => {}));

  listen('background-notice', () => {
    notice.hidden = false;
    ok.focus();
  }).catch(() => {});
}
