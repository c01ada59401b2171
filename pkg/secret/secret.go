// Package secret resolves the values sluice's config refers to instead of holding: "env:NAME"
// reads an environment variable, "file:/path" reads a file (trailing newline trimmed). A Value
// prints as its reference, never as what it resolved to, so logging a config leaks nothing.
package secret

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// ErrNotReference is returned by Validate for a secret given as literal text.
var ErrNotReference = errors.New("must be a reference (env:NAME or file:/path), not literal text")

// Lookup finds an environment variable; main passes os.LookupEnv.
type Lookup func(name string) (string, bool)

// Value is a config value that is a reference or, where allowed, a literal.
type Value struct {
	ref      string
	resolved string
	ok       bool
}

// New returns a Value for ref (a reference or a literal).
func New(ref string) Value { return Value{ref: ref} }

// UnmarshalText lets YAML decode a Value from a scalar.
func (v *Value) UnmarshalText(b []byte) error {
	*v = Value{ref: string(b)}
	return nil
}

// IsZero reports an unset value.
func (v Value) IsZero() bool { return v.ref == "" }

// IsReference reports whether the value is env: or file: rather than literal text.
func (v Value) IsReference() bool {
	return strings.HasPrefix(v.ref, "env:") || strings.HasPrefix(v.ref, "file:")
}

// RequireReference fails for literal text; used on fields that hold secrets.
func (v Value) RequireReference() error {
	if v.ref != "" && !v.IsReference() {
		return ErrNotReference
	}
	return nil
}

// Literal returns the text of a value given literally (not a reference), for checks before
// resolution; "" for a reference.
func (v Value) Literal() string {
	if v.IsReference() {
		return ""
	}
	return v.ref
}

// Resolve reads the referenced value. A literal resolves to itself.
func (v *Value) Resolve(lookup Lookup) error {
	switch {
	case strings.HasPrefix(v.ref, "env:"):
		name := strings.TrimPrefix(v.ref, "env:")
		val, ok := lookup(name)
		if !ok {
			return fmt.Errorf("%s: environment variable %s is not set", v.ref, name)
		}
		v.resolved = val
	case strings.HasPrefix(v.ref, "file:"):
		b, err := os.ReadFile(strings.TrimPrefix(v.ref, "file:"))
		if err != nil {
			return fmt.Errorf("%s: %w", v.ref, err)
		}
		v.resolved = strings.TrimRight(string(b), "\r\n")
	default:
		v.resolved = v.ref
	}
	v.ok = true
	return nil
}

// Reveal returns the resolved value, for the one call that needs it (a client constructor).
func (v Value) Reveal() string {
	if !v.ok {
		return ""
	}
	return v.resolved
}

// String returns the reference, never the resolved value.
func (v Value) String() string {
	if v.IsReference() {
		return v.ref
	}
	if v.ref == "" {
		return ""
	}
	return "[literal]"
}

// LogValue keeps resolved values out of slog output.
func (v Value) LogValue() slog.Value { return slog.StringValue(v.String()) }

// MarshalText keeps resolved values out of any encoding of a config.
func (v Value) MarshalText() ([]byte, error) { return []byte(v.String()), nil }
