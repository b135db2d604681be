/**
 * The peer handshake: how two controllers prove to each other that they hold the cluster secret
 * before either reads anything else from the other. Pure: message shapes, validation and proofs;
 * nonces are passed in, the network (network.ts) does the I/O.
 *
 *   listener → dialer   challenge { from: listener, clusterId, settings, nonce: listener nonce }
 *   dialer → listener   hello     { from: dialer, to: listener, clusterId, settings, nonce: dialer nonce, proof }
 *   listener → dialer   welcome   { from: listener, to: dialer, proof }
 *
 * Each proof is HMAC-SHA256(secret, transcript): a role label (dialer or listener), the cluster id,
 * both node ids, both nonces and both sides' settings, each length-prefixed. A fresh nonce on each side means no proof
 * can be replayed on another connection, and the role label means the listener's proof can never
 * pass as a dialer's. Without TLS an attacker on the path can still relay a handshake and then
 * write frames itself; mutual TLS (the certificate names the node id) closes that gap.
 *
 * `settings` names what every node of a cluster must run with alike (the controller's mode and
 * read-lease timing: see controller/cluster-settings.ts). Nodes that differ refuse each other, so a
 * controller restarted with another `-cons` stays out instead of quietly breaking the cluster's
 * promise; each side's log names both.
 *
 * Invariant: nothing here throws on what a peer sent; a bad message is a `HandshakeRefusal` value.
 */

import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Carried by every handshake message; a peer of another release is refused by it. Raised whenever a
 * peer message's fields or meaning change (7: a stopping controller says `leave`), so two builds
 * never exchange messages one of them misreads.
 */
export const HANDSHAKE_VERSION = 7;
export const HANDSHAKE_NONCE_BYTES = 32;
export const HANDSHAKE_PROOF_BYTES = 32;
/** Handshake frames are far smaller; a larger frame before authentication is refused from its header. */
export const HANDSHAKE_FRAME_BYTES_MAX = 1024;
/** Longest node id or cluster id a handshake message may carry. */
export const HANDSHAKE_NAME_CHARS_MAX = 64;
/** Longest settings line a handshake message may carry. */
export const HANDSHAKE_SETTINGS_CHARS_MAX = 150;
/** A cluster secret shorter than this is refused at start-up. */
export const CLUSTER_SECRET_BYTES_MIN = 16;

const TRANSCRIPT_LABEL = 'mckv peer handshake v4';

export interface Challenge {
  kind: 'challenge';
  version: number;
  from: string;
  clusterId: string;
  settings: string;
  nonce: Buffer;
}

export interface Hello {
  kind: 'hello';
  version: number;
  from: string;
  to: string;
  clusterId: string;
  settings: string;
  nonce: Buffer;
  proof: Buffer;
}

export interface Welcome {
  kind: 'welcome';
  version: number;
  from: string;
  to: string;
  proof: Buffer;
}

/** Why a handshake did not complete. Rendered by `describeHandshakeRefusal`; counted by kind. */
export type HandshakeRefusal =
  | { kind: 'malformed'; detail: string }
  | { kind: 'version_mismatch'; version: string }
  | { kind: 'cluster_mismatch'; peerClusterId: string; clusterId: string }
  | { kind: 'settings_mismatch'; peer: string; peerSettings: string; settings: string }
  | { kind: 'unknown_peer'; peer: string }
  | { kind: 'wrong_recipient'; to: string; self: string }
  | { kind: 'wrong_peer'; peer: string; expected: string }
  | { kind: 'bad_proof'; peer: string }
  | { kind: 'certificate_mismatch'; peer: string; names: string[] }
  | { kind: 'tls_failed'; detail: string }
  | { kind: 'frame_error'; detail: string }
  | { kind: 'timeout' }
  | { kind: 'too_many_pending'; pendingMax: number };

export type HandshakeRefusalKind = HandshakeRefusal['kind'];

export const HANDSHAKE_REFUSAL_KINDS = [
  'malformed',
  'version_mismatch',
  'cluster_mismatch',
  'settings_mismatch',
  'unknown_peer',
  'wrong_recipient',
  'wrong_peer',
  'bad_proof',
  'certificate_mismatch',
  'tls_failed',
  'frame_error',
  'timeout',
  'too_many_pending',
] as const satisfies readonly HandshakeRefusalKind[];

