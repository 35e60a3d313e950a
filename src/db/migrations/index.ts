import * as m001 from './001-studies.js';

/**
 * Numbered, forward-only. Imported statically (not read from a folder) so the
 * compiled build and the tests run exactly the same list.
 */
export const migrations = {
  '001-studies': m001,
};
