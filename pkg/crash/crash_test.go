package crash

import "testing"

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Spec
		err  bool
	}{
		{in: "fetcher:after-handle", want: Spec{"fetcher", "after-handle", 1}},
		{in: "dbtrunner:after-publish:3", want: Spec{"dbtrunner", "after-publish", 3}},
		{in: "fetcher", err: true},
		{in: ":after-handle", err: true},
		{in: "fetcher:", err: true},
		{in: "fetcher:after-handle:0", err: true},
		{in: "fetcher:after-handle:x", err: true},
		{in: "a:b:1:2", err: true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}