/** One line for the log. */
export function describeHandshakeRefusal(refusal: HandshakeRefusal): string {
  switch (refusal.kind) {
    case 'malformed':
      return `not a valid handshake message (${refusal.detail})`;
    case 'version_mismatch':
      return `handshake version ${refusal.version}, expected ${HANDSHAKE_VERSION} (a peer of another release?)`;
    case 'cluster_mismatch':
      return `cluster id mismatch: the peer is in cluster '${refusal.peerClusterId}', this node in '${refusal.clusterId}'`;
    case 'settings_mismatch':
      return (
        `${JSON.stringify(refusal.peer)} runs with ${JSON.stringify(refusal.peerSettings)}, this node with ` +
        `${JSON.stringify(refusal.settings)}: every controller must run the same mode (-cons) and read-lease settings`
      );
    case 'unknown_peer':
      return `unknown peer id ${JSON.stringify(refusal.peer)}`;
    case 'wrong_recipient':
      return `meant for ${JSON.stringify(refusal.to)}, this is ${refusal.self}`;
    case 'wrong_peer':
      return `the node at this address is ${JSON.stringify(refusal.peer)}, expected ${refusal.expected}`;
    case 'bad_proof':
      return `${JSON.stringify(refusal.peer)} did not prove it holds the cluster secret (different secret_file?)`;
    case 'certificate_mismatch':
      return `TLS certificate names ${JSON.stringify(refusal.names)}, not the peer ${JSON.stringify(refusal.peer)}`;
    case 'tls_failed':
      return `TLS handshake failed (${refusal.detail})`;
    case 'frame_error':
      return `bad frame before authentication (${refusal.detail})`;
    case 'timeout':
      return 'handshake not completed in time';
    case 'too_many_pending':
      return `more than ${refusal.pendingMax} connections not yet authenticated`;
    default: {
      const unreachable: never = refusal;
      return unreachable;
    }
  }
}

/** Everything both proofs cover. */
export interface Transcript {
  clusterId: string;
  dialer: string;
  listener: string;
  listenerNonce: Buffer;
  dialerNonce: Buffer;
  listenerSettings: string;
  dialerSettings: string;
}

/** HMAC-SHA256 of the transcript under the secret, for one role. */
export function handshakeProof(secret: Buffer, role: 'dialer' | 'listener', transcript: Transcript): Buffer {
  const hmac = createHmac('sha256', secret);
  const fields = [
    Buffer.from(TRANSCRIPT_LABEL),
    Buffer.from(role),
    Buffer.from(transcript.clusterId),
    Buffer.from(transcript.dialer),
    Buffer.from(transcript.listener),
    transcript.listenerNonce,
    transcript.dialerNonce,
    Buffer.from(transcript.listenerSettings),
    Buffer.from(transcript.dialerSettings),
  ];
  for (const field of fields) {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(field.length, 0);
    hmac.update(length);
    hmac.update(field);
  }
  return hmac.digest();
}

