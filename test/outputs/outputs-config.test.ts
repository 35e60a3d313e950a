import { expect } from 'chai';
import { configSchema } from '../../src/config/schema.js';

const issues = (input: unknown): string[] => {
  const r = configSchema.safeParse(input);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
};

describe('config: outputs', () => {
  it('is off by default', () => {
    const c = configSchema.parse({});
    expect(c.outputs.dicomSr).to.equal(undefined);
    expect(c.outputs.fhir).to.equal(undefined);
    expect(c.outputs.maxAttempts).to.equal(20);
  });

  it('dicomSr names "pacs" (which needs the pacs section) or a destination that does not de-identify', () => {
    const pool = { id: 'pool', type: 'dimse', host: '127.0.0.1', port: 104, aeTitle: 'POOL', deidentify: true };
    const archive = { id: 'archive', type: 'dicomweb', url: 'http://127.0.0.1:8042/dicom-web' };
    expect(issues({ outputs: { dicomSr: { destination: 'pacs' } } })).to.deep.equal(['outputs.dicomSr.destination: "pacs" needs the pacs section']);
    expect(issues({ pacs: { type: 'dimse', host: '127.0.0.1', port: 4242, aeTitle: 'PACS' }, outputs: { dicomSr: { destination: 'pacs' } } })).to.deep.equal(
      [],
    );
    expect(issues({ destinations: [archive], outputs: { dicomSr: { destination: 'archive' } } })).to.deep.equal([]);
    expect(issues({ destinations: [archive], outputs: { dicomSr: { destination: 'nowhere' } } })[0]).to.match(/unknown destination "nowhere"/);
    expect(issues({ destinations: [pool], outputs: { dicomSr: { destination: 'pool' } } })[0]).to.match(/de-identifies: the SR names the patient/);
  });

  it('fhir needs a URL; identifier systems are URIs', () => {
    expect(issues({ outputs: { fhir: {} } })[0]).to.match(/^outputs\.fhir\.url/);
    const c = configSchema.parse({ outputs: { fhir: { url: 'https://fhir.example/r4', identifierSystems: { HOSP: 'urn:oid:1.2.3' } } } });
    expect(c.outputs.fhir).to.deep.include({ url: 'https://fhir.example/r4', headers: {}, timeoutSeconds: 30 });
    expect(issues({ outputs: { fhir: { url: 'https://fhir.example/r4', identifierSystems: { HOSP: 'HOSP' } } } })[0]).to.match(
      /identifierSystems\.HOSP: a URI/,
    );
  });
});
