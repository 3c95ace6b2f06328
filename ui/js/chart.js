// Live pipeline chart (uPlot): ingested/s and processed/s on the left axis,
// queue depth on the right axis, over the last two minutes. Fed only by
// pushed `pipeline` snapshots; nothing here polls.

import { byId, el, setText } from './dom.js';
import { fmtClock, fmtInt, fmtRate, isNum, DASH } from './format.js';

const WINDOW_S = 120;
const HEIGHT = 220;

/** Reads a colour from the CSS custom properties, so light/dark themes live in style.css. */
function cssVar(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

/** Upper bound of a y scale: a little headroom, and never a flat 0..0 axis. */
function headroom(max) {
  return Math.max(1, isNum(max) ? max * 1.15 : 1);
}

export function createPipelineChart(container) {
  // Column arrays as uPlot wants them: [x (s), ingested/s, processed/s, depth].
  const data = [[], [], [], []];
  const legend = {
    ingested: byId('legend-ingested'),
    processed: byId('legend-processed'),
    depth: byId('legend-depth'),
    time: byId('legend-time'),
  };
  const waiting = el('div', { className: 'chart-waiting', text: 'Waiting for data…' });
  let plot = null;

  function latestX() {
    const xs = data[0];
    return xs.length ? xs[xs.length - 1] : Date.now() / 1000;
  }

  function options(width) {
    const axisColor = cssVar('--chart-axis', '#5b6678');
    const gridColor = cssVar('--chart-grid', '#e6eaf0');
    const font = `11px ${cssVar('--font-ui', 'sans-serif')}`;
    const axisBase = { stroke: axisColor, font, ticks: { show: false }, grid: { stroke: gridColor, width: 1 } };
    return {
      width,
      height: HEIGHT,
      padding: [10, 4, 0, 4],
      legend: { show: false }, // our own legend above the chart (see updateLegend)
      cursor: {
        y: false,
        drag: { x: false, y: false, setScale: false },
        points: { size: 7 },
      },
      scales: {
        // Always show a full two-minute window ending at the newest point,
        // so the chart scrolls smoothly even before it has filled up.
        x: { time: true, range: () => { const max = latestX(); return [max - WINDOW_S, max]; } },
        rate: { range: (_u, _min, max) => [0, headroom(max)] },
        depth: { range: (_u, _min, max) => [0, headroom(max)] },
      },
      axes: [
        {
          ...axisBase,
          space: 70,
          size: 30,
          incrs: [5, 10, 15, 30, 60],
          values: (_u, splits) => splits.map((s) => fmtClock(new Date(s * 1000))),
        },
        { ...axisBase, scale: 'rate', size: 46, values: (_u, splits) => splits.map((v) => fmtShort(v)) },
        { ...axisBase, scale: 'depth', side: 1, size: 50, grid: { show: false }, values: (_u, splits) => splits.map((v) => fmtShort(v)) },
      ],
      series: [
        {},
        { label: 'Ingested/s', scale: 'rate', stroke: cssVar('--chart-ingested', '#2563eb'), fill: cssVar('--chart-ingested-fill', 'rgba(37,99,235,0.08)'), width: 2, points: { show: false } },
        { label: 'Processed/s', scale: 'rate', stroke: cssVar('--chart-processed', '#16a34a'), width: 2, points: { show: false } },
        { label: 'Queue depth', scale: 'depth', stroke: cssVar('--chart-depth', '#d97706'), width: 1.5, dash: [5, 4], points: { show: false } },
      ],
      hooks: {
        setCursor: [(u) => updateLegend(u.cursor.idx)],
      },
    };
  }

  /** Axis labels: integers plain, small fractions with one decimal. */
  function fmtShort(v) {
    if (!isNum(v)) return '';
    if (v >= 10000) return `${Math.round(v / 1000)}k`;
    return Number.isInteger(v) ? fmtInt(v) : fmtRate(v);
  }

  /** Legend values: the hovered point, or the newest when the cursor is away. */
  function updateLegend(idx) {
    const n = data[0].length;
    const hovering = idx !== null && idx !== undefined && idx >= 0 && idx < n;
    const i = hovering ? idx : n - 1;
    if (i < 0) {
      setText(legend.ingested, DASH);
      setText(legend.processed, DASH);
      setText(legend.depth, DASH);
      setText(legend.time, '');
      return;
    }
    setText(legend.ingested, fmtRate(data[1][i]));
    setText(legend.processed, fmtRate(data[2][i]));
    setText(legend.depth, fmtInt(data[3][i]));
    setText(legend.time, hovering ? fmtClock(new Date(data[0][i] * 1000)) : '');
  }

  function build() {
    if (plot) plot.destroy();
    if (typeof window.uPlot !== 'function') {
      waiting.textContent = 'Chart unavailable (uPlot failed to load).';
      container.append(waiting);
      return;
    }
    plot = new window.uPlot(options(Math.max(200, container.clientWidth)), data, container);
    container.append(waiting); // keep the overlay above the canvas
    waiting.hidden = data[0].length >= 2;
  }

  /** Adds one snapshot; snapshots older than or equal to the newest are ignored. */
  function push(snapshot) {
    if (!snapshot || !isNum(snapshot.at)) return;
    const x = snapshot.at / 1000;
    const xs = data[0];
    if (xs.length && x <= xs[xs.length - 1]) return;
    xs.push(x);
    data[1].push(isNum(snapshot.ingested_per_sec) ? snapshot.ingested_per_sec : null);
    data[2].push(isNum(snapshot.processed_per_sec) ? snapshot.processed_per_sec : null);
    data[3].push(isNum(snapshot.queue_depth) ? snapshot.queue_depth : null); // null: gap (database unreadable)
    // Drop what has scrolled out (keep a few seconds so the line enters from the edge).
    while (xs.length && xs[0] < x - WINDOW_S - 5) data.forEach((col) => col.shift());
    if (plot) plot.setData(data);
    waiting.hidden = Boolean(plot) && xs.length >= 2; // never hide the 'unavailable' note
    updateLegend(plot ? plot.cursor.idx : null);
  }

  build();

  // Follow the card's width (window resizes, grid reflow).
  if (typeof ResizeObserver === 'function') {
    let lastWidth = container.clientWidth;
    new ResizeObserver(() => {
      const width = container.clientWidth;
      if (plot && width > 0 && width !== lastWidth) {
        lastWidth = width;
        plot.setSize({ width, height: HEIGHT });
      }
    }).observe(container);
  }

  // Colours come from CSS variables, which change with the system theme.
  const dark = window.matchMedia ? window.matchMedia('(prefers-color-scheme: dark)') : null;
  if (dark && dark.addEventListener) dark.addEventListener('change', build);

  return { push };
}
