/**
 * The Replica's call order: one promise chain per key, so calls on one key run one at a time and in
 * call order while calls on different keys overlap, and barriers (flush_all, reset, a fetch of every
 * key) that wait for every earlier call and make every later one wait; and bulk calls (a put of a
 * whole replica's worth of keys), which wait for every earlier call and hold up later calls on their
 * keys only. Also the bounded worker pool a barrier uses to reach many keys at once. Why:
 * docs/design.md, "The replica and its value cache".
 *
 * Invariants:
 * - The order is fixed synchronously, when `single`, `keyed`, `runNow`, `bulk` or `barrier` is called.
 * - A call that fails does not stop its chain: the calls after it still run.
 * - A key's tail is forgotten as the call settles, so an idle key costs no lookup and no memory.
 */

/** Starts `work` at once; a synchronous throw becomes a rejection, as inside a `then`. */
function startNow<T>(work: () => Promise<T>): Promise<T> {
  try {
    return work();
  } catch (error) {
    return Promise.reject(error);
  }
}

/** A call on many keys registered once (see `bulk`): its keys, sorted, and when it has settled. */
interface Hold {
  keys: readonly string[];
  done: Promise<void>;
}

/** Runs calls in order per key, with barriers over all keys. */
export class KeyOrder {
  readonly #tails = new Map<string, Promise<void>>();
  readonly #sinceBarrier = new Set<Promise<void>>();
  /** `bulk` calls not settled yet, oldest first. */
  #holds: Hold[] = [];
  #barrier: Promise<void> = Promise.resolve();
  #barriersRunning = 0;

