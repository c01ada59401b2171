package check

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// metaArgs are module-call arguments that are not module variables.
var metaArgs = map[string]bool{"source": true, "version": true, "providers": true, "count": true, "for_each": true, "depends_on": true}

// Wiring checks what `terraform validate` would, without provider schemas (which need a
// download): every module call names a module that exists, sets every variable that has no
// default and no argument the module does not declare, and every reference in every module —
// var.*, local.*, module.<call>.<output>, data.<type>.<name>, <type>.<name> — resolves. The
// seed's output module.ec2_db.aws_instance.postgres.public_ip fails here: a module exposes
// only its outputs. Problems name file:line.
func (c *TFConfig) Wiring() []string {
	var problems []string
	add := func(pos hcl.Range, format string, args ...any) {
		rel, _ := filepath.Rel(c.Root, pos.Filename)
		problems = append(problems, fmt.Sprintf("%s:%d: %s", rel, pos.Start.Line, fmt.Sprintf(format, args...)))
	}
	for _, mod := range c.Modules() {
		vars, outputsOf := map[string]*TFBlock{}, func(dir string) map[string]bool {
			out := map[string]bool{}
			for _, o := range c.Of(dir, "output") {
				out[o.Name] = true
			}
			return out
		}
		for _, v := range c.Of(mod, "variable") {
			vars[v.Name] = v
		}
		locals := map[string]bool{}
		for _, l := range c.Of(mod, "locals") {
			for name := range l.Config {
				locals[name] = true
			}
		}
		resources, data := map[string]bool{}, map[string]bool{}
		for _, r := range c.Of(mod, "resource") {
			resources[r.Type+"."+r.Name] = true
		}
		for _, d := range c.Of(mod, "data") {
			data[d.Type+"."+d.Name] = true
		}
		calls := map[string]string{} // call name -> module dir
		for _, m := range c.Of(mod, "module") {
			src, _ := m.Config["source"].(string)
			if !strings.HasPrefix(src, "./") && !strings.HasPrefix(src, "../") {
				continue // a registry module: its interface is not here to check
			}
			dir := filepath.Clean(filepath.Join(mod, src))
			calls[m.Name] = dir
			declared := map[string]*TFBlock{}
			for _, v := range c.Of(dir, "variable") {
				declared[v.Name] = v
			}
			if len(declared) == 0 && len(c.Of(dir, "resource")) == 0 && len(c.Of(dir, "output")) == 0 {
				add(m.body.SrcRange, "module %q: no module at %s", m.Name, dir)
				continue
			}
			for name, a := range m.body.Attributes {
				if !metaArgs[name] && declared[name] == nil {
					add(a.SrcRange, "module %q sets %s, which %s does not declare", m.Name, name, dir)
				}
			}
			for name, v := range declared {
				if _, hasDefault := v.Config["default"]; !hasDefault && m.body.Attributes[name] == nil {
					add(m.body.SrcRange, "module %q does not set %s (%s has no default)", m.Name, name, v.Pos())
				}
			}
		}
		for _, b := range c.Blocks {
			if b.Module != mod {
				continue
			}
			body := b.body
			if b.Kind == "variable" {
				// type = string is a type expression, not a reference.
				body = &hclsyntax.Body{Blocks: b.body.Blocks}
			}
			for _, t := range Traversals(body) {
				if msg := c.unresolved(t, vars, locals, resources, data, calls, outputsOf); msg != "" {
					add(t.SourceRange(), "%s", msg)
				}
			}
		}
	}
	sort.Strings(problems)
	return problems
}

func (c *TFConfig) unresolved(t hcl.Traversal, vars map[string]*TFBlock, locals, resources, data map[string]bool, calls map[string]string, outputsOf func(string) map[string]bool) string {
	root := t.RootName()
	attr := func(i int) string {
		if i < len(t) {
			if a, ok := t[i].(hcl.TraverseAttr); ok {
				return a.Name
			}
		}
		return ""
	}
	ref := traversalString(t)
	switch root {
	case "each", "count", "self", "path", "terraform":
		return ""
	case "var":
		if vars[attr(1)] == nil {
			return ref + ": no variable " + attr(1)
		}
	case "local":
		if !locals[attr(1)] {
			return ref + ": no local " + attr(1)
		}
	case "module":
		dir, ok := calls[attr(1)]
		if !ok {
			return ref + ": no module call " + attr(1)
		}
		if out := attr(2); out != "" && !outputsOf(dir)[out] {
			return fmt.Sprintf("%s: module %s (%s) has no output %q; a module exposes only its outputs", ref, attr(1), dir, out)
		}
	case "data":
		if !data[attr(1)+"."+attr(2)] {
			return ref + ": no data source " + attr(1) + "." + attr(2)
		}
	default:
		if !resources[root+"."+attr(1)] {
			return ref + ": no resource " + root + "." + attr(1)
		}
	}
	return ""
}

// traversalString renders a reference such as module.s3.bucket_arn.
func traversalString(t hcl.Traversal) string {
	var b strings.Builder
	for _, step := range t {
		switch s := step.(type) {
		case hcl.TraverseRoot:
			b.WriteString(s.Name)
		case hcl.TraverseAttr:
			b.WriteString("." + s.Name)
		case hcl.TraverseIndex:
			b.WriteString("[...]")
		case hcl.TraverseSplat:
			b.WriteString("[*]")
		}
	}
	return b.String()
}
