// The fixes offered when Start is refused a port below 1024 (the snapshot's
// structured `port_error`, never the message text): "Allow port N" and
// "Use port 8000 instead", in the #service-error banner. The backend does the
// work (desktop/port_access.rs: pkexec setcap on the helper, or saving PORT,
// then Start again); this only shows the buttons and forwards the clicks.

import { invoke, errorText } from './backend.js';
import { byId, setText, setHidden } from './dom.js';
import { acceptSnapshot, getState } from './store.js';

/** `onFixed` is called after a fix started the service (to clear the start error shown). */
export function createPortAccess({ onFixed }) {
  const box = byId('port-fix');
  const allow = byId('allow-port');
  const fallback = byId('use-port-8000');
  const note = byId('port-fix-note');
  const error = byId('port-fix-error');
  let busy = null; // the button whose call is in flight

  async function run(button, command) {
    if (busy) return;
    busy = button;
    setHidden(error, true);
    render();
    try {
      const snapshot = await invoke(command);
      onFixed();
      acceptSnapshot(snapshot);
    } catch (err) {
      setText(error, errorText(err));
      setHidden(error, false);
    } finally {
      busy = null;
      render();
    }
  }

  allow.addEventListener('click', () => run(allow, 'allow_privileged_port'));
  fallback.addEventListener('click', () => run(fallback, 'use_fallback_port'));

  function render() {
    const snapshot = getState().snapshot;
    const portError = snapshot && snapshot.port_error;
    setHidden(box, !portError && !busy);
    if (!portError) {
      if (!busy) setHidden(error, true);
      return;
    }
    // Without a helper to give the capability to, only the other port can help.
    const canAllow = Boolean(portError.helper);
    setHidden(allow, !canAllow);
    setHidden(note, !canAllow);
    setText(allow, busy === allow ? 'Waiting for permission…' : `Allow port ${portError.port}`);
    setText(fallback, busy === fallback ? 'Switching…' : 'Use port 8000 instead');
    allow.disabled = Boolean(busy);
    fallback.disabled = Boolean(busy);
  }

  return { render };
}
