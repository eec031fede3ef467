#!/usr/bin/env node
// Offline validation of the Grafana dashboards in deploy/grafana/ (run by validate-deploy.sh):
//
//  1. Grafana's own schema, strictly: the dashboard is type-checked as a TypeScript object literal
//     against `Dashboard` from @grafana/schema (pinned in deploy/tools/, the types Grafana 11
//     generates from its CUE schema), and each panel's `options` and `fieldConfig.defaults.custom`
//     against its plugin's `Options` and `FieldConfig`. Excess-property checks reject unknown or
//     misspelt fields at any depth; enums are compared by their JSON values.
//  2. What an import needs: a schemaVersion of Grafana 10.4 to 12, a uid, the `datasource` variable
//     (type datasource, prometheus) used by every panel and query, the namespace, model and version
//     variables, unique panel ids, a grid that fits 24 columns without overlaps, a title, a
//     description and at least one query per panel, and no undefined variable in a query.
//  3. Consistency with the manifests: the `hpa_target` constant equals deploy/base/hpa.yaml's
//     averageValue for sluice_inflight_requests, and so does the threshold of the
//     SluiceInflightAboveHPATarget alert (deploy/monitoring).
//
// The queries themselves are evaluated against a real Prometheus by make test-prometheus.
// Usage: node scripts/validate-dashboard.mjs DASHBOARD.json...
// Tools come from SLUICE_TOOLS_DIR (default: <repo>/.tools), installed by validate-deploy.sh.

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const toolsDir = path.resolve(process.env.SLUICE_TOOLS_DIR ?? path.join(repoRoot, ".tools"));
const modulesDir = path.join(toolsDir, "node_modules");
const require = createRequire(path.join(toolsDir, "package.json"));

// Panel plugin -> the module of @grafana/schema holding its Options (and FieldConfig, if it has one).
const PLUGINS = {
  timeseries: { module: "timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen.js", fieldConfig: true },
  heatmap: { module: "heatmap/panelcfg/x/HeatmapPanelCfg_types.gen.js", fieldConfig: true },
  stat: { module: "stat/panelcfg/x/StatPanelCfg_types.gen.js", fieldConfig: false },
};
// @grafana/schema 11 ships no type for the Prometheus data source's queries. These mirror its
// dataquery schema (grafana/grafana public/app/plugins/datasource/prometheus/dataquery.cue) and the
// annotation fields its prepareAnnotation() migrates (what grafonnet and the mixins emit).
const PROMETHEUS_TYPES = `
type PromQuery = {
  refId: string; datasource?: { type?: string; uid?: string }; hide?: boolean; key?: string; queryType?: string;
  expr: string; legendFormat?: string; range?: boolean; instant?: boolean; exemplar?: boolean;
  format?: "time_series" | "table" | "heatmap"; editorMode?: "code" | "builder"; interval?: string;
  intervalFactor?: number; scope?: unknown;
};
type PromAnnotation = {
  expr?: string; step?: string; titleFormat?: string; textFormat?: string; tagKeys?: string; useValueForTime?: boolean;
  target?: PromQuery;
};
type CheckedDashboard = Json<Omit<Dashboard, "annotations">> & {
  annotations?: { list?: Array<Json<Omit<AnnotationQuery, "target">> & PromAnnotation> };
};`;
// schemaVersion 39 is Grafana 10.4 and 11.0; later versions migrate it on import.
const SCHEMA_VERSIONS = [39, 41];
const BUILTIN_VARIABLES = new Set(["__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms"]);

let failures = 0;
const fail = (msg) => {
  failures += 1;
  console.log(`FAIL  ${msg}`);
};

function rel(file) {
  return path.relative(repoRoot, file);
}

// ---- 1. Grafana's schema through TypeScript ------------------------------------------------------

