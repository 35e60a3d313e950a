import { randomUUID } from 'node:crypto';
import { closeSync, fdatasync, fsync, mkdirSync, openSync, readdirSync, renameSync, statfsSync, statSync, unlinkSync } from 'node:fs';
import path from 'node:path';

/**
 * The spool owns file placement: received bytes land in tmp/ and are moved
 * under instances/, then fsynced with the rename, before the studies domain commits the row.
 * A crash at any point leaves either a tmp file (swept at start-up, never
 * acknowledged) or a placed file whose row may be missing (the sender got no
 * success, so it sends again and we store it again over the same path).
 */
export class Spool {
  readonly tmpDir: string;
  readonly instancesDir: string;

  constructor(
    readonly root: string,
    private readonly minFreeBytes: number,
    /**
     * Several instances sharing `root` (PostgreSQL): each receives into its own
     * tmp/<owner>/, so one starting up never removes another's transfers in progress.
     */
    private readonly tmpOwner?: string,
  ) {
    this.tmpDir = tmpOwner ? path.join(root, 'tmp', tmpOwner.replace(/[^A-Za-z0-9._-]/g, '_')) : path.join(root, 'tmp');
    this.instancesDir = path.join(root, 'instances');
  }

  /**
   * Creates the folders and removes temp files of transfers a crash interrupted
   * (all of ours; another instance's only when a day old, i.e. abandoned by an
   * instance that is gone: no transfer takes that long).
   */
  open(): { sweptTmpFiles: number } {
    mkdirSync(this.tmpDir, { recursive: true });
    mkdirSync(this.instancesDir, { recursive: true });
    let swept = 0;
    for (const name of readdirSync(this.tmpDir)) {
      if (statSync(path.join(this.tmpDir, name)).isDirectory()) continue;
      unlinkSync(path.join(this.tmpDir, name));
      swept++;
    }
    if (this.tmpOwner) {
      const shared = path.join(this.root, 'tmp');
      const staleBefore = Date.now() - 24 * 3_600_000;
      const candidates = readdirSync(shared, { withFileTypes: true }).flatMap((e) =>
        e.isDirectory()
          ? path.join(shared, e.name) === this.tmpDir
            ? []
            : readdirSync(path.join(shared, e.name)).map((n) => path.join(shared, e.name, n))
          : [path.join(shared, e.name)],
      );
      for (const file of candidates) {
        try {
          if (statSync(file).mtimeMs < staleBefore) {
            unlinkSync(file);
            swept++;
          }
        } catch {
          // removed meanwhile by its owner
        }
      }
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

  /**
   * Moves a temp file to its place and makes both its data and the rename
   * durable; resolves only then, so the caller may commit the row after it.
   * The rename comes first so that one journal commit can carry the file's
   * blocks and the new directory entry: fdatasync of the file and fsync of
   * the folder(s) run together in the thread pool (about one disk flush
   * instead of two in a row). A crash before this resolves leaves a placed
   * file without a row, which was never acknowledged (see the class comment).
   * `dataFd`: an open descriptor of `tmpPath` (the caller still closes it);
   * without it the file is opened here for the sync.
   */
  async place(tmpPath: string, relativePath: string, dataFd?: number): Promise<void> {
    const target = path.join(this.root, relativePath);
    const dir = path.dirname(target);
    const ownFd = dataFd === undefined ? openSync(tmpPath, 'r') : undefined;
    const dirs: number[] = [];
    try {
      const created = mkdirSync(dir, { recursive: true });
      renameSync(tmpPath, target);
      dirs.push(openSync(dir, 'r'));
      // A new folder's own entry lives in its parent: sync up to the first folder that already existed.
      if (created) {
        let d = path.dirname(dir);
        const stop = path.resolve(created, '..');
        while (d.length >= stop.length) {
          dirs.push(openSync(d, 'r'));
          if (d === stop) break;
          d = path.dirname(d);
        }
      }
      const fd = (dataFd ?? ownFd) as number;
      await Promise.all([syncFd(fd, fdatasync), ...dirs.map((d) => syncFd(d, fsync))]);
    } finally {
      for (const d of dirs) closeQuietly(d);
      if (ownFd !== undefined) closeQuietly(ownFd);
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

function syncFd(fd: number, how: typeof fsync): Promise<void> {
  return new Promise((resolve, reject) => how(fd, (err) => (err ? reject(err) : resolve())));
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // nothing left to release
  }
}
