package fetcher

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/oklog/ulid/v2"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/objstore"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

type env struct {
	f      *Fetcher
	s3     *s3.Client
	bucket string
	p      *config.Pipeline
}

func setup(t *testing.T) *env {
	t.Helper()
	cfg := testkit.S3(t)
	c, err := objstore.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &config.Pipeline{Name: "orders", Landing: config.Landing{Key: "raw/{pipeline}/{ds}.csv"}, Source: config.Source{MaxBytes: config.DefaultMaxBytes}}
	return &env{f: mustNew(t, &http.Client{Timeout: time.Minute}, c, cfg.Bucket), s3: c, bucket: cfg.Bucket, p: p}
}

func available(url string) *event.Available {
	return &event.Available{Run: event.Run{RunID: ulid.Make().String(), Pipeline: "orders", DS: "2024-01-01", Fence: 1,
		RequestedAt: time.Now().UTC()}, URL: url}
}

// fetch runs Handle and returns the landed event.
func (e *env) fetch(t *testing.T, url string) (*event.Landed, error) {
	t.Helper()
	e.p.Source.URL = url // the fetcher fetches the configured source, and only it
	out, err := e.f.Handle(t.Context(), e.p, available(url))
	if err != nil {
		return nil, err
	}
	l := out
	if _, err := event.Encode(l); err != nil {
		t.Fatalf("landed event: %v", err)
	}
	return l, nil
}

// object returns the landed object's bytes, or ok false when there is none.
func (e *env) object(t *testing.T, key string) (b []byte, ok bool) {
	t.Helper()
	out, err := e.s3.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(key)})
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	b, err = io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b, true
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func gz(b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

var csvBody = []byte("order_id,customer_id,amount,updated_at\n1,10,1.00,2024-01-01T00:00:00Z\n2,11,2.00,2024-01-01T00:00:00Z\n")

// wantLanded checks the event and the object against the plain CSV content.
func (e *env) wantLanded(t *testing.T, l *event.Landed, content []byte) {
	t.Helper()
	if l.Object.Key != "raw/orders/2024-01-01.csv" || l.Object.Bucket != e.bucket || l.Object.Size != int64(len(content)) || l.Object.SHA256 != sum(content) {
		t.Fatalf("landed %+v, want %d bytes with sha256 %s", l.Object, len(content), sum(content))
	}
	got, ok := e.object(t, l.Object.Key)
	if !ok || !bytes.Equal(got, content) {
		t.Fatalf("object holds %d bytes (present %v), want the %d bytes of the CSV", len(got), ok, len(content))
	}
}

func TestFetchPlainAndGzip(t *testing.T) {
	e := setup(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/plain.csv", func(w http.ResponseWriter, r *http.Request) { w.Write(csvBody) })
	mux.HandleFunc("/encoded.csv", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept-Encoding") != "gzip" {
			t.Errorf("Accept-Encoding = %q", r.Header.Get("Accept-Encoding"))
		}
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(gz(csvBody))
	})
	mux.HandleFunc("/file.csv.gz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/gzip")
		w.Write(gz(csvBody))
	})
	mux.HandleFunc("/both.csv.gz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(gz(gz(csvBody)))
	})
	mux.HandleFunc("/bom-crlf.csv", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("\ufeffa,b\r\n1,2\r\n"))
	})
	src := httptest.NewServer(mux)
	defer src.Close()
	for _, path := range []string{"/plain.csv", "/encoded.csv", "/file.csv.gz", "/both.csv.gz"} {
		t.Run(path, func(t *testing.T) {
			l, err := e.fetch(t, src.URL+path)
			if err != nil {
				t.Fatal(err)
			}
			e.wantLanded(t, l, csvBody)
			if l.Object.SourceURL != src.URL+path {
				t.Fatalf("source url = %s", l.Object.SourceURL)
			}
		})
	}
	// S3 was given the SHA-256 with the upload and checked it: it reports the same checksum.
	head, err := e.s3.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(e.bucket),
		Key: aws.String("raw/orders/2024-01-01.csv"), ChecksumMode: types.ChecksumModeEnabled})
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(csvBody); aws.ToString(head.ChecksumSHA256) != base64.StdEncoding.EncodeToString(want[:]) {
		t.Fatalf("S3's checksum = %q, want the SHA-256 of the CSV", aws.ToString(head.ChecksumSHA256))
	}
	// The bytes are landed as they are: the validator, not the fetcher, reads the CSV.
	l, err := e.fetch(t, src.URL+"/bom-crlf.csv")
	if err != nil {
		t.Fatal(err)
	}
	e.wantLanded(t, l, []byte("\ufeffa,b\r\n1,2\r\n"))
}

