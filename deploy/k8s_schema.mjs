// k8s_schema.mjs - validate deploy/k8s/*.yaml against the Kubernetes OpenAPI schemas (and the
// Prometheus Operator's CRDs) shipped by the npm packages kubernetes-models and
// @kubernetes-models/prometheus-operator. deploy/check.sh runs it with EXPERTD_CHECK_K8S_SCHEMA=1
// after installing those packages (and js-yaml) into a cache folder given as NODE_MODULES_DIR.
//   node deploy/k8s_schema.mjs deploy/k8s/*.yaml
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.env.NODE_MODULES_DIR;
// by file: the packages export ESM subpaths only, which createRequire().resolve cannot see
const load = (sub) => import(pathToFileURL(path.join(modules, sub, "index.js")).href);
const yaml = await import(pathToFileURL(createRequire(path.join(modules, "x")).resolve("js-yaml")).href);

// apiVersion -> module of that group/version
function moduleFor(apiVersion) {
  if (apiVersion === "monitoring.coreos.com/v1")
    return "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
  return "kubernetes-models/" + apiVersion; // "v1", "apps/v1", "autoscaling/v2"
}

let checked = 0, failed = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(readFileSync(file, "utf8"))) {
    if (!doc || doc.kind === "Kustomization" || !doc.apiVersion) continue;
    const where = `${path.basename(file)}: ${doc.kind}/${doc.metadata?.name}`;
    try {
      const mod = await load(moduleFor(doc.apiVersion));
      const Model = mod[doc.kind];
      if (!Model) throw new Error(`no schema for ${doc.apiVersion} ${doc.kind}`);
      new Model(doc).validate();
      checked++;
    } catch (e) {
      failed++;
      console.error(`k8s_schema: FAIL ${where}: ${e.message}`);
    }
  }
}
console.log(`k8s_schema: ${checked} objects valid, ${failed} invalid`);
process.exit(failed ? 1 : 0);
