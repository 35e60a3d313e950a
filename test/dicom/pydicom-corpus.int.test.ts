/**
 * The real-world corpus Debian's python3-pydicom ships (vendor files: every transfer syntax, SR, RT,
 * waveforms, odd and broken encodings, a DICOMDIR set, and the character-set files in Japanese,
 * Korean, Chinese, Greek, Hebrew, Arabic, Cyrillic): each Part 10 file is pushed by DCMTK's storescu
 * to DCMTK's storescp +xa (the reference for what must be accepted) and to the gateway, the same way.
 * Every file storescp accepted, the gateway accepts; for every SOP instance the gateway's current copy
 * equals, element by element (dcmdump of the dataset), what storescp received for the last file sent
 * with that SOP Instance UID: the corpus reuses UIDs across files with other content, so the earlier
 * copies are prior versions.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readSync, closeSync, readdirSync, renameSync, statSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { findInstance } from '../../src/studies/study.repository.js';
import { hasDcmtk, runDcmtk } from '../helpers/dicom-peers.js';
import { DicomGateway, Storescp } from '../helpers/dicom-gateway.js';

const CORPUS = '/usr/lib/python3/dist-packages/pydicom/data';

/** storescu's proposal per transfer syntax of the file, so compressed files travel as they are. */
const PROPOSE: Record<string, string> = {
  '1.2.840.10008.1.2.1.99': '-xd',
  '1.2.840.10008.1.2.4.50': '-xy',
  '1.2.840.10008.1.2.4.51': '-xx',
  '1.2.840.10008.1.2.4.57': '-xs',
  '1.2.840.10008.1.2.4.70': '-xs',
  '1.2.840.10008.1.2.4.80': '-xt',
  '1.2.840.10008.1.2.4.81': '-xu',
  '1.2.840.10008.1.2.4.90': '-xv',
  '1.2.840.10008.1.2.4.91': '-xw',
  '1.2.840.10008.1.2.5': '-xr',
};

function walk(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((n) => {
      const p = path.join(dir, n);
      return statSync(p).isDirectory() ? walk(p) : [p];
    });
}

function isPart10(file: string): boolean {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(132);
    return readSync(fd, b, 0, 132, 0) === 132 && b.toString('latin1', 128, 132) === 'DICM';
  } finally {
    closeSync(fd);
  }
}

/** The dataset (after the meta header) as dcmdump prints it: values, VRs and tags, not byte layout. */
async function datasetDump(file: string): Promise<string> {
  const r = await runDcmtk('dcmdump', ['-q', '+L', '+U8', '-M', file]);
  const text = r.stdout;
  const at = text.indexOf('# Dicom-Data-Set');
  return (at >= 0 ? text.slice(at) : text)
    .split('\n')
    .filter((l) => !l.startsWith('# Used TransferSyntax'))
    .join('\n');
}

async function storescu(port: number, aec: string, file: string, proposal: string | undefined): Promise<{ ok: boolean; out: string }> {
  const args = ['-v', '-aet', 'PACS1', '-aec', aec, ...(proposal ? [proposal] : []), '-R', '127.0.0.1', String(port), file];
  const r = await runDcmtk('storescu', args, 60_000);
  const out = r.stdout + r.stderr;
  return { ok: /Received Store Response \(Success\)/.test(out), out };
}

