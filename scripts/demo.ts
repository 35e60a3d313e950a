/**
 * `npm run demo`: the gateway plus a simulated PACS, RIS, AI vendor, reader
 * pool (a DICOM archive and two second readers) and QA webhook, all on
 * 127.0.0.1 with free ports and a temp folder removed on exit. Shows the whole
 * flow end to end: C-STORE and HL7 in, rules, forwarding (some de-identified),
 * second reports over the API, ORU^R01 write-back to the RIS (ACK AA), QA
 * notifications for discrepant reads, and the other outputs: order status
 * updates to the RIS worklist (ORM ORC-1 SC), the second read as DICOM SR to
 * the hospital PACS (another of our SCPs), as FHIR DiagnosticReport to a FHIR
 * server that counts them, and every audit event as ATNA syslog (UDP) to an
 * audit repository; with a live summary every few seconds.
 *
 *   npm run demo                                 # until Ctrl-C
 *   npm run demo -- --duration 60 --studies 10   # stops by itself
 *
 * Options: --duration SECONDS (stop after that), --studies N (push N studies,
 * then only let the flow finish), --interval SECONDS (between studies, default 3),
 * --summary-every SECONDS (default 5).
 */
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { buildConfig } from '../src/config/load.js';
import { createGateway, type Gateway } from '../src/gateway.js';
import { MllpSender } from '../src/hl7/mllp-sender.js';
import { createLogger, type Logger } from '../src/logger.js';
import { DemoReader } from './lib/demo-readers.js';
import { DemoAuditRepository, DemoFhirServer, DemoPool, DemoWebhook } from './lib/demo-peers.js';
import { SimulatedRis } from './lib/sim-ris.js';
import { makeScenario } from './lib/demo-scenarios.js';
import { storeFiles } from './lib/raw-scu.js';
import { collect, formatFinal, formatTick, type PeerCounts } from './lib/demo-summary.js';
import { generateStudy } from './lib/study-generator.js';
import { numberOption } from './lib/cli-args.js';

const HOST = '127.0.0.1';
const PACS_AE = 'DEMO_PACS';
const GATEWAY_AE = 'SECONDREAD';
const ROOT = path.resolve(import.meta.dirname, '..');

interface Options {
  durationSeconds: number | undefined;
  studies: number | undefined;
  intervalSeconds: number;
  summaryEverySeconds: number;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string' },
      studies: { type: 'string' },
      interval: { type: 'string' },
      'summary-every': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write('usage: npm run demo -- [--duration SECONDS] [--studies N] [--interval SECONDS] [--summary-every SECONDS]\n');
    process.exit(0);
  }
  const num = numberOption;
  return {
    durationSeconds: num('duration', values.duration, 1),
    studies: num('studies', values.studies, 0),
    intervalSeconds: num('interval', values.interval, 0.5) ?? 3,
    summaryEverySeconds: num('summary-every', values['summary-every'], 1) ?? 5,
  };
}

