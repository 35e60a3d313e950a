/**
 * Rule engine throughput: the shipped config/rules.yaml plus 50 generated
 * rules over 100,000 synthetic studies with reports (seeded, so every run
 * sees the same workload). Prints studies/s and peak RSS for three runs.
 *
 *   npx tsx scripts/bench-rules.ts [studies]
 */
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { compileRuleSet, evaluate } from '../src/rules/evaluate.js';
import { validateRuleSet } from '../src/rules/rule.schema.js';
import type { BucketCounters, EvaluationInput, ReportVersion } from '../src/rules/rule.types.js';
import { seededRandom } from './lib/seeded-random.js';

const STUDIES = Number(process.argv[2] ?? 100_000);
const RUNS = 3;

const rnd = seededRandom(20240312);
const pick = <T>(items: readonly T[]): T => items[Math.floor(rnd() * items.length)]!;

const MODALITIES = ['CT', 'MR', 'CR', 'US', 'MG', 'PT', 'NM', 'XA'];
const BODY_PARTS = ['CHEST', 'ABDOMEN', 'HEAD', 'PELVIS', 'BREAST', 'SPINE', 'KNEE', 'NECK'];
const RADIOLOGISTS = Array.from({ length: 40 }, (_, i) => `rad-${i}`);
const SERVICES = ['ED', 'ONC', 'SURG', 'MED', 'ORTHO', 'NEURO', 'GP'];
const CODES = [
  'R07.9',
  'R05.9',
  'M54.5',
  'R10.9',
  'S83.2',
  'R51.9',
  'R06.0',
  'C34.1',
  'C50.911',
  'D3A.010',
  'D12.6',
  'Z85.3',
  'R91.1',
  'J18.9',
  'I26.99',
  'S22.31XA',
  'K35.80',
  'D37.030',
  'C61',
  'R10.9',
  'N20.0',
];
/** Weighted towards the everyday: most studies should not be flagged, as at a real site. */
const INDICATIONS = [
  'Chest pain',
  'Cough and fever',
  'Back pain, radiculopathy',
  'Abdominal pain',
  'Trauma, fall from standing',
  'Headache',
  'Follow-up of pulmonary nodule',
  'Dyspnea',
  'Abdominal pain, no history of malignancy',
  'Knee pain after twisting injury',
  'Flank pain, hematuria',
  'Weight loss',
  'Syncope',
  'Chest pain',
  'Cough and fever',
  'Abdominal pain',
  'Shortness of breath, r/o PE',
  'Staging of newly diagnosed lung adenocarcinoma',
  'RLQ pain, evaluate for appendicitis',
  'Pre-operative assessment before hemicolectomy',
];
const FINDINGS = [
  'The central airways are patent.',
  'No consolidation, pleural effusion or pneumothorax.',
  'Heart size is normal. No pericardial effusion.',
  'The liver, spleen, pancreas and adrenal glands are unremarkable.',
  'No free fluid or free air.',
  'No suspicious pulmonary nodule.',
  'Degenerative changes of the lower thoracic spine without acute fracture.',
  'The appendix is normal in caliber without periappendiceal stranding.',
  'Pulmonary arteries are well opacified without filling defect.',
  'No intracranial hemorrhage, mass effect or midline shift.',
  'Mild bibasilar atelectasis.',
  'The kidneys enhance symmetrically. No hydronephrosis.',
  'No lymphadenopathy by size criteria.',
  'The gallbladder is unremarkable. No biliary dilatation.',
  'Visualized osseous structures demonstrate no aggressive lesion.',
  'The bowel is normal in caliber. No wall thickening.',
  'The aorta is normal in caliber.',
  'The urinary bladder is decompressed.',
  'There is a 6 mm solid nodule in the right upper lobe.',
  'Multiple hypoattenuating hepatic lesions, suspicious for metastases.',
];
const IMPRESSIONS = [
  'No acute cardiopulmonary abnormality.',
  'No acute abnormality.',
  'No acute intracranial abnormality.',
  'No acute findings in the abdomen or pelvis.',
  'Mild degenerative changes.',
  'No pulmonary embolism.',
  'No evidence of metastatic disease.',
  'Right upper lobe nodule; follow-up CT in 6 to 12 months per Fleischner guidelines.',
  'Hepatic lesions concerning for metastatic disease. Tissue sampling recommended.',
  'BI-RADS 4A: suspicious abnormality, biopsy recommended.',
];

