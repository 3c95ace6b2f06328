// Small DOM helpers. All data reaches the page through textContent or
// attributes set with setAttribute, never through innerHTML.

export const byId = (id) => document.getElementById(id);

/**
 * Creates an element. opts: { className, text, attrs: {name: value}, title }.
 * Children may be nodes or strings (strings become text nodes).
 */
export function el(tag, opts = {}, children = []) {
  const node = document.createElement(tag);
  if (opts.className) node.className = opts.className;
  if (opts.text !== undefined && opts.text !== null) node.textContent = String(opts.text);
  if (opts.title) node.title = opts.title;
  if (opts.attrs) {
    for (const [name, value] of Object.entries(opts.attrs)) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

/** Sets text only when it changed, so a live refresh doesn't disturb a text selection. */
export function setText(node, text) {
  const value = text === undefined || text === null ? '' : String(text);
  if (node && node.textContent !== value) node.textContent = value;
}

/** Shows or hides through the `hidden` attribute (CSS forces display:none on [hidden]). */
export function setHidden(node, hidden) {
  if (node && node.hidden !== hidden) node.hidden = hidden;
}

/**
 * Copies text to the clipboard. navigator.clipboard is not always available
 * in a webview (it needs a secure context and permission), so fall back to
 * the old select-and-copy trick with an off-screen textarea.
 */
export async function copyText(text) {
  try {
    if (navigator.clipboard && navigator.clipboard.writeText) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch (_) {
    // fall through to the fallback
  }
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.className = 'offscreen';
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch (_) {
    ok = false;
  }
  area.remove();
  return ok;
}

/** Wires a button that copies getText() and briefly confirms on the button itself. */
export function bindCopyButton(button, getText) {
  const label = button.textContent;
  let timer = null;
  button.addEventListener('click', async () => {
    const text = getText();
    if (!text) return;
    const ok = await copyText(text);
    button.textContent = ok ? 'Copied' : 'Select & copy';
    clearTimeout(timer);
    timer = setTimeout(() => { button.textContent = label; }, 1500);
  });
}
