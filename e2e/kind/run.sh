#!/usr/bin/env bash
# `make e2e-kind`: the end-to-end scenarios on a kind cluster with real pods, for users
# with Docker. It builds the operator and model-server images, creates a kind cluster,
# installs the Gateway API CRDs and the Helm chart, Prometheus, and then runs two
# scenarios with real model-server pods and a load generator: a healthy candidate
# promotes (Succeeded), and a candidate failing half its requests is rolled back.
# CI does not run this (it has no Docker engine); `make e2e` covers the same loop.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cluster=modelrollout-e2e
namespace=e2e
keep="${KEEP_CLUSTER:-}"

need() { command -v "$1" >/dev/null || { echo "e2e-kind needs $1: $2" >&2; exit 2; }; }
need docker "install Docker and start its engine"
need kind "go install sigs.k8s.io/kind@latest (or your package manager)"
need kubectl "install kubectl"
docker info >/dev/null 2>&1 || { echo "e2e-kind: the Docker engine is not running" >&2; exit 2; }
helm="$("$root/hack/helm/build.sh" | tail -n 1)"
step() { printf '\n==> %s\n' "$*"; }

step "images"
docker build -q -t modelrollout/operator:dev "$root"
docker build -q -t modelrollout/modelserver:dev "$root/e2e/modelserver"

step "kind cluster $cluster"
kind get clusters | grep -qx "$cluster" || kind create cluster --config "$root/e2e/kind/cluster.yaml"
cleanup() { [[ -n "$keep" ]] || kind delete cluster --name "$cluster"; }
trap cleanup EXIT
export KUBECONFIG="$(mktemp)"
kind get kubeconfig --name "$cluster" >"$KUBECONFIG"
kind load docker-image --name "$cluster" modelrollout/operator:dev modelrollout/modelserver:dev

step "Gateway API CRDs, the operator (Helm chart) and Prometheus"
gateway_crds="$(cd "$root" && PYTHONPATH=tests .venv/bin/python -c \
  'from testbed.binaries import ensure_crds; print(ensure_crds()["gateway-api"])')"
kubectl apply --server-side -f "$gateway_crds"
kubectl create namespace monitoring --dry-run=client -o yaml | kubectl apply -f -
kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f -
"$helm" upgrade --install modelrollout "$root/charts/modelrollout-operator" \
  --namespace modelrollout-system --create-namespace --wait \
  --set image.repository=modelrollout/operator --set image.tag=dev \
  --set image.pullPolicy=Never
kubectl apply -f "$root/e2e/kind/prometheus.yaml"
kubectl -n monitoring rollout status deployment/prometheus --timeout=180s

scenario() {  # NAME ERROR_RATE EXPECTED_PHASE
  step "scenario: $1 (candidate error rate $2), expecting $3"
  kubectl -n "$namespace" delete mro fraud --ignore-not-found --wait
  CANDIDATE_ERROR_RATE="$2" envsubst <"$root/e2e/kind/scenario.yaml" | kubectl -n "$namespace" apply -f -
  kubectl -n "$namespace" rollout status deployment/fraud-v1 --timeout=180s
  kubectl -n "$namespace" wait mro/fraud --timeout=600s \
    --for=jsonpath='{.status.phase}'="$3"
  kubectl -n "$namespace" get mro fraud
  kubectl -n "$namespace" get events --field-selector involvedObject.name=fraud \
    --sort-by=.lastTimestamp | tail -n 8
}
need envsubst "apt-get install gettext-base"
scenario "happy path" 0 Succeeded
scenario "error spike" 0.5 RolledBack
step "both scenarios passed"
