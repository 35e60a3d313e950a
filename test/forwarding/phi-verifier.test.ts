import { expect } from 'chai';
import dcmjs, { type DicomDataDict } from 'dcmjs';
import { identifiersFromDataset, KnownIdentifiers } from '../../src/forwarding/known-identifiers.js';
import { verifyDeidentified, type VerifyHit } from '../../src/forwarding/phi-verifier.js';

const { DicomDict, DicomMetaDictionary } = dcmjs.data;
dcmjs.log.setLevel('error');

const EXPLICIT = '1.2.840.10008.1.2.1';
const IMPLICIT = '1.2.840.10008.1.2';
const CT = '1.2.840.10008.5.1.4.1.1.2';

function ids(): KnownIdentifiers {
  return new KnownIdentifiers()
    .addPersonName('ZZTESTPERSON^QUENTIN', 'patient-name')
    .addId('MRN-7781234', 'patient-id')
    .addId('5566123', 'id')
    .addDate('19570313', 'birth-date')
    .addText('SAINT ZEBEDEE HOSPITAL', 'institution')
    .addText('ZEBAE9', 'station');
}

/** A small clean image header (and a few pixels) with whatever `plant` adds, written by dcmjs. */
function file(plant: (d: DicomDataDict) => void, ts = EXPLICIT): Buffer {
  const dict = DicomMetaDictionary.denaturalizeDataset({
    SOPClassUID: CT,
    SOPInstanceUID: '2.25.1111',
    PatientName: [{ Alphabetic: 'ANON^PSEUDO-1' }],
    PatientID: 'PSEUDO-1',
    StudyDescription: 'CT CHEST',
    ImageComments: 'ANNOTATION of a nodule; 123 mm',
    ImageType: ['ORIGINAL', 'PRIMARY', 'AXIAL'],
    Modality: 'CT',
    Rows: 2,
    Columns: 2,
    BitsAllocated: 16,
    RequestAttributesSequence: [
      { RequestedProcedureID: 'RP-1', ReferencedStudySequence: [{ ReferencedSOPClassUID: '1.2.840.10008.3.1.2.3.1', ReferencedSOPInstanceUID: '2.25.2222' }] },
    ],
    ContentSequence: [
      {
        ValueType: 'CONTAINER',
        ContentSequence: [
          { ValueType: 'CODE', ConceptCodeSequence: [{ CodeValue: 'X1', CodingSchemeDesignator: '99L', CodeMeaning: 'nodule' }] },
          { ValueType: 'TEXT', TextValue: 'nothing' },
        ],
      },
    ],
  });
  dict['7FE00010'] = { vr: 'OW', Value: [new Uint16Array([1, 2, 3, 4]).buffer] };
  plant(dict);
  const meta = DicomMetaDictionary.denaturalizeDataset({
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: CT,
    MediaStorageSOPInstanceUID: '2.25.1111',
    TransferSyntaxUID: ts,
    ImplementationClassUID: '2.25.80302813137786398554742050926734630921',
    _vrMap: { FileMetaInformationVersion: 'OB' },
  });
  const d = new DicomDict(meta);
  d.dict = dict;
  return Buffer.from(d.write());
}

const item = (d: DicomDataDict, path: [string, number][]): DicomDataDict => path.reduce((acc, [tag, i]) => (acc[tag]!.Value as DicomDataDict[])[i]!, d);
const bytes = (s: string): ArrayBuffer => new TextEncoder().encode(s).buffer as ArrayBuffer;

