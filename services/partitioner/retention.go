package partitioner

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/fence"
)

// OldestKept is the first day retention r keeps on date now (UTC): partitions of earlier days
// are dropped. on is false when r keeps everything (days 0).
func OldestKept(r config.Retention, now time.Time) (day time.Time, on bool) {
	if r.Days <= 0 {
		return time.Time{}, false
	}
	y, m, d := now.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).AddDate(0, 0, -r.Days), true
}

// Expired reports whether the partition that holds day lies wholly before oldest, the first
// day retention keeps: retention drops whole partitions, so a monthly partition stays until its
// last day is older than the retention.
func Expired(part contract.Partition, day, oldest time.Time) bool {
	return !part.End(part.Start(day)).After(oldest)
}

// Dropped is one partition retention removed.
type Dropped struct {
	Partition string    // schema-qualified
	Day       time.Time // the partition's first day
	Rows      int64
	// Export is the s3:// URL the rows were written to first, if the pipeline exports.
	Export string
}

// Retention detaches and drops the partitions of p's target that lie wholly before OldestKept
// (see Expired; optionally exporting each to S3 first), oldest first, each in its own transaction fenced by
// token: a run that lost its lease drops nothing. Partitions not named by PartitionName are
// left alone. It returns what it dropped, also when it stops at an error.
func (pt *Partitioner) Retention(ctx context.Context, p *config.Pipeline, runID string, token uint64, now time.Time) ([]Dropped, error) {
	oldest, on := OldestKept(p.Retention, now)
	if !on {
		return nil, nil
	}
	c, ok := pt.contracts[p.Name]
	if !ok {
		return nil, fmt.Errorf("no data contract loaded for pipeline %s", p.Name)
	}
	if p.Retention.ExportToS3 && pt.s3 == nil {
		return nil, fmt.Errorf("pipeline %s exports partitions before dropping them, but the partitioner has no S3 client", p.Name)
	}
	target := pgx.Identifier{p.Target.Schema, p.Target.Table}
	rows, err := pt.pool.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = to_regclass($1) ORDER BY c.relname`, target.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", target.Sanitize(), err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", target.Sanitize(), err)
	}
	var done []Dropped
	for _, name := range names { // YYYYMMDD and YYYYMM names sort by day
		day, ok := partitionStart(p.Target.Table, c.Partition, name)
		if !ok || !Expired(c.Partition, day, oldest) {
			continue
		}
		d, err := pt.drop(ctx, p, c.Partition, runID, token, day)
		if err != nil {
			return done, fmt.Errorf("retention of pipeline %s: partition %s.%s: %w", p.Name, p.Target.Schema, name, err)
		}
		pt.log.InfoContext(ctx, "partition dropped by retention", "pipeline", p.Name, "run_id", runID,
			"partition", d.Partition, "rows", d.Rows, "export", d.Export, "retention_days", p.Retention.Days)
		done = append(done, d)
	}
	return done, nil
}

// drop exports (if configured), detaches and drops one partition in one transaction. The
// partition is locked against writes first, so the export holds every row that is dropped.
func (pt *Partitioner) drop(ctx context.Context, p *config.Pipeline, grain contract.Partition, runID string, token uint64, day time.Time) (Dropped, error) {
	name := PartitionName(p.Target.Table, grain, day)
	part := pgx.Identifier{p.Target.Schema, name}
	d := Dropped{Partition: p.Target.Schema + "." + name, Day: day}
	tx, err := pt.pool.Begin(ctx)
	if err != nil {
		return d, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	// Fence first: a run that lost its lease must not even export.
	if err := fence.Check(ctx, tx, p.Name, runID, token); err != nil {
		return d, err
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+part.Sanitize()+" IN SHARE MODE"); err != nil {
		return d, fmt.Errorf("lock: %w", err)
	}
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+part.Sanitize()).Scan(&d.Rows); err != nil {
		return d, fmt.Errorf("count rows: %w", err)
	}
	if p.Retention.ExportToS3 {
		key := config.Expand(p.Retention.ExportKey, p.Name, day.Format(time.DateOnly), runID)
		if err := pt.export(ctx, tx, part, key, runID); err != nil {
			return d, fmt.Errorf("export to s3://%s/%s: %w", pt.bucket, key, err)
		}
		d.Export = "s3://" + pt.bucket + "/" + key
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s DETACH PARTITION %s", pgx.Identifier{p.Target.Schema, p.Target.Table}.Sanitize(), part.Sanitize())); err != nil {
		return d, fmt.Errorf("detach: %w", err)
	}
	if _, err := tx.Exec(ctx, "DROP TABLE "+part.Sanitize()); err != nil {
		return d, fmt.Errorf("drop: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return d, fmt.Errorf("commit: %w", err)
	}
	return d, nil
}

// export streams the partition as gzip-compressed CSV (with a header) into key, in constant
// memory: COPY TO STDOUT → gzip → a multipart upload.
func (pt *Partitioner) export(ctx context.Context, tx pgx.Tx, part pgx.Identifier, key, runID string) error {
	pr, pw := io.Pipe()
	copied := make(chan error, 1)
	go func() {
		zw := gzip.NewWriter(pw)
		_, err := tx.Conn().PgConn().CopyTo(ctx, zw, "COPY "+part.Sanitize()+" TO STDOUT WITH (FORMAT csv, HEADER)")
		if err == nil {
			err = zw.Close()
		}
		pw.CloseWithError(err)
		copied <- err
	}()
	up := manager.NewUploader(pt.s3, func(u *manager.Uploader) { u.Concurrency = 2 })
	_, err := up.Upload(ctx, &s3.PutObjectInput{
		Bucket:      aws.String(pt.bucket),
		Key:         aws.String(key),
		Body:        pr,
		ContentType: aws.String("application/gzip"),
		Metadata:    map[string]string{"sluice-run-id": runID, "sluice-partition": strings.Join(part, ".")},
	})
	if err != nil {
		pr.CloseWithError(err) // stops the COPY if it is still writing
		<-copied
		return err
	}
	// The upload read to the end, so the COPY finished: this is its outcome.
	return <-copied
}
