// Package validator is sluice's validate step: it streams a landed raw file from S3 (plain or
// gzip-compressed CSV) through the pipeline's data contract into the pipeline's staging table,
// replacing that ds's slice in one transaction that also checks the bytes against the landed
// checksum and the run's fencing token. So a staging slice is always either one whole, verified
// file loaded by the newest run (less the bad rows the pipeline allows, which are quarantined in
// a rejects file next to the raw object), or what was there before; bad data fails the run at
// once (permanent), anything else is retried.
package validator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/flow"
)

// Validator loads landed files into staging tables.
type Validator struct {
	pool *pgxpool.Pool
	s3   *s3.Client
	log  *slog.Logger
}

// New returns a Validator writing through pool and reading objects with s3c (nil for a validator
// that only prepares staging tables, as `sluice provision` does).
func New(pool *pgxpool.Pool, s3c *s3.Client, log *slog.Logger) (*Validator, error) {
	if pool == nil {
		return nil, errors.New("validator: a PostgreSQL pool is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Validator{pool: pool, s3: s3c, log: log}, nil
}

// prepareLock serialises Prepare across replicas: concurrent CREATE TABLE IF NOT EXISTS of the
// same table can fail with a unique violation in PostgreSQL's catalog.
const prepareLock = "sluice.validator.prepare"

// Prepare creates the staging table of each pipeline (and the fence table via fence.Ensure), and
// checks that an existing staging table has the columns the contract needs. contracts is keyed
// by pipeline name (see contract.ForPipelines). Call it once at start.
func (v *Validator) Prepare(ctx context.Context, pipelines []config.Pipeline, contracts map[string]*contract.Contract) error {
	tx, err := v.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("prepare staging: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", prepareLock); err != nil {
		return fmt.Errorf("prepare staging: %w", err)
	}
	if err := fence.Ensure(ctx, tx); err != nil {
		return err
	}
	for _, p := range pipelines {
		c, ok := contracts[p.Name]
		if !ok {
			return fmt.Errorf("pipeline %s: no contract loaded", p.Name)
		}
		if err := prepareStaging(ctx, tx, p, c); err != nil {
			return fmt.Errorf("pipeline %s: staging table %s.%s: %w", p.Name, p.Target.Schema, p.StagingTable, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("prepare staging: commit: %w", err)
	}
	return nil
}

func prepareStaging(ctx context.Context, tx pgx.Tx, p config.Pipeline, c *contract.Contract) error {
	part := c.Partition.Column // Validate made sure it is not a column of the file
	if pc := p.Target.PartitionColumn; pc != "" && pc != part {
		return fmt.Errorf("target.partition_column %s clashes with contract %s, which partitions by %s", pc, c.Name, part)
	}
	// CREATE SCHEMA IF NOT EXISTS needs the database's CREATE privilege even when the schema
	// exists, so only issue it when the schema is really missing.
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", p.Target.Schema).Scan(&exists); err != nil {
		return fmt.Errorf("look up schema: %w", err)
	}
	if !exists {
		if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{p.Target.Schema}.Sanitize()); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
	}
	// A staging table `sluice provision` made is only checked: the loader role may write its
	// rows but not create tables (CREATE TABLE IF NOT EXISTS needs that even when it exists).
	table := pgx.Identifier{p.Target.Schema, p.StagingTable}.Sanitize()
	if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
		return fmt.Errorf("look up table: %w", err)
	}
	if !exists {
		if _, err := tx.Exec(ctx, c.StagingDDL(p.Target.Schema, p.StagingTable, part)); err != nil {
			return fmt.Errorf("create: %w", err)
		}
		// Slices of every ds accumulate; each load deletes one, and dbt reads one.
		index := p.StagingTable + "_" + part + "_idx"
		if len(index) > 63 {
			index = index[:63]
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (%s)",
			pgx.Identifier{index}.Sanitize(), table, pgx.Identifier{part}.Sanitize())); err != nil {
			return fmt.Errorf("create index: %w", err)
		}
	}
	return checkShape(ctx, tx, p, c)
}

