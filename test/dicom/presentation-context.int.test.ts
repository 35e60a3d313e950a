/**
 * PS3.7 / PS3.8: a C-STORE travels on a presentation context negotiated for its SOP class. One of
 * another class (even on the Verification context) is answered 0x0122 "SOP class not supported" and
 * nothing of it is kept; a dataset whose own SOP Class UID differs from the command's is answered
 * 0xA900 "data set does not match SOP class" (PS3.4 B.2.3). DCMTK will not send either, so our raw SCU does.
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { CT_IMAGE_STORAGE, EXPLICIT_LE, PduType, RawDicomPeer, VERIFICATION, cStoreRq, ctDataset, pData } from '../helpers/raw-dicom.js';
import { responseStatus } from '../helpers/raw-dicom.js';
import { DicomGateway } from '../helpers/dicom-gateway.js';

const MR_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.4';

function filesUnder(dir: string): string[] {
  try {
    return readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => path.join(e.parentPath, e.name));
  } catch {
    return [];
  }
}

describe('C-STORE on a presentation context of another SOP class', function () {
  this.timeout(30_000);
  const gw = new DicomGateway();
  before(() => gw.start());
  after(() => gw.stop());

  async function storeOn(contextId: number, commandClass: string, dataset: Buffer, sop: string): Promise<number | undefined> {
    const p = await RawDicomPeer.connect(gw.dicomPort);
    try {
      const ac = await p.associate({
        contexts: [
          { id: 1, abstractSyntax: VERIFICATION, transferSyntaxes: [EXPLICIT_LE] },
          { id: 3, abstractSyntax: CT_IMAGE_STORAGE, transferSyntaxes: [EXPLICIT_LE] },
          { id: 5, abstractSyntax: MR_IMAGE_STORAGE, transferSyntaxes: [EXPLICIT_LE] },
        ],
      });
      expect(ac.type).to.equal(PduType.associateAc);
      p.write(pData([{ contextId, command: true, last: true, data: cStoreRq(7, commandClass, sop) }]));
      p.write(pData([{ contextId, command: false, last: true, data: dataset }]));
      return responseStatus((await p.next())!);
    } finally {
      p.destroy();
    }
  }

  const study = '1.2.826.0.1.3680043.10.543.77';
  const ct = (sop: string): Buffer => ctDataset({ sopInstanceUid: sop, studyUid: study });

  async function nothingKept(sop: string): Promise<void> {
    expect(await gw.gw.db.selectFrom('instances').select('sop_instance_uid').where('sop_instance_uid', '=', sop).execute()).to.deep.equal([]);
    expect(await gw.gw.db.selectFrom('instance_versions').select('sop_instance_uid').where('sop_instance_uid', '=', sop).execute()).to.deep.equal([]);
    expect(filesUnder(path.join(gw.dataDir, 'instances')).filter((f) => f.includes(sop))).to.deep.equal([]);
    // nothing left half-written either
    expect(filesUnder(path.join(gw.dataDir, 'tmp')).filter((f) => !f.endsWith('.part'))).to.deep.equal([]);
  }

  it('a CT C-STORE on the Verification context: 0x0122, nothing on disk or in the database', async () => {
    const sop = `${study}.1`;
    expect(await storeOn(1, CT_IMAGE_STORAGE, ct(sop), sop)).to.equal(0x0122);
    await nothingKept(sop);
  });

  it('a CT C-STORE on the MR context: 0x0122, nothing kept', async () => {
    const sop = `${study}.2`;
    expect(await storeOn(5, CT_IMAGE_STORAGE, ct(sop), sop)).to.equal(0x0122);
    await nothingKept(sop);
  });

  it('an MR command on the MR context whose dataset says CT: 0xA900, nothing kept', async () => {
    const sop = `${study}.3`;
    expect(await storeOn(5, MR_IMAGE_STORAGE, ct(sop), sop)).to.equal(0xa900);
    await nothingKept(sop);
  });

  it('the same CT on its own context is stored (the check refuses only the mismatch)', async () => {
    const sop = `${study}.4`;
    expect(await storeOn(3, CT_IMAGE_STORAGE, ct(sop), sop)).to.equal(0);
    expect(await gw.gw.db.selectFrom('instances').select('sop_instance_uid').where('sop_instance_uid', '=', sop).execute()).to.have.length(1);
  });
});
