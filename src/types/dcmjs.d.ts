// dcmjs ships no typings: only what this project calls is declared here.
declare module 'dcmjs' {
  export interface DicomElement {
    vr: string;
    Value?: unknown[];
  }
  export type DicomDataDict = Record<string, DicomElement>;

  export interface ReadOptions {
    ignoreErrors?: boolean;
    untilTag?: string | null;
    includeUntilTagValue?: boolean;
    noCopy?: boolean;
  }

  class DicomDict {
    constructor(meta: DicomDataDict);
    meta: DicomDataDict;
    dict: DicomDataDict;
    write(options?: { allowInvalidVRLength?: boolean; fragmentMultiframe?: boolean }): ArrayBuffer;
  }

  class DicomMessage {
    static readFile(buffer: ArrayBuffer, options?: ReadOptions): DicomDict;
  }

  class DicomMetaDictionary {
    static denaturalizeDataset(dataset: Record<string, unknown>): DicomDataDict;
    static naturalizeDataset(dict: DicomDataDict): Record<string, unknown>;
  }

  interface Log {
    setLevel(level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'silent'): void;
    getLogger(name: string): Log;
  }

  export const data: {
    DicomDict: typeof DicomDict;
    DicomMessage: typeof DicomMessage;
    DicomMetaDictionary: typeof DicomMetaDictionary;
  };
  export const log: Log;

  const dcmjs: { data: typeof data; log: Log };
  export default dcmjs;
}