function typeCheck(file, dash) {
  const lines = [
    'import type { AnnotationQuery, Dashboard } from "@grafana/schema";',
    ...Object.values(PLUGINS).map(
      ({ module, fieldConfig }, i) =>
        `import type { Options as O${i}${fieldConfig ? `, FieldConfig as F${i}` : ""} } from "@grafana/schema/dist/esm/raw/composable/${module}";`,
    ),
    "// String enums of the schema compared by their JSON values; everything else as declared.",
    "type Json<T> = T extends string ? `${T}` : T extends number | boolean | null | undefined ? T",
    "  : T extends ReadonlyArray<infer U> ? Array<Json<U>> : T extends object ? { [K in keyof T]: Json<T[K]> } : T;",
    ...PROMETHEUS_TYPES.trim().split("\n"),
  ];
  const where = []; // [firstLine, lastLine, description]
  const add = (type, value, description) => {
    const body = `export const v${where.length}: Json<${type}> = ${JSON.stringify(value, null, 2)};`.split("\n");
    where.push([lines.length + 1, lines.length + body.length, description]);
    lines.push(...body);
  };
  add("CheckedDashboard", dash, "dashboard");
  const pluginIndex = Object.fromEntries(Object.keys(PLUGINS).map((p, i) => [p, i]));
  for (const panel of dash.panels ?? []) {
    if (panel.type === "row") continue;
    const i = pluginIndex[panel.type];
    const name = `panel ${panel.id} "${panel.title}"`;
    if (i === undefined) {
      fail(`${rel(file)}: ${name}: panel type ${panel.type} is not checked (add it to PLUGINS)`);
      continue;
    }
    add(`O${i}`, panel.options ?? {}, `${name} options`);
    if (panel.fieldConfig?.defaults?.custom) {
      if (Object.values(PLUGINS)[i].fieldConfig) add(`F${i}`, panel.fieldConfig.defaults.custom, `${name} fieldConfig.defaults.custom`);
      else fail(`${rel(file)}: ${name}: ${panel.type} panels have no fieldConfig.defaults.custom`);
    }
    for (const t of panel.targets ?? []) add("PromQuery", t, `${name} query ${t.refId}`);
  }
  const workDir = path.join(toolsDir, ".dashboard-check");
  rmSync(workDir, { recursive: true, force: true });
  mkdirSync(workDir, { recursive: true });
  writeFileSync(path.join(workDir, "check.mts"), `${lines.join("\n")}\n`);
  writeFileSync(
    path.join(workDir, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        noEmit: true,
        skipLibCheck: true,
        module: "nodenext",
        moduleResolution: "nodenext",
        target: "es2022",
        types: [],
      },
      files: ["check.mts"],
    }),
  );
  const tsc = path.join(modulesDir, "typescript", "bin", "tsc");
  const run = spawnSync(process.execPath, [tsc, "-p", path.join(workDir, "tsconfig.json"), "--pretty", "false"], {
    encoding: "utf8",
  });
  const out = `${run.stdout ?? ""}${run.stderr ?? ""}`;
  let attributed = 0;
  for (const line of out.split("\n")) {
    const m = /check\.mts\((\d+),(\d+)\): error (TS\d+): (.*)$/.exec(line);
    if (!m) continue;
    const lineNo = Number(m[1]);
    const hit = where.find(([a, b]) => lineNo >= a && lineNo <= b);
    attributed += 1;
    fail(`${rel(file)}: ${hit ? hit[2] : "check.mts"}: ${m[4]}  (at: ${lines[lineNo - 1].trim()})`);
  }
  if (run.status !== 0 && attributed === 0) fail(`${rel(file)}: TypeScript check could not run (exit ${run.status}): ${out.trim() || run.error}`);
  if (failures === 0) rmSync(workDir, { recursive: true, force: true });
  return where.length;
}

// ---- 2. what an import needs ----------------------------------------------------------------------

