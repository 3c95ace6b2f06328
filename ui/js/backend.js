// Thin wrapper over the globals Tauri injects (`withGlobalTauri: true`).
// Everything that talks to the Rust side goes through here, so the rest of
// the UI never touches window.__TAURI__ directly.

function tauri() {
  return window.__TAURI__;
}

/** True when the Tauri bridge is present (false when the page is opened in a plain browser). */
export function hasBackend() {
  const t = tauri();
  return Boolean(t && t.core && t.event);
}

/**
 * Calls a backend command. Rejections carry a user-facing message; use
 * errorText() to turn whatever arrives into a string.
 */
export function invoke(cmd, args) {
  if (!hasBackend()) {
    return Promise.reject('The Analytics Desk backend is not available. Open this window from the app.');
  }
  return tauri().core.invoke(cmd, args);
}

/** Subscribes to a backend event; the handler receives the payload only. */
export function listen(name, handler) {
  if (!hasBackend()) return Promise.resolve(() => {});
  return tauri().event.listen(name, (event) => handler(event.payload));
}

/**
 * Commands reject with a plain string meant for the user. Tauri itself can
 * also reject with an Error or an object (e.g. an unknown command), so fall
 * back to something readable instead of "[object Object]".
 */
export function errorText(err) {
  if (typeof err === 'string') return err;
  if (err && typeof err.message === 'string') return err.message;
  try {
    return JSON.stringify(err);
  } catch (_) {
    return String(err);
  }
}
