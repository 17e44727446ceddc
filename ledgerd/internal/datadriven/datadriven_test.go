package datadriven

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func echo(t *testing.T, d *TestData) string {
	var b strings.Builder
	if d.Input != "" {
		b.WriteString(d.Input + "\n")
	}
	b.WriteString("args:")
	for _, a := range d.CmdArgs {
		if a.Vals == nil {
			b.WriteString(" " + a.Key)
		} else {
			fmt.Fprintf(&b, " %s=%v", a.Key, a.Vals)
		}
	}
	return b.String()
}

func TestScript(t *testing.T) {
	RunTest(t, filepath.Join("testdata", "echo.txt"), echo)
}

// With -rewrite, a script whose outputs are stale (or empty) becomes the checked-in one.
func TestRewrite(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("testdata", "echo.txt"))
	require.NoError(t, err)
	stale := strings.NewReplacer("args: x\n", "args: y\n", "hello\nargs: a b=[c] d=[e f]\n", "").Replace(string(want))
	stale = strings.Replace(stale, "----\n----\none\n\ntwo\nargs:\n----\n----\n", "----\n", 1)
	require.NotEqual(t, string(want), stale)
	path := filepath.Join(t.TempDir(), "s.txt")
	require.NoError(t, os.WriteFile(path, []byte(stale), 0o644))
	*rewrite = true
	defer func() { *rewrite = false }()
	RunTest(t, path, echo)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got))
}

func TestParseCommand(t *testing.T) {
	cmd, args, err := parseCommand("topup acme order=o1 tags=(a,b) empty=")
	require.NoError(t, err)
	require.Equal(t, "topup", cmd)
	require.Equal(t, []Arg{{"acme", nil}, {"order", []string{"o1"}}, {"tags", []string{"a", "b"}}, {"empty", []string{""}}}, args)
	d := &TestData{CmdArgs: args}
	require.Equal(t, "o1", d.Val("order"))
	require.True(t, d.Has("empty"))
	require.Equal(t, []string{"acme"}, d.Positional())
	_, _, err = parseCommand("x =v")
	require.Error(t, err)
}
