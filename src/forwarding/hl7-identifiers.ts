/**
 * What the HL7 messages of a study say about who the patient is, for the
 * verifier that runs before a de-identified instance leaves: the identifiers
 * the DICOM header carries are not all the ones a hospital knows a patient by
 * (other ids and their authorities, the visit number, the address and phone
 * numbers, the ordering and referring physicians). Read from the stored raw
 * ORM/OMI/ORU text (HL7 v2, PS: chapter 2 encoding rules), segment by segment.
 */
export interface Hl7Identifiers {
  /** `Family^Given^Middle`; kind `patient-name` for the patient (PID-5/6/9/21), `person-name` for everyone else. */
  personNames: { name: string; kind: 'patient-name' | 'person-name' }[];
  /** kind `patient-id` (PID), `accession` (OBR-3/18, IPC-1), `id` (orders, visits, physicians' ids). */
  ids: { id: string; authority?: string; kind: 'patient-id' | 'accession' | 'id' }[];
  /** YYYYMMDD; kind `birth-date` for PID-7, `date` otherwise. */
  dates: { date: string; kind: 'birth-date' | 'date' }[];
  /** Addresses and phone numbers. */
  texts: { text: string; kind: 'address' | 'phone' | 'text' }[];
}

export function emptyHl7Identifiers(): Hl7Identifiers {
  return { personNames: [], ids: [], dates: [], texts: [] };
}

interface Encoding {
  field: string;
  component: string;
  repetition: string;
  escape: string;
  sub: string;
}

/** HL7 escape sequences (2.7.4) back to text; hex and formatting escapes become nothing or their character. */
function unescape(s: string, e: Encoding): string {
  if (!s.includes(e.escape)) return s;
  const esc = e.escape.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return s.replace(new RegExp(`${esc}([^${esc}]*)${esc}`, 'g'), (_m, code: string) => {
    switch (code[0]) {
      case 'F':
        return e.field;
      case 'S':
        return e.component;
      case 'R':
        return e.repetition;
      case 'E':
        return e.escape;
      case 'T':
        return e.sub;
      case 'X':
        return Buffer.from(code.slice(1), 'hex').toString('latin1');
      default:
        return ' ';
    }
  });
}

