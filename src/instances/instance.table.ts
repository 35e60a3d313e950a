import type { Selectable } from 'kysely';

/** One row per gateway process that ever ran on this database: its heartbeat says whether it is alive. */
export interface GatewayInstanceTable {
  instance_id: string;
  host: string;
  pid: number;
  version: string | null;
  started_at: string;
  heartbeat_at: string;
  stopped_at: string | null;
}

/**
 * A named lease (`destination:<id>`): held by one instance until `expires_at`,
 * renewed while it works, free when `owner` is null or the time has passed.
 */
export interface WorkLeaseTable {
  name: string;
  owner: string | null;
  acquired_at: string | null;
  expires_at: string | null;
}

export type GatewayInstanceRow = Selectable<GatewayInstanceTable>;
export type WorkLeaseRow = Selectable<WorkLeaseTable>;
