package check

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/tester"
)

// Violation is one denied finding of a policy.
type Violation struct {
	Rule string `json:"rule"`
	Msg  string `json:"msg"`
}

func (v Violation) String() string { return v.Rule + ": " + v.Msg }

// PolicyFiles are the policy modules in dir (not their tests, not testdata).
func PolicyFiles(dir string, tests bool) ([]string, error) {
	all, err := filepath.Glob(filepath.Join(dir, "*.rego"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range all {
		if tests || !strings.HasSuffix(f, "_test.rego") {
			out = append(out, f)
		}
	}
	return out, nil
}

// Policy is a compiled deny query over deploy/policy.
type Policy struct {
	query rego.PreparedEvalQuery
}

// NewPolicy compiles the policies of dir for the query data.<pkg>.deny.
func NewPolicy(ctx context.Context, dir, pkg string) (*Policy, error) {
	files, err := PolicyFiles(dir, false)
	if err != nil {
		return nil, err
	}
	opts := []func(*rego.Rego){rego.Query("data." + pkg + ".deny")}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		opts = append(opts, rego.Module(f, string(b)))
	}
	q, err := rego.New(opts...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("compile policies in %s: %w", dir, err)
	}
	return &Policy{query: q}, nil
}

// Eval returns the violations input has, sorted.
func (p *Policy) Eval(ctx context.Context, input any) ([]Violation, error) {
	// Round-trip through JSON so Go structs reach the policy as plain documents.
	b, err := json.Marshal(input)
	if err != nil {
		return nil, err
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	rs, err := p.query.Eval(ctx, rego.EvalInput(doc))
	if err != nil {
		return nil, err
	}
	var out []Violation
	for _, r := range rs {
		for _, e := range r.Expressions {
			j, _ := json.Marshal(e.Value)
			var vs []Violation
			if err := json.Unmarshal(j, &vs); err != nil {
				return nil, fmt.Errorf("deny must be a set of {rule, msg}: %s", j)
			}
			out = append(out, vs...)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}

// RunRegoTests runs the policies' own tests (*_test.rego) with OPA's tester.
func RunRegoTests(ctx context.Context, dir string) ([]*tester.Result, error) {
	files, err := PolicyFiles(dir, true)
	if err != nil {
		return nil, err
	}
	modules, store, err := tester.Load(files, nil)
	if err != nil {
		return nil, err
	}
	ch, err := tester.NewRunner().SetStore(store).Run(ctx, modules)
	if err != nil {
		return nil, err
	}
	var out []*tester.Result
	for r := range ch {
		out = append(out, r)
	}
	return out, nil
}
