package contract

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
)

// lineAt is the 1-based line of byte offset off in b.
func lineAt(b []byte, off int64) int {
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	return 1 + bytes.Count(b[:off], []byte{'\n'})
}

// jsonLine is the line of the field at path (name, key, partition.column, columns[2].type) in
// the JSON text b: where its key is written, or for an array element where it starts. A path
// that is not there gives the line of its nearest parent that is (line 1 at worst), so an error
// about a missing field points at the object that lacks it.
func jsonLine(b []byte, path string) int {
	want := strings.Split(strings.ReplaceAll(path, "[", ".["), ".")
	best, matched := 1, 0
	note := func(p []string, off int64) {
		if len(p) > matched && len(p) <= len(want) && slices.Equal(p, want[:len(p)]) {
			matched, best = len(p), lineAt(b, off)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	// value reads one value at path p; elem says it is an array element (noted where it starts).
	var value func(p []string, elem bool) bool
	value = func(p []string, elem bool) bool {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if elem {
			note(p, dec.InputOffset())
		}
		d, ok := tok.(json.Delim)
		if !ok {
			return true
		}
		for i := 0; dec.More(); i++ {
			var q []string
			if d == '{' {
				kt, err := dec.Token()
				if err != nil {
					return false
				}
				k, _ := kt.(string)
				q = append(p[:len(p):len(p)], k)
				note(q, dec.InputOffset())
			} else {
				q = append(p[:len(p):len(p)], "["+strconv.Itoa(i)+"]")
			}
			if !value(q, d == '[') {
				return false
			}
		}
		_, err = dec.Token() // the closing delimiter
		return err == nil
	}
	value(nil, false)
	return best
}