function reportText(): string {
  const parts = ['CLINICAL HISTORY: ' + pick(INDICATIONS) + '.', 'TECHNIQUE: Axial images were obtained with intravenous contrast.', 'FINDINGS:'];
  const n = 6 + Math.floor(rnd() * 6);
  for (let i = 0; i < n; i++) parts.push(rnd() < 0.9 ? pick(FINDINGS.slice(0, 18)) : pick(FINDINGS));
  parts.push('IMPRESSION:');
  parts.push(`1. ${rnd() < 0.8 ? pick(IMPRESSIONS.slice(0, 5)) : pick(IMPRESSIONS)}`);
  if (rnd() < 0.3) parts.push(`2. ${pick(IMPRESSIONS)}`);
  return parts.join('\n');
}

function generateStudies(count: number): EvaluationInput[] {
  const start = Date.UTC(2024, 0, 1);
  const out: EvaluationInput[] = [];
  for (let i = 0; i < count; i++) {
    const at = new Date(start + Math.floor((i / count) * 365 * 86_400_000));
    const reports: ReportVersion[] = [{ status: 'F', text: reportText(), radiologistId: pick(RADIOLOGISTS), observedAt: at }];
    if (rnd() < 0.03) reports.push({ status: 'C', text: reportText(), radiologistId: reports[0]!.radiologistId!, observedAt: at });
    const diagnoses = rnd() < 0.5 ? [{ code: pick(CODES), source: 'DG1' as const }] : [];
    out.push({
      study: {
        studyInstanceUid: `1.2.826.0.1.3680043.10.543.${i}.${Math.floor(rnd() * 1e9)}`,
        accessionNumber: `A${i}`,
        modalities: [pick(MODALITIES)],
        bodyParts: [pick(BODY_PARTS)],
        studyDescription: 'CT CHEST ABDOMEN PELVIS WITH CONTRAST',
        patientAgeYears: Math.floor(rnd() * 95),
        callingAe: rnd() < 0.5 ? 'PACS1' : 'PACS2',
      },
      order: {
        procedureCode: `PROC${Math.floor(rnd() * 50)}`,
        procedureText: 'CT chest abdomen pelvis with contrast',
        reasonForStudy: rnd() < 0.3 ? { text: pick(INDICATIONS) } : undefined,
        diagnoses,
        priority: rnd() < 0.1 ? 'S' : 'R',
        referringService: pick(SERVICES),
        indication: pick(INDICATIONS),
        secondOpinionRequested: rnd() < 0.005,
      },
      reports,
      aiResults:
        rnd() < 0.1
          ? [{ findingText: pick(['Pulmonary nodule', 'Pulmonary embolism', 'Intracranial hemorrhage', 'Rib fracture']), positive: rnd() < 0.5 }]
          : [],
      manualRequests: [],
      now: at,
    });
  }
  return out;
}

