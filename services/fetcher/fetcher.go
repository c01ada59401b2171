// Package fetcher lands a source file in S3: on `available` it streams the HTTP body straight
// into a (multipart, for large files) upload while hashing it with SHA-256, so memory stays
// constant whatever the file's size, and publishes `landed` with the key, size and checksum.
package fetcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
)

// Service is the fetcher as an app service.
var Service = app.Service{Name: "fetcher", Routes: func(ctx context.Context, d *app.Deps) ([]flow.Route, error) {
	c, err := d.S3(ctx)
	if err != nil {
		return nil, err
	}
	f := New(&http.Client{Timeout: 30 * time.Minute}, c, d.Config.S3.Bucket)
	return []flow.Route{{Step: "fetcher", Consumes: event.KindAvailable, Handle: f.Handle}}, nil
}}

// Fetcher copies source files to the landing bucket.
type Fetcher struct {
	http     *http.Client
	uploader *manager.Uploader
	bucket   string
}

// New returns a fetcher writing to bucket.
func New(client *http.Client, s3c *s3.Client, bucket string) *Fetcher {
	up := manager.NewUploader(s3c, func(u *manager.Uploader) {
		// Two 8 MiB parts in flight bound the memory an upload holds.
		u.PartSize = 8 << 20
		u.Concurrency = 2
	})
	return &Fetcher{http: client, uploader: up, bucket: bucket}
}

// Handle downloads the ds's file and uploads it under the pipeline's landing key.
func (f *Fetcher) Handle(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
	av := in.(*event.Available)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, av.URL, nil)
	if err != nil {
		return nil, flow.Permanent(err)
	}
	resp, err := f.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", av.URL, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusTooManyRequests:
		// 404 after the sensor saw the file: the source is mid-publish; try again.
		return nil, fmt.Errorf("get %s: source answered %s", av.URL, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return nil, flow.Permanentf("get %s: source answered %s", av.URL, resp.Status)
	}
	key := config.Expand(p.Landing.Key, p.Name, av.DS, av.RunID)
	body := &hashingReader{r: resp.Body, h: sha256.New()}
	out, err := f.uploader.Upload(ctx, &s3.PutObjectInput{
		Bucket:      aws.String(f.bucket),
		Key:         aws.String(key),
		Body:        body,
		ContentType: aws.String("text/csv"),
		Metadata:    map[string]string{"sluice-run-id": av.RunID, "sluice-source": av.URL},
	})
	if err != nil {
		return nil, fmt.Errorf("put s3://%s/%s: %w", f.bucket, key, err)
	}
	return &event.Landed{Run: av.Run, Object: event.Object{
		Bucket:    f.bucket,
		Key:       key,
		Size:      body.n,
		SHA256:    hex.EncodeToString(body.h.Sum(nil)),
		VersionID: aws.ToString(out.VersionID),
		SourceURL: av.URL,
	}}, nil
}

// hashingReader hashes and counts what passes through it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (r *hashingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	return n, err
}
