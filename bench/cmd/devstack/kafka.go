package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"

	"tollgate/pkg/usage"
)

// runKafka runs a single kfake broker — the real Kafka protocol — persisting under a data
// dir, with Tollgate's topics created on first start. Development and tests only.
func runKafka(args []string) int {
	fs := flag.NewFlagSet("devstack kafka", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:9092", "listen address (host must be 127.0.0.1)")
	dataDir := fs.String("data-dir", ".data/kafka", "persistence directory")
	partitions := fs.Int("partitions", usage.TopicPartitions, "partitions of each topic created on first start")
	_ = fs.Parse(args)

	_, portStr, err := net.SplitHostPort(*addr)
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil {
		fmt.Fprintf(os.Stderr, "kafka: bad -addr %q\n", *addr)
		return 2
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.DataDir(*dataDir),
		// Every produce is fsynced before it is acknowledged: the edge trims its WAL on ack, so
		// an ack must mean durable, even in development.
		kfake.SyncWrites(),
		kfake.SeedTopics(int32(*partitions), usage.Topic, usage.TopicDLQ),
	)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kafka: start broker: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "kafka: listening on %v, data in %s\n", c.ListenAddrs(), *dataDir)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	c.Close()
	return 0
}