/** Adds what one raw HL7 message says about the patient and the people around the order to `into`. */
export function addHl7Identifiers(raw: string, into: Hl7Identifiers): void {
  const segments = raw.split(/\r\n|\r|\n/).filter((s) => s.length >= 3);
  const msh = segments.find((s) => s.startsWith('MSH'));
  if (!msh || msh.length < 8) return;
  const e: Encoding = { field: msh[3]!, component: msh[4]!, repetition: msh[5]!, escape: msh[6]!, sub: msh[7]! };
  const clean = (s: string | undefined): string => unescape(s ?? '', e).trim();
  const reps = (f: string | undefined): string[] => (f ? f.split(e.repetition) : []);
  const comps = (r: string): string[] => r.split(e.component);
  const subs = (c: string | undefined): string[] => (c ?? '').split(e.sub);

  let idKind: Hl7Identifiers['ids'][number]['kind'] = 'id';
  let nameKind: Hl7Identifiers['personNames'][number]['kind'] = 'person-name';
  let textKind: Hl7Identifiers['texts'][number]['kind'] = 'text';
  const id = (value: string | undefined, authority?: string): void => {
    const v = clean(value);
    if (v) into.ids.push(authority ? { id: v, authority: clean(authority), kind: idKind } : { id: v, kind: idKind });
  };
  const name = (family: string | undefined, given?: string, middle?: string): void => {
    const f = clean(family);
    if (!f) return;
    into.personNames.push({ name: [f, clean(given), clean(middle)].join('^').replace(/\^+$/, ''), kind: nameKind });
  };
  const text = (value: string | undefined): void => {
    const v = clean(value);
    if (v.length >= 3) into.texts.push({ text: v, kind: textKind });
  };
  const date = (value: string | undefined, kind: 'birth-date' | 'date' = 'date'): void => {
    const v = clean(value).slice(0, 8);
    if (/^\d{8}$/.test(v)) into.dates.push({ date: v, kind });
  };
  /** Runs `f` with the kinds the identifiers it finds get. */
  const as = (kinds: { id?: typeof idKind; name?: typeof nameKind; text?: typeof textKind }, f: () => void): void => {
    const saved = [idKind, nameKind, textKind] as const;
    idKind = kinds.id ?? 'id';
    nameKind = kinds.name ?? 'person-name';
    textKind = kinds.text ?? 'text';
    f();
    [idKind, nameKind, textKind] = saved;
  };
  /** CX: id ^ check digit ^ scheme ^ assigning authority (HD: namespace & universal id & type). */
  const cx = (f: string | undefined): void => {
    for (const r of reps(f)) {
      const c = comps(r);
      id(c[0], subs(c[3])[0] || undefined);
    }
  };
  /** XPN: family (FN: surname & ...) ^ given ^ middle. */
  const xpn = (f: string | undefined): void => {
    for (const r of reps(f)) {
      const c = comps(r);
      name(subs(c[0])[0], c[1], c[2]);
    }
  };
  /** XCN: id ^ family ^ given ^ middle. */
  const xcn = (f: string | undefined): void => {
    for (const r of reps(f)) {
      const c = comps(r);
      id(c[0]);
      name(subs(c[1])[0], c[2], c[3]);
    }
  };
  /** NDL (OBR-32..35): CNN in the first component, as subcomponents id & family & given & middle. */
  const ndl = (f: string | undefined): void => {
    for (const r of reps(f)) {
      const s = subs(comps(r)[0]);
      id(s[0]);
      name(s[1], s[2], s[3]);
    }
  };
  /** XAD: street (SAD: street & ...) ^ other designation ^ city ^ state ^ zip. */
  const xad = (f: string | undefined): void => {
    for (const r of reps(f)) {
      const c = comps(r);
      text(subs(c[0])[0]);
      text(c[1]);
      text(c[4]);
    }
  };
  /** XTN: the formatted number (first component), and the local number (7th) and unformatted (12th). */
  const xtn = (f: string | undefined): void => {
    for (const r of reps(f)) {
      const c = comps(r);
      text(c[0]);
      text(c[6]);
      text(c[11]);
      text(c[3]); // e-mail address
    }
  };
  /** EI: entity id ^ namespace. */
  const ei = (f: string | undefined): void => {
    for (const r of reps(f)) id(comps(r)[0]);
  };

  for (const seg of segments) {
    const f = seg.split(e.field);
    // MSH counts its field separator as MSH-1, so its fields are shifted by one; none of them is read here.
    switch (f[0]) {
      case 'PID':
        as({ id: 'patient-id', name: 'patient-name' }, () => {
          cx(f[2]);
          cx(f[3]);
          cx(f[4]);
          xpn(f[5]);
          xpn(f[6]);
          xpn(f[9]);
          cx(f[18]);
          id(f[19]);
          id(comps(f[20] ?? '')[0]);
          xpn(f[21]);
        });
        date(f[7], 'birth-date');
        as({ text: 'address' }, () => xad(f[11]));
        as({ text: 'phone' }, () => {
          xtn(f[13]);
          xtn(f[14]);
        });
        date(f[29]);
        break;
      case 'PD1':
        xcn(f[4]);
        break;
      case 'NK1':
        xpn(f[2]);
        as({ text: 'address' }, () => xad(f[4]));
        as({ text: 'phone' }, () => {
          xtn(f[5]);
          xtn(f[6]);
        });
        break;
      case 'PV1':
        xcn(f[7]);
        xcn(f[8]);
        xcn(f[9]);
        xcn(f[17]);
        cx(f[19]);
        cx(f[50]);
        break;
      case 'ORC':
        ei(f[2]);
        ei(f[3]);
        ei(f[4]);
        xcn(f[10]);
        xcn(f[11]);
        xcn(f[12]);
        as({ text: 'phone' }, () => xtn(f[14]));
        break;
      case 'OBR':
        ei(f[2]);
        as({ id: 'accession' }, () => {
          ei(f[3]);
          id(f[18]);
        });
        xcn(f[16]);
        as({ text: 'phone' }, () => xtn(f[17]));
        id(f[19]);
        id(f[20]);
        xcn(f[28]);
        ndl(f[32]);
        ndl(f[33]);
        ndl(f[34]);
        ndl(f[35]);
        break;
      case 'IPC':
        as({ id: 'accession' }, () => ei(f[1]));
        break;
      case 'ZDS':
        // StudyInstanceUID: the de-identifier replaces it; the verifier looks for UIDs itself.
        break;
    }
  }
}

/** Drops repeated entries (several messages repeat the same PID). */
export function dedupeHl7Identifiers(h: Hl7Identifiers): Hl7Identifiers {
  const uniq = <T>(xs: T[]): T[] => [...new Map(xs.map((x) => [JSON.stringify(x), x])).values()];
  return { personNames: uniq(h.personNames), ids: uniq(h.ids), dates: uniq(h.dates), texts: uniq(h.texts) };
}
