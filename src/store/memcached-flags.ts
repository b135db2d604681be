/**
 * How mckv runs memcached: `-M` (a full memcached refuses writes instead of evicting items behind
 * the log's back) and the LRU settings below (startup.sh and docker-compose.yml pass the same, and
 * the README asks the same of a user's own memcached).
 *
 * Why: memcached's LRU maintainer moves new items out of the HOT segment once HOT holds its share
 * of a size class (20% by default), polling every millisecond while it has any to move. Under a
 * stream of writes it woke about 900 times a second per memcached, on the cores the controllers
 * use (bench/PERFORMANCE.md, "memcached's LRU maintainer"). With `-M` nothing is evicted, so where
 * an item sits in the LRU does not matter; a large HOT segment leaves the maintainer little to do,
 * and it still reclaims expired items, which the memory guard's count of `bytes` relies on
 * (`-o no_lru_maintainer` would leave them counted until a crawl).
 */
export const MEMCACHED_STORE_ARGS: readonly string[] = ['-M', '-o', 'hot_lru_pct=70,warm_lru_pct=10'];
