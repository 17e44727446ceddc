package config_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/config"
)

func env(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := kv[k]
		return v, ok
	}
}

var required = map[string]string{
	"TOLLGATE_UPSTREAM_KEYS":   "sk-a, sk-b",
	"TOLLGATE_INTERNAL_SECRET": "s3cret",
}

func TestDefaultsWithRequiredSettings(t *testing.T) {
	cmd, err := config.Parse(nil, env(required), &bytes.Buffer{})
	require.NoError(t, err)
	c := cmd.Config
	require.Equal(t, ":8080", c.Addr)
	require.Equal(t, "127.0.0.1:9101", c.OpsAddr)
	require.Equal(t, "http://127.0.0.1:8070", c.Upstream.URL)
	require.Equal(t, []string{"sk-a", "sk-b"}, c.Upstream.Keys)
	require.Equal(t, "http://127.0.0.1:8090", c.Ledger.URL)
	require.Equal(t, []string{"127.0.0.1:9092"}, c.Kafka.Brokers)
	require.Equal(t, 32<<20, c.Server.BodyBytesMax)
	require.Equal(t, 5*time.Second, c.Ledger.KeyTTL)
	host, _ := os.Hostname()
	require.True(t, strings.HasPrefix(c.EdgeID, host+"-"), c.EdgeID)
	require.False(t, cmd.ValidateOnly)
}

func TestPrecedenceFileEnvFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "edge.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`
addr: ":7000"
edge_id: from-file
server:
  body_bytes_max: 1048576
  read_timeout: 5s
upstream:
  keys: [sk-file]
ledger:
  secret: file-secret
`), 0o600))
	e := map[string]string{"TOLLGATE_EDGE_CONFIG": file, "TOLLGATE_EDGE_ID": "from-env", "TOLLGATE_EDGE_ADDR": ":7001"}
	cmd, err := config.Parse([]string{"-addr", ":7002", "-body-bytes-max", "2MiB", "-validate"}, env(e), &bytes.Buffer{})
	require.NoError(t, err)
	c := cmd.Config
	require.Equal(t, ":7002", c.Addr, "flag beats env and file")
	require.Equal(t, "from-env", c.EdgeID, "env beats file")
	require.Equal(t, 2<<20, c.Server.BodyBytesMax)
	require.Equal(t, 5*time.Second, c.Server.ReadTimeout, "file beats default")
	require.Equal(t, []string{"sk-file"}, c.Upstream.Keys)
	require.Equal(t, "file-secret", c.Ledger.Secret)
	require.True(t, cmd.ValidateOnly)
}

func TestFileRejectsUnknownKeys(t *testing.T) {
	file := filepath.Join(t.TempDir(), "edge.yaml")
	require.NoError(t, os.WriteFile(file, []byte("upstream:\n  urll: http://x\n"), 0o600))
	_, err := config.Parse([]string{"-config", file}, env(required), &bytes.Buffer{})
	require.ErrorContains(t, err, "urll")
}

func TestValidationReportsEveryFieldWithoutSecrets(t *testing.T) {
	e := map[string]string{
		"TOLLGATE_UPSTREAM_KEYS":   "sk-dup,sk-dup",
		"TOLLGATE_UPSTREAM_URL":    "ftp://x",
		"TOLLGATE_KEY_TTL":         "9s",
		"TOLLGATE_KAFKA_BROKERS":   "nohostport",
		"TOLLGATE_BODY_BYTES_MAX":  "0",
		"TOLLGATE_RECORDS_LINGER":  "-1s",
		"TOLLGATE_DRAINS_MAX":      "0",
		"TOLLGATE_LOG_LEVEL":       "loud",
		"TOLLGATE_INTERNAL_SECRET": "",
	}
	_, err := config.Parse(nil, env(e), &bytes.Buffer{})
	require.Error(t, err)
	msg := err.Error()
	for _, path := range []string{"upstream.keys[1]: duplicate", "upstream.url", "ledger.key_ttl", "kafka.brokers[0]",
		"server.body_bytes_max", "records.linger", "upstream.drains_max", "log_level", "ledger.secret"} {
		require.Contains(t, msg, path)
	}
	require.NotContains(t, msg, "sk-dup", "keys are never echoed")
}

func TestBadValues(t *testing.T) {
	for name, args := range map[string][]string{
		"duration": {"-read-timeout", "soon"},
		"size":     {"-body-bytes-max", "lots"},
		"extra":    {"stray"},
		"unknown":  {"-no-such-flag"},
	} {
		_, err := config.Parse(args, env(required), &bytes.Buffer{})
		require.Error(t, err, name)
	}
	_, err := config.Parse([]string{"-h"}, env(required), &bytes.Buffer{})
	require.ErrorIs(t, err, flag.ErrHelp)
}

// TestReadmeDocumentsEveryOption keeps edge/README.md's configuration reference complete.
func TestReadmeDocumentsEveryOption(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	for _, o := range config.Options() {
		require.Contains(t, string(readme), "`-"+o.Flag+"`", "README lacks flag -%s", o.Flag)
		require.Contains(t, string(readme), "`"+o.Env+"`", "README lacks %s", o.Env)
	}
}
