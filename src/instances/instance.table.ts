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

export type GatewayInstanceRow = Selectable<GatewayInstanceTable>;
