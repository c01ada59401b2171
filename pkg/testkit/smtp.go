// A real SMTP server (emersion/go-smtp) in-process for tests. It listens
// on 127.0.0.1 without TLS, accepts every sender and recipient, offers PLAIN authentication over
// the plain connection and accepts any credentials, and records each message it receives with
// its envelope and the credentials the client authenticated with.

package testkit

import (
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Mail is one message the server accepted.
type Mail struct {
	From string
	To   []string
	// Data is the message as the client sent it: headers and MIME body.
	Data []byte
	// Username and Password are the PLAIN credentials of the session, empty if the client did not
	// authenticate; a test checks with them that a secret reached the server it was meant for.
	Username string
	Password string
}

// SMTPServer is a running SMTP server.
type SMTPServer struct {
	addr *net.TCPAddr

	mu   sync.Mutex
	msgs []Mail
}

// SMTP starts a server on a random port of 127.0.0.1 and stops it when the test ends.
func SMTP(t testing.TB) *SMTPServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("smtp test server: listen: %v", err)
	}
	s := &SMTPServer{addr: l.Addr().(*net.TCPAddr)}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &session{srv: s}, nil
	}))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			t.Errorf("smtp test server: serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return s
}

// Addr returns the host and port the server listens on.
func (s *SMTPServer) Addr() (host string, port int) {
	return s.addr.IP.String(), s.addr.Port
}

// Messages returns a copy of the messages received so far, in order.
func (s *SMTPServer) Messages() []Mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Mail, len(s.msgs))
	for i, m := range s.msgs {
		m.To = slices.Clone(m.To)
		m.Data = bytes.Clone(m.Data)
		out[i] = m
	}
	return out
}

// session is one SMTP connection; it records a message when its DATA completes, before the
// server answers 250, so a client that got its reply finds the message in Messages.
type session struct {
	srv                *SMTPServer
	username, password string
	msg                Mail
}

var _ smtp.AuthSession = (*session)(nil)

func (s *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(_, username, password string) error {
		s.username, s.password = username, password
		return nil
	}), nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.msg = Mail{From: from}
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.msg.To = append(s.msg.To, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m := s.msg
	m.Data, m.Username, m.Password = b, s.username, s.password
	s.srv.mu.Lock()
	s.srv.msgs = append(s.srv.msgs, m)
	s.srv.mu.Unlock()
	return nil
}

func (s *session) Reset() { s.msg = Mail{} }

func (s *session) Logout() error { return nil }
