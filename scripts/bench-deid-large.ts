/**
 * Large-instance forwarding benchmark: one uncompressed multi-frame CT
 * instance of 2.5 GiB (512x512 16-bit frames, generated on the fly into a temp
 * file) goes into the gateway (DCMTK storescu -> our SCP), then out to DCMTK
 * storescp twice: as stored (a plain destination) and de-identified. Prints,
 * per run, the gateway process's peak RSS while forwarding (VmHWM of the
 * gateway child, reset with clear_refs just before the request, and sampled
 * VmRSS), the time from the request to `awaiting-read` and the throughput, and
 * checks that the Pixel Data storescp received is byte-identical (SHA-256 of
 * the Pixel Data value against the source's).
 *
 * The gateway runs from a tsc build of src/main.ts (as `npm start` after
 * `npm run build`), in its own process with a temp config, SQLite file and
 * spool. Disk: about 4x the instance size in the temp folder (source, spool,
 * two received copies); with less free space the instance is made smaller
 * and the script says so.
 *
 * Usage: npx tsx scripts/bench-deid-large.ts [--gib 2.5] [--keep-compiled]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  createReadStream,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statfsSync,
  statSync,
  writeFileSync,
  writeSync,
  closeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import dcmjs from 'dcmjs';
import YAML from 'yaml';
import { compileForBench, freePort, repo, waitForPort } from './lib/bench-util.js';
import { newUid } from './lib/study-generator.js';

const TOKEN = 'bench-admin-token-0123456789abcdef';
const FRAME = 512 * 512 * 2;
const compiledDir = path.join(repo, 'node_modules', '.cache', 'bench-deid-large');
const compiledMain = path.join(compiledDir, 'src', 'main.js');

const { values } = parseArgs({ options: { gib: { type: 'string', default: '2.5' }, 'keep-compiled': { type: 'boolean', default: false } } });
const mib = (n: number): string => `${(n / 1024 / 1024).toFixed(0)} MiB`;

/** Writes the instance: a dcmjs-written header, then the Pixel Data element written in 8 MiB chunks. Returns the Pixel Data SHA-256. */
function writeInstance(file: string, frames: number): { sha256: string; pixelBytes: number; studyUid: string } {
  const studyUid = newUid();
  const sop = newUid();
  const nat = {
    SOPClassUID: '1.2.840.10008.5.1.4.1.1.2',
    SOPInstanceUID: sop,
    StudyInstanceUID: studyUid,
    SeriesInstanceUID: newUid(),
    Modality: 'CT',
    PatientName: 'BENCH^LARGE',
    PatientID: 'BENCH-LARGE-1',
    PatientBirthDate: '19600101',
    AccessionNumber: 'BENCHLARGE1',
    StudyDate: '20260301',
    StudyTime: '101500',
    StudyID: '1',
    SeriesNumber: 1,
    InstanceNumber: 1,
    ImageType: ['ORIGINAL', 'PRIMARY', 'AXIAL'],
    SamplesPerPixel: 1,
    PhotometricInterpretation: 'MONOCHROME2',
    NumberOfFrames: frames,
    Rows: 512,
    Columns: 512,
    BitsAllocated: 16,
    BitsStored: 12,
    HighBit: 11,
    PixelRepresentation: 0,
    BurnedInAnnotation: 'NO',
    _meta: {},
  };
  const dict = new dcmjs.data.DicomDict({
    '00020001': { vr: 'OB', Value: [new Uint8Array([0, 1]).buffer] },
    '00020002': { vr: 'UI', Value: [nat.SOPClassUID] },
    '00020003': { vr: 'UI', Value: [sop] },
    '00020010': { vr: 'UI', Value: ['1.2.840.10008.1.2.1'] },
    '00020012': { vr: 'UI', Value: ['2.25.1'] },
  });
  dict.dict = dcmjs.data.DicomMetaDictionary.denaturalizeDataset(nat);
  const header = Buffer.from(dict.write());
  const pixelBytes = frames * FRAME;
  const el = Buffer.alloc(12);
  el.writeUInt16LE(0x7fe0, 0);
  el.writeUInt16LE(0x0010, 2);
  el.write('OW', 4, 'latin1');
  el.writeUInt32LE(pixelBytes, 8);
  const fd = openSync(file, 'w');
  writeSync(fd, header);
  writeSync(fd, el);
  const hash = createHash('sha256');
  const chunk = Buffer.alloc(8 * 1024 * 1024);
  for (let written = 0, n = 0; written < pixelBytes; n++) {
    // a pattern that changes from chunk to chunk, so a misplaced chunk changes the hash
    for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761 + n * 40503) >>> 0, i);
    const part = chunk.subarray(0, Math.min(chunk.length, pixelBytes - written));
    writeSync(fd, part);
    hash.update(part);
    written += part.length;
  }
  closeSync(fd);
  return { sha256: hash.digest('hex'), pixelBytes, studyUid };
}

