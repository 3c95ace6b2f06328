// Log view: the last 200 lines, oldest first. Follows new lines unless the
// user scrolled up to read; then a "Newest" button offers the way back.

import { el } from './dom.js';
import { fmtLogTime } from './format.js';

const MAX_LINES = 200;
const LEVELS = ['error', 'warn', 'info', 'debug', 'trace'];

/** Identity of a line, to drop duplicates between recent_logs and early `log` events. */
export function logKey(line) {
  return `${line.time}\u0000${line.level}\u0000${line.target}\u0000${line.message}`;
}

export function createLogView(container, jumpButton) {
  // Whether the view follows the newest line; updated by the user's scrolling.
  let follow = true;

  const nearBottom = () => container.scrollHeight - container.scrollTop - container.clientHeight < 24;

  container.addEventListener('scroll', () => {
    follow = nearBottom();
    if (follow) jumpButton.hidden = true;
  });
  jumpButton.addEventListener('click', () => {
    follow = true;
    jumpButton.hidden = true;
    container.scrollTop = container.scrollHeight;
  });

  function lineNode(line) {
    const level = String(line.level || '').toLowerCase();
    const target = String(line.target || '');
    // "analytics_desk::worker" → "worker": the crate prefix is the same on every line.
    const shortTarget = target.replace(/^analytics_desk::/, '');
    return el('div', { className: `log-line level-${LEVELS.includes(level) ? level : 'other'}` }, [
      el('span', { className: 'log-time', text: fmtLogTime(line.time), title: String(line.time || '') }),
      el('span', { className: 'log-level', text: String(line.level || '').toUpperCase() }),
      el('span', { className: 'log-target', text: shortTarget, title: target }),
      el('span', { className: 'log-msg', text: String(line.message ?? '') }),
    ]);
  }

  /** Appends lines (objects as sent by the backend), trimming to the newest 200. */
  function append(lines) {
    if (!lines.length) return;
    const fragment = document.createDocumentFragment();
    for (const line of lines.slice(-MAX_LINES)) fragment.append(lineNode(line));
    container.append(fragment);

    // Trim from the top. When the user is reading further up, keep their
    // lines in place by scrolling up as much as was removed.
    const before = container.scrollHeight;
    while (container.childElementCount > MAX_LINES) container.firstElementChild.remove();
    const removed = before - container.scrollHeight;

    if (follow) {
      container.scrollTop = container.scrollHeight;
    } else {
      if (removed > 0) container.scrollTop -= removed;
      jumpButton.hidden = false;
    }
  }

  /** Call when the view becomes visible again: scrolling doesn't happen while it is hidden. */
  function reveal() {
    if (follow) container.scrollTop = container.scrollHeight;
  }

  return { append, reveal };
}
