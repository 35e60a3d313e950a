import { expect } from 'chai';
import iconv from 'iconv-lite';
import { buildAck } from '../../src/hl7/ack.js';
import { charsetFor, defaultCharset, peekMsh18, supportedCharsets } from '../../src/hl7/charset.js';
import { Hl7Message } from '../../src/hl7/hl7-message.js';
import { readHeader } from '../../src/hl7/hl7-parse.js';
import { decodeFrame, messageContentKey } from '../../src/hl7/inbound.service.js';

/** MSH with MSH-18 (MSH-13..17 empty). */
const msh = (msh18: string) => `MSH|^~\\&|RIS|HOSP|SECONDREAD|GATEWAY|20260301||ORU^R01|C1|P|2.5.1||||||${msh18}`;

describe('HL7 character sets (MSH-18)', () => {
  it('reads MSH-18 (its first repetition) from the first segment, or null without one', () => {
    expect(peekMsh18(`${msh('8859/2')}\rPID|1`)).to.equal('8859/2');
    expect(peekMsh18(`${msh('ASCII~ISO IR87')}\rPID|1`)).to.equal('ASCII');
    expect(peekMsh18('MSH|^~\\&|RIS|HOSP|SECONDREAD|GATEWAY|20260301||ORU^R01|C1|P|2.5.1\rPID|1')).to.equal(null);
    expect(peekMsh18('\x0bMSH#^~\\&#RIS#HOSP#A#B#2026##ORU^R01#C1#P#2.5.1######8859/5\r')).to.equal('8859/5');
  });

  it('decodes each ISO 8859 part as that part, not as windows-1252', () => {
    const samples: Record<string, string> = {
      '8859/1': 'Müller, Ærø, façade',
      '8859/2': 'ŁÓDŹ, Żółć, Brno Šťáva',
      '8859/3': 'Ħamrun, ġbejna',
      '8859/4': 'Ģirts, Šiauliai',
      '8859/5': 'Москва, пневмония',
      '8859/6': 'مستشفى',
      '8859/7': 'Αθήνα, πνευμονία',
      '8859/8': 'ירושלים',
      '8859/9': 'İstanbul, Şişli',
      '8859/15': 'Œuvre 20 €',
    };
    for (const [name, text] of Object.entries(samples)) {
      const cs = charsetFor(name)!;
      const bytes = iconv.encode(text, `iso-8859-${name.slice(5)}`);
      expect(cs.decode(bytes), name).to.equal(text);
      expect(cs.encode(text).equals(bytes), name).to.equal(true);
    }
  });

  it('decodes the CJK sets: ISO IR87 (ISO 2022 JIS X 0208), GB 18030, KS X 1001, BIG-5, and UTF-8', () => {
    // DICOM PS3.5 H.3.1 example bytes (ISO 2022 IR 87): "Yamada^Tarou" in kanji.
    const jis = Buffer.from([0x1b, 0x24, 0x42, 0x3b, 0x33, 0x45, 0x44, 0x1b, 0x28, 0x42, 0x5e, 0x1b, 0x24, 0x42, 0x42, 0x40, 0x4f, 0x3a, 0x1b, 0x28, 0x42]);
    expect(charsetFor('ISO IR87')!.decode(jis)).to.equal('山田^太郎');
    // An independent decoder agrees (ICU's ISO-2022-JP).
    expect(new TextDecoder('iso-2022-jp').decode(jis)).to.equal('山田^太郎');
    expect(charsetFor('ISO IR159')!.decode(jis)).to.equal('山田^太郎');
    // JIS X 0212 (ESC $ ( D), bytes made by CPython's iso2022_jp_2 codec: '丂' and '鼖' between kanji of JIS X 0208.
    const ir159 = Buffer.from('1b24423b3345441b24284430216d2b1b2842', 'hex');
    expect(charsetFor('ISO IR159')!.decode(ir159)).to.equal('山田丂鼖');
    // JIS X 0201 katakana (half-width, single bytes), as Shift_JIS encodes them.
    expect(charsetFor('ISO IR14')!.decode(Buffer.from('d4cfc0de5ec0dbb3', 'hex'))).to.equal('ﾔﾏﾀﾞ^ﾀﾛｳ');
    expect(charsetFor('GB 18030-2000')!.decode(iconv.encode('北京协和医院', 'gb18030'))).to.equal('北京协和医院');
    expect(charsetFor('KS X 1001')!.decode(iconv.encode('서울대학교병원', 'euc-kr'))).to.equal('서울대학교병원');
    expect(charsetFor('BIG-5')!.decode(iconv.encode('臺北榮民總醫院', 'big5'))).to.equal('臺北榮民總醫院');
    expect(charsetFor('UNICODE UTF-8')!.decode(Buffer.from('Łódź 東京', 'utf8'))).to.equal('Łódź 東京');
    expect(charsetFor('unicode utf-8')).to.not.equal(undefined);
  });

  it('knows what it cannot decode', () => {
    expect(charsetFor('EBCDIC')).to.equal(undefined);
    expect(charsetFor('UNICODE')).to.equal(undefined);
    expect(charsetFor(null)).to.equal(defaultCharset);
    expect(supportedCharsets).to.include.members([
      'ASCII',
      '8859/1',
      '8859/15',
      'UNICODE UTF-8',
      'ISO IR87',
      'ISO IR159',
      'GB 18030-2000',
      'KS X 1001',
      'BIG-5',
    ]);
  });

  it('decodes a frame by its MSH-18 and \\X..\\ hex escapes as bytes of that set', () => {
    const text = `${msh('8859/2')}\rOBX|1|TX|X^Y^L||Łódź \\XA3\\\\XF3\\d\\XBC\\||||||F\r`;
    const bytes = iconv.encode(text, 'iso-8859-2');
    // What the listener makes of the bytes (not UTF-8, so Latin-1) is not the text...
    const received = bytes.toString('latin1');
    expect(received).to.not.contain('Łódź');
    const { raw, charset, problem } = decodeFrame(received, bytes);
    expect(problem).to.equal(undefined);
    expect(raw).to.contain('Łódź');
    const m = Hl7Message.parse(raw, charset.decode);
    expect(m.text(m.rawField(m.segment('OBX')!, 5))).to.equal('Łódź Łódź');
    // Without MSH-18, hex bytes that are valid UTF-8 are UTF-8; otherwise Latin-1 (as the frame itself).
    expect(
      Hl7Message.parse('MSH|^~\\&|A\rOBX|1|TX|||\\XC581\\ \\XE9\\').text(Hl7Message.parse('MSH|^~\\&|A\rOBX|1|TX|||\\XC581\\ \\XE9\\').segments[1]!.fields[5]!),
    ).to.equal('Ł é');
    expect(decodeFrame(`${msh('KLINGON')}\r`, undefined).problem).to.match(/MSH-18 character set "KLINGON" not supported/);
    // Bytes the named set cannot carry (an escape to a set it does not know): a clear problem, not an exception.
    const bad = Buffer.concat([Buffer.from(`${msh('ISO IR87')}\rOBX|1|TX|||`, 'latin1'), Buffer.from('1b2528', 'hex'), Buffer.from('x\r')]);
    expect(decodeFrame(bad.toString('latin1'), bad).problem).to.match(/bytes not valid in MSH-18 character set ISO IR87/);
  });

  it('answers in the set the message came in, naming it in MSH-18', () => {
    const h = readHeader(Hl7Message.parse(`${msh('8859/2')}\r`));
    const ack = buildAck(h, { sendingApplication: 'SECONDREAD', sendingFacility: 'GATEWAY', code: 'AA', controlId: 'A1', now: new Date(0) });
    expect(ack.split('\r')[0]!.split('|')[17]).to.equal('8859/2');
    expect(
      charsetFor('8859/2')!
        .encode('Ł')
        .equals(Buffer.from([0xa3])),
    ).to.equal(true);
  });
});

describe('message content for a reused control id', () => {
  it('is the message without MSH-7, with segment ends normalised', () => {
    const a = 'MSH|^~\\&|RIS|HOSP|GW|GW|20260301101500||ORU^R01|C1|P|2.5.1\rPID|1||MRN1\rOBX|1|TX|||text\r';
    expect(messageContentKey(a)).to.equal(messageContentKey(a.replace('20260301101500', '20260301101733').replace(/\r/g, '\r\n')));
    expect(messageContentKey(a)).to.not.equal(messageContentKey(a.replace('text', 'other text')));
    expect(messageContentKey(a)).to.not.equal(messageContentKey(a.replace('MRN1', 'MRN2')));
  });
});