/** The shipped rules, adapted for the demo: oncology goes to a reader with that subspecialty, QA samples go de-identified. */
function demoRules(): unknown[] {
  const file = YAML.parse(readFileSync(path.join(ROOT, 'config/rules.yaml'), 'utf8')) as { rules?: Record<string, unknown>[] } | Record<string, unknown>[];
  const rules = Array.isArray(file) ? file : (file.rules ?? []);
  return rules.map((r) => {
    if (r['kind'] === 'oncology' && r['destination'] === undefined) return { ...r, readerGroup: 'oncology' };
    if (r['kind'] === 'sampling' && r['readerGroup'] === undefined) return { ...r, destination: 'pool-deid' };
    return r;
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  const started = Date.now();
  const elapsed = () => (Date.now() - started) / 1000;
  const tmp = mkdtempSync(path.join(tmpdir(), 'srgw-demo-'));
  const removeTmp = () => rmSync(tmp, { recursive: true, force: true });
  // Warn level keeps the summary readable; the simulated peers share the logger.
  const logger: Logger = createLogger({ level: 'warn', format: 'text' });
  const out = (s: string): void => void process.stdout.write(`${s}\n`);

  const tokens = {
    admin: `demo-admin-${randomBytes(12).toString('hex')}`,
    qa: `demo-qa-${randomBytes(12).toString('hex')}`,
    drA: `demo-reader-a-${randomBytes(12).toString('hex')}`,
    drB: `demo-reader-b-${randomBytes(12).toString('hex')}`,
  };
  const rules = demoRules();
  const samplingRuleIds = new Set(
    rules.flatMap((r) => ((r as Record<string, unknown>)['kind'] === 'sampling' ? [String((r as Record<string, unknown>)['id'])] : [])),
  );

  const webhook = new DemoWebhook();
  const pool = new DemoPool(path.join(tmp, 'pool'), logger);
  const ris = new SimulatedRis(logger);
  // The hospital PACS the second read goes back to as a DICOM SR (and a KOS of the reader's key images).
  const pacsArchive = new DemoPool(path.join(tmp, 'pacs-archive'), logger, PACS_AE);
  const fhir = new DemoFhirServer();
  const auditRepo = new DemoAuditRepository();
  let gw: Gateway | undefined;
  const senders: MllpSender[] = [];
  const readers: DemoReader[] = [];
  const flows = new Set<Promise<void>>();
  const timers: NodeJS.Timeout[] = [];
  const counts = { pacsStudies: 0, pacsInstances: 0, pacsFailures: 0, hl7Sent: 0, hl7Accepted: 0, readerErrors: 0 };
  let stopping = false;
  let stopped: Promise<number> | undefined;

  const peerCounts = (): PeerCounts => ({
    ...counts,
    poolStudies: pool.studiesReceived,
    poolInstances: pool.instances,
    risWriteBacks: ris.writeBacks,
    risStatusUpdates: ris.statusUpdates,
    webhookEvents: webhook.events,
    pacsSrInstances: pacsArchive.instances,
    fhirReports: fhir.diagnosticReports,
    fhirRefused: fhir.refused,
    atnaEvents: auditRepo.events,
  });

  const shutdown = (why: string): Promise<number> => {
    if (stopped) return stopped;
    stopping = true;
    stopped = (async () => {
      out(`\nstopping (${why})...`);
      for (const t of timers) clearTimeout(t);
      await Promise.allSettled([...flows]);
      await Promise.allSettled(readers.map((r) => r.stop()));
      let code = 0;
      if (gw) {
        try {
          out(formatFinal(await collect(`http://${HOST}:${gw.ports().http}`, tokens.admin, samplingRuleIds, peerCounts(), elapsed())));
        } catch (err) {
          out(`final summary unavailable: ${(err as Error).message}`);
          code = 1;
        }
      }
      await Promise.allSettled(senders.map((s) => s.close()));
      try {
        await gw?.stop();
      } catch (err) {
        out(`gateway stop failed: ${(err as Error).message}`);
        code = 1;
      }
      await Promise.allSettled([ris.stop(), pool.stop(), webhook.stop(), pacsArchive.stop(), fhir.stop(), auditRepo.stop()]);
      removeTmp();
      out(`temp folder removed: ${tmp}`);
      return code;
    })();
    return stopped;
  };

  let firstSignalAt = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (firstSignalAt) {
      // Ctrl-C under `npm run` reaches us twice at once (the terminal's process group, and tsx relaying it):
      // only a second Ctrl-C a moment later means "do not wait any longer".
      if (Date.now() - firstSignalAt < 1500) return;
      out('second signal: exiting without waiting');
      removeTmp();
      process.exit(130);
    }
    firstSignalAt = Date.now();
    void shutdown(signal).then((code) => process.exit(code));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // Whatever breaks, the temp folder (synthetic studies, a database) does not outlive the demo.
  const crash = (err: unknown) => {
    process.stderr.write(`demo: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
    removeTmp();
    process.exit(1);
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);

  try {
    await webhook.start();
    await pool.start();
    await ris.start();
    await pacsArchive.start();
    await fhir.start();
    await auditRepo.start();
    const config = buildConfig({
      instanceId: 'demo',
      dicom: { host: HOST, port: 0, aeTitle: GATEWAY_AE, allowedCallers: [PACS_AE], stableAfterSeconds: 2 },
      hl7: { host: HOST, port: 0, ris: { host: HOST, port: ris.port }, aiSenders: ['AI_VENDOR'] },
      http: { host: HOST, port: 0 },
      storage: { dir: path.join(tmp, 'gateway', 'spool'), minFreeMb: 0 },
      database: { url: `sqlite:${path.join(tmp, 'gateway', 'gateway.db')}` },
      destinations: [
        { id: 'pool', type: 'dimse', host: HOST, port: pool.port, aeTitle: pool.aeTitle, deidentify: false },
        // The same archive, de-identified (PS3.15 basic profile): the QA sampling rule sends here.
        { id: 'pool-deid', type: 'dimse', host: HOST, port: pool.port, aeTitle: pool.aeTitle, deidentify: true },
      ],
      forwarding: { defaultDestination: 'pool', pollIntervalSeconds: 0.5, backoffBaseSeconds: 1, backoffMaxSeconds: 10 },
      readers: [
        { id: 'dr-a', name: 'Dr A (chest/oncology)', subspecialties: ['oncology', 'chest', 'neuro'], modalities: ['CT', 'MR'], maxOpenCases: 20 },
        { id: 'dr-b', name: 'Dr B (body/msk)', subspecialties: ['body', 'msk', 'neuro'], modalities: ['CT', 'MR'], maxOpenCases: 20 },
      ],
      assignment: { strategy: 'gateway' },
      writeBack: { ackTimeoutSeconds: 5, backoffBaseSeconds: 1, backoffMaxSeconds: 10, pollIntervalSeconds: 0.5, statusUpdates: true },
      // The PACS takes the SR; it has no C-FIND here, so no priors are looked for.
      pacs: { type: 'dimse', host: HOST, port: pacsArchive.port, aeTitle: PACS_AE },
      priors: { maxStudies: 0 },
      outputs: {
        dicomSr: { destination: 'pacs' },
        fhir: { url: `http://${HOST}:${fhir.port}/fhir`, identifierSystems: { HOSP: 'urn:oid:1.2.999.1', '': 'urn:oid:1.2.999.1' } },
        backoffBaseSeconds: 1,
        backoffMaxSeconds: 10,
      },
      audit: { syslog: { host: HOST, port: auditRepo.port, protocol: 'udp', pollIntervalSeconds: 0.5 }, sourceId: 'demo-gateway' },
      escalation: { webhook: { url: `http://${HOST}:${webhook.port}/qa-events` } },
      auth: {
        tokens: [
          { token: tokens.admin, role: 'admin', name: 'demo-admin' },
          { token: tokens.qa, role: 'qa', name: 'demo-qa' },
          { token: tokens.drA, role: 'reader', readerId: 'dr-a', name: 'dr-a' },
          { token: tokens.drB, role: 'reader', readerId: 'dr-b', name: 'dr-b' },
        ],
      },
      rules,
      log: { level: 'warn', format: 'text' },
    });
    gw = createGateway(config, { logger });
    await gw.start();
  } catch (err) {
    out(`demo failed to start: ${(err as Error).stack ?? String(err)}`);
    await shutdown('start failed');
    return 1;
  }

  const ports = gw.ports();
  const base = `http://${HOST}:${ports.http}`;
  out('Second-read gateway demo (everything on 127.0.0.1, synthetic data only)');
  out(`  gateway      DICOM ${HOST}:${ports.dicom} AE ${GATEWAY_AE} | HL7 MLLP ${HOST}:${ports.hl7} | HTTP ${base}`);
  out(`  reader pool  DICOM ${HOST}:${pool.port} AE ${pool.aeTitle} (destinations "pool", and "pool-deid" de-identified for QA samples)`);
  out(`  RIS          MLLP ${HOST}:${ris.port} (receives the ORU^R01 write-backs, answers AA)`);
  out(`  QA webhook   http://${HOST}:${webhook.port}/qa-events`);
  out(`  PACS         DICOM ${HOST}:${pacsArchive.port} AE ${PACS_AE} (receives the second read as DICOM SR)`);
  out(`  FHIR server  http://${HOST}:${fhir.port}/fhir (receives DiagnosticReport + Observation)`);
  out(`  ATNA         syslog UDP ${HOST}:${auditRepo.port} (every audit event as a DICOM PS3.15 A.5 message)`);
  out(`  temp folder: ${tmp}`);
  out('');
  out(`Web console:  ${base}/   (log in with one of the tokens below)`);
  out(`admin token:  ${tokens.admin}`);
  out(`QA token:     ${tokens.qa}`);
  out(`reader tokens: dr-a ${tokens.drA}  dr-b ${tokens.drB}`);
  out('Or the API:');
  out(`  curl -s -H 'Authorization: Bearer ${tokens.admin}' '${base}/api/cases?state=awaiting-read'`);
  out(`  curl -s -H 'Authorization: Bearer ${tokens.admin}' '${base}/api/studies'`);
  out(`  curl -s -H 'Authorization: Bearer ${tokens.admin}' '${base}/api/cases/<id>'`);
  out(`  curl -s -H 'Authorization: Bearer ${tokens.drA}' '${base}/api/cases'          # what dr-a sees`);
  out(`  curl -s -H 'Authorization: Bearer ${tokens.admin}' '${base}/metrics'`);
  out(
    `Running${opts.durationSeconds ? ` for ${opts.durationSeconds} s` : ' until Ctrl-C'}; ` +
      `${opts.studies !== undefined ? `${opts.studies} studies` : 'a study'} every ${opts.intervalSeconds} s.\n`,
  );

  // The RIS and the AI vendor send over MLLP with the gateway's own reliable sender (one in flight, ACK matched on MSA-2).
  const mkSender = () => {
    const s = new MllpSender({ host: HOST, port: ports.hl7, ackTimeoutMs: 10_000, connectTimeoutMs: 5_000, logger });
    senders.push(s);
    return s;
  };
  const risOut = mkSender();
  const aiOut = mkSender();
  const sendHl7 = async (sender: MllpSender, text: string, what: string) => {
    counts.hl7Sent++;
    const r = await sender.send(text);
    if (r.kind === 'accepted') counts.hl7Accepted++;
    else out(`  ! ${what}: ${r.kind} ${'text' in r ? r.text : ''}`);
  };
  /** Sleeps, or ends early once the demo is stopping; false when stopping. */
  const wait = async (ms: number) => {
    const until = Date.now() + ms;
    while (!stopping && Date.now() < until) await sleep(Math.min(100, until - Date.now()));
    return !stopping;
  };

  const runTag = randomInt(36 ** 3)
    .toString(36)
    .toUpperCase()
    .padStart(3, '0');
  const studyFlow = async (n: number) => {
    const sc = makeScenario(n, runTag);
    // The order first (the exam is booked), then the images, the AI's result, and the dictated final report.
    await sendHl7(risOut, sc.order, `ORM ${sc.accession}`);
    const study = generateStudy(path.join(tmp, 'pacs', `study-${n}`), {
      modality: sc.modality,
      instances: sc.instances,
      series: sc.series,
      rows: 64,
      columns: 64,
      patientId: sc.patientId,
      patientName: sc.patientName,
      accessionNumber: sc.accession,
      studyDescription: sc.studyDescription,
      bodyPartExamined: sc.bodyPart,
    });
    const r = await storeFiles(
      { host: HOST, port: ports.dicom, callingAe: PACS_AE, calledAe: GATEWAY_AE },
      study.instances.map((i) => i.path),
    );
    rmSync(path.join(tmp, 'pacs', `study-${n}`), { recursive: true, force: true });
    const ok = r.statuses.filter((s) => s === 0).length;
    counts.pacsStudies++;
    counts.pacsInstances += ok;
    if (ok !== r.statuses.length) counts.pacsFailures++;
    out(`  PACS -> study ${n}: ${sc.label} [${sc.kind}] ${sc.accession}, ${ok}/${r.statuses.length} instances stored${r.error ? ` (${r.error})` : ''}`);
    if (sc.ai) {
      if (!(await wait(1000))) return;
      await sendHl7(aiOut, sc.ai, `AI ORU ${sc.accession}`);
    }
    if (!(await wait(1500 + randomInt(1500)))) return;
    await sendHl7(risOut, sc.report, `ORU ${sc.accession}`);
  };

  let pushed = 0;
  const pushNext = () => {
    if (stopping || (opts.studies !== undefined && pushed >= opts.studies)) return;
    const n = ++pushed;
    const flow = studyFlow(n)
      .catch((err: unknown) => out(`  ! study ${n}: ${(err as Error).message}`))
      .finally(() => flows.delete(flow));
    flows.add(flow);
    timers.push(setTimeout(pushNext, opts.intervalSeconds * 1000));
  };

  for (const [id, token] of [
    ['dr-a', tokens.drA],
    ['dr-b', tokens.drB],
  ] as const) {
    const reader = new DemoReader({
      id,
      token,
      baseUrl: base,
      pollMs: 1000,
      readMs: [1000, 3000],
      onError: (m) => {
        counts.readerErrors++;
        out(`  ! reader ${m}`);
      },
    });
    reader.start();
    readers.push(reader);
  }

  const tick = async () => {
    if (stopping) return;
    try {
      const s = await collect(base, tokens.admin, samplingRuleIds, peerCounts(), elapsed());
      if (!stopping) out(formatTick(s));
    } catch (err) {
      if (!stopping) out(`  ! summary: ${(err as Error).message}`);
    }
    if (!stopping) timers.push(setTimeout(() => void tick(), opts.summaryEverySeconds * 1000));
  };
  timers.push(setTimeout(() => void tick(), opts.summaryEverySeconds * 1000));
  pushNext();

  if (opts.durationSeconds !== undefined) {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, opts.durationSeconds! * 1000);
      timers.push(t);
      // A signal may stop the demo first: shutdown() settles `stopped`, which the caller awaits below.
      const check = setInterval(() => {
        if (stopping) {
          clearInterval(check);
          resolve();
        }
      }, 200);
      timers.push(check);
    });
    return shutdown(`--duration ${opts.durationSeconds} s reached`);
  }
  // Until a signal: shutdown() is called by the handler, which exits the process.
  return new Promise<number>(() => undefined);
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`demo: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