func TestBrokenGzipIsPermanentAndLandsNothing(t *testing.T) {
	e := setup(t)
	z := gz(csvBody)
	corrupt := bytes.Clone(z)
	corrupt[len(corrupt)-6] ^= 0xff
	for name, body := range map[string][]byte{
		"truncated": z[:len(z)-10],
		"checksum":  corrupt,
		"not gzip":  []byte("plain text sent as gzip"),
		"empty":     nil,
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Encoding", "gzip")
				w.Write(body)
			}))
			defer srv.Close()
			_, err := e.fetch(t, srv.URL+"/x.csv")
			if !flow.IsPermanent(err) || !strings.Contains(err.Error(), "gzip data is broken") || !strings.Contains(err.Error(), "nothing was landed") {
				t.Fatalf("err = %v, want a permanent broken-gzip error", err)
			}
			if _, ok := e.object(t, "raw/orders/2024-01-01.csv"); ok {
				t.Fatal("an object landed")
			}
		})
	}
}

func TestCutConnectionIsTransient(t *testing.T) {
	e := setup(t)
	z := gz(csvBody)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Promise the whole body, send half, hang up: a network failure, not bad data.
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Length", strconv.Itoa(len(z)))
		w.Write(z[:len(z)/2])
		w.(http.Flusher).Flush()
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	}))
	defer srv.Close()
	_, err := e.fetch(t, srv.URL+"/x.csv")
	if err == nil || flow.IsPermanent(err) {
		t.Fatalf("err = %v, want a transient error", err)
	}
	if _, ok := e.object(t, "raw/orders/2024-01-01.csv"); ok {
		t.Fatal("an object landed")
	}
}

// zeros streams n bytes of a CSV-ish body without holding it.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), z.n)]
	for i := range p {
		p[i] = '0'
		if i%64 == 63 {
			p[i] = '\n'
		}
	}
	z.n -= int64(len(p))
	return len(p), nil
}

func TestSizeLimit(t *testing.T) {
	e := setup(t)
	const limit = 20 << 20 // more than two 8 MiB parts: the multipart upload has begun
	e.p.Source.MaxBytes = limit
	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	io.Copy(zw, &zeros{n: limit + 1})
	zw.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("/announced.csv", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(limit+1))
		io.Copy(w, &zeros{n: limit + 1})
	})
	mux.HandleFunc("/chunked.csv", func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush() // no Content-Length
		io.Copy(w, &zeros{n: limit + 1})
	})
	mux.HandleFunc("/bomb.csv", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(bomb.Bytes()) // small on the wire, over the limit decoded
	})
	mux.HandleFunc("/exact.csv", func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush()
		io.Copy(w, &zeros{n: limit})
	})
	src := httptest.NewServer(mux)
	defer src.Close()
	for _, path := range []string{"/announced.csv", "/chunked.csv", "/bomb.csv"} {
		t.Run(path, func(t *testing.T) {
			_, err := e.fetch(t, src.URL+path)
			if !flow.IsPermanent(err) || !strings.Contains(err.Error(), "larger than source.max_bytes (20971520 bytes) of pipeline orders; nothing was landed") {
				t.Fatalf("err = %v, want a permanent size error", err)
			}
			if _, ok := e.object(t, "raw/orders/2024-01-01.csv"); ok {
				t.Fatal("an object landed")
			}
			ups, err := e.s3.ListMultipartUploads(t.Context(), &s3.ListMultipartUploadsInput{Bucket: aws.String(e.bucket)})
			if err != nil {
				t.Fatal(err)
			}
			if len(ups.Uploads) != 0 {
				t.Fatalf("%d multipart uploads left behind", len(ups.Uploads))
			}
		})
	}
	// Exactly the limit is fine.
	l, err := e.fetch(t, src.URL+"/exact.csv")
	if err != nil {
		t.Fatal(err)
	}
	if l.Object.Size != limit {
		t.Fatalf("size = %d, want %d", l.Object.Size, limit)
	}
}

