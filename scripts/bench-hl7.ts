/**
 * HL7 inbound benchmark: 5,000 ORU^R01 (~2 KB) on one connection, each
 * waiting for its ACK, then 5,000 spread over 8 connections at once, against
 * the real listener + inbound service + SQLite (WAL, synchronous=FULL) in a
 * temp folder. The server runs in a child process so its peak RSS is its own;
 * it logs at info level (one line per message, as in production) to /dev/null.
 *
 *   npx tsx scripts/bench-hl7.ts [--runs 3] [--messages 5000] [--connections 8]
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};

if (args[0] === '--server') await runServer(args[1]!);
else await runBench();

async function runServer(dir: string): Promise<void> {
  const { defaultConfig } = await import('../src/config/schema.js');
  const { migrateToLatest, openDatabase } = await import('../src/db/database.js');
  const { Hl7InboundService } = await import('../src/hl7/inbound.service.js');
  const { MllpServer } = await import('../src/hl7/mllp-server.js');
  const { createLogger } = await import('../src/logger.js');
  const logger = createLogger({ level: 'info', format: 'json' });
  const opened = openDatabase(`sqlite:${path.join(dir, 'gw.db')}`);
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
  process.send!({ port: server.port });
  process.on('message', (m: { cmd: string }) => {
    if (m.cmd === 'stats') {
      process.send!({ maxRssMb: process.resourceUsage().maxRSS / 1024, commit: service.commitStats });
    } else if (m.cmd === 'stop') {
      void server.stop().then(async () => {
        await opened.close();
        process.exit(0);
      });
    }
  });
}

interface ServerHandle {
  port: number;
  stats(): Promise<{ maxRssMb: number; commit: { batches: number; items: number; largestBatch: number } }>;
  stop(): Promise<void>;
}

async function startServerChild(): Promise<ServerHandle> {
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-hl7-'));
  const child = fork(fileURLToPath(import.meta.url), ['--server', dir], { execArgv: ['--import', 'tsx', ...(process.env['BENCH_PROF'] ? ['--cpu-prof', '--cpu-prof-dir=/tmp/hl7prof'] : [])], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
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
    (_, i) => `OBX|${i + 1}|TX|18782-3^Radiology Study observation^LN||Line ${i + 1}: no acute intracranial haemorrhage, mass effect or midline shift \\T\\ ventricles normal.||||||F`,
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

async function scenario(connections: number, total: number): Promise<{ rate: number; rssMb: number; failures: number; avgBatch: number }> {
  const server = await startServerChild();
  try {
    const per = Math.ceil(total / connections);
    const t0 = performance.now();
    const failures = (await Promise.all(Array.from({ length: connections }, (_, c) => sender(server.port, c, per)))).reduce((a, b) => a + b, 0);
    const seconds = (performance.now() - t0) / 1000;
    const s = await server.stats();
    return { rate: (per * connections) / seconds, rssMb: s.maxRssMb, failures, avgBatch: s.commit.items / Math.max(1, s.commit.batches) };
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
  time('our ACK build', 20000, () => buildAck(header, { sendingApplication: 'SECONDREAD', sendingFacility: 'GATEWAY', code: 'AA', controlId: 'A1', now: new Date() }));
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
  await parseCosts();
  console.log(`\n${total} ORU^R01 (${report(0, 0).length} bytes framed), ACK after a durable commit (SQLite WAL, synchronous=FULL)`);
  for (const conns of [1, connections]) {
    for (let r = 1; r <= runs; r++) {
      const res = await scenario(conns, total);
      console.log(
        `  ${conns} connection${conns > 1 ? 's' : ' '} run ${r}: ${res.rate.toFixed(0).padStart(5)} msg/s  server peak RSS ${res.rssMb.toFixed(0)} MB  ` +
          `messages per commit ${res.avgBatch.toFixed(1)}  non-AA ${res.failures}`,
      );
    }
  }
}
