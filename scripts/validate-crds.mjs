#!/usr/bin/env node
// Offline validation of rendered Kubernetes manifests, complementing kubernetes-validate:
//
//  1. Custom resources (ServiceMonitor, ScaledObject, HTTPRoute, GRPCRoute, AnalysisTemplate, ...)
//     against the JSON schemas shipped in the @kubernetes-models/* npm packages (`.validate()`:
//     types, required fields, enums, patterns, formats).
//  2. The same custom resources *strictly*: the schemas accept unknown fields, so every object is
//     also type-checked as a TypeScript object literal against the package's interface
//     (excess-property checks reject typos such as `podTargetLabel:` at any depth).
//  3. Cross-references inside each rendered file (built-in and custom kinds): Service, PDB,
//     NetworkPolicy and ServiceMonitor selectors match pods/Services; named ports exist; HPA,
//     ScaledObject and route targets exist; no workload has two autoscalers or is scraped twice;
//     terminationGracePeriodSeconds covers preStop + SLUICE_SHUTDOWN_DELAY_SECS +
//     SLUICE_SHUTDOWN_GRACE_SECS.
//  4. PromQL embedded in AnalysisTemplates, ScaledObjects, PrometheusRules and prometheus-adapter
//     ConfigMaps parses (@prometheus-io/lezer-promql, the grammar of Prometheus' own UI), every
//     sluice_* metric it names is one the server exports (the constants in src/metrics.rs), and
//     every recorded name (level:sluice_x:operations) is recorded by a PrometheusRule.
//
// Built-in kinds are only cross-checked here; their schemas are kubernetes-validate's job.
// Usage: node scripts/validate-crds.mjs RENDERED.yaml...   (run by scripts/validate-deploy.sh)
// Tools come from SLUICE_TOOLS_DIR (default: <repo>/.tools), installed by validate-deploy.sh.

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const toolsDir = path.resolve(process.env.SLUICE_TOOLS_DIR ?? path.join(repoRoot, ".tools"));
const modulesDir = path.join(toolsDir, "node_modules");
const require = createRequire(path.join(toolsDir, "package.json"));

// API group -> npm package holding its models and schemas.
const CRD_PACKAGES = {
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
  "keda.sh": "@kubernetes-models/keda",
  "gateway.networking.k8s.io": "@kubernetes-models/gateway-api",
  "argoproj.io": "@kubernetes-models/argo-rollouts",
};

const WORKLOAD_KINDS = new Set(["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"]);

