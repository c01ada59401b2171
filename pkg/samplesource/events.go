package samplesource

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"time"
)

// Event is one row of the events feed, the second built-in example: a composite key
// (AccountID, EventID), a version named Revision, a nullable note, a boolean and a JSON payload.
type Event struct {
	AccountID  int64
	EventID    string
	Revision   int32
	Kind       string
	Note       *string // nil is written as an empty field (NULL)
	Billable   bool
	Payload    string // a JSON object
	OccurredAt time.Time
}

// EventsHeader is the first line of an events file.
const EventsHeader = "account_id,event_id,revision,kind,note,billable,payload,occurred_at\n"

const (
	streamEvents  = 0x5851f42d4c957f2d
	streamRevised = 0x14057b7ef767814f
	numAccounts   = 500
)

var eventKinds = []string{"signup", "login", "purchase", "refund", "logout", "upgrade"}

// newEvent is the i-th new event of a day, revision 1.
func newEvent(r *rng, day int64, i int) Event {
	r.seed(day, streamEvents, uint64(i))
	e := Event{
		AccountID:  int64(1 + r.intn(numAccounts)),
		EventID:    fmt.Sprintf("e%d-%d", day, i),
		Revision:   1,
		Kind:       eventKinds[r.intn(len(eventKinds))],
		Billable:   r.intn(2) == 0,
		OccurredAt: dayStart(day).Add(time.Duration(r.intn(secondsInDay)) * time.Second),
	}
	if r.intn(3) == 0 {
		note := fmt.Sprintf("note %d, \"quoted\"", r.intn(1000))
		e.Note = &note
	}
	e.Payload = fmt.Sprintf(`{"cents": %d, "tags": ["%s"], "ok": %t}`, r.intn(100000), e.Kind, e.Billable)
	return e
}

// Events returns the rows of the events file for ds, in file order: Rows new events (revision
// 1), then newer revisions of a share (UpdateRatio) of the previous date's events, then a fiftieth
// of the previous date's events sent again unchanged (the same revision from a later date).
func Events(ds string, opts Options) ([]Event, error) {
	var out []Event
	err := eachEvent(ds, opts, func(e Event) error { out = append(out, e); return nil })
	return out, err
}

func eachEvent(ds string, opts Options, fn func(Event) error) error {
	day, err := parseDS(ds)
	if err != nil {
		return err
	}
	c, err := opts.genConfig()
	if err != nil {
		return err
	}
	var r rng
	for i := 1; i <= c.rows; i++ {
		if err := fn(newEvent(&r, day, i)); err != nil {
			return err
		}
	}
	if day == 0 {
		return nil
	}
	var sel, orig rng
	sel.seed(day, streamRevised, 0)
	resend := c.rows / 50
	for i := 1; i <= c.rows; i++ {
		switch pick := sel.intn(c.rows); {
		case pick < c.updates:
			e := newEvent(&orig, day-1, i)
			e.Revision += int32(1 + sel.intn(3))
			e.Note = nil
			e.Billable = !e.Billable
			e.Payload = fmt.Sprintf(`{"cents": %d, "revised": true}`, sel.intn(100000))
			if err := fn(e); err != nil {
				return err
			}
		case pick < c.updates+resend:
			if err := fn(newEvent(&orig, day-1, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// WriteEventsCSV streams the events file for ds to w. Booleans are written yes/no, the note is
// empty when NULL, and the JSON payload is quoted as CSV requires.
func WriteEventsCSV(w io.Writer, ds string, opts Options) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	if _, err := bw.WriteString(EventsHeader); err != nil {
		return err
	}
	buf := make([]byte, 0, 256)
	err := eachEvent(ds, opts, func(e Event) error {
		buf = strconv.AppendInt(buf[:0], e.AccountID, 10)
		buf = append(buf, ',')
		buf = append(buf, e.EventID...)
		buf = append(buf, ',')
		buf = strconv.AppendInt(buf, int64(e.Revision), 10)
		buf = append(buf, ',')
		buf = append(buf, e.Kind...)
		buf = append(buf, ',')
		if e.Note != nil {
			buf = appendQuoted(buf, *e.Note)
		}
		buf = append(buf, ',')
		if e.Billable {
			buf = append(buf, "yes"...)
		} else {
			buf = append(buf, "no"...)
		}
		buf = append(buf, ',')
		buf = appendQuoted(buf, e.Payload)
		buf = append(buf, ',')
		buf = e.OccurredAt.AppendFormat(buf, time.RFC3339)
		buf = append(buf, '\n')
		_, err := bw.Write(buf)
		return err
	})
	if err != nil {
		return err
	}
	return bw.Flush()
}

// appendQuoted appends s as a quoted CSV field.
func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			b = append(b, '"')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}
