import type { StudyTable, SeriesTable, InstanceTable } from '../studies/study.table.js';

/** Every table, by name, as kysely sees it. Each domain owns its `*.table.ts`. */
export interface Database {
  studies: StudyTable;
  series: SeriesTable;
  instances: InstanceTable;
}
