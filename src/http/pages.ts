/**
 * The status page's HTML: self-contained (inline CSS and JS, no build step, nothing fetched from
 * elsewhere), served under a Content-Security-Policy that allows only these inline parts (by hash)
 * and fetches to this origin.
 *
 * `/` draws the cluster as `show` does and refreshes itself from `/status.json` every second,
 * writing every value with `textContent`, never as HTML. `/entries` is rendered here, and every
 * value in it goes through `escapeHtml`: keys are a client's bytes.
 */

import { createHash } from 'node:crypto';
import { displayKey, type EntriesPage } from './entries.ts';

const style = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2329; background: #fafbfc; }
h1 { font-size: 1.3em; margin: 0 0 .2em; }
.sub { color: #5b6670; margin-bottom: 1em; }
table { border-collapse: collapse; background: #fff; box-shadow: 0 1px 2px #0002; }
th, td { padding: .35em .8em; border-bottom: 1px solid #e4e7ea; text-align: left; white-space: nowrap; }
th { background: #eef1f4; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.up { color: #137333; font-weight: 600; } .self { color: #1a57b5; font-weight: 600; }
.down { color: #b3261e; font-weight: 700; } tr.down { background: #fdecea; } tr.down td { color: #8c6f6d; }
tr.down td.down { color: #b3261e; }
.bad { color: #b3261e; } #banner { color: #b3261e; font-weight: 600; min-height: 1.4em; }
code { font-family: ui-monospace, monospace; }
nav a { margin-right: 1.2em; }
`;

const script = `
'use strict';
const columns = ['node', 'state', 'heard', 'role', 'term', 'leader', 'committed', 'applied', 'queue', 'ops', 'backend', 'sees'];
const numeric = new Set(['term', 'committed', 'applied', 'queue', 'ops']);
function cell(row, column, text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  td.dataset.column = column;
  if (numeric.has(column)) td.className = 'num';
  if (className) td.className = className;
  row.appendChild(td);
}
function age(ms) {
  if (ms === null) return 'never';
  return ms < 10000 ? Math.round(ms) + ' ms' : (ms / 1000).toFixed(1) + ' s';
}
function backend(summary) {
  if (!summary.backendOk) return summary.backend + ' DOWN (' + summary.backendDetail + ')';
  const memory = summary.backendMemory;
  const used = memory && memory.limitBytes > 0 ? ', ' + Math.round(100 * memory.usedBytes / memory.limitBytes) + '% of ' + Math.round(memory.limitBytes / 1048576) + ' MB' : '';
  return summary.backend + ' ok' + used;
}
function render(status) {
  document.getElementById('title').textContent = 'mckv cluster as seen by ' + status.from;
  document.getElementById('mode').textContent = 'mode ' + status.mode + ' · updated ' + new Date().toLocaleTimeString();
  const body = document.getElementById('nodes');
  const rows = [];
  for (const node of status.nodes) {
    const row = document.createElement('tr');
    row.dataset.node = node.node;
    row.dataset.state = node.state;
    if (node.state === 'down') row.className = 'down';
    cell(row, 'node', node.node);
    const catchingUp = node.summary !== null && node.summary.caughtUp === false;
    cell(row, 'state', catchingUp ? node.state + ', catching up' : node.state, node.state);
    cell(row, 'heard', node.state === 'self' ? '-' : age(node.lastHeardAgoMs));
    const s = node.summary;
    if (s === null) {
      for (const column of columns.slice(3)) cell(row, column, '?');
    } else {
      cell(row, 'role', s.role);
      cell(row, 'term', String(s.term));
      cell(row, 'leader', s.leader === null ? '-' : s.leader);
      cell(row, 'committed', s.committed);
      cell(row, 'applied', s.applied);
      cell(row, 'queue', String(s.queueDepth));
      cell(row, 'ops', String(s.opsServed));
      cell(row, 'backend', backend(s), s.backendOk ? '' : 'bad');
      cell(row, 'sees', s.peersUp.map((view) => view.peer + ':' + (view.up ? 'up' : 'down')).join(' '));
    }
    rows.push(row);
  }
  body.replaceChildren(...rows);
}
async function refresh() {
  const banner = document.getElementById('banner');
  try {
    const response = await fetch('status.json', { cache: 'no-store' });
    if (!response.ok) throw new Error('HTTP ' + response.status);
    render(await response.json());
    banner.textContent = '';
  } catch (error) {
    banner.textContent = 'This controller is not answering (' + error.message + '); the table shows what it last said.';
  }
  setTimeout(refresh, 1000);
}
refresh();
`;

/** The status page's Content-Security-Policy: its own inline style and script, fetches to itself. */
export const STATUS_PAGE_POLICY = `default-src 'none'; style-src '${sha256(style)}'; script-src '${sha256(script)}'; connect-src 'self'; base-uri 'none'; form-action 'none'`;
/** The entries page has no script. */
export const ENTRIES_PAGE_POLICY = `default-src 'none'; style-src '${sha256(style)}'; base-uri 'none'; form-action 'none'`;

/** `/`: the cluster, refreshing itself. */
export function statusPage(node: string): string {
  const title = `mckv ${escapeHtml(node)}`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title}</title><meta name="viewport" content="width=device-width">
<style>${style}</style></head>
<body>
<h1 id="title">mckv cluster as seen by ${escapeHtml(node)}</h1>
<div class="sub"><span id="mode">loading…</span></div>
<nav><a href="entries">stored entries</a><a href="metrics">metrics</a><a href="status.json">status.json</a></nav>
<p id="banner"></p>
<table><thead><tr><th>node</th><th>state</th><th>last heard</th><th>role</th><th>term</th><th>leader</th><th>committed</th><th>applied</th><th>queue</th><th>ops</th><th>backend</th><th>sees</th></tr></thead>
<tbody id="nodes"></tbody></table>
<p class="sub">A node that is down shows what it said last. Refreshes every second.</p>
<script>${script}</script>
</body></html>
`;
}

/** `/entries`: one page of stored entries. */
export function entriesPageHtml(node: string, page: EntriesPage, options: { nowMs: number; limit: number }): string {
  const rows = page.rows
    .map((row) => {
      const size = row.sizeBytes === null ? '?' : String(row.sizeBytes);
      const flags = row.flags === null ? '?' : String(row.flags);
      return `<tr><td><code>${escapeHtml(displayKey(row.key))}</code></td><td class="num">${size}</td><td class="num">${flags}</td><td>${escapeHtml(expiry(row.expiresAtMs, options.nowMs))}</td></tr>`;
    })
    .join('\n');
  const next = page.next === null ? '' : `<a id="next" href="entries?cursor=${escapeHtml(encodeURIComponent(page.next))}&amp;limit=${options.limit}">next page</a>`;
  const warning = page.readError === null ? '' : `<p id="banner">Sizes and flags unavailable: ${escapeHtml(page.readError)}</p>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mckv ${escapeHtml(node)}: stored entries</title><meta name="viewport" content="width=device-width">
<style>${style}</style></head>
<body>
<h1>Stored entries on ${escapeHtml(node)}</h1>
<div class="sub">${page.keyCount} keys in this replica; ${page.rows.length} on this page, in byte order of their keys.</div>
<nav><a href="./">cluster</a><a href="entries">first page</a>${next}</nav>
${warning}
<table><thead><tr><th>key</th><th>size (bytes)</th><th>flags</th><th>expires</th></tr></thead>
<tbody id="entries">
${rows}
</tbody></table>
</body></html>
`;
}

/** Text made safe inside HTML elements and quoted attributes. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}

function expiry(expiresAtMs: number, nowMs: number): string {
  if (expiresAtMs === 0) return 'never';
  const inSeconds = Math.max(0, Math.round((expiresAtMs - nowMs) / 1000));
  return `${new Date(expiresAtMs).toISOString()} (in ${inSeconds} s)`;
}

function sha256(text: string): string {
  return `sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}`;
}
