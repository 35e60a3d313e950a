import { strict as assert } from 'node:assert';
import { existsSync, readFileSync } from 'node:fs';
import { readPart10Header } from '../../src/dicom/header.js';

const CHARSETS = '/usr/lib/python3/dist-packages/pydicom/data/charset_files';

/**
 * Patient names as pydicom's own charset tests state them (pydicom/tests/test_charset.py, FileInfo.txt):
 * data no one here wrote, in every repertoire including ISO 2022 code extensions.
 */
const EXPECTED: [file: string, charset: string, name: string][] = [
  ['chrArab.dcm', 'ISO_IR 127', 'قباني^لنزار'],
  ['chrFren.dcm', 'ISO_IR 100', 'Buc^Jérôme'],
  ['chrGerm.dcm', 'ISO_IR 100', 'Äneas^Rüdiger'],
  ['chrGreek.dcm', 'ISO_IR 126', 'Διονυσιος'],
  ['chrH31.dcm', '\\ISO 2022 IR 87', 'Yamada^Tarou=山田^太郎=やまだ^たろう'],
  ['chrH32.dcm', 'ISO 2022 IR 13\\ISO 2022 IR 87', 'ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう'],
  ['chrHbrw.dcm', 'ISO_IR 138', 'שרון^דבורה'],
  ['chrI2.dcm', '\\ISO 2022 IR 149', 'Hong^Gildong=洪^吉洞=홍^길동'],
  ['chrJapMulti.dcm', '\\ISO 2022 IR 87', 'やまだ^たろう'],
  ['chrJapMultiExplicitIR6.dcm', 'ISO 2022 IR 6\\ISO 2022 IR 87', 'やまだ^たろう'],
  ['chrKoreanMulti.dcm', '\\ISO 2022 IR 149', '김희중'],
  ['chrRuss.dcm', 'ISO_IR 144', 'Люкceмбypг'],
  ['chrX1.dcm', 'ISO_IR 192', 'Wang^XiaoDong=王^小東='],
  ['chrX2.dcm', 'GB18030', 'Wang^XiaoDong=王^小东='],
];

describe('DICOM header: Specific Character Set (pydicom charset corpus)', () => {
  before(function () {
    if (!existsSync(CHARSETS)) {
      console.log('      skipped: pydicom charset corpus not installed (python3-pydicom)');
      this.skip();
    }
  });
  for (const [file, charset, name] of EXPECTED) {
    it(`${file}: ${charset} read, patient name decoded`, async () => {
      const h = await readPart10Header(readFileSync(`${CHARSETS}/${file}`));
      assert.equal(h.specificCharacterSet, charset);
      assert.equal(h.patientName, name);
    });
  }
});