// checkShape fails when a table created for an older contract lacks a column or types it
// differently: otherwise every COPY would fail on the server and be retried in vain.
func checkShape(ctx context.Context, tx pgx.Tx, p config.Pipeline, c *contract.Contract) error {
	have, err := contract.TableColumns(ctx, tx, pgx.Identifier{p.Target.Schema, p.StagingTable})
	if err != nil {
		return err
	}
	return c.CheckColumns("the table", have, [2]string{c.Partition.Column, "date"}, [2]string{contract.RunIDColumn, "text"})
}

// Handle streams the landed object from S3 through contract c into p's staging table, replacing
// the slice of in.DS. Rows that break the contract are listed in a rejects file next to the raw
// object (RejectsKey); up to p.MaxBadRows of them are quarantined there and the rest is loaded,
// more fail the run (permanent) and the staging table is then unchanged.
func (v *Validator) Handle(ctx context.Context, p config.Pipeline, c *contract.Contract, in *event.Landed) (*event.Validated, error) {
	ds, err := time.Parse(time.DateOnly, in.DS)
	if err != nil {
		return nil, flow.Permanentf("ds %q is not a date: %w", in.DS, err)
	}
	obj := in.Object
	where := s3URL(obj.Bucket, obj.Key)
	get := &s3.GetObjectInput{Bucket: aws.String(obj.Bucket), Key: aws.String(obj.Key)}
	if obj.VersionID != "" {
		get.VersionId = aws.String(obj.VersionID)
	}
	out, err := v.s3.GetObject(ctx, get)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", where, err)
	}
	defer out.Body.Close()
	if out.ContentLength != nil && *out.ContentLength != obj.Size {
		return nil, fmt.Errorf("%s is %d bytes, the landed event says %d: the object changed since it landed", where, *out.ContentLength, obj.Size)
	}
	body := &checksum{r: out.Body, h: sha256.New()}
	q := &quarantine{allowed: int64(p.MaxBadRows), contract: c.Name,
		rejects: v.newRejects(ctx, obj.Bucket, RejectsKey(obj.Key), in)}
	defer q.rejects.abort()

	start := time.Now()
	n, err := v.load(ctx, p, c, in, ds, body, q)
	if errors.Is(err, contract.ErrContract) {
		// Condemn only the bytes the event names: if the object changed since it landed, the
		// violation may belong to another file, so let the run retry instead.
		if _, rerr := io.Copy(io.Discard, body); rerr != nil {
			return nil, fmt.Errorf("read %s: %w", where, rerr)
		}
		if merr := body.verify(obj); merr != nil {
			return nil, fmt.Errorf("%s: %w", where, merr)
		}
		if werr := q.rejects.close(); werr != nil {
			return nil, fmt.Errorf("write %s: %w", q.rejects.url(), werr)
		}
		v.log.WarnContext(ctx, "file rejected", "object", where, "bad_rows", q.rows, "rejects", q.rejects.url(), "err", err)
		return nil, flow.Permanent(fmt.Errorf("%s: %w", where, err))
	}
	if err != nil {
		return nil, err
	}
	table := p.Target.Schema + "." + p.StagingTable
	if q.rows > 0 {
		v.log.WarnContext(ctx, "rows quarantined", "object", where, "bad_rows", q.rows, "max_bad_rows", p.MaxBadRows,
			"rejects", q.rejects.url(), "first", q.first.Detail())
	} else {
		// A rejects file left by an earlier run of this ds no longer describes the object.
		if _, err := v.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(obj.Bucket), Key: aws.String(q.rejects.key)}); err != nil {
			v.log.WarnContext(ctx, "could not delete an old rejects file", "rejects", q.rejects.url(), "err", err)
		}
	}
	v.log.InfoContext(ctx, "staging slice replaced", "table", table, "rows", n, "bad_rows", q.rows,
		"bytes", body.n, "duration", time.Since(start))
	validated := &event.Validated{Run: in.Run, Object: in.Object, StagingTable: table, Rows: n}
	if q.rows > 0 {
		validated.Quarantine = event.Quarantine{Rejected: q.rows, RejectsKey: q.rejects.key}
	}
	return validated, nil
}

