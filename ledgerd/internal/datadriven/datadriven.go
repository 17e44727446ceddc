// Package datadriven runs tests written as scripts, in the style of cockroachdb/datadriven:
// each directive is a command line, optional input lines, a "----" separator and the output
// expected, ended by a blank line:
//
//	# comments and blank lines between directives are kept
//	topup acme order=o1 plan=credits_1k
//	----
//	balance 1000.000000
//
// Output that itself contains blank lines is fenced by a doubled separator:
//
//	show acme
//	----
//	----
//	balance 1000.000000
//
//	lots …
//	----
//	----
//
// Run the tests with -rewrite to replace every expected output with what the code produced
// (then review the diff): the scripts are the specification, the rewrite only saves typing.
package datadriven

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of datadriven test scripts")

// Arg is one command argument: "key" or "key=value" or "key=(v1,v2)".
type Arg struct {
	Key  string
	Vals []string
}

// TestData is one directive of a script.
type TestData struct {
	Pos      string // file:line of the command, for messages
	Cmd      string
	CmdArgs  []Arg
	Input    string // lines between the command and the separator, without the last newline
	Expected string
}

// Has reports whether the argument key was given.
func (d *TestData) Has(key string) bool {
	for _, a := range d.CmdArgs {
		if a.Key == key {
			return true
		}
	}
	return false
}

// Val returns the single value of key, or "" when it was not given.
func (d *TestData) Val(key string) string {
	for _, a := range d.CmdArgs {
		if a.Key == key && len(a.Vals) > 0 {
			return a.Vals[0]
		}
	}
	return ""
}

// Positional returns the arguments given without a value, in order.
func (d *TestData) Positional() []string {
	var out []string
	for _, a := range d.CmdArgs {
		if a.Vals == nil {
			out = append(out, a.Key)
		}
	}
	return out
}

// Fatalf fails the test with the directive's position.
func (d *TestData) Fatalf(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Fatalf("%s: %s: %s", d.Pos, d.Cmd, fmt.Sprintf(format, args...))
}

const sep = "----"

// RunTest runs every directive of the script at path through f, in order, and compares
// what f returns with the expected output (or, with -rewrite, writes it into the file).
func RunTest(t *testing.T, path string, f func(t *testing.T, d *TestData) string) {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read script: %v", err)
	}
	lines := strings.Split(string(src), "\n")
	if n := len(lines); n > 0 && lines[n-1] == "" {
		lines = lines[:n-1]
	}
	var out strings.Builder // the rewritten file
	for i := 0; i < len(lines); {
		line := lines[i]
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			out.WriteString(line + "\n")
			i++
			continue
		}
		d := &TestData{Pos: fmt.Sprintf("%s:%d", path, i+1)}
		var perr error
		d.Cmd, d.CmdArgs, perr = parseCommand(line)
		if perr != nil {
			t.Fatalf("%s: %v", d.Pos, perr)
		}
		out.WriteString(line + "\n")
		i++
		var input []string
		for ; i < len(lines) && lines[i] != sep; i++ {
			input = append(input, lines[i])
		}
		if i == len(lines) {
			t.Fatalf("%s: no %q after the command", d.Pos, sep)
		}
		d.Input = strings.Join(input, "\n")
		for _, l := range input {
			out.WriteString(l + "\n")
		}
		i++ // the separator
		var expected []string
		if i < len(lines) && lines[i] == sep { // fenced output
			i++
			for ; i+1 < len(lines) && !(lines[i] == sep && lines[i+1] == sep); i++ {
				expected = append(expected, lines[i])
			}
			if i+1 >= len(lines) {
				t.Fatalf("%s: fenced output not closed by %q twice", d.Pos, sep)
			}
			i += 2
		} else {
			for ; i < len(lines) && lines[i] != ""; i++ {
				expected = append(expected, lines[i])
			}
		}
		if len(expected) > 0 {
			d.Expected = strings.Join(expected, "\n") + "\n"
		}
		actual := f(t, d)
		if actual != "" && !strings.HasSuffix(actual, "\n") {
			actual += "\n"
		}
		if strings.Contains(actual, "\n\n") {
			out.WriteString(sep + "\n" + sep + "\n" + actual + sep + "\n" + sep + "\n")
		} else {
			out.WriteString(sep + "\n" + actual)
		}
		if !*rewrite && actual != d.Expected {
			t.Errorf("%s: %s\nexpected:\n%s\nfound:\n%s", d.Pos, line, d.Expected, actual)
		}
		// The blank line that ended the directive (unfenced) is copied as a separator line
		// by the loop above on the next iteration.
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatalf("rewrite %s: %v", path, err)
		}
	}
}

// parseCommand splits "cmd a b=c d=(e,f)" into the command and its arguments. Values may
// not contain spaces.
func parseCommand(line string) (string, []Arg, error) {
	sc := bufio.NewScanner(strings.NewReader(line))
	sc.Split(bufio.ScanWords)
	var cmd string
	var args []Arg
	for sc.Scan() {
		w := sc.Text()
		if cmd == "" {
			cmd = w
			continue
		}
		k, v, ok := strings.Cut(w, "=")
		if k == "" {
			return "", nil, fmt.Errorf("bad argument %q", w)
		}
		a := Arg{Key: k}
		switch {
		case !ok:
		case strings.HasPrefix(v, "(") && strings.HasSuffix(v, ")"):
			a.Vals = strings.Split(v[1:len(v)-1], ",")
		default:
			a.Vals = []string{v}
		}
		args = append(args, a)
	}
	return cmd, args, nil
}
