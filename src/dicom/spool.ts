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
   * Moves a temp file to its place (creating its folders) and returns the
   * folders whose entries changed: the file's own folder, and every folder
   * created for it up to the first that already existed (a new folder's entry
   * lives in its parent). The rename is durable only once those folders are
   * synced (syncFolders) and the data once the file is (syncData); the caller
   * does both before it commits the row. Renaming first lets one journal commit
   * carry the file's blocks and the new directory entry when both syncs run
   * together. A crash before they resolve leaves a placed file without a row,
   * which was never acknowledged (see the class comment).
   */
  moveIntoPlace(tmpPath: string, relativePath: string): string[] {
    const target = path.join(this.root, relativePath);
    const dir = path.dirname(target);
    const created = mkdirSync(dir, { recursive: true });
    renameSync(tmpPath, target);
    const dirs = [dir];
    if (created) {
      let d = path.dirname(dir);
      const stop = path.resolve(created, '..');
      while (d.length >= stop.length) {
        dirs.push(d);
        if (d === stop) break;
        d = path.dirname(d);
      }
    }
    return dirs;
  }

  /**
   * fdatasync of a received file, in the thread pool. `dataFd`: an open
   * descriptor of the file (the caller still closes it); without it `file`
   * is opened for the sync.
   */
  async syncData(file: string, dataFd?: number): Promise<void> {
    if (dataFd !== undefined) return syncFd(dataFd, fdatasync);
    const fd = openSync(file, 'r');
    try {
      await syncFd(fd, fdatasync);
    } finally {
      closeQuietly(fd);
    }
  }

  /** fsync of each folder once, all at once in the thread pool: several renames into one folder share its sync. */
  async syncFolders(dirs: Iterable<string>): Promise<void> {
    const fds: number[] = [];
    try {
      for (const d of new Set(dirs)) fds.push(openSync(d, 'r'));
      await Promise.all(fds.map((fd) => syncFd(fd, fsync)));
    } finally {
      for (const fd of fds) closeQuietly(fd);
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
