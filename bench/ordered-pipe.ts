/**
 * The floor of a leader-ordered write in three Node processes: what sequential mode's messages,
 * file writes and memcached stores cost on this machine before any of its logic. The benchmark runs
 * three of them as a yardstick beside the byte pipes.
 *
 * Process 0 leads. A set taken by a follower is forwarded to the leader; the leader numbers it,
 * writes it to its file (one write() a turn, no fsync: `wal_sync = write`), sends it at once to the
 * follower that must have it (its origin; for the leader's own clients' sets, follower 1) and within
 * 8 ms or 64 entries to the other, and stores it in its memcached. A follower writes what it is sent
 * to its file and stores it; it answers its own client's set on receipt (once the turn's file write
 * is done), and acknowledges only the leader's own clients' sets, which the leader answers on that.
 * Every store is a `noreply` set, sent once a turn; gets are answered from each process's copy of
 * what it stored, as mckv's value cache does. This is the message pattern of a sequential write
 * with wal_sync = write: what is left out (terms, elections, checks, limits, recovery, metrics) is
 * everything that makes it a store. Text protocol, `get` and `set` only.
 *
 * Usage: node --import tsx bench/ordered-pipe.ts LISTEN_PORT MEMCACHED_PORT INDEX LEADER_PEER_PORT FILE
 * (INDEX 0 is the leader and listens on LEADER_PEER_PORT; 127.0.0.1 only). It prints "listening"
 * once it accepts clients (a follower, once it reached the leader) and runs until it is signalled.
 */

import fs from 'node:fs';
import net from 'node:net';
import { scheduleAsBatch } from '../src/runtime/scheduling.ts';

const FORWARD = 1;
const APPEND = 2;
const ACK = 3;
const HELLO = 4;

function argNumber(at: number): number {
  const n = Number(process.argv[at]);
  if (!Number.isInteger(n) || n < 0 || n > 65535 || process.argv[6] === undefined) {
    console.error('usage: ordered-pipe.ts LISTEN_PORT MEMCACHED_PORT INDEX LEADER_PEER_PORT FILE');
    process.exit(2);
  }
  return n;
}
const [listenPort, memcachedPort, index, leaderPeerPort] = [argNumber(2), argNumber(3), argNumber(4), argNumber(5)];
const file = process.argv[6]!;
const leading = index === 0;
scheduleAsBatch();

/** A client's request awaiting its reply, answered in the order the client sent them. */
interface Slot { reply: Buffer | null }
interface Client { socket: net.Socket; slots: Slot[] }

const values = new Map<string, Buffer>(); // key → its part of a get's reply, "VALUE …\r\n<data>\r\n"
const waiting = new Map<number, { client: Client; slot: Slot }>();
let nextRequest = 1;

const fd = fs.openSync(file, 'w');
let fileBatch: Buffer[] = [];
let storeBatch: Buffer[] = [];
const peerBatches = new Map<net.Socket, Buffer[]>();
let turnScheduled = false;
const answered = new Set<Client>();

const memcached = net.connect({ host: '127.0.0.1', port: memcachedPort, noDelay: true });
memcached.on('data', () => {}); // noreply stores: nothing comes back
memcached.on('error', (error) => fail(`memcached: ${error.message}`));

function fail(why: string): never {
  console.error(`ordered-pipe ${index}: ${why}`);
  process.exit(1);
}

/** Everything a turn produced leaves at its end: the file first, then peers and memcached. */
function endOfTurn(): void {
  if (turnScheduled) return;
  turnScheduled = true;
  setImmediate(() => {
    turnScheduled = false;
    if (fileBatch.length > 0) fs.writeSync(fd, fileBatch.length === 1 ? fileBatch[0]! : Buffer.concat(fileBatch));
    fileBatch = [];
    if (ackUpTo > acked) {
      acked = ackUpTo;
      sendPeerNow(leader!, frame(ACK, acked, 0, null));
    }
    for (const client of answered) flushReplies(client);
    answered.clear();
    for (const [socket, frames] of peerBatches) socket.write(frames.length === 1 ? frames[0]! : Buffer.concat(frames));
    peerBatches.clear();
    if (storeBatch.length > 0) memcached.write(Buffer.concat(storeBatch));
    storeBatch = [];
  });
}

