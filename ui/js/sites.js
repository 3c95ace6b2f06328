// Sites tab: the list of sites and the selected site's figures.
// Reading stats on a timer is fine here (the live pipeline numbers are
// pushed instead); it only runs while the tab is visible.

import { invoke, errorText } from './backend.js';
import { byId, el, setText, setHidden, bindCopyButton } from './dom.js';
import { apiBase, curlExample, DASH, fmtInt, fmtPercent, fmtRate, isNum } from './format.js';
import { getState } from './store.js';

const REFRESH_MS = 2000;

export function createSites() {
  const list = byId('sites-list');
  const layout = byId('sites-layout');
  const errorBox = byId('sites-error');
  const refreshButton = byId('refresh-sites');
  const exportButton = byId('export-csv');
  const exportMessage = byId('export-message');

  let selected = null; // site_id
  let visible = false;
  let timer = null;
  let inFlight = null; // the running refresh, so ticks don't pile up
  let listKey = null; // last rendered list, to rebuild the DOM only on change
  let statsToken = 0; // drops answers for a site that is no longer selected

  // ---- list ---------------------------------------------------------------

  function emptyState() {
    const curl = el('pre', { className: 'code curl', text: curlExample(apiBase(getState().snapshot, getState().settings)) });
    const copy = el('button', { className: 'btn btn-sm', text: 'Copy curl', attrs: { type: 'button' } });
    bindCopyButton(copy, () => curl.textContent);
    return el('div', { className: 'empty' }, [
      el('div', { className: 'empty-icon', attrs: { 'aria-hidden': 'true' } }),
      el('p', { className: 'empty-title', text: 'No events yet — start the service and send one' }),
      el('p', { className: 'muted', text: 'Point a site at the API, or try it from a terminal. Events show up here once the worker has processed them.' }),
      curl,
      el('div', { className: 'empty-actions' }, [copy]),
    ]);
  }

  // Rows are kept per site and updated in place, so an element someone is
  // about to click (or hovering) survives the 2-second refresh.
  const rows = new Map(); // site_id → { row, count, fill }

  function siteRow(id) {
    const count = el('span', { className: 'site-row-count' });
    const fill = el('span', { className: 'site-row-fill' });
    const row = el('button', {
      className: 'site-row',
      attrs: { type: 'button', 'data-site': id, 'aria-pressed': 'false' },
      title: id,
    }, [el('span', { className: 'site-row-id', text: id }), count, el('span', { className: 'site-row-bar' }, [fill])]);
    return { row, count, fill };
  }

  function renderList(sites) {
    const key = JSON.stringify(sites) + (sites.length ? '' : apiBase(getState().snapshot, getState().settings));
    if (key !== listKey) {
      listKey = key;
      if (!sites.length) {
        rows.clear();
        list.replaceChildren(emptyState());
      } else {
        const max = sites.reduce((m, site) => Math.max(m, isNum(site.events) ? site.events : 0), 0);
        const order = [];
        const present = new Set();
        for (const site of sites) {
          const id = String(site.site_id);
          present.add(id);
          let entry = rows.get(id);
          if (!entry) rows.set(id, (entry = siteRow(id)));
          setText(entry.count, fmtInt(site.events));
          entry.fill.style.width = `${max && isNum(site.events) ? Math.max(2, (site.events / max) * 100) : 0}%`;
          order.push(entry.row);
        }
        for (const id of [...rows.keys()]) if (!present.has(id)) rows.delete(id);
        // Re-append only when the order changed: moving nodes keeps them alive.
        const current = [...list.children];
        if (current.length !== order.length || order.some((row, i) => current[i] !== row)) list.replaceChildren(...order);
      }
      markSelected();
    }
    setText(byId('sites-count'), sites.length ? `${fmtInt(sites.length)} ${sites.length === 1 ? 'site' : 'sites'}` : '');
    layout.classList.toggle('is-empty', sites.length === 0);
  }

  function markSelected() {
    for (const row of list.querySelectorAll('.site-row')) {
      const on = row.getAttribute('data-site') === selected;
      row.classList.toggle('selected', on);
      row.setAttribute('aria-pressed', String(on));
    }
  }

  list.addEventListener('click', (event) => {
    const row = event.target.closest('.site-row');
    if (row && list.contains(row)) select(row.getAttribute('data-site'));
  });

  // ---- selected site --------------------------------------------------------

  function clearStats() {
    setText(byId('site-total-events'), DASH);
    setText(byId('site-unique-users'), DASH);
    setText(byId('site-events-per-user'), DASH);
    byId('top-paths-table').tBodies[0].replaceChildren();
    byId('top-paths-chart').replaceChildren();
    setHidden(byId('top-paths-empty'), true);
  }

  function renderStats(stats) {
    const total = stats.total_events;
    const users = stats.unique_users;
    setText(byId('site-total-events'), fmtInt(total));
    setText(byId('site-unique-users'), fmtInt(users));
    setText(byId('site-events-per-user'), isNum(total) && isNum(users) && users > 0 ? fmtRate(total / users) : DASH);

    const paths = Array.isArray(stats.top_paths) ? stats.top_paths : [];
    const max = paths.reduce((m, p) => Math.max(m, isNum(p.count) ? p.count : 0), 0);

    // Table: rank, path, count, share of the site's events.
    byId('top-paths-table').tBodies[0].replaceChildren(...paths.map((p, i) => el('tr', {}, [
      el('td', { className: 'rank', text: String(i + 1) }),
      el('td', { className: 'path', text: String(p.path), title: String(p.path) }),
      el('td', { className: 'count num', text: fmtInt(p.count) }),
      el('td', { className: 'share num', text: isNum(total) && total > 0 ? fmtPercent(p.count / total) : DASH }),
    ])));
    setHidden(byId('top-paths-empty'), paths.length > 0);

    // Bar chart: plain DOM bars, widths relative to the top path. The count
    // column gets the width of the longest count so every track lines up.
    const chart = byId('top-paths-chart');
    const longest = paths.reduce((m, p) => Math.max(m, fmtInt(p.count).length), 1);
    chart.style.setProperty('--value-width', `${longest + 0.5}ch`);
    chart.replaceChildren(...(paths.length ? paths.map((p) => {
      const fill = el('div', { className: 'bar-fill' });
      fill.style.width = `${max ? Math.max(1, (p.count / max) * 100) : 0}%`;
      return el('div', { className: 'bar-row', title: `${p.path}: ${fmtInt(p.count)}` }, [
        el('div', { className: 'bar-label', text: String(p.path) }),
        el('div', { className: 'bar-track' }, [fill]),
        el('div', { className: 'bar-value', text: fmtInt(p.count) }),
      ]);
    }) : [el('p', { className: 'muted small', text: 'No paths for this site yet.' })]));
  }

  async function loadStats() {
    if (!selected) return;
    const token = ++statsToken;
    const siteId = selected;
    const stats = await invoke('site_stats', { siteId });
    if (token === statsToken && siteId === selected && stats) renderStats(stats);
  }

  function select(siteId) {
    if (!siteId || siteId === selected) return;
    selected = siteId;
    setText(byId('site-title'), siteId);
    exportButton.disabled = false;
    setHidden(exportMessage, true);
    markSelected();
    clearStats();
    loadStats().catch(showError);
  }

  // ---- refresh --------------------------------------------------------------

  function showError(err) {
    setText(errorBox, errorText(err));
    setHidden(errorBox, false);
  }

  async function doRefresh() {
    const sites = await invoke('list_sites');
    const rows = Array.isArray(sites) ? sites : [];
    renderList(rows);
    setHidden(byId('site-detail'), rows.length === 0);
    // First visit: open the busiest site so the tab never starts blank.
    if (!selected && rows.length) select(String(rows[0].site_id));
    else await loadStats();
    setHidden(errorBox, true);
  }

  function refresh() {
    if (!inFlight) {
      inFlight = doRefresh().catch(showError).finally(() => { inFlight = null; });
    }
    return inFlight;
  }

  // Export CSV: the backend writes the file (Downloads, else the app's data
  // dir) and answers its path, which is shown so the user can find it.
  exportButton.addEventListener('click', async () => {
    if (!selected) return;
    const siteId = selected;
    exportButton.disabled = true;
    setHidden(exportMessage, true);
    try {
      const path = await invoke('export_site_csv', { siteId });
      if (siteId === selected) {
        setText(exportMessage, `Saved to ${path}`);
        setHidden(exportMessage, false);
      }
    } catch (err) {
      // Shown beside the button: the sites banner is cleared by the next refresh.
      setText(exportMessage, `Export failed: ${errorText(err)}`);
      setHidden(exportMessage, false);
    } finally {
      exportButton.disabled = false;
    }
  });

  refreshButton.addEventListener('click', async () => {
    refreshButton.disabled = true;
    await refresh();
    refreshButton.disabled = false;
  });

  function tick() {
    if (visible && !document.hidden) refresh();
  }

  return {
    show() {
      if (visible) return;
      visible = true;
      refresh();
      timer = setInterval(tick, REFRESH_MS);
    },
    hide() {
      visible = false;
      clearInterval(timer);
      timer = null;
    },
  };
}
