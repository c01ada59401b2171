package alerter

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	htmltemplate "html/template"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slackutilsx"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/sla"
)

//go:embed templates
var templates embed.FS

var (
	slackTextTmpl = texttemplate.Must(texttemplate.ParseFS(templates, "templates/slack.txt"))
	subjectTmpl   = texttemplate.Must(texttemplate.ParseFS(templates, "templates/subject.txt"))
	emailTextTmpl = texttemplate.Must(texttemplate.ParseFS(templates, "templates/email.txt"))
	emailHTMLTmpl = htmltemplate.Must(htmltemplate.ParseFS(templates, "templates/email.html"))
)

// Kind is what an alert is about; the KV key that deduplicates it names the kind.
type Kind string

const (
	KindFailed    Kind = "failed"
	KindSLAMissed Kind = "sla_missed"
	// KindSuccess and KindRecovery are notices about a completed run; a run gets at most one.
	KindSuccess  Kind = "success"
	KindRecovery Kind = "recovery"
)

// dedupeKind is the kind a delivery is recorded under: one notice per completed run, whichever.
func (k Kind) dedupeKind() string {
	if k == KindSuccess || k == KindRecovery {
		return "completed"
	}
	return string(k)
}

// field is one labelled value of an alert, in the order every channel shows them.
type field struct {
	Name, Value string
	Code        bool // shown as code (ids)
}

// alert is what every channel says about one run: the templates render it.
type alert struct {
	Kind     Kind
	Title    string // "sluice run failed: orders"
	Emoji    string // Slack's header emoji
	Pipeline string
	DS       string
	RunID    string
	Step     string // the failed step, or the step a late run is stuck in
	Attempts int
	Class    string
	Error    string // failures only
	Summary  string // one line for notifications: what happened
	Fields   []field
	RunURL   string // empty when alerts.run_url is not set
	TraceURL string // empty when alerts.trace_url is not set or the trace is unknown
	// slackChannel is the pipeline's own Slack channel, if it sets one.
	slackChannel string
}

// links are what the URL templates need.
type links struct {
	run, trace, traceID string
}

func (l links) apply(a *alert) {
	if l.run != "" {
		a.RunURL = config.Expand(l.run, a.Pipeline, a.DS, a.RunID)
	}
	if l.trace != "" && l.traceID != "" {
		a.TraceURL = strings.ReplaceAll(config.Expand(l.trace, a.Pipeline, a.DS, a.RunID), "{trace_id}", l.traceID)
	}
}

