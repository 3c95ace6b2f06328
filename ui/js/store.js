// The little shared state: the newest Snapshot and the saved settings.
// Views subscribe and re-render from it; nothing else holds copies.

import { isNum } from './format.js';

const state = {
  snapshot: null, // latest Snapshot (from get_snapshot, start/stop results or `pipeline` events)
  settings: null, // { values, path } from get_settings / save_settings
};
const subscribers = [];

export function getState() {
  return state;
}

export function subscribe(fn) {
  subscribers.push(fn);
}

function notify() {
  for (const fn of subscribers) fn(state);
}

/**
 * Takes a snapshot unless it is older than the one we have: an answer to
 * get_snapshot can arrive after a newer `pipeline` event. Returns whether it
 * was taken.
 */
export function acceptSnapshot(snapshot) {
  if (!snapshot || typeof snapshot !== 'object') return false;
  const current = state.snapshot;
  if (current && isNum(current.at) && isNum(snapshot.at) && snapshot.at < current.at) return false;
  state.snapshot = snapshot;
  notify();
  return true;
}

export function setSettings(settings) {
  state.settings = settings;
  notify();
}