const CASES: { name: string; plant: (d: DicomDataDict) => void; hits: VerifyHit[] }[] = [
  {
    name: 'PN top level',
    plant: (d) => (d['00100010'] = { vr: 'PN', Value: [{ Alphabetic: 'ZZTESTPERSON^QUENTIN' }] }),
    hits: [{ path: '00100010', kind: 'patient-name' }],
  },
  { name: 'LO (description)', plant: (d) => (d['00081030'] = { vr: 'LO', Value: ['CT for mrn-7781234'] }), hits: [{ path: '00081030', kind: 'patient-id' }] },
  { name: 'SH', plant: (d) => (d['00200010'] = { vr: 'SH', Value: ['MRN-7781234'] }), hits: [{ path: '00200010', kind: 'patient-id' }] },
  {
    name: 'LT (comments, a date spelling)',
    plant: (d) => (d['00204000'] = { vr: 'LT', Value: ['born 13.03.1957'] }),
    hits: [{ path: '00204000', kind: 'birth-date' }],
  },
  { name: 'ST', plant: (d) => (d['00400280'] = { vr: 'ST', Value: ['Quentin called'] }), hits: [{ path: '00400280', kind: 'patient-name' }] },
  { name: 'UT', plant: (d) => (d['00189004'] = { vr: 'UT', Value: ['at Saint Zebedee Hospital'] }), hits: [{ path: '00189004', kind: 'institution' }] },
  { name: 'DA', plant: (d) => (d['00100030'] = { vr: 'DA', Value: ['19570313'] }), hits: [{ path: '00100030', kind: 'birth-date' }] },
  { name: 'DT', plant: (d) => (d['0008002A'] = { vr: 'DT', Value: ['19570313101010'] }), hits: [{ path: '0008002A', kind: 'birth-date' }] },
  { name: 'AE', plant: (d) => (d['00400241'] = { vr: 'AE', Value: ['ZEBAE9'] }), hits: [{ path: '00400241', kind: 'station' }] },
  { name: 'CS (an id)', plant: (d) => (d['00180015'] = { vr: 'CS', Value: ['PART_5566123'] }), hits: [{ path: '00180015', kind: 'id' }] },
  { name: 'IS (a numeric id)', plant: (d) => (d['00200011'] = { vr: 'IS', Value: [5566123] }), hits: [{ path: '00200011', kind: 'id' }] },
  { name: 'DS (a numeric id)', plant: (d) => (d['00181130'] = { vr: 'DS', Value: [5566123] }), hits: [{ path: '00181130', kind: 'id' }] },
  {
    name: 'OB in a private block',
    plant: (d) => {
      d['00090010'] = { vr: 'LO', Value: ['VENDOR X'] };
      d['00091002'] = { vr: 'OB', Value: [bytes('dob=19570313;')] };
    },
    hits: [{ path: '00091002', kind: 'birth-date' }],
  },
  {
    name: 'UN in a private block',
    plant: (d) => {
      d['00090010'] = { vr: 'LO', Value: ['VENDOR X'] };
      d['00091003'] = { vr: 'UN', Value: [bytes('ZZTESTPERSON')] };
    },
    hits: [{ path: '00091003', kind: 'patient-name' }],
  },
  {
    name: 'UC one level deep (Long Code Value in a code item)',
    plant: (d) =>
      (d['00081032'] = {
        vr: 'SQ',
        Value: [{ '00080119': { vr: 'UC', Value: ['MRN-7781234'] }, '00080102': { vr: 'SH', Value: ['99X'] }, '00080104': { vr: 'LO', Value: ['x'] } }],
      }),
    hits: [{ path: '00081032[0].00080119', kind: 'patient-id' }],
  },
  {
    name: 'one level deep',
    plant: (d) => (item(d, [['00400275', 0]])['00401002'] = { vr: 'LO', Value: ['MRN-7781234'] }),
    hits: [{ path: '00400275[0].00401002', kind: 'patient-id' }],
  },
  {
    name: 'two levels deep (SR TEXT)',
    plant: (d) =>
      (item(d, [
        ['0040A730', 0],
        ['0040A730', 1],
      ])['0040A160'] = { vr: 'UT', Value: ['Mr Zztestperson'] }),
    hits: [{ path: '0040A730[0].0040A730[1].0040A160', kind: 'patient-name' }],
  },
  {
    name: 'three levels deep (a code meaning)',
    plant: (d) =>
      (item(d, [
        ['0040A730', 0],
        ['0040A730', 0],
        ['0040A168', 0],
      ])['00080104'] = { vr: 'LO', Value: ['told Quentin'] }),
    hits: [{ path: '0040A730[0].0040A730[0].0040A168[0].00080104', kind: 'patient-name' }],
  },
  {
    name: 'a private block inside a nested item',
    plant: (d) => {
      const i = item(d, [
        ['00400275', 0],
        ['00081110', 0],
      ]);
      i['00330010'] = { vr: 'LO', Value: ['NESTED VENDOR'] };
      i['00331001'] = { vr: 'LO', Value: ['MRN-7781234'] };
    },
    hits: [{ path: '00400275[0].00081110[0].00331001', kind: 'patient-id' }],
  },
  {
    name: 'a UID built from an id (whole component)',
    plant: (d) => (d['00200052'] = { vr: 'UI', Value: ['1.2.826.5566123.4'] }),
    hits: [{ path: '00200052', kind: 'id' }],
  },
];

