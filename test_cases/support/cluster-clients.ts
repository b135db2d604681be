/** A test's one cluster and the text clients it opened on it, all stopped and closed after each test. */

import { afterEach } from 'vitest';
import { TextClient } from '../../src/client/text-client.ts';
import { Cluster, type ClusterOptions } from '../../src/jepsen/cluster.ts';

export interface ClusterClients {
  /** Starts the test's cluster (stopped after the test). */
  start(options: ClusterOptions): Promise<Cluster>;
  /** A client of node `id`'s controller (closed after the test). */
  connect(id: string): Promise<TextClient>;
}

/** Registers the cleanup with vitest; call once at the top of a test file. */
export function clusterClients(): ClusterClients {
  let cluster: Cluster | null = null;
  const clients: TextClient[] = [];
  afterEach(async () => {
    for (const client of clients.splice(0)) client.close();
    await cluster?.stop();
    cluster = null;
  });
  return {
    async start(options) {
      cluster = await Cluster.start(options);
      return cluster;
    },
    async connect(id) {
      if (cluster === null) throw new Error('no cluster');
      const client = await TextClient.connect('127.0.0.1', cluster.node(id).clientPort);
      clients.push(client);
      return client;
    },
  };
}