function sendPeer(socket: net.Socket, frame: Buffer): void {
  sendPeerNow(socket, frame);
  endOfTurn();
}

function sendPeerNow(socket: net.Socket, frame: Buffer): void {
  const frames = peerBatches.get(socket);
  if (frames === undefined) peerBatches.set(socket, [frame]);
  else frames.push(frame);
}

/** A frame: u32 body length, u8 type, u32 a, u32 b, then the entry (u16 key length, key, value). */
function frame(type: number, a: number, b: number, entry: Buffer | null): Buffer {
  const body = 9 + (entry?.length ?? 0);
  const out = Buffer.allocUnsafe(4 + body);
  out.writeUInt32BE(body, 0);
  out[4] = type;
  out.writeUInt32BE(a, 5);
  out.writeUInt32BE(b, 9);
  entry?.copy(out, 13);
  return out;
}

function encodeEntry(key: string, value: Buffer): Buffer {
  const out = Buffer.allocUnsafe(2 + key.length + value.length);
  out.writeUInt16BE(key.length, 0);
  out.write(key, 2, 'latin1');
  value.copy(out, 2 + key.length);
  return out;
}

/** Takes an ordered entry: into the file, memcached and the copy gets read. */
function store(entry: Buffer): void {
  fileBatch.push(entry);
  const keyBytes = entry.readUInt16BE(0);
  const key = entry.toString('latin1', 2, 2 + keyBytes);
  const value = entry.subarray(2 + keyBytes);
  storeBatch.push(Buffer.from(`set ${key} 0 0 ${value.length} noreply\r\n`, 'latin1'), value, CRLF);
  values.set(key, Buffer.concat([Buffer.from(`VALUE ${key} 0 ${value.length}\r\n`, 'latin1'), value, CRLF]));
  endOfTurn();
}

const CRLF = Buffer.from('\r\n');
const END = Buffer.from('END\r\n');
const NOTHING = Buffer.alloc(0);
const STORED = Buffer.from('STORED\r\n');

/** Fills `slot`; the client's replies leave in order, at once (`now`) or once the turn's file write is done. */
function answer(client: Client, slot: Slot, reply: Buffer, now = false): void {
  slot.reply = reply;
  if (now) flushReplies(client);
  else {
    answered.add(client);
    endOfTurn();
  }
}

function flushReplies(client: Client): void {
  let n = 0;
  while (n < client.slots.length && client.slots[n]!.reply !== null) n++;
  if (n === 0) return;
  const ready = client.slots.splice(0, n).map((done) => done.reply!);
  client.socket.write(ready.length === 1 ? ready[0]! : Buffer.concat(ready));
}

// --- ordering: the leader numbers entries; followers forward and follow ---

let nextSeq = 1;
let ackUpTo = 0;
let acked = 0;
const followers: net.Socket[] = []; // by index − 1
let leader: net.Socket | null = null;

/** Appends for the follower that need not have them yet: sent after 8 ms or 64 entries, as mckv's. */
const lazy = new Map<net.Socket, Buffer[]>();
let lazyTimer: NodeJS.Timeout | null = null;

function sendLazy(): void {
  if (lazyTimer !== null) clearTimeout(lazyTimer);
  lazyTimer = null;
  for (const [socket, frames] of lazy) if (frames.length > 0) sendPeer(socket, Buffer.concat(frames.splice(0)));
}

function leaderOrders(origin: number, request: number, entry: Buffer): number {
  const seq = nextSeq++;
  store(entry);
  const now = followers[Math.max(0, origin - 1)];
  for (const follower of followers) {
    const append = frame(APPEND, seq, origin * 2 ** 24 + request, entry);
    if (follower === now) {
      sendPeer(follower, append);
      continue;
    }
    const frames = lazy.get(follower) ?? [];
    lazy.set(follower, frames);
    frames.push(append);
    if (frames.length >= 64) sendLazy();
    else lazyTimer ??= setTimeout(sendLazy, 8);
  }
  return seq;
}

