package console

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

// The console's actions are the CLI's: trigger and rerun request a date as `sluice trigger`
// does, backfill requests a range as `sluice backfill` does (trigger.RequestDates, with the same
// reprocess modes), pause and unpause go through trigger.SetPaused as `sluice pause` does.
const (
	actTrigger  = "trigger"
	actRerun    = "rerun"
	actBackfill = "backfill"
	actPause    = "pause"
	actUnpause  = "unpause"
)

// TriggeredBy is the trigger recorded on runs the console requests (backfills say "backfill",
// as the CLI's do).
const TriggeredBy = "console"

// action is a parsed, checked action request.
type action struct {
	Name      string
	P         *config.Pipeline
	DS        string
	From, To  string
	Reprocess trigger.Reprocess
	Dates     []string
}

// parseAction reads an action's fields (from the query of a confirm page or the posted form).
func (c *Console) parseAction(name string, get func(string) string) (*action, int, string) {
	a := &action{Name: name}
	switch name {
	case actTrigger, actRerun, actBackfill, actPause, actUnpause:
	default:
		return nil, http.StatusNotFound, fmt.Sprintf("unknown action %q", name)
	}
	p, ok := c.cfg.Pipeline(get("pipeline"))
	if !ok {
		return nil, http.StatusNotFound, fmt.Sprintf("unknown pipeline %q", get("pipeline"))
	}
	a.P = p
	switch name {
	case actTrigger, actRerun:
		a.DS = get("ds")
		if _, err := event.ParseDS(a.DS); err != nil {
			return nil, http.StatusNotFound, fmt.Sprintf("pipeline %s: %v", p.Name, err)
		}
		a.Dates, a.Reprocess = []string{a.DS}, trigger.ReprocessAll
	case actBackfill:
		a.From, a.To = get("from"), get("to")
		dates, err := dateRange(a.From, a.To)
		if err != nil {
			return nil, http.StatusNotFound, fmt.Sprintf("pipeline %s: %v", p.Name, err)
		}
		rp := get("reprocess")
		if rp == "" {
			rp = string(trigger.ReprocessNone)
		}
		if a.Reprocess, err = trigger.ParseReprocess(rp); err != nil {
			return nil, http.StatusNotFound, fmt.Sprintf("pipeline %s: %v", p.Name, err)
		}
		a.Dates = dates
	}
	return a, 0, ""
}

func dateRange(from, to string) ([]string, error) {
	if from == "" || to == "" {
		return nil, fmt.Errorf("a backfill needs from and to dates (YYYY-MM-DD)")
	}
	return trigger.DateRange(from, to)
}

// pageConfirm asks before an action: a form carrying the CSRF token and a fresh request id.
func (c *Console) pageConfirm(w http.ResponseWriter, r *http.Request) {
	a, status, msg := c.parseAction(r.PathValue("action"), r.URL.Query().Get)
	if a == nil {
		c.plain(w, status, msg)
		return
	}
	if c.password == nil {
		c.plain(w, http.StatusForbidden, "this console is read-only: set console.password (a secret reference) to allow actions")
		return
	}
	if !c.loggedIn(r) {
		http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return
	}
	c.render(w, r, http.StatusOK, "confirm", page{Title: "Confirm " + a.Name, Nav: "pipelines",
		Data: map[string]any{"A": a, "RequestID": newRequestID(), "Count": len(a.Dates)}})
}

// act performs a confirmed action: logged in, CSRF token right, once per request id.
func (c *Console) act(w http.ResponseWriter, r *http.Request) {
	if c.password == nil {
		c.plain(w, http.StatusForbidden, "this console is read-only: set console.password (a secret reference) to allow actions")
		return
	}
	if !c.loggedIn(r) {
		c.plain(w, http.StatusUnauthorized, "log in to act: /login")
		return
	}
	if !c.checkCSRF(r) {
		c.plain(w, http.StatusForbidden, "the form's CSRF token is missing or wrong: reload the page and try again")
		return
	}
	a, status, msg := c.parseAction(r.PathValue("action"), r.PostFormValue)
	if a == nil {
		c.plain(w, status, msg)
		return
	}
	id := r.PostFormValue("request_id")
	if len(id) < 16 || len(id) > 64 {
		c.plain(w, http.StatusBadRequest, "the form has no request id: reload the page and try again")
		return
	}
	// The id is the browser's as well as the form's: another browser cannot replay it.
	p, first := c.posts.begin(c.browserID(nil, r)+"/"+a.Name+"/"+id, c.now())
	if !first {
		select {
		case <-p.done:
		case <-r.Context().Done():
			return
		}
		if p.err != nil {
			c.plain(w, http.StatusInternalServerError, p.err.Error())
			return
		}
		http.Redirect(w, r, p.url, http.StatusSeeOther)
		return
	}
	// The action must not stop halfway because the browser went away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
	defer cancel()
	p.url, p.err = c.do(ctx, a)
	close(p.done)
	if p.err != nil {
		c.posts.forget(p.id)
		c.log.Error("console action failed", "action", a.Name, "pipeline", a.P.Name, "err", p.err)
		c.plain(w, http.StatusInternalServerError, fmt.Sprintf("%s %s: %v", a.Name, a.P.Name, p.err))
		return
	}
	c.log.Info("console action", "action", a.Name, "pipeline", a.P.Name, "ds", a.DS, "from", a.From, "to", a.To, "reprocess", string(a.Reprocess))
	http.Redirect(w, r, p.url, http.StatusSeeOther)
}

// do performs an action and returns where its result is shown.
func (c *Console) do(ctx context.Context, a *action) (string, error) {
	switch a.Name {
	case actPause, actUnpause:
		if _, err := trigger.SetPaused(ctx, c.js, c.cfg.NATS.SubjectPrefix, a.P, a.Name == actPause, "unpause"); err != nil {
			return "", err
		}
		return "/pipelines/" + a.P.Name, nil
	case actBackfill:
		if _, err := c.req.RequestDates(ctx, a.P.Name, a.P.SLA, a.Dates, "backfill", a.Reprocess); err != nil {
			return "", err
		}
		return "/pipelines/" + a.P.Name + "/backfill?from=" + a.From + "&to=" + a.To, nil
	}
	res, err := c.req.RequestDates(ctx, a.P.Name, a.P.SLA, a.Dates, TriggeredBy, a.Reprocess)
	if err != nil {
		return "", err
	}
	if len(res) == 1 && res[0].RunID != "" {
		return "/runs/" + a.P.Name + "/" + a.DS + "/" + res[0].RunID, nil
	}
	return "/pipelines/" + a.P.Name, nil
}
