package alerter

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/flow"
)

// smtpTimeout bounds dialling and each SMTP command.
const smtpTimeout = 30 * time.Second

type emailNotifier struct {
	client *gomail.Client
	addr   string
	from   string
	to     []string
}

func newEmailNotifier(cfg config.Email) (*emailNotifier, error) {
	if cfg.Host == "" {
		return nil, errors.New("alerts.email.host is empty")
	}
	if _, err := mail.ParseAddress(cfg.From); err != nil {
		return nil, fmt.Errorf("alerts.email.from %q: %w", cfg.From, err)
	}
	if len(cfg.To) == 0 {
		return nil, errors.New("alerts.email.to is empty")
	}
	for _, to := range cfg.To {
		if _, err := mail.ParseAddress(to); err != nil {
			return nil, fmt.Errorf("alerts.email.to %q: %w", to, err)
		}
	}
	port := cfg.Port
	opts := []gomail.Option{gomail.WithTimeout(smtpTimeout)}
	switch cfg.TLS {
	case "none":
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	case "", "starttls":
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case "tls":
		opts = append(opts, gomail.WithSSL())
		if port == 0 {
			port = 465
		}
	default:
		return nil, fmt.Errorf("alerts.email.tls %q: want none, starttls or tls", cfg.TLS)
	}
	if port == 0 {
		port = 587
	}
	opts = append(opts, gomail.WithPort(port))
	if cfg.Username != "" {
		// go-mail refuses PLAIN over a plain connection except to localhost; say so now rather
		// than at the first failure.
		if cfg.TLS == "none" && !isLoopback(cfg.Host) {
			return nil, fmt.Errorf("alerts.email: tls none would send the password in clear text to %s; use starttls or tls", cfg.Host)
		}
		opts = append(opts,
			gomail.WithSMTPAuth(gomail.SMTPAuthPlain),
			gomail.WithUsername(cfg.Username),
			gomail.WithPassword(cfg.Password.Reveal()),
		)
	}
	client, err := gomail.NewClient(cfg.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("alerts.email: %w", err)
	}
	return &emailNotifier{client: client, addr: client.ServerAddr(), from: cfg.From, to: cfg.To}, nil
}

// isLoopback matches go-mail's own notion of localhost for unencrypted authentication.
func isLoopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

func (e *emailNotifier) send(ctx context.Context, a alert) error {
	text, html, err := emailBodies(a)
	if err != nil {
		return flow.Permanent(err)
	}
	m := gomail.NewMsg()
	if err := m.From(e.from); err != nil {
		return flow.Permanent(fmt.Errorf("email from: %w", err))
	}
	if err := m.To(e.to...); err != nil {
		return flow.Permanent(fmt.Errorf("email to: %w", err))
	}
	subject, err := emailSubject(a)
	if err != nil {
		return flow.Permanent(err)
	}
	m.Subject(subject)
	// One Message-ID per run and kind: if a crash between sending and recording the alert makes
	// a redelivery send it again, mail systems that deduplicate by Message-ID show it once.
	m.SetMessageIDWithValue(a.RunID + "." + a.Kind.dedupeKind() + "@sluice")
	m.SetBulk() // an automated alert: ask for no auto-replies
	m.SetBodyString(gomail.TypeTextPlain, text)
	m.AddAlternativeString(gomail.TypeTextHTML, html)
	if err := e.client.DialAndSendWithContext(ctx, m); err != nil {
		return fmt.Errorf("email via %s: %w", e.addr, err)
	}
	return nil
}
