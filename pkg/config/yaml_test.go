package config_test

import (
	"strings"
	"testing"

	"github.com/sluice-etl/sluice/pkg/config"
)

// The YAML library's own positions, not its error text, give the line of a decoding error;
// of several unknown keys the first in the file is named.
func TestDecodeErrorsNameTheirLine(t *testing.T) {
	for _, tc := range []struct{ old, new, want string }{
		{"    source:\n", "    sourse:\n      x: 1\n    targett: {}\n    source:\n", "sluice.yaml:15: field sourse not found"},
		{"  bucket: landing\n", "  bucket: landing\n  bucket: other\n", "sluice.yaml:7: "},
		{"  subject_prefix: etl\n", "  subject_prefix: [etl\n", "sluice.yaml:3: "},
		{"    source:\n", "    lease:\n      ttl: 5\n    source:\n", "sluice.yaml:16: cannot unmarshal"},
		{"    source:\n", "    deadlines: {fetcher: 2 hours}\n    source:\n", `sluice.yaml:15: cannot unmarshal "2 hours" into time.Duration`},
	} {
		text := strings.Replace(good, tc.old, tc.new, 1)
		_, err := config.Parse("sluice.yaml", []byte(text))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to start with %q", tc.new, err, tc.want)
		}
	}
}

// Bools read as they did with yaml.v3 (YAML 1.1's yes/no/on/off too); anything else names its line.
func TestBoolsReadAsBefore(t *testing.T) {
	for value, want := range map[string]bool{"true": true, "yes": true, "On": true, "y": true, "false": false, "no": false, "OFF": false, `"yes"`: true} {
		cfg, err := config.Parse("sluice.yaml", []byte(strings.Replace(good, "  bucket: landing\n", "  bucket: landing\n  path_style: "+value+"\n", 1)))
		if err != nil || cfg.S3.PathStyle != want {
			t.Errorf("path_style: %s: %v, error %v; want %v", value, cfg != nil && cfg.S3.PathStyle, err, want)
		}
	}
	_, err := config.Parse("sluice.yaml", []byte(strings.Replace(good, "  bucket: landing\n", "  bucket: landing\n  path_style: maybe\n", 1)))
	if err == nil || !strings.HasPrefix(err.Error(), `sluice.yaml:7: cannot unmarshal "maybe" into bool`) {
		t.Errorf("path_style: maybe: error %v", err)
	}
}

// Strings read as they did with yaml.v3: what YAML would take for a number keeps its text.
func TestStringsKeepTheirText(t *testing.T) {
	for value, want := range map[string]string{"0755": "0755", `"0755"`: "0755", "1e3": "1e3", "0x10": "0x10", "true": "true", "2026-11-01": "2026-11-01",
		"landing": "landing", "'a: b'": "a: b", "~": "", "|\n    two\n    lines": "two\nlines\n", ">-\n    folded\n    text": "folded text"} {
		cfg, err := config.Parse("sluice.yaml", []byte(strings.Replace(good, "  bucket: landing\n", "  bucket: landing\n  region: "+value+"\n", 1)))
		if want == "" {
			want = "us-east-1" // null: the default
		}
		if err != nil || cfg.S3.Region != want {
			t.Errorf("region: %s: %q, error %v; want %q", value, cfg.S3.Region, err, want)
		}
	}
}
