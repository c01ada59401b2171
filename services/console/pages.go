package console

import (
	"bytes"
	"context"
	"fmt"
	"html/template"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/logstream"
	"github.com/sluice-etl/sluice/pkg/runstate"
)

// Steps are the run's steps in flow order: the grid's columns. (The alerter reacts to a run's
// end; its lines are on the logs page.)
var Steps = []string{"sensor", "fetcher", "validator", "partitioner", "dbtrunner"}

// page is what every template gets.
type page struct {
	Title    string
	Nav      string
	Path     string
	LoggedIn bool
	ReadOnly bool
	CSRF     string
	Topics   []string
	Seq      uint64 // the hub's notice count before the page read its data
	Error    string
	Notice   string
	Data     any
}

var runIDRe = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{26}$`) // a ULID

func parseTemplates() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"ago":     ago,
		"dur":     dur,
		"ms":      func(n int64) string { return dur(time.Duration(n) * time.Millisecond) },
		"bytes":   humanBytes,
		"short":   func(s string) string { return shorten(s, 10) },
		"short60": func(s string) string { return shorten(s, 60) },
		"when":    func(t time.Time) string { return when(t) },
		"iso":     func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"pct":     func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
		"num": func(n int64) string {
			if n < 0 {
				return "—"
			}
			return thousands(n)
		},
		"contains": func(list []string, s string) bool { return slices.Contains(list, s) },
		"list4":    func() []string { return []string{"debug", "info", "warn", "error"} },
		"x10":      func(f float64) string { return strconv.FormatFloat(f*10, 'f', 1, 64) },
	}
	out := map[string]*template.Template{}
	for _, name := range []string{"pipelines", "grid", "run", "logs", "sla", "login", "confirm", "backfill", "message"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// render writes a page; the buffer keeps a template error from sending half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	id := c.browserID(w, r)
	p.CSRF = c.csrfToken(id)
	p.LoggedIn = c.loggedIn(r)
	p.ReadOnly = c.password == nil
	p.Path = r.URL.RequestURI()
	p.Seq, _ = r.Context().Value(seqKey{}).(uint64)
	var b bytes.Buffer
	if err := c.tmpl[name].Execute(&b, p); err != nil {
		c.log.Error("render console page", "page", name, "err", err)
		http.Error(w, "could not render the page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// plain answers with a one-line text message (bad input, refusals).
func (c *Console) plain(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = fmt.Fprintln(w, msg)
}

func (c *Console) notFound(w http.ResponseWriter, _ *http.Request, msg string) {
	c.plain(w, http.StatusNotFound, msg)
}

// pipeline finds the URL's pipeline or answers 404.
func (c *Console) pipeline(w http.ResponseWriter, r *http.Request) (*config.Pipeline, bool) {
	name := r.PathValue("pipeline")
	p, ok := c.cfg.Pipeline(name)
	if !ok {
		c.notFound(w, r, fmt.Sprintf("unknown pipeline %q", name))
	}
	return p, ok
}

func (c *Console) runFromPath(w http.ResponseWriter, r *http.Request) (*config.Pipeline, runstate.Record, bool) {
	p, ok := c.pipeline(w, r)
	if !ok {
		return nil, runstate.Record{}, false
	}
	ds, runID := r.PathValue("ds"), r.PathValue("run")
	if _, err := event.ParseDS(ds); err != nil {
		c.notFound(w, r, fmt.Sprintf("pipeline %s: %v", p.Name, err))
		return nil, runstate.Record{}, false
	}
	if !runIDRe.MatchString(runID) {
		c.notFound(w, r, fmt.Sprintf("pipeline %s %s: %q is not a run id", p.Name, ds, runID))
		return nil, runstate.Record{}, false
	}
	rec, ok := c.runs.get(p.Name, ds, runID)
	if !ok { // just requested: the watch may not have brought it yet
		if r, err := c.runs.store.Get(r.Context(), p.Name, ds, runID); err == nil {
			rec, ok = r, true
		}
	}
	if !ok {
		c.notFound(w, r, fmt.Sprintf("pipeline %s %s: no run %s", p.Name, ds, runID))
		return nil, runstate.Record{}, false
	}
	return p, rec, true
}

// cell is one step of one run as the grid and the pipelines page colour it.
type cell struct {
	State string // a runstate.State, or "none" (not reached)
	Title string
	Retry bool
}

// stepCells derives each step's state from a run record.
func stepCells(rec runstate.Record) []cell {
	done := map[string]event.StepResult{}
	for _, s := range rec.Steps {
		done[s.Step] = s
	}
	out := make([]cell, len(Steps))
	reached := true
	for i, step := range Steps {
		c := cell{State: "none", Title: step + ": not run"}
		if s, ok := done[step]; ok {
			c = cell{State: string(runstate.Completed), Retry: s.Attempts > 1 && step != "sensor",
				Title: fmt.Sprintf("%s: completed in %s, %d attempt(s)", step, dur(time.Duration(s.DurationMS)*time.Millisecond), s.Attempts)}
		} else if step == rec.Step && reached {
			c = cell{State: string(rec.State), Retry: rec.Attempts > 1, Title: step + ": " + describe(rec)}
			if rec.State == runstate.Queued {
				c.State = "queued"
			}
			reached = false
		} else if reached && rec.Step == "" && !rec.State.Final() && step == "sensor" {
			c = cell{State: string(rec.State), Title: step + ": " + describe(rec)}
			reached = false
		} else if reached && !rec.State.Final() && rec.Step != "" && !slices.Contains(Steps, rec.Step) {
			continue
		} else if reached && rec.State.Final() {
			reached = false
			if rec.State == runstate.Skipped {
				c = cell{State: string(runstate.Skipped), Title: step + ": skipped"}
			}
		}
		out[i] = c
	}
	// A run between steps: the next step not yet done is queued.
	if rec.State == runstate.Running && strings.HasPrefix(rec.Detail, runstate.HandedOn) {
		for i, step := range Steps {
			if _, ok := done[step]; !ok && out[i].State == "none" {
				out[i] = cell{State: "queued", Title: step + ": queued"}
				break
			}
		}
	}
	return out
}

// describe is a run's state in words, with its error.
func describe(r runstate.Record) string {
	if r.Error != "" {
		return r.Describe() + " — " + r.Error
	}
	return r.Describe()
}

// times splits a run's time into waiting (queued before its first step and between steps, in
// the broker) and running (inside steps).
func times(rec runstate.Record, now time.Time) (wait, run, total time.Duration) {
	end := rec.UpdatedAt
	if !rec.State.Final() {
		end = now
	}
	total = end.Sub(rec.RequestedAt)
	for _, s := range rec.Steps {
		run += time.Duration(s.DurationMS) * time.Millisecond
	}
	wait = max(total-run, 0)
	return wait, run, total
}

type runRow struct {
	Rec     runstate.Record
	Cells   []cell
	Wait    time.Duration
	Run     time.Duration
	Total   time.Duration
	Earlier int // earlier runs of the same date
	URL     string
}

func (c *Console) row(rec runstate.Record, now time.Time) runRow {
	w, r, t := times(rec, now)
	return runRow{Rec: rec, Cells: stepCells(rec), Wait: w, Run: r, Total: t, URL: runURL(rec)}
}

func runURL(r runstate.Record) string { return "/runs/" + r.Pipeline + "/" + r.DS + "/" + r.RunID }

// ---- pipelines -------------------------------------------------------------------------

type pipelineView struct {
	P          *config.Pipeline
	Next       time.Time
	Paused     bool
	Last       []runRow // newest first, up to 30
	Rate       float64  // success rate of the ended runs among Last
	Ended      int
	Trend      string // SVG polyline points of the durations of Last's completed runs
	TrendMax   time.Duration
	Lease      string
	LeaseURL   string
	SLA        string
	SLAMissed  int
	Running    int
	LastFailed *runstate.Record
}

func (c *Console) pagePipelines(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := c.now()
	var views []pipelineView
	misses, _ := c.slaMisses(ctx, "")
	for i := range c.cfg.Pipelines {
		p := &c.cfg.Pipelines[i]
		v := pipelineView{P: p, Paused: c.scheduleState(ctx, p.Name).Paused, Next: nextFire(p.Schedule, p.Timezone, now)}
		runs := c.runs.runs(p.Name)
		var durs []time.Duration
		for _, rec := range runs {
			if !rec.State.Final() {
				v.Running++
			}
			if len(v.Last) < 30 {
				row := c.row(rec, now)
				v.Last = append(v.Last, row)
				if rec.State.Final() && rec.State != runstate.Skipped {
					v.Ended++
					if rec.State == runstate.Completed {
						v.Rate++
						durs = append(durs, row.Total)
					}
				}
				if rec.State == runstate.Failed && v.LastFailed == nil {
					r := rec
					v.LastFailed = &r
				}
			}
		}
		if v.Ended > 0 {
			v.Rate = 100 * v.Rate / float64(v.Ended)
		}
		slices.Reverse(v.Last) // oldest left, as time reads
		slices.Reverse(durs)
		v.Trend, v.TrendMax = sparkline(durs, 120, 24)
		if h, ok := c.leaseHolder(ctx, p.Name); ok {
			v.Lease = h.DS + " · " + shorten(h.RunID, 10) + " · fence " + strconv.FormatUint(h.Fence, 10)
			v.LeaseURL = "/runs/" + p.Name + "/" + h.DS + "/" + h.RunID
		}
		if p.SLA != nil {
			v.SLA = "within " + dur(p.SLA.Within)
			for _, m := range misses {
				if m.Pipeline == p.Name && now.Sub(m.FiredAt) < 7*24*time.Hour {
					v.SLAMissed++
				}
			}
		}
		views = append(views, v)
	}
	c.render(w, r, http.StatusOK, "pipelines", page{Title: "Pipelines", Nav: "pipelines", Topics: []string{"*"}, Data: views})
}

// sparkline returns polyline points for values scaled into w×h, and the largest value.
func sparkline(vals []time.Duration, w, h int) (string, time.Duration) {
	if len(vals) < 2 {
		return "", 0
	}
	top := slices.Max(vals)
	if top <= 0 {
		top = 1
	}
	var b strings.Builder
	for i, v := range vals {
		x := float64(i) * float64(w) / float64(len(vals)-1)
		y := float64(h) - 2 - float64(v)/float64(top)*float64(h-4)
		fmt.Fprintf(&b, "%.1f,%.1f ", x, y)
	}
	return strings.TrimSpace(b.String()), top
}

// ---- grid ------------------------------------------------------------------------------

type gridView struct {
	P          *config.Pipeline
	Body       template.HTML // the rows, rendered by gridRows
	Steps      []string
	Rows       []runRow
	States     []string
	State      string
	From, To   string
	Limit      int
	Total      int
	Shown      int
	Paused     bool
	Counts     map[string]int
	Today      string
	DefaultRep string
}

// States lists the run states the grid filters by: those pkg/runstate defines, then any other
// state found in the records (a newer writer's).
func (c *Console) states(runs []runstate.Record) []string {
	out := []string{string(runstate.Queued), string(runstate.Waiting), string(runstate.Running), string(runstate.Retrying), string(runstate.Completed),
		string(runstate.Failed), string(runstate.Skipped), string(runstate.Lost)}
	for _, r := range runs {
		if !slices.Contains(out, string(r.State)) {
			out = append(out, string(r.State))
		}
	}
	return out
}

func (c *Console) pageGrid(w http.ResponseWriter, r *http.Request) {
	p, ok := c.pipeline(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	v := gridView{P: p, Steps: Steps, State: q.Get("state"), From: q.Get("from"), To: q.Get("to"), Limit: 200, Counts: map[string]int{},
		Paused: c.scheduleState(r.Context(), p.Name).Paused, Today: c.now().UTC().Format(time.DateOnly)}
	for _, d := range []struct{ name, v string }{{"from", v.From}, {"to", v.To}} {
		if d.v != "" {
			if _, err := event.ParseDS(d.v); err != nil {
				c.notFound(w, r, fmt.Sprintf("pipeline %s: %s: %v", p.Name, d.name, err))
				return
			}
		}
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 5000 {
			c.notFound(w, r, fmt.Sprintf("pipeline %s: limit %q must be 1 to 5000", p.Name, l))
			return
		}
		v.Limit = n
	}
	runs := c.runs.runs(p.Name)
	v.States = c.states(runs)
	if v.State != "" && !slices.Contains(v.States, v.State) {
		c.notFound(w, r, fmt.Sprintf("pipeline %s: unknown state %q", p.Name, v.State))
		return
	}
	now := c.now()
	seen := map[string]int{}   // ds -> index in rows
	for _, rec := range runs { // newest request first: the first run of a date is its latest
		if i, ok := seen[rec.DS]; ok {
			if i >= 0 {
				v.Rows[i].Earlier++
			}
			continue
		}
		if (v.From != "" && rec.DS < v.From) || (v.To != "" && rec.DS > v.To) {
			continue
		}
		v.Total++
		v.Counts[string(rec.State)]++
		if (v.State != "" && string(rec.State) != v.State) || len(v.Rows) >= v.Limit {
			seen[rec.DS] = -1
			continue
		}
		seen[rec.DS] = len(v.Rows)
		v.Rows = append(v.Rows, c.row(rec, now))
	}
	sort.SliceStable(v.Rows, func(i, j int) bool { return v.Rows[i].Rec.DS > v.Rows[j].Rec.DS })
	v.Shown = len(v.Rows)
	v.Body = gridRows(v.Rows)
	c.render(w, r, http.StatusOK, "grid", page{Title: p.Name, Nav: "pipelines", Topics: []string{"p:" + p.Name}, Data: v})
}

// gridRows writes the grid's rows directly rather than through html/template: with a thousand
// rows the template's reflective calls were most of the page's time (bench/RESULTS.md,
// Console). Every value is escaped here as the template would.
func gridRows(rows []runRow) template.HTML {
	var b strings.Builder
	b.Grow(len(rows) * 700)
	esc := template.HTMLEscapeString
	for _, r := range rows {
		u := esc(r.URL)
		st := esc(string(r.Rec.State))
		b.WriteString(`<tr><td class="mono"><a href="`)
		b.WriteString(u)
		b.WriteString(`">`)
		b.WriteString(esc(r.Rec.DS))
		b.WriteString(`</a></td><td><span class="pill `)
		b.WriteString(st)
		b.WriteString(`">`)
		b.WriteString(st)
		b.WriteString(`</span></td>`)
		for _, c := range r.Cells {
			b.WriteString(`<td class="c"><i class="cell s-`)
			b.WriteString(esc(c.State))
			if c.Retry {
				b.WriteString(` retry`)
			}
			b.WriteString(`" title="`)
			b.WriteString(esc(c.Title))
			b.WriteString(`"></i></td>`)
		}
		fmt.Fprintf(&b, `<td class="num muted">%s</td><td class="num">%s</td><td class="num">%s</td><td class="muted">%s</td><td class="mono small"><a href="%s">%s</a>`,
			dur(r.Wait), dur(r.Run), dur(r.Total), esc(r.Rec.Trigger), u, esc(shorten(r.Rec.RunID, 10)))
		if r.Earlier > 0 {
			fmt.Fprintf(&b, ` <span class="muted">+%d</span>`, r.Earlier)
		}
		b.WriteString("</td></tr>\n")
	}
	return template.HTML(b.String()) //nolint:gosec // every value above is escaped
}

