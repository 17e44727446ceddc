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
//
// A produce is written to the partition's log file before it is acknowledged, so an
// acknowledged batch survives the broker process dying (kill -9, OOM): it is in the page
// cache. Like Kafka's default (log.flush.interval.messages unset), the log is fsynced only at
// segment roll and shutdown, so a power cut of the machine can lose the last acknowledged
// batches; production Kafka gets that durability from replication (acks=all), not fsync.
// -sync-writes fsyncs every batch and offset commit before answering instead: on this
// broker's single goroutine each fsync stalls every produce and fetch behind it.
func runKafka(args []string) int {
	fs := flag.NewFlagSet("devstack kafka", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:9092", "listen address (host must be 127.0.0.1)")
	dataDir := fs.String("data-dir", ".data/kafka", "persistence directory")
	partitionsDefault, err := strconv.Atoi(envOr("TOLLGATE_KAFKA_PARTITIONS", strconv.Itoa(usage.TopicPartitions)))
	if err != nil || partitionsDefault < 1 {
		fmt.Fprintf(os.Stderr, "kafka: TOLLGATE_KAFKA_PARTITIONS: want a count of at least 1, got %q\n", os.Getenv("TOLLGATE_KAFKA_PARTITIONS"))
		return 2
	}
	partitions := fs.Int("partitions", partitionsDefault, "partitions of each topic created on first start (env TOLLGATE_KAFKA_PARTITIONS, which ledgerd and the edge read too)")
	syncDefault, err := strconv.ParseBool(envOr("TOLLGATE_KAFKA_SYNC_WRITES", "false"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "kafka: TOLLGATE_KAFKA_SYNC_WRITES: want true or false: %v\n", err)
		return 2
	}
	syncWrites := fs.Bool("sync-writes", syncDefault, "fsync every produced batch and offset commit before acknowledging it (default: written to the log file, fsynced at segment roll and shutdown, like Kafka's default) (env TOLLGATE_KAFKA_SYNC_WRITES, which `devstack up` passes on)")
	_ = fs.Parse(args)

	_, portStr, err := net.SplitHostPort(*addr)
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil {
		fmt.Fprintf(os.Stderr, "kafka: bad -addr %q\n", *addr)
		return 2
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.DataDir(*dataDir),
		kfake.SeedTopics(int32(*partitions), usage.Topic, usage.TopicDLQ),
	}
	if *syncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kafka: start broker: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "kafka: listening on %v, data in %s, fsync every batch: %v\n", c.ListenAddrs(), *dataDir, *syncWrites)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	c.Close()
	return 0
}
