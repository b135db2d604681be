/**
 * The controller keeps each client connection's order when the server hands it a connection's
 * commands without waiting for earlier replies (`handlerKeepsOrder`): a get it could serve at once
 * from the replica does not overtake an earlier request of its connection still in the
 * controller, such as a read waiting behind a write-ahead record with an apply before it.
 *
 * One controller runs in this process on its real parts, but with a scripted mode (a get is
 * stepped into a `read` effect, as a sequential follower does; a peer's message into the persist
 * and apply the test gives) and a write-ahead whose batches complete when the test says. The
 * handler is called as the server calls it, one command at a time, each without waiting for the
 * reply to the one before.
 */

import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { clockMs } from '../src/runtime/clock.ts';
import { findNode, parseConfig } from '../src/config.ts';
import { asPeerId, type Effect, type Event, type Machine, type MachineStatus } from '../src/consistency/types.ts';
import { Controller, type ControllerOptions } from '../src/controller/controller.ts';
import type { WalBatch, WalWriteResult, WriteAhead } from '../src/controller/durability.ts';
import { createParts, type ControllerHooks } from '../src/controller/parts.ts';
import { freePort } from '../src/jepsen/cluster.ts';
import { createLogger } from '../src/runtime/log.ts';
import type { ConnectionInfo } from '../src/protocol/server.ts';
import type { Command, Reply } from '../src/protocol/types.ts';
import { MemoryBackend } from '../src/store/memory.ts';
import type { Op } from '../src/store/types.ts';
import { itemAt } from '../src/runtime/item-at.ts';

/** A write-ahead whose batches complete when the test says. */
class ManualWriteAhead implements WriteAhead {
  private done: Array<(result: WalWriteResult) => void> = [];

  write(_batch: WalBatch, done: (result: WalWriteResult) => void): void {
    this.done.push(done);
  }

  close(): void {}

  inFlight(): number {
    return this.done.length;
  }

  completeAll(): void {
    for (const done of this.done.splice(0)) done({ ok: true, fsync: { endedAtMs: 0, ms: 1 } });
  }
}

/**
 * A mode that reads locally as a sequential follower does: a get with nothing before it may be
 * served from the replica without a step, a stepped get becomes a `read` effect, a write is
 * applied and answered at once, and a peer's message becomes the effects the test queued.
 */
class ScriptedMachine implements Machine<unknown> {
  /** What the next peer message is stepped into. */
  onMessage: Effect<unknown>[] = [];
  private cas = 1n;

  step(event: Event<unknown>): Effect<unknown>[] {
    switch (event.kind) {
      case 'request':
        if (event.op.kind === 'get') return [{ kind: 'read', requestId: event.requestId, op: event.op, nowMs: event.nowMs }];
        return [{ kind: 'apply', op: event.op, cas: this.cas++, nowMs: event.nowMs, requestId: event.requestId, token: null }];
      case 'message': {
        const effects = this.onMessage;
        this.onMessage = [];
        return effects;
      }
      default:
        return [];
    }
  }

  /** A committed write of another connection: its record first, then its apply. */
  commit(op: Op, nowMs: number): Effect<unknown>[] {
    return [
      { kind: 'persist', record: { op: op.kind }, compact: false },
      { kind: 'apply', op, cas: this.cas++, nowMs, requestId: null, token: null },
    ];
  }

  readsLocally(): boolean {
    return true;
  }

  status(): MachineStatus {
    return { mode: 'sequential', role: 'follower', term: 1, leader: asPeerId('n2'), committed: '0', applied: '0', queueDepth: 0, invalidPeerMessages: 0, caughtUp: true };
  }
}

interface Running {
  controller: Controller;
  machine: ScriptedMachine;
  writeAhead: ManualWriteAhead;
  hooks: ControllerHooks;
  dir: string;
}

let running: Running | null = null;

afterEach(async () => {
  const current = running;
  running = null;
  if (current === null) return;
  current.writeAhead.completeAll();
  await current.controller.stop();
  rmSync(current.dir, { recursive: true, force: true });
});

