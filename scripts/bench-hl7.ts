/**
 * HL7 inbound benchmark: 5,000 ORU^R01 (~2 KB) on one connection, each
 * waiting for its ACK, then 5,000 spread over 8 connections at once, against
 * the real listener + inbound service + SQLite (WAL, synchronous=FULL) in a
 * temp folder. The server runs in a child process on the compiled build
 * (`npm run build`, then plain node on dist/, as in production) so its peak RSS
 * is its own; it logs at info level (one line per message, as in production)
 * to /dev/null. BENCH_PROF=<dir> writes a --cpu-prof of each server child there.
 *
 *   npx tsx scripts/bench-hl7.ts [--runs 3] [--messages 5000] [--connections 8] [--no-build] [--dist <dir>]
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const distArg = args.indexOf('--dist');
/** --dist <dir>: run the server from another build (e.g. a checkout of the previous commit) for an A/B comparison. */
const distDir = distArg >= 0 ? path.resolve(args[distArg + 1]!) : path.join(repoRoot, 'dist');

/**
 * The server child: plain `node` on the compiled build (dist/), as production
 * runs it. Under tsx the same process idles ~80 MB larger and compiles on
 * first import, which is not what a deployment sees. Plain JS (not this .ts
 * file) so no loader is involved.
 */
const serverSource = `
import path from 'node:path';
import { pathToFileURL } from 'node:url';
const [dir, dist] = process.argv.slice(-2);
const imp = (m) => import(pathToFileURL(path.join(dist, m)).href);
const { defaultConfig } = await imp('config/schema.js');
const { migrateToLatest, openDatabase } = await imp('db/database.js');
const { Hl7InboundService } = await imp('hl7/inbound.service.js');
const { MllpServer } = await imp('hl7/mllp-server.js');
const { createLogger } = await imp('logger.js');
const logger = createLogger({ level: 'info', format: 'json' });
const opened = openDatabase('sqlite:' + path.join(dir, 'gw.db'));
await migrateToLatest(opened.db);
const config = { ...defaultConfig().hl7, port: 0 };
const service = new Hl7InboundService({ db: opened.db, config, logger });
const server = new MllpServer({
  host: '127.0.0.1',
  port: 0,
  maxMessageBytes: config.maxMessageBytes,
  idleTimeoutSeconds: config.idleTimeoutSeconds,
  maxConnections: config.maxConnections,
  handler: service.handle,
  failureReply: service.failureReply,
  logger,
});
await server.start();
process.send({ port: server.port });
process.on('message', (m) => {
  if (m.cmd === 'stats') {
    const cpu = process.cpuUsage();
    process.send({ maxRssMb: process.resourceUsage().maxRSS / 1024, cpuMs: (cpu.user + cpu.system) / 1000, sysMs: cpu.system / 1000, commit: service.commitStats });
  } else if (m.cmd === 'stop') {
    void server.stop().then(async () => {
      await opened.close();
      process.exit(0);
    });
  }
});
`;

/** Compiles src/ to dist/ (npm run build) so the child runs the code under test; --no-build (or --dist) to skip. */
function build(): void {
  if (!args.includes('--no-build') && distArg < 0) {
    const r = spawnSync('npm', ['run', '--silent', 'build'], { cwd: repoRoot, stdio: 'inherit' });
    // tsc still emits when it reports type errors (noEmitOnError is off), so dist/ is current; say so loudly.
    if (r.status !== 0) console.warn('\nWARNING: npm run build reported errors (above); dist/ was emitted anyway and is what runs.\n');
  }
  if (!existsSync(path.join(distDir, 'hl7', 'inbound.service.js'))) throw new Error(`${distDir} has no compiled build: run npm run build`);
}

interface ServerHandle {
  port: number;
  stats(): Promise<{ maxRssMb: number; cpuMs: number; sysMs: number; commit: { batches: number; items: number; largestBatch: number } }>;
  stop(): Promise<void>;
}

async function startServerChild(): Promise<ServerHandle> {
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-hl7-'));
  const prof = process.env['BENCH_PROF'] ? ['--cpu-prof', `--cpu-prof-dir=${process.env['BENCH_PROF']}`] : [];
  // stdout (one JSON log line per message, as in production) goes to /dev/null.
  const child = spawn(process.execPath, [...prof, '--input-type=module', '-e', serverSource, '--', dir, distDir], {
    cwd: repoRoot,
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m: { port: number }) => resolve(m.port));
    child.once('exit', (code) => reject(new Error(`server exited ${code}`)));
  });
  return {
    port,
    stats: () =>
      new Promise((resolve) => {
        child.once('message', resolve as (m: unknown) => void);
        child.send({ cmd: 'stats' });
      }),
    stop: async () => {
      const exited = new Promise((r) => child.once('exit', r));
      child.send({ cmd: 'stop' });
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The ~2 KB report used throughout; control ids and accessions are unique per message. */
function report(n: number, conn: number): Buffer {
  const lines = Array.from(
    { length: 10 },
    (_, i) =>
      `OBX|${i + 1}|TX|18782-3^Radiology Study observation^LN||Line ${i + 1}: no acute intracranial haemorrhage, mass effect or midline shift \\T\\ ventricles normal.||||||F`,
  );
  const text = [
    `MSH|^~\\&|RIS|HOSP|SECONDREAD|GATEWAY|20260301101500||ORU^R01^ORU_R01|B${conn}-${n}|P|2.5.1`,
    `PID|1||BP${n % 997}^^^HOSP^MR||DOE^JANE||19650412|F`,
    `OBR|1|PLB${conn}-${n}|BA${conn}-${n}|CTHEAD^CT Head^L|||20260301103000+0100|||||||||1234^REFERRER^RITA||||||20260301110000+0100||CT|F||||||R51.9^Headache^I10|RAD7&RADIOLOGIST&RUTH`,
    ...lines,
  ].join('\r');
  return Buffer.from(`\x0b${text}\r\x1c\r`);
}

/** Sends `count` messages one at a time on one connection, each after the previous ACK. */
async function sender(port: number, conn: number, count: number): Promise<number> {
  const frames = Array.from({ length: count }, (_, i) => report(i, conn));
  const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let buf = '';
  let acked = 0;
  let failures = 0;
  await new Promise<void>((resolve, reject) => {
    socket.on('error', reject);
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      buf += d;
      let end;
      while ((end = buf.indexOf('\x1c\r')) >= 0) {
        const ack = buf.slice(0, end);
        buf = buf.slice(end + 2);
        if (!ack.includes('\rMSA|AA|')) failures++;
        acked++;
        if (acked === count) return resolve();
        socket.write(frames[acked]!);
      }
    });
    socket.write(frames[0]!);
  });
  socket.destroy();
  return failures;
}