/** SHA-256 of the last `n` bytes of a file (the Pixel Data value, the last element of both files). */
function tailHash(file: string, n: number): Promise<string> {
  const size = statSync(file).size;
  const hash = createHash('sha256');
  return new Promise((resolve, reject) => {
    createReadStream(file, { start: size - n, highWaterMark: 8 * 1024 * 1024 })
      .on('data', (c) => hash.update(c as Buffer))
      .on('end', () => resolve(hash.digest('hex')))
      .on('error', reject);
  });
}

function proc(pid: number): { rss: number; hwm: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

async function api(base: string, method: string, p: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${base}${p}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : {}) as Record<string, unknown> };
}

async function until<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function run(cmd: string, args: string[]): Promise<number | null> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, TCP_NODELAY: '1' } });
    c.on('exit', (code) => resolve(code));
  });
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'gw-bench-deid-'));
  let gateway: ChildProcess | undefined;
  let scp: ChildProcess | undefined;
  try {
    const wanted = Number(values.gib) * 1024 ** 3;
    const free = Number(statfsSync(dir).bavail) * Number(statfsSync(dir).bsize);
    let frames = Math.floor(wanted / FRAME);
    if (frames * FRAME * 4 + 2 * 1024 ** 3 > free) {
      frames = Math.floor((free - 2 * 1024 ** 3) / 4 / FRAME);
      console.log(`only ${mib(free)} free in ${dir}: the instance is ${mib(frames * FRAME)} instead of ${values.gib} GiB`);
    }
    if (!values['keep-compiled'] || !existsSync(compiledMain)) compileForBench('bench-deid-large', [path.join(repo, 'src', 'main.ts')]);
    const source = path.join(dir, 'large.dcm');
    const t0 = Date.now();
    const inst = writeInstance(source, frames);
    console.log(
      `instance: ${frames} frames of 512x512x16 bit, Pixel Data ${mib(inst.pixelBytes)}, file ${mib(statSync(source).size)} (written in ${((Date.now() - t0) / 1000).toFixed(1)} s)`,
    );

    const out = path.join(dir, 'received');
    rmSync(out, { recursive: true, force: true });
    (await import('node:fs')).mkdirSync(out);
    const scpPort = await freePort();
    scp = spawn('storescp', ['-aet', 'POOL', '-od', out, String(scpPort)], { stdio: 'ignore', env: { ...process.env, TCP_NODELAY: '1' } });
    await waitForPort(scpPort);

    const config = path.join(dir, 'gateway.yaml');
    writeFileSync(
      config,
      YAML.stringify({
        dicom: { host: '127.0.0.1', port: 0, aeTitle: 'SECONDREAD', allowedCallers: [], stableAfterSeconds: 1 },
        hl7: { host: '127.0.0.1', port: 0 },
        http: { host: '127.0.0.1', port: 0 },
        storage: { dir: path.join(dir, 'data'), minFreeMb: 0 },
        database: { url: `sqlite:${path.join(dir, 'data', 'gateway.db')}` },
        destinations: [
          { id: 'plain', type: 'dimse', host: '127.0.0.1', port: scpPort, aeTitle: 'POOL', deidentify: false, timeoutSeconds: 600 },
          { id: 'anon', type: 'dimse', host: '127.0.0.1', port: scpPort, aeTitle: 'POOL', deidentify: true, timeoutSeconds: 600 },
        ],
        rules: [],
        forwarding: { pollIntervalSeconds: 0.2 },
        auth: { tokens: [{ token: TOKEN, role: 'admin', name: 'bench' }] },
        log: { level: 'info', format: 'json' },
      }),
    );
    const gw = spawn(process.execPath, [compiledMain, '--config', config], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
    gateway = gw;
    const base = await new Promise<string>((resolve, reject) => {
      const onLine = (line: string): void => {
        try {
          const e = JSON.parse(line) as Record<string, unknown>;
          if (e['message'] === 'gateway started') resolve(`http://127.0.0.1:${Number(e['httpPort'])}|${Number(e['dicomPort'])}`);
          if (e['level'] === 'error' || e['level'] === 'warn') console.error(`  gateway ${String(e['level'])}: ${String(e['message'])}`);
        } catch {
          /* not JSON */
        }
      };
      createInterface({ input: gw.stdout! }).on('line', onLine);
      createInterface({ input: gw.stderr! }).on('line', onLine);
      gw.once('exit', (code) => reject(new Error(`gateway exited (${code})`)));
    });
    const [http, dicomPort] = base.split('|') as [string, string];
    const pid = gw.pid!;

    const t1 = Date.now();
    const code = await run('storescu', ['-aet', 'PACS1', '-aec', 'SECONDREAD', '127.0.0.1', dicomPort, source]);
    if (code !== 0) throw new Error(`storescu into the gateway exited ${code}`);
    await until('the study to be stable', 120_000, async () =>
      (await api(http, 'GET', `/api/studies/${inst.studyUid}`)).body['state'] === 'stable' ? true : undefined,
    );
    const ingestPeak = proc(pid).hwm;
    console.log(`ingest (storescu -> gateway SCP): ${((Date.now() - t1) / 1000).toFixed(1)} s; gateway peak RSS so far ${mib(ingestPeak)}`);

    for (const destinationId of ['plain', 'anon']) {
      const before = new Set(readdirSync(out));
      writeFileSync(`/proc/${pid}/clear_refs`, '5');
      let sampled = 0;
      const sampler = setInterval(() => (sampled = Math.max(sampled, proc(pid).rss)), 100);
      const start = Date.now();
      const created = await api(http, 'POST', '/api/cases', { studyInstanceUid: inst.studyUid, reason: `bench ${destinationId}`, destinationId });
      if (created.status !== 201) throw new Error(`POST /api/cases: ${created.status} ${JSON.stringify(created.body)}`);
      const id = String(created.body['id']);
      const c = await until(`${destinationId} delivery`, 1_800_000, async () => {
        const b = (await api(http, 'GET', `/api/cases/${id}`)).body;
        if (['held', 'failed'].includes(String(b['state'])))
          throw new Error(`case ${String(b['state'])}: ${JSON.stringify(b['deliveries'])} ${JSON.stringify(b['excludedInstances'])}`);
        return b['state'] === 'awaiting-read' ? b : undefined;
      });
      const ms = Date.now() - start;
      clearInterval(sampler);
      const peak = proc(pid).hwm;
      const received = readdirSync(out).filter((f) => !before.has(f));
      if (received.length !== 1) throw new Error(`${received.length} new files at storescp (${JSON.stringify(c['deliveries'])})`);
      const same = (await tailHash(path.join(out, received[0]!), inst.pixelBytes)) === inst.sha256;
      console.log(
        `${destinationId.padEnd(5)}: ${(ms / 1000).toFixed(1)} s request -> awaiting-read, ${(statSync(source).size / 1024 / 1024 / (ms / 1000)).toFixed(0)} MiB/s; ` +
          `gateway peak RSS while forwarding ${mib(peak)} (VmHWM), sampled VmRSS max ${mib(sampled)}; Pixel Data at storescp ${same ? 'byte-identical' : 'DIFFERENT'}`,
      );
      if (!same) process.exitCode = 1;
      rmSync(path.join(out, received[0]!));
      await api(http, 'POST', `/api/cases/${id}/cancel`, { reason: 'bench' });
    }
  } finally {
    gateway?.kill('SIGTERM');
    scp?.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 1000));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
