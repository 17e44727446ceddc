package procstat_test

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/bench/load/procstat"
)

func TestParseStat(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want time.Duration
	}{
		{"plain", "22049 (cat) R 22046 22046 18389 0 -1 4194304 98 0 0 0 150 25 0 0 20 0 1 0 86288 3133440 379",
			1750 * time.Millisecond},
		{"spaces and parens in comm", "7 (a) b (c)) S 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 5 6 7",
			70 * time.Millisecond},
		{"zero", "1 (init) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 6 7\n", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := procstat.ParseStat([]byte(c.in))
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

func TestParseStatRejects(t *testing.T) {
	for name, in := range map[string]string{
		"empty":        "",
		"no paren":     "1 cat R 1 2 3",
		"too short":    "1 (cat) R 1 2 3 4 5 6 7 8 9 10",
		"bad utime":    "1 (cat) R 1 1 1 0 -1 0 0 0 0 0 x 4 0 0",
		"negative":     "1 (cat) R 1 1 1 0 -1 0 0 0 0 0 -3 4 0 0",
		"out of range": "1 (cat) R 1 1 1 0 -1 0 0 0 0 0 9223372036854775807 4 0 0",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := procstat.ParseStat([]byte(in))
			require.Error(t, err)
		})
	}
}

func TestParseStatus(t *testing.T) {
	in := "Name:\tedge\nVmPeak:\t  999 kB\nVmHWM:\t    2096 kB\nVmRSS:\t    1024 kB\nThreads:\t5\n"
	got, err := procstat.ParseStatus([]byte(in))
	require.NoError(t, err)
	require.Equal(t, procstat.Snapshot{RSSBytes: 1024 * 1024, HWMBytes: 2096 * 1024}, got)

	for name, in := range map[string]string{
		"kernel thread": "Name:\tkthreadd\nThreads:\t1\n",
		"only rss":      "VmRSS:\t 1 kB\n",
		"bad unit":      "VmHWM:\t 1 MB\nVmRSS:\t 1 kB\n",
		"bad number":    "VmHWM:\t x kB\nVmRSS:\t 1 kB\n",
		"huge":          "VmHWM:\t 9223372036854775807 kB\nVmRSS:\t 1 kB\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := procstat.ParseStatus([]byte(in))
			require.Error(t, err)
		})
	}
}

func TestReadSelf(t *testing.T) {
	s, err := procstat.Read(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, s.RSSBytes)
	require.GreaterOrEqual(t, s.HWMBytes, s.RSSBytes)
	_, err = procstat.Read(1 << 30) // no such pid
	require.Error(t, err)
}

// The /proc files come from the kernel, not from an attacker, but the parsers must still never
// panic on whatever they are handed.
func FuzzParse(f *testing.F) {
	f.Add([]byte("22049 (cat) R 22046 22046 18389 0 -1 4194304 98 0 0 0 150 25 0 0"))
	f.Add([]byte("VmHWM:\t    2096 kB\nVmRSS:\t    1024 kB\n"))
	f.Add([]byte(") ) ) 1 2 3 4 5 6 7 8 9 10 11 12 13"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := procstat.ParseStat(b); err == nil && d < 0 {
			t.Fatalf("negative cpu %v", d)
		}
		if s, err := procstat.ParseStatus(b); err == nil && (s.RSSBytes < 0 || s.HWMBytes < 0) {
			t.Fatalf("negative size %+v", s)
		}
	})
}
