import type { Selectable } from 'kysely';

/** A key image the second reader marked with one report version (migration 016), in the reader's order. */
export interface SecondReportKeyImageTable {
  report_id: string;
  position: number;
  sop_instance_uid: string;
  series_instance_uid: string;
  sop_class_uid: string;
}

export type SecondReportKeyImageRow = Selectable<SecondReportKeyImageTable>;