describe('pydicom vendor corpus pushed by DCMTK storescu: storescp +xa vs the gateway', function () {
  this.timeout(600_000);
  const gw = new DicomGateway();
  let scp: Storescp;
  let files: string[] = [];

  before(async function () {
    if (!hasDcmtk()) {
      console.log('      skipped: DCMTK (storescu, storescp, dcmdump) not installed');
      this.skip();
    }
    if (!existsSync(`${CORPUS}/test_files`) || !existsSync(`${CORPUS}/charset_files`)) {
      console.log('      skipped: the pydicom corpus is not installed (python3-pydicom)');
      this.skip();
    }
    files = [...walk(`${CORPUS}/test_files`), ...walk(`${CORPUS}/charset_files`)].filter(isPart10);
    await gw.start();
    scp = new Storescp(path.join(gw.tmp.dir, 'storescp'));
    mkdirSync(scp.dir, { recursive: true });
    await scp.start();
  });
  after(async () => {
    scp?.stop();
    await gw.stop();
  });

  it('accepts every file storescp accepts, and keeps the last copy of each SOP instance as sent', async () => {
    const kept = path.join(gw.tmp.dir, 'reference');
    mkdirSync(kept);
    /** SOP Instance UID -> the reference copy storescp received for the last file sent with it. */
    const last = new Map<string, { file: string; reference: string; sends: number }>();
    const refused: string[] = [];
    let accepted = 0;
    for (const [i, file] of files.entries()) {
      const ts = (await runDcmtk('dcmdump', ['-q', '-M', '+P', '0002,0010', '-s', file])).stdout.match(/\[([0-9.]+)\]/)?.[1];
      const proposal = ts ? PROPOSE[ts] : undefined;
      const before = new Set(scp.files());
      const ref = await storescu(scp.port, 'STORESCP', file, proposal);
      if (!ref.ok) continue;
      const written = scp.files().filter((f) => !before.has(f));
      expect(written, `storescp wrote one file for ${file}`).to.have.length(1);
      const reference = path.join(kept, `${i}.dcm`);
      renameSync(path.join(scp.dir, written[0]!), reference);
      const ours = await storescu(gw.dicomPort, 'SECONDREAD', file, proposal);
      if (!ours.ok) {
        refused.push(
          `${path.relative(CORPUS, file)}: ${ours.out
            .split('\n')
            .filter((l) => /Store Response|E:|W:/.test(l))
            .slice(0, 3)
            .join(' | ')}`,
        );
        continue;
      }
      accepted++;
      const sop = (await runDcmtk('dcmdump', ['-q', '+P', '0008,0018', '-s', reference])).stdout.match(/\[([^\]]*)\]/)?.[1];
      expect(sop, `SOP Instance UID of ${file}`).to.be.a('string');
      last.set(sop!, { file, reference, sends: (last.get(sop!)?.sends ?? 0) + 1 });
    }
    expect(refused, 'files storescp accepted and the gateway refused').to.deep.equal([]);
    expect(accepted, 'files accepted').to.be.greaterThan(100);

    let reused = 0;
    for (const [sop, l] of last) {
      const row = await findInstance(gw.gw.db, sop);
      expect(row, `${l.file}: the gateway has its SOP instance`).to.not.equal(undefined);
      const stored = path.join(gw.dataDir, row!.file_path);
      expect(await datasetDump(stored), `${l.file}: current copy equals what was sent last`).to.equal(await datasetDump(l.reference));
      if (l.sends > 1) {
        reused++;
        const versions = await gw.gw.db
          .selectFrom('instance_versions')
          .select(['version', 'sha256', 'superseded_at'])
          .where('sop_instance_uid', '=', sop)
          .orderBy('version')
          .execute();
        const current = versions.filter((v) => v.superseded_at === null);
        expect(
          current.map((v) => v.sha256),
          `${l.file}: one current version, the stored file`,
        ).to.deep.equal([row!.sha256]);
        expect(row!.sha256).to.equal(
          createHash('sha256')
            .update(await import('node:fs').then((fs) => fs.readFileSync(stored)))
            .digest('hex'),
        );
      }
    }
    expect(reused, 'SOP Instance UIDs the corpus sends more than once').to.be.greaterThan(0);
  });

  it('decodes the Japanese and Korean multi-valued character sets into the API', async () => {
    const expected: Record<string, string> = {
      'chrH31.dcm': 'Yamada^Tarou=山田^太郎=やまだ^たろう',
      'chrH32.dcm': 'ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう',
      'chrI2.dcm': 'Hong^Gildong=洪^吉洞=홍^길동',
      'chrKoreanMulti.dcm': '김희중',
    };
    for (const [name, patientName] of Object.entries(expected)) {
      const file = `${CORPUS}/charset_files/${name}`;
      const study = (await runDcmtk('dcmdump', ['-q', '+P', '0020,000d', '-s', file])).stdout.match(/\[([^\]]*)\]/)?.[1];
      const sop = (await runDcmtk('dcmdump', ['-q', '+P', '0008,0018', '-s', file])).stdout.match(/\[([^\]]*)\]/)?.[1];
      // the study the last copy of this SOP instance lives in (the charset files share UIDs)
      const row = await findInstance(gw.gw.db, sop!);
      const r = await gw.call('GET', `/api/studies/${row?.study_instance_uid ?? study}`);
      expect(r.status).to.equal(200);
      const names = [r.body.patientName as string, ...(r.body.versions as { patientName: string }[]).map((v) => v.patientName)];
      expect(names, name).to.include(patientName);
    }
  });
});
