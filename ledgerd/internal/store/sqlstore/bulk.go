package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// Multi-row statements. Settlement writes a whole batch with a fixed number of statements:
// on PostgreSQL every statement is a network round trip, and round trips, not work, are what
// bound a batch's time.

// paramsMax bounds the parameters of one statement, below SQLite's 32,766 and PostgreSQL's
// 65,535.
const paramsMax = 30_000

// inListMax bounds the ids of one IN (…) list (a power of two, which padding keeps).
const inListMax = 4096

// execRows runs prefix + "(…), (…)" + suffix for rows, in as many statements as the parameter
// limit needs (Dialect.ReuseStatements: in chunks of a few fixed sizes), and returns the rows
// affected. casts, when not nil, wraps each column's parameter in CAST(… AS type). Every row
// must have the same number of columns.
func (s *Store) execRows(ctx context.Context, tx *sql.Tx, prefix string, casts []string, rows [][]any, suffix string) (int64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	cols := len(rows[0])
	per := max(paramsMax/cols, 1)
	var total int64
	for start := 0; start < len(rows); {
		part := rows[start : start+s.chunk(len(rows)-start, per)]
		start += len(part)
		args := make([]any, 0, len(part)*cols)
		for _, r := range part {
			args = append(args, r...)
		}
		res, err := s.exec(ctx, tx, prefix+valuesList(len(part), cols, casts, s.d.Positional)+suffix, args...)
		if err != nil {
			return total, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// reuseRowsMax is the largest chunk of a multi-row statement when statements are reused: a
// power of two, so a batch of any size needs at most one chunk of each smaller power of two
// (990 rows: 256·3 + 128 + 64 + 16 + 8 + 4 + 2, nine statements) and a statement kind has at
// most nine texts to prepare.
const reuseRowsMax = 256

// chunk is how many of n remaining rows the next multi-row statement carries, given at most
// per rows fit its parameters: all it can, or with Dialect.ReuseStatements the largest power
// of two that fits, so the statement texts repeat from batch to batch.
func (s *Store) chunk(n, per int) int {
	n = min(n, per)
	if !s.d.ReuseStatements {
		return n
	}
	n = min(n, reuseRowsMax)
	return 1 << (bits.Len(uint(n)) - 1)
}

// valuesList renders n rows of cols parameters, "($1, $2), ($3, $4)" ("(?, ?), (?, ?)" when
// positional), each wrapped in CAST(… AS casts[col]) when casts is not nil.
func valuesList(n, cols int, casts []string, positional bool) string {
	var b strings.Builder
	b.Grow(n * cols * 4)
	p := 1
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := range cols {
			if c > 0 {
				b.WriteString(", ")
			}
			if casts != nil {
				b.WriteString("CAST(")
			}
			if positional {
				b.WriteByte('?')
			} else {
				b.WriteByte('$')
				b.WriteString(strconv.Itoa(p))
			}
			if casts != nil {
				b.WriteString(" AS " + casts[c] + ")")
			}
			p++
		}
		b.WriteByte(')')
	}
	return b.String()
}

// updateRows sets, for each row, columns cols[1:] of table's row whose id is the row's first
// value (UPDATE … FROM a VALUES list, which both databases run), with where added to the
// join condition (it may refer to the values as v.<col>). Every row must match exactly one
// row of the table: anything else is an invariant violation, never a silent partial update.
func (s *Store) updateRows(ctx context.Context, tx *sql.Tx, table string, cols, types []string, rows [][]any, where string) error {
	if len(rows) == 0 {
		return nil
	}
	set := make([]string, 0, len(cols)-1)
	for _, c := range cols[1:] {
		if c == "before" {
			continue // a value only compared in where
		}
		set = append(set, c+" = v."+c)
	}
	prefix := `WITH v (` + strings.Join(cols, ", ") + `) AS (VALUES `
	suffix := `) UPDATE ` + table + ` SET ` + strings.Join(set, ", ") + ` FROM v WHERE ` + table + `.id = v.id` + where
	n, err := s.execRows(ctx, tx, prefix, types, rows, suffix)
	if err != nil {
		return err
	}
	if n != int64(len(rows)) {
		return invariant("update %s: %d rows changed, want %d", table, n, len(rows))
	}
	return nil
}

// inList renders the parameters of an IN list that is a statement's only parameters, and
// its arguments. With Dialect.ReuseStatements the list is padded to a power of two by
// repeating its last id (which IN ignores), so the statement text repeats from batch to
// batch. ids must not be empty.
func (s *Store) inList(ids []string) (string, []any) {
	n := len(ids)
	if s.d.ReuseStatements {
		n = 1 << bits.Len(uint(n-1))
	}
	args := make([]any, n)
	for i := range args {
		args[i] = ids[min(i, len(ids)-1)]
	}
	if s.d.Positional {
		return strings.TrimSuffix(strings.Repeat("?, ", n), ", "), args
	}
	return placeholders(1, n), args
}

// eachRow scans each row of rows into dest, calls fn after each, and closes rows.
func eachRow(rows *sql.Rows, fn func() error, dest ...any) error {
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			rows.Close()
			return fmt.Errorf("scan: %w", err)
		}
		if err := fn(); err != nil {
			rows.Close()
			return err
		}
	}
	return closeRows(rows)
}

// closeRows closes rows after a loop over Next and reports what ended it: an error that
// stopped the iteration early (a lost connection, a cancelled context, a failed step) is only
// in Err — Next closes the rows itself then, so Close answers nil — and without it a caller
// would take the rows read so far for all of them.
func closeRows(rows *sql.Rows) error {
	return errors.Join(rows.Err(), rows.Close())
}
