/**
 * Shared by `npm run chaos` and `npm run soak`: the gateway as a child process
 * (fixed ports, same data folder across restarts), the peers around it on
 * loopback (a recording reader pool, a recording RIS, two readers posting
 * second reports over HTTP) and a mixed workload (orders, images, final
 * reports; oncology and transplant work-ups flagged by the rules, routine
 * studies not) whose clients retry until acknowledged, as a PACS or a RIS
 * interface engine would. Every acknowledgement is recorded so the caller can
 * check it against the gateway's database afterwards.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import YAML from 'yaml';
import winston from 'winston';
import { defaultConfig } from '../../src/config/schema.js';
import type { InstanceSink, ReceivedInstance, StoreOutcome } from '../../src/dicom/instance-record.js';
import { DicomScp } from '../../src/dicom/scp.js';
import { Spool } from '../../src/dicom/spool.js';
import { MllpSender } from '../../src/hl7/mllp-sender.js';
import { rawFromFile, storeInstances, type RawInstance } from './raw-scu.js';
import { SimulatedRis } from './sim-ris.js';
import { generateStudy } from './study-generator.js';

export const HOST = '127.0.0.1';
const ROOT = path.resolve(import.meta.dirname, '../..');
const silent = winston.createLogger({ silent: true });
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Free loopback ports, chosen once so every restart listens on the same ones. */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<net.Server>((resolve, reject) => {
          const s = net.createServer();
          s.once('error', reject);
          s.listen(0, HOST, () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}

export const TOKENS = {
  admin: 'chaos-admin-token-0123456789',
  readers: { 'dr-a': 'chaos-reader-a-token-0123456789', 'dr-b': 'chaos-reader-b-token-0123456789' } as Record<string, string>,
};

export interface GatewaySetup {
  dir: string;
  ports: { dicom: number; hl7: number; http: number };
  risPort: number;
  poolPort: number;
  stableAfterSeconds: number;
  logLevel?: string;
}

/** The child's config: short timers so recovery after a kill is quick, retries bounded only by patience. */
export function writeConfig(s: GatewaySetup): string {
  const config = {
    instanceId: 'chaos',
    dicom: { host: HOST, port: s.ports.dicom, aeTitle: 'SECONDREAD', allowedCallers: [], stableAfterSeconds: s.stableAfterSeconds },
    hl7: { host: HOST, port: s.ports.hl7, ris: { host: HOST, port: s.risPort } },
    http: { host: HOST, port: s.ports.http },
    storage: { dir: path.join(s.dir, 'data'), minFreeMb: 0 },
    database: { url: `sqlite:${path.join(s.dir, 'data', 'gateway.db')}` },
    destinations: [
      { id: 'pool', type: 'dimse', host: HOST, port: s.poolPort, aeTitle: 'POOL', deidentify: false, timeoutSeconds: 10 },
      { id: 'pool-deid', type: 'dimse', host: HOST, port: s.poolPort, aeTitle: 'POOL', deidentify: true, timeoutSeconds: 10 },
    ],
    // leaseSeconds: a delivery the killed process had claimed is taken over once its lease runs out (default 300 s).
    forwarding: { defaultDestination: 'pool', pollIntervalSeconds: 0.5, backoffBaseSeconds: 0.5, backoffMaxSeconds: 3, leaseSeconds: 5, maxAttempts: 10_000 },
    writeBack: { ackTimeoutSeconds: 5, backoffBaseSeconds: 0.5, backoffMaxSeconds: 3, pollIntervalSeconds: 0.5, maxAttempts: 10_000 },
    readers: [
      { id: 'dr-a', name: 'Ada Reader', subspecialties: ['oncology', 'body'], modalities: ['CT', 'MR'], maxOpenCases: 1000 },
      { id: 'dr-b', name: 'Bo Reader', subspecialties: ['oncology', 'body'], modalities: ['CT', 'MR'], maxOpenCases: 1000 },
    ],
    assignment: { strategy: 'gateway' },
    auth: {
      tokens: [
        { token: TOKENS.admin, role: 'admin', name: 'chaos-admin' },
        ...Object.entries(TOKENS.readers).map(([readerId, token]) => ({ token, role: 'reader', readerId, name: readerId })),
      ],
    },
    rules: [
      { id: 'oncology', kind: 'oncology', priority: 'urgent' },
      { id: 'transplant', kind: 'high-stakes', priority: 'urgent', procedureCodes: ['CTDONOR'], destination: 'pool-deid' },
    ],
    log: { level: s.logLevel ?? 'info', format: 'json' },
  };
  const file = path.join(s.dir, 'gateway.yaml');
  writeFileSync(file, YAML.stringify(config));
  return file;
}

/**
 * `src/main.ts` in a child process (through tsx, as `npm run dev`), its logs
 * appended to one file across restarts; ready when /healthz answers 200.
 */
export class GatewayChild {
  child: ChildProcess | undefined;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
  /** Exits we did not cause (a crash), with their code or signal. */
  readonly unexpectedExits: string[] = [];
  private expectingExit = false;

  constructor(
    private readonly configFile: string,
    private readonly logFile: string,
    private readonly httpPort: number,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  spawn(): void {
    const fd = openSync(this.logFile, 'a');
    this.expectingExit = false;
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/main.ts'), '--config', this.configFile], {
      cwd: ROOT,
      env: { ...process.env },
      stdio: ['ignore', fd, fd],
    });
    closeSync(fd);
    this.child = child;
    this.exited = new Promise((resolve) =>
      child.on('exit', (code, signal) => {
        if (!this.expectingExit) this.unexpectedExits.push(`${code ?? signal}`);
        resolve({ code, signal });
      }),
    );
  }

  /** Resolves once /healthz says ok; rejects when the child exits first or after `timeoutMs`. */
  async ready(timeoutMs = 60_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    const child = this.child;
    while (Date.now() < until) {
      if (!child || child.exitCode !== null || child.signalCode !== null) throw new Error('gateway exited before it was ready');
      try {
        const res = await fetch(`http://${HOST}:${this.httpPort}/healthz`, { signal: AbortSignal.timeout(1000) });
        await res.body?.cancel();
        if (res.status === 200) return;
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    throw new Error(`gateway not ready after ${timeoutMs} ms`);
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const child = this.child;
    if (!child || !this.exited) return { code: null, signal: null };
    if (child.exitCode !== null || child.signalCode !== null) return this.exited;
    this.expectingExit = true;
    child.kill(signal);
    return this.exited;
  }
}

/**
 * The reader pool's DICOM receiver: our SCP, recording every SOP Instance UID
 * it is handed and how often (a careful receiver minds a second copy), and
 * throwing the bytes away. Lives in the parent, so it outlives the gateway's kills.
 */
export class RecordingPool implements InstanceSink {
  readonly counts = new Map<string, number>();
  private scp: DicomScp | undefined;
  port = 0;

  constructor(private readonly dir: string) {}

  async start(): Promise<void> {
    const spool = new Spool(path.join(this.dir, 'spool'), 0);
    spool.open();
    this.scp = new DicomScp({ config: { ...defaultConfig().dicom, host: HOST, port: 0, aeTitle: 'POOL' }, sink: this, spool, logger: silent });
    await this.scp.start();
    this.port = this.scp.port;
  }

  async storeInstance(instance: ReceivedInstance): Promise<StoreOutcome> {
    const n = this.counts.get(instance.sopInstanceUid) ?? 0;
    this.counts.set(instance.sopInstanceUid, n + 1);
    try {
      unlinkSync(instance.tmpPath);
    } catch {
      // already gone
    }
    return n === 0 ? 'stored' : 'duplicate';
  }

  get received(): number {
    let n = 0;
    for (const v of this.counts.values()) n += v;
    return n;
  }

  async stop(): Promise<void> {
    await this.scp?.stop(2000);
    this.scp = undefined;
  }
}

export type ScenarioKind = 'oncology' | 'transplant' | 'routine';

/** One sent instance: what the PACS sent and what became of it. */
export interface SentInstance {
  sopInstanceUid: string;
  studyInstanceUid: string;
  datasetSha256: string;
  datasetBytes: number;
  acked: boolean;
  /** An attempt got no answer (connection dropped by a kill) before the one that was acknowledged. */
  interrupted: boolean;
  attempts: number;
}

export interface SentMessage {
  controlId: string;
  sender: string;
  kind: 'order' | 'report';
  acked: boolean;
  interrupted: boolean;
  attempts: number;
  rejected?: string;
}

export interface ScenarioRecord {
  n: number;
  kind: ScenarioKind;
  studyInstanceUid: string;
  accession: string;
  instances: SentInstance[];
  messages: SentMessage[];
  done: boolean;
}

export interface LoadOptions {
  dir: string;
  ports: { dicom: number; hl7: number; http: number };
  random: () => number;
  hl7Connections: number;
  /** Pixels per side of the synthetic images (16-bit): 96 gives ~20 KB instances. */
  imageSize?: number;
  /** How long a client waits before resending what got no answer. */
  retryMs?: number;
}

function seg(name: string, fields: Record<number, string>): string {
  const max = Math.max(0, ...Object.keys(fields).map(Number));
  const out = [name];
  for (let i = 1; i <= max; i++) out.push(fields[i] ?? '');
  return out.join('|');
}

function hl7Ts(d = new Date()): string {
  return d.toISOString().replace(/[-:T]/g, '').slice(0, 14);
}

const KINDS: { kind: ScenarioKind; weight: number }[] = [
  { kind: 'oncology', weight: 3 },
  { kind: 'transplant', weight: 1 },
  { kind: 'routine', weight: 4 },
];

/**
 * The workload: scenarios (order, images, final report, in a random order of
 * images and report), run by closed-loop workers or started at a fixed rate.
 * Clients resend whatever got no answer, the same bytes and MSH-10, until
 * acknowledged or `stop()` plus the drain deadline.
 */
export class MixedLoad {
  readonly scenarios: ScenarioRecord[] = [];
  readonly senders: MllpSender[];
  readonly reports = { posted: 0, conflicts: 0, interrupted: 0, errors: 0, byCase: new Map<string, number>() };
  readonly dicom = { associations: 0, refusedStatuses: 0, noAnswer: 0 };
  private stopping = false;
  private giveUpAt = Number.POSITIVE_INFINITY;
  private readonly flows = new Set<Promise<void>>();
  private readonly timers: NodeJS.Timeout[] = [];
  private readerLoops: Promise<void>[] = [];
  private readonly runTag: string;
  private next = 0;

  constructor(private readonly o: LoadOptions) {
    this.senders = Array.from(
      { length: o.hl7Connections },
      () => new MllpSender({ host: HOST, port: o.ports.hl7, ackTimeoutMs: 5000, connectTimeoutMs: 2000, logger: silent, idleCloseMs: 0 }),
    );
    this.runTag = Math.floor(o.random() * 36 ** 4)
      .toString(36)
      .toUpperCase()
      .padStart(4, '0');
  }

  private get retryMs(): number {
    return this.o.retryMs ?? 300;
  }

  private pickKind(): ScenarioKind {
    const total = KINDS.reduce((s, k) => s + k.weight, 0);
    let r = this.o.random() * total;
    for (const k of KINDS) {
      r -= k.weight;
      if (r < 0) return k.kind;
    }
    return 'routine';
  }

  /** Closed loop: `workers` flows, each starting its next scenario when the last is done. */
  startWorkers(workers: number): void {
    for (let w = 0; w < workers; w++) {
      const loop = (async () => {
        while (!this.stopping) {
          await this.runScenario();
          await sleep(this.o.random() * 300);
        }
      })();
      this.track(loop);
    }
  }

  /** Open loop: one new scenario every `intervalMs`, whatever the gateway's pace (soak). */
  startRate(intervalMs: number): void {
    const tick = () => {
      if (this.stopping) return;
      this.track(this.runScenario());
      this.timers.push(setTimeout(tick, intervalMs));
    };
    tick();
  }

  private track(p: Promise<void>): void {
    const t: Promise<void> = p
      .catch((err: unknown) => void process.stderr.write(`load: ${(err as Error).stack ?? String(err)}\n`))
      .finally(() => this.flows.delete(t));
    this.flows.add(t);
  }

  /** Readers poll their cases and post a second report for each one awaiting their read. */
  startReaders(pollMs = 400): void {
    this.readerLoops = Object.entries(TOKENS.readers).map(([readerId, token]) =>
      (async () => {
        while (!this.readersDone) {
          await this.readerPass(readerId, token).catch(() => undefined);
          await sleep(pollMs);
        }
      })(),
    );
  }

  private readersDone = false;

  private async readerPass(readerId: string, token: string): Promise<void> {
    const base = `http://${HOST}:${this.o.ports.http}`;
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const res = await fetch(`${base}/api/cases?state=awaiting-read`, { headers, signal: AbortSignal.timeout(5000) });
    if (res.status !== 200) {
      await res.body?.cancel();
      return;
    }
    const { items } = (await res.json()) as { items: { id: string; readerId: string | null; secondReport: unknown }[] };
    for (const c of items) {
      if (c.readerId !== readerId || c.secondReport) continue;
      const score = this.o.random() < 0.85 ? '1' : '2a';
      try {
        const r = await fetch(`${base}/api/cases/${c.id}/report`, {
          method: 'POST',
          headers,
          body: JSON.stringify({ text: `Second read by ${readerId}: agree with the primary report.`, radpeerScore: score }),
          signal: AbortSignal.timeout(5000),
        });
        await r.body?.cancel();
        if (r.status === 201) {
          this.reports.posted++;
          this.reports.byCase.set(c.id, (this.reports.byCase.get(c.id) ?? 0) + 1);
        } else if (r.status === 409) this.reports.conflicts++;
        else this.reports.errors++;
      } catch {
        // Killed mid-request: the report may or may not be stored; the next pass sees the case's state.
        this.reports.interrupted++;
      }
    }
  }

  private newScenario(): { rec: ScenarioRecord; raws: RawInstance[]; order: string; report: string; reportFirst: boolean } {
    const n = ++this.next;
    const kind = this.pickKind();
    const accession = `CH${this.runTag}${String(n).padStart(5, '0')}`;
    const patientId = `PCH${this.runTag}${String(n).padStart(5, '0')}`;
    const modality = kind === 'routine' && this.o.random() < 0.5 ? 'MR' : 'CT';
    const size = this.o.imageSize ?? 96;
    const dir = path.join(this.o.dir, 'pacs', `s${n}`);
    const study = generateStudy(dir, {
      modality,
      instances: 3 + Math.floor(this.o.random() * 6),
      series: 1 + Math.floor(this.o.random() * 2),
      rows: size,
      columns: size,
      patientId,
      accessionNumber: accession,
      patientName: 'CHAOS^SYNTHETIC',
    });
    const raws = study.instances.map((i) => rawFromFile(i.path));
    rmSync(dir, { recursive: true, force: true });
    const proc =
      kind === 'oncology'
        ? 'CTCHEST^CT Chest with contrast^L'
        : kind === 'transplant'
          ? 'CTDONOR^CT Angiography renal living donor^L'
          : modality === 'MR'
            ? 'MRKNEE^MR Knee^L'
            : 'CTHEAD^CT Head^L';
    const dg1 =
      kind === 'oncology'
        ? 'C34.90^Malignant neoplasm of unspecified part of lung^I10'
        : kind === 'transplant'
          ? 'Z00.5^Examination of potential donor^I10'
          : 'R51.9^Headache, unspecified^I10';
    const text =
      kind === 'oncology'
        ? 'IMPRESSION: Right upper lobe mass compatible with the known primary lung carcinoma.'
        : kind === 'transplant'
          ? 'IMPRESSION: Single renal artery and vein bilaterally; favourable anatomy.'
          : 'IMPRESSION: No acute abnormality.';
    const ts = hl7Ts();
    const pid = `PID|1||${patientId}^^^HOSP^MR||CHAOS^SYNTHETIC||19600101|F`;
    const order =
      [
        `MSH|^~\\&|RIS|HOSP|SECONDREAD|GATEWAY|${ts}||ORM^O01|ORM${accession}|P|2.3`,
        pid,
        `ORC|NW|PL${accession}|${accession}`,
        `OBR|1|PL${accession}|${accession}|${proc}|||${ts}`,
        `DG1|1|I10|${dg1}`,
      ].join('\r') + '\r';
    const report =
      [
        `MSH|^~\\&|RIS|HOSP|SECONDREAD|GATEWAY|${ts}||ORU^R01^ORU_R01|ORU${accession}|P|2.5.1`,
        pid,
        seg('OBR', { 1: '1', 2: `PL${accession}`, 3: accession, 4: proc, 7: ts, 24: modality, 25: 'F', 32: 'RAD1&HUGHES&ANNA' }),
        `OBX|1|TX|18782-3^Study observation^LN||${text}||||||F`,
        `DG1|1|I10|${dg1}`,
      ].join('\r') + '\r';
    const rec: ScenarioRecord = {
      n,
      kind,
      studyInstanceUid: study.studyInstanceUid,
      accession,
      instances: raws.map((raw) => ({
        sopInstanceUid: raw.sopInstanceUid,
        studyInstanceUid: study.studyInstanceUid,
        datasetSha256: createHash('sha256').update(raw.dataset).digest('hex'),
        datasetBytes: raw.dataset.length,
        acked: false,
        interrupted: false,
        attempts: 0,
      })),
      messages: [
        { controlId: `ORM${accession}`, sender: 'RIS', kind: 'order', acked: false, interrupted: false, attempts: 0 },
        { controlId: `ORU${accession}`, sender: 'RIS', kind: 'report', acked: false, interrupted: false, attempts: 0 },
      ],
      done: false,
    };
    return { rec, raws, order, report, reportFirst: this.o.random() < 0.3 };
  }

  private async runScenario(): Promise<void> {
    const { rec, raws, order, report, reportFirst } = this.newScenario();
    this.scenarios.push(rec);
    const sender = this.senders[rec.n % this.senders.length]!;
    const ok =
      (await this.sendHl7(sender, order, rec.messages[0]!)) &&
      (reportFirst
        ? (await this.sendHl7(sender, report, rec.messages[1]!)) && (await this.sendImages(rec, raws))
        : (await this.sendImages(rec, raws)) && (await this.sendHl7(sender, report, rec.messages[1]!)));
    rec.done = ok;
  }

  private giveUp(): boolean {
    return this.stopping && Date.now() > this.giveUpAt;
  }

  private async sendHl7(sender: MllpSender, text: string, m: SentMessage): Promise<boolean> {
    for (;;) {
      if (this.giveUp()) return false;
      m.attempts++;
      const r = await sender.send(text);
      if (r.kind === 'accepted') {
        m.acked = true;
        return true;
      }
      if (r.kind === 'rejected') {
        m.rejected = `${r.code}: ${r.text}`;
        return false;
      }
      // No answer after the frame went out: the gateway may have committed it before dying; the resend must be a duplicate.
      if (r.reason === 'closed' || r.reason === 'timeout') m.interrupted = true;
      await sleep(this.retryMs);
    }
  }

  private async sendImages(rec: ScenarioRecord, raws: RawInstance[]): Promise<boolean> {
    const target = { host: HOST, port: this.o.ports.dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' };
    for (;;) {
      const todo = rec.instances.map((s, i) => ({ s, raw: raws[i]! })).filter((x) => !x.s.acked);
      if (todo.length === 0) return true;
      if (this.giveUp()) return false;
      this.dicom.associations++;
      for (const x of todo) x.s.attempts++;
      const r = await storeInstances(
        target,
        todo.map((x) => x.raw),
        15_000,
      );
      todo.forEach((x, j) => {
        const status = r.statuses[j];
        if (status === 0) x.s.acked = true;
        else if (status === undefined) {
          // Only a request that may have reached the gateway counts as interrupted (not one refused at connect).
          if (!/ECONNREFUSED/.test(r.error ?? '') && !r.rejected) x.s.interrupted = true;
          this.dicom.noAnswer++;
        } else this.dicom.refusedStatuses++;
      });
      if (todo.some((x) => !x.s.acked)) await sleep(this.retryMs);
    }
  }

  /** Stops starting scenarios; flows under way keep resending until `drainMs` has passed. */
  async stop(drainMs: number): Promise<void> {
    this.stopping = true;
    this.giveUpAt = Date.now() + drainMs;
    for (const t of this.timers) clearTimeout(t);
    while (this.flows.size > 0 && Date.now() < this.giveUpAt) await Promise.race([Promise.allSettled([...this.flows]), sleep(500)]);
  }

  async stopReaders(): Promise<void> {
    this.readersDone = true;
    await Promise.allSettled(this.readerLoops);
  }

  async close(): Promise<void> {
    this.stopping = true;
    this.readersDone = true;
    this.giveUpAt = 0;
    await Promise.allSettled([...this.flows, ...this.readerLoops]);
    await Promise.allSettled(this.senders.map((s) => s.close()));
  }

  get instances(): SentInstance[] {
    return this.scenarios.flatMap((s) => s.instances);
  }
}

/** MSH-10 and ZDS-1 (StudyInstanceUID) of each ORU^R01 the RIS got. */
export function risWriteBacks(ris: SimulatedRis): { controlId: string; studyUid: string }[] {
  return ris.received
    .filter((m) => /^MSH\|[^\r]*\|ORU\^R01/.test(m))
    .map((m) => {
      const segs = m.split('\r');
      const msh = segs[0]!.split('|');
      const zds =
        segs
          .find((s) => s.startsWith('ZDS|'))
          ?.split('|')[1]
          ?.split('^')[0] ?? '';
      return { controlId: msh[9] ?? '', studyUid: zds };
    });
}

export function ensureDir(p: string): string {
  mkdirSync(p, { recursive: true });
  return p;
}