/** 50 extra rules across every kind, with conditions and list variations, as a busy site might have. */
function generatedRules(): unknown[] {
  const extraWords = ['sarcoma', 'myeloma', 'melanoma', 'neoplasm', 'tumor*', 'tumour*', 'leukemia', 'glioma', 'mesothelioma', 'seminoma'];
  const rules: unknown[] = [];
  for (let i = 0; i < 50; i++) {
    const when = { all: [{ modality: [pick(MODALITIES), pick(MODALITIES)] }, { not: { primaryRadiologist: [pick(RADIOLOGISTS)] } }], ageYears: { min: 18 } };
    const common = { id: `gen-${i}`, priority: pick(['stat', 'urgent', 'routine'] as const), when };
    switch (i % 5) {
      case 0:
        rules.push({ ...common, kind: 'oncology', extraKeywords: [pick(extraWords), pick(extraWords)], keywordSources: ['indication', 'report'] });
        break;
      case 1:
        rules.push({ ...common, kind: 'discordance', extraAiFindings: [{ id: `finding-${i}`, synonyms: [`${pick(extraWords)}`, 'rib fracture*'] }] });
        break;
      case 2:
        rules.push({ ...common, kind: 'high-stakes', procedureCodes: [`PROC${i}`], extraKeywords: ['radiotherapy planning'] });
        break;
      case 3: {
        const period = pick(['week', 'month', 'quarter'] as const);
        rules.push({ ...common, kind: 'sampling', rate: 0.02, period, minimum: period === 'quarter' ? 1 : 0, maximum: 20 });
        break;
      }
      default:
        rules.push({ ...common, kind: 'manual', when: { referringService: [pick(SERVICES)] } });
    }
  }
  return rules;
}

function main(): void {
  const shipped = parse(readFileSync(new URL('../config/rules.yaml', import.meta.url), 'utf8')) as { rules: unknown[] };
  const validated = validateRuleSet([...shipped.rules, ...generatedRules()]);
  if (!validated.ok) throw new Error(JSON.stringify(validated.errors, null, 2));
  const t0 = performance.now();
  const compiled = compileRuleSet(validated.rules, { samplingSecret: 'bench-secret' });
  const compileMs = performance.now() - t0;
  const studies = generateStudies(STUDIES);
  console.log(
    `rules: ${validated.rules.length} (${compiled.lexicon.phrases.length} phrases), compiled in ${compileMs.toFixed(1)} ms; studies: ${studies.length}`,
  );
  // Most of the peak RSS is the generated workload itself, held in memory so generation is not timed.
  console.log(`RSS with the workload generated, before evaluating: ${(process.memoryUsage().rss / 1048576).toFixed(0)} MB`);

  for (let run = 1; run <= RUNS; run++) {
    const state = new Map<string, BucketCounters>();
    let flagged = 0;
    let reasons = 0;
    const byKind = new Map<string, number>();
    const start = performance.now();
    const cpuStart = process.cpuUsage();
    for (const input of studies) {
      input.samplingState = state;
      const d = evaluate(compiled, input);
      if (d.flagged) flagged++;
      reasons += d.reasons.length;
      for (const r of d.reasons) byKind.set(r.kind, (byKind.get(r.kind) ?? 0) + 1);
      for (const slot of d.samplingSlots) {
        const c = state.get(slot.bucketKey);
        if (c) {
          c.seen++;
          if (slot.selected) c.selected++;
        } else state.set(slot.bucketKey, { seen: 1, selected: slot.selected ? 1 : 0 });
      }
    }
    const seconds = (performance.now() - start) / 1000;
    const cpu = process.cpuUsage(cpuStart);
    // CPU time as well as wall time: on a shared machine the wall clock also measures the neighbours.
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    const maxRssMb = process.resourceUsage().maxRSS / 1024;
    if (run === 1) console.log(`reasons by kind: ${[...byKind].map(([k, n]) => `${k} ${n}`).join(', ')}`);
    if (run === 1) console.log(`average report: ${Math.round(studies.reduce((n, s) => n + s.reports[0]!.text.length, 0) / studies.length)} characters`);
    console.log(
      `run ${run}: ${Math.round(studies.length / seconds).toLocaleString('en-US')} studies/s wall (${seconds.toFixed(2)} s), ` +
        `${Math.round(studies.length / cpuSeconds).toLocaleString('en-US')} studies per CPU-second, ` +
        `flagged ${((flagged / studies.length) * 100).toFixed(1)}%, ${reasons} reasons, peak RSS ${maxRssMb.toFixed(0)} MB`,
    );
  }
}

main();