// Metric families exported by the server, read from the constants in src/metrics.rs (the one
// place names are defined). A query naming anything else would silently return nothing, so it is an
// error here. Histograms (built with `histogram(NAME, ...)`) also export _bucket, _sum and _count.
function sluiceMetrics() {
  // Every file that names a metric family as a constant (the edge families
  // live in src/net/metrics.rs, the trace export counters in src/telemetry/).
  const src = ["src/metrics.rs", "src/net/metrics.rs", "src/telemetry/export.rs"]
    .map((f) => readFileSync(path.join(repoRoot, f), "utf8"))
    .join("\n");
  const consts = new Map();
  for (const m of src.matchAll(/pub(?:\(crate\))? const ([A-Z0-9_]+): &str = "(sluice_[a-z0-9_]+)";/g)) consts.set(m[1], m[2]);
  const names = new Set(consts.values());
  // Families created inline (the trace export counters).
  for (const m of src.matchAll(/IntCounter::new\(\s*"(sluice_[a-z0-9_]+)"/g)) names.add(m[1]);
  for (const m of src.matchAll(/\bhistogram\(\s*([A-Z0-9_]+)\s*,/g)) {
    const h = consts.get(m[1]);
    if (h) for (const suffix of ["_bucket", "_sum", "_count"]) names.add(h + suffix);
  }
  if (!names.has("sluice_inflight_requests") || !names.has("sluice_request_duration_seconds_bucket")) {
    console.error("validate-crds: could not read the metric names from src/metrics.rs");
    process.exit(2);
  }
  return names;
}
const SLUICE_METRICS = sluiceMetrics();
// Names that rules may use before the server exports them, each with the work that adds it. The
// live check in scripts/test-prometheus.sh allows exactly these too (docs/observability.md).
const FUTURE_METRICS = new Map();
// Series recorded by the PrometheusRules among the rendered files (level:metric:operations names).
const RECORDED = new Set();

let failures = 0;
const fail = (msg) => {
  failures += 1;
  console.log(`FAIL  ${msg}`);
};

function groupOf(apiVersion) {
  return apiVersion.includes("/") ? apiVersion.split("/")[0] : "";
}

function describe(obj) {
  return `${obj.kind}/${obj.metadata?.name ?? "<unnamed>"}`;
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

function loadDocuments(file) {
  const YAML = require("yaml");
  const docs = YAML.parseAllDocuments(readFileSync(file, "utf8"), { uniqueKeys: true });
  const objects = [];
  for (const doc of docs) {
    if (doc.errors.length > 0) {
      for (const err of doc.errors) fail(`${file}: YAML: ${err.message}`);
      continue;
    }
    const obj = doc.toJS({ maxAliasCount: 0 });
    if (obj === null || obj === undefined) continue;
    if (typeof obj !== "object" || typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") {
      fail(`${file}: document without apiVersion/kind`);
      continue;
    }
    objects.push(obj);
  }
  return objects;
}

function modelPath(pkg, apiVersion, kind) {
  return path.join(modulesDir, ...pkg.split("/"), ...apiVersion.split("/"), kind);
}

// ---------------------------------------------------------------------------------------------
// 1. Schema validation with the @kubernetes-models classes
// ---------------------------------------------------------------------------------------------

async function validateSchema(file, obj) {
  const pkg = CRD_PACKAGES[groupOf(obj.apiVersion)];
  const base = modelPath(pkg, obj.apiVersion, obj.kind);
  if (!existsSync(`${base}.js`)) {
    fail(`${file}: ${describe(obj)}: ${pkg} has no model for ${obj.apiVersion} ${obj.kind}`);
    return false;
  }
  const mod = await import(pathToFileURL(`${base}.js`).href);
  const Model = mod[obj.kind];
  try {
    new Model(obj).validate();
    return true;
  } catch (err) {
    fail(`${file}: ${describe(obj)} (${obj.apiVersion}): ${err.message}`);
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Strict (unknown-field) check through TypeScript excess-property checking
// ---------------------------------------------------------------------------------------------

function strictCheck(entries) {
  if (entries.length === 0) return new Map();
  const workDir = path.join(toolsDir, ".crd-strict-check");
  rmSync(workDir, { recursive: true, force: true });
  mkdirSync(workDir, { recursive: true });
  const lines = [];
  const ranges = []; // [firstLine, lastLine, entryIndex], 1-based lines
  entries.forEach((entry, i) => {
    const { obj } = entry;
    const pkg = CRD_PACKAGES[groupOf(obj.apiVersion)];
    lines.push(`import type { I${obj.kind} as T${i} } from "${pkg}/${obj.apiVersion}/${obj.kind}";`);
  });
  entries.forEach((entry, i) => {
    const body = `export const o${i}: T${i} = ${JSON.stringify(entry.obj, null, 2)};`.split("\n");
    ranges.push([lines.length + 1, lines.length + body.length, i]);
    lines.push(...body);
  });
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
  const errors = new Map(); // entry index -> [messages]
  const out = `${run.stdout ?? ""}${run.stderr ?? ""}`;
  const unattributed = [];
  for (const line of out.split("\n")) {
    const m = /check\.mts\((\d+),(\d+)\): error (TS\d+): (.*)$/.exec(line);
    if (!m) {
      if (line.trim() !== "") unattributed.push(line.trim());
      continue;
    }
    const lineNo = Number(m[1]);
    const hit = ranges.find(([a, b]) => lineNo >= a && lineNo <= b);
    if (!hit) {
      unattributed.push(line.trim());
      continue;
    }
    // Point at the JSON line the error is on, which names the offending key.
    const src = lines[lineNo - 1].trim();
    const list = errors.get(hit[2]) ?? [];
    list.push(`${m[4]}  (at: ${src})`);
    errors.set(hit[2], list);
  }
  if (run.status !== 0 && errors.size === 0) {
    fail(`TypeScript strict check could not run (exit ${run.status}): ${unattributed.join(" | ") || run.error}`);
  } else if (unattributed.length > 0 && errors.size === 0) {
    console.log(`note  tsc: ${unattributed.join(" | ")}`);
  }
  if (errors.size === 0) rmSync(workDir, { recursive: true, force: true });
  return errors;
}

// ---------------------------------------------------------------------------------------------
// 3. Cross-references within one rendered file
// ---------------------------------------------------------------------------------------------

function matchesSelector(selector, labels = {}) {
  if (!selector) return false;
  const ml = selector.matchLabels ?? {};
  for (const [k, v] of Object.entries(ml)) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    if (e.operator === "In" && !(has && e.values.includes(labels[e.key]))) return false;
    if (e.operator === "NotIn" && has && e.values.includes(labels[e.key])) return false;
    if (e.operator === "Exists" && !has) return false;
    if (e.operator === "DoesNotExist" && has) return false;
  }
  return Object.keys(ml).length + (selector.matchExpressions ?? []).length > 0;
}

const ns = (obj) => obj.metadata?.namespace ?? "";

function crossCheck(file, objects) {
  let checks = 0;
  const check = (ok, msg) => {
    checks += 1;
    if (!ok) fail(`${file}: ${msg}`);
  };
  const find = (kind, name, namespace) =>
    objects.find((o) => o.kind === kind && o.metadata?.name === name && ns(o) === namespace);
  const workloads = objects.filter((o) => WORKLOAD_KINDS.has(o.kind));
  const podLabels = (w) => w.spec?.template?.metadata?.labels ?? {};
  const containers = (w) => [...(w.spec?.template?.spec?.containers ?? [])];
  const portNames = (w) => new Set(containers(w).flatMap((c) => (c.ports ?? []).map((p) => p.name)));
  const services = objects.filter((o) => o.kind === "Service");
  const serviceSelects = (svc, w) =>
    ns(svc) === ns(w) && svc.spec?.selector && matchesSelector({ matchLabels: svc.spec.selector }, podLabels(w));

  for (const w of workloads) {
    const spec = w.spec.template.spec ?? {};
    check(matchesSelector(w.spec.selector, podLabels(w)), `${describe(w)}: spec.selector does not match its pod template labels`);
    const sa = spec.serviceAccountName;
    if (sa && sa !== "default") check(find("ServiceAccount", sa, ns(w)), `${describe(w)}: ServiceAccount ${sa} not rendered`);
    for (const c of [...(spec.initContainers ?? []), ...(spec.containers ?? [])]) {
      for (const ref of c.envFrom ?? []) {
        if (ref.configMapRef && !ref.configMapRef.optional)
          check(find("ConfigMap", ref.configMapRef.name, ns(w)), `${describe(w)}: container ${c.name}: ConfigMap ${ref.configMapRef.name} not rendered`);
      }
      const names = new Set((c.ports ?? []).map((p) => p.name));
      for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        const port = c[probe]?.httpGet?.port ?? c[probe]?.tcpSocket?.port ?? c[probe]?.grpc?.port;
        if (typeof port === "string") check(names.has(port), `${describe(w)}: container ${c.name}: ${probe} uses unknown port name ${port}`);
      }
    }
    for (const v of spec.volumes ?? []) {
      if (v.configMap && !v.configMap.optional)
        check(find("ConfigMap", v.configMap.name, ns(w)), `${describe(w)}: volume ${v.name}: ConfigMap ${v.configMap.name} not rendered`);
    }
    // Graceful shutdown budget (docs/deploy.md#graceful-shutdown).
    for (const c of spec.containers ?? []) {
      const env = {};
      for (const ref of c.envFrom ?? []) Object.assign(env, find("ConfigMap", ref.configMapRef?.name, ns(w))?.data ?? {});
      for (const e of c.env ?? []) if (typeof e.value === "string") env[e.name] = e.value;
      if (!Object.keys(env).some((k) => k.startsWith("SLUICE_"))) continue;
      const preStop = Number(c.lifecycle?.preStop?.sleep?.seconds ?? 0);
      const delay = Number(env.SLUICE_SHUTDOWN_DELAY_SECS ?? 5);
      const grace = Number(env.SLUICE_SHUTDOWN_GRACE_SECS ?? 30);
      const tgps = Number(spec.terminationGracePeriodSeconds ?? 30);
      check(
        tgps > preStop + delay + grace,
        `${describe(w)}: terminationGracePeriodSeconds ${tgps} <= preStop ${preStop} + delay ${delay} + grace ${grace}`,
      );
    }
  }

  for (const svc of services) {
    if (!svc.spec?.selector) continue;
    const targets = workloads.filter((w) => serviceSelects(svc, w));
    check(targets.length > 0, `${describe(svc)}: selector ${JSON.stringify(svc.spec.selector)} matches no pod template`);
    for (const p of svc.spec.ports ?? []) {
      if (typeof p.targetPort !== "string") continue;
      for (const w of targets)
        check(portNames(w).has(p.targetPort), `${describe(svc)}: targetPort ${p.targetPort} is not a container port of ${describe(w)}`);
    }
  }

  for (const pdb of objects.filter((o) => o.kind === "PodDisruptionBudget"))
    check(workloads.some((w) => ns(w) === ns(pdb) && matchesSelector(pdb.spec.selector, podLabels(w))), `${describe(pdb)}: selector matches no pod template`);

  for (const np of objects.filter((o) => o.kind === "NetworkPolicy"))
    check(workloads.some((w) => ns(w) === ns(np) && matchesSelector(np.spec.podSelector, podLabels(w))), `${describe(np)}: podSelector matches no pod template`);

  // Autoscalers: target exists, at most one autoscaler per workload.
  const scaled = new Map();
  for (const a of objects.filter((o) => o.kind === "HorizontalPodAutoscaler" || o.kind === "ScaledObject")) {
    const ref = a.spec.scaleTargetRef;
    const kind = ref.kind ?? "Deployment";
    check(find(kind, ref.name, ns(a)), `${describe(a)}: scaleTargetRef ${kind}/${ref.name} not rendered`);
    const key = `${ns(a)}/${kind}/${ref.name}`;
    check(!scaled.has(key), `${describe(a)}: ${kind}/${ref.name} is already scaled by ${scaled.get(key)}`);
    scaled.set(key, describe(a));
    const target = find(kind, ref.name, ns(a));
    if (target && target.spec?.replicas !== undefined && a.kind === "HorizontalPodAutoscaler")
      console.log(`note  ${file}: ${describe(target)} sets spec.replicas although ${describe(a)} manages it`);
  }

  // ServiceMonitors: select Services, ports exist, no pod scraped twice.
  const scrapes = new Map(); // workload -> list of "sm via svc"
  for (const sm of objects.filter((o) => o.kind === "ServiceMonitor")) {
    const nsSel = sm.spec.namespaceSelector;
    const inScope = (svc) => (nsSel?.any ? true : nsSel?.matchNames ? nsSel.matchNames.includes(ns(svc)) : ns(svc) === ns(sm));
    const selected = services.filter((svc) => inScope(svc) && matchesSelector(sm.spec.selector, svc.metadata?.labels ?? {}));
    check(selected.length > 0, `${describe(sm)}: selector matches no Service`);
    for (const svc of selected) {
      const ports = new Set((svc.spec.ports ?? []).map((p) => p.name));
      for (const ep of sm.spec.endpoints ?? [])
        if (ep.port) check(ports.has(ep.port), `${describe(sm)}: endpoint port ${ep.port} is not a port of ${describe(svc)}`);
      for (const w of workloads.filter((x) => serviceSelects(svc, x))) {
        const list = scrapes.get(describe(w)) ?? [];
        list.push(`${describe(sm)} via ${describe(svc)}`);
        scrapes.set(describe(w), list);
      }
    }
  }
  for (const [w, list] of scrapes) check(list.length === 1, `${w} is scraped ${list.length} times (${list.join(", ")}): metrics would be double-counted`);

  // Gateway API routes: backends exist and expose the port.
  for (const route of objects.filter((o) => o.kind === "HTTPRoute" || o.kind === "GRPCRoute")) {
    for (const rule of route.spec.rules ?? []) {
      for (const ref of rule.backendRefs ?? []) {
        if ((ref.kind ?? "Service") !== "Service" || (ref.group ?? "") !== "") continue;
        const svc = find("Service", ref.name, ref.namespace ?? ns(route));
        check(svc, `${describe(route)}: backendRef Service/${ref.name} not rendered`);
        if (svc) check((svc.spec.ports ?? []).some((p) => p.port === ref.port), `${describe(route)}: Service/${ref.name} has no port ${ref.port}`);
      }
    }
  }
  return checks;
}


// ---------------------------------------------------------------------------------------------
// 4. PromQL
// ---------------------------------------------------------------------------------------------

// [description, query] pairs found in one object; template placeholders are replaced by values
// of the right shape (Argo `{{args.x}}`, prometheus-adapter `<<.Series>>` etc.).
function promqlOf(obj) {
  const out = [];
  const argo = (q) => q.replace(/\{\{\s*args\.[\w-]+\s*\}\}/g, "placeholder");
  if (obj.kind === "AnalysisTemplate" || obj.kind === "ClusterAnalysisTemplate") {
    for (const m of obj.spec?.metrics ?? [])
      if (m.provider?.prometheus?.query) out.push([`metric ${m.name}`, argo(m.provider.prometheus.query)]);
  } else if (obj.kind === "ScaledObject" || obj.kind === "ScaledJob") {
    for (const t of obj.spec?.triggers ?? [])
      if (t.type === "prometheus" && t.metadata?.query) out.push([`trigger ${t.name ?? t.type}`, t.metadata.query]);
  } else if (obj.kind === "PrometheusRule") {
    for (const g of obj.spec?.groups ?? [])
      for (const r of g.rules ?? []) out.push([`rule ${r.alert ?? r.record}`, String(r.expr)]);
  } else if (obj.kind === "ConfigMap") {
    for (const [key, text] of Object.entries(obj.data ?? {})) {
      if (!/\.ya?ml$/.test(key) || !/^(rules|externalRules|resourceRules):/m.test(text)) continue;
      const cfg = require("yaml").parse(text) ?? {};
      const adapter = (q, series) =>
        q
          .replaceAll("<<.Series>>", series)
          .replaceAll("<<.LabelMatchers>>", 'namespace="placeholder",pod=~"a|b"')
          .replaceAll("<<.GroupBy>>", "pod");
      for (const section of ["rules", "externalRules"]) {
        for (const [i, r] of (cfg[section] ?? []).entries()) {
          out.push([`${key} ${section}[${i}].seriesQuery`, r.seriesQuery]);
          const series = /^\s*([a-zA-Z_:][\w:]*)/.exec(r.seriesQuery ?? "")?.[1] ?? "up";
          if (r.metricsQuery) out.push([`${key} ${section}[${i}].metricsQuery`, adapter(r.metricsQuery, series)]);
        }
      }
    }
  }
  return out;
}

function checkPromql(file, obj) {
  const { parser } = require("@prometheus-io/lezer-promql");
  const queries = promqlOf(obj);
  let ok = true;
  for (const [where, query] of queries) {
    const errors = [];
    parser.parse(query).iterate({
      enter: (node) => {
        if (node.type.isError) errors.push(node.from);
      },
    });
    if (errors.length > 0) {
      ok = false;
      const at = errors[0];
      fail(`${file}: ${describe(obj)} ${where}: PromQL syntax error at offset ${at}: ...${query.slice(Math.max(0, at - 30), at + 30)}...`);
    }
    // Whole metric names (recording rules' names contain colons: level:sluice_x:operations).
    for (const name of new Set(query.match(/(?<![\w:"])[a-zA-Z_:][\w:]*/g) ?? [])) {
      if (name.includes(":") && name.includes("sluice_")) {
        if (!RECORDED.has(name)) {
          ok = false;
          fail(`${file}: ${describe(obj)} ${where}: ${name} is recorded by no PrometheusRule in deploy/`);
        }
      } else if (name.startsWith("sluice_") && !SLUICE_METRICS.has(name) && !FUTURE_METRICS.has(name)) {
        ok = false;
        fail(`${file}: ${describe(obj)} ${where}: unknown metric ${name} (not exported by sluice, src/metrics.rs)`);
      }
    }
  }
  return { count: queries.length, ok };
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: validate-crds.mjs RENDERED.yaml...");
    process.exit(2);
  }
  if (!existsSync(modulesDir)) {
    console.error(`validate-crds: ${modulesDir} missing; run scripts/validate-deploy.sh`);
    process.exit(2);
  }
  const custom = [];
  const perFile = files.map((file) => [file, loadDocuments(file)]);
  for (const [, objects] of perFile)
    for (const obj of objects)
      if (obj.kind === "PrometheusRule")
        for (const g of obj.spec?.groups ?? []) for (const r of g.rules ?? []) if (r.record) RECORDED.add(r.record);
  for (const [file, objects] of perFile) {
    for (const obj of objects) {
      const group = groupOf(obj.apiVersion);
      const promql = checkPromql(file, obj);
      if (CRD_PACKAGES[group]) custom.push({ file, obj, promql, schemaOk: await validateSchema(file, obj) });
      else if (promql.count > 0 && promql.ok)
        console.log(`ok    ${file}: ${describe(obj)} (${promql.count} PromQL expressions parse, metrics known)`);
    }
  }
  const strictErrors = strictCheck(custom);
  custom.forEach((entry, i) => {
    const errs = strictErrors.get(i);
    const extra = entry.promql.count > 0 ? `; ${entry.promql.count} PromQL` : "";
    if (errs) for (const e of errs) fail(`${entry.file}: ${describe(entry.obj)} (${entry.obj.apiVersion}) strict: ${e}`);
    else if (entry.schemaOk && entry.promql.ok)
      console.log(`ok    ${entry.file}: ${describe(entry.obj)} (${entry.obj.apiVersion}; CRD schema + strict${extra})`);
  });
  for (const [file, objects] of perFile) {
    const before = failures;
    const checks = crossCheck(file, objects);
    if (failures === before) console.log(`ok    ${file}: ${checks} cross-reference checks over ${objects.length} objects`);
  }
  if (failures > 0) {
    console.log(`validate-crds: ${failures} failure(s)`);
    process.exit(1);
  }
}

await main();
