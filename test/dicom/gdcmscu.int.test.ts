/**
 * GDCM's gdcmscu (Debian libgdcm-tools) as another independent SCU against
 * our SCP: C-ECHO, and C-STORE of a generated study whose stored datasets
 * must equal what was sent.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import winston from 'winston';
import { defaultConfig } from '../../src/config/schema.js';
import { migrateToLatest, openDatabase, type OpenedDatabase } from '../../src/db/database.js';
import { splitPart10 } from '../../src/dicom/part10.js';
import { DicomScp } from '../../src/dicom/scp.js';
import { Spool } from '../../src/dicom/spool.js';
import { findInstance, findStudy } from '../../src/studies/study.repository.js';
import { StudyService } from '../../src/studies/study.service.js';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { GDCM_RELEASE_ABORT, hasDcmtk, runGdcmscu } from '../helpers/dicom-peers.js';
import { startStorescp } from '../helpers/storescp.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

const silent = winston.createLogger({ silent: true });

/**
 * Why gdcmscu cannot serve as a peer here, or undefined when it can: it must be installed and able to
 * C-ECHO DCMTK's storescp (an independent SCP), so that a failure against ours is ours. Debian's 3.0.21
 * completes the exchange and then aborts after the A-RELEASE-RP (GDCM_RELEASE_ABORT): that counts as
 * completed only with the release in its PDU trace (runGdcmscu), so its exit status is not what is judged.
 */
async function gdcmscuUnusable(): Promise<string | undefined> {
  if (spawnSync('gdcmscu', ['--version'], { stdio: 'ignore' }).status !== 0) return 'gdcmscu not installed';
  if (!hasDcmtk()) return 'gdcmscu cannot be checked without DCMTK (not installed)';
  const probe = await startStorescp('PROBE');
  try {
    const r = await runGdcmscu(['--echo', '--call', 'PROBE', '127.0.0.1', String(probe.port)], 10_000);
    if (r.completed) return undefined;
    const why =
      r.output
        .split('\n')
        .filter((l) => l.trim() !== '')
        .at(-1) ?? `exit ${r.code ?? r.signal}`;
    return `gdcmscu installed but cannot C-ECHO DCMTK storescp either (${why.trim()})`;
  } finally {
    await probe.stop();
  }
}

describe('gdcmscu (GDCM) as an independent SCU against our SCP', function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let opened: OpenedDatabase;
  let spool: Spool;
  let scp: DicomScp;
  let study: GeneratedStudy;

  before(async function () {
    const unusable = await gdcmscuUnusable();
    if (unusable) {
      console.log(`      skipped: ${unusable}`);
      this.skip();
    }
    tmp = makeTempDir('gw-gdcm-');
    study = generateStudy(path.join(tmp.dir, 'study'), { instances: 4, series: 2, rows: 64, columns: 64, accessionNumber: 'ACC-GDCM', patientId: 'PID-GDCM' });
    opened = openDatabase(testDatabaseUrl(path.join(tmp.dir, 'gateway.db')));
    await migrateToLatest(opened.db);
    spool = new Spool(path.join(tmp.dir, 'spool'), 0);
    spool.open();
    const studies = new StudyService({ db: opened.db, spool, logger: silent, stableAfterSeconds: 60 });
    const config = { ...defaultConfig().dicom, host: '127.0.0.1', port: 0, aeTitle: 'SECONDREAD', allowedCallers: ['GDCMSCU'] };
    scp = new DicomScp({ config, sink: studies, spool, logger: silent });
    await scp.start();
  });
  after(async () => {
    if (!scp) return;
    await scp.stop(2000);
    await opened.close();
    tmp.cleanup();
  });

  const gdcm = (args: string[], callingAe = 'GDCMSCU') => runGdcmscu(['--aetitle', callingAe, '--call', 'SECONDREAD', ...args, '127.0.0.1', String(scp.port)]);

  it('C-ECHO succeeds: our C-ECHO-RSP with status 0 in its trace, then the release', async () => {
    const r = await gdcm(['--echo']);
    assert.ok(r.completed, r.output);
    assert.deepEqual(r.pdus, [2, 4, 6], 'A-ASSOCIATE-AC, P-DATA-TF (the response), A-RELEASE-RP');
    assert.match(r.output, /\(0000,0100\) \?\? \(US\) 32816\b/, 'C-ECHO-RSP (0x8030)');
    assert.match(r.output, /\(0000,0900\) \?\? \(US\) 0\b/, 'status 0');
    if (r.code !== 0) console.log(`      note: ${GDCM_RELEASE_ABORT}`);
  });

  it('C-STORE of a study directory: every instance stored, datasets byte-identical', async () => {
    const r = await gdcm(['--store', '-r', '-i', path.join(tmp.dir, 'study')]);
    assert.ok(r.completed, r.output);
    const row = await findStudy(opened.db, study.studyInstanceUid);
    assert.equal(row?.instance_count, study.instances.length);
    assert.equal(row?.calling_ae, 'GDCMSCU');
    for (const inst of study.instances) {
      const dbRow = await findInstance(opened.db, inst.sopInstanceUid);
      assert.ok(dbRow, 'instance row');
      const sent = splitPart10(readFileSync(inst.path));
      const stored = splitPart10(readFileSync(spool.absolute(dbRow.file_path)));
      assert.equal(stored.transferSyntaxUid, sent.transferSyntaxUid);
      assert.ok(sent.dataset.equals(stored.dataset), 'dataset bytes identical');
    }
  });

  it('a calling AE that is not allowed is rejected (gdcmscu fails, nothing stored)', async () => {
    const before = (await findStudy(opened.db, study.studyInstanceUid))?.instance_count;
    const r = await gdcm(['--echo'], 'INTRUDER');
    assert.equal(r.completed, false, r.output);
    assert.equal(r.pdus[0], 3, 'A-ASSOCIATE-RJ');
    assert.equal((await findStudy(opened.db, study.studyInstanceUid))?.instance_count, before);
  });
});