// load replaces the ds slice in one transaction: delete, COPY, verify checksum, check fence. The
// rejects file is complete before the commit, so a quarantined row is never lost.
func (v *Validator) load(ctx context.Context, p config.Pipeline, c *contract.Contract, in *event.Landed, ds time.Time, body *checksum, q *quarantine) (int64, error) {
	// The fetcher lands plain files within source.max_bytes; a gzip object that expands past
	// it (a bomb put there some other way) is refused here too.
	rd, err := contract.NewReader(body, c, contract.MaxBytes(p.Source.MaxBytes))
	if err != nil {
		return 0, q.fail(tooLarge(p, err))
	}
	rd.OnBadRow(q.add)
	table := pgx.Identifier{p.Target.Schema, p.StagingTable}
	tx, err := v.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// Two loads of one slice at once (a redelivery while the first attempt still runs, or a run
	// that lost its lease) would each delete only the rows they can see and both insert; take
	// turns instead. The loser then deletes the winner's rows, or fails its fence check.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
		"sluice.staging:"+table.Sanitize()+":"+in.DS); err != nil {
		return 0, fmt.Errorf("lock staging slice: %w", err)
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf("DELETE FROM %s WHERE %s = $1", table.Sanitize(),
		pgx.Identifier{c.Partition.Column}.Sanitize()), ds); err != nil {
		return 0, fmt.Errorf("delete staging slice %s: %w", in.DS, err)
	}
	// The binary stream's types must match the table's exactly (pgx.CopyFrom looked them up per
	// load); checkShape makes sure, in this transaction, at the cost of one catalog query.
	if err := checkShape(ctx, tx, p, c); err != nil {
		return 0, fmt.Errorf("staging table %s: %w", table.Sanitize(), err)
	}
	columns := append(c.ColumnNames(), c.Partition.Column, contract.RunIDColumn)
	// Once more rows are bad than the pipeline allows, the load is lost: stop sending rows.
	n, err := copyBinary(ctx, tx.Conn(), table, columns, newBinaryCopy(rd, q.over, c, ds, in.RunID))
	if rerr := rd.Err(); rerr != nil {
		// pgx reports the server's answer to the aborted COPY; the reader's error is the cause.
		err = rerr
	}
	if err == nil && q.over() {
		// Too many bad rows: the run fails whatever follows, but read on (without COPY) so the
		// rejects file and the count cover the file, up to reportCap more rows.
		for rd.Next() {
		}
		err = rd.Err()
	}
	if (err == nil && q.over()) || errors.Is(err, errReportCap) {
		err = q.verdict()
	}
	if err != nil {
		if errors.Is(err, contract.ErrContract) {
			return 0, q.fail(err)
		}
		return 0, tooLarge(p, fmt.Errorf("copy into %s: %w", table.Sanitize(), err))
	}
	if _, err := io.Copy(io.Discard, body); err != nil {
		return 0, fmt.Errorf("read %s: %w", s3URL(in.Object.Bucket, in.Object.Key), err)
	}
	if err := body.verify(in.Object); err != nil {
		return 0, fmt.Errorf("%s: %w", s3URL(in.Object.Bucket, in.Object.Key), err)
	}
	if err := q.rejects.close(); err != nil {
		return 0, fmt.Errorf("write %s: %w", q.rejects.url(), err)
	}
	if err := fence.Check(ctx, tx, p.Name, in.RunID, in.Fence); err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit staging slice %s: %w", in.DS, err)
	}
	return n, nil
}

// tooLarge marks a file past source.max_bytes as permanent: reading it again will not shrink it.
func tooLarge(p config.Pipeline, err error) error {
	if errors.Is(err, contract.ErrTooLarge) {
		return flow.Permanentf("source.max_bytes of pipeline %s: %w; nothing was loaded", p.Name, err)
	}
	return err
}

// checksum hashes and counts the bytes read through it.
type checksum struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (c *checksum) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

// verify compares what was read with the landed object's size and sha256. A mismatch is not
// permanent: the object may have been rewritten by a newer run since it landed.
func (c *checksum) verify(obj event.Object) error {
	sum := hex.EncodeToString(c.h.Sum(nil))
	if c.n != obj.Size || !strings.EqualFold(sum, obj.SHA256) {
		return fmt.Errorf("read %d bytes with sha256 %s, the landed event says %d bytes with sha256 %s: the object changed since it landed",
			c.n, sum, obj.Size, obj.SHA256)
	}
	return nil
}
