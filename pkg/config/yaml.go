package config

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// decode decodes config text into cfg strictly (an unknown key fails), and parses it into a
// tree for lineOf. Its errors are "name:line: what", the line from the YAML library's own
// position of the offending token.
func decode(name string, b []byte, cfg *Config) (ast.Node, error) {
	file, err := parser.ParseBytes(b, 0)
	if err != nil {
		return nil, positioned(name, err)
	}
	var root ast.Node
	if len(file.Docs) > 0 {
		root = file.Docs[0].Body
	}
	if root == nil {
		return nil, nil // an empty file: validation names what is missing
	}
	asV3(root, reflect.TypeOf(cfg))
	if err := yaml.NodeToValue(root, cfg, yaml.Strict()); err != nil {
		if line, msg, ok := firstMismatch(root, reflect.TypeOf(cfg).Elem()); ok {
			return nil, fmt.Errorf("%s:%d: %s", name, line, msg)
		}
		return nil, positioned(name, err)
	}
	return root, nil
}

// decodeBool reads a bool as yaml.v3 did, which sluice used before: YAML 1.1's y/yes/on and
// n/no/off are bools too (goccy/go-yaml takes only true and false).
func decodeBool(v *bool, b []byte) error {
	switch s := strings.Trim(strings.TrimSpace(string(b)), `"'`); s {
	case "true", "True", "TRUE", "y", "Y", "yes", "Yes", "YES", "on", "On", "ON":
		*v = true
	case "false", "False", "FALSE", "n", "N", "no", "No", "NO", "off", "Off", "OFF":
		*v = false
	default:
		return fmt.Errorf("cannot unmarshal %q into bool", s)
	}
	return nil
}

// asV3 rewrites the scalars of the tree that yaml.v3, which sluice used before, read otherwise
// than goccy/go-yaml, walking it along typ: a plain scalar that YAML takes for a number, a bool
// or a date keeps its text where a string goes (bucket: 0755 is "0755", where goccy/go-yaml would
// give "493"), and YAML 1.1's y/yes/on and n/no/off are bools where a bool goes. (A custom
// unmarshaler would do the same per value, but goccy/go-yaml formats the whole file for every
// call: loading 1,000 pipelines took minutes.)
func asV3(n ast.Node, typ reflect.Type) ast.Node {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch v := unwrap(n).(type) {
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		if typ == reflect.TypeOf("") {
			tk := *v.GetToken()
			tk.Type = token.StringType
			return ast.String(&tk)
		}
	case *ast.StringNode:
		var b bool
		if typ == reflect.TypeOf(true) && decodeBool(&b, []byte(v.Value)) == nil {
			return &ast.BoolNode{BaseNode: &ast.BaseNode{}, Token: v.Token, Value: b}
		}
	case *ast.SequenceNode:
		if typ.Kind() == reflect.Slice {
			for i, e := range v.Values {
				v.Values[i] = asV3(e, typ.Elem())
			}
		}
	default:
		for _, kv := range pairs(v) {
			switch typ.Kind() {
			case reflect.Struct:
				if f, found := fieldByTag(typ, kv.Key.GetToken().Value); found {
					kv.Value = asV3(kv.Value, f.Type)
				}
			case reflect.Map:
				kv.Value = asV3(kv.Value, typ.Elem())
			}
		}
	}
	return n
}

// positioned is a YAML library error as "name:line: message".
func positioned(name string, err error) error {
	var ye yaml.Error
	if !errors.As(err, &ye) || ye.GetToken() == nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	tok := ye.GetToken()
	msg := ye.GetMessage()
	var unknown *yaml.UnknownFieldError
	if errors.As(err, &unknown) {
		msg = fmt.Sprintf("field %s not found", tok.Value)
	}
	return fmt.Errorf("%s:%d: %s", name, tok.Position.Line, msg)
}