async function scenario(
  connections: number,
  total: number,
): Promise<{ rate: number; rssMb: number; failures: number; avgBatch: number; cpuUs: number; sysUs: number }> {
  const server = await startServerChild();
  try {
    const per = Math.ceil(total / connections);
    const before = await server.stats();
    const t0 = performance.now();
    const failures = (await Promise.all(Array.from({ length: connections }, (_, c) => sender(server.port, c, per)))).reduce((a, b) => a + b, 0);
    const seconds = (performance.now() - t0) / 1000;
    const s = await server.stats();
    return {
      rate: (per * connections) / seconds,
      rssMb: s.maxRssMb,
      failures,
      avgBatch: s.commit.items / Math.max(1, s.commit.batches),
      // Server CPU (user + system, including the kernel's share of each fsync) per message: steadier than msg/s on a busy machine.
      cpuUs: ((s.cpuMs - before.cpuMs) * 1000) / (per * connections),
      sysUs: ((s.sysMs - before.sysMs) * 1000) / (per * connections),
    };
  } finally {
    await server.stop();
  }
}

async function parseCosts(): Promise<void> {
  const { Message } = await import('node-hl7-client');
  const { Hl7Message } = await import('../src/hl7/hl7-message.js');
  const { readHeader, toInboundEvent } = await import('../src/hl7/hl7-parse.js');
  const { buildAck } = await import('../src/hl7/ack.js');
  const { defaultConfig } = await import('../src/config/schema.js');
  const mapping = defaultConfig().hl7.mapping;
  const text = report(1, 0).toString('latin1').slice(1, -2);
  const time = (label: string, n: number, fn: () => void) => {
    for (let i = 0; i < 200; i++) fn();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fn();
    console.log(`  ${label}: ${(((performance.now() - t0) / n) * 1000).toFixed(1)} µs/message`);
  };
  console.log(`per-message CPU (${text.length} bytes):`);
  time('our parse + domain event', 5000, () => {
    const m = Hl7Message.parse(text);
    toInboundEvent(m, readHeader(m), { mapping, aiSenders: [] });
  });
  time('node-hl7-client parse + the same field reads', 2000, () => {
    const m = new Message({ text });
    m.get('MSH.10').toString();
    m.get('PID.3.1').toString();
    m.get('OBR.3.1').toString();
    m.get('OBR.25').toString();
    m.get('OBX').forEach((s) => s.get(5).toRaw());
  });
  const header = readHeader(Hl7Message.parse(text));
  time('our ACK build', 20000, () =>
    buildAck(header, { sendingApplication: 'SECONDREAD', sendingFacility: 'GATEWAY', code: 'AA', controlId: 'A1', now: new Date() }),
  );
  time('node-hl7-client ACK build', 2000, () => {
    const ack = new Message({
      messageHeader: { msh_9_1: 'ACK', msh_9_2: 'R01', msh_10: 'A1', msh_11_1: 'P', msh_12: '2.5.1' } as never,
    });
    ack.addSegment('MSA').set('1', 'AA').set('2', 'B0-1');
    ack.toString();
  });
}

async function runBench(): Promise<void> {
  const runs = opt('runs', 3);
  const total = opt('messages', 5000);
  const connections = opt('connections', 8);
  build();
  await parseCosts();
  console.log(`\n${total} ORU^R01 (${report(0, 0).length} bytes framed), ACK after a durable commit (SQLite WAL, synchronous=FULL)`);
  for (const conns of [1, connections]) {
    for (let r = 1; r <= runs; r++) {
      const res = await scenario(conns, total);
      console.log(
        `  ${conns} connection${conns > 1 ? 's' : ' '} run ${r}: ${res.rate.toFixed(0).padStart(5)} msg/s  server peak RSS ${res.rssMb.toFixed(0)} MB  ` +
          `messages per commit ${res.avgBatch.toFixed(1)}  server CPU ${res.cpuUs.toFixed(0)} µs/msg (kernel ${res.sysUs.toFixed(0)})  non-AA ${res.failures}`,
      );
    }
  }
}

await runBench();