func TestStatuses(t *testing.T) {
	e := setup(t)
	for code, permanent := range map[int]bool{404: false, 429: false, 500: false, 503: false, 401: true, 403: true, 410: true, 304: true} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) }))
		_, err := e.fetch(t, srv.URL+"/x.csv")
		srv.Close()
		if err == nil || flow.IsPermanent(err) != permanent || !strings.Contains(err.Error(), strconv.Itoa(code)) {
			t.Errorf("status %d: err = %v, want permanent=%v", code, err, permanent)
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "br")
		w.Write([]byte("x"))
	}))
	defer srv.Close()
	if _, err := e.fetch(t, srv.URL+"/x.csv"); !flow.IsPermanent(err) || !strings.Contains(err.Error(), `Content-Encoding "br"`) {
		t.Errorf("err = %v, want a permanent unsupported-encoding error", err)
	}
}

// conditionalSource serves body with an ETag and Last-Modified and counts full responses.
type conditionalSource struct {
	body     atomic.Pointer[[]byte]
	etag     atomic.Pointer[string]
	mod      time.Time
	noETag   bool
	full, nm atomic.Int32
	lastIMS  atomic.Pointer[string]
}

func (s *conditionalSource) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ims := r.Header.Get("If-Modified-Since")
	s.lastIMS.Store(&ims)
	if !s.noETag {
		w.Header().Set("ETag", *s.etag.Load())
	}
	w.Header().Set("Last-Modified", s.mod.Format(http.TimeFormat))
	if s.noETag {
		if t, err := http.ParseTime(ims); err == nil && !s.mod.After(t) {
			s.nm.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
	} else if r.Header.Get("If-None-Match") == *s.etag.Load() {
		s.nm.Add(1)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	s.full.Add(1)
	w.Write(*s.body.Load())
}

func TestConditionalFetch(t *testing.T) {
	e := setup(t)
	src := &conditionalSource{mod: time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)}
	src.body.Store(&csvBody)
	etag := `"v1"`
	src.etag.Store(&etag)
	srv := httptest.NewServer(src)
	defer srv.Close()

	first, err := e.fetch(t, srv.URL+"/x.csv")
	if err != nil {
		t.Fatal(err)
	}
	e.wantLanded(t, first, csvBody)
	tags, err := e.s3.GetObjectTagging(t.Context(), &s3.GetObjectTaggingInput{Bucket: aws.String(e.bucket), Key: aws.String(first.Object.Key)})
	if err != nil || len(tags.TagSet) != 1 || aws.ToString(tags.TagSet[0].Key) != tagSHA256 || aws.ToString(tags.TagSet[0].Value) != sum(csvBody) {
		t.Fatalf("tags %+v (%v), want the checksum", tags, err)
	}
	head, err := e.s3.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(first.Object.Key)})
	if err != nil || head.Metadata[metaETag] != `"v1"` || head.Metadata[metaLastModified] != "Tue, 02 Jan 2024 00:00:00 GMT" {
		t.Fatalf("metadata %v (%v), want the source's validators", head.Metadata, err)
	}

	// Unchanged: a 304, no upload, the same object described again.
	again, err := e.fetch(t, srv.URL+"/x.csv")
	if err != nil {
		t.Fatal(err)
	}
	if src.full.Load() != 1 || src.nm.Load() != 1 {
		t.Fatalf("%d full responses and %d 304s, want 1 and 1", src.full.Load(), src.nm.Load())
	}
	if again.Object != first.Object {
		t.Fatalf("after a 304 landed %+v, want %+v", again.Object, first.Object)
	}
	if *src.lastIMS.Load() != "Tue, 02 Jan 2024 00:00:00 GMT" {
		t.Fatalf("If-Modified-Since = %q", *src.lastIMS.Load())
	}

	// Without the checksum tag (tagging failed), the checksum is computed from the object.
	if _, err := e.s3.DeleteObjectTagging(t.Context(), &s3.DeleteObjectTaggingInput{Bucket: aws.String(e.bucket), Key: aws.String(first.Object.Key)}); err != nil {
		t.Fatal(err)
	}
	again, err = e.fetch(t, srv.URL+"/x.csv")
	if err != nil || again.Object != first.Object || src.nm.Load() != 2 {
		t.Fatalf("304 without tag: landed %+v, err %v", again, err)
	}

	// Changed: a full response replaces the object.
	changed := append(bytes.Clone(csvBody), "3,12,3.00,2024-01-01T00:00:00Z\n"...)
	src.body.Store(&changed)
	etag2 := `"v2"`
	src.etag.Store(&etag2)
	l, err := e.fetch(t, srv.URL+"/x.csv")
	if err != nil {
		t.Fatal(err)
	}
	e.wantLanded(t, l, changed)
	if src.full.Load() != 2 {
		t.Fatalf("%d full responses, want 2", src.full.Load())
	}

	// Another source URL for the same key is never answered from the old object.
	other := httptest.NewServer(src)
	defer other.Close()
	if _, err := e.fetch(t, other.URL+"/x.csv"); err != nil {
		t.Fatal(err)
	}
	if src.full.Load() != 3 {
		t.Fatalf("a new source URL was fetched conditionally")
	}
}