// firstMismatch walks the tree along typ for the first key, in file order, that typ has no
// field for, or value meant for a time.Duration or a bool that is not one. The library reports
// an unknown key of several in map order, and those bad values without a position.
func firstMismatch(n ast.Node, typ reflect.Type) (line int, msg string, ok bool) {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	n = unwrap(n)
	if typ == reflect.TypeOf(time.Duration(0)) {
		if s, isString := n.(*ast.StringNode); isString {
			if _, err := time.ParseDuration(s.Value); err != nil {
				return s.GetToken().Position.Line, fmt.Sprintf("cannot unmarshal %q into time.Duration", s.Value), true
			}
		}
		return 0, "", false
	}
	if typ.Kind() == reflect.Bool {
		var b bool
		if s, isScalar := n.(ast.ScalarNode); isScalar {
			if err := decodeBool(&b, []byte(s.String())); err != nil {
				return s.GetToken().Position.Line, err.Error(), true
			}
		}
		return 0, "", false
	}
	switch typ.Kind() {
	case reflect.Struct:
		for _, kv := range pairs(n) {
			key := kv.Key.GetToken()
			f, found := fieldByTag(typ, key.Value)
			if !found {
				return key.Position.Line, fmt.Sprintf("field %s not found", key.Value), true
			}
			if line, msg, ok := firstMismatch(kv.Value, f.Type); ok {
				return line, msg, ok
			}
		}
	case reflect.Map:
		for _, kv := range pairs(n) {
			if line, msg, ok := firstMismatch(kv.Value, typ.Elem()); ok {
				return line, msg, ok
			}
		}
	case reflect.Slice:
		if seq, isSeq := n.(*ast.SequenceNode); isSeq {
			for _, v := range seq.Values {
				if line, msg, ok := firstMismatch(v, typ.Elem()); ok {
					return line, msg, ok
				}
			}
		}
	}
	return 0, "", false
}

// fieldByTag is the struct field whose yaml tag names key.
func fieldByTag(typ reflect.Type, key string) (reflect.StructField, bool) {
	for i := range typ.NumField() {
		f := typ.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// lineOf finds the line of a path like pipelines[0].sensor.timeout in the tree, falling back
// to the nearest existing parent (the first line when there is no tree).
func lineOf(root ast.Node, path string) int {
	n := unwrap(root)
	if n == nil {
		return 1
	}
	line := n.GetToken().Position.Line
	for _, part := range strings.Split(path, ".") {
		key, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 {
			key = part[:i]
			idx, _ = strconv.Atoi(strings.TrimSuffix(part[i+1:], "]"))
		}
		next := mapValue(n, key)
		if next == nil {
			return line
		}
		line, n = lineOfNode(next), next
		if idx >= 0 {
			seq, ok := n.(*ast.SequenceNode)
			if !ok || idx >= len(seq.Values) {
				return line
			}
			n = unwrap(seq.Values[idx])
			line = lineOfNode(n)
		}
	}
	return line
}

// lineOfNode is where a value starts: a mapping at its first key.
func lineOfNode(n ast.Node) int {
	if kv := pairs(n); len(kv) > 0 {
		return kv[0].Key.GetToken().Position.Line
	}
	return n.GetToken().Position.Line
}

func mapValue(n ast.Node, key string) ast.Node {
	for _, kv := range pairs(n) {
		if kv.Key.GetToken().Value == key {
			return unwrap(kv.Value)
		}
	}
	return nil
}

// pairs are the key-value pairs of a mapping (none for other nodes).
func pairs(n ast.Node) []*ast.MappingValueNode {
	switch m := unwrap(n).(type) {
	case *ast.MappingNode:
		return m.Values
	case *ast.MappingValueNode: // a mapping of one pair
		return []*ast.MappingValueNode{m}
	}
	return nil
}

// unwrap is the value under a tag or anchor.
func unwrap(n ast.Node) ast.Node {
	for {
		switch t := n.(type) {
		case *ast.TagNode:
			n = t.Value
		case *ast.AnchorNode:
			n = t.Value
		default:
			return n
		}
	}
}
