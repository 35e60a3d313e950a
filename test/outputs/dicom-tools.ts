import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { hasDcmtk } from '../helpers/dicom-peers.js';

/** Whether dicom3tools' dciodvfy is on the PATH (it prints its usage and exits non-zero without arguments). */
export function hasDciodvfy(): boolean {
  const r = spawnSync('dciodvfy', [], { stdio: 'ignore' });
  return r.error === undefined;
}

export function hasDsrdump(): boolean {
  return hasDcmtk() && spawnSync('dsrdump', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** DCMTK's dsrdump of a Part 10 file: its exit code and the rendering. */
export function dsrdump(file: string): { code: number | null; text: string } {
  const r = spawnSync('dsrdump', ['+Pl', file], { encoding: 'utf8' });
  return { code: r.status, text: `${r.stdout}${r.stderr}` };
}

/** dicom3tools' IOD check: the lines that report errors (`Error - ...`), and everything it said. */
export function dciodvfy(file: string): { errors: string[]; text: string } {
  const r = spawnSync('dciodvfy', [file], { encoding: 'utf8' });
  const text = `${r.stdout}${r.stderr}`;
  return { errors: text.split('\n').filter((l) => /^Error/.test(l)), text };
}

export function writeTemp(dir: string, name: string, bytes: Buffer): string {
  const file = path.join(dir, name);
  writeFileSync(file, bytes);
  return file;
}
