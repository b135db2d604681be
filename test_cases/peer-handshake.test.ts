/**
 * The pure peer handshake: a dialer and a listener holding the same secret agree; every way a
 * message can be wrong (another release, another cluster, an unknown or misdirected id, a proof
 * under another secret or replayed from another connection, a certificate naming someone else,
 * other settings (mode, read leases), malformed fields) is a typed refusal, never an exception.
 */

import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  HANDSHAKE_FRAME_BYTES_MAX,
  HANDSHAKE_NAME_CHARS_MAX,
  HANDSHAKE_REFUSAL_KINDS,
  HANDSHAKE_SETTINGS_CHARS_MAX,
  HANDSHAKE_VERSION,
  answerChallenge,
  certificateNames,
  challengeMessage,
  checkHello,
  checkWelcome,
  describeHandshakeRefusal,
  handshakeProof,
  type HandshakeRefusal,
  type ListenerContext,
} from '../src/peer/handshake.ts';
import { encodeFrame } from '../src/peer/frame.ts';

const secret = randomBytes(32);
const clusterId = 'alpha';
const settings = 'mode=linearizability read_leases=off value_bytes_max=1048576';

function listenerContext(overrides: Partial<ListenerContext> = {}): ListenerContext {
  return { self: 'n1', clusterId, settings, secret, peers: new Set(['n2', 'n3']), nonce: randomBytes(32), certificateNames: null, ...overrides };
}

/** Runs the dialer's side against `listener`'s challenge: the hello it sends and the proof it expects. */
function dialerAnswers(listener: ListenerContext, dialer: { self?: string; secret?: Buffer; clusterId?: string } = {}) {
  const { self, clusterId: listenerClusterId, settings: listenerSettings, nonce } = listener;
  const challenge = challengeMessage({ self, clusterId: listenerClusterId, settings: listenerSettings, nonce });
  const outcome = answerChallenge(challenge, {
    self: dialer.self ?? 'n2',
    peer: listener.self,
    clusterId: dialer.clusterId ?? clusterId,
    settings: listener.settings,
    secret: dialer.secret ?? secret,
    nonce: randomBytes(32),
  });
  if (outcome.kind !== 'answered') throw new Error(`challenge refused: ${describeHandshakeRefusal(outcome.refusal)}`);
  return outcome;
}

function refusalOf(outcome: { kind: string; refusal?: HandshakeRefusal }): HandshakeRefusal | undefined {
  return outcome.refusal;
}

