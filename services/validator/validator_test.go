package validator

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/objstore"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

type env struct {
	v      *Validator
	pool   *pgxpool.Pool
	s3     *s3.Client
	bucket string
	p      config.Pipeline
	c      *contract.Contract
}

func ordersPipeline(schema string) config.Pipeline {
	return config.Pipeline{
		Name:         "orders",
		Contract:     "orders",
		StagingTable: "staging_orders",
		Target:       config.Target{Schema: schema, Table: "orders", PartitionColumn: "load_date"},
	}
}

// setup gives a test a fresh database and bucket and a prepared orders pipeline.
func setup(t *testing.T) *env {
	t.Helper()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, testkit.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s3cfg := testkit.S3(t)
	client, err := objstore.New(ctx, s3cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := ordersPipeline("public")
	contracts, err := contract.ForPipelines([]config.Pipeline{p}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, err := New(pool, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Prepare(ctx, []config.Pipeline{p}, contracts); err != nil {
		t.Fatal(err)
	}
	return &env{v: v, pool: pool, s3: client, bucket: s3cfg.Bucket, p: p, c: contracts[p.Name]}
}

// put stores body under key and describes it as the fetcher would.
func (e *env) put(t *testing.T, key, body string) event.Object {
	t.Helper()
	_, err := e.s3.PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String(e.bucket), Key: aws.String(key), Body: strings.NewReader(body)})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(body))
	return event.Object{Bucket: e.bucket, Key: key, Size: int64(len(body)), SHA256: hex.EncodeToString(sum[:]),
		SourceURL: "http://source.invalid/orders/" + key}
}

func landed(ds string, token uint64, obj event.Object) *event.Landed {
	return &event.Landed{
		Run:    event.Run{RunID: ulid.Make().String(), Pipeline: "orders", DS: ds, Fence: token, RequestedAt: time.Now().UTC()},
		Object: obj,
	}
}

// ordersCSV renders rows of orders with ids from first on; amount and timestamp vary with the id.
func ordersCSV(first, n int) string {
	var b strings.Builder
	b.WriteString("order_id,customer_id,amount,updated_at\n")
	for i := first; i < first+n; i++ {
		fmt.Fprintf(&b, "%d,%d,%d.%02d,2024-01-01 10:%02d:00\n", i, 100+i, i, i%100, i%60)
	}
	return b.String()
}

