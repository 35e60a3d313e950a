/**
 * Measures DICOM text decoders on pydicom's charset corpus (README: Character sets): how many
 * patient names each decodes to what pydicom's tests state, and how fast. The bytes are the
 * Patient's Name value as stored in each file.
 */
import { readFileSync } from 'node:fs';
import dcmjs from 'dcmjs';
import { convertBytes } from 'dicom-character-set';
import iconv from 'iconv-lite';

const DIR = '/usr/lib/python3/dist-packages/pydicom/data/charset_files';
const CASES: [string, string][] = [
  ['chrArab.dcm', 'قباني^لنزار'],
  ['chrFren.dcm', 'Buc^Jérôme'],
  ['chrGerm.dcm', 'Äneas^Rüdiger'],
  ['chrGreek.dcm', 'Διονυσιος'],
  ['chrH31.dcm', 'Yamada^Tarou=山田^太郎=やまだ^たろう'],
  ['chrH32.dcm', 'ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう'],
  ['chrHbrw.dcm', 'שרון^דבורה'],
  ['chrI2.dcm', 'Hong^Gildong=洪^吉洞=홍^길동'],
  ['chrJapMulti.dcm', 'やまだ^たろう'],
  ['chrJapMultiExplicitIR6.dcm', 'やまだ^たろう'],
  ['chrKoreanMulti.dcm', '김희중'],
  ['chrRuss.dcm', 'Люкceмбypг'],
  ['chrX1.dcm', 'Wang^XiaoDong=王^小東='],
  ['chrX2.dcm', 'Wang^XiaoDong=王^小东='],
];

/** The raw value of a top-level explicit-VR-LE element (these files are all explicit VR little endian). */
function rawValue(file: Buffer, group: number, element: number): Buffer {
  let o = 132;
  while (o + 8 <= file.length) {
    const g = file.readUInt16LE(o);
    const e = file.readUInt16LE(o + 2);
    const vr = file.toString('latin1', o + 4, o + 6);
    const long = ['OB', 'OW', 'OF', 'SQ', 'UT', 'UN', 'UC', 'UR'].includes(vr);
    const len = long ? file.readUInt32LE(o + 8) : file.readUInt16LE(o + 6);
    const start = o + (long ? 12 : 8);
    if (g === group && e === element) return file.subarray(start, start + len);
    if (len === 0xffffffff) throw new Error('undefined length before the element');
    o = start + len;
  }
  return Buffer.alloc(0);
}

/** Single-decoder mapping (what a library without ISO 2022 code-extension handling can do). */
const LABELS: Record<string, string> = {
  '': 'latin1',
  'ISO_IR 100': 'latin1',
  'ISO_IR 101': 'iso-8859-2',
  'ISO_IR 126': 'iso-8859-7',
  'ISO_IR 127': 'iso-8859-6',
  'ISO_IR 138': 'iso-8859-8',
  'ISO_IR 144': 'iso-8859-5',
  'ISO_IR 192': 'utf-8',
  GB18030: 'gb18030',
  'ISO 2022 IR 87': 'iso-2022-jp',
  'ISO 2022 IR 13': 'shift_jis',
  'ISO 2022 IR 149': 'euc-kr',
  'ISO 2022 IR 6': 'latin1',
};
const label = (charset: string): string =>
  LABELS[
    charset
      .split('\\')
      .map((s) => s.trim())
      .filter(Boolean)
      .pop() ?? ''
  ] ?? 'latin1';
const trim = (s: string): string => s.replace(/[\0\s]+$/, '');

const decoders: Record<string, (charset: string, bytes: Buffer) => string> = {
  'dicom-character-set': (cs, b) => trim(convertBytes(cs, b, { vr: 'PN' })),
  'TextDecoder (one label)': (cs, b) => trim(new TextDecoder(label(cs)).decode(b)),
  'iconv-lite (one label)': (cs, b) => trim(iconv.decode(b, label(cs))),
  'dcmjs 0.52 readFile': (_cs, _b) => '',
};

const files = CASES.map(([f, expected]) => {
  const file = readFileSync(`${DIR}/${f}`);
  return { f, expected, file, charset: trim(rawValue(file, 0x0008, 0x0005).toString('latin1')), name: rawValue(file, 0x0010, 0x0010) };
});

for (const [name, decode] of Object.entries(decoders)) {
  let right = 0;
  const wrong: string[] = [];
  for (const c of files) {
    let got: string;
    try {
      if (name.startsWith('dcmjs')) {
        const d = dcmjs.data.DicomMessage.readFile(c.file.buffer.slice(c.file.byteOffset, c.file.byteOffset + c.file.length) as ArrayBuffer, {
          untilTag: '7FE00010',
        });
        const pn = d.dict['00100010']?.Value?.[0] as { Alphabetic?: string; Ideographic?: string; Phonetic?: string } | undefined;
        got = [pn?.Alphabetic, pn?.Ideographic, pn?.Phonetic].filter((x) => x !== undefined).join('=');
      } else got = decode(c.charset, c.name);
    } catch (e) {
      got = `(error: ${(e as Error).message.slice(0, 40)})`;
    }
    if (got === c.expected) right++;
    else wrong.push(c.f);
  }
  let perSecond = 0;
  if (!name.startsWith('dcmjs')) {
    const n = 20_000;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++)
      for (const c of files) {
        try {
          decode(c.charset, c.name);
        } catch {
          // counted above as wrong
        }
      }
    perSecond = Math.round((n * files.length) / (Number(process.hrtime.bigint() - t0) / 1e9));
  }
  console.log(
    `${name}: ${right}/${files.length} right${wrong.length ? ` (wrong: ${wrong.join(', ')})` : ''}${perSecond ? `, ${perSecond.toLocaleString('en')} values/s` : ''}`,
  );
}
