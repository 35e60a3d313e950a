import { parseArgs } from 'node:util';
import { generateStudy } from './lib/study-generator.js';

const usage = 'usage: npx tsx scripts/generate-study.ts --out DIR [--instances 200] [--modality CT|MR] [--series 2] [--rows 512] [--columns 512] [--bits 16]';

function main(): number {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        out: { type: 'string' },
        instances: { type: 'string', default: '200' },
        modality: { type: 'string', default: 'CT' },
        series: { type: 'string', default: '2' },
        rows: { type: 'string', default: '512' },
        columns: { type: 'string', default: '512' },
        bits: { type: 'string', default: '16' },
        help: { type: 'boolean', default: false },
      },
    }));
  } catch (err) {
    console.error(`${(err as Error).message}\n${usage}`);
    return 2;
  }
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const num = (v: string, name: string, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}`);
    return n;
  };
  try {
    if (!values.out) throw new Error('--out is required');
    const modality = values.modality.toUpperCase();
    if (modality !== 'CT' && modality !== 'MR') throw new Error('--modality must be CT or MR');
    const bits = num(values.bits, 'bits', 8);
    if (bits !== 8 && bits !== 16) throw new Error('--bits must be 8 or 16');
    const started = Date.now();
    const study = generateStudy(values.out, {
      instances: num(values.instances, 'instances', 1),
      series: num(values.series, 'series', 1),
      modality,
      rows: num(values.rows, 'rows', 1),
      columns: num(values.columns, 'columns', 1),
      bitsAllocated: bits,
    });
    const bytes = study.instances.reduce((s, i) => s + i.sizeBytes, 0);
    console.log(
      `wrote ${study.instances.length} ${study.modality} instances in ${study.seriesInstanceUids.length} series (${(bytes / 1e6).toFixed(1)} MB) to ${values.out} in ${Date.now() - started} ms`,
    );
    console.log(`StudyInstanceUID ${study.studyInstanceUid}  AccessionNumber ${study.accessionNumber}  PatientID ${study.patientId}`);
    return 0;
  } catch (err) {
    console.error(`${(err as Error).message}\n${usage}`);
    return 2;
  }
}

process.exitCode = main();