// runTime says how long a run has taken, from its request to end.
func runTime(requested, end time.Time) string {
	if requested.IsZero() || end.Before(requested) {
		return "unknown"
	}
	return end.Sub(requested).Round(time.Second).String()
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func baseFields(r event.Run) []field {
	return []field{{Name: "Pipeline", Value: r.Pipeline}, {Name: "Execution date", Value: r.DS}}
}

// failureAlert describes a failed run; now is when the alert is made (the run's end).
func failureAlert(f *event.Failed, l links, now time.Time) alert {
	a := alert{Kind: KindFailed, Emoji: ":red_circle:", Pipeline: f.Pipeline, DS: f.DS, RunID: f.RunID,
		Step: orUnknown(f.Step), Attempts: f.Attempts, Class: orUnknown(string(f.Class)), Error: orUnknown(f.Error)}
	a.Title = "sluice run failed: " + a.Pipeline
	a.Summary = fmt.Sprintf("%s at step %s for %s after %d attempt(s) (%s)", a.Title, a.Step, a.DS, a.Attempts, a.Class)
	a.Fields = append(baseFields(f.Run),
		field{Name: "Step", Value: a.Step},
		field{Name: "Attempts", Value: fmt.Sprint(a.Attempts)},
		field{Name: "Error class", Value: a.Class},
		field{Name: "Requested", Value: stamp(f.RequestedAt)},
		field{Name: "Run time", Value: runTime(f.RequestedAt, now)},
		field{Name: "Run id", Value: a.RunID, Code: true})
	l.apply(&a)
	return a
}

// slaAlert describes a run that missed its deadline, and where it is stuck.
func slaAlert(m *event.SLAMissed, v sla.Verdict, l links, now time.Time) alert {
	a := alert{Kind: KindSLAMissed, Emoji: ":alarm_clock:", Pipeline: m.Pipeline, DS: m.DS, RunID: m.RunID, Step: v.Step}
	where := v.Step
	if where == "" {
		where = "the queue (not started)"
	}
	state := string(v.State)
	if v.Detail != "" {
		state += ": " + v.Detail
	}
	a.Title = "sluice SLA missed: " + a.Pipeline
	a.Summary = fmt.Sprintf("%s for %s, not completed by %s; stuck in %s", a.Title, a.DS, stamp(m.Deadline), where)
	a.Fields = append(baseFields(m.Run),
		field{Name: "Stuck in", Value: where},
		field{Name: "State", Value: state},
		field{Name: "Deadline", Value: stamp(m.Deadline)},
		field{Name: "Requested", Value: stamp(m.RequestedAt)},
		field{Name: "Run time", Value: runTime(m.RequestedAt, now) + " so far"},
		field{Name: "Run id", Value: a.RunID, Code: true})
	l.apply(&a)
	return a
}

// noticeAlert announces a completed run; previous names the failed run it recovers from.
func noticeAlert(c *event.Completed, previous string, l links, now time.Time) alert {
	a := alert{Kind: KindSuccess, Emoji: ":large_green_circle:", Pipeline: c.Pipeline, DS: c.DS, RunID: c.RunID}
	a.Title = "sluice run completed: " + a.Pipeline
	if previous != "" {
		a.Kind, a.Emoji, a.Title = KindRecovery, ":white_check_mark:", "sluice run recovered: "+a.Pipeline
	}
	a.Summary = fmt.Sprintf("%s for %s: %d rows staged, %d inserted, %d updated", a.Title, a.DS, c.Staged, c.Inserted, c.Updated)
	a.Fields = append(baseFields(c.Run),
		field{Name: "Rows", Value: fmt.Sprintf("%d staged, %d inserted, %d updated, %d unchanged", c.Staged, c.Inserted, c.Updated, c.Unchanged)},
		field{Name: "Partition", Value: orUnknown(c.Partition)})
	if c.Rejected > 0 {
		a.Summary += fmt.Sprintf(", %d quarantined", c.Rejected)
		a.Fields = append(a.Fields, field{Name: "Quarantined", Value: fmt.Sprintf("%d rows in s3://%s/%s", c.Rejected, c.Object.Bucket, c.RejectsKey), Code: true})
	}
	a.Fields = append(a.Fields,
		field{Name: "Requested", Value: stamp(c.RequestedAt)},
		field{Name: "Run time", Value: runTime(c.RequestedAt, now)})
	if previous != "" {
		a.Fields = append(a.Fields, field{Name: "Recovers from", Value: previous, Code: true})
	}
	a.Fields = append(a.Fields, field{Name: "Run id", Value: a.RunID, Code: true})
	l.apply(&a)
	return a
}

func orUnknown(s string) string {
	if strings.TrimSpace(s) == "" {
		return "unknown"
	}
	return s
}

// Slack rejects a message whose header text passes 150 characters, a field 2000 or a section
// 3000, so long values (error messages above all) are cut below those limits.
const (
	slackHeaderMax = 150
	slackFieldMax  = 1900
	slackErrorMax  = 2800
)

// slackMessage renders the plain-text fallback (notifications, old clients) and the Block Kit
// blocks. Every mrkdwn text is escaped: an error message must not become a link or an @channel.
func slackMessage(a alert) (string, []slack.Block, error) {
	esc := a
	esc.Summary = slackEscape(a.Summary, slackFieldMax)
	esc.Error = slackEscape(a.Error, slackErrorMax)
	esc.RunID = slackEscape(a.RunID, slackFieldMax)
	esc.RunURL = slackutilsx.EscapeMessage(a.RunURL)
	esc.TraceURL = slackutilsx.EscapeMessage(a.TraceURL)
	var text bytes.Buffer
	if err := slackTextTmpl.Execute(&text, esc); err != nil {
		return "", nil, fmt.Errorf("render slack text: %w", err)
	}

	fields := make([]*slack.TextBlockObject, 0, len(a.Fields))
	for _, f := range a.Fields {
		v := slackEscape(f.Value, slackFieldMax)
		if f.Code {
			v = "`" + v + "`"
		}
		fields = append(fields, slack.NewTextBlockObject(slack.MarkdownType, "*"+f.Name+"*\n"+v, false, false))
	}
	blocks := []slack.Block{
		slack.NewHeaderBlock(slack.NewTextBlockObject(slack.PlainTextType,
			truncate(a.Emoji+" "+a.Title, slackHeaderMax), true, false)),
	}
	// A section holds at most 10 fields.
	for len(fields) > 0 {
		n := min(len(fields), 10)
		blocks = append(blocks, slack.NewSectionBlock(nil, fields[:n], nil))
		fields = fields[n:]
	}
	if a.Kind == KindFailed {
		blocks = append(blocks, slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType,
			"*Error*\n```"+esc.Error+"```", false, false), nil, nil))
	}
	var links []string
	if a.RunURL != "" {
		links = append(links, "<"+esc.RunURL+"|View run>")
	}
	if a.TraceURL != "" {
		links = append(links, "<"+esc.TraceURL+"|View trace>")
	}
	if len(links) > 0 {
		blocks = append(blocks, slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType,
			strings.Join(links, " · "), false, false), nil, nil))
	}
	return strings.TrimSpace(text.String()), blocks, nil
}

// slackBlocksJSON is the blocks as JSON, indented and without HTML escaping so golden files read
// as Slack shows them; what slack-go posts differs only in whitespace and \u003c-style escapes.
func slackBlocksJSON(blocks []slack.Block) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(blocks); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// slackEscape escapes &, < and > as Slack requires and cuts the result to at most max bytes
// (Slack counts characters, so bytes are a safe bound) without splitting an escape or a character.
func slackEscape(s string, max int) string {
	if e := slackutilsx.EscapeMessage(s); len(e) <= max {
		return e
	}
	var b strings.Builder
	for _, r := range s {
		piece := slackutilsx.EscapeMessage(string(r))
		if b.Len()+len(piece) > max-len("…") {
			break
		}
		b.WriteString(piece)
	}
	return b.String() + "…"
}

// truncate cuts s to at most max bytes on a character boundary, marking the cut.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// emailSubject is the subject line of the alert email (templates/subject.txt), on one line.
func emailSubject(a alert) (string, error) {
	var b bytes.Buffer
	if err := subjectTmpl.Execute(&b, a); err != nil {
		return "", fmt.Errorf("render email subject: %w", err)
	}
	return strings.Join(strings.Fields(b.String()), " "), nil
}

// emailBodies renders the plain-text and the HTML part; html/template escapes the error message.
func emailBodies(a alert) (text, html string, err error) {
	var t, h bytes.Buffer
	if err := emailTextTmpl.Execute(&t, a); err != nil {
		return "", "", fmt.Errorf("render email text: %w", err)
	}
	if err := emailHTMLTmpl.Execute(&h, a); err != nil {
		return "", "", fmt.Errorf("render email html: %w", err)
	}
	return t.String(), h.String(), nil
}
