// Package fetcher lands a source file in S3: on `available` it streams the HTTP body straight
// into a (multipart, for large files) upload while hashing it with SHA-256, so memory stays
// constant whatever the file's size, and publishes `landed` with the key, size, checksum and
// object version. A gzip-encoded source (Content-Encoding: gzip, or a gzip file such as a .gz
// URL, recognised by its magic bytes) is decoded on the way, so the landed object is always the
// plain CSV and its checksum is the CSV's. A body larger than the pipeline's source.max_bytes is
// refused and nothing lands. The source's ETag and Last-Modified are kept in the landed object's
// metadata and sent back as If-None-Match / If-Modified-Since next time; a 304 reuses the landed
// object without uploading it again. docs/data-path.md describes this for users.
package fetcher

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/crash"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/source"
)

// Metadata and tag keys on a landed object. The source validators are known when the upload
// starts, so they are metadata; the checksum is known only at its end, so it is a tag.
const (
	metaRunID        = "sluice-run-id"
	metaSource       = "sluice-source"
	metaETag         = "sluice-source-etag"
	metaLastModified = "sluice-source-last-modified"
	tagSHA256        = "sluice-sha256"
)

// Parts are as small as S3 allows (5 MiB), which bounds the memory an upload holds, unless the
// size limit needs more than S3's 10,000 parts.
const (
	minPartSize = manager.MinUploadPartSize
	maxParts    = 10_000
)

// Fetcher copies source files to the landing bucket.
type Fetcher struct {
	http   *http.Client
	s3     *s3.Client
	bucket string
	log    *slog.Logger
}

// New returns a fetcher getting sources with client and writing to bucket through s3c; log (nil:
// discard) gets its warnings, with the run named by the context.
func New(client *http.Client, s3c *s3.Client, bucket string, log *slog.Logger) (*Fetcher, error) {
	if client == nil || s3c == nil || bucket == "" {
		return nil, errors.New("fetcher: an HTTP client, an S3 client and a bucket are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Fetcher{http: client, s3: s3c, bucket: bucket, log: log}, nil
}

// landedObject is what the bucket holds under a key, as far as a conditional request needs it.
type landedObject struct {
	size         int64
	versionID    string
	runID        string
	source       string
	etag         string
	lastModified string
}

// Handle downloads the ds's file and uploads it under the pipeline's landing key, or describes
// the landed object when this run already landed it (a redelivery after a crash between the
// upload and the publish) or the source says the file has not changed since it was landed.
func (f *Fetcher) Handle(ctx context.Context, p *config.Pipeline, av *event.Available) (*event.Landed, error) {
	key := config.Expand(p.Landing.Key, p.Name, av.DS, av.RunID)
	limit := p.Source.MaxBytes
	if limit <= 0 {
		limit = config.DefaultMaxBytes
	}
	// The request is built from the config and the parsed ds; av.URL (already checked against
	// the same, redacted) is only what logs and metadata show.
	if err := Claims(p, av); err != nil {
		return nil, flow.Permanent(err)
	}
	req, err := source.NewRequest(ctx, p, http.MethodGet, av.DS, av.RunID)
	if err != nil {
		return nil, flow.Permanent(err)
	}
	// Asking for gzip ourselves stops net/http from decoding transparently, so a broken gzip
	// body is told apart from a broken connection (see decode).
	req.Header.Set("Accept-Encoding", "gzip")
	prev := f.head(ctx, key)
	if prev != nil && prev.runID == av.RunID && prev.source == av.URL {
		// An upload is whole or absent, so the object is this run's file: landing it again
		// would only add a version.
		return f.unchanged(ctx, av, key, prev, "already landed by this run: keeping it")
	}
	conditional := prev != nil && prev.source == av.URL && (prev.etag != "" || prev.lastModified != "")
	if conditional {
		if prev.etag != "" {
			req.Header.Set("If-None-Match", prev.etag)
		}
		if prev.lastModified != "" {
			req.Header.Set("If-Modified-Since", prev.lastModified)
		}
	}
	resp, err := source.Do(f.http, req)
	if errors.Is(err, source.ErrRedirect) {
		return nil, flow.Permanentf("get %s: %w", av.URL, err)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", av.URL, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && conditional:
		return f.unchanged(ctx, av, key, prev, "source unchanged (304): keeping the landed object")
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusTooManyRequests:
		// 404 after the sensor saw the file: the source is mid-publish; try again.
		return nil, fmt.Errorf("get %s: source answered %s", av.URL, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return nil, flow.Permanentf("get %s: source answered %s", av.URL, resp.Status)
	}
	return f.land(ctx, p, av, key, limit, resp)
}

// land streams the source's answer, decoded and capped at limit bytes, into the object key while
// hashing it, tags the object with its checksum, and describes it.
func (f *Fetcher) land(ctx context.Context, p *config.Pipeline, av *event.Available, key string, limit int64, resp *http.Response) (*event.Landed, error) {
	tooLarge := flow.Permanentf("get %s: the file is larger than source.max_bytes (%d bytes) of pipeline %s; nothing was landed",
		av.URL, limit, p.Name)
	if resp.ContentLength > limit && contentEncoding(resp) == "" {
		return nil, tooLarge
	}
	raw := &rawBody{r: resp.Body}
	body, err := decode(resp, raw)
	if err != nil {
		return nil, f.readErr(av.URL, raw, err)
	}
	capped := &limitedReader{r: body, left: limit}
	hashed := &hashingReader{r: capped, h: sha256.New()}
	meta := map[string]string{metaRunID: av.RunID, metaSource: av.URL}
	if v := resp.Header.Get("ETag"); v != "" && isASCII(v) {
		meta[metaETag] = v
	}
	if v := resp.Header.Get("Last-Modified"); v != "" && isASCII(v) {
		meta[metaLastModified] = v
	}
	up := manager.NewUploader(f.s3, func(u *manager.Uploader) {
		// Two parts in flight bound the memory an upload holds; parts grow only when the size
		// limit needs more than S3's 10,000 parts.
		u.PartSize = max(minPartSize, (limit+maxParts-1)/maxParts)
		u.Concurrency = 2
	})
	out, err := up.Upload(ctx, &s3.PutObjectInput{
		Bucket:      aws.String(f.bucket),
		Key:         aws.String(key),
		Body:        hashed,
		ContentType: aws.String("text/csv"),
		Metadata:    meta,
		// S3 checks every part against its SHA-256 as it arrives; the whole file's SHA-256
		// (hashed) travels in the landed event and the validator checks it again.
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256,
	})
	switch {
	case capped.exceeded:
		return nil, tooLarge // the upload was aborted: nothing landed
	case err != nil && hashed.err != nil:
		return nil, f.readErr(av.URL, raw, hashed.err)
	case err != nil:
		return nil, fmt.Errorf("put s3://%s/%s: %w", f.bucket, key, err)
	}
	obj := event.Object{
		Bucket:    f.bucket,
		Key:       key,
		Size:      hashed.n,
		SHA256:    hex.EncodeToString(hashed.h.Sum(nil)),
		VersionID: aws.ToString(out.VersionID),
		SourceURL: av.URL,
	}
	f.tag(ctx, obj)
	return &event.Landed{Run: av.Run, Object: obj}, nil
}

// head describes the object under key, or returns nil when there is none or it cannot be read
// (the request is then unconditional: a conditional fetch only saves work).
func (f *Fetcher) head(ctx context.Context, key string) *landedObject {
	out, err := f.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key)})
	if err != nil {
		var nf *types.NotFound
		if !errors.As(err, &nf) {
			f.log.WarnContext(ctx, "could not read the landed object; fetching unconditionally",
				"bucket", f.bucket, "key", key, "err", err)
		}
		return nil
	}
	return &landedObject{
		size:         aws.ToInt64(out.ContentLength),
		versionID:    aws.ToString(out.VersionId),
		runID:        out.Metadata[metaRunID],
		source:       out.Metadata[metaSource],
		etag:         out.Metadata[metaETag],
		lastModified: out.Metadata[metaLastModified],
	}
}