func TestConditionalFetchByLastModified(t *testing.T) {
	e := setup(t)
	src := &conditionalSource{mod: time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC), noETag: true}
	src.body.Store(&csvBody)
	srv := httptest.NewServer(src)
	defer srv.Close()
	first, err := e.fetch(t, srv.URL+"/x.csv")
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.fetch(t, srv.URL+"/x.csv")
	if err != nil {
		t.Fatal(err)
	}
	if src.full.Load() != 1 || src.nm.Load() != 1 || again.Object != first.Object {
		t.Fatalf("%d full, %d 304; landed %+v then %+v", src.full.Load(), src.nm.Load(), first.Object, again.Object)
	}
}

func TestConfigMaxBytes(t *testing.T) {
	base := "postgres:\n  url: env:PG\ns3:\n  bucket: b\npipelines:\n  - name: orders\n    source:\n      url: http://x/{ds}.csv\n"
	cfg, err := config.Parse("sluice.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Pipelines[0].Source.MaxBytes; got != config.DefaultMaxBytes {
		t.Fatalf("default max_bytes = %d", got)
	}
	_, err = config.Parse("sluice.yaml", []byte(base+"      max_bytes: -1\n"))
	if err == nil || !strings.Contains(err.Error(), "sluice.yaml:9: pipelines[0].source.max_bytes: -1 must be between 1 and") {
		t.Fatalf("err = %v, want the line of max_bytes", err)
	}
	_, err = config.Parse("sluice.yaml", []byte(base+fmt.Sprintf("      max_bytes: %d\n", int64(config.MaxObjectBytes)+1)))
	if err == nil || !strings.Contains(err.Error(), "source.max_bytes") {
		t.Fatalf("err = %v, want a max_bytes error", err)
	}
}

// TestRedeliveryKeepsThisRunsObject: the same available event delivered again (the fetcher died
// after uploading, before publishing) describes the object that run landed without fetching or
// uploading again, even from a source that cannot answer conditional requests. Another run of the
// same ds fetches.
func TestRedeliveryKeepsThisRunsObject(t *testing.T) {
	e := setup(t)
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write(csvBody)
	}))
	defer srv.Close()
	av := available(srv.URL + "/x.csv")
	e.p.Source.URL = av.URL
	first, err := e.f.Handle(t.Context(), e.p, av)
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.f.Handle(t.Context(), e.p, av)
	if err != nil {
		t.Fatal(err)
	}
	if hits.Load() != 1 {
		t.Fatalf("the source was asked %d times for one run, want once", hits.Load())
	}
	if a, b := first.Object, again.Object; a != b {
		t.Fatalf("redelivery landed %+v, the first delivery %+v", b, a)
	}
	e.wantLanded(t, again, csvBody)
	if _, err := e.fetch(t, srv.URL+"/x.csv"); err != nil {
		t.Fatal(err)
	}
	if hits.Load() != 2 {
		t.Fatalf("a new run did not fetch the file (%d requests)", hits.Load())
	}
}

func mustNew(t *testing.T, client *http.Client, s3c *s3.Client, bucket string) *Fetcher {
	t.Helper()
	f, err := New(client, s3c, bucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
