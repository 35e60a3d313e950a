import { expect } from 'chai';
import type { OpenedDatabase } from '../../src/db/database.js';
import { resolvePseudonym, StudyPseudonyms } from '../../src/forwarding/pseudonym.service.js';
import { openTempDatabase } from '../helpers/tmp.js';

describe('StudyPseudonyms (SQLite file)', () => {
  let temp: Awaited<ReturnType<typeof openTempDatabase>>;
  let opened: OpenedDatabase;
  beforeEach(async () => {
    temp = await openTempDatabase();
    opened = temp.opened;
  });
  afterEach(() => temp.close());

  it('gives the same pseudonyms for the same study and destination, other ones for another destination, and links back', async () => {
    const a = await StudyPseudonyms.load(opened.db, 'secret-1', 'pool', '1.2.3');
    const uid = a.uid('1.2.3');
    expect(uid)
      .to.match(/^2\.25\.\d+$/)
      .and.have.length.below(65);
    expect(a.uid('1.2.3')).to.equal(uid);
    expect(a.uid('1.2.3.4')).to.not.equal(uid);
    const pid = a.patientId('MRN1');
    expect(pid).to.match(/^ANON[0-9A-F]{12}$/);
    expect(a.patientName('MRN1')).to.equal(`ANON^${pid}`);
    const shift = a.dateShiftDays('MRN1');
    expect(shift).to.be.within(-365, -1);
    expect(await a.persist(opened.db, '2026-11-28T00:00:00Z')).to.equal(3);
    expect(await a.persist(opened.db, '2026-11-28T00:00:00Z')).to.equal(0);

    const again = await StudyPseudonyms.load(opened.db, 'secret-1', 'pool', '1.2.3');
    expect(again.uid('1.2.3')).to.equal(uid);
    expect(again.dateShiftDays('MRN1')).to.equal(shift);
    const other = await StudyPseudonyms.load(opened.db, 'secret-1', 'other-pool', '1.2.3');
    expect(other.uid('1.2.3')).to.not.equal(uid);
    const otherSecret = await StudyPseudonyms.load(opened.db, 'secret-2', 'elsewhere', '1.2.3');
    expect(otherSecret.patientId('MRN1')).to.not.equal(pid);

    expect(await resolvePseudonym(opened.db, 'pool', 'uid', uid)).to.deep.equal({ studyInstanceUid: '1.2.3', original: '1.2.3' });
    expect(await resolvePseudonym(opened.db, 'pool', 'patient-id', pid)).to.deep.equal({ studyInstanceUid: '1.2.3', original: 'MRN1' });
    expect(await resolvePseudonym(opened.db, 'other-pool', 'uid', uid)).to.equal(undefined);
  });
});
