import { readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { runChaos } from '../scripts/chaos.js';

/** Every instance file under the spool's instances/ folder. */
function instanceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? instanceFiles(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

describe('npm run chaos (scripts/chaos.ts), short version', function () {
  this.timeout(120_000);

  it('loses nothing acknowledged across 3 SIGKILLs under mixed load, and every flagged case ends written back with one MSH-10', async () => {
    const lines: string[] = [];
    const seed = Number(process.env['CHAOS_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    const r = await runChaos({ kills: 3, seed, durationSeconds: 2.5, drainSeconds: 45, startupKillRate: 0.2, out: (l) => lines.push(l) });
    const context = lines.join('\n');
    expect(r.kills, context).to.equal(3);
    expect(r.lost.total, context).to.equal(0);
    expect(
      r.problems.filter((p) => !p.startsWith('note:')),
      context,
    ).to.deep.equal([]);
    expect(r.ok, context).to.equal(true);
    expect(r.cleanStopCode, context).to.equal(0);
    expect(r.acknowledged.instances, context).to.be.greaterThan(20);
    expect(r.acknowledged.hl7, context).to.be.greaterThan(4);
    expect(r.cases.expected, context).to.be.greaterThan(0);
    expect(r.cases.writtenBack, context).to.equal(r.cases.expected);
    expect(r.acknowledged.secondReports + r.recovered.secondReportsInterrupted, context).to.be.at.least(r.cases.expected);
  });

  it('reports an acknowledged instance whose file went missing or changed as lost (the checks can fail)', async () => {
    const lines: string[] = [];
    const r = await runChaos({
      kills: 0,
      seed: 11,
      durationSeconds: 3,
      drainSeconds: 30,
      out: (l) => lines.push(l),
      afterStop: (dataDir) => {
        const files = instanceFiles(path.join(dataDir, 'instances'));
        unlinkSync(files[0]!);
        const bytes = readFileSync(files[1]!);
        bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0xff, bytes.length - 1);
        writeFileSync(files[1]!, bytes);
      },
    });
    const context = lines.join('\n');
    // A failed run keeps its folder for diagnosis; this failure was made on purpose.
    if (r.dir) rmSync(r.dir, { recursive: true, force: true });
    expect(r.lost.instances, context).to.equal(2);
    expect(r.ok, context).to.equal(false);
    expect(context).to.include('LOST instances: file missing').and.include('LOST instances: sha256 of the file != row');
  });
});
