// Run-time warnings for the names kept for one release, as Node warns for its own: a
// DeprecationWarning, once per name and process, silenced by `node --no-deprecation`.

const warned = new Set<string>();

/** Emits the DeprecationWarning `code` (once per process) saying what replaces the old name. */
export function warnDeprecated(code: string, message: string): void {
  if (warned.has(code)) {
    return;
  }
  warned.add(code);
  process.emitWarning(message, { type: "DeprecationWarning", code });
}
