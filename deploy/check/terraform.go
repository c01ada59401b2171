package check

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

// TFBlock is one top-level block of a Terraform module (resource, data, variable, output,
// module, provider, terraform, locals) with its body as JSON-able values: a literal becomes its
// value, any other expression {"expr": "<source text>"}, a nested block a list entry under its
// type (with "__labels" when it has labels).
type TFBlock struct {
	Module string         `json:"module"` // directory relative to the Terraform root, "." for the root
	Kind   string         `json:"kind"`
	Type   string         `json:"type,omitempty"` // resource or data type
	Name   string         `json:"name,omitempty"`
	File   string         `json:"file"`
	Line   int            `json:"line"`
	Config map[string]any `json:"config"`

	body *hclsyntax.Body
	src  []byte
}

// TFConfig is every module under a Terraform root directory.
type TFConfig struct {
	Root   string
	Blocks []*TFBlock
	// Files are the parsed files, relative to Root.
	Files []string
}

// tfFile reports whether name is Terraform source: .tf, and the .tf.example and
// .tfvars.example files that are meant to be copied.
func tfFile(name string) bool {
	for _, ext := range []string{".tf", ".tf.example", ".tfvars.example"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

// LoadTerraform parses every Terraform file under root with hclparse. Parse errors are returned
// together, each with file:line.
func LoadTerraform(root string) (*TFConfig, error) {
	cfg := &TFConfig{Root: root}
	p := hclparse.NewParser()
	var diags hcl.Diagnostics
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !tfFile(d.Name()) {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		cfg.Files = append(cfg.Files, rel)
		f, ds := p.ParseHCLFile(path)
		diags = append(diags, ds...)
		if ds.HasErrors() {
			return nil
		}
		mod := filepath.Dir(rel)
		for _, b := range f.Body.(*hclsyntax.Body).Blocks {
			blk := &TFBlock{Module: mod, Kind: b.Type, File: rel, Line: b.DefRange().Start.Line, body: b.Body, src: f.Bytes}
			switch {
			case (b.Type == "resource" || b.Type == "data") && len(b.Labels) == 2:
				blk.Type, blk.Name = b.Labels[0], b.Labels[1]
			case len(b.Labels) == 1:
				blk.Name = b.Labels[0]
			}
			blk.Config = bodyValues(b.Body, f.Bytes)
			cfg.Blocks = append(cfg.Blocks, blk)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if diags.HasErrors() {
		return nil, fmt.Errorf("terraform: %s", diags.Error())
	}
	sort.Strings(cfg.Files)
	return cfg, nil
}

func bodyValues(b *hclsyntax.Body, src []byte) map[string]any {
	m := map[string]any{}
	for name, a := range b.Attributes {
		m[name] = exprValue(a.Expr, src)
	}
	for _, nb := range b.Blocks {
		child := bodyValues(nb.Body, src)
		if len(nb.Labels) > 0 {
			child["__labels"] = nb.Labels
		}
		list, _ := m[nb.Type].([]any)
		m[nb.Type] = append(list, child)
	}
	return m
}

// exprValue is a literal's value, or {"expr": source} for anything that needs evaluation
// (references, function calls, templates).
func exprValue(e hclsyntax.Expression, src []byte) any {
	if v, diags := e.Value(nil); !diags.HasErrors() && v.IsWhollyKnown() {
		if b, err := ctyjson.Marshal(v, v.Type()); err == nil {
			var out any
			if json.Unmarshal(b, &out) == nil {
				return out
			}
		}
	}
	return map[string]any{"expr": string(bytes.TrimSpace(e.Range().SliceBytes(src)))}
}

// Blocks of one kind in one module.
func (c *TFConfig) Of(module, kind string) []*TFBlock {
	var out []*TFBlock
	for _, b := range c.Blocks {
		if b.Module == module && b.Kind == kind {
			out = append(out, b)
		}
	}
	return out
}

// Modules are the module directories, root first.
func (c *TFConfig) Modules() []string {
	seen := map[string]bool{}
	var out []string
	for _, b := range c.Blocks {
		if !seen[b.Module] {
			seen[b.Module] = true
			out = append(out, b.Module)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] == "." || (out[j] != "." && out[i] < out[j]) })
	return out
}

// PolicyInput is the document the Terraform policies read: every block with its kind.
func (c *TFConfig) PolicyInput() map[string]any {
	in := map[string]any{}
	for _, kind := range []string{"terraform", "provider", "variable", "output", "module", "resource", "data", "locals"} {
		list := []any{}
		for _, b := range c.Blocks {
			if b.Kind == kind {
				j, _ := json.Marshal(b)
				var v any
				_ = json.Unmarshal(j, &v)
				list = append(list, v)
			}
		}
		in[kind] = list
	}
	return in
}

// Unformatted lists the files whose bytes differ from hclwrite.Format's canonical layout, the
// same layout `terraform fmt` and `tofu fmt` write.
func Unformatted(root string, files []string) ([]string, error) {
	var bad []string
	for _, rel := range files {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(hclwrite.Format(b), b) {
			bad = append(bad, rel)
		}
	}
	return bad, nil
}

// Traversals are the references (var.x, module.m.o, aws_s3_bucket.b.arn, ...) an attribute or
// any attribute under a block body makes.
func Traversals(body *hclsyntax.Body) []hcl.Traversal {
	var out []hcl.Traversal
	for _, a := range body.Attributes {
		out = append(out, a.Expr.Variables()...)
	}
	for _, b := range body.Blocks {
		out = append(out, Traversals(b.Body)...)
	}
	return out
}

// Body is the block's parsed body.
func (b *TFBlock) Body() *hclsyntax.Body { return b.body }

// Pos is file:line of the block.
func (b *TFBlock) Pos() string { return fmt.Sprintf("%s:%d", b.File, b.Line) }
