package fence_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

// A refused write says which token was refused, which is recorded and by whom, and how to
// recover when the database outlived the broker that issued the recorded token.
func TestRefusalNamesBothTokensAndTheRecovery(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testkit.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := fence.Ensure(ctx, conn); err != nil {
		t.Fatal(err)
	}
	check := func(runID string, token uint64) error {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		if err := fence.Check(ctx, tx, "orders", runID, token); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	if err := check("RUNNEWER", 845); err != nil {
		t.Fatal(err)
	}
	err = check("RUNOLDER", 12)
	if !errors.Is(err, fence.ErrFenced) {
		t.Fatalf("err = %v, want fence.ErrFenced", err)
	}
	for _, want := range []string{"run RUNOLDER's token 12 is lower than token 845 recorded by run RUNNEWER", fence.ResetCommand("orders")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	// The recovery works: after it, the lower token is accepted.
	if _, err := conn.Exec(ctx, `DELETE FROM sluice_fences WHERE pipeline = 'orders'`); err != nil {
		t.Fatal(err)
	}
	if err := check("RUNOLDER", 12); err != nil {
		t.Errorf("after the reset: %v", err)
	}
}
