import { strict as assert } from 'node:assert';
import dcmjs from 'dcmjs';
import { readPart10Header } from '../../src/dicom/header.js';

/** A Part 10 file written by dcmjs (not our generator): a CT header with identity attributes. */
function part10(dataset: Record<string, unknown>, transferSyntaxUid = '1.2.840.10008.1.2.1'): Buffer {
  const meta = {
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: dataset['SOPClassUID'],
    MediaStorageSOPInstanceUID: dataset['SOPInstanceUID'],
    TransferSyntaxUID: transferSyntaxUid,
    ImplementationClassUID: '2.25.1234567890',
  };
  const dict = new dcmjs.data.DicomDict(dcmjs.data.DicomMetaDictionary.denaturalizeDataset(meta));
  dict.dict = dcmjs.data.DicomMetaDictionary.denaturalizeDataset(dataset);
  return Buffer.from(dict.write());
}

const base = {
  // dcmjs writes text as UTF-8, so that is what the file declares
  SpecificCharacterSet: 'ISO_IR 192',
  SOPClassUID: '1.2.840.10008.5.1.4.1.1.2',
  SOPInstanceUID: '1.2.826.0.1.3680043.10.543.9.1.1',
  StudyInstanceUID: '1.2.826.0.1.3680043.10.543.9',
  SeriesInstanceUID: '1.2.826.0.1.3680043.10.543.9.1',
  Modality: 'CT',
  PatientName: 'Müller^Jürgen',
  PatientID: 'MRN-77',
  IssuerOfPatientID: 'HOSP',
  PatientBirthDate: '19600101',
};

describe('DICOM header: identity with its authority', () => {
  it('reads Issuer of Patient ID and every Other Patient IDs Sequence item (id, issuer, type)', async () => {
    const h = await readPart10Header(
      part10({
        ...base,
        OtherPatientIDsSequence: [
          { PatientID: 'NAT-123', IssuerOfPatientID: 'NATIONAL', TypeOfPatientID: 'TEXT' },
          { PatientID: 'OLD-9', IssuerOfPatientID: 'OLDHOSP' },
        ],
      }),
    );
    assert.equal(h.patientId, 'MRN-77');
    assert.equal(h.issuerOfPatientId, 'HOSP');
    assert.equal(h.patientName, 'Müller^Jürgen');
    assert.equal(h.patientBirthDate, '19600101');
    assert.deepEqual(h.otherPatientIds, [
      { id: 'NAT-123', issuer: 'NATIONAL', type: 'TEXT' },
      { id: 'OLD-9', issuer: 'OLDHOSP', type: null },
    ]);
  });

  it('the same in implicit VR little endian (the renamed character set element arrives as bytes)', async () => {
    const h = await readPart10Header(
      part10({ ...base, OtherPatientIDsSequence: [{ PatientID: 'NAT-123', IssuerOfPatientID: 'NATIONAL' }] }, '1.2.840.10008.1.2'),
    );
    assert.equal(h.specificCharacterSet, 'ISO_IR 192');
    assert.equal(h.patientName, 'Müller^Jürgen');
    assert.deepEqual(h.otherPatientIds, [{ id: 'NAT-123', issuer: 'NATIONAL', type: null }]);
  });

  it('no issuer, no other ids: null and an empty list', async () => {
    const { IssuerOfPatientID: _drop, ...noIssuer } = base;
    const h = await readPart10Header(part10(noIssuer));
    assert.equal(h.issuerOfPatientId, null);
    assert.deepEqual(h.otherPatientIds, []);
  });
});
