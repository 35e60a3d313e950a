/**
 * The demo's live summary: what the gateway says over its own API (studies,
 * cases, deliveries, write-backs) next to what the simulated systems saw.
 */

interface ApiCase {
  id: string;
  state: string;
  ruleIds: string[];
  discrepant: boolean;
  deliveries: { state: string; deidentified: boolean; instancesSent: number }[];
  secondReport: { radpeerScore: string } | null;
  writeBack: { state: string } | null;
}

interface ApiStudy {
  state: string;
  instanceCount: number;
}

/** What the simulators counted themselves. */
export interface PeerCounts {
  pacsStudies: number;
  pacsInstances: number;
  pacsFailures: number;
  hl7Sent: number;
  hl7Accepted: number;
  poolStudies: number;
  poolInstances: number;
  risWriteBacks: number;
  /** ORM status updates (ORC-1 SC) the RIS received. */
  risStatusUpdates: number;
  webhookEvents: ReadonlyMap<string, number>;
  /** SR / KOS instances the PACS stored. */
  pacsSrInstances: number;
  fhirReports: number;
  fhirRefused: number;
  /** ATNA messages at the audit repository, by DICOM EventID code. */
  atnaEvents: ReadonlyMap<string, number>;
  readerErrors: number;
}

export interface Snapshot {
  elapsedSeconds: number;
  peers: PeerCounts;
  studies: number;
  stableStudies: number;
  instances: number;
  cases: number;
  casesByState: Map<string, number>;
  casesByRule: Map<string, number>;
  qaSampled: number;
  deliveriesDone: number;
  deliveriesDeidentified: number;
  deliveriesQueued: number;
  deliveriesDead: number;
  reportsByScore: Map<string, number>;
  writeBacksAccepted: number;
  writeBacksFailed: number;
  discrepant: number;
}

const STATE_ORDER = ['flagged', 'forwarding', 'awaiting-read', 'reported', 'written-back', 'held', 'failed', 'cancelled'];
const SCORE_ORDER = ['1', '2a', '2b', '3a', '3b'];

function bump(m: Map<string, number>, k: string): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

async function get<T>(baseUrl: string, token: string, path: string): Promise<T> {
  const res = await fetch(`${baseUrl}${path}`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) });
  if (res.status !== 200) throw new Error(`GET ${path} answered ${res.status}`);
  return (await res.json()) as T;
}

/** Reads the gateway's view through the API (the admin token), up to 1000 studies and cases. */
export async function collect(
  baseUrl: string,
  adminToken: string,
  samplingRuleIds: ReadonlySet<string>,
  peers: PeerCounts,
  elapsedSeconds: number,
): Promise<Snapshot> {
  const [studies, cases] = await Promise.all([
    get<{ items: ApiStudy[] }>(baseUrl, adminToken, '/api/studies?limit=1000'),
    get<{ items: ApiCase[] }>(baseUrl, adminToken, '/api/cases?limit=1000'),
  ]);
  const s: Snapshot = {
    elapsedSeconds,
    peers,
    studies: studies.items.length,
    stableStudies: studies.items.filter((x) => x.state === 'stable').length,
    instances: studies.items.reduce((n, x) => n + x.instanceCount, 0),
    cases: cases.items.length,
    casesByState: new Map(),
    casesByRule: new Map(),
    qaSampled: 0,
    deliveriesDone: 0,
    deliveriesDeidentified: 0,
    deliveriesQueued: 0,
    deliveriesDead: 0,
    reportsByScore: new Map(),
    writeBacksAccepted: 0,
    writeBacksFailed: 0,
    discrepant: 0,
  };
  for (const c of cases.items) {
    bump(s.casesByState, c.state);
    for (const r of c.ruleIds) bump(s.casesByRule, r);
    if (c.ruleIds.some((r) => samplingRuleIds.has(r))) s.qaSampled++;
    for (const d of c.deliveries) {
      if (d.state === 'delivered') {
        s.deliveriesDone++;
        if (d.deidentified) s.deliveriesDeidentified++;
      } else if (d.state === 'pending' || d.state === 'sending') s.deliveriesQueued++;
      else if (d.state === 'dead') s.deliveriesDead++;
    }
    if (c.secondReport) bump(s.reportsByScore, c.secondReport.radpeerScore);
    if (c.writeBack?.state === 'accepted') s.writeBacksAccepted++;
    if (c.writeBack?.state === 'failed') s.writeBacksFailed++;
    if (c.discrepant) s.discrepant++;
  }
  return s;
}