// unchanged is the landed event for an object already landed that is still current; why says
// how we know, in the log.
func (f *Fetcher) unchanged(ctx context.Context, av *event.Available, key string, prev *landedObject, why string) (*event.Landed, error) {
	sum, err := f.checksum(ctx, key, prev)
	if err != nil {
		return nil, err
	}
	f.log.InfoContext(ctx, why, "bucket", f.bucket, "key", key, "size", prev.size)
	return &event.Landed{Run: av.Run, Object: event.Object{
		Bucket:    f.bucket,
		Key:       key,
		Size:      prev.size,
		SHA256:    sum,
		VersionID: prev.versionID,
		SourceURL: av.URL,
	}}, nil
}

// checksum is the SHA-256 tag of the landed object, or, when it has none (tagging failed or is
// not allowed), the SHA-256 of its bytes read back.
func (f *Fetcher) checksum(ctx context.Context, key string, prev *landedObject) (string, error) {
	in := &s3.GetObjectTaggingInput{Bucket: aws.String(f.bucket), Key: aws.String(key)}
	if prev.versionID != "" {
		in.VersionId = aws.String(prev.versionID)
	}
	if out, err := f.s3.GetObjectTagging(ctx, in); err == nil {
		for _, t := range out.TagSet {
			if aws.ToString(t.Key) == tagSHA256 && len(aws.ToString(t.Value)) == sha256.Size*2 {
				return aws.ToString(t.Value), nil
			}
		}
	}
	get := &s3.GetObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key)}
	if prev.versionID != "" {
		get.VersionId = aws.String(prev.versionID)
	}
	out, err := f.s3.GetObject(ctx, get)
	if err != nil {
		return "", fmt.Errorf("get s3://%s/%s: %w", f.bucket, key, err)
	}
	defer out.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, out.Body)
	if err != nil {
		return "", fmt.Errorf("read s3://%s/%s: %w", f.bucket, key, err)
	}
	if n != prev.size {
		return "", fmt.Errorf("s3://%s/%s changed while it was read (%d bytes, expected %d)", f.bucket, key, n, prev.size)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// tag records the object's SHA-256 on it, for a later 304. Failing costs that later fetch one
// read of the object, so it is only logged.
func (f *Fetcher) tag(ctx context.Context, obj event.Object) {
	in := &s3.PutObjectTaggingInput{
		Bucket:  aws.String(obj.Bucket),
		Key:     aws.String(obj.Key),
		Tagging: &types.Tagging{TagSet: []types.Tag{{Key: aws.String(tagSHA256), Value: aws.String(obj.SHA256)}}},
	}
	if obj.VersionID != "" {
		in.VersionId = aws.String(obj.VersionID)
	}
	if _, err := f.s3.PutObjectTagging(ctx, in); err != nil {
		f.log.WarnContext(ctx, "could not tag the landed object with its checksum",
			"bucket", obj.Bucket, "key", obj.Key, "err", err)
	}
}

// readErr classifies an error reading the source body: gzip data that is broken although the
// body arrived whole can never succeed (permanent); anything else may be the network.
func (f *Fetcher) readErr(url string, raw *rawBody, err error) error {
	var bad *badGzipError
	if errors.As(err, &bad) && raw.eof {
		return flow.Permanentf("get %s: %v; nothing was landed", url, bad)
	}
	return fmt.Errorf("get %s: read body: %w", url, err)
}

func contentEncoding(resp *http.Response) string {
	ce := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding")))
	if ce == "identity" {
		return ""
	}
	return ce
}

// decode returns the body's content: Content-Encoding gzip is undone, and so is a gzip file
// (recognised by its magic bytes, whatever the URL or Content-Type says). Undoing both covers a
// .csv.gz served with Content-Encoding: gzip on top.
func decode(resp *http.Response, raw *rawBody) (io.Reader, error) {
	var r io.Reader = raw
	switch ce := contentEncoding(resp); ce {
	case "":
	case "gzip", "x-gzip":
		zr, err := gunzip(r)
		if err != nil {
			return nil, err
		}
		r = zr
	default:
		return nil, flow.Permanentf("source sent Content-Encoding %q; sluice reads identity and gzip", ce)
	}
	// Peel every gzip layer (a .gz inside a .gz, or more), so what lands is the plain file and
	// source.max_bytes, counted on the result, bounds what reaches staging whatever the layers.
	for layers := 0; ; layers++ {
		var head [2]byte
		n, err := io.ReadFull(r, head[:])
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return nil, err
		}
		r = io.MultiReader(bytes.NewReader(head[:n:n]), r)
		if n < 2 || head[0] != 0x1f || head[1] != 0x8b {
			return r, nil
		}
		if layers == maxGzipLayers {
			return nil, flow.Permanentf("source sent gzip inside gzip %d times over; sluice peels at most %d layers", layers+1, maxGzipLayers)
		}
		if r, err = gunzip(r); err != nil {
			return nil, err
		}
	}
}

