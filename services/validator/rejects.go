package validator

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/event"
)

// reportCap is how many bad rows beyond the allowance are still read and listed once a file has
// failed: enough to show what is wrong with it, bounded so that a file of garbage does not make
// a rejects file as large as itself.
const reportCap = 1000

var errReportCap = errors.New("stopped reading: enough bad rows to report")

// RejectsKey is where the rejects file of the raw object at key goes: next to it, its extension
// (.csv, .csv.gz, .gz) replaced by .rejects.csv.
func RejectsKey(key string) string {
	base := strings.TrimSuffix(key, ".gz")
	base = strings.TrimSuffix(base, ".csv")
	return base + ".rejects.csv"
}

// RejectedError is a file with more bad rows than the pipeline allows. It unwraps to the first
// row's first *contract.Violation.
type RejectedError struct {
	Contract string
	// Rows is how many bad rows were read; with AtLeast, reading stopped there.
	Rows    int64
	AtLeast bool
	// Allowed is the pipeline's max_bad_rows.
	Allowed int64
	First   *contract.Violation
	// Rejects is the s3:// URL of the rejects file that lists every violation.
	Rejects string
}

// Error is one line for the failed event and the alert: `3 rows break contract orders
// (max_bad_rows 0); first: line 7, column amount: value "12a" is not a number; rejects in
// s3://...`.
func (e *RejectedError) Error() string {
	count := strconv.FormatInt(e.Rows, 10)
	if e.AtLeast {
		count = "at least " + count
	}
	noun, verb := "rows", "break"
	if e.Rows == 1 && !e.AtLeast {
		noun, verb = "row", "breaks"
	}
	return fmt.Sprintf("%s %s %s contract %s (max_bad_rows %d); first: %s; rejects in %s",
		count, noun, verb, e.Contract, e.Allowed, e.First.Detail(), e.Rejects)
}

// Unwrap returns the first violation, so the error matches contract.ErrContract.
func (e *RejectedError) Unwrap() error { return e.First }

// quarantine applies a pipeline's bad-row policy while the file streams: every bad row is
// written to the rejects file; the load fails once more rows are bad than allowed.
type quarantine struct {
	allowed  int64
	contract string
	rows     int64
	capped   bool
	first    *contract.Violation
	rejects  *rejects
}

// add is the contract reader's OnBadRow function.
func (q *quarantine) add(b contract.BadRow) error {
	q.rows++
	if q.first == nil {
		q.first = b.Violations[0]
	}
	if err := q.rejects.write(b.Record, b.Violations); err != nil {
		return fmt.Errorf("write %s: %w", q.rejects.url(), err)
	}
	if q.rows > q.allowed+reportCap {
		q.capped = true
		return errReportCap
	}
	return nil
}

// over reports whether more rows are bad than allowed.
func (q *quarantine) over() bool { return q.rows > q.allowed }

// verdict is the error of a file with too many bad rows.
func (q *quarantine) verdict() error {
	return &RejectedError{Contract: q.contract, Rows: q.rows, AtLeast: q.capped, Allowed: q.allowed,
		First: q.first, Rejects: q.rejects.url()}
}

// fail records a violation that stops the file whatever the policy (a header, an over-long
// record, broken gzip data) in the rejects file and says where that file is.
func (q *quarantine) fail(err error) error {
	var re *RejectedError
	var v *contract.Violation
	if errors.As(err, &re) || !errors.As(err, &v) {
		return err
	}
	if werr := q.rejects.write(nil, []*contract.Violation{v}); werr != nil {
		return fmt.Errorf("write %s: %w", q.rejects.url(), werr)
	}
	if q.rows == 0 {
		return fmt.Errorf("%w; rejects in %s", err, q.rejects.url())
	}
	return fmt.Errorf("%w; %d bad row(s) before it; rejects in %s", err, q.rows, q.rejects.url())
}

// rejects streams the rejects file to S3 as violations come, starting the upload with the
// first one: a CSV of line, column, value, rule and the whole record.
type rejects struct {
	ctx    context.Context
	s3     *s3.Client
	bucket string
	key    string
	meta   map[string]string

	pw     *io.PipeWriter
	cw     *csv.Writer
	done   chan error
	closed bool
	rec    strings.Builder
	recw   *csv.Writer
}

var rejectsHeader = []string{"line", "column", "value", "rule", "record"}

func (v *Validator) newRejects(ctx context.Context, bucket, key string, in *event.Landed) *rejects {
	return &rejects{ctx: ctx, s3: v.s3, bucket: bucket, key: key, meta: map[string]string{
		"sluice-run-id": in.RunID, "sluice-object": in.Object.Key, "sluice-object-sha256": in.Object.SHA256}}
}

func (r *rejects) url() string { return s3URL(r.bucket, r.key) }

func (r *rejects) start() error {
	pr, pw := io.Pipe()
	r.pw, r.done = pw, make(chan error, 1)
	up := manager.NewUploader(r.s3, func(u *manager.Uploader) {
		u.PartSize = manager.MinUploadPartSize
		u.Concurrency = 1
	})
	go func() {
		_, err := up.Upload(r.ctx, &s3.PutObjectInput{
			Bucket:      aws.String(r.bucket),
			Key:         aws.String(r.key),
			Body:        pr,
			ContentType: aws.String("text/csv; charset=utf-8"),
			Metadata:    r.meta,
		})
		pr.CloseWithError(err) // a failed upload unblocks the writer
		r.done <- err
	}()
	r.cw = csv.NewWriter(pw)
	r.recw = csv.NewWriter(&r.rec)
	return r.cw.Write(rejectsHeader)
}

// write lists a row's violations; record is nil when the row could not be parsed.
func (r *rejects) write(record []string, vs []*contract.Violation) error {
	if r.closed {
		return errors.New("rejects file already closed")
	}
	if r.pw == nil {
		if err := r.start(); err != nil {
			return err
		}
	}
	var rec string
	if record != nil {
		r.rec.Reset()
		if err := r.recw.Write(record); err != nil {
			return err
		}
		r.recw.Flush()
		rec = strings.TrimRight(r.rec.String(), "\r\n")
	}
	for _, v := range vs {
		if err := r.cw.Write([]string{strconv.Itoa(v.Line), v.Column, cell(v.Value), v.Rule, cell(rec)}); err != nil {
			return err
		}
	}
	return nil
}

// close finishes the upload; without any violation there is nothing to upload.
func (r *rejects) close() error {
	if r.pw == nil || r.closed {
		return nil
	}
	r.closed = true
	r.cw.Flush()
	if err := r.cw.Error(); err != nil {
		r.pw.CloseWithError(err)
		<-r.done
		return err
	}
	_ = r.pw.Close()
	return <-r.done
}

var errAborted = errors.New("rejects file abandoned")

// abort abandons an unfinished upload (a multipart upload is aborted, nothing is stored).
func (r *rejects) abort() {
	if r.pw == nil || r.closed {
		return
	}
	r.closed = true
	r.pw.CloseWithError(errAborted)
	<-r.done
}

// cell keeps a spreadsheet from running a value as a formula when someone opens the rejects
// file: a cell that starts with = + - @, a tab or a CR gets a leading apostrophe (OWASP's advice
// on CSV injection). The rejects file is for people; the raw object keeps the original bytes.
func cell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func s3URL(bucket, key string) string { return "s3://" + bucket + "/" + key }
