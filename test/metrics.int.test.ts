import { expect } from 'chai';
import { CaseState } from '../src/states.js';
import { API_TOKENS, ApiGateway } from './helpers/api-gateway.js';
import { eventually } from './helpers/eventually.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text format, the lines we need: `name{a="x",b="y"} value`. */
function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparseable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

describe('GET /metrics after real traffic (DICOM, HL7, a case, a delivery, a write-back)', function () {
  this.timeout(60_000);
  const api = new ApiGateway();
  let samples: Sample[] = [];
  let text = '';
  let ids: { uid: string; accession: string; patientId: string };
  const one = (name: string, labels: Record<string, string> = {}) => {
    const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
    expect(found, `${name} ${JSON.stringify(labels)}`).to.have.length(1);
    return found[0]!.value;
  };

  before(async () => {
    await api.start();
    const { study, caseId } = await api.flaggedStudy();
    ids = { uid: study.studyInstanceUid, accession: study.accessionNumber, patientId: study.patientId };
    await api.assign(caseId, 'dr-a');
    const r = await api.call('POST', `/api/cases/${caseId}/report`, API_TOKENS.reader, { text: 'Concur.', radpeerScore: '1' });
    expect(r.status, r.text).to.equal(201);
    await eventually(
      async () => ((await api.call('GET', `/api/cases/${caseId}`, API_TOKENS.admin)).body as { state: string }).state === 'written-back',
      'the write-back',
    );
    const res = await api.call('GET', '/metrics', API_TOKENS.system);
    expect(res.status).to.equal(200);
    expect(res.contentType).to.match(/^text\/plain/);
    text = res.text;
    samples = parseMetrics(text);
  });
  after(() => api.stop());

  it('counts instances and HL7 messages received', () => {
    expect(one('gateway_instances_received')).to.equal(2);
    // Order, primary report and AI result; the two ORUs share the type.
    expect(one('gateway_hl7_messages_received', { type: 'ORM^O01', status: 'applied' })).to.equal(1);
    expect(one('gateway_hl7_messages_received', { type: 'ORU^R01', status: 'applied' })).to.equal(2);
    expect(one('gateway_studies', { state: 'stable' })).to.equal(1);
  });

  it('shows cases by state, every state listed, zeros included', () => {
    for (const state of Object.values(CaseState)) expect(one('gateway_cases', { state }), state).to.equal(state === 'written-back' ? 1 : 0);
    expect(one('gateway_sla_breached_cases')).to.equal(0);
  });

  it('shows the delivery queue, its depth, and delivery latency', () => {
    expect(one('gateway_delivery_queue', { destination: 'pool', state: 'delivered' })).to.equal(1);
    expect(one('gateway_delivery_queue_depth', { destination: 'pool' })).to.equal(0);
    expect(one('gateway_delivered_instances_total', { destination: 'pool' })).to.equal(2);
    expect(one('gateway_delivery_seconds_count', { destination: 'pool' })).to.equal(1);
    const sum = one('gateway_delivery_seconds_sum', { destination: 'pool' });
    expect(sum).to.be.greaterThan(0).and.lessThan(30);
    expect(one('gateway_delivery_seconds_bucket', { destination: 'pool', le: '+Inf' })).to.equal(1);
    expect(one('gateway_outbound_messages', { kind: 'write-back', state: 'accepted' })).to.equal(1);
  });

  it('labels every sample with the instance id and carries no PHI', () => {
    expect(samples.filter((s) => s.name.startsWith('gateway_')).every((s) => s.labels['instance_id'] !== undefined)).to.equal(true);
    for (const v of Object.values(ids)) expect(text).to.not.include(v);
  });
});
