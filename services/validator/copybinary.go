package validator

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/crash"
)

// binaryCopy is the staging rows as PostgreSQL's binary COPY stream (COPY ... FROM STDIN
// BINARY), read straight from the contract reader. Encoding here rather than through
// pgx.CopyFrom skips pgx's per-value encode planning, the boxing of every value into an
// interface and math/big for every numeric: the data-path benchmark found those to be most of
// the validator's CPU, which made the COPY stage slower than psql's \copy of the same file
// (bench/RESULTS.md, "Data path"). Memory stays one buffer of about what COPY reads at a time.
type binaryCopy struct {
	rd    *contract.Reader
	stop  func() bool     // true ends the stream early, as if the file ended
	types []contract.Type // the contract's column types, in Values() order
	extra []byte          // the partition column (ds) and run_id, encoded once
	width uint16          // fields per tuple
	buf   []byte
	off   int
	begun bool
	err   error // what ends the stream: io.EOF after the trailer, or the first error
}

func newBinaryCopy(rd *contract.Reader, stop func() bool, c *contract.Contract, ds time.Time, runID string) *binaryCopy {
	types := make([]contract.Type, len(c.Columns))
	for i, col := range c.Columns {
		types[i] = col.Type
	}
	extra := appendDate(nil, ds)
	extra = appendBytes(extra, []byte(runID))
	return &binaryCopy{rd: rd, stop: stop, types: types, extra: extra, width: uint16(len(types) + 2)}
}

// copyBinary runs COPY table (columns) FROM STDIN BINARY with src as the data, and tells the
// connection's tracer about it as pgx.Conn.CopyFrom would (one "SQL COPY" span).
func copyBinary(ctx context.Context, conn *pgx.Conn, table pgx.Identifier, columns []string, src io.Reader) (int64, error) {
	quoted := make([]string, len(columns))
	for i, col := range columns {
		quoted[i] = pgx.Identifier{col}.Sanitize()
	}
	tracer, _ := conn.Config().Tracer.(pgx.CopyFromTracer)
	if tracer != nil {
		ctx = tracer.TraceCopyFromStart(ctx, conn, pgx.TraceCopyFromStartData{TableName: table, ColumnNames: columns})
	}
	tag, err := conn.PgConn().CopyFrom(ctx, src,
		fmt.Sprintf("COPY %s (%s) FROM STDIN BINARY", table.Sanitize(), strings.Join(quoted, ", ")))
	if tracer != nil {
		tracer.TraceCopyFromEnd(ctx, conn, pgx.TraceCopyFromEndData{CommandTag: tag, Err: err})
	}
	return tag.RowsAffected(), err
}

// copyHeader is the binary COPY signature, then no flags and no header extension.
var copyHeader = []byte("PGCOPY\n\xff\r\n\x00" + "\x00\x00\x00\x00" + "\x00\x00\x00\x00")

func (b *binaryCopy) Read(p []byte) (int, error) {
	if b.begun {
		crash.Point("validator", crash.MidCopy) // rows sent, the COPY not ended
	}
	if b.off == len(b.buf) {
		if b.err != nil {
			return 0, b.err
		}
		b.fill(len(p))
		if b.err != nil && b.err != io.EOF {
			// A violation aborts the COPY at once: rows already buffered need not be sent.
			return 0, b.err
		}
		if b.off == len(b.buf) {
			return 0, b.err
		}
	}
	n := copy(p, b.buf[b.off:])
	b.off += n
	return n, nil
}

// fill encodes records until the buffer holds at least want bytes or the file ends.
func (b *binaryCopy) fill(want int) {
	b.buf, b.off = b.buf[:0], 0
	if !b.begun {
		b.buf = append(b.buf, copyHeader...)
		b.begun = true
	}
	for len(b.buf) < want {
		if b.stop() || !b.rd.Next() {
			if err := b.rd.Err(); err != nil {
				b.err = err
				return
			}
			b.buf = append(b.buf, 0xff, 0xff) // the trailer: a tuple of -1 fields
			b.err = io.EOF
			return
		}
		var err error
		if b.buf, err = b.appendTuple(b.buf, b.rd.Values()); err != nil {
			b.err = err
			return
		}
	}
}

func (b *binaryCopy) appendTuple(buf []byte, vals []any) ([]byte, error) {
	buf = binary.BigEndian.AppendUint16(buf, b.width)
	for i, v := range vals {
		var err error
		if buf, err = appendValue(buf, b.types[i], v); err != nil {
			return nil, err
		}
	}
	return append(buf, b.extra...), nil
}