// ---- backfill progress -----------------------------------------------------------------

func (c *Console) pageBackfill(w http.ResponseWriter, r *http.Request) {
	p, ok := c.pipeline(w, r)
	if !ok {
		return
	}
	from, to := r.URL.Query().Get("from"), r.URL.Query().Get("to")
	dates, err := dateRange(from, to)
	if err != nil {
		c.notFound(w, r, fmt.Sprintf("pipeline %s: %v", p.Name, err))
		return
	}
	now := c.now()
	type item struct {
		DS  string
		Row *runRow
	}
	var items []item
	counts := map[string]int{}
	for _, ds := range dates {
		it := item{DS: ds}
		if rec, ok := c.runs.latest(p.Name, ds); ok {
			row := c.row(rec, now)
			it.Row = &row
			counts[string(rec.State)]++
		} else {
			counts["none"]++
		}
		items = append(items, it)
	}
	ended := counts["completed"] + counts["failed"] + counts["skipped"]
	// The progress bar: one segment per state, ended states first.
	type segment struct {
		State string
		X, W  float64 // per mille
	}
	var segs []segment
	x := 0.0
	for _, st := range append([]string{"completed", "failed", "skipped"}, c.states(nil)...) {
		n := counts[st]
		if n == 0 || slices.ContainsFunc(segs, func(g segment) bool { return g.State == st }) {
			continue
		}
		w := 1000 * float64(n) / float64(len(dates))
		segs = append(segs, segment{State: st, X: x, W: w})
		x += w
	}
	c.render(w, r, http.StatusOK, "backfill", page{Title: p.Name + " backfill", Nav: "pipelines", Topics: []string{"p:" + p.Name},
		Data: map[string]any{"P": p, "From": from, "To": to, "Items": items, "Counts": counts, "Ended": ended, "Total": len(dates), "Segments": segs}})
}

