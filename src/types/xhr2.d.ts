// xhr2 ships no typings: only what the DICOMweb sender uses (it is handed to dicomweb-client as the request instance).
declare module 'xhr2' {
  class XMLHttpRequest {
    constructor();
    readonly readyState: number;
    readonly status: number;
    readonly statusText: string;
    readonly response: unknown;
    responseType: string;
    /** Milliseconds of socket inactivity before the request fails (Node's request.setTimeout, not a total deadline). */
    timeout: number;
    ontimeout: ((event: unknown) => void) | null;
    onerror: ((event: unknown) => void) | null;
    open(method: string, url: string, async?: boolean): void;
    setRequestHeader(name: string, value: string): void;
    getResponseHeader(name: string): string | null;
    send(body?: unknown): void;
    abort(): void;
  }
  export default XMLHttpRequest;
}
