/**
 * Polls until `check` returns a value (not undefined/false) or the deadline
 * passes: for effects that follow an acknowledgement asynchronously (the rules
 * run after the HL7 commit), where no event is exposed to await.
 */
export async function eventually<T>(check: () => Promise<T | undefined | false> | T | undefined | false, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
