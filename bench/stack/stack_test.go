package stack_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/bench/stack"
)

// A service that cannot start fails Start with an error naming it — no panic, and nothing
// left running (here: the binaries do not exist, so the first service fails).
func TestStartFailureStopsCleanly(t *testing.T) {
	_, err := stack.Start(context.Background(), stack.Config{
		BinDir: t.TempDir(), RepoDir: t.TempDir(), DataDir: t.TempDir(), NoAnalytics: true,
		Logf: t.Logf,
	})
	require.ErrorContains(t, err, "start kafka")
}
