import { randomUUID } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, statfsSync, unlinkSync } from 'node:fs';
import path from 'node:path';

/**
 * The spool owns file placement: received bytes land in tmp/, are fsynced,
 * and are moved under instances/ only when the studies domain commits the row.
 * A crash at any point leaves either a tmp file (swept at start-up, never
 * acknowledged) or a placed file whose row may be missing (the sender got no
 * success, so it sends again and we store it again over the same path).
 */
export class Spool {
  readonly tmpDir: string;
  readonly instancesDir: string;

  constructor(readonly root: string, private readonly minFreeBytes: number) {
    this.tmpDir = path.join(root, 'tmp');
    this.instancesDir = path.join(root, 'instances');
  }

  /** Creates the folders and removes temp files of transfers a crash interrupted. */
  open(): { sweptTmpFiles: number } {
    mkdirSync(this.tmpDir, { recursive: true });
    mkdirSync(this.instancesDir, { recursive: true });
    let swept = 0;
    for (const name of readdirSync(this.tmpDir)) {
      unlinkSync(path.join(this.tmpDir, name));
      swept++;
    }
    return { sweptTmpFiles: swept };
  }

  newTmpPath(): string {
    return path.join(this.tmpDir, `${randomUUID()}.part`);
  }

  /** True when the free space is above the configured watermark; checked before accepting bytes. */
  hasRoom(): boolean {
    if (this.minFreeBytes <= 0) return true;
    const s = statfsSync(this.root);
    return s.bavail * s.bsize >= this.minFreeBytes;
  }

  /** Relative path of an instance; UIDs are digits and dots, so they are safe file names. */
  relativePathFor(studyUid: string, seriesUid: string, sopUid: string): string {
    return path.join('instances', safe(studyUid), safe(seriesUid), `${safe(sopUid)}.dcm`);
  }

  /** Moves a fsynced temp file to its place and makes the rename itself durable. */
  place(tmpPath: string, relativePath: string): void {
    const target = path.join(this.root, relativePath);
    const dir = path.dirname(target);
    const created = mkdirSync(dir, { recursive: true });
    renameSync(tmpPath, target);
    fsyncDir(dir);
    // A new folder's own entry lives in its parent: sync up to the first folder that already existed.
    if (created) {
      let d = path.dirname(dir);
      const stop = path.resolve(created, '..');
      while (d.length >= stop.length) {
        fsyncDir(d);
        if (d === stop) break;
        d = path.dirname(d);
      }
    }
  }

  discard(tmpPath: string): void {
    try {
      unlinkSync(tmpPath);
    } catch {
      // already gone: nothing to clean
    }
  }

  remove(relativePath: string): void {
    this.discard(path.join(this.root, relativePath));
  }

  absolute(relativePath: string): string {
    return path.join(this.root, relativePath);
  }
}

function safe(uid: string): string {
  // A UID from the wire is untrusted: never let it climb out of the spool.
  if (!/^[0-9.]{1,64}$/.test(uid)) return Buffer.from(uid).toString('hex').slice(0, 128);
  return uid;
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