describe('peer handshake', () => {
  it('completes when both hold the secret, and every message fits a handshake frame', () => {
    const listener = listenerContext();
    const { hello, expectedWelcomeProof } = dialerAnswers(listener);
    const accepted = checkHello(hello, listener);
    if (accepted.kind !== 'accepted') throw new Error('hello refused');
    expect(accepted.peer).toBe('n2');
    expect(checkWelcome(accepted.welcome, { self: 'n2', peer: 'n1', expectedProof: expectedWelcomeProof })).toEqual({ kind: 'accepted' });
    const longest = 'x'.repeat(HANDSHAKE_NAME_CHARS_MAX);
    const longestSettings = 's'.repeat(HANDSHAKE_SETTINGS_CHARS_MAX);
    const challenge = challengeMessage({ self: longest, clusterId: longest, settings: longestSettings, nonce: randomBytes(32) });
    expect(encodeFrame(challenge).length).toBeLessThan(HANDSHAKE_FRAME_BYTES_MAX / 2);
    const longestHello = { ...hello, from: longest, to: longest, clusterId: longest, settings: longestSettings };
    expect(encodeFrame(longestHello).length).toBeLessThan(HANDSHAKE_FRAME_BYTES_MAX / 2);
  });

  it('refuses a hello proved under another secret, or replayed on another connection', () => {
    const listener = listenerContext();
    const forged = dialerAnswers(listener, { secret: randomBytes(32) }).hello;
    expect(refusalOf(checkHello(forged, listener))).toEqual({ kind: 'bad_proof', peer: 'n2' });
    const genuine = dialerAnswers(listener).hello;
    expect(checkHello(genuine, listener).kind).toBe('accepted');
    expect(refusalOf(checkHello(genuine, { ...listener, nonce: randomBytes(32) }))).toEqual({ kind: 'bad_proof', peer: 'n2' });
  });

  it("does not take the listener's own proof as a dialer's (roles are domain-separated)", () => {
    const transcript = {
      clusterId, dialer: 'n2', listener: 'n1', listenerNonce: randomBytes(32), dialerNonce: randomBytes(32), listenerSettings: settings, dialerSettings: settings,
    };
    expect(handshakeProof(secret, 'dialer', transcript).equals(handshakeProof(secret, 'listener', transcript))).toBe(false);
    expect(handshakeProof(secret, 'dialer', transcript)).toEqual(handshakeProof(Buffer.from(secret), 'dialer', { ...transcript }));
  });

  it('refuses another cluster naming both ids, an unknown id, a hello meant for another node', () => {
    const listener = listenerContext();
    const { hello } = dialerAnswers(listener);
    expect(refusalOf(checkHello({ ...hello, clusterId: 'beta' }, listener))).toEqual({
      kind: 'cluster_mismatch',
      peerClusterId: 'beta',
      clusterId: 'alpha',
    });
    expect(describeHandshakeRefusal({ kind: 'cluster_mismatch', peerClusterId: 'beta', clusterId: 'alpha' })).toMatch(/'beta'.*'alpha'/);
    expect(refusalOf(checkHello(dialerAnswers(listener, { self: 'n9' }).hello, listener))).toEqual({ kind: 'unknown_peer', peer: 'n9' });
    expect(refusalOf(checkHello(dialerAnswers(listener, { self: 'n1' }).hello, listener))).toEqual({ kind: 'unknown_peer', peer: 'n1' });
    expect(refusalOf(checkHello({ ...hello, to: 'n3' }, listener))).toEqual({ kind: 'wrong_recipient', to: 'n3', self: 'n1' });
  });

  it('refuses a previous release by its version, and malformed messages, without throwing', () => {
    const listener = listenerContext();
    const { hello } = dialerAnswers(listener);
    expect(refusalOf(checkHello({ kind: 'hello', from: 'n2', to: 'n1', version: 2 }, listener))).toEqual({
      kind: 'version_mismatch',
      version: '2',
    });
    const malformed: unknown[] = [
      null,
      'hello',
      42,
      [hello],
      Buffer.from('hello'),
      { ...hello, kind: 'welcome' },
      { ...hello, from: 7 },
      { ...hello, from: '' },
      { ...hello, from: 'x'.repeat(HANDSHAKE_NAME_CHARS_MAX + 1) },
      { ...hello, nonce: randomBytes(31) },
      { ...hello, nonce: 'n'.repeat(32) },
      { ...hello, proof: randomBytes(33) },
      { ...hello, proof: undefined },
      { ...hello, settings: undefined },
      { ...hello, settings: 7 },
      { ...hello, settings: 's'.repeat(HANDSHAKE_SETTINGS_CHARS_MAX + 1) },
      { kind: { toString: 'not a function' }, version: HANDSHAKE_VERSION },
      { kind: 'hello', version: { toString: 'not a function' } },
    ];
    for (const message of malformed) {
      const refusal = refusalOf(checkHello(message, listener));
      expect(refusal?.kind === 'malformed' || refusal?.kind === 'version_mismatch', JSON.stringify(refusal)).toBe(true);
      expect(typeof describeHandshakeRefusal(refusal as HandshakeRefusal)).toBe('string');
    }
  });

  it('dialer: refuses a challenge from another cluster or node, and a welcome without the proof', () => {
    const nonce = randomBytes(32);
    const dialer = { self: 'n2', peer: 'n1', clusterId, settings, secret, nonce: randomBytes(32) };
    expect(refusalOf(answerChallenge(challengeMessage({ self: 'n1', clusterId: 'beta', settings, nonce }), dialer))).toEqual({
      kind: 'cluster_mismatch',
      peerClusterId: 'beta',
      clusterId: 'alpha',
    });
    expect(refusalOf(answerChallenge(challengeMessage({ self: 'n3', clusterId, settings, nonce }), dialer))).toEqual({
      kind: 'wrong_peer',
      peer: 'n3',
      expected: 'n1',
    });
    expect(refusalOf(answerChallenge({ kind: 'hello' }, dialer))?.kind).toBe('malformed');

    // A listener without the secret cannot produce the welcome the dialer expects.
    const listener = listenerContext({ secret: randomBytes(32) });
    const { hello, expectedWelcomeProof } = dialerAnswers(listener);
    expect(refusalOf(checkHello(hello, listener))?.kind).toBe('bad_proof');
    const impostorWelcome = { kind: 'welcome', version: HANDSHAKE_VERSION, from: 'n1', to: 'n2', proof: randomBytes(32) };
    expect(refusalOf(checkWelcome(impostorWelcome, { self: 'n2', peer: 'n1', expectedProof: expectedWelcomeProof }))).toEqual({
      kind: 'bad_proof',
      peer: 'n1',
    });
    expect(refusalOf(checkWelcome({ ...impostorWelcome, to: 'n3' }, { self: 'n2', peer: 'n1', expectedProof: expectedWelcomeProof }))?.kind).toBe(
      'wrong_recipient',
    );
  });

  it('refuses a peer with other settings on both sides, naming both, and a hello whose settings were changed on the way', () => {
    const sequential = 'mode=sequential value_bytes_max=1048576';
    const listener = listenerContext();
    // The dialer learns the listener's settings from the challenge and refuses before it answers.
    const challenge = challengeMessage({ self: 'n1', clusterId, settings, nonce: listener.nonce });
    const dialer = { self: 'n2', peer: 'n1', clusterId, settings: sequential, secret, nonce: randomBytes(32) };
    const refusal = refusalOf(answerChallenge(challenge, dialer));
    expect(refusal).toEqual({ kind: 'settings_mismatch', peer: 'n1', peerSettings: settings, settings: sequential });
    expect(describeHandshakeRefusal(refusal as HandshakeRefusal)).toMatch(/"n1" runs with "mode=linearizability.*this node with "mode=sequential.*same mode \(-cons\)/);
    // A listener refuses a hello with other settings once its proof holds (a dialer that went on)...
    const dialerNonce = randomBytes(32);
    const transcript = {
      clusterId, dialer: 'n2', listener: 'n1', listenerNonce: listener.nonce, dialerNonce, listenerSettings: settings, dialerSettings: sequential,
    };
    const hello = {
      kind: 'hello', version: HANDSHAKE_VERSION, from: 'n2', to: 'n1', clusterId, settings: sequential, nonce: dialerNonce,
      proof: handshakeProof(secret, 'dialer', transcript),
    };
    expect(refusalOf(checkHello(hello, listener))).toEqual({ kind: 'settings_mismatch', peer: 'n2', peerSettings: sequential, settings });
    // ...and settings are in the proof: a hello whose settings were rewritten does not pass.
    const genuine = dialerAnswers(listener).hello;
    expect(refusalOf(checkHello({ ...genuine, settings: sequential }, listener))).toEqual({ kind: 'bad_proof', peer: 'n2' });
  });

  it('with TLS, the verified certificate must name the node id the hello claims', () => {
    const listener = listenerContext({ certificateNames: ['n3'] });
    const { hello } = dialerAnswers(listener);
    expect(refusalOf(checkHello(hello, listener))).toEqual({ kind: 'certificate_mismatch', peer: 'n2', names: ['n3'] });
    expect(checkHello(hello, { ...listener, certificateNames: ['other', 'n2'] }).kind).toBe('accepted');
  });

  it('reads names from the common name and DNS subject alternative names', () => {
    expect(certificateNames({ subject: { CN: 'n1' } })).toEqual(['n1']);
    expect(certificateNames({ subject: { CN: ['a', 'b'] }, subjectaltname: 'DNS:n2, IP Address:127.0.0.1, DNS:n2.example' })).toEqual([
      'a',
      'b',
      'n2',
      'n2.example',
    ]);
    expect(certificateNames({})).toEqual([]);
  });

  it('describes every refusal kind in one line', () => {
    const samples: HandshakeRefusal[] = [
      { kind: 'malformed', detail: 'x' },
      { kind: 'version_mismatch', version: '2' },
      { kind: 'cluster_mismatch', peerClusterId: 'b', clusterId: 'a' },
      { kind: 'settings_mismatch', peer: 'n2', peerSettings: 'mode=sequential', settings: 'mode=eventual' },
      { kind: 'unknown_peer', peer: 'n9' },
      { kind: 'wrong_recipient', to: 'n3', self: 'n1' },
      { kind: 'wrong_peer', peer: 'n3', expected: 'n1' },
      { kind: 'bad_proof', peer: 'n2' },
      { kind: 'certificate_mismatch', peer: 'n2', names: ['n3'] },
      { kind: 'tls_failed', detail: 'x' },
      { kind: 'frame_error', detail: 'x' },
      { kind: 'timeout' },
      { kind: 'too_many_pending', pendingMax: 16 },
    ];
    expect(samples.map((sample) => sample.kind)).toEqual([...HANDSHAKE_REFUSAL_KINDS]);
    for (const sample of samples) expect(describeHandshakeRefusal(sample)).toMatch(/^[^\n]+$/);
  });
});
