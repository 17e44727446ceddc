package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
)

// Multi-row statements. Settlement writes a whole batch with a fixed number of statements:
// on PostgreSQL every statement is a network round trip, and round trips, not work, are what
// bound a batch's time.

// paramsMax bounds the parameters of one statement, below SQLite's 32,766 and PostgreSQL's
// 65,535.
const paramsMax = 30_000

// inListMax bounds the ids of one IN (…) list.
const inListMax = 5_000

// execRows runs prefix + "(…), (…)" + suffix for rows, in as many statements as the parameter
// limit needs, and returns the rows affected. casts, when not nil, wraps each column's
// parameter in CAST(… AS type). Every row must have the same number of columns.
func (s *Store) execRows(ctx context.Context, tx *sql.Tx, prefix string, casts []string, rows [][]any, suffix string) (int64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	cols := len(rows[0])
	per := max(paramsMax/cols, 1)
	var total int64
	for start := 0; start < len(rows); start += per {
		part := rows[start:min(start+per, len(rows))]
		q, args := valuesList(part, cols, casts, s.d.Positional)
		res, err := tx.ExecContext(ctx, prefix+q+suffix, args...)
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

// valuesList renders "($1, $2), ($3, $4)" (with casts; "(?, ?), (?, ?)" when positional)
// and flattens the arguments.
func valuesList(rows [][]any, cols int, casts []string, positional bool) (string, []any) {
	var b strings.Builder
	args := make([]any, 0, len(rows)*cols)
	n := 1
	for i, r := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := 0; c < cols; c++ {
			if c > 0 {
				b.WriteString(", ")
			}
			p := "?"
			if !positional {
				p = "$" + strconv.Itoa(n)
			}
			if casts != nil {
				fmt.Fprintf(&b, "CAST(%s AS %s)", p, casts[c])
			} else {
				b.WriteString(p)
			}
			n++
		}
		b.WriteByte(')')
		args = append(args, r...)
	}
	return b.String(), args
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

// params renders n parameters for an IN list that is a statement's only parameters.
func (s *Store) params(n int) string {
	if s.d.Positional {
		return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
	}
	return placeholders(1, n)
}
