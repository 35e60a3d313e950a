import { expect } from 'chai';
import { ATNA_MSGID, ATNA_PRI, formatRfc5424, frameOctetCounted } from '../../src/audit/syslog-client.js';
import { parseRfc5424 } from '../helpers/rsyslog.js';

describe('RFC 5424 formatting and RFC 5425/6587 octet counting', () => {
  const h = { pri: ATNA_PRI, timestamp: new Date('2026-12-02T10:00:00.123Z'), hostname: 'gw host', appName: 'secondread', procId: '77', msgId: ATNA_MSGID };

  it('writes HEADER, no structured data, a BOM and the UTF-8 message', () => {
    const b = formatRfc5424(h, '<x>é\nz</x>');
    const p = parseRfc5424(b.toString('utf8'));
    expect(p).to.deep.equal({
      pri: 85,
      version: 1,
      timestamp: '2026-12-02T10:00:00.123Z',
      hostname: 'gw_host',
      appName: 'secondread',
      procId: '77',
      msgId: 'DICOM+RFC3881',
      structuredData: '-',
      msg: '<x>é\nz</x>',
      bom: true,
    });
  });

  it('counts octets, not characters', () => {
    const msg = formatRfc5424(h, 'ééé');
    const framed = frameOctetCounted(msg);
    const sp = framed.indexOf(0x20);
    expect(Number(framed.subarray(0, sp).toString('ascii')))
      .to.equal(msg.length)
      .and.to.equal(framed.length - sp - 1);
  });
});
