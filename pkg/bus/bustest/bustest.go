// Package bustest starts an in-process kfake broker — the real Kafka protocol, no mock — for
// tests. Tests that need Kafka call Start and talk to the returned addresses with kafka-go.
package bustest

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Start runs a single-broker kfake cluster on a free loopback port with the given topics
// (partitions each) and stops it when the test ends. It returns the bootstrap addresses.
func Start(t testing.TB, partitions int32, topics ...string) []string {
	t.Helper()
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(0),
		kfake.SeedTopics(partitions, topics...),
	)
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}
