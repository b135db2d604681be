/**
 * A stopping controller's last word to its peers is its mode's `leave`: a send the durability gate
 * still holds (an ack waiting for its fsync) is dropped once the runner stops, not sent after the
 * leave. A peer that heard from the node after its leave would take it back, and a leader would
 * honour its read lease again and wait that out once the process is gone.
 */

import { describe, expect, it } from 'vitest';
import { asPeerId, type Effect } from '../src/consistency/types.ts';
import { heldWriteAhead, runner } from './support/effect-runner-kit.ts';

const persist: Effect<unknown> = { kind: 'persist', record: { kind: 'entries', entries: [] }, compact: false };
const leader = asPeerId('n1');
const ack: Effect<unknown> = { kind: 'send', to: leader, message: { kind: 'append_reply' } };
const leave: Effect<unknown> = { kind: 'send', to: leader, message: { kind: 'leave' }, beforeDurable: true };

/** A runner with an ack held behind a record on its way to the disk. */
function ackHeld() {
  const wal = heldWriteAhead();
  const node = runner(wal);
  node.effects.carryOut(persist);
  node.effects.carryOut(ack);
  node.effects.durability.writeAppended();
  expect(node.sent).toEqual([]);
  return { wal, node };
}

describe('the effect runner of a stopping controller', () => {
  it('sends a held ack once its record is durable while running', () => {
    const { wal, node } = ackHeld();
    wal.finish();
    expect(node.sent.map((each) => each.message)).toEqual([{ kind: 'append_reply' }]);
  });

  it('sends nothing after the leave: an ack whose record becomes durable after the stop is dropped', () => {
    const { wal, node } = ackHeld();
    node.effects.carryOut(leave);
    expect(node.sent.map((each) => each.message)).toEqual([{ kind: 'leave' }]);
    node.effects.stop();
    wal.finish();
    expect(node.sent.map((each) => each.message)).toEqual([{ kind: 'leave' }]);
  });
});
