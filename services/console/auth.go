package console

import (
	"container/list"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Cookies: an anonymous browser id (what CSRF tokens are bound to) and the signed session.
const (
	idCookie      = "sluice_id"
	sessionCookie = "sluice_session"
	sessionTTL    = 12 * time.Hour
)

func (c *Console) sign(msg string) string {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(msg))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (c *Console) verify(msg, sig string) bool {
	return hmac.Equal([]byte(c.sign(msg)), []byte(sig))
}

// browserID returns the browser's id, setting the cookie when it has none (or a forged one).
func (c *Console) browserID(w http.ResponseWriter, r *http.Request) string {
	if ck, err := r.Cookie(idCookie); err == nil {
		if id, sig, ok := strings.Cut(ck.Value, "."); ok && c.verify("id:"+id, sig) {
			return id
		}
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	if w != nil {
		http.SetCookie(w, &http.Cookie{Name: idCookie, Value: id + "." + c.sign("id:"+id), Path: "/", HttpOnly: true,
			SameSite: http.SameSiteLaxMode, Secure: strings.HasPrefix(c.cfg.Console.URL, "https://")})
	}
	return id
}

// csrfToken is the token every form of this browser carries.
func (c *Console) csrfToken(id string) string { return c.sign("csrf:" + id) }

// checkCSRF accepts a form whose token matches the browser's id cookie.
func (c *Console) checkCSRF(r *http.Request) bool {
	ck, err := r.Cookie(idCookie)
	if err != nil {
		return false
	}
	id, sig, ok := strings.Cut(ck.Value, ".")
	if !ok || !c.verify("id:"+id, sig) {
		return false
	}
	return hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(c.csrfToken(id)))
}

// loggedIn reports whether r carries a valid session bound to its browser id.
func (c *Console) loggedIn(r *http.Request) bool {
	if c.password == nil {
		return false
	}
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return false
	}
	// <browser id>.<expiry unix>.<signature>
	parts := strings.Split(ck.Value, ".")
	if len(parts) != 3 || !c.verify("session:"+parts[0]+"."+parts[1], parts[2]) {
		return false
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || c.now().Unix() > exp {
		return false
	}
	idc, err := r.Cookie(idCookie)
	return err == nil && strings.HasPrefix(idc.Value, parts[0]+".")
}

func (c *Console) pageLogin(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "login", page{Title: "Log in", Data: map[string]any{"Next": safeNext(r.URL.Query().Get("next"))}})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if !c.checkCSRF(r) {
		c.plain(w, http.StatusForbidden, "the form's CSRF token is missing or wrong: reload the page and try again")
		return
	}
	if c.password == nil {
		c.plain(w, http.StatusForbidden, "this console is read-only: set console.password (a secret reference) to allow actions")
		return
	}
	pw := []byte(r.PostFormValue("password"))
	if subtle.ConstantTimeCompare(pw, c.password) != 1 {
		time.Sleep(300 * time.Millisecond) // slows guessing
		c.render(w, r, http.StatusUnauthorized, "login", page{Title: "Log in", Error: "wrong password",
			Data: map[string]any{"Next": safeNext(r.PostFormValue("next"))}})
		return
	}
	id := c.browserID(w, r)
	exp := strconv.FormatInt(c.now().Add(sessionTTL).Unix(), 10)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id + "." + exp + "." + c.sign("session:"+id+"."+exp), Path: "/",
		HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: int(sessionTTL.Seconds()), Secure: strings.HasPrefix(c.cfg.Console.URL, "https://")})
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if !c.checkCSRF(r) {
		c.plain(w, http.StatusForbidden, "the form's CSRF token is missing or wrong: reload the page and try again")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// safeNext keeps a redirect target on this site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/"
	}
	return next
}

// postLog remembers what each form post (by its request id) did, so a form posted twice (a
// double click, a resubmitted page) does its action once and answers the same both times.
// Bounded: the oldest ids are forgotten first, and after ttl.
type postLog struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	byID  map[string]*list.Element
	order *list.List
}

type post struct {
	id   string
	at   time.Time
	done chan struct{}
	url  string // where the action's result is shown
	err  error
}

func newPostLog(max int, ttl time.Duration) *postLog {
	return &postLog{max: max, ttl: ttl, byID: map[string]*list.Element{}, order: list.New()}
}

// begin returns the post with this id and whether the caller is the first (and must do it).
func (l *postLog) begin(id string, now time.Time) (*post, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for e := l.order.Front(); e != nil && (l.order.Len() > l.max || now.Sub(e.Value.(*post).at) > l.ttl); e = l.order.Front() {
		delete(l.byID, e.Value.(*post).id)
		l.order.Remove(e)
	}
	if e, ok := l.byID[id]; ok {
		return e.Value.(*post), false
	}
	p := &post{id: id, at: now, done: make(chan struct{})}
	l.byID[id] = l.order.PushBack(p)
	return p, true
}

// forget drops a post whose action failed, so the same form can be posted again.
func (l *postLog) forget(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.byID[id]; ok {
		delete(l.byID, id)
		l.order.Remove(e)
	}
}

func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
