package source

import "testing"

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://api.example.com/data/2026-11-25.csv":                       "https://api.example.com/data/2026-11-25.csv",
		"https://user:pw@api.example.com/x.csv":                             "https://REDACTED@api.example.com/x.csv",
		"https://api.example.com/x.csv?api_key=k3y&fmt=csv":                 "https://api.example.com/x.csv?api_key=REDACTED&fmt=csv",
		"https://b.s3.amazonaws.com/x?X-Amz-Signature=abc&X-Amz-Expires=60": "https://b.s3.amazonaws.com/x?X-Amz-Expires=60&X-Amz-Signature=REDACTED",
		"https://api.example.com/x?myToken=t&sessionSecret=s":               "https://api.example.com/x?myToken=REDACTED&sessionSecret=REDACTED",
		"http://[::1%zz/": Redacted,
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%s) = %s, want %s", in, got, want)
		}
	}
}
