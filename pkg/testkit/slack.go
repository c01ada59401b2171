// A Slack API for tests: slack-go's slacktest server with chat.postMessage recorded, so tests can
// count and read the Slack messages sluice posts.

package testkit

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"
)

// SlackPost is one chat.postMessage call the Slack test server received.
type SlackPost struct {
	Channel string
	Text    string
	Blocks  string // JSON, as posted
	Token   string // the credential the request carried
}

// SlackRecorder answers chat.postMessage on slack-go's slacktest server and records each call.
// slacktest's own handler forwards posted messages to RTM websocket clients and keeps no list of
// them, so the test replaces that one route through slacktest's Customize hook.
type SlackRecorder struct {
	mu       sync.Mutex
	posts    []SlackPost
	attempts int
	// failWith makes calls fail: a Slack error code ("channel_not_found") or an HTTP status.
	failWith string
}

// Slack runs the server and stops it when the test ends.
func Slack(t testing.TB) (*slacktest.Server, *SlackRecorder) {
	t.Helper()
	rec := &SlackRecorder{}
	ts := slacktest.NewTestServer(func(c slacktest.Customize) {
		c.Handle("/chat.postMessage", rec.postMessage)
	})
	ts.Start()
	t.Cleanup(ts.Stop)
	return ts, rec
}

func (r *SlackRecorder) postMessage(w http.ResponseWriter, req *http.Request) {
	if err := req.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts++
	reply := func(v any) { _ = json.NewEncoder(w).Encode(v) }
	code, atoiErr := strconv.Atoi(r.failWith)
	switch f := r.failWith; {
	case f == "":
	case atoiErr == nil: // an HTTP status
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		http.Error(w, http.StatusText(code), code)
		return
	default:
		reply(map[string]any{"ok": false, "error": f})
		return
	}
	// Decode the blocks as slacktest's own handler does, so malformed blocks fail here too.
	var blocks slack.Blocks
	if err := json.Unmarshal([]byte(req.PostForm.Get("blocks")), &blocks); err != nil {
		reply(map[string]any{"ok": false, "error": "invalid_blocks"})
		return
	}
	token := req.PostForm.Get("token")
	if token == "" {
		token = strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
	}
	r.posts = append(r.posts, SlackPost{
		Channel: req.PostForm.Get("channel"),
		Text:    req.PostForm.Get("text"),
		Blocks:  req.PostForm.Get("blocks"),
		Token:   token,
	})
	reply(map[string]any{"ok": true, "channel": req.PostForm.Get("channel"), "ts": fmt.Sprint(time.Now().UnixNano())})
}

func (r *SlackRecorder) Posts() []SlackPost {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.posts)
}

func (r *SlackRecorder) Fail(with string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failWith = with
}

// Attempts counts every chat.postMessage call, failed ones included.
func (r *SlackRecorder) Attempts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attempts
}
