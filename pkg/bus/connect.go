package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// Auth is how a process proves who it is to NATS. At most one of Password (with User), Creds
// and NKeySeed is set; all are resolved secret values, never text of the URL.
type Auth struct {
	User     string
	Password string
	// Creds is the content of a NATS creds file (a user JWT and its nkey seed).
	Creds string
	// NKeySeed is a user nkey seed (SU...).
	NKeySeed string
	// TLSCA, TLSCert and TLSKey are file paths: the CA that signed the server's certificate,
	// and the client certificate and key for mutual TLS.
	TLSCA, TLSCert, TLSKey string
}

// ConnectOptions name the connection and its identity.
type ConnectOptions struct {
	// Name is the connection's name in the server's monitoring (sluice-<service>).
	Name string
	// Who is what errors call the process ("fetcher", "sluice provision").
	Who string
	// Inbox is the prefix of the connection's reply subjects: a service's permissions allow
	// it to subscribe to its own inbox only (_INBOX_<service>.>). Empty keeps _INBOX.
	Inbox string
	Auth  Auth
	// Timeout bounds the connection handshake (connect_timeout): a server that accepts the
	// connection and never answers fails it. 0 keeps the client's default (2s).
	Timeout time.Duration
}

// Conn is a connection to NATS and its JetStream context. Refused delivers the server's
// permission violations on this connection (as *RefusedError) while someone listens; they are
// logged either way.
type Conn struct {
	NC      *nats.Conn
	JS      jetstream.JetStream
	Refused <-chan error
}

// RefusedError is a subject the server refused this connection's user.
type RefusedError struct {
	Who, User string
	// Op is "publish" or "subscribe".
	Op, Subject string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s: nats user %s may not %s %q (grant it in the permission file, deploy/nats/auth.conf, or fix the credentials)",
		e.Who, e.User, e.Op, e.Subject)
}

var violationRe = regexp.MustCompile(`(?i)permissions violation for (publish|subscription) to "?([^"\s]+)"?`)

// ErrCredentialsInURL refuses a NATS URL holding a user or password.
var ErrCredentialsInURL = errors.New("holds credentials: set nats.user/nats.password, nats.creds or nats.nkey (secret references) instead")

// CheckURL refuses a NATS server URL (or comma-separated list) that holds credentials, naming
// it without them.
func CheckURL(raw string) error {
	for _, one := range strings.Split(raw, ",") {
		u, err := url.Parse(strings.TrimSpace(one))
		if err != nil {
			if strings.Contains(one, "@") {
				return fmt.Errorf("nats url %s: %w", RedactURL(one), ErrCredentialsInURL)
			}
			return fmt.Errorf("nats url %s: invalid", RedactURL(one))
		}
		if u.User != nil {
			return fmt.Errorf("nats url %s: %w", RedactURL(one), ErrCredentialsInURL)
		}
	}
	return nil
}

// RedactURL returns a NATS URL (or list) without any user or password in it.
func RedactURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, one := range parts {
		one = strings.TrimSpace(one)
		if at := strings.LastIndex(one, "@"); at >= 0 {
			scheme := ""
			if j := strings.Index(one, "://"); j >= 0 && j < at {
				scheme = one[:j+3]
			}
			one = scheme + "***@" + one[at+1:]
		}
		parts[i] = one
	}
	return strings.Join(parts, ",")
}

// Connect dials url with reconnects. A URL with credentials is refused; wrong credentials
// fail here with one line naming who connects and as which user.
func Connect(rawURL string, o ConnectOptions, log *slog.Logger) (*Conn, error) {
	if err := CheckURL(rawURL); err != nil {
		return nil, fmt.Errorf("%s: %w", o.Who, err)
	}
	user, opts, err := o.Auth.options()
	if err != nil {
		return nil, fmt.Errorf("%s: nats credentials: %w", o.Who, err)
	}
	refused := make(chan error, 1)
	opts = append(opts,
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "server", nc.ConnectedServerName()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if !errors.Is(err, nats.ErrPermissionViolation) {
				log.Warn("nats error", "err", err)
				return
			}
			r := &RefusedError{Who: o.Who, User: user, Op: "use", Subject: err.Error()}
			if m := violationRe.FindStringSubmatch(err.Error()); m != nil {
				r.Op, r.Subject = strings.ToLower(m[1]), m[2]
				if r.Op == "subscription" {
					r.Op = "subscribe to"
				} else {
					r.Op = "publish to"
				}
			}
			log.Error("nats refused", "user", user, "op", r.Op, "subject", r.Subject)
			select {
			case refused <- r:
			default:
			}
		}),
	)
	if o.Inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.Inbox))
	}
	if o.Timeout > 0 {
		opts = append(opts, nats.Timeout(o.Timeout))
	}
	nc, err := nats.Connect(rawURL, opts...)
	if err != nil {
		if errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
			return nil, fmt.Errorf("%s: nats user %s at %s: authorization violation (wrong or missing credentials)", o.Who, user, RedactURL(rawURL))
		}
		return nil, fmt.Errorf("%s: connect to nats %s as user %s: %w", o.Who, RedactURL(rawURL), user, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &Conn{NC: nc, JS: js, Refused: refused}, nil
}

// options turns the credentials into nats.go options and names the user for errors.
func (a Auth) options() (user string, opts []nats.Option, err error) {
	user = "(none)"
	switch {
	case a.Creds != "":
		jwt, err := nkeys.ParseDecoratedJWT([]byte(a.Creds))
		if err != nil {
			return "", nil, fmt.Errorf("creds: %w", err)
		}
		kp, err := nkeys.ParseDecoratedUserNKey([]byte(a.Creds))
		if err != nil {
			return "", nil, fmt.Errorf("creds: %w", err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return "", nil, fmt.Errorf("creds: %w", err)
		}
		user = pub
		opts = append(opts, nats.UserJWT(func() (string, error) { return jwt, nil }, kp.Sign))
	case a.NKeySeed != "":
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(a.NKeySeed)))
		if err != nil {
			return "", nil, fmt.Errorf("nkey seed: %w", err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return "", nil, fmt.Errorf("nkey seed: %w", err)
		}
		user = pub
		opts = append(opts, nats.Nkey(pub, kp.Sign))
	case a.User != "":
		user = a.User
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	}
	if a.User != "" && (a.Creds != "" || a.NKeySeed != "") {
		user = a.User
	}
	if a.TLSCA != "" {
		opts = append(opts, nats.RootCAs(a.TLSCA))
	}
	if a.TLSCert != "" || a.TLSKey != "" {
		opts = append(opts, nats.ClientCert(a.TLSCert, a.TLSKey))
	}
	return user, opts, nil
}