async function startController(): Promise<Running> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mckv-connection-order-'));
  const [client, peer1, peer2, peer3] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const configFile = path.join(dir, 'config.ini');
  writeFileSync(configFile, [
    '[cluster]', 'consistency = sequential', 'data_dir = data', 'log_dir = logs', 'secret_file = cluster.secret', '',
    '[node.n1]', `client = 127.0.0.1:${client}`, `peer = 127.0.0.1:${peer1}`, 'memcached = 127.0.0.1:1', '',
    '[node.n2]', `client = 127.0.0.1:${client + 1000}`, `peer = 127.0.0.1:${peer2}`, 'memcached = 127.0.0.1:2', '',
    '[node.n3]', `client = 127.0.0.1:${client + 2000}`, `peer = 127.0.0.1:${peer3}`, 'memcached = 127.0.0.1:3', '',
  ].join('\n'));
  writeFileSync(path.join(dir, 'cluster.secret'), randomBytes(32).toString('base64'));
  chmodSync(path.join(dir, 'cluster.secret'), 0o600);
  mkdirSync(path.join(dir, 'data', 'n1'), { recursive: true });
  const config = parseConfig(readFileSync(configFile, 'utf8'), configFile);
  const options: ControllerOptions = {
    config,
    node: findNode(config, client),
    mode: 'sequential',
    backend: new MemoryBackend(),
    backendAddress: 'embedded',
    log: createLogger({ console: false }),
    fatal: (error) => {
      throw error;
    },
  };
  const machine = new ScriptedMachine();
  const writeAhead = new ManualWriteAhead();
  let hooks: ControllerHooks | null = null;
  const controller = await Controller.start(options, (given) => {
    hooks = given;
    const parts = createParts(options, given);
    parts.writeAhead.close();
    return { ...parts, machine, writeAhead };
  });
  return { controller, machine, writeAhead, hooks: hooks as unknown as ControllerHooks, dir };
}

const connection = (id: number): ConnectionInfo => ({ id, remoteAddress: '127.0.0.1' });
const get = (key: string): Command => ({ kind: 'get', keys: [key], cas: false });
const set = (key: string, value: string): Command => ({
  kind: 'store', verb: 'set', key, flags: 0, exptime: 0, value: Buffer.from(value), casUnique: 0n, noreply: false,
});
const setOp = (key: string, value: string): Op => ({
  kind: 'store', verb: 'set', key, flags: 0, expiresAtMs: 0, value: Buffer.from(value), casUnique: 0n,
});

function valueOf(reply: Reply): string | null {
  if (reply.kind !== 'values') throw new Error(`not a values reply: ${JSON.stringify(reply)}`);
  return reply.items.length === 0 ? null : itemAt(reply.items, 0).value.toString();
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('a connection whose commands are handed over without waiting for earlier replies', () => {
  it('does not have a later get served from the replica before an earlier get still waiting for the disk', async () => {
    running = await startController();
    const { machine, writeAhead, hooks } = running;
    expect(await hooks.handle(set('k', 'old'), connection(1))).toMatchObject({ kind: 'stored' });

    // A peer's message (another connection's committed write) is queued, then this connection's
    // first get arrives: it queues behind the message, so it is stepped, not read at once.
    machine.onMessage = machine.commit(setOp('k', 'new'), clockMs());
    hooks.enqueue({ kind: 'message', nowMs: clockMs(), from: asPeerId('n2'), message: 'append' });
    const first = hooks.handle(get('k'), connection(2));
    expect(first).toBeInstanceOf(Promise);
    await nextTurn();
    // The write's record is on its way to the disk: its apply, and the first get after it, wait.
    expect(writeAhead.inFlight()).toBe(1);

    // The same connection's next get arrives with nothing queued in the controller.
    const second = hooks.handle(get('k'), connection(2));
    writeAhead.completeAll();
    const [firstValue, secondValue] = [valueOf(await first), valueOf(await second)];
    expect(firstValue).toBe('new');
    // The second get comes after the first in its connection: it may not see an older value.
    expect(secondValue).toBe('new');
  });

  it('still serves a get from the replica at once when its connection has nothing unanswered', async () => {
    running = await startController();
    const { machine, writeAhead, hooks } = running;
    expect(await hooks.handle(set('k', 'old'), connection(1))).toMatchObject({ kind: 'stored' });
    machine.onMessage = machine.commit(setOp('k', 'new'), clockMs());
    hooks.enqueue({ kind: 'message', nowMs: clockMs(), from: asPeerId('n2'), message: 'append' });
    await nextTurn();
    expect(writeAhead.inFlight()).toBe(1);
    // Another connection's write waits for the disk, unanswered: a sequential read may come before it.
    const reply = hooks.handle(get('k'), connection(2));
    expect(reply).not.toBeInstanceOf(Promise);
    expect(valueOf(reply as Reply)).toBe('old');
  });
});
