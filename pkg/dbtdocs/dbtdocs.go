// Package dbtdocs serves the dbt docs the dbt runner publishes for every run (index.html,
// manifest.json, catalog.json under docs/<pipeline>/<ds>/<run_id>/ in the landing bucket) at a
// stable URL on sluice's HTTP endpoint: /docs/<pipeline>/<ds>/<run_id>/, and
// /docs/<pipeline>/latest/ for the most recently completed run. Files are streamed from S3;
// nothing is cached on disk.
package dbtdocs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/sluice-etl/sluice/pkg/event"
)

// Prefix is where a run's dbt docs are published: docs/<pipeline>/<ds>/<run_id>/.
func Prefix(pipeline, ds, runID string) string {
	return fmt.Sprintf("docs/%s/%s/%s/", pipeline, ds, runID)
}

// Path is the URL path of a run's docs site.
func Path(pipeline, ds, runID string) string { return "/" + Prefix(pipeline, ds, runID) }

// Objects reads objects; *s3.Client is one.
type Objects interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// Latest finds the most recently completed run of a pipeline: its ds and run id.
type Latest func(ctx context.Context, pipeline string) (ds, runID string, ok bool, err error)

// Handler serves the docs from bucket. objects is called per request (so S3 is reached only
// when docs are asked for); pipelines are the pipelines whose docs may be served.
type Handler struct {
	Bucket    string
	Objects   func(ctx context.Context) (Objects, error)
	Latest    Latest
	Pipelines []string
}

var (
	runIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	fileRe  = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$`)
)

// ServeHTTP serves GET and HEAD of /docs/<pipeline>/<ds>/<run_id>/[file] and
// /docs/<pipeline>/latest/[file].
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/docs/"), "/")
	if len(parts) < 2 || !h.known(parts[0]) {
		http.NotFound(w, r)
		return
	}
	pipeline := parts[0]
	if parts[1] == "latest" {
		h.latest(w, r, pipeline, parts[2:])
		return
	}
	if len(parts) < 3 {
		http.NotFound(w, r)
		return
	}
	ds, runID := parts[1], parts[2]
	if _, err := event.ParseDS(ds); err != nil || !runIDRe.MatchString(runID) {
		http.NotFound(w, r)
		return
	}
	file := strings.Join(parts[3:], "/")
	if file == "" {
		if !strings.HasSuffix(r.URL.Path, "/") {
			http.Redirect(w, r, r.URL.Path+"/", http.StatusMovedPermanently)
			return
		}
		file = "index.html"
	}
	if !fileRe.MatchString(file) {
		http.NotFound(w, r)
		return
	}
	h.serve(w, r, Prefix(pipeline, ds, runID)+file)
}

func (h *Handler) known(pipeline string) bool {
	for _, p := range h.Pipelines {
		if p == pipeline {
			return true
		}
	}
	return false
}

// latest redirects to the newest completed run's docs; the redirect is not cached, the target is.
func (h *Handler) latest(w http.ResponseWriter, r *http.Request, pipeline string, rest []string) {
	ds, runID, ok, err := h.Latest(r.Context(), pipeline)
	if err != nil {
		http.Error(w, "run state unavailable", http.StatusServiceUnavailable)
		return
	}
	if !ok {
		http.Error(w, "no completed run of "+pipeline+" yet", http.StatusNotFound)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, Path(pipeline, ds, runID)+strings.Join(rest, "/"), http.StatusFound)
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, key string) {
	objs, err := h.Objects(r.Context())
	if err != nil {
		http.Error(w, "object storage unavailable", http.StatusBadGateway)
		return
	}
	out, err := objs.GetObject(r.Context(), &s3.GetObjectInput{Bucket: aws.String(h.Bucket), Key: aws.String(key)})
	if err != nil {
		var nsk *types.NoSuchKey
		var status interface{ HTTPStatusCode() int }
		if errors.As(err, &nsk) || (errors.As(err, &status) && status.HTTPStatusCode() == http.StatusNotFound) {
			http.Error(w, "no dbt docs at "+path.Dir(key)+"/ (the run may not have completed)", http.StatusNotFound)
			return
		}
		http.Error(w, "object storage unavailable", http.StatusBadGateway)
		return
	}
	defer out.Body.Close()
	ct := aws.ToString(out.ContentType)
	if ct == "" || ct == "binary/octet-stream" || ct == "application/octet-stream" {
		ct = contentType(key)
	}
	w.Header().Set("Content-Type", ct)
	if out.ContentLength != nil {
		w.Header().Set("Content-Length", fmt.Sprint(*out.ContentLength))
	}
	// A run's docs do not change once published; a rerun is another run id, another URL.
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = io.Copy(w, out.Body)
}

func contentType(key string) string {
	switch path.Ext(key) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".json":
		return "application/json"
	case ".css":
		return "text/css"
	case ".js":
		return "text/javascript"
	}
	return "application/octet-stream"
}
