// Three tabs. The active one is mirrored in the URL hash (#overview,
// #sites, #settings) so a reload keeps it and a tab can be linked directly.

import { byId } from './dom.js';

export const TABS = ['overview', 'sites', 'settings'];

export function createTabs(onChange) {
  let active = null;

  function activate(name, { focus = false } = {}) {
    if (!TABS.includes(name)) name = 'overview';
    if (name === active) return;
    const previous = active;
    active = name;
    for (const tab of TABS) {
      const on = tab === name;
      const button = byId(`tab-${tab}`);
      button.setAttribute('aria-selected', String(on));
      button.tabIndex = on ? 0 : -1;
      byId(`view-${tab}`).hidden = !on;
    }
    if (focus) byId(`tab-${name}`).focus();
    if (location.hash !== `#${name}`) history.replaceState(null, '', `#${name}`);
    onChange(name, previous);
  }

  for (const tab of TABS) {
    const button = byId(`tab-${tab}`);
    button.addEventListener('click', () => activate(tab));
    // Arrow keys move between tabs (the usual tablist keyboard pattern).
    button.addEventListener('keydown', (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      event.preventDefault();
      const next = TABS[(TABS.indexOf(tab) + step + TABS.length) % TABS.length];
      activate(next, { focus: true });
    });
  }
  window.addEventListener('hashchange', () => activate(location.hash.slice(1)));

  activate(location.hash.slice(1));
  return { activate };
}