// maxGzipLayers bounds how many gzip layers inside the file are peeled: a real file has one.
const maxGzipLayers = 3

func gunzip(r io.Reader) (io.Reader, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, gzipErr(err)
	}
	return &gzipReader{zr: zr}, nil
}

// badGzipError is broken gzip data, as opposed to an error reading it.
type badGzipError struct{ err error }

func (e *badGzipError) Error() string { return "gzip data is broken: " + e.err.Error() }
func (e *badGzipError) Unwrap() error { return e.err }

func gzipErr(err error) error {
	var corrupt flate.CorruptInputError
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, gzip.ErrChecksum) ||
		errors.Is(err, gzip.ErrHeader) || errors.As(err, &corrupt) {
		return &badGzipError{err: err}
	}
	return err
}

type gzipReader struct{ zr *gzip.Reader }

func (g *gzipReader) Read(p []byte) (int, error) {
	n, err := g.zr.Read(p)
	if err != nil && err != io.EOF {
		err = gzipErr(err)
	}
	return n, err
}

// rawBody records whether the HTTP body ended cleanly: then a truncated gzip stream was sent
// truncated, rather than cut on the way.
type rawBody struct {
	r   io.Reader
	eof bool
}

func (b *rawBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

var errTooLarge = errors.New("file larger than source.max_bytes")

// limitedReader fails once more than left bytes have been read.
type limitedReader struct {
	r        io.Reader
	left     int64
	exceeded bool
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1] // one byte more than allowed is enough to know
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		l.exceeded = true
		return 0, errTooLarge
	}
	return n, err
}

// hashingReader hashes and counts what passes through it, and keeps the first read error.
type hashingReader struct {
	r   io.Reader
	h   hash.Hash
	n   int64
	err error
}

func (r *hashingReader) Read(p []byte) (int, error) {
	if r.n > 0 {
		crash.Point("fetcher", crash.MidUpload)
	}
	n, err := r.r.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