describe('PHI verifier', () => {
  describe('finds a planted identifier in each VR family and at each nesting level, with its path', () => {
    for (const c of CASES) {
      it(c.name, () => {
        expect(verifyDeidentified(file(c.plant), ids())).to.deep.equal({ clean: false, hits: c.hits });
      });
    }

    it('the same in implicit VR little endian (no VRs: sequences found by their items)', () => {
      for (const c of CASES.filter((x) => !x.name.includes('UN'))) {
        expect(verifyDeidentified(file(c.plant, IMPLICIT), ids()), c.name).to.deep.equal({ clean: false, hits: c.hits });
      }
    });
  });

  it('the clean base file is clean (so every hit above comes from the planted value)', () => {
    expect(
      verifyDeidentified(
        file(() => {}),
        ids(),
      ),
    ).to.deep.equal({ clean: true });
    expect(
      verifyDeidentified(
        file(() => {}, IMPLICIT),
        ids(),
      ),
    ).to.deep.equal({ clean: true });
  });

  it('does not count: a name inside a longer word, short values, pure numbers under 4 digits, names in CS values, digits inside a UID component', () => {
    const short = new KnownIdentifiers().addPersonName('ANN^LI', 'patient-name').addId('123').addId('AB');
    expect(short.needles().map((n) => n.text)).to.deep.equal(['ann']);
    expect(
      verifyDeidentified(
        file(() => {}),
        short,
      ),
    ).to.deep.equal({ clean: true }); // 'ANNOTATION'
    const text = new KnownIdentifiers().addPersonName('TEXT^CODE', 'patient-name');
    expect(
      verifyDeidentified(
        file(() => {}),
        text,
      ),
    ).to.deep.equal({ clean: true }); // Value Type TEXT and CODE (CS)
    const partial = file((d) => (d['00200052'] = { vr: 'UI', Value: ['1.2.826.155661234.4'] }));
    expect(verifyDeidentified(partial, ids())).to.deep.equal({ clean: true });
  });

  it('skips the UIDs the de-identifier produced, and never scans pixel data', () => {
    const uid = '2.25.5566123';
    const f = file((d) => {
      d['00080018'] = { vr: 'UI', Value: [uid] };
      d['7FE00010'] = { vr: 'OW', Value: [bytes('ZZTESTPERSON')] };
    });
    expect(verifyDeidentified(f, ids())).to.deep.equal({ clean: false, hits: [{ path: '00080018', kind: 'id' }] });
    expect(verifyDeidentified(f, ids(), { producedUids: [uid] })).to.deep.equal({ clean: true });
  });

  it('scans a prefix (meta + header up to Pixel Data) the same way', () => {
    const f = file((d) => (d['00081030'] = { vr: 'LO', Value: ['MRN-7781234'] }));
    const pixelAt = f.lastIndexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00]));
    expect(verifyDeidentified(f.subarray(0, pixelAt), ids())).to.deep.equal({ clean: false, hits: [{ path: '00081030', kind: 'patient-id' }] });
  });

  it('finds a value in bytes it cannot parse as a dataset (raw offset path)', () => {
    const junk = Buffer.concat([Buffer.alloc(40, 0xff), Buffer.from('xx ZZTESTPERSON yy')]);
    const hits = verifyDeidentified(junk, ids());
    expect(hits).to.deep.equal({ clean: false, hits: [{ path: '@43', kind: 'patient-name' }] });
  });

  it('CJK names: two ideographs are a needle, found inside text without spaces (UTF-8)', () => {
    const k = new KnownIdentifiers().addPersonName('Yamada^Tarou=山田^太郎=やまだ^たろう', 'patient-name');
    expect(k.needles().map((n) => n.text)).to.include.members(['山田', '太郎', '山田太郎', 'やまだ']);
    const f = file((d) => (d['00204000'] = { vr: 'LT', Value: ['患者 山田太郎様 に説明'] }));
    expect(verifyDeidentified(f, k)).to.deep.equal({ clean: false, hits: [{ path: '00204000', kind: 'patient-name' }] });
    expect(
      verifyDeidentified(
        file(() => {}),
        k,
      ),
    ).to.deep.equal({ clean: true });
  });

  it('accented names in any case, in UTF-8 and in ISO 8859-1', () => {
    const k = new KnownIdentifiers().addPersonName('Müller^Jürgen', 'patient-name');
    const utf8 = file((d) => (d['00204000'] = { vr: 'LT', Value: ['HERR MÜLLER'] }));
    expect(verifyDeidentified(utf8, k)).to.deep.equal({ clean: false, hits: [{ path: '00204000', kind: 'patient-name' }] });
    const latin1 = Buffer.from(file((d) => (d['00204000'] = { vr: 'LT', Value: ['Herr XXller'] })));
    latin1.write('M\xfc', latin1.indexOf('XX'), 'latin1'); // 'Mü' in ISO 8859-1, same length
    expect(verifyDeidentified(latin1, k)).to.deep.equal({ clean: false, hits: [{ path: '00204000', kind: 'patient-name' }] });
  });

  it('HL7 and DICOM name forms, addresses and phone numbers become searchable needles', () => {
    const k = new KnownIdentifiers()
      .addPersonName('VAN DER BERG^JOHANNA^M^^DR', 'patient-name')
      .addPersonName('12345^SMITHERS^WAYLON', 'person-name')
      .addText('17 WOMBATWAY CRESCENT^^ZEBEDEEVILLE^^ZX1 2YY', 'address')
      .addText('+44 20 7946 0958', 'phone');
    const texts = k.needles().map((n) => n.text);
    expect(texts).to.include.members([
      'van der berg',
      'johanna',
      'smithers',
      'waylon',
      '12345',
      '17 wombatway crescent',
      'zebedeeville',
      '442079460958',
      '+44 20 7946 0958',
    ]);
    expect(texts).to.not.include('dr');
  });

  it('reads the identifiers of a source dataset: names, ids, birth date spellings, institution', () => {
    const f = file((d) => {
      d['00100010'] = { vr: 'PN', Value: [{ Alphabetic: 'ZZTESTPERSON^QUENTIN' }] };
      d['00100020'] = { vr: 'LO', Value: ['MRN-7781234'] };
      d['00100030'] = { vr: 'DA', Value: ['19570313'] };
      d['00080080'] = { vr: 'LO', Value: ['SAINT ZEBEDEE HOSPITAL'] };
      item(d, [['00400275', 0]])['00080050'] = { vr: 'SH', Value: ['ACC-4455667'] };
    });
    const texts = identifiersFromDataset(f)
      .needles()
      .map((n) => `${n.kind}:${n.text}`);
    expect(texts).to.include.members([
      'patient-name:zztestperson',
      'patient-name:quentin',
      'patient-id:mrn-7781234',
      'accession:acc-4455667',
      'birth-date:1957-03-13',
      'birth-date:13 mar 1957',
      'birth-date:03/13/1957',
      'institution:saint zebedee hospital',
    ]);
  });

  it('is cheap enough for every outgoing instance: a 512x512 CT header', () => {
    const f = file((d) => {
      d['00280010'] = { vr: 'US', Value: [512] };
      d['00280011'] = { vr: 'US', Value: [512] };
      d['7FE00010'] = { vr: 'OW', Value: [new Uint16Array(512 * 512).buffer] };
      for (let i = 0; i < 60; i++) d[`0019${(0x1010 + i).toString(16).toUpperCase()}`] = { vr: 'LO', Value: [`value ${i}`] };
      d['00190010'] = { vr: 'LO', Value: ['VENDOR'] };
    });
    const k = ids();
    for (let i = 0; i < 20; i++) verifyDeidentified(f, k);
    const n = 200;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) verifyDeidentified(f, k);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6 / n;
    console.log(`      verifyDeidentified: ${ms.toFixed(3)} ms per 512x512 CT (${f.length} bytes, ${k.size} needles)`);
    expect(ms).to.be.lessThan(5);
  });
});
