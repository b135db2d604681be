/**
 * The status page, /metrics, /entries, `show --json` and `mckv status` against three real
 * controller processes over three real memcached, the page in a real headless Chromium (Debian's
 * chromium, driven by playwright-core): it shows three nodes, then one of them down once it is
 * killed. `MCKV_UPDATE_SCREENSHOT=1` writes the screenshot to docs/status-page.png.
 */

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLine } from '../src/client/repl.ts';
import { endpointStatuses, renderStatusTable } from '../src/client/status.ts';
import { TextClient } from '../src/client/text-client.ts';
import { loadConfig } from '../src/config.ts';
import { Cluster, repoRoot } from '../src/jepsen/cluster.ts';
import { parseClusterStatus } from '../src/status/show-json.ts';
import { sample } from './support/prometheus.ts';
import { itemAt } from '../src/runtime/item-at.ts';

const chromiumPath = '/usr/bin/chromium';
const chromiumArgs = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
/** A key a client may store that is also markup: the pages must show it, never run it. */
const hostileKey = `<script>window.pwned=1</script><img/src=x/onerror=window.pwned=2>"'&amp;`;

describe('the status page and CLI status of a real cluster', () => {
  let cluster: Cluster;
  let browser: Browser | null = null;

  beforeAll(async () => {
    if (!existsSync(chromiumPath)) throw new Error(`${chromiumPath} not found: apt-get install -y chromium (scripts/ensure-memcached.sh does it)`);
    cluster = await Cluster.start({ mode: 'linearizability', backend: 'memcache' });
    browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, headless: true, timeout: 30_000 });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await cluster?.stop();
  });

  const httpBase = (id: string): string => `http://127.0.0.1:${cluster.node(id).httpPort}`;

  it('serves metrics on every controller, and they move with traffic', async () => {
    const before = await Promise.all(cluster.nodes.map(async (node) => (await fetch(`${httpBase(node.id)}/metrics`)).text()));
    expect(before.filter((text) => sample(text, 'mckv_role', { role: 'leader' }) === 1)).toHaveLength(1);
    for (const text of before) expect(sample(text, 'mckv_peers_up')).toBe(2);
    const client = await TextClient.connect('127.0.0.1', cluster.node('n1').clientPort);
    try {
      for (let count = 0; count < 20; count += 1) await client.request(`set metrics-${count} 0 0 1\r\nv\r\n`, 'set');
      await client.request('get metrics-0 metrics-missing\r\n', 'get');
    } finally {
      client.close();
    }
    const after = await (await fetch(`${httpBase('n1')}/metrics`)).text();
    const stored = (text: string): number => sample(text, 'mckv_requests_total', { command: 'set', outcome: 'stored' }) ?? 0;
    expect(stored(after) - stored(itemAt(before, 0))).toBe(20);
    expect(sample(after, 'mckv_request_duration_seconds_count', { command: 'set', outcome: 'stored' })).toBeGreaterThanOrEqual(20);
    expect(sample(after, 'mckv_commit_index')).toBeGreaterThanOrEqual((sample(itemAt(before, 0), 'mckv_commit_index') ?? 0) + 20);
    expect(sample(after, 'mckv_backend_up')).toBe(1);
    expect(sample(after, 'mckv_backend_memory_limit_bytes')).toBe(256 * 1024 * 1024);
  });

  it('lists a hostile key on /entries as text, in the page and in the browser', async () => {
    const client = await TextClient.connect('127.0.0.1', cluster.node('n2').clientPort);
    try {
      expect((await client.request(`set ${hostileKey} 7 0 5\r\nhello\r\n`, 'set')).lines).toEqual(['STORED']);
    } finally {
      client.close();
    }
    const html = await (await fetch(`${httpBase('n1')}/entries`)).text();
    expect(html).not.toContain('<script>window');
    expect(html).not.toContain('<img');
    const page = await browser!.newPage();
    try {
      await page.goto(`${httpBase('n1')}/entries`, { timeout: 15_000 });
      const row = page.locator('#entries tr', { hasText: 'window.pwned' });
      expect(await row.locator('td').allTextContents()).toEqual([hostileKey, '5', '7', 'never']);
      expect(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned)).toBeUndefined();
    } finally {
      await page.close();
    }
  });

  it('answers show --json with every node, and mckv status with one table', async () => {
    const client = await TextClient.connect('127.0.0.1', cluster.node('n3').clientPort);
    const lines: string[] = [];
    try {
      expect(await runLine(client, 'show --json', (line) => lines.push(line))).toBe(true);
    } finally {
      client.close();
    }
    expect(lines).toHaveLength(1);
    const status = parseClusterStatus(itemAt(lines, 0));
    expect(status?.from).toBe('n3');
    expect(status?.nodes.map((node) => node.state)).toEqual(['self', 'up', 'up']);
    const statuses = await endpointStatuses(loadConfig(cluster.configFile), 2000);
    expect(statuses.map((entry) => entry.state)).toEqual(['up', 'up', 'up']);
    expect(statuses.filter((entry) => entry.summary?.role === 'leader')).toHaveLength(1);
    const table = renderStatusTable(statuses);
    expect(table[1]).toMatch(/^\| NODE +\| ADDRESS +\| ROLE +\| TERM +\| LEADER +\| COMMITTED +\| APPLIED +\| STATE +\| BACKEND +\|$/);
    expect(table).toHaveLength(7);
  });

  it('shows three nodes in Chromium, then one down once it is killed', async () => {
    const page = await browser!.newPage({ viewport: { width: 1400, height: 340 } });
    try {
      await page.goto(`${httpBase('n1')}/`, { timeout: 15_000 });
      await page.waitForSelector('#nodes tr[data-node="n3"][data-state="up"]', { timeout: 15_000 });
      expect(await page.locator('#nodes tr').count()).toBe(3);
      expect(await page.locator('#nodes tr[data-node="n1"]').getAttribute('data-state')).toBe('self');
      expect(await page.locator('#nodes tr[data-node="n2"]').getAttribute('data-state')).toBe('up');
      await cluster.kill('n3');
      await page.waitForSelector('#nodes tr[data-node="n3"][data-state="down"]', { timeout: 15_000 });
      expect(await page.locator('#nodes tr[data-node="n3"] td[data-column="state"]').textContent()).toBe('down');
      const screenshot = process.env.MCKV_UPDATE_SCREENSHOT === '1' ? path.join(repoRoot, 'docs', 'status-page.png') : path.join(cluster.dir, 'status-page.png');
      await page.screenshot({ path: screenshot, fullPage: true });
    } finally {
      await page.close();
    }
  });

  it('mckv status prints the killed node down and exits 1', async () => {
    const { code, stdout } = await runMain(['status', '-c', cluster.configFile, '--timeout', '2']);
    expect(code).toBe(1);
    const rows = stdout.split('\n').filter((line) => /^\| n\d/.test(line));
    expect(rows.map((row) => itemAt(row.split('|'), 8).trim())).toEqual(['up', 'up', 'down']);
    expect(stdout).toMatch(/^n3: cannot connect to 127\.0\.0\.1:\d+/m);
  }, 60_000);
});

function runMain(args: string[]): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'main.ts'), ...args], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), 50_000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout });
    });
  });
}