// appendValue appends one field (length, then PostgreSQL's binary send format) of a value as
// contract.Reader.Values returns it for a column of type t.
func appendValue(buf []byte, t contract.Type, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return binary.BigEndian.AppendUint32(buf, 0xffffffff), nil // NULL
	case int64:
		buf = binary.BigEndian.AppendUint32(buf, 8)
		return binary.BigEndian.AppendUint64(buf, uint64(v)), nil
	case int32:
		buf = binary.BigEndian.AppendUint32(buf, 4)
		return binary.BigEndian.AppendUint32(buf, uint32(v)), nil
	case string:
		return appendBytes(buf, []byte(v)), nil
	case bool:
		buf = binary.BigEndian.AppendUint32(buf, 1)
		if v {
			return append(buf, 1), nil
		}
		return append(buf, 0), nil
	case contract.JSON:
		// jsonb's binary format: a version byte (1), then the JSON text.
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(v)+1))
		buf = append(buf, 1)
		return append(buf, v...), nil
	case time.Time:
		if t == contract.Date {
			return appendDate(buf, v), nil
		}
		buf = binary.BigEndian.AppendUint32(buf, 8)
		return binary.BigEndian.AppendUint64(buf, uint64(v.Unix()*1_000_000+int64(v.Nanosecond())/1000-pgEpochUnix*1_000_000)), nil
	case pgtype.Numeric:
		return appendNumeric(buf, v)
	}
	return nil, fmt.Errorf("binary copy: no encoding for %T", v)
}

// pgEpochUnix is PostgreSQL's epoch for dates and timestamps, 2000-01-01 UTC, in Unix seconds.
const pgEpochUnix = 946_684_800

func appendDate(buf []byte, d time.Time) []byte {
	days := (time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, time.UTC).Unix() - pgEpochUnix) / 86_400
	buf = binary.BigEndian.AppendUint32(buf, 4)
	return binary.BigEndian.AppendUint32(buf, uint32(int32(days)))
}

func appendBytes(buf, b []byte) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(b)))
	return append(buf, b...)
}

// numericCodec encodes the numerics the fast path does not take (more than 18 digits).
var numericCodec = pgtype.NewMap()

// appendNumeric writes PostgreSQL's numeric send format (base-10000 digits) straight from the
// int64 that every numeric of up to 18 digits holds, without math/big.
func appendNumeric(buf []byte, n pgtype.Numeric) ([]byte, error) {
	if !n.Valid || n.NaN || n.InfinityModifier != pgtype.Finite || n.Int == nil || !n.Int.IsInt64() ||
		n.Exp < -1000 || n.Exp > 1000 {
		start := len(buf)
		buf = append(buf, 0, 0, 0, 0)
		out, err := numericCodec.Encode(pgtype.NumericOID, pgtype.BinaryFormatCode, n, buf)
		if err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint32(out[start:], uint32(len(out)-start-4))
		return out, nil
	}
	v := n.Int.Int64()
	abs := uint64(v)
	if v < 0 {
		abs = uint64(-v)
	}
	var scratch [20]byte
	digits := strconv.AppendUint(scratch[:0], abs, 10)
	dscale := 0
	if n.Exp < 0 {
		dscale = int(-n.Exp)
	}
	return appendDecimal(buf, v < 0, digits, int(n.Exp), dscale), nil
}

// appendDecimal encodes the value digits × 10^exp (digits: decimal ASCII) with display scale
// dscale. Base-10000 digit g holds decimal positions 4g+3 … 4g (position 0 is the units).
func appendDecimal(buf []byte, neg bool, digits []byte, exp, dscale int) []byte {
	for len(digits) > 0 && digits[0] == '0' {
		digits = digits[1:]
	}
	for len(digits) > 0 && digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
		exp++
	}
	if len(digits) == 0 { // zero: no digits, positive, whatever the sign was
		buf = binary.BigEndian.AppendUint32(buf, 8)
		buf = binary.BigEndian.AppendUint64(buf, uint64(dscale))
		return buf
	}
	hi, lo := exp+len(digits)-1, exp // positions of the first and last digit
	ghi, glo := floorDiv4(hi), floorDiv4(lo)
	ndigits := ghi - glo + 1
	var sign uint16
	if neg {
		sign = 0x4000
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(8+2*ndigits))
	buf = binary.BigEndian.AppendUint16(buf, uint16(ndigits))
	buf = binary.BigEndian.AppendUint16(buf, uint16(int16(ghi)))
	buf = binary.BigEndian.AppendUint16(buf, sign)
	buf = binary.BigEndian.AppendUint16(buf, uint16(dscale))
	k := 0
	for g := ghi; g >= glo; g-- {
		var d uint16
		for pos := 4*g + 3; pos >= 4*g; pos-- {
			d *= 10
			if pos <= hi && pos >= lo {
				d += uint16(digits[k] - '0')
				k++
			}
		}
		buf = binary.BigEndian.AppendUint16(buf, d)
	}
	return buf
}

func floorDiv4(x int) int {
	if x >= 0 {
		return x / 4
	}
	return -((-x + 3) / 4)
}
