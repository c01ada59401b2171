package event

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/sluice-etl/sluice/schemas"
)

var (
	compileOnce sync.Once
	compiled    map[Kind]*jsonschema.Schema
	compileErr  error
)

func compile() {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	compileErr = fs.WalkDir(schemas.Events, "events", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := schemas.Events.ReadFile(path)
		if err != nil {
			return err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("schema %s: %w", path, err)
		}
		return c.AddResource(schemas.EventBaseURL+strings.TrimPrefix(path, "events/"), doc)
	})
	if compileErr != nil {
		return
	}
	compiled = map[Kind]*jsonschema.Schema{}
	for _, k := range Kinds {
		s, err := c.Compile(schemas.EventBaseURL + string(k) + ".json")
		if err != nil {
			compileErr = fmt.Errorf("compile schema %s: %w", k, err)
			return
		}
		compiled[k] = s
	}
}

// Validate checks an encoded event against the JSON Schema of its kind in schemas/events.
func Validate(k Kind, data []byte) error {
	compileOnce.Do(compile)
	if compileErr != nil {
		return compileErr
	}
	s, ok := compiled[k]
	if !ok {
		return fmt.Errorf("no schema for event kind %q", k)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s event: %w", k, err)
	}
	if err := s.Validate(inst); err != nil {
		return fmt.Errorf("%s event does not match its schema: %w", k, err)
	}
	return nil
}

// Encode marshals an event and checks it against its schema, so no service publishes an event
// its consumers would refuse.
func Encode(e Event) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode %s event: %w", e.Kind(), err)
	}
	if err := Validate(e.Kind(), b); err != nil {
		return nil, err
	}
	return b, nil
}

// Decode validates data against the schema of kind k and unmarshals it.
func Decode(k Kind, data []byte) (Event, error) {
	if err := Validate(k, data); err != nil {
		return nil, err
	}
	e, err := New(k)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, e); err != nil {
		return nil, fmt.Errorf("decode %s event: %w", k, err)
	}
	return e, nil
}
