/**
 * The least number a controller's run of the replicated log may take (its incarnation): the wall
 * clock's milliseconds at its start. Peers know a node's forwards and requests by its run's
 * number, and a node that lost its data_dir counts its runs from nothing again; so each run's
 * number must differ from every run its peers may remember. By the second it would not: a node
 * killed and restarted within one second would take its last run's number, and the leader would
 * take its new writes for that run's (already logged, so skipped) and never answer them.
 *
 * Invariant: runs of one node started at least a millisecond apart get different floors (a
 * controller takes far longer than that to start), whatever their records.
 */
export function incarnationFloorAt(wallMs: number): number {
  return Math.floor(wallMs);
}
