/**
 * The simulated clients: each submits one random op at a time to a live node (in sequential mode,
 * the node its session sticks to) and takes the reply, which is judged here: a refusal never for
 * an applied op nor after convergence, and a read or write never older than what completed before
 * it started (linearizability) or before it in its session (sequential). Also times a failover.
 */

import type { Reply } from '../../../src/protocol/types.ts';
import { refusalText } from '../../../src/protocol/refusals.ts';
import { asRequestId, type PeerId, type RequestId } from '../../../src/consistency/types.ts';
import { itemAt } from '../../../src/runtime/item-at.ts';
import type { Op } from '../../../src/store/types.ts';
import type { SimNode } from './node.ts';
import { FAILURE_TIMEOUT_MS } from './options.ts';
import { opKey } from './reference.ts';
import type { SimWorld } from './world.ts';

const KEYS = ['k0', 'k1', 'k2'];

interface Client {
  busy: boolean;
  /** Sequential mode: the node this client's connection goes to (null: pick one). */
  node: PeerId | null;
  nextMs: number;
  session: number;
  /** Highest position of this session's completed ops. */
  sessionPosition: number;
}

/** Failover measurement: when the leader was killed, and the first write a survivor completed. */
export interface KillWatch {
  killedAtMs: number | null;
  firstWriteAfterKillMs: number | null;
  longestWaitAfterKillMs: number;
  /** Writes taken by a survivor before the kill was noticed (within a failure timeout of it): how they ended. */
  writesAroundKill: { ok: number; refused: number };
}

export class Clients {
  private readonly clients: Client[];
  private paused = false;
  /** The cluster converged once: a refusal now fails the run. */
  strict = false;
  private completedPosition = 0;
  readonly kill: KillWatch = {
    killedAtMs: null, firstWriteAfterKillMs: null, longestWaitAfterKillMs: 0, writesAroundKill: { ok: 0, refused: 0 },
  };

  constructor(private readonly world: SimWorld) {
    this.clients = Array.from({ length: world.options.clients }, (_, session) => ({
      busy: false, node: null, nextMs: world.nowMs, session, sessionPosition: 0,
    }));
  }

  pause(paused: boolean): void {
    this.paused = paused;
    for (const client of this.clients) client.nextMs = this.world.nowMs;
  }

  /** The earlier of `nextMs` and the next request an idle client will submit. */
  nextRequestMs(nextMs: number): number {
    let next = nextMs;
    if (!this.paused) for (const client of this.clients) if (!client.busy) next = Math.min(next, client.nextMs);
    return next;
  }

  /** A node crashed: its requests are gone, and its clients' connections broke. */
  onCrash(node: SimNode): void {
    for (const request of node.requests.values()) itemAt(this.clients, request.client).busy = false;
    for (const client of this.clients) {
      if (client.node !== node.id) continue;
      // The connection broke: a new session starts elsewhere.
      client.node = null;
      client.sessionPosition = 0;
    }
  }

  submit(): void {
    const world = this.world;
    if (this.paused) return;
    for (const client of this.clients) {
      if (client.busy || client.nextMs > world.nowMs) continue;
      const live = world.nodes.filter((node) => node.machine !== null && node.suspension === null);
      if (live.length === 0) continue;
      const sticky = world.options.mode === 'sequential' ? live.find((node) => node.id === client.node) : undefined;
      const node = sticky ?? itemAt(live, Math.floor(world.random() * live.length));
      if (world.options.mode === 'sequential') client.node = node.id;
      const op = this.randomOp();
      const requestId = asRequestId(node.nextRequestId++);
      const lowerBound = world.options.mode === 'linearizability' ? this.completedPosition : client.sessionPosition;
      node.requests.set(requestId, { client: client.session, op, invokedMs: world.nowMs, lowerBound });
      client.busy = true;
      world.controller.step(node, { kind: 'request', nowMs: world.nowMs, requestId, session: client.session, op });
    }
  }

  private randomOp(): Op {
    const random = this.world.random;
    const key = itemAt(KEYS, Math.floor(random() * KEYS.length));
    const roll = random();
    if (roll < 0.4) return { kind: 'get', keys: [key] };
    if (roll < 0.6) {
      const value = Buffer.from(String(Math.floor(random() * 1000)));
      return { kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value, casUnique: 0n };
    }
    if (roll < 0.75) return { kind: 'arith', verb: 'incr', key, delta: 1n, initial: null, expiresAtMs: 0 };
    if (roll < 0.85) return { kind: 'store', verb: 'append', key, flags: 0, expiresAtMs: 0, value: Buffer.from('7'), casUnique: 0n };
    if (roll < 0.93) return { kind: 'delete', key };
    return { kind: 'store', verb: 'add', key, flags: 0, expiresAtMs: 0, value: Buffer.from('1'), casUnique: 0n };
  }

  /** A reply reached the client; `position` is where the op took effect (null for refusals). */
  complete(node: SimNode, requestId: RequestId, reply: Reply, position: number | null): void {
    const world = this.world;
    const kill = this.kill;
    const request = node.requests.get(requestId);
    if (request === undefined) throw new Error(`${node.id} answered unknown or already answered request ${requestId}`);
    node.requests.delete(requestId);
    if (kill.killedAtMs !== null && request.invokedMs <= kill.killedAtMs + FAILURE_TIMEOUT_MS) {
      kill.longestWaitAfterKillMs = Math.max(kill.longestWaitAfterKillMs, world.nowMs - Math.max(request.invokedMs, kill.killedAtMs));
      if (request.op.kind !== 'get') kill.writesAroundKill[reply.kind === 'refused' ? 'refused' : 'ok'] += 1;
    }
    if (kill.killedAtMs !== null && kill.firstWriteAfterKillMs === null && position !== null && request.op.kind !== 'get') {
      kill.firstWriteAfterKillMs = world.nowMs;
    }
    const client = itemAt(this.clients, request.client);
    client.busy = false;
    client.nextMs = world.nowMs + Math.floor(world.random() * 30);
    if (reply.kind === 'refused') {
      if (position !== null) throw new Error(`an applied op was refused: ${refusalText(reply)}`);
      if (this.strict) throw new Error(`${node.id} refused after the cluster converged: ${refusalText(reply)} ${world.checks.describe()}`);
      world.result.repliesRefused += 1;
      return;
    }
    if (position === null) throw new Error(`${node.id} answered ${reply.kind} without applying or reading`);
    if (position < request.lowerBound && !world.reference.unchangedAfter(request.op, position, request.lowerBound)) {
      throw new Error(`${node.id} served ${opKey(request.op)} at ${position}, older than ${request.lowerBound} which completed before it started`);
    }
    world.result.repliesOk += 1;
    if (world.failures.everyUntrusted) world.result.repliesOkAfterEveryUntrusted += 1;
    if (request.op.kind !== 'get') world.replicasLost.onWriteAcked(request, position);
    this.completedPosition = Math.max(this.completedPosition, position);
    client.sessionPosition = Math.max(client.sessionPosition, position);
  }
}