  /** True when no call on any of `keys` and no barrier is waiting or running. */
  idle(keys: readonly string[]): boolean {
    if (this.#barriersRunning > 0) return false;
    if (this.#tails.size === 0 && this.#holds.length === 0) return true; // nothing running: no lookup needed
    for (const key of keys) if (this.#tails.has(key) || this.#heldBy(key) !== undefined) return false;
    return true;
  }

  /** `idle([key])`, without the array. */
  idleKey(key: string): boolean {
    if (this.#barriersRunning > 0) return false;
    if (this.#holds.length > 0 && this.#heldBy(key) !== undefined) return false;
    return this.#tails.size === 0 || !this.#tails.has(key); // nothing running: no lookup needed
  }

  /** Resolves once every call made so far, and the last barrier, has settled; holds up no later call. */
  settledSoFar(): Promise<void> {
    if (this.#sinceBarrier.size === 0 && this.#barriersRunning === 0) return Promise.resolve();
    return Promise.all([this.#barrier, ...this.#sinceBarrier]).then(() => undefined);
  }

  /** Runs `work` after every earlier call on `key` and the last barrier (the common, one-key case). */
  single<T>(key: string, work: () => Promise<T>): Promise<T> {
    const tail = this.#tails.get(key);
    const held = this.#holds.length === 0 ? undefined : this.#heldBy(key);
    let result: Promise<T>;
    if (held !== undefined) {
      // The tail may be older than the hold, or wait for it: waiting for both is right either way.
      result = (tail === undefined ? held : Promise.all([tail, held])).then(work);
    } else if (tail === undefined && this.#barriersRunning === 0) {
      // Nothing to wait for: start now rather than a microtask later.
      result = startNow(work);
    } else {
      // A key's tail already waits for the barrier it was issued after (or is that barrier's successor).
      result = (tail === undefined ? this.#barrier : tail).then(work);
    }
    return this.#track([key], result);
  }

  /**
   * Runs `work` now, as the one call on `keys` (distinct, every one idle: see `idle`); later
   * calls on them wait for it, as after `keyed`. One registration for the whole batch.
   */
  runNow<T>(keys: readonly string[], work: () => Promise<T>): Promise<T> {
    return this.#track(keys, startNow(work));
  }

  /** Runs `work` after every earlier call on any of `keys` and the last barrier. */
  keyed<T>(keys: readonly string[], work: () => Promise<T>): Promise<T> {
    const first = keys[0];
    if (keys.length === 1 && first !== undefined) return this.single(first, work);
    const distinct = [...new Set(keys)];
    const before: Promise<void>[] = [this.#barrier];
    for (const key of distinct) {
      const tail = this.#tails.get(key);
      if (tail !== undefined) before.push(tail);
    }
    if (this.#holds.length > 0) {
      const held = new Set(distinct.map((key) => this.#heldBy(key)));
      for (const done of held) if (done !== undefined) before.push(done);
    }
    return this.#track(distinct, Promise.all(before).then(work));
  }

  /**
   * Runs `work` after every earlier call, as the one call on `keys` (sorted, distinct): later calls
   * on any of them wait for it, calls on other keys do not. One registration for a whole replica's
   * worth of keys, where `keyed` would write a tail per key in one turn (seconds for millions).
   */
  bulk<T>(keys: readonly string[], work: () => Promise<T>): Promise<T> {
    const result = this.settledSoFar().then(work);
    const forget = (): void => {
      this.#sinceBarrier.delete(done);
      this.#holds = this.#holds.filter((hold) => hold.done !== done);
    };
    const done: Promise<void> = result.then(forget, forget);
    this.#holds.push({ keys, done });
    this.#sinceBarrier.add(done);
    return result;
  }

  /** When the latest `bulk` call holding `key` settles; undefined if none holds it. */
  #heldBy(key: string): Promise<void> | undefined {
    for (let index = this.#holds.length - 1; index >= 0; index -= 1) {
      const hold = this.#holds[index] as Hold;
      if (holdsKey(hold.keys, key)) return hold.done;
    }
    return undefined;
  }

  /**
   * Makes `result` the last call on `keys` until it settles; it is forgotten as it settles,
   * before its caller's own continuation runs, so the keys are idle again at once.
   */
  #track<T>(keys: readonly string[], result: Promise<T>): Promise<T> {
    // Two inline callbacks rather than one named one: tsx names every named closure it creates
    // (esbuild's keepNames), a property definition per call on this hot path.
    const done: Promise<void> = result.then(
      () => this.#forget(keys, done),
      () => this.#forget(keys, done),
    );
    for (const key of keys) this.#tails.set(key, done);
    this.#sinceBarrier.add(done);
    return result;
  }

  #forget(keys: readonly string[], done: Promise<void>): void {
    this.#sinceBarrier.delete(done);
    for (const key of keys) if (this.#tails.get(key) === done) this.#tails.delete(key);
  }

  /** Runs `work` after every earlier call; every later call waits for it. */
  barrier<T>(work: () => Promise<T>): Promise<T> {
    const result = this.settledSoFar().then(work);
    this.#barriersRunning += 1;
    const settled = (): void => {
      this.#barriersRunning -= 1;
    };
    this.#barrier = result.then(settled, settled);
    this.#sinceBarrier.clear();
    this.#tails.clear();
    this.#holds = [];
    return result;
  }
}

/** Whether sorted `keys` include `key` (a binary search). */
function holdsKey(keys: readonly string[], key: string): boolean {
  let low = 0;
  let high = keys.length - 1;
  while (low <= high) {
    const middle = (low + high) >>> 1;
    const at = keys[middle] as string;
    if (at === key) return true;
    if (at < key) low = middle + 1;
    else high = middle - 1;
  }
  return false;
}

/** Calls `work` on every item (with its place in `items`), at most `limit` at a time; rejects with the first failure. */
export async function forEachBounded<T>(items: readonly T[], limit: number, work: (item: T, at: number) => Promise<void>): Promise<void> {
  // The workers share one iterator: each takes the next item not yet taken.
  const queue = items.entries();
  const worker = async (): Promise<void> => {
    for (const [at, item] of queue) await work(item, at);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