function list(m: ReadonlyMap<string, number>, order: readonly string[] = [], sep = ' '): string {
  const keys = [...m.keys()].sort((a, b) => {
    const ia = order.indexOf(a);
    const ib = order.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  return keys.map((k) => `${k}${sep}${m.get(k)}`).join(', ');
}

function total(m: ReadonlyMap<string, number>): number {
  let n = 0;
  for (const v of m.values()) n += v;
  return n;
}

/** Two lines every few seconds. */
export function formatTick(s: Snapshot): string {
  const t = `[t+${String(Math.round(s.elapsedSeconds)).padStart(3)}s]`;
  const pad = ' '.repeat(t.length);
  const line1 =
    `${t} PACS sent ${s.peers.pacsStudies} studies | gateway: ${s.studies} studies (${s.stableStudies} stable, ${s.instances} instances), ` +
    `HL7 in ${s.peers.hl7Accepted}/${s.peers.hl7Sent} AA | pool got ${s.peers.poolStudies} studies`;
  const line2 =
    `${pad} cases ${s.cases}${s.cases ? ` (${list(s.casesByState, STATE_ORDER)})` : ''} | deliveries ${s.deliveriesDone} done, ${s.deliveriesQueued} queued` +
    `${s.deliveriesDead ? `, ${s.deliveriesDead} dead` : ''} | write-backs accepted ${s.writeBacksAccepted} | discrepant ${s.discrepant} | ` +
    `QA notifications ${total(s.peers.webhookEvents)} | QA-sampled ${s.qaSampled}`;
  const line3 =
    `${pad} outputs: RIS status updates ${s.peers.risStatusUpdates} | SR to PACS ${s.peers.pacsSrInstances} | ` +
    `FHIR DiagnosticReports ${s.peers.fhirReports} | ATNA messages ${total(s.peers.atnaEvents)}`;
  return `${line1}\n${line2}\n${line3}`;
}

/** The block printed once at the end (the CI test reads `write-backs accepted`). */
export function formatFinal(s: Snapshot): string {
  const row = (k: string, v: string) => `  ${k.padEnd(24)}${v}`;
  const reports = total(s.reportsByScore);
  const events = total(s.peers.webhookEvents);
  return [
    `=== demo summary after ${Math.round(s.elapsedSeconds)} s ===`,
    row(
      'studies pushed by PACS',
      `${s.peers.pacsStudies} (${s.peers.pacsInstances} instances${s.peers.pacsFailures ? `, ${s.peers.pacsFailures} failed` : ''})`,
    ),
    row('HL7 sent to gateway', `${s.peers.hl7Sent} (${s.peers.hl7Accepted} AA)`),
    row('studies received', `${s.studies} (${s.stableStudies} stable, ${s.instances} instances)`),
    row('cases', `${s.cases}${s.cases ? `: ${list(s.casesByState, STATE_ORDER)}` : ''}`),
    row('cases by rule', s.casesByRule.size ? list(s.casesByRule) : '-'),
    row('deliveries', `${s.deliveriesDone} delivered (${s.deliveriesDeidentified} de-identified), ${s.deliveriesQueued} queued, ${s.deliveriesDead} dead`),
    row('pool received', `${s.peers.poolStudies} studies, ${s.peers.poolInstances} instances`),
    row('second reports', `${reports}${reports ? `: RADPEER ${list(s.reportsByScore, SCORE_ORDER, ' x')}` : ''}`),
    row(
      'write-backs accepted',
      `${s.writeBacksAccepted} (RIS received ${s.peers.risWriteBacks} ORU^R01, answered AA${s.writeBacksFailed ? `; ${s.writeBacksFailed} failed` : ''})`,
    ),
    row('RIS status updates', `${s.peers.risStatusUpdates} (ORM ORC-1 SC: second read in progress / done)`),
    row('SR to PACS', `${s.peers.pacsSrInstances} instances (DICOM SR, and KOS where the reader marked images)`),
    row('FHIR DiagnosticReports', `${s.peers.fhirReports}${s.peers.fhirRefused ? ` (${s.peers.fhirRefused} refused)` : ''}`),
    row('ATNA messages', `${total(s.peers.atnaEvents)}${total(s.peers.atnaEvents) ? ` (by EventID: ${list(s.peers.atnaEvents)})` : ''}`),
    row('discrepant cases', String(s.discrepant)),
    row('QA notifications', `${events}${events ? ` (${list(s.peers.webhookEvents)})` : ''}`),
    row('QA-sampled cases', String(s.qaSampled)),
    ...(s.peers.readerErrors ? [row('reader errors', String(s.peers.readerErrors))] : []),
  ].join('\n');
}
