// Package fence makes PostgreSQL refuse writes from a run that lost its lease. The lease's
// fencing token (the KV revision at acquisition, which only grows) is recorded per pipeline in
// sluice_fences inside the writer's own transaction: a token lower than one already seen means a
// newer run holds the pipeline, and the transaction must not commit.
package fence

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrFenced is returned when a newer lease holder has written for the pipeline.
var ErrFenced = errors.New("fenced: a newer run holds this pipeline's lease")

// DB is what Ensure needs: a pool or a connection.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Ensure creates the fences table unless it exists (`sluice provision` makes it; a service's
// role may write rows but not create tables, which CREATE TABLE IF NOT EXISTS needs anyway).
func Ensure(ctx context.Context, db DB) error {
	tag, err := db.Exec(ctx, `SELECT 1 WHERE to_regclass('sluice_fences') IS NULL`)
	if err != nil {
		return fmt.Errorf("look up sluice_fences: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return nil
	}
	_, err = db.Exec(ctx, `CREATE TABLE IF NOT EXISTS sluice_fences (
		pipeline text PRIMARY KEY,
		token    bigint NOT NULL,
		run_id   text NOT NULL,
		updated  timestamptz NOT NULL DEFAULT now())`)
	if err != nil {
		return fmt.Errorf("create sluice_fences: %w", err)
	}
	return nil
}

// Check records token for pipeline in tx, or returns ErrFenced if a greater token is recorded.
// Call it inside the transaction that does the write, before commit.
func Check(ctx context.Context, tx pgx.Tx, pipeline, runID string, token uint64) error {
	if token == 0 {
		return fmt.Errorf("fence check for %s: run %s carries no fencing token: %w", pipeline, runID, ErrFenced)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO sluice_fences (pipeline, token, run_id) VALUES ($1, $2, $3)
		ON CONFLICT (pipeline) DO UPDATE SET token = EXCLUDED.token, run_id = EXCLUDED.run_id, updated = now()
		WHERE sluice_fences.token <= EXCLUDED.token`, pipeline, int64(token), runID)
	if err != nil {
		return fmt.Errorf("fence check: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return refused(ctx, tx, pipeline, runID, token)
	}
	return nil
}

// refused says which token was refused, which is recorded, and how to recover when the record
// outlived the broker that issued it.
func refused(ctx context.Context, tx pgx.Tx, pipeline, runID string, token uint64) error {
	var recorded int64
	var holder string
	var at time.Time
	err := tx.QueryRow(ctx, `SELECT token, run_id, updated FROM sluice_fences WHERE pipeline = $1`, pipeline).Scan(&recorded, &holder, &at)
	if err != nil {
		return fmt.Errorf("pipeline %s: run %s's token %d refused: %w", pipeline, runID, token, ErrFenced)
	}
	return fmt.Errorf("%w: pipeline %s: run %s's token %d is lower than token %d recorded by run %s at %s. "+
		"Either that newer run holds the lease and this one lost it, or the broker's state was reset while "+
		"PostgreSQL kept sluice_fences (say .sluice was removed but not the database); then, once no older "+
		"run can still write: %s", ErrFenced, pipeline, runID, token, recorded, holder, at.UTC().Format(time.RFC3339), ResetCommand(pipeline))
}

// ResetCommand is the command that forgets pipeline's recorded fencing token.
func ResetCommand(pipeline string) string {
	return fmt.Sprintf(`psql "$DATABASE_URL" -c "DELETE FROM sluice_fences WHERE pipeline = '%s'"`, pipeline)
}