/** Constant-time comparison (the length of a proof is no secret). */
export function proofsEqual(expected: Buffer, actual: Buffer): boolean {
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

// ---------------------------------------------------------------------------------------------
// Listener side

export function challengeMessage(options: { self: string; clusterId: string; settings: string; nonce: Buffer }): Challenge {
  const { self, clusterId, settings, nonce } = options;
  return { kind: 'challenge', version: HANDSHAKE_VERSION, from: self, clusterId, settings, nonce };
}

export interface ListenerContext {
  self: string;
  clusterId: string;
  /** What every node must run with alike (see the header). */
  settings: string;
  secret: Buffer;
  /** The ids a hello may come from. */
  peers: ReadonlySet<string>;
  /** The nonce this listener sent in its challenge. */
  nonce: Buffer;
  /** With TLS: the names the peer's verified certificate carries (one must be its id); null without TLS. */
  certificateNames: readonly string[] | null;
}

export type HelloOutcome = { kind: 'accepted'; peer: string; welcome: Welcome } | { kind: 'refused'; refusal: HandshakeRefusal };

/** Checks a dialer's hello; on success, the welcome to answer with. */
export function checkHello(message: unknown, context: ListenerContext): HelloOutcome {
  const shape = helloShape(message);
  if ('refusal' in shape) return { kind: 'refused', refusal: shape.refusal };
  const hello = shape.value;
  if (hello.clusterId !== context.clusterId) {
    return refused({ kind: 'cluster_mismatch', peerClusterId: hello.clusterId, clusterId: context.clusterId });
  }
  if (hello.to !== context.self) return refused({ kind: 'wrong_recipient', to: hello.to, self: context.self });
  if (hello.from === context.self || !context.peers.has(hello.from)) return refused({ kind: 'unknown_peer', peer: hello.from });
  const transcript: Transcript = {
    clusterId: context.clusterId,
    dialer: hello.from,
    listener: context.self,
    listenerNonce: context.nonce,
    dialerNonce: hello.nonce,
    listenerSettings: context.settings,
    dialerSettings: hello.settings,
  };
  if (!proofsEqual(handshakeProof(context.secret, 'dialer', transcript), hello.proof)) {
    return refused({ kind: 'bad_proof', peer: hello.from });
  }
  if (context.certificateNames !== null && !context.certificateNames.includes(hello.from)) {
    return refused({ kind: 'certificate_mismatch', peer: hello.from, names: [...context.certificateNames] });
  }
  if (hello.settings !== context.settings) {
    return refused({ kind: 'settings_mismatch', peer: hello.from, peerSettings: hello.settings, settings: context.settings });
  }
  const welcome: Welcome = {
    kind: 'welcome',
    version: HANDSHAKE_VERSION,
    from: context.self,
    to: hello.from,
    proof: handshakeProof(context.secret, 'listener', transcript),
  };
  return { kind: 'accepted', peer: hello.from, welcome };
}

// ---------------------------------------------------------------------------------------------
// Dialer side

export interface DialerContext {
  self: string;
  /** The peer this node dialled: the challenge must come from it. */
  peer: string;
  clusterId: string;
  /** What every node must run with alike (see the header). */
  settings: string;
  secret: Buffer;
  /** This dialer's nonce for this connection. */
  nonce: Buffer;
}

export type ChallengeOutcome =
  | { kind: 'answered'; hello: Hello; expectedWelcomeProof: Buffer }
  | { kind: 'refused'; refusal: HandshakeRefusal };

/** Checks a listener's challenge; on success, the hello to send and the proof its welcome must carry. */
export function answerChallenge(message: unknown, context: DialerContext): ChallengeOutcome {
  const shape = challengeShape(message);
  if ('refusal' in shape) return { kind: 'refused', refusal: shape.refusal };
  const challenge = shape.value;
  if (challenge.clusterId !== context.clusterId) {
    return refused({ kind: 'cluster_mismatch', peerClusterId: challenge.clusterId, clusterId: context.clusterId });
  }
  if (challenge.from !== context.peer) return refused({ kind: 'wrong_peer', peer: challenge.from, expected: context.peer });
  // Not yet proved (a challenge carries no proof), but a listener that differs would refuse our
  // hello: say why here too, so that each side's log names both settings.
  if (challenge.settings !== context.settings) {
    return refused({ kind: 'settings_mismatch', peer: challenge.from, peerSettings: challenge.settings, settings: context.settings });
  }
  const transcript: Transcript = {
    clusterId: context.clusterId,
    dialer: context.self,
    listener: context.peer,
    listenerNonce: challenge.nonce,
    dialerNonce: context.nonce,
    listenerSettings: challenge.settings,
    dialerSettings: context.settings,
  };
  const hello: Hello = {
    kind: 'hello',
    version: HANDSHAKE_VERSION,
    from: context.self,
    to: context.peer,
    clusterId: context.clusterId,
    settings: context.settings,
    nonce: context.nonce,
    proof: handshakeProof(context.secret, 'dialer', transcript),
  };
  return { kind: 'answered', hello, expectedWelcomeProof: handshakeProof(context.secret, 'listener', transcript) };
}

export type WelcomeOutcome = { kind: 'accepted' } | { kind: 'refused'; refusal: HandshakeRefusal };

/** Checks the listener's welcome against the proof `answerChallenge` expected. */
export function checkWelcome(
  message: unknown,
  context: { self: string; peer: string; expectedProof: Buffer },
): WelcomeOutcome {
  const shape = welcomeShape(message);
  if ('refusal' in shape) return { kind: 'refused', refusal: shape.refusal };
  const welcome = shape.value;
  if (welcome.from !== context.peer) return refused({ kind: 'wrong_peer', peer: welcome.from, expected: context.peer });
  if (welcome.to !== context.self) return refused({ kind: 'wrong_recipient', to: welcome.to, self: context.self });
  if (!proofsEqual(context.expectedProof, welcome.proof)) return refused({ kind: 'bad_proof', peer: welcome.from });
  return { kind: 'accepted' };
}

// ---------------------------------------------------------------------------------------------
// TLS identities

/** The subset of a peer certificate (node:tls `PeerCertificate`) that names its holder. */
export interface CertificateSubject {
  subject?: { CN?: string | string[] } | null;
  subjectaltname?: string;
}

/** The common name(s) and DNS subject alternative names of a certificate. */
export function certificateNames(certificate: CertificateSubject): string[] {
  const names: string[] = [];
  const commonName = certificate.subject?.CN;
  if (typeof commonName === 'string') names.push(commonName);
  else if (Array.isArray(commonName)) names.push(...commonName.filter((name) => typeof name === 'string'));
  for (const entry of (certificate.subjectaltname ?? '').split(',')) {
    const name = /^\s*DNS:(.+?)\s*$/.exec(entry)?.[1];
    if (name !== undefined) names.push(name);
  }
  return names;
}

// ---------------------------------------------------------------------------------------------
// Shapes

type Shape<T> = { value: T } | { refusal: HandshakeRefusal };

function refused(refusal: HandshakeRefusal): { kind: 'refused'; refusal: HandshakeRefusal } {
  return { kind: 'refused', refusal };
}

/** Kind and version first, so a peer of another release is named as such, whatever its fields. */
function envelope(message: unknown, kind: string): Shape<Record<string, unknown>> {
  if (typeof message !== 'object' || message === null || Array.isArray(message) || Buffer.isBuffer(message)) {
    return { refusal: { kind: 'malformed', detail: `expected a ${kind}, got ${typeof message}` } };
  }
  const fields = message as Record<string, unknown>;
  if (fields.kind !== kind) {
    return { refusal: { kind: 'malformed', detail: `expected a ${kind}, got kind ${clip(fields.kind)}` } };
  }
  if (fields.version !== HANDSHAKE_VERSION) return { refusal: { kind: 'version_mismatch', version: clip(fields.version) } };
  return { value: fields };
}

function challengeShape(message: unknown): Shape<Challenge> {
  const outer = envelope(message, 'challenge');
  if ('refusal' in outer) return outer;
  const fields = outer.value;
  const problem =
    nameProblem(fields, 'from') ?? nameProblem(fields, 'clusterId') ?? settingsProblem(fields) ?? bytesProblem(fields, 'nonce', HANDSHAKE_NONCE_BYTES);
  if (problem !== null) return { refusal: { kind: 'malformed', detail: problem } };
  return { value: fields as unknown as Challenge };
}

function helloShape(message: unknown): Shape<Hello> {
  const outer = envelope(message, 'hello');
  if ('refusal' in outer) return outer;
  const fields = outer.value;
  const problem =
    nameProblem(fields, 'from') ??
    nameProblem(fields, 'to') ??
    nameProblem(fields, 'clusterId') ??
    settingsProblem(fields) ??
    bytesProblem(fields, 'nonce', HANDSHAKE_NONCE_BYTES) ??
    bytesProblem(fields, 'proof', HANDSHAKE_PROOF_BYTES);
  if (problem !== null) return { refusal: { kind: 'malformed', detail: problem } };
  return { value: fields as unknown as Hello };
}

function welcomeShape(message: unknown): Shape<Welcome> {
  const outer = envelope(message, 'welcome');
  if ('refusal' in outer) return outer;
  const fields = outer.value;
  const problem = nameProblem(fields, 'from') ?? nameProblem(fields, 'to') ?? bytesProblem(fields, 'proof', HANDSHAKE_PROOF_BYTES);
  if (problem !== null) return { refusal: { kind: 'malformed', detail: problem } };
  return { value: fields as unknown as Welcome };
}

function nameProblem(fields: Record<string, unknown>, key: string): string | null {
  const value = fields[key];
  if (typeof value !== 'string' || value.length === 0 || value.length > HANDSHAKE_NAME_CHARS_MAX) {
    return `${key} is not a name of 1 to ${HANDSHAKE_NAME_CHARS_MAX} characters`;
  }
  return null;
}

function settingsProblem(fields: Record<string, unknown>): string | null {
  const value = fields.settings;
  if (typeof value !== 'string' || value.length > HANDSHAKE_SETTINGS_CHARS_MAX) {
    return `settings is not a string of at most ${HANDSHAKE_SETTINGS_CHARS_MAX} characters`;
  }
  return null;
}

function bytesProblem(fields: Record<string, unknown>, key: string, bytes: number): string | null {
  const value = fields[key];
  return Buffer.isBuffer(value) && value.length === bytes ? null : `${key} is not ${bytes} bytes`;
}

/** A short printable form of a value a peer sent. */
function clip(value: unknown): string {
  if (typeof value === 'object' && value !== null) return Array.isArray(value) ? 'an array' : 'an object';
  const text = typeof value === 'string' ? JSON.stringify(value) : String(value);
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}
