/**
 * The etcd target: a three-member etcd cluster (Debian's etcd-server, `etcd` 3.4) on 127.0.0.1,
 * what a consistent store that is not memcached costs on the same machine under the same load.
 * Reads are etcd's default range reads (linearizable), sets are puts; the load generator reaches
 * it through ./etcd-load.ts.
 *
 * Intuition: like an mckv cluster it is three Raft peers with the default heartbeat (100 ms) and
 * election timeout (1 s), each fsyncing its log; unlike mckv it keeps the data itself (bbolt), so
 * there is no memcached behind it and its three processes are its whole cost.
 *
 * Invariants: every port is picked free (never the cluster's default ports); the data folders are
 * in a temporary folder that `stop()` removes; processes are stopped only by the PIDs started here;
 * every wait is bounded; a member that exits while starting fails the start with its log's tail.
 */

import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../src/jepsen/cluster.ts';
import { findBinary, labelled, spawnLogged, stopChild } from './processes.ts';
import type { RunningTarget, TargetOptions } from './targets.ts';

const HOST = '127.0.0.1';
const MEMBER_COUNT = 3;
const READY_TIMEOUT_MS = 20_000;
const STATUS_TIMEOUT_MS = 1000;

/** The etcd binary, or null when it is not installed. */
export function findEtcd(): string | null {
  return findBinary('etcd');
}

/** What to do when etcd is not installed. */
export const ETCD_INSTALL_HINT = "etcd is not installed: apt-get install etcd-server (Debian's etcd 3.4)";

interface Member {
  name: string;
  clientPort: number;
  peerPort: number;
  logFile: string;
  child: ChildProcess | null;
}

function memberArgs(member: Member, members: Member[], dataDir: string): string[] {
  const initialCluster = members.map(({ name, peerPort }) => `${name}=http://${HOST}:${peerPort}`).join(',');
  const clientUrl = `http://${HOST}:${member.clientPort}`;
  const peerUrl = `http://${HOST}:${member.peerPort}`;
  return [
    '--name', member.name,
    '--data-dir', path.join(dataDir, member.name),
    '--listen-client-urls', clientUrl,
    '--advertise-client-urls', clientUrl,
    '--listen-peer-urls', peerUrl,
    '--initial-advertise-peer-urls', peerUrl,
    '--initial-cluster', initialCluster,
    '--initial-cluster-state', 'new',
    '--initial-cluster-token', `mckv-bench-${path.basename(dataDir)}`,
    '--logger', 'zap',
    '--log-outputs', 'stderr',
  ];
}

/** The member's answer to etcd's maintenance Status (the JSON gateway's field names), or null. */
async function memberStatus(port: number): Promise<{ memberId: string; leader: string; raftTerm: string } | null> {
  try {
    const response = await fetch(`http://${HOST}:${port}/v3/maintenance/status`, { method: 'POST', body: '{}', signal: AbortSignal.timeout(STATUS_TIMEOUT_MS) });
    const body: unknown = await response.json();
    if (typeof body !== 'object' || body === null) return null;
    const { header, leader, raftTerm } = body as { header?: { member_id?: unknown }; leader?: unknown; raftTerm?: unknown };
    const memberId = header?.member_id;
    if (typeof memberId !== 'string' || typeof leader !== 'string' || typeof raftTerm !== 'string') return null;
    return { memberId, leader, raftTerm };
  } catch {
    return null;
  }
}

/** True once the member says it is healthy (etcd's /health: a leader and a committed read). */
async function healthy(port: number): Promise<boolean> {
  try {
    const response = await fetch(`http://${HOST}:${port}/health`, { signal: AbortSignal.timeout(STATUS_TIMEOUT_MS) });
    const body = (await response.json()) as { health?: unknown };
    return body.health === 'true';
  } catch {
    return false;
  }
}

function logTail(file: string): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-3).join(' | ');
  } catch {
    return '(no output)';
  }
}

/** Waits until every member is healthy; throws if one exits first or the deadline passes. */
async function awaitHealthy(members: Member[]): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    const exited = members.find(({ child }) => child === null || child.exitCode !== null || child.signalCode !== null);
    if (exited !== undefined) throw new Error(`etcd ${exited.name} exited while starting: ${logTail(exited.logFile)}`);
    if ((await Promise.all(members.map(({ clientPort }) => healthy(clientPort)))).every(Boolean)) return;
    if (Date.now() > deadline) throw new Error(`etcd cluster not healthy within ${READY_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Starts three etcd members on free 127.0.0.1 ports, data in a temporary folder; resolves once all are healthy. */
export async function startEtcd(options: TargetOptions, binary: string): Promise<RunningTarget> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'mckv-bench-etcd-'));
  const members: Member[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(members.map(({ child }) => (child === null ? undefined : stopChild(child))));
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    for (let index = 1; index <= MEMBER_COUNT; index += 1) {
      members.push({ name: `n${index}`, clientPort: await freePort(), peerPort: await freePort(), logFile: path.join(options.dir, `etcd-n${index}.log`), child: null });
    }
    for (const member of members) member.child = spawnLogged(binary, memberArgs(member, members, dataDir), member.logFile);
    await awaitHealthy(members);
  } catch (error) {
    await stop();
    throw error;
  }
  const statuses = async (): Promise<Array<{ label: string; status: Awaited<ReturnType<typeof memberStatus>> }>> =>
    Promise.all(members.map(async ({ name, clientPort }) => ({ label: `etcd ${name}`, status: await memberStatus(clientPort) })));
  return {
    name: 'etcd',
    api: 'etcd',
    ports: members.map(({ clientPort }) => clientPort),
    dataDir,
    processes: () => labelled(members.map(({ name, child }) => [`etcd ${name}`, child] as const)),
    roles: async () => new Map((await statuses()).flatMap(({ label, status }) => (status === null ? [] : [[label, status.memberId === status.leader ? 'leader' : 'follower']]))),
    terms: async () => new Map((await statuses()).flatMap(({ label, status }) => (status === null ? [] : [[label, status.raftTerm]]))),
    stop,
  };
}
