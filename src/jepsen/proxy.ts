/**
 * A TCP proxy for one directed peer link (dialer → listener), which the fault runner can cut and
 * heal. Partitions are made by routing peer links through these, so no root and no firewall is
 * needed.
 *
 * Cutting destroys the link's connections and refuses new ones until healed, which the peers see
 * as a dead link (their failure detectors time out; reconnects fail). Since each controller
 * sends only on the connections it dialled, cutting one proxy cuts one direction of traffic.
 * Slowing holds every chunk for a delay before passing it on, in order (a slow network: the
 * bytes arrive, late); corrupting passes what comes back from the target through a function of the
 * test's (a peer or memcached that answers garbage); healing ends all three.
 */

import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { itemAt } from '../runtime/item-at.ts';

/** Chunks held back on one direction of one connection, oldest first, with when each may go. */
interface Held {
  chunks: Array<{ chunk: Buffer; atMs: number }>;
  timer: NodeJS.Timeout | null;
}

export class LinkProxy {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private cut = false;
  private delayMs = 0;
  /** What comes back from the target goes through this (null: that connection is closed instead). */
  private mutate: ((chunk: Buffer) => Buffer | null) | null = null;
  port = 0;

  constructor(
    readonly name: string,
    private readonly target: { host: string; port: number },
  ) {
    this.server = net.createServer((client) => this.accept(client));
  }

  async listen(host = '127.0.0.1'): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, host, () => resolve());
    });
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  get isCut(): boolean {
    return this.cut;
  }

  /** Drops every connection of this link and refuses new ones. */
  cutLink(): void {
    this.cut = true;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  /** Drops every connection of this link and goes on taking new ones (a reset, not a cut). */
  reset(): void {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  /** Holds every chunk `delayMs` before passing it on (0: at once again), keeping their order. */
  slow(delayMs: number): void {
    this.delayMs = delayMs;
  }

  /** Passes every chunk coming back from the target through `mutate`; a null from it closes that connection. */
  corrupt(mutate: (chunk: Buffer) => Buffer | null): void {
    this.mutate = mutate;
  }

  heal(): void {
    this.cut = false;
    this.delayMs = 0;
    this.mutate = null;
  }

  async close(): Promise<void> {
    this.cutLink();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    if (this.cut) {
      client.destroy();
      return;
    }
    const upstream = net.connect(this.target);
    this.sockets.add(client);
    this.sockets.add(upstream);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    this.forward(client, upstream);
    this.forward(upstream, client, drop);
  }

  /**
   * Passes `from`'s bytes to `to`, each chunk after the delay in force when it came, in order; on
   * the way back from the target (`drop` given), through `mutate` if set.
   */
  private forward(from: net.Socket, to: net.Socket, drop?: () => void): void {
    const held: Held = { chunks: [], timer: null };
    const send = (chunk: Buffer): void => {
      if (to.destroyed) return;
      if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => from.resume());
      }
    };
    const release = (): void => {
      held.timer = null;
      const nowMs = performance.now();
      for (let next = held.chunks[0]; next !== undefined && next.atMs <= nowMs; next = held.chunks[0]) {
        held.chunks.shift();
        send(next.chunk);
      }
      const first = held.chunks[0];
      if (first !== undefined) held.timer = setTimeout(release, first.atMs - nowMs);
    };
    from.on('data', (data: Buffer) => {
      const chunk = drop !== undefined && this.mutate !== null ? this.mutate(data) : data;
      if (chunk === null) {
        drop?.();
        return;
      }
      if (this.delayMs === 0 && held.chunks.length === 0) {
        send(chunk);
        return;
      }
      // Never before a chunk that came earlier, even when the delay has since been shortened.
      const lastAtMs = held.chunks.at(-1)?.atMs ?? 0;
      held.chunks.push({ chunk, atMs: Math.max(performance.now() + this.delayMs, lastAtMs) });
      held.timer ??= setTimeout(release, itemAt(held.chunks, 0).atMs - performance.now());
    });
    from.on('close', () => {
      if (held.timer !== null) clearTimeout(held.timer);
    });
  }
}