// slice returns the ds slice of the staging table as "order_id customer_id amount updated_at run_id".
func (e *env) slice(t *testing.T, ds string) []string {
	t.Helper()
	rows, err := e.pool.Query(t.Context(), `SELECT order_id, customer_id, amount::text, updated_at, run_id
		FROM public.staging_orders WHERE load_date = $1::date ORDER BY order_id`, ds)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var (
			id, cust    int64
			amount, run string
			updatedAt   time.Time
		)
		if err := rows.Scan(&id, &cust, &amount, &updatedAt, &run); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d %d %s %s %s", id, cust, amount, updatedAt.UTC().Format(time.RFC3339), run))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *env) count(t *testing.T, ds string) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM public.staging_orders WHERE load_date = $1::date`, ds).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// mustLoad runs Handle and checks the validated event it returns.
func (e *env) mustLoad(t *testing.T, in *event.Landed) *event.Validated {
	t.Helper()
	out, err := e.v.Handle(t.Context(), e.p, e.c, in)
	if err != nil {
		t.Fatalf("Handle: %v", err)
	}
	if _, err := event.Encode(out); err != nil {
		t.Fatalf("validated event: %v", err)
	}
	if out.RunID != in.RunID || out.DS != in.DS || out.Fence != in.Fence || out.Object != in.Object || out.StagingTable != "public.staging_orders" {
		t.Fatalf("validated event = %+v for %+v", out, in)
	}
	return out
}

func TestHandleLoadsFile(t *testing.T) {
	e := setup(t)
	in := landed("2024-01-01", 1, e.put(t, "raw/orders/2024-01-01.csv", ordersCSV(1, 5)))
	out := e.mustLoad(t, in)
	if out.Rows != 5 {
		t.Fatalf("rows = %d, want 5", out.Rows)
	}
	got := e.slice(t, "2024-01-01")
	want := []string{
		"1 101 1.01 2024-01-01T10:01:00Z " + in.RunID,
		"2 102 2.02 2024-01-01T10:02:00Z " + in.RunID,
		"3 103 3.03 2024-01-01T10:03:00Z " + in.RunID,
		"4 104 4.04 2024-01-01T10:04:00Z " + in.RunID,
		"5 105 5.05 2024-01-01T10:05:00Z " + in.RunID,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("staging slice:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestHandleAcceptsMessyButValidFile(t *testing.T) {
	e := setup(t)
	body := "\ufeffamount,updated_at,customer_id,order_id\r\n" +
		"\"0.50\",2024-01-01T10:00:00+02:00,7,1\r\n" +
		"000." + strings.Repeat("1", 16383) + ",2024-01-01T10:00:00.123456Z,8,2\r\n" +
		strings.Repeat("9", 131072) + ".5,2024-01-01 10:00:00,9,3\r\n"
	in := landed("2024-01-01", 1, e.put(t, "raw/orders/2024-01-01.csv", body))
	if out := e.mustLoad(t, in); out.Rows != 3 {
		t.Fatalf("rows = %d, want 3", out.Rows)
	}
	var amounts []string
	rows, err := e.pool.Query(t.Context(), `SELECT amount::text FROM public.staging_orders ORDER BY order_id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			t.Fatal(err)
		}
		amounts = append(amounts, a)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	want := []string{"0.50", "0." + strings.Repeat("1", 16383), strings.Repeat("9", 131072) + ".5"}
	if len(amounts) != 3 || amounts[0] != want[0] || amounts[1] != want[1] || amounts[2] != want[2] {
		t.Fatalf("amounts round-tripped wrong (lengths %d)", len(amounts))
	}
}

func TestRerunReplacesSliceOnly(t *testing.T) {
	e := setup(t)
	first := landed("2024-01-01", 1, e.put(t, "raw/orders/2024-01-01.csv", ordersCSV(1, 5)))
	e.mustLoad(t, first)
	other := landed("2024-01-02", 2, e.put(t, "raw/orders/2024-01-02.csv", ordersCSV(100, 3)))
	e.mustLoad(t, other)
	otherBefore := e.slice(t, "2024-01-02")

	// The same ds again, a new run with a different file: the slice is replaced, not appended to.
	rerun := landed("2024-01-01", 3, e.put(t, "raw/orders/2024-01-01.csv", ordersCSV(3, 4)))
	if out := e.mustLoad(t, rerun); out.Rows != 4 {
		t.Fatalf("rows = %d, want 4", out.Rows)
	}
	got := e.slice(t, "2024-01-01")
	if len(got) != 4 {
		t.Fatalf("slice after rerun has %d rows, want 4:\n%s", len(got), strings.Join(got, "\n"))
	}
	for _, r := range got {
		if !strings.HasSuffix(r, rerun.RunID) {
			t.Fatalf("row %q was not loaded by the rerun %s", r, rerun.RunID)
		}
	}
	// And once more with the very same event (a redelivery): still no duplicates.
	e.mustLoad(t, rerun)
	if n := e.count(t, "2024-01-01"); n != 4 {
		t.Fatalf("slice after redelivery has %d rows, want 4", n)
	}
	if after := e.slice(t, "2024-01-02"); strings.Join(after, "\n") != strings.Join(otherBefore, "\n") {
		t.Fatalf("another ds's slice changed:\n%s\nwas\n%s", strings.Join(after, "\n"), strings.Join(otherBefore, "\n"))
	}
}

func TestViolationIsPermanentAndLoadsNothing(t *testing.T) {
	e := setup(t)
	good := landed("2024-01-01", 1, e.put(t, "raw/orders/2024-01-01.csv", ordersCSV(1, 5)))
	e.mustLoad(t, good)
	before := e.slice(t, "2024-01-01")

	// Line 5 is the fourth data row; its amount is not a number.
	bad := strings.Replace(ordersCSV(1, 6), "\n4,104,4.04,", "\n4,104,12a,", 1)
	in := landed("2024-01-01", 2, e.put(t, "raw/orders/2024-01-01.csv", bad))
	_, err := e.v.Handle(t.Context(), e.p, e.c, in)
	if !flow.IsPermanent(err) || !errors.Is(err, contract.ErrContract) {
		t.Fatalf("err = %v, want a permanent contract violation", err)
	}
	var v *contract.Violation
	if !errors.As(err, &v) || v.Line != 5 || v.Column != "amount" || v.Value != "12a" {
		t.Fatalf("violation = %+v, want line 5, column amount, value 12a", v)
	}
	want := fmt.Sprintf(`s3://%[1]s/raw/orders/2024-01-01.csv: 1 row breaks contract orders (max_bad_rows 0); `+
		`first: line 5, column amount: value "12a" is not a number; rejects in s3://%[1]s/raw/orders/2024-01-01.rejects.csv`, e.bucket)
	if err.Error() != want {
		t.Fatalf("message = %s\nwant      %s", err, want)
	}
	wantRejects(t, e.get(t, "raw/orders/2024-01-01.rejects.csv"),
		`5,amount,12a,is not a number,"4,104,12a,2024-01-01 10:04:00"`)
	if after := e.slice(t, "2024-01-01"); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("the slice changed after a rejected file:\n%s\nwas\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
	}

	// A header problem fails the same way, before any transaction.
	in = landed("2024-01-01", 3, e.put(t, "raw/orders/2024-01-01.csv", "order_id,amount\n1,2\n"))
	_, err = e.v.Handle(t.Context(), e.p, e.c, in)
	if !flow.IsPermanent(err) || !errors.As(err, &v) || v.Line != 1 || v.Column != "customer_id, updated_at" {
		t.Fatalf("err = %v, want a permanent violation naming the missing columns", err)
	}
	want = fmt.Sprintf(`s3://%[1]s/raw/orders/2024-01-01.csv: contract violation at line 1, column customer_id, updated_at: `+
		`required column missing from the header; rejects in s3://%[1]s/raw/orders/2024-01-01.rejects.csv`, e.bucket)
	if err.Error() != want {
		t.Fatalf("message = %s\nwant      %s", err, want)
	}
	wantRejects(t, e.get(t, "raw/orders/2024-01-01.rejects.csv"),
		`1,"customer_id, updated_at",,required column missing from the header,`)
	if n := e.count(t, "2024-01-01"); n != len(before) {
		t.Fatalf("slice has %d rows, want %d", n, len(before))
	}
}

func TestChecksumMismatchIsRetryableAndLoadsNothing(t *testing.T) {
	e := setup(t)
	obj := e.put(t, "raw/orders/2024-01-01.csv", ordersCSV(1, 5))
	for name, change := range map[string]func(*event.Object){
		"sha256": func(o *event.Object) { o.SHA256 = strings.Repeat("0", 64) },
		"size":   func(o *event.Object) { o.Size-- },
	} {
		t.Run(name, func(t *testing.T) {
			o := obj
			change(&o)
			_, err := e.v.Handle(t.Context(), e.p, e.c, landed("2024-01-01", 1, o))
			if err == nil || flow.IsPermanent(err) || !strings.Contains(err.Error(), "changed since it landed") {
				t.Fatalf("err = %v, want a retryable checksum mismatch", err)
			}
			if n := e.count(t, "2024-01-01"); n != 0 {
				t.Fatalf("%d rows loaded, want none", n)
			}
		})
	}

	// Bad data in an object that is not the one the event names is no verdict on the run's file.
	bad := e.put(t, "raw/orders/bad.csv", ordersCSV(1, 2)+"x,1,1,2024-01-01 00:00:00\n")
	bad.SHA256 = obj.SHA256
	_, err := e.v.Handle(t.Context(), e.p, e.c, landed("2024-01-01", 1, bad))
	if err == nil || flow.IsPermanent(err) || !strings.Contains(err.Error(), "changed since it landed") {
		t.Fatalf("err = %v, want a retryable checksum mismatch rather than a violation", err)
	}
}

func TestStaleFenceLoadsNothing(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := fence.Check(ctx, tx, "orders", ulid.Make().String(), 10); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	in := landed("2024-01-01", 9, e.put(t, "raw/orders/2024-01-01.csv", ordersCSV(1, 5)))
	_, err = e.v.Handle(ctx, e.p, e.c, in)
	if !errors.Is(err, fence.ErrFenced) {
		t.Fatalf("err = %v, want fence.ErrFenced", err)
	}
	if n := e.count(t, "2024-01-01"); n != 0 {
		t.Fatalf("%d rows loaded by a fenced run, want none", n)
	}
}

func TestConcurrentLoadsOfOneSlice(t *testing.T) {
	e := setup(t)
	const rows = 20000
	in := landed("2024-01-01", 1, e.put(t, "raw/orders/2024-01-01.csv", ordersCSV(1, rows)))
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { _, errs[i] = e.v.Handle(t.Context(), e.p, e.c, in) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := e.count(t, "2024-01-01"); n != rows {
		t.Fatalf("slice has %d rows after concurrent loads, want %d", n, rows)
	}
}

func TestHandleRejectsBadDS(t *testing.T) {
	e := setup(t)
	in := landed("2024-02-30", 1, e.put(t, "raw/orders/x.csv", ordersCSV(1, 1)))
	if _, err := e.v.Handle(t.Context(), e.p, e.c, in); !flow.IsPermanent(err) {
		t.Fatalf("err = %v, want permanent", err)
	}
}

func TestPrepare(t *testing.T) {
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, testkit.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	v, err := New(pool, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := ordersPipeline("analytics")
	contracts, err := contract.ForPipelines([]config.Pipeline{p}, "")
	if err != nil {
		t.Fatal(err)
	}
	// Twice, and concurrently: idempotent and race-free.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = v.Prepare(ctx, []config.Pipeline{p}, contracts) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Prepare(ctx, []config.Pipeline{p}, contracts); err != nil {
		t.Fatal(err)
	}
	var cols string
	if err := pool.QueryRow(ctx, `SELECT string_agg(column_name || ' ' || data_type || ' ' || is_nullable, ', ' ORDER BY ordinal_position)
		FROM information_schema.columns WHERE table_schema = 'analytics' AND table_name = 'staging_orders'`).Scan(&cols); err != nil {
		t.Fatal(err)
	}
	want := "order_id bigint NO, customer_id integer NO, amount numeric NO, updated_at timestamp with time zone NO, load_date date NO, run_id text NO"
	if cols != want {
		t.Fatalf("staging columns = %s\nwant %s", cols, want)
	}
	if _, err := pool.Exec(ctx, "SELECT count(*) FROM sluice_fences"); err != nil {
		t.Fatalf("fence table: %v", err)
	}

	// A table left by another contract is refused at start, not at every load.
	if _, err := pool.Exec(ctx, `ALTER TABLE analytics.staging_orders ALTER COLUMN amount TYPE text, DROP COLUMN run_id`); err != nil {
		t.Fatal(err)
	}
	err = v.Prepare(ctx, []config.Pipeline{p}, contracts)
	if err == nil || !strings.Contains(err.Error(), "column amount is text, the contract needs numeric") || !strings.Contains(err.Error(), "column run_id is missing") {
		t.Fatalf("err = %v, want the shape mismatch named", err)
	}

	clash := ordersPipeline("public")
	clash.Target.PartitionColumn = "amount"
	if err := v.Prepare(ctx, []config.Pipeline{clash}, contracts); err == nil || !strings.Contains(err.Error(), "clashes") {
		t.Fatalf("err = %v, want a partition column clash", err)
	}
	if err := v.Prepare(ctx, []config.Pipeline{ordersPipeline("public")}, nil); err == nil {
		t.Fatal("Prepare without a contract succeeded")
	}
}

// get returns an object's content, or fails the test.
func (e *env) get(t *testing.T, key string) string {
	t.Helper()
	b, ok := e.tryGet(t, key)
	if !ok {
		t.Fatalf("no object %s", key)
	}
	return b
}

func (e *env) tryGet(t *testing.T, key string) (string, bool) {
	t.Helper()
	out, err := e.s3.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(key)})
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), true
}

// wantRejects checks a rejects file's lines after its header.
func wantRejects(t *testing.T, got string, lines ...string) {
	t.Helper()
	want := "line,column,value,rule,record\n" + strings.Join(lines, "\n") + "\n"
	if got != want {
		t.Fatalf("rejects file\n%s\nwant\n%s", got, want)
	}
}

func TestSeveralBadRowsAreAllReported(t *testing.T) {
	e := setup(t)
	body := ordersCSV(1, 3) +
		"4,x,=1+2,2024-01-01 10:00:00\n" + // line 5: two violations; the formula is escaped in the rejects file
		"5,105,-3,2024-01-01 10:00:00\n" + // line 6
		"6,106\n" + // line 7: cut short
		"7,107,7.00,2024-01-01 10:00:00\n"
	in := landed("2024-01-01", 1, e.put(t, "raw/orders/2024-01-01.csv", body))
	_, err := e.v.Handle(t.Context(), e.p, e.c, in)
	var re *RejectedError
	if !flow.IsPermanent(err) || !errors.As(err, &re) || re.Rows != 3 || re.AtLeast || re.First.Line != 5 {
		t.Fatalf("err = %v, want 3 bad rows, the first at line 5", err)
	}
	if !strings.Contains(err.Error(), `3 rows break contract orders (max_bad_rows 0); first: line 5, column customer_id: value "x" is not an integer;`) {
		t.Fatalf("message = %s", err)
	}
	wantRejects(t, e.get(t, "raw/orders/2024-01-01.rejects.csv"),
		`5,customer_id,x,is not an integer,"4,x,=1+2,2024-01-01 10:00:00"`,
		`5,amount,'=1+2,is not a number,"4,x,=1+2,2024-01-01 10:00:00"`,
		`6,amount,'-3,is less than the minimum 0,"5,105,-3,2024-01-01 10:00:00"`,
		`7,,,"record has 2 fields, the header has 4","6,106"`)
	if n := e.count(t, "2024-01-01"); n != 0 {
		t.Fatalf("%d rows loaded, want none", n)
	}
}

func TestQuarantineLoadsTheGoodRows(t *testing.T) {
	e := setup(t)
	e.p.MaxBadRows = 2
	bad := ordersCSV(1, 3) + "4,104,12a,2024-01-01 10:00:00\n" + "5,105,5.00,2024-01-01 10:00:00\n"
	in := landed("2024-01-01", 1, e.put(t, "raw/orders/2024-01-01.csv", bad))
	out := e.mustLoad(t, in)
	if out.Rows != 4 {
		t.Fatalf("rows = %d, want the 4 good ones", out.Rows)
	}
	if out.Rejected != 1 || out.RejectsKey != "raw/orders/2024-01-01.rejects.csv" {
		t.Fatalf("quarantine in the validated event = %+v, want 1 row in raw/orders/2024-01-01.rejects.csv", out.Quarantine)
	}
	if _, err := event.Encode(out); err != nil {
		t.Fatalf("the validated event does not encode: %v", err)
	}
	got := e.slice(t, "2024-01-01")
	if len(got) != 4 || strings.HasPrefix(got[3], "4 ") {
		t.Fatalf("staging slice:\n%s", strings.Join(got, "\n"))
	}
	wantRejects(t, e.get(t, "raw/orders/2024-01-01.rejects.csv"), `5,amount,12a,is not a number,"4,104,12a,2024-01-01 10:00:00"`)

	// One bad row more than allowed fails the run and keeps the slice.
	three := bad + "6,x,1,2024-01-01 10:00:00\n" + "7,107,1,someday\n"
	_, err := e.v.Handle(t.Context(), e.p, e.c, landed("2024-01-01", 2, e.put(t, "raw/orders/2024-01-01.csv", three)))
	var re *RejectedError
	if !errors.As(err, &re) || re.Rows != 3 || re.Allowed != 2 || !flow.IsPermanent(err) {
		t.Fatalf("err = %v, want 3 bad rows with 2 allowed", err)
	}
	if after := e.slice(t, "2024-01-01"); strings.Join(after, "\n") != strings.Join(got, "\n") {
		t.Fatalf("a rejected file changed the slice")
	}

	// A clean rerun removes the rejects file that no longer describes the object.
	if clean := e.mustLoad(t, landed("2024-01-01", 3, e.put(t, "raw/orders/2024-01-01.csv", ordersCSV(1, 5)))); clean.Rejected != 0 || clean.RejectsKey != "" {
		t.Fatalf("a clean load reports a quarantine: %+v", clean.Quarantine)
	}
	if _, ok := e.tryGet(t, "raw/orders/2024-01-01.rejects.csv"); ok {
		t.Fatal("the old rejects file is still there after a clean load")
	}
}

func TestReportStopsAfterTheCap(t *testing.T) {
	e := setup(t)
	var b strings.Builder
	b.WriteString(ordersCSV(1, 1))
	for i := range reportCap + 500 {
		fmt.Fprintf(&b, "%d,1,x,2024-01-01 10:00:00\n", i+2)
	}
	_, err := e.v.Handle(t.Context(), e.p, e.c, landed("2024-01-01", 1, e.put(t, "raw/orders/2024-01-01.csv", b.String())))
	var re *RejectedError
	if !errors.As(err, &re) || !re.AtLeast || re.Rows != reportCap+1 {
		t.Fatalf("err = %v, want at least %d bad rows", err, reportCap+1)
	}
	if !strings.HasPrefix(err.Error(), fmt.Sprintf("s3://%s/raw/orders/2024-01-01.csv: at least 1001 rows break contract orders", e.bucket)) {
		t.Fatalf("message = %s", err)
	}
	if n := strings.Count(e.get(t, "raw/orders/2024-01-01.rejects.csv"), "\n"); n != reportCap+2 {
		t.Fatalf("rejects file has %d lines, want a header and %d rows", n, reportCap+1)
	}
}

func TestGzipObject(t *testing.T) {
	e := setup(t)
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte(ordersCSV(1, 5)))
	zw.Close()
	in := landed("2024-01-01", 1, e.put(t, "raw/orders/2024-01-01.csv.gz", z.String()))
	if out := e.mustLoad(t, in); out.Rows != 5 {
		t.Fatalf("rows = %d, want 5", out.Rows)
	}
	// Cut short: a permanent violation, rejects next to the object.
	cut := z.String()[:z.Len()-12]
	_, err := e.v.Handle(t.Context(), e.p, e.c, landed("2024-01-01", 2, e.put(t, "raw/orders/2024-01-01.csv.gz", cut)))
	if !flow.IsPermanent(err) || !strings.Contains(err.Error(), "gzip data is truncated") {
		t.Fatalf("err = %v, want a permanent truncated-gzip violation", err)
	}
	if _, ok := e.tryGet(t, "raw/orders/2024-01-01.rejects.csv"); !ok {
		t.Fatal("no rejects file for the truncated gzip object")
	}
	if n := e.count(t, "2024-01-01"); n != 5 {
		t.Fatalf("slice has %d rows, want the 5 loaded before", n)
	}
}

func TestRejectsKey(t *testing.T) {
	for key, want := range map[string]string{
		"raw/orders/2024-01-01.csv":    "raw/orders/2024-01-01.rejects.csv",
		"raw/orders/2024-01-01.csv.gz": "raw/orders/2024-01-01.rejects.csv",
		"raw/orders/2024-01-01.gz":     "raw/orders/2024-01-01.rejects.csv",
		"raw/orders/2024-01-01":        "raw/orders/2024-01-01.rejects.csv",
	} {
		if got := RejectsKey(key); got != want {
			t.Errorf("RejectsKey(%q) = %q, want %q", key, got, want)
		}
	}
}
