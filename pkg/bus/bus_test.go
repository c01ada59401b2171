package bus

import (
	"errors"
	"strings"
	"testing"
)

func TestSubjectMatches(t *testing.T) {
	for _, c := range []struct {
		pattern, subject string
		want             bool
	}{
		{"etl.*.landed.*", "etl.orders.landed.2026-11-25", true},
		{"etl.*.landed.*", "etl.orders.validated.2026-11-25", false},
		{"etl.*.landed.*", "etl.orders.landed", false},
		{"$JS.ACK.SLUICE.fetcher.>", "$JS.ACK.SLUICE.fetcher.1.2.3.4.5", true},
		{"$JS.ACK.SLUICE.fetcher.>", "$JS.ACK.SLUICE.fetcher", false},
		{"$JS.ACK.SLUICE.fetcher.>", "$JS.ACK.SLUICE.validator.1", false},
		{"$SYS.REQ.USER.INFO", "$SYS.REQ.USER.INFO", true},
		{">", "anything.at.all", true},
	} {
		if got := SubjectMatches(c.pattern, c.subject); got != c.want {
			t.Errorf("SubjectMatches(%q, %q) = %v, want %v", c.pattern, c.subject, got, c.want)
		}
	}
}

func TestURLWithCredentialsIsRefusedAndRedacted(t *testing.T) {
	for _, u := range []string{"nats://fetcher:s3cret@nats:4222", "nats://a:4222,tls://tok3n@b:4222", "s3cret@nats:4222"} {
		err := CheckURL(u)
		if !errors.Is(err, ErrCredentialsInURL) {
			t.Errorf("CheckURL(%q) = %v, want ErrCredentialsInURL", u, err)
		}
		if err != nil && (strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "tok3n")) {
			t.Errorf("error shows the credentials: %v", err)
		}
	}
	if err := CheckURL("nats://nats:4222,tls://b:4443"); err != nil {
		t.Errorf("plain URLs refused: %v", err)
	}
	if got := RedactURL("nats://u:p@h:1,nats://h2:2"); got != "nats://***@h:1,nats://h2:2" {
		t.Errorf("RedactURL = %q", got)
	}
}
