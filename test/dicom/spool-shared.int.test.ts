import { existsSync, utimesSync, writeFileSync } from 'node:fs';
import { expect } from 'chai';
import { Spool } from '../../src/dicom/spool.js';
import { makeTempDir } from '../helpers/tmp.js';

describe('a spool shared by several instances', () => {
  it("start-up removes its own partial files, another instance's only when abandoned (a day old)", () => {
    const tmp = makeTempDir();
    try {
      const a = new Spool(tmp.dir, 0, 'gw-a');
      const b = new Spool(tmp.dir, 0, 'gw/b');
      b.open();
      a.open();
      expect(a.tmpDir).to.not.equal(b.tmpDir);
      const mine = a.newTmpPath();
      const theirs = b.newTmpPath();
      const abandoned = b.newTmpPath();
      for (const f of [mine, theirs, abandoned]) writeFileSync(f, 'partial');
      const old = new Date(Date.now() - 25 * 3_600_000);
      utimesSync(abandoned, old, old);
      expect(a.open().sweptTmpFiles).to.equal(2);
      expect(existsSync(mine)).to.equal(false);
      expect(existsSync(theirs), 'a transfer in progress on the other instance').to.equal(true);
      expect(existsSync(abandoned)).to.equal(false);
    } finally {
      tmp.cleanup();
    }
  });
});
