package check

import (
	"context"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func decoder(t *testing.T) *Decoder {
	t.Helper()
	d, err := NewDecoder(path(t, "deploy", "k8s", "schema", "keda-scaledobject-v1alpha1.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func render(t *testing.T, elem ...string) []Object {
	t.Helper()
	objs, err := Kustomize(path(t, elem...))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func overlays(t *testing.T) []string {
	dirs, err := filepath.Glob(path(t, "deploy", "k8s", "overlays", "*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no overlays under deploy/k8s/overlays (%v)", err)
	}
	return dirs
}

// Each overlay builds with kustomize, every object decodes strictly into its k8s.io/api type
// and every ScaledObject matches KEDA's CRD schema; the hardening policies hold.
func TestOverlaysBuildDecodeStrictlyAndPassPolicies(t *testing.T) {
	d := decoder(t)
	pol := policy(t, "sluice.kubernetes")
	for _, dir := range overlays(t) {
		objs, err := Kustomize(dir)
		if err != nil {
			t.Fatal(err)
		}
		var docs []any
		for _, o := range objs {
			if _, err := d.Decode(o); err != nil {
				t.Errorf("%s: %v", filepath.Base(dir), err)
			}
			docs = append(docs, o.Doc)
		}
		vs, err := pol.Eval(context.Background(), map[string]any{"objects": docs})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vs {
			t.Errorf("%s: %s", filepath.Base(dir), v)
		}
	}
}

// The strict checks are strict: a misspelt field fails in a built-in kind and in a ScaledObject.
func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	d := decoder(t)
	for _, y := range []string{
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 2\n",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\ndatas: {a: b}\n",
		"apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\nspec:\n  scaleTargetRef: {name: x}\n  minReplicas: 1\n  triggers: [{type: nats-jetstream, metadata: {stream: S}}]\n",
		"apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\nspec:\n  scaleTargetRef: {name: x}\n  triggers: [{type: nats-jetstream, metadata: {lagThreshold: 5}}]\n",
		"apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\nspec:\n  triggers: [{type: nats-jetstream, metadata: {stream: S}}]\n",
	} {
		o := objectFromYAML(t, y)
		if _, err := d.Decode(o); err == nil {
			t.Errorf("accepted:\n%s", y)
		} else {
			t.Logf("refused as expected: %v", err)
		}
	}
}

func production(t *testing.T) []Object { return render(t, "deploy", "k8s", "overlays", "production") }

func deployments(t *testing.T, objs []Object) map[string]*appsv1.Deployment {
	d := decoder(t)
	out := map[string]*appsv1.Deployment{}
	for _, o := range objs {
		if o.Kind() == "Deployment" {
			obj, err := d.Decode(o)
			if err != nil {
				t.Fatal(err)
			}
			out[o.Name()] = obj.(*appsv1.Deployment)
		}
	}
	return out
}

// Every service the issue names runs as its own Deployment, with its own PodDisruptionBudget
// and its own NetworkPolicy selecting exactly its pods, behind a namespace-wide default deny;
// only KEDA's operator may reach NATS's monitoring port.
func TestEveryServiceHasDeploymentPDBAndNetworkPolicy(t *testing.T) {
	objs := production(t)
	deps := deployments(t, objs)
	var names []string
	for n := range deps {
		names = append(names, strings.TrimPrefix(n, "sluice-"))
	}
	sort.Strings(names)
	if want := []string{"alerter", "console", "dbtrunner", "fetcher", "partitioner", "sensor", "validator"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("deployments %v, want %v", names, want)
	}
	d := decoder(t)
	pdbs, policies := map[string]bool{}, map[string]*networkingv1.NetworkPolicy{}
	for _, o := range objs {
		switch o.Kind() {
		case "PodDisruptionBudget":
			pdbs[o.Name()] = true
		case "NetworkPolicy":
			obj, err := d.Decode(o)
			if err != nil {
				t.Fatal(err)
			}
			np := obj.(*networkingv1.NetworkPolicy)
			policies[np.Namespace+"/"+np.Name] = np
		}
	}
	for name, dep := range deps {
		if !pdbs[name] {
			t.Errorf("%s has no PodDisruptionBudget", name)
		}
		np := policies["sluice/"+name]
		if np == nil {
			t.Errorf("%s has no NetworkPolicy of its own", name)
			continue
		}
		if !reflect.DeepEqual(np.Spec.PodSelector.MatchLabels, dep.Spec.Selector.MatchLabels) {
			t.Errorf("NetworkPolicy %s selects %v, the Deployment's pods are %v", name, np.Spec.PodSelector.MatchLabels, dep.Spec.Selector.MatchLabels)
		}
		if len(np.Spec.PolicyTypes) != 2 {
			t.Errorf("NetworkPolicy %s must restrict both ingress and egress", name)
		}
		if !allowsPort(np.Spec.Egress, 4222) {
			t.Errorf("NetworkPolicy %s does not let the service reach NATS on 4222", name)
		}
	}
	if dd := policies["sluice/default-deny"]; dd == nil || len(dd.Spec.PodSelector.MatchLabels) != 0 || len(dd.Spec.Ingress)+len(dd.Spec.Egress) != 0 {
		t.Error("no default-deny NetworkPolicy for the whole sluice namespace")
	}
	var monitoring []string
	for key, np := range policies {
		for _, rule := range np.Spec.Ingress {
			for _, p := range rule.Ports {
				if p.Port != nil && *p.Port == intstr.FromInt32(8222) {
					for _, from := range rule.From {
						monitoring = append(monitoring, key+" from "+from.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"]+"/"+from.PodSelector.MatchLabels["app"])
					}
				}
			}
		}
	}
	if want := []string{"nats/nats-monitoring-keda-only from keda/keda-operator"}; !reflect.DeepEqual(monitoring, want) {
		t.Errorf("NATS monitoring (8222) is reachable from %v, want only %v", monitoring, want)
	}
}

func allowsPort(rules []networkingv1.NetworkPolicyEgressRule, port int32) bool {
	for _, r := range rules {
		for _, p := range r.Ports {
			if p.Port != nil && *p.Port == intstr.FromInt32(port) {
				return true
			}
		}
	}
	return false
}

// Each credential comes from a Secret of its own: no Secret feeds two variables or two
// workloads, and no credential is a literal in the manifests.
func TestEachCredentialFromItsOwnSecret(t *testing.T) {
	objs := production(t)
	d := decoder(t)
	users := map[string]map[string]bool{} // secret -> "workload env"
	for _, o := range objs {
		if o.Kind() != "Deployment" && o.Kind() != "Job" {
			continue
		}
		obj, err := d.Decode(o)
		if err != nil {
			t.Fatal(err)
		}
		var spec corev1.PodSpec
		switch x := obj.(type) {
		case *appsv1.Deployment:
			spec = x.Spec.Template.Spec
		case *batchv1.Job:
			spec = x.Spec.Template.Spec
		}
		for _, c := range spec.Containers {
			for _, e := range c.Env {
				secretish := strings.Contains(e.Name, "PASSWORD") || strings.Contains(e.Name, "TOKEN") || strings.Contains(e.Name, "SECRET")
				if secretish && e.ValueFrom == nil {
					t.Errorf("%s: %s is a literal; credentials come from Secrets", o, e.Name)
				}
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					ref := e.ValueFrom.SecretKeyRef.Name
					if users[ref] == nil {
						users[ref] = map[string]bool{}
					}
					users[ref][o.Name()+" "+e.Name] = true
				}
			}
		}
	}
	if len(users) < 10 {
		t.Fatalf("only %d secrets referenced: %v", len(users), users)
	}
	for secret, uses := range users {
		if len(uses) != 1 {
			t.Errorf("Secret %s holds more than one credential: %v", secret, uses)
		}
	}
}

func literalEnv(vars []corev1.EnvVar) map[string]string {
	m := map[string]string{}
	for _, e := range vars {
		if e.ValueFrom == nil {
			m[e.Name] = e.Value
		}
	}
	return m
}

// podContainers are the containers of a Deployment's or a Job's pod template.
func podContainers(t *testing.T, obj any) []corev1.Container {
	t.Helper()
	switch x := obj.(type) {
	case *appsv1.Deployment:
		return x.Spec.Template.Spec.Containers
	case *batchv1.Job:
		return x.Spec.Template.Spec.Containers
	}
	if obj != nil {
		t.Fatalf("%T has no pod template", obj)
	}
	return nil
}

// mustDecode decodes a Deployment or Job; other kinds give nil.
func mustDecode(t *testing.T, o Object) any {
	t.Helper()
	if o.Kind() != "Deployment" && o.Kind() != "Job" {
		return nil
	}
	obj, err := decoder(t).Decode(o)
	if err != nil {
		t.Fatal(err)
	}
	return obj
}
