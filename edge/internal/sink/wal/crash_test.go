package wal_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/sink/wal"
	"tollgate/pkg/bus"
)

const (
	crashChildEnv     = "TOLLGATE_WAL_CRASH_CHILD_DIR"
	crashChildSyncEnv = "TOLLGATE_WAL_CRASH_CHILD_SYNC" // "always", or the default interval
)

type downKafka struct{}

func (downKafka) Send(context.Context, ...bus.Message) error { return errDown }

// crashChild is the process that gets killed: writers append as fast as they can and print
// each request id once its Append has returned.
func crashChild(dir string) {
	cfg := testConfig(dir)
	cfg.SegmentBytes = 16 << 10 // rotate often, so the kill can land mid-rotation too
	cfg.BytesMax = 1 << 30
	if os.Getenv(crashChildSyncEnv) == "always" {
		cfg.Sync = wal.SyncAlways
	}
	w, err := wal.Open(cfg, downKafka{}, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	for g := range 8 {
		go func() {
			for i := g * 1_000_000; ; i++ {
				w.Reserve()
				r := record(i)
				w.Append(r)
				mu.Lock()
				fmt.Fprintf(os.Stdout, "%d %s\n", r.Seq, r.RequestID) // unbuffered: one write per line
				mu.Unlock()
			}
		}()
	}
	select {}
}

// TestKill9KeepsEveryReturnedAppend kills a process that is appending from 8 goroutines at a
// random moment (seed in TOLLGATE_TEST_SEED, printed) and checks that every record whose
// Append had returned is recovered and shipped, once, with valid content, and that seq
// continues after the recovered ones — under both sync modes: a record is in the page cache
// once its Append returns, which is what survives the process.
func TestKill9KeepsEveryReturnedAppend(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	for _, mode := range []string{"interval", "always"} {
		t.Run(mode, func(t *testing.T) { kill9Appender(t, mode) })
	}
}

func kill9Appender(t *testing.T, mode string) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TOLLGATE_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err)
		seed = v
	}
	t.Logf("seed %d (TOLLGATE_TEST_SEED=%d replays the kill point)", seed, seed)
	killAfter := 200 + rand.New(rand.NewPCG(seed, 0)).IntN(1500)

	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9KeepsEveryReturnedAppend$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashChildSyncEnv+"="+mode)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() }) // never leave the child running

	returned := map[string]uint64{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		seqStr, id, _ := strings.Cut(sc.Text(), " ")
		seq, err := strconv.ParseUint(seqStr, 10, 64)
		if err != nil {
			continue // the test framework's own output
		}
		returned[id] = seq
		if len(returned) == killAfter {
			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		}
	}
	_ = cmd.Wait()
	require.GreaterOrEqual(t, len(returned), killAfter, "the child ran")
	t.Logf("killed after %d returned appends (%d lines read in all)", killAfter, len(returned))

	k := &fakeKafka{}
	n := open(t, testConfig(dir), k)
	ring := regexp.MustCompile(`"msg":"wal_ring_recovered","records":(\d+)`).FindStringSubmatch(n.logs.String())
	if ring != nil {
		t.Logf("%s records were only in the ring and were written to the log on open", ring[1])
	} else {
		t.Logf("the ring held no record the segments lacked")
	}
	n.flush()
	shipped := k.records()
	bySeq := map[uint64]string{}
	var maxSeq uint64
	for _, r := range shipped {
		require.NoError(t, r.Validate())
		_, dup := bySeq[r.Seq]
		require.False(t, dup, "seq %d shipped twice", r.Seq)
		bySeq[r.Seq] = r.RequestID
		maxSeq = max(maxSeq, r.Seq)
	}
	for id, seq := range returned {
		require.Equal(t, id, bySeq[seq], "record %s (seq %d) returned from Append before the kill and must survive", id, seq)
	}
	for s := uint64(1000); s <= maxSeq; s++ {
		require.Contains(t, bySeq, s, "recovered seqs are contiguous")
	}
	next := n.append(0, 1)
	require.Equal(t, maxSeq+1, next[0], "seq continues after the recovered log")
}
