package alerter

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	htmltemplate "html/template"
	"strconv"
	"strings"
	texttemplate "text/template"
	"unicode/utf8"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slackutilsx"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
)

//go:embed templates
var templates embed.FS

var (
	slackTextTmpl = texttemplate.Must(texttemplate.ParseFS(templates, "templates/slack.txt"))
	emailTextTmpl = texttemplate.Must(texttemplate.ParseFS(templates, "templates/email.txt"))
	emailHTMLTmpl = htmltemplate.Must(htmltemplate.ParseFS(templates, "templates/email.html"))
)

// alert is what every channel says about a failed run.
type alert struct {
	Pipeline string
	Step     string
	DS       string
	Attempts int
	Class    string
	RunID    string
	Error    string
	RunURL   string // empty when alerts.run_url is not set
}

func newAlert(f *event.Failed, runURL string) alert {
	a := alert{
		Pipeline: f.Pipeline,
		Step:     orUnknown(f.Step),
		DS:       f.DS,
		Attempts: f.Attempts,
		Class:    orUnknown(f.Class),
		RunID:    f.RunID,
		Error:    orUnknown(f.Error),
	}
	if runURL != "" {
		a.RunURL = config.Expand(runURL, f.Pipeline, f.DS, f.RunID)
	}
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
	esc := alert{
		Pipeline: slackEscape(a.Pipeline, slackFieldMax),
		Step:     slackEscape(a.Step, slackFieldMax),
		DS:       slackEscape(a.DS, slackFieldMax),
		Attempts: a.Attempts,
		Class:    slackEscape(a.Class, slackFieldMax),
		RunID:    slackEscape(a.RunID, slackFieldMax),
		Error:    slackEscape(a.Error, slackErrorMax),
		RunURL:   slackutilsx.EscapeMessage(a.RunURL),
	}
	var text bytes.Buffer
	if err := slackTextTmpl.Execute(&text, esc); err != nil {
		return "", nil, fmt.Errorf("render slack text: %w", err)
	}

	field := func(name, value string) *slack.TextBlockObject {
		return slack.NewTextBlockObject(slack.MarkdownType, "*"+name+"*\n"+value, false, false)
	}
	blocks := []slack.Block{
		slack.NewHeaderBlock(slack.NewTextBlockObject(slack.PlainTextType,
			truncate(":red_circle: sluice run failed: "+a.Pipeline, slackHeaderMax), true, false)),
		slack.NewSectionBlock(nil, []*slack.TextBlockObject{
			field("Pipeline", esc.Pipeline),
			field("Step", esc.Step),
			field("Execution date", esc.DS),
			field("Attempts", strconv.Itoa(a.Attempts)),
			field("Error class", esc.Class),
			field("Run id", "`"+esc.RunID+"`"),
		}, nil),
		slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType,
			"*Error*\n```"+esc.Error+"```", false, false), nil, nil),
	}
	if a.RunURL != "" {
		blocks = append(blocks, slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType,
			"<"+esc.RunURL+"|View run>", false, false), nil, nil))
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

// emailSubject is the subject line of the alert email.
func emailSubject(a alert) string {
	return fmt.Sprintf("[sluice] %s failed at %s for %s", a.Pipeline, a.Step, a.DS)
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
