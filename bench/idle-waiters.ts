/**
 * Who waits for a load channel to have nothing in flight: the memcached connections and the etcd
 * channels both keep a closed loop and both let the run wait for their last replies.
 */

export class IdleWaiters {
  private waiters: Array<() => void> = [];

  /** Resolves at once when `idle`, else at the next `wake`. */
  wait(idle: boolean): Promise<void> {
    if (idle) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Resolves everyone waiting. */
  wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }
}
