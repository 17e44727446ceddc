package clickhouse

import (
	"fmt"
	"io/fs"
	"regexp"
	"strings"

	"tollgate/deploy"
)

// DefaultDatabase is the database the schema files name.
const DefaultDatabase = "tollgate"

var (
	dbNameRe     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
	dbIdentRe    = regexp.MustCompile(`\b` + DefaultDatabase + `\b`)
	schemaSingle = "clickhouse/schema.sql"
)

// SchemaStatements returns the statements of deploy/clickhouse/schema.sql for database db.
func SchemaStatements(db string) ([]string, error) {
	return FileStatements(schemaSingle, db)
}

// FileStatements returns the statements of one embedded file of deploy/clickhouse/ (name as
// "clickhouse/cluster.sql"), with the database renamed to db.
func FileStatements(name, db string) ([]string, error) {
	src, err := fs.ReadFile(deploy.ClickHouse, name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return Statements(string(src), db)
}

// Statements splits a SQL script into statements, dropping comments, and renames the
// database: every identifier "tollgate" becomes db. The schema files name their database in
// full so that an operator can run them as they are with clickhouse-client; tests and
// side-by-side deployments need another name. The rename is a whole-word match on the
// comment-free text, and the files use the word only as the database name.
func Statements(src, db string) ([]string, error) {
	if !dbNameRe.MatchString(db) {
		return nil, fmt.Errorf("database name %q: want letters, digits and _", db)
	}
	code, err := stripComments(src)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range splitStatements(code) {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		out = append(out, dbIdentRe.ReplaceAllLiteralString(s, db))
	}
	return out, nil
}

// stripComments removes "--" line comments outside string literals.
func stripComments(src string) (string, error) {
	var b strings.Builder
	inStr := false
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case inStr:
			b.WriteByte(c)
			if c == '\\' && i+1 < len(src) {
				i++
				b.WriteByte(src[i])
			} else if c == '\'' {
				inStr = false
			}
		case c == '\'':
			inStr = true
			b.WriteByte(c)
		case c == '-' && i+1 < len(src) && src[i+1] == '-':
			for i < len(src) && src[i] != '\n' {
				i++
			}
			b.WriteByte('\n')
		default:
			b.WriteByte(c)
		}
	}
	if inStr {
		return "", fmt.Errorf("unterminated string literal")
	}
	return b.String(), nil
}

// splitStatements splits comment-free SQL at semicolons outside string literals.
func splitStatements(code string) []string {
	var out []string
	start, inStr := 0, false
	for i := 0; i < len(code); i++ {
		switch c := code[i]; {
		case inStr && c == '\\':
			i++
		case c == '\'':
			inStr = !inStr
		case !inStr && c == ';':
			out = append(out, code[start:i])
			start = i + 1
		}
	}
	return append(out, code[start:])
}
