/**
 * The benchmark's workloads: what a load run sends (connections, requests in flight on each, the
 * share of gets), the standard ones a run measures unless told otherwise, the bulk load, and the
 * `GETS:SETS-CONNECTIONSxPIPELINE` spec that names any other shape.
 *
 * Invariant: a spec that describes a named workload parses to that workload, so results and goals
 * keyed by the standard ids apply to it too. Users import these names from ./loadgen.ts.
 */

/** What a run sends: how many connections, how many requests each keeps in flight, and the share of gets. */
export interface Workload {
  /** A standard name (`mix-16x1`) or the spec it was given as (`1:1-32x4`). */
  id: string;
  label: string;
  connections: number;
  pipelineDepth: number;
  /** Fraction of operations that are gets (0.9 for 9:1, 0 for sets only). */
  getFraction: number;
}
export type WorkloadId = Workload['id'];

/** The standard workloads: what a run measures unless told otherwise. */
export const STANDARD_WORKLOADS: readonly Workload[] = [
  { id: 'mix-4x1', label: '9:1 get:set, 4 conns × pipeline 1', connections: 4, pipelineDepth: 1, getFraction: 0.9 },
  { id: 'mix-16x1', label: '9:1 get:set, 16 conns × pipeline 1', connections: 16, pipelineDepth: 1, getFraction: 0.9 },
  { id: 'mix-4x32', label: '9:1 get:set, 4 conns × pipeline 32', connections: 4, pipelineDepth: 32, getFraction: 0.9 },
  { id: 'set-16x1', label: 'sets only, 16 conns × pipeline 1', connections: 16, pipelineDepth: 1, getFraction: 0 },
];

/**
 * A bulk load: sets only, 3 connections each keeping 512 in flight (on a cluster, one connection
 * per controller). Not run unless named (`--workloads bulk`); `0:1-CxP` sets other shapes.
 */
export const BULK_WORKLOAD: Workload = { id: 'bulk', label: 'bulk load: sets only, 3 conns × pipeline 512', connections: 3, pipelineDepth: 512, getFraction: 0 };

/** Every workload that has a name: the standard ones and the bulk load. */
export const NAMED_WORKLOADS: readonly Workload[] = [...STANDARD_WORKLOADS, BULK_WORKLOAD];

/** Limits of a workload given as a spec: connections, requests in flight on each, and the ratio's terms. */
export const WORKLOAD_LIMITS = { connectionsMax: 1024, pipelineDepthMax: 1024, ratioTermMax: 1000 } as const;

/** The grammar of a workload spec, for help texts and error messages. */
export const WORKLOAD_SPEC = 'GETS:SETS-CONNECTIONSxPIPELINE, e.g. 1:1-32x4 (0:1 is sets only, 1:0 gets only)';

/**
 * A named workload (standard or bulk), or one given as `GETS:SETS-CONNECTIONSxPIPELINE` (`9:1-16x1`); null when
 * it is neither or out of WORKLOAD_LIMITS. A spec that matches a named workload is that workload,
 * so the goals judged on the standard ones apply to it too.
 */
export function parseWorkload(text: string): Workload | null {
  const standard = NAMED_WORKLOADS.find((workload) => workload.id === text);
  if (standard !== undefined) return standard;
  const match = /^(\d{1,4}):(\d{1,4})-(\d{1,4})x(\d{1,4})$/.exec(text);
  if (match === null) return null;
  const [gets = 0, sets = 0, connections = 0, pipelineDepth = 0] = match.slice(1).map(Number);
  const { connectionsMax, pipelineDepthMax, ratioTermMax } = WORKLOAD_LIMITS;
  if (gets + sets === 0 || gets > ratioTermMax || sets > ratioTermMax) return null;
  if (connections < 1 || connections > connectionsMax || pipelineDepth < 1 || pipelineDepth > pipelineDepthMax) return null;
  const getFraction = gets / (gets + sets);
  const same = NAMED_WORKLOADS.find(
    (workload) => workload.connections === connections && workload.pipelineDepth === pipelineDepth && workload.getFraction === getFraction,
  );
  if (same !== undefined) return same;
  const mix = sets === 0 ? 'gets only' : gets === 0 ? 'sets only' : `${gets}:${sets} get:set`;
  return { id: `${gets}:${sets}-${connections}x${pipelineDepth}`, label: `${mix}, ${connections} conns × pipeline ${pipelineDepth}`, connections, pipelineDepth, getFraction };
}
