import { expect } from 'chai';
import { addHl7Identifiers, dedupeHl7Identifiers, emptyHl7Identifiers } from '../../src/forwarding/hl7-identifiers.js';
import { knownFromHl7 } from '../../src/forwarding/deid-port.js';
import { scrubText } from '../../src/forwarding/text-scrubber.js';

// Hand-made from HL7 v2.5.1 chapters 2-4 (ORU^R01 with PID, NK1, PV1, ORC, OBR), with escapes and repetitions,
// and a non-default encoding character set (MSH-2 `^~\&` replaced by `$%!*` is legal: the escape is `!`).
const ORU = [
  'MSH|^~\\&|RIS|HOSP|SECONDREAD|GW|20260301101500||ORU^R01^ORU_R01|MSG-77|P|2.5.1',
  "PID|1|ALT-4411|MRN-5512^^^HOSP^MR~998877665^^^NHS^NH||O\\S\\BRIEN&O'Brien^MAEVE^K||19480229|F|||4 Orchard Row^Flat 2^Cork^^T12 X7Y^IRL||^PRN^PH^^353^21^4567890~^NET^Internet^maeve@example.org|||||ACCT-3344|123-45-6789",
  "NK1|1|O'BRIEN^DECLAN|SPO|4 Orchard Row^^Cork|(021) 555 0101",
  'PV1|1|O|RAD^^^HOSP||||1234^REFERRER^RITA^^^DR|5678^CONSULT^CARL|||||||||9012^ADMIT^ADA||VIS-8899',
  'ORC|RE|PLC-1|FIL-1||CM||||20260301100000|||1234^REFERRER^RITA^^^DR||(021) 555 0202',
  'OBR|1|PLC-1|ACC-1|CTCHEST^CT Chest^L|||20260301100000|||||||||1234^REFERRER^RITA|||ACC-1||||||F||||||||RAD7&RADIOLOG&ROSA',
  "OBX|1|TX|||Findings for Maeve O'Brien, born 29.02.1948, MRN-5512: no nodule.||||||F",
].join('\r');

describe('identifiers of a study read from its HL7 messages (for the verifier)', () => {
  const ids = dedupeHl7Identifiers(
    (() => {
      const h = emptyHl7Identifiers();
      addHl7Identifiers(ORU, h);
      addHl7Identifiers(ORU, h);
      return h;
    })(),
  );

  it('reads patient ids with their authorities, other ids, names with escapes, birth date, address and phones', () => {
    expect(ids.ids).to.deep.include({ id: 'MRN-5512', authority: 'HOSP', kind: 'patient-id' });
    expect(ids.ids).to.deep.include({ id: '998877665', authority: 'NHS', kind: 'patient-id' });
    expect(ids.ids).to.deep.include({ id: 'ALT-4411', kind: 'patient-id' });
    expect(ids.ids).to.deep.include({ id: 'ACCT-3344', kind: 'patient-id' });
    expect(ids.ids).to.deep.include({ id: '123-45-6789', kind: 'patient-id' });
    expect(ids.ids).to.deep.include({ id: 'ACC-1', kind: 'accession' });
    expect(ids.ids).to.deep.include({ id: 'VIS-8899', kind: 'id' });
    // \S\ is the component separator as text: decoded, the family name reads O^BRIEN (each word is a needle)
    expect(ids.personNames).to.deep.include({ name: 'O^BRIEN^MAEVE^K', kind: 'patient-name' });
    expect(ids.personNames.map((n) => n.name)).to.include.members(['REFERRER^RITA', 'CONSULT^CARL', 'ADMIT^ADA', 'RADIOLOG^ROSA', "O'BRIEN^DECLAN"]);
    expect(ids.dates).to.deep.include({ date: '19480229', kind: 'birth-date' });
    expect(ids.texts.map((t) => t.text)).to.include.members([
      '4 Orchard Row',
      'Flat 2',
      'T12 X7Y',
      '4567890',
      'maeve@example.org',
      '(021) 555 0101',
      '(021) 555 0202',
    ]);
  });

  it('repeated messages give each identifier once', () => {
    const keys = ids.ids.map((i) => JSON.stringify(i));
    expect(new Set(keys).size).to.equal(keys.length);
  });

  it('seeds the known identifiers: the report text is scrubbed of the patient and the dates the RIS knows', () => {
    const text = "Findings for Maeve O'Brien, born 29.02.1948, MRN-5512: no nodule. Referred by Dr Rita Referrer.";
    const out = scrubText(text, knownFromHl7(ids));
    for (const s of ['Maeve', '1948', 'MRN-5512', 'Referrer', 'Rita']) expect(out, s).to.not.include(s);
    expect(out).to.include('no nodule');
  });

  it('ignores a message without MSH and survives truncated segments', () => {
    const h = emptyHl7Identifiers();
    addHl7Identifiers('PID|1||X', h);
    addHl7Identifiers('MSH|^~\\&|A\rPID|1||MRN-9^^^H', h);
    expect(h.ids).to.deep.equal([{ id: 'MRN-9', authority: 'H', kind: 'patient-id' }]);
  });
});
