import { expect } from 'chai';
import type { DiagnosticReport, Observation } from '@medplum/fhirtypes';
import { buildFhirBundle, FhirSystems, patientIdentifierSystem, type FhirReportInput } from '../../src/outputs/fhir-builder.js';
import { fhirErrors } from './fhir-schema.js';

const input = (over: Partial<FhirReportInput> = {}): FhirReportInput => ({
  report: {
    id: 'rep-1',
    version: 1,
    text: 'Missed 9 mm nodule in the left lower lobe.',
    impression: 'Nodule, follow-up CT.',
    radpeerScore: '3b',
    createdAt: new Date('2026-11-28T12:00:00Z'),
  },
  reader: { id: 'r-smith', name: 'Jane Smith' },
  patient: { id: 'MRN-4711', system: 'urn:oid:1.2.3.4.5' },
  accession: { value: 'ACC-4711', system: 'urn:oid:1.2.3.4.6' },
  studyInstanceUid: '1.2.826.0.1.3680043.8.498.1001',
  ...over,
});

describe('outputs: the FHIR R4 DiagnosticReport of the second read', function () {
  // Compiling the whole R4 schema takes a few seconds on a loaded machine.
  this.timeout(60_000);

  it('is a transaction Bundle that the HL7 FHIR R4 JSON schema accepts, and the schema refuses a broken one', () => {
    const bundle = buildFhirBundle(input());
    expect(fhirErrors(bundle)).to.deep.equal([]);
    for (const e of bundle.entry!) expect(fhirErrors(e.resource!), e.resource!.resourceType).to.deep.equal([]);
    const withArbitration = buildFhirBundle(input({ arbitration: { verdict: 'first', readerName: 'Al Third', text: 'Vessel, not a nodule.' } }));
    expect(fhirErrors(withArbitration)).to.deep.equal([]);
    // The validation can fail: a status FHIR does not know, a reference with a number for its identifier value.
    const broken = JSON.parse(JSON.stringify(bundle)) as { entry: { resource: Record<string, unknown> }[] };
    broken.entry[1]!.resource['status'] = 'done';
    (broken.entry[1]!.resource['subject'] as { identifier: { value: unknown } }).identifier.value = 4711;
    const errors = fhirErrors(broken as never);
    expect(errors.join('\n'))
      .to.match(/status/)
      .and.match(/value/);
  });

  it('names the patient by identifier with system, the order by accession, the reader as performer, the report as conclusion', () => {
    const bundle = buildFhirBundle(input({ arbitration: { verdict: 'second' } }));
    expect(bundle.type).to.equal('transaction');
    const [obsEntry, drEntry] = bundle.entry!;
    const dr = drEntry!.resource as DiagnosticReport;
    const obs = obsEntry!.resource as Observation;
    expect(dr.subject).to.deep.equal({ type: 'Patient', identifier: { system: 'urn:oid:1.2.3.4.5', value: 'MRN-4711' } });
    expect(obs.subject).to.deep.equal(dr.subject);
    expect(dr.basedOn![0]!.type).to.equal('ServiceRequest');
    expect(dr.basedOn![0]!.identifier).to.deep.include({ system: 'urn:oid:1.2.3.4.6', value: 'ACC-4711' });
    expect(dr.basedOn![0]!.identifier!.type!.coding![0]!.code).to.equal('ACSN');
    expect(dr.performer![0]).to.deep.include({ display: 'Jane Smith', identifier: { system: FhirSystems.reader, value: 'r-smith' } });
    expect(dr.conclusion).to.include('Missed 9 mm nodule').and.include('Nodule, follow-up CT.').and.include('agrees with the second read');
    expect(dr.status).to.equal('final');
    expect(dr.result![0]!.reference).to.equal(obsEntry!.fullUrl);
    expect(dr.imagingStudy![0]!.identifier!.value).to.equal('urn:oid:1.2.826.0.1.3680043.8.498.1001');
    expect(obs.valueCodeableConcept!.coding![0]).to.include({ code: '3b', system: FhirSystems.codes });
    expect(obs.component!.map((c) => c.valueCodeableConcept!.coding![0]!.code)).to.deep.equal(['DISCORDANT', 'ARB-SECOND']);
    // Conditional creates on our identifiers: a retry after a lost answer does not store a second copy.
    expect(drEntry!.request).to.deep.equal({
      method: 'POST',
      url: 'DiagnosticReport',
      ifNoneExist: `identifier=${encodeURIComponent(`${FhirSystems.report}|rep-1`)}`,
    });
    expect(buildFhirBundle(input()).entry![1]!.fullUrl).to.equal(drEntry!.fullUrl);
    expect((buildFhirBundle(input({ report: { ...input().report, id: 'rep-2', version: 2 } })).entry![1]!.resource as DiagnosticReport).status).to.equal(
      'amended',
    );
  });

  it('without an accession there is no basedOn; concordant reads say so', () => {
    const bundle = buildFhirBundle(input({ accession: null, report: { ...input().report, radpeerScore: '1', impression: null } }));
    expect(fhirErrors(bundle)).to.deep.equal([]);
    const dr = bundle.entry![1]!.resource as DiagnosticReport;
    expect(dr.basedOn).to.equal(undefined);
    expect((bundle.entry![0]!.resource as Observation).component![0]!.valueCodeableConcept!.coding![0]!.code).to.equal('CONCORDANT');
  });

  it('the identifier system of an assigning authority: configured, OID, URI, or none (never a bare id)', () => {
    const configured = { HOSP: 'urn:oid:1.2.3', '': 'urn:oid:9.9' };
    expect(patientIdentifierSystem('HOSP', configured)).to.equal('urn:oid:1.2.3');
    expect(patientIdentifierSystem('1.2.840.99', {})).to.equal('urn:oid:1.2.840.99');
    expect(patientIdentifierSystem('https://hosp.example/mrn', {})).to.equal('https://hosp.example/mrn');
    expect(patientIdentifierSystem('OTHER', configured)).to.equal(undefined);
    expect(patientIdentifierSystem(null, configured)).to.equal('urn:oid:9.9');
    expect(patientIdentifierSystem(null, {})).to.equal(undefined);
  });
});
