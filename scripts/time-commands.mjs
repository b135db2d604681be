/* global process, console, setTimeout */
// How long mckv's commands take to answer, as a user meets them: the checker on a small history,
// a controller from spawn until its client port accepts, and a one-shot client command against a
// running cluster. Each is timed from spawn, RUNS times; the medians are printed.
//
//   node scripts/time-commands.mjs [--tsx] [--runs 5] [--history FILE] [--model MODEL]
//
// Without --tsx it runs the compiled dist/main.js (npm run build first); with --tsx it runs
// main.ts through tsx, as the tests do. Three controllers on free loopback ports, embedded store.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

const repoRoot = path.resolve(import.meta.dirname, '..');
const argv = process.argv.slice(2);
const useTsx = argv.includes('--tsx');
const runs = Number(option('--runs', '5'));
const history = option('--history', path.join(repoRoot, 'test_cases', 'histories', 'seq101-k0-prefix.jsonl'));
const model = option('--model', 'linearizability');
const entry = useTsx ? ['--import', 'tsx', path.join(repoRoot, 'main.ts')] : [path.join(repoRoot, 'dist', 'main.js')];

function option(name, fallback) {
  const at = argv.indexOf(name);
  return at >= 0 && at + 1 < argv.length ? argv[at + 1] : fallback;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Runs mckv with args to its exit; resolves with the seconds it took, its stdout and exit code. */
function timeRun(args) {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn(process.execPath, [...entry, ...args], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ seconds: (performance.now() - start) / 1000, stdout, code }));
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function accepts(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

async function untilAccepts(port, child, deadlineMs) {
  while (!(await accepts(port))) {
    if (child.exitCode !== null) throw new Error(`controller on ${port} exited ${child.exitCode}`);
    if (performance.now() > deadlineMs) throw new Error(`controller on ${port} did not listen`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** CPU seconds (user + system) process pid has used so far, from /proc (Linux); NaN elsewhere. */
function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return Number.NaN;
  }
}

/** Starts three controllers; resolves with the seconds each took to listen (wall, CPU), and a stop function. */
async function startCluster(dir) {
  const ports = [];
  for (let i = 0; i < 6; i += 1) ports.push(await freePort());
  const nodes = [1, 2, 3].map((n) => ({ id: `n${n}`, client: ports[n - 1], peer: ports[n + 2] }));
  const sections = nodes.map((node) => `[node.${node.id}]\nclient = 127.0.0.1:${node.client}\npeer = 127.0.0.1:${node.peer}\nmemcached = 127.0.0.1:1\n`);
  const config = path.join(dir, 'config.ini');
  writeFileSync(config, `[cluster]\ncpu_scheduling = normal\nwal_sync = write\n${sections.join('')}`);
  writeFileSync(path.join(dir, 'cluster.secret'), 'timing-secret-0123456789abcdef0123456789', { mode: 0o600 });
  const children = nodes.map((node) => {
    const start = performance.now();
    const child = spawn(process.execPath, [...entry, '-c', config, '-p', String(node.client), '--kvtype', 'memory'], { cwd: repoRoot, stdio: 'ignore' });
    return { node, child, start };
  });
  const stop = () => Promise.all(children.map(({ child }) => new Promise((resolve) => (child.exitCode !== null ? resolve() : (child.once('exit', resolve), child.kill('SIGTERM'))))));
  try {
    const listenSeconds = [];
    const listenCpuSeconds = [];
    for (const { node, child, start } of children) {
      await untilAccepts(node.client, child, start + 60_000);
      listenSeconds.push((performance.now() - start) / 1000);
      listenCpuSeconds.push(cpuSeconds(child.pid));
    }
    return { listenSeconds, listenCpuSeconds, clientPort: nodes[0].client, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

const checkSeconds = [];
const listenSeconds = [];
const listenCpuSeconds = [];
const clientSeconds = [];
for (let run = 0; run < runs; run += 1) {
  checkSeconds.push((await timeRun(['check', history, '--model', model])).seconds);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-timing-'));
  const cluster = await startCluster(dir);
  try {
    listenSeconds.push(...cluster.listenSeconds);
    listenCpuSeconds.push(...cluster.listenCpuSeconds);
    // Wait until the cluster serves (a leader is elected), then time the one-shot client.
    for (let tries = 0; ; tries += 1) {
      const { stdout, code } = await timeRun(['-cli', '-i', '127.0.0.1', '-p', String(cluster.clientPort), '-e', 'get timing-probe']);
      if (code === 0) break;
      if (tries > 100) throw new Error(`the cluster never served a read: ${stdout}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const timed = await timeRun(['-cli', '-i', '127.0.0.1', '-p', String(cluster.clientPort), '-e', 'get timing-probe']);
    if (timed.code !== 0) throw new Error(`the client exited ${timed.code}: ${timed.stdout}`);
    clientSeconds.push(timed.seconds);
  } finally {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
const show = (values) => `median ${median(values).toFixed(2)} s (${values.map((v) => v.toFixed(2)).join(' ')})`;
console.log(`runner: ${useTsx ? 'node --import tsx main.ts' : 'node dist/main.js'}; ${runs} runs; load ${os.loadavg()[0].toFixed(2)}`);
console.log(`check ${path.relative(repoRoot, history)} --model ${model}: ${show(checkSeconds)}`);
console.log(`controller listens after:  ${show(listenSeconds)}`);
console.log(`  CPU it used by then:     ${show(listenCpuSeconds)}`);
console.log(`client -e "get k":         ${show(clientSeconds)}`);