function onPeerFrame(from: net.Socket, type: number, a: number, b: number, entry: Buffer): void {
  if (type === HELLO) followers[b - 1] = from;
  else if (type === FORWARD) leaderOrders(b, a, Buffer.from(entry));
  else if (type === ACK) {
    for (const [seq, pending] of waiting) {
      if (seq > a) break;
      waiting.delete(seq);
      answer(pending.client, pending.slot, STORED);
    }
  } else if (type === APPEND) {
    store(Buffer.from(entry));
    if (b < 2 ** 24) ackUpTo = a; // only the leader's own clients' sets wait for an acknowledgement
    if (Math.floor(b / 2 ** 24) === index) {
      const pending = waiting.get(b % 2 ** 24);
      if (pending !== undefined) {
        waiting.delete(b % 2 ** 24);
        answer(pending.client, pending.slot, STORED);
      }
    }
  }
}

function readFrames(socket: net.Socket): void {
  let buffered: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    let at = 0;
    while (buffered.length - at >= 4) {
      const body = buffered.readUInt32BE(at);
      if (buffered.length - at - 4 < body) break;
      const entry = buffered.subarray(at + 13, at + 4 + body);
      onPeerFrame(socket, buffered[at + 4]!, buffered.readUInt32BE(at + 5), buffered.readUInt32BE(at + 9), entry);
      at += 4 + body;
    }
    buffered = buffered.subarray(at);
  });
  socket.on('error', (error) => fail(`peer: ${error.message}`));
  socket.on('close', () => fail('a peer closed its connection'));
}

// --- clients ---

function onSet(client: Client, key: string, value: Buffer): void {
  const slot: Slot = { reply: null };
  client.slots.push(slot);
  const entry = encodeEntry(key, value);
  if (leading) {
    waiting.set(leaderOrders(0, 0, entry), { client, slot });
    return;
  }
  const request = nextRequest++ % 2 ** 24;
  waiting.set(request, { client, slot });
  sendPeer(leader!, frame(FORWARD, request, index, entry));
}

function onLine(client: Client, line: string): void {
  const slot: Slot = { reply: null };
  client.slots.push(slot);
  if (line.startsWith('get ')) {
    const replies = line.slice(4).split(' ').filter((key) => key !== '').map((key) => values.get(key) ?? NOTHING);
    answer(client, slot, Buffer.concat([...replies, END]), client.slots.length === 1);
  } else if (line === 'version') answer(client, slot, Buffer.from('VERSION ordered-pipe\r\n'), true);
  else answer(client, slot, Buffer.from('ERROR\r\n'), true);
}

function serveClient(socket: net.Socket): void {
  socket.setNoDelay(true);
  const client: Client = { socket, slots: [] };
  let buffered: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    let at = 0;
    for (;;) {
      const eol = buffered.indexOf(CRLF, at);
      if (eol === -1) break;
      const line = buffered.toString('latin1', at, eol);
      if (!line.startsWith('set ')) {
        onLine(client, line);
        at = eol + 2;
        continue;
      }
      const [, key, , , length] = line.split(' ');
      const bytes = Number(length);
      if (buffered.length < eol + 2 + bytes + 2) break;
      onSet(client, key!, Buffer.from(buffered.subarray(eol + 2, eol + 2 + bytes)));
      at = eol + 2 + bytes + 2;
    }
    buffered = buffered.subarray(at);
  });
  socket.on('error', () => socket.destroy());
}

function listenForClients(): void {
  net.createServer(serveClient).listen(listenPort, '127.0.0.1', () => console.log('listening'));
}

if (leading) {
  net.createServer((socket) => {
    socket.setNoDelay(true);
    readFrames(socket);
  }).listen(leaderPeerPort, '127.0.0.1', listenForClients);
} else {
  const dial = (): void => {
    const socket = net.connect({ host: '127.0.0.1', port: leaderPeerPort, noDelay: true });
    socket.once('connect', () => {
      socket.removeAllListeners('error');
      leader = socket;
      readFrames(socket);
      socket.write(frame(HELLO, 0, index, null));
      listenForClients();
    });
    socket.once('error', () => setTimeout(dial, 50));
  };
  dial();
}
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => process.exit(0));
