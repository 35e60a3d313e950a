import * as m001 from './001-studies.js';
import * as m002 from './002-hl7.js';
import * as m003 from './003-rules-cases.js';
import * as m004 from './004-forwarding.js';
import * as m005 from './005-readers-reports.js';
import * as m006 from './006-instances-claims.js';
import * as m007 from './007-identity-holds.js';
import * as m008 from './008-deid-exclusions.js';
import * as m009 from './009-instance-versions.js';
import * as m010 from './010-hl7-identity.js';
import * as m011 from './011-case-lifecycle.js';
import * as m012 from './012-rule-text-sampling.js';
import * as m013 from './013-jobs.js';
import * as m015 from './015-priors-mpps.js';
import * as m016 from './016-output-key-images.js';
import * as m017 from './017-audit-outbox.js';
import * as m018 from './018-arbitration.js';
import * as m019 from './019-drop-leases.js';
import * as m020 from './020-audit-outbox-trigger.js';

/**
 * Numbered, forward-only. Imported statically (not read from a folder) so the
 * compiled build and the tests run exactly the same list.
 */
export const migrations = {
  '001-studies': m001,
  '002-hl7': m002,
  '003-rules-cases': m003,
  '004-forwarding': m004,
  '005-readers-reports': m005,
  '006-instances-claims': m006,
  '007-identity-holds': m007,
  '008-deid-exclusions': m008,
  '009-instance-versions': m009,
  '010-hl7-identity': m010,
  '011-case-lifecycle': m011,
  '012-rule-text-sampling': m012,
  '013-jobs': m013,
  '015-priors-mpps': m015,
  '016-output-key-images': m016,
  '017-audit-outbox': m017,
  '018-arbitration': m018,
  '019-drop-leases': m019,
  '020-audit-outbox-trigger': m020,
};
