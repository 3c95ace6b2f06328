// Formatting of numbers, times and status texts. Pure functions, no DOM.

export const DASH = '—';

// The user's locale decides the thousands separator and decimal mark.
const intFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const rateFormat = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const pctFormat = new Intl.NumberFormat(undefined, { style: 'percent', minimumFractionDigits: 1, maximumFractionDigits: 1 });

export function isNum(value) {
  return typeof value === 'number' && Number.isFinite(value);
}

/** Integer with thousands separators, or "—" for null/missing. */
export function fmtInt(value) {
  return isNum(value) ? intFormat.format(value) : DASH;
}

/** Rate with one decimal, or "—". */
export function fmtRate(value) {
  return isNum(value) ? rateFormat.format(value) : DASH;
}

/** Share (0..1) as a percentage with one decimal. */
export function fmtPercent(value) {
  return isNum(value) ? pctFormat.format(value) : DASH;
}

const pad2 = (n) => String(n).padStart(2, '0');

/** HH:MM:SS in local time, 24-hour (compact and unambiguous in a log). */
export function fmtClock(date) {
  return `${pad2(date.getHours())}:${pad2(date.getMinutes())}:${pad2(date.getSeconds())}`;
}

/** Log time: an RFC 3339 string shown as local HH:MM:SS; the raw text if it doesn't parse. */
export function fmtLogTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso || '') : fmtClock(date);
}

/** The port of "127.0.0.1:1000" or "[::1]:1000". */
export function portOf(addr) {
  const match = /:(\d+)$/.exec(String(addr || ''));
  return match ? match[1] : null;
}

/** The state of an api/worker part, defaulting to "stopped" when absent or unknown. */
export function partState(part) {
  const state = part && part.state;
  return ['stopped', 'starting', 'running', 'failed'].includes(state) ? state : 'stopped';
}

/** "Running on port 1000", "Stopped", "Starting…", "Failed: <reason>". */
export function partStatusText(part, { withPort = false } = {}) {
  switch (partState(part)) {
    case 'running': {
      const port = withPort ? portOf(part.addr) : null;
      return port ? `Running on port ${port}` : 'Running';
    }
    case 'starting':
      return 'Starting…';
    case 'failed':
      return part.reason ? `Failed: ${part.reason}` : 'Failed';
    default:
      return 'Stopped';
  }
}

/** Short word for the header pills. */
export function stateWord(state) {
  return {
    running: 'Running',
    starting: 'Starting…',
    stopped: 'Stopped',
    failed: 'Failed',
    external: 'External',
  }[state] || DASH;
}

/** Database status for #db-status, plus a one-line explanation. */
export function databaseStatus(db) {
  const state = db && db.state;
  switch (state) {
    case 'external':
      return { text: 'External', note: 'Your own database; the app connects to it but does not manage it.' };
    case 'running':
      return { text: 'Running', note: 'Local database started by the app; it stops when the app quits.' };
    case 'starting':
      return { text: 'Starting…', note: 'Starting a local database because nothing answered at the URL.' };
    case 'stopped':
      return { text: 'Stopped', note: 'The app starts a local database with the service when nothing answers at the URL.' };
    case 'failed':
      return { text: db.reason ? `Failed: ${db.reason}` : 'Failed', note: '' };
    default:
      return { text: DASH, note: '' };
  }
}

/** Friendly name of the managed database binary. */
export function databaseKind(kind) {
  if (kind === 'mongod') return 'MongoDB (mongod)';
  if (kind === 'secantusd-rs') return 'SecantusDB (secantusd-rs)';
  return kind || DASH;
}

/**
 * Base URL of the API: the snapshot's api_url while it runs, otherwise the
 * address the saved settings will use (so the curl example is useful even
 * before the first start). Loopback and the wildcard listen address become
 * `localhost`, as the backend's api_url does.
 */
export function apiBase(snapshot, settings) {
  if (snapshot && snapshot.api_url) return String(snapshot.api_url).replace(/\/+$/, '');
  const values = (settings && settings.values) || {};
  let host = values.HOST || '127.0.0.1';
  if (['0.0.0.0', '127.0.0.1', '::', '[::]', '::1', '[::1]'].includes(host)) host = 'localhost';
  if (host.includes(':') && !host.startsWith('[')) host = `[${host}]`;
  return `http://${host}:${values.PORT || '1000'}`;
}

/**
 * The POST /event curl example. The JSON body spans several lines (fine inside
 * single quotes) so it stays readable in the narrow Service card.
 */
export function curlExample(base) {
  return [
    `curl -X POST ${base}/event \\`,
    "  -H 'Content-Type: application/json' \\",
    '  -d \'{"site_id": "site-001",',
    '       "event_type": "page_view",',
    '       "path": "/pricing",',
    '       "user_id": "user-123"}\'',
  ].join('\n');
}

/** "API and worker", "API", "worker" from a list of restarted parts. */
export function partsPhrase(parts) {
  const names = [];
  for (const part of parts) {
    if (part === 'all') names.push('API', 'worker');
    else if (part === 'api') names.push('API');
    else if (part === 'worker') names.push('worker');
    else names.push(String(part));
  }
  const unique = [...new Set(names)];
  if (unique.length <= 1) return unique.join('');
  return `${unique.slice(0, -1).join(', ')} and ${unique[unique.length - 1]}`;
}
