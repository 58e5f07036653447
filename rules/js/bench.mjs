// Runs rules.js in Node's `vm` module with a fresh context per evaluation and prints
// latency percentiles, throughput and the first and last login's verdicts as JSON
// (the bench checks them against the recording). Input (stdin): {ctx, answers, config,
// iterations}. Used by `cargo bench -p portcullis --bench compare`.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import vm from "node:vm";

const input = JSON.parse(readFileSync(0, "utf8"));
const source = readFileSync(fileURLToPath(new URL("./rules.js", import.meta.url)), "utf8");
const script = new vm.Script(`${source}\nresult = evaluate(ctx, host);`);

const answers = input.answers;
const host = {
  config: (rule, key) => (input.config[rule] || {})[key],
  log: () => {},
  verifyDirectoryPassword: (id) => answers["directory.verify-password"][id],
  findLegacyAccounts: (email) => answers["legacy.find-accounts"][email] || [],
  verifyLegacyPassword: (product, id) => answers["legacy.verify-password"][`${product} ${id}`],
};

function once() {
  // What a hosted engine does per login: a new context, the login copied in.
  const context = vm.createContext({ ctx: JSON.parse(JSON.stringify(input.ctx)), host, result: null });
  script.runInContext(context);
  return context.result;
}

const first = once();
for (let i = 0; i < Math.max(20, input.iterations / 10); i++) once();
const samples = [];
const started = process.hrtime.bigint();
for (let i = 0; i < input.iterations; i++) {
  const t0 = process.hrtime.bigint();
  once();
  samples.push(Number(process.hrtime.bigint() - t0) / 1000);
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
// The host checks the first and the last login's verdicts against the recording.
const last = once();
samples.sort((a, b) => a - b);
const at = (q) => samples[Math.round((samples.length - 1) * q)];
console.log(
  JSON.stringify({
    verdicts: { first, last },
    p50_us: at(0.5),
    p99_us: at(0.99),
    mean_us: samples.reduce((a, b) => a + b, 0) / samples.length,
    evaluations_per_second_one_thread: input.iterations / seconds,
  }),
);