// ---- run -------------------------------------------------------------------------------

type bar struct {
	Label      string
	State      string
	Left       float64 // percent of the timeline
	Width      float64
	Wait       bool // time in the broker, not in a step
	Title      string
	Attempts   int
	Duration   time.Duration
	Start, End time.Time
}

type runView struct {
	P         *config.Pipeline
	Rec       runstate.Record
	Row       runRow
	Bars      []bar
	Ticks     []string
	Events    []runEvent
	EventsErr string
	Landed    *event.Landed
	Validated *event.Validated
	Completed *event.Completed
	Failed    *event.Failed
	Available *event.Available
	Fence     uint64
	TraceURL  string
	DocsURL   string
	Others    []runstate.Record
	LogCount  int
	Bucket    string
}

func (c *Console) pageRun(w http.ResponseWriter, r *http.Request) {
	p, rec, ok := c.runFromPath(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	now := c.now()
	v := runView{P: p, Rec: rec, Row: c.row(rec, now), Bucket: c.cfg.S3.Bucket}
	evs, err := c.runEvents(ctx, p.Name, rec.DS, rec.RunID)
	if err != nil {
		v.EventsErr = err.Error()
	}
	v.Events = evs
	for _, e := range evs {
		if f := e.Event.Header().Fence; f > v.Fence {
			v.Fence = f
		}
		switch x := e.Event.(type) {
		case *event.Available:
			v.Available = x
		case *event.Landed:
			v.Landed = x
		case *event.Validated:
			v.Validated = x
		case *event.Completed:
			v.Completed = x
		case *event.Failed:
			v.Failed = x
		}
	}
	if t := c.cfg.Alerts.TraceURL; t != "" && rec.TraceID != "" {
		v.TraceURL = strings.ReplaceAll(config.Expand(t, p.Name, rec.DS, rec.RunID), "{trace_id}", rec.TraceID)
	}
	if v.Completed != nil && v.Completed.DocsKey != "" && c.docs != nil {
		v.DocsURL = "/docs/" + p.Name + "/" + rec.DS + "/" + rec.RunID + "/"
	}
	for _, o := range c.runs.runs(p.Name) {
		if o.DS == rec.DS && o.RunID != rec.RunID {
			v.Others = append(v.Others, o)
		}
	}
	v.Bars, v.Ticks = timeline(rec, v.Available, now)
	c.render(w, r, http.StatusOK, "run", page{Title: p.Name + " " + rec.DS, Nav: "pipelines",
		Topics: []string{"r:" + runstate.Key(p.Name, rec.DS, rec.RunID)}, Data: v})
}

// timeline lays a run's steps out on one time axis: the wait before each step (in the broker:
// queued, or retry back-off) and the step itself, with the running step growing until now.
func timeline(rec runstate.Record, avail *event.Available, now time.Time) ([]bar, []string) {
	start := rec.RequestedAt
	end := rec.UpdatedAt
	if !rec.State.Final() {
		end = now
	}
	if start.IsZero() || !end.After(start) {
		return nil, nil
	}
	var bars []bar
	prev := start
	add := func(b bar) {
		if b.End.Before(b.Start) {
			b.End = b.Start
		}
		bars = append(bars, b)
	}
	done := map[string]bool{}
	for _, s := range rec.Steps {
		done[s.Step] = true
		st := s.StartedAt
		if st.IsZero() || st.Before(start) {
			st = prev
		}
		e := st.Add(time.Duration(s.DurationMS) * time.Millisecond)
		if s.Step == "sensor" && avail != nil && avail.Pokes > 1 {
			// The sensor's deliveries before the last one found no file: that time is the
			// deferrable wait for the source, not time in a step.
			add(bar{Label: fmt.Sprintf("sensor · %d pokes", avail.Pokes), State: "waiting", Start: prev, End: e, Duration: e.Sub(prev),
				Title: fmt.Sprintf("waiting for the source: %d pokes over %s", avail.Pokes, dur(e.Sub(prev)))})
			prev = e
			continue
		}
		if st.Sub(prev) > 0 {
			add(bar{Label: "wait", State: "wait", Wait: true, Start: prev, End: st, Title: "in the broker before " + s.Step + ": " + dur(st.Sub(prev))})
		}
		add(bar{Label: s.Step, State: "completed", Start: st, End: e, Attempts: s.Attempts, Duration: e.Sub(st),
			Title: fmt.Sprintf("%s: %s, %d attempt(s)", s.Step, dur(e.Sub(st)), s.Attempts)})
		prev = e
	}
	if rec.Step != "" && !done[rec.Step] {
		st := prev
		if rec.Span != nil && rec.Span.Step == rec.Step && !rec.Span.Started.IsZero() {
			if rec.Span.Started.Sub(prev) > 0 {
				add(bar{Label: "wait", State: "wait", Wait: true, Start: prev, End: rec.Span.Started, Title: "in the broker before " + rec.Step})
			}
			st = rec.Span.Started
		}
		add(bar{Label: rec.Step, State: string(rec.State), Start: st, End: end, Attempts: rec.Attempts, Duration: end.Sub(st), Title: rec.Step + ": " + describe(rec)})
	} else if !rec.State.Final() && end.Sub(prev) > 0 {
		add(bar{Label: "wait", State: "wait", Wait: true, Start: prev, End: end, Title: "queued: " + dur(end.Sub(prev))})
	}
	last := end
	for _, b := range bars {
		if b.End.After(last) {
			last = b.End
		}
	}
	span := last.Sub(start)
	// Waits too short to see are left out: they would only add rows.
	bars = slices.DeleteFunc(bars, func(b bar) bool { return b.Wait && b.End.Sub(b.Start) < max(50*time.Millisecond, span/100) })
	for i := range bars {
		bars[i].Left = 100 * float64(bars[i].Start.Sub(start)) / float64(span)
		bars[i].Width = max(100*float64(bars[i].End.Sub(bars[i].Start))/float64(span), 0.4)
		if bars[i].Left+bars[i].Width > 100 {
			bars[i].Width = 100 - bars[i].Left
		}
	}
	var ticks []string
	for i := 0; i <= 4; i++ {
		ticks = append(ticks, "+"+dur(span*time.Duration(i)/4))
	}
	return bars, ticks
}

// ---- logs ------------------------------------------------------------------------------

type logGroup struct {
	Service string
	Attempt int
	Failed  bool
	Lines   []logLine
}

type logLine struct {
	logstream.Record
	Extra string
}

var levels = map[string]int{"DEBUG": -4, "INFO": 0, "WARN": 4, "ERROR": 8}

func (c *Console) pageLogs(w http.ResponseWriter, r *http.Request) {
	p, rec, ok := c.runFromPath(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	level, step := strings.ToUpper(q.Get("level")), q.Get("step")
	if level != "" {
		if _, ok := levels[level]; !ok {
			c.notFound(w, r, fmt.Sprintf("pipeline %s %s: unknown level %q (debug, info, warn, error)", p.Name, rec.DS, q.Get("level")))
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	recs, err := c.runLogs(ctx, p.Name, rec.DS, rec.RunID)
	errText := ""
	if err != nil {
		errText = err.Error()
	}
	var groups []*logGroup
	index := map[string]*logGroup{}
	services := []string{}
	for _, l := range recs {
		if !slices.Contains(services, l.Service) {
			services = append(services, l.Service)
		}
		if level != "" && levels[strings.ToUpper(l.Level)] < levels[level] {
			continue
		}
		if step != "" && l.Service != step {
			continue
		}
		// One group per step; each line says its attempt (lines a service logs on its own,
		// without the router's attempt, take the attempt of the line before).
		g := index[l.Service]
		if g == nil {
			g = &logGroup{Service: l.Service}
			index[l.Service] = g
			groups = append(groups, g)
		}
		if l.Attempt == 0 {
			l.Attempt = g.Attempt
		}
		g.Attempt = max(g.Attempt, l.Attempt)
		line := logLine{Record: l}
		if len(l.Attrs) > 0 {
			keys := make([]string, 0, len(l.Attrs))
			for k := range l.Attrs {
				if k != "trace_id" && k != "span_id" {
					keys = append(keys, k)
				}
			}
			sort.Strings(keys)
			var b strings.Builder
			for _, k := range keys {
				fmt.Fprintf(&b, "%s=%v ", k, l.Attrs[k])
			}
			line.Extra = strings.TrimSpace(b.String())
		}
		if l.Level == "ERROR" && (rec.State == runstate.Failed || strings.EqualFold(l.Service, rec.Step)) {
			g.Failed = true
		}
		g.Lines = append(g.Lines, line)
	}
	// The failed step's lines first: that is what someone opening this page at 3 a.m. wants.
	sort.SliceStable(groups, func(i, j int) bool {
		fi := groups[i].Failed && groups[i].Service == rec.Step
		fj := groups[j].Failed && groups[j].Service == rec.Step
		return fi && !fj
	})
	c.render(w, r, http.StatusOK, "logs", page{Title: p.Name + " " + rec.DS + " logs", Nav: "pipelines",
		Topics: []string{"r:" + runstate.Key(p.Name, rec.DS, rec.RunID), "l:" + p.Name + "." + rec.DS},
		Data: map[string]any{"P": p, "Rec": rec, "Groups": groups, "Level": strings.ToLower(level), "Step": step, "Services": services,
			"Count": len(recs), "Err": errText, "Live": !rec.State.Final(), "RunURL": runURL(rec)}})
}

// ---- SLA and alerts --------------------------------------------------------------------

func (c *Console) pageSLA(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("pipeline")
	if name != "" {
		if _, ok := c.cfg.Pipeline(name); !ok {
			c.notFound(w, r, fmt.Sprintf("unknown pipeline %q", name))
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	misses, err1 := c.slaMisses(ctx, name)
	alerts, err2 := c.sentAlerts(ctx)
	failed, err3 := c.failedAlerts(ctx, name)
	alerts = append(alerts, failed...)
	if name != "" {
		alerts = slices.DeleteFunc(alerts, func(a sentAlert) bool { return a.Pipeline != name })
	}
	sort.SliceStable(alerts, func(i, j int) bool { return alerts[i].At.After(alerts[j].At) })
	var errs []string
	for _, err := range []error{err1, err2, err3} {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	type slaRow struct {
		slaMiss
		State string
		URL   string
	}
	var rows []slaRow
	for _, m := range misses {
		row := slaRow{slaMiss: m, URL: "/runs/" + m.Pipeline + "/" + m.DS + "/" + m.RunID}
		if rec, ok := c.runs.get(m.Pipeline, m.DS, m.RunID); ok {
			row.State = string(rec.State)
		}
		rows = append(rows, row)
	}
	var slas []map[string]string
	for _, p := range c.cfg.Pipelines {
		s := map[string]string{"Name": p.Name, "Within": "none", "Channels": joinChannels(p.Alerts)}
		if p.SLA != nil {
			s["Within"] = dur(p.SLA.Within)
		}
		if s["Channels"] == "" {
			s["Channels"] = "none configured"
		}
		slas = append(slas, s)
	}
	c.render(w, r, http.StatusOK, "sla", page{Title: "SLA and alerts", Nav: "sla", Topics: []string{"*"},
		Data: map[string]any{"Misses": rows, "Alerts": alerts, "Errors": errs, "Pipeline": name, "Pipelines": c.cfg.Pipelines, "SLAs": slas}})
}

func (c *Console) latestRun(w http.ResponseWriter, r *http.Request) {
	p, ok := c.pipeline(w, r)
	if !ok {
		return
	}
	ds := r.PathValue("ds")
	if _, err := event.ParseDS(ds); err != nil {
		c.notFound(w, r, fmt.Sprintf("pipeline %s: %v", p.Name, err))
		return
	}
	rec, ok := c.runs.latest(p.Name, ds)
	if !ok {
		c.notFound(w, r, fmt.Sprintf("pipeline %s: no run for %s", p.Name, ds))
		return
	}
	http.Redirect(w, r, runURL(rec), http.StatusFound)
}

// ---- formatting ------------------------------------------------------------------------

func dur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	d := time.Since(t)
	if d < 0 {
		return "in " + dur(-d)
	}
	return dur(d) + " ago"
}

func when(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// joinChannels lists a pipeline's alert channels: "slack, email".
func joinChannels(chs []config.AlertChannel) string {
	s := make([]string, len(chs))
	for i, ch := range chs {
		s[i] = string(ch)
	}
	return strings.Join(s, ", ")
}
