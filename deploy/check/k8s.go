package check

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"github.com/santhosh-tekuri/jsonschema/v6"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Object is one rendered Kubernetes object: its YAML and the same as a generic document.
type Object struct {
	YAML []byte
	Doc  map[string]any
}

// Kind, Name and Namespace of the object.
func (o Object) Kind() string { s, _ := o.Doc["kind"].(string); return s }

func (o Object) Name() string {
	m, _ := o.Doc["metadata"].(map[string]any)
	s, _ := m["name"].(string)
	return s
}

func (o Object) String() string { return o.Kind() + "/" + o.Name() }

// Kustomize renders dir as `kustomize build dir` does, with the kustomize/api library.
func Kustomize(dir string) ([]Object, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var out []Object
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		var doc map[string]any
		if err := yaml.Unmarshal(y, &doc); err != nil {
			return nil, err
		}
		out = append(out, Object{YAML: y, Doc: doc})
	}
	return out, nil
}

// Decoder decodes objects strictly into the k8s.io/api types: an unknown or duplicated field
// is an error, as with `kubectl apply --validate=strict`.
type Decoder struct {
	decoder runtime.Decoder
	keda    *jsonschema.Schema
}

// NewDecoder registers the built-in API groups sluice uses and compiles KEDA's ScaledObject
// schema from schemaFile.
func NewDecoder(schemaFile string) (*Decoder, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme, autoscalingv2.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	keda, err := compileCRDSchema(schemaFile)
	if err != nil {
		return nil, err
	}
	return &Decoder{decoder: serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer(), keda: keda}, nil
}

// Decode checks one object: built-in kinds into their Go types, ScaledObjects against KEDA's
// schema (and their metadata into ObjectMeta). It returns the typed object (nil for a
// ScaledObject).
func (d *Decoder) Decode(o Object) (runtime.Object, error) {
	if o.Doc["apiVersion"] == "keda.sh/v1alpha1" {
		if err := d.keda.Validate(roundTrip(o.Doc)); err != nil {
			return nil, fmt.Errorf("%s: %#v", o, err) // %#v lists each failing field
		}
		var meta metav1.ObjectMeta
		if err := strictJSON(o.Doc["metadata"], &meta); err != nil {
			return nil, fmt.Errorf("%s metadata: %w", o, err)
		}
		return nil, nil
	}
	obj, _, err := d.decoder.Decode(o.YAML, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o, err)
	}
	return obj, nil
}

func strictJSON(v any, into any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(into)
}

// roundTrip turns a YAML-decoded document into the JSON value model jsonschema expects.
func roundTrip(v any) any {
	b, _ := json.Marshal(v)
	doc, _ := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	return doc
}

// compileCRDSchema reads a CRD openAPIV3Schema and makes it strict like the API server's
// field validation: an object that declares properties (and does not preserve unknown fields)
// accepts no others.
func compileCRDSchema(file string) (*jsonschema.Schema, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var schema map[string]any
	if err := yaml.Unmarshal(b, &schema); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	strict(schema)
	c := jsonschema.NewCompiler()
	if err := c.AddResource("crd.json", roundTrip(schema)); err != nil {
		return nil, err
	}
	return c.Compile("crd.json")
}

func strict(v any) {
	switch s := v.(type) {
	case map[string]any:
		_, props := s["properties"]
		_, extra := s["additionalProperties"]
		if props && !extra && s["x-kubernetes-preserve-unknown-fields"] != true {
			s["additionalProperties"] = false
		}
		for _, child := range s {
			strict(child)
		}
	case []any:
		for _, child := range s {
			strict(child)
		}
	}
}
