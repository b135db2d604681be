/**
 * A TCP proxy for one directed peer link (dialer → listener), which the fault runner can cut and
 * heal. Partitions are made by routing peer links through these, so no root and no firewall is
 * needed.
 *
 * Cutting destroys the link's connections and refuses new ones until healed, which the peers see
 * as a dead link (their failure detectors time out; reconnects fail). Since each controller
 * sends only on the connections it dialled, cutting one proxy cuts one direction of traffic.
 */

import net from 'node:net';

export class LinkProxy {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private cut = false;
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

  heal(): void {
    this.cut = false;
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
    client.pipe(upstream);
    upstream.pipe(client);
  }
}
