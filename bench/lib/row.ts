/** One row of a bench table, as run.ts reports it and writes it to bench/results/<time>.json. */
export interface Row {
  workload: string;
  contender: string;
  rps?: number;
  p50?: number;
  p99?: number;
  cpuUsPerRequest?: number;
  note?: string;
  /** The version of the Node binary the contender process ran (from /proc/<pid>/exe). */
  node?: string;
  [extra: string]: unknown;
}