function structure(file, dash) {
  const f = (msg) => fail(`${rel(file)}: ${msg}`);
  if (!SCHEMA_VERSIONS.includes(dash.schemaVersion) && !(dash.schemaVersion > SCHEMA_VERSIONS[0] && dash.schemaVersion < SCHEMA_VERSIONS[1]))
    f(`schemaVersion ${dash.schemaVersion} is not one of Grafana 10.4 to 12 (${SCHEMA_VERSIONS.join("..")})`);
  if (!dash.uid || !dash.title) f("uid and title are required for a stable import");
  if (dash.id !== null && dash.id !== undefined) f("id must be null: Grafana assigns it on import");

  const vars = new Map((dash.templating?.list ?? []).map((v) => [v.name, v]));
  const ds = vars.get("datasource");
  if (!ds || ds.type !== "datasource" || ds.query !== "prometheus") f("needs a `datasource` variable of type datasource with query prometheus");
  for (const name of ["namespace", "model", "version"]) {
    const v = vars.get(name);
    if (!v || v.type !== "query") f(`needs a query variable \`${name}\``);
    else if (v.datasource?.uid !== "${datasource}") f(`variable ${name}: datasource must be \${datasource}`);
  }
  const known = (name) => vars.has(name) || BUILTIN_VARIABLES.has(name);
  const checkVariables = (where, text) => {
    for (const m of text.matchAll(/\$\{?(\w+)/g)) if (!known(m[1])) f(`${where}: undefined variable $${m[1]}`);
  };
  for (const v of vars.values()) {
    const query = typeof v.query === "string" ? v.query : v.query?.query;
    if (v.type === "query" && typeof query === "string") checkVariables(`variable ${v.name}`, query);
  }
  for (const a of dash.annotations?.list ?? []) {
    if (a.builtIn) continue;
    if (a.datasource?.uid !== "${datasource}") f(`annotation ${a.name}: datasource must be \${datasource}`);
    if (typeof a.expr === "string") checkVariables(`annotation ${a.name}`, a.expr);
  }

  const ids = new Set();
  const cells = new Map(); // "x,y" -> panel id
  let queries = 0;
  for (const p of dash.panels ?? []) {
    const name = `panel ${p.id} "${p.title}"`;
    if (ids.has(p.id)) f(`${name}: duplicate panel id`);
    ids.add(p.id);
    const g = p.gridPos ?? {};
    if (!(g.w > 0 && g.h > 0 && g.x >= 0 && g.y >= 0 && g.x + g.w <= 24)) f(`${name}: gridPos ${JSON.stringify(g)} outside 24 columns`);
    for (let x = g.x; x < g.x + g.w; x++)
      for (let y = g.y; y < g.y + g.h; y++) {
        const other = cells.get(`${x},${y}`);
        if (other !== undefined) {
          f(`${name}: overlaps panel ${other}`);
          y = Infinity;
          x = Infinity;
        } else cells.set(`${x},${y}`, p.id);
      }
    if (p.type === "row") {
      if (p.collapsed || (p.panels ?? []).length > 0) f(`${name}: keep rows expanded, with their panels at the top level`);
      continue;
    }
    if (!p.title || !p.description) f(`${name}: needs a title and a description (docs/observability.md describes each panel)`);
    if (p.datasource?.uid !== "${datasource}") f(`${name}: datasource must be \${datasource}`);
    const targets = p.targets ?? [];
    if (targets.length === 0) f(`${name}: no query`);
    const refs = new Set();
    for (const t of targets) {
      queries += 1;
      if (refs.has(t.refId)) f(`${name}: duplicate refId ${t.refId}`);
      refs.add(t.refId);
      if (t.datasource?.uid !== "${datasource}") f(`${name} ${t.refId}: datasource must be \${datasource}`);
      if (typeof t.expr !== "string" || t.expr.trim() === "") f(`${name} ${t.refId}: empty expr`);
      else checkVariables(`${name} ${t.refId}`, t.expr);
    }
  }
  return queries;
}

// ---- 3. consistency with the manifests ------------------------------------------------------------

function consistency(file, dash) {
  const YAML = require("yaml");
  const hpa = YAML.parse(readFileSync(path.join(repoRoot, "deploy/base/hpa.yaml"), "utf8"));
  const metric = (hpa.spec.metrics ?? []).find((m) => m.pods?.metric?.name === "sluice_inflight_requests");
  const target = Number(metric?.pods?.target?.averageValue);
  if (!Number.isFinite(target)) {
    fail("deploy/base/hpa.yaml: no AverageValue target for sluice_inflight_requests");
    return;
  }
  const constant = (dash.templating?.list ?? []).find((v) => v.name === "hpa_target");
  if (!constant || constant.type !== "constant" || Number(constant.query) !== target)
    fail(`${rel(file)}: the hpa_target constant (${constant?.query}) must equal deploy/base/hpa.yaml's averageValue ${target}`);
  const rule = YAML.parse(readFileSync(path.join(repoRoot, "deploy/monitoring/prometheusrule.yaml"), "utf8"));
  const alert = rule.spec.groups.flatMap((g) => g.rules).find((r) => r.alert === "SluiceInflightAboveHPATarget");
  const threshold = Number(/>\s*([\d.]+)\s*$/.exec(String(alert?.expr ?? "").trim())?.[1]);
  if (threshold !== target)
    fail(`deploy/monitoring: SluiceInflightAboveHPATarget's threshold (${threshold}) must equal deploy/base/hpa.yaml's averageValue ${target}`);
  return target;
}

// ---------------------------------------------------------------------------------------------------

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: validate-dashboard.mjs DASHBOARD.json...");
  process.exit(2);
}
if (!existsSync(path.join(modulesDir, "@grafana", "schema"))) {
  console.error(`validate-dashboard: ${modulesDir}/@grafana/schema missing; run scripts/validate-deploy.sh`);
  process.exit(2);
}
for (const file of files) {
  let dash;
  try {
    dash = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    fail(`${rel(file)}: not JSON: ${err.message}`);
    continue;
  }
  const before = failures;
  const queries = structure(file, dash);
  const target = consistency(file, dash);
  const checked = typeCheck(file, dash);
  if (failures === before)
    console.log(
      `ok    ${rel(file)}: Grafana schema ${dash.schemaVersion} (@grafana/schema, strict: dashboard, ${checked - 1} panel option sets and queries), ` +
        `${(dash.panels ?? []).length} panels, ${queries} queries, HPA target ${target} as in hpa.yaml and the alert`,
    );
}
process.exit(failures > 0 ? 1 : 0);
