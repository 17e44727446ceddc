// Package bus is Tollgate's Kafka plumbing over segmentio/kafka-go: a producer that waits for
// all in-sync replicas, a consumer-group reader that fetches in batches and commits explicitly,
// and topic creation. It exposes its own Message type so no service depends on kafka-go's.
package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// Message is one Kafka record as Tollgate sees it.
type Message struct {
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte
}

// Producer writes to one topic, hashing keys to partitions, with RequiredAcks=all.
// It is safe for concurrent use.
type Producer struct {
	w *kafka.Writer
}

// ProducerConfig. Zero values take the documented defaults.
type ProducerConfig struct {
	Brokers []string
	Topic   string
	// BatchSize is the most messages in one produce request to one partition. kafka-go
	// allocates room for that many messages (≈ 160 B each) in every partition batch, however
	// few it ends up holding, so set it near the messages one Send puts in one partition:
	// 1,000 with 8 partitions and 64-message Sends allocated 1.5 MB per Send, 64 allocated
	// 0.2–0.45 MB (BenchmarkProducerSend). Larger sends are split, not refused. Default: 1000.
	BatchSize int
	// BatchTimeout is how long a partial batch waits. Default: 5ms.
	BatchTimeout time.Duration
	// WriteTimeout bounds one produce request. Default: 10s.
	WriteTimeout time.Duration
}

// NewProducer builds a producer; it connects lazily.
func NewProducer(cfg ProducerConfig) *Producer {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = 5 * time.Millisecond
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	// Every option is set explicitly: kafka-go treats zero as "its default", which is not
	// always what a billing system wants (RequiredAcks in particular).
	return &Producer{w: &kafka.Writer{
		Addr:                   kafka.TCP(cfg.Brokers...),
		Topic:                  cfg.Topic,
		Balancer:               &kafka.Hash{},
		MaxAttempts:            3,
		WriteBackoffMin:        50 * time.Millisecond,
		WriteBackoffMax:        time.Second,
		BatchSize:              cfg.BatchSize,
		BatchBytes:             16 << 20,
		BatchTimeout:           cfg.BatchTimeout,
		ReadTimeout:            cfg.WriteTimeout,
		WriteTimeout:           cfg.WriteTimeout,
		RequiredAcks:           kafka.RequireAll,
		Async:                  false,
		AllowAutoTopicCreation: false,
	}}
}

// Send writes msgs and returns once all were acknowledged by all in-sync replicas, or an
// error. On error some messages may have been written: callers must be idempotent.
func (p *Producer) Send(ctx context.Context, msgs ...Message) error {
	km := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		km[i] = kafka.Message{Key: m.Key, Value: m.Value}
	}
	if err := p.w.WriteMessages(ctx, km...); err != nil {
		return fmt.Errorf("produce to %s: %w", p.w.Topic, err)
	}
	return nil
}

// Close flushes and closes. Idempotent.
func (p *Producer) Close() error { return p.w.Close() }

// ConsumerConfig. Zero values take the documented defaults.
type ConsumerConfig struct {
	Brokers []string
	Topic   string
	Group   string
	// MaxWait is the longest a fetch waits for new data. Default and minimum: FetchWaitMin.
	MaxWait time.Duration
}

// FetchWaitMin is the shortest fetch wait a consumer uses. kafka-go gives the broker that
// long, from the request, to start answering a fetch, data or not. A response of up to
// MaxBytes (what a consumer asks for when a backlog has built up: after a crash, a restart, a
// database outage) that takes longer to start times out, is retried from the same offset and
// times out again, so a short wait can keep a consumer from ever catching up. A long wait
// costs no latency — with MinBytes 1 the broker answers as soon as it has data — and only
// bounds how long Close waits for an idle fetch.
const FetchWaitMin = time.Second

// readBatchTimeout bounds the wait for each message of a fetch response once it has started.
const readBatchTimeout = 10 * time.Second

// Consumer reads one topic as a member of a consumer group. Offsets are committed only by
// Commit, never automatically. Not safe for concurrent use.
type Consumer struct {
	cfg kafka.ReaderConfig
	r   *kafka.Reader // made by the first FetchBatch: that is when the member joins the group
}

// NewConsumer builds a group consumer. It connects, and joins the group, at the first
// FetchBatch, so the group's offsets can still be set from outside (SetGroupOffsets) until
// then.
func NewConsumer(cfg ConsumerConfig) *Consumer {
	// The batch linger callers tune is FetchBatch's, not this: see FetchWaitMin.
	cfg.MaxWait = max(cfg.MaxWait, FetchWaitMin)
	return &Consumer{cfg: kafka.ReaderConfig{
		Brokers:               cfg.Brokers,
		Topic:                 cfg.Topic,
		GroupID:               cfg.Group,
		MinBytes:              1,
		MaxBytes:              16 << 20,
		MaxWait:               cfg.MaxWait,
		ReadBatchTimeout:      readBatchTimeout,
		QueueCapacity:         10000,
		CommitInterval:        0, // synchronous commits, only when we say
		StartOffset:           kafka.FirstOffset,
		HeartbeatInterval:     time.Second,
		SessionTimeout:        10 * time.Second,
		RebalanceTimeout:      10 * time.Second,
		JoinGroupBackoff:      500 * time.Millisecond,
		ReadBackoffMin:        50 * time.Millisecond,
		ReadBackoffMax:        500 * time.Millisecond,
		MaxAttempts:           3,
		WatchPartitionChanges: true,
	}}
}

func (c *Consumer) reader() *kafka.Reader {
	if c.r == nil {
		c.r = kafka.NewReader(c.cfg)
	}
	return c.r
}

// FetchBatch blocks for the first message, then gathers more until max messages or until
// linger has passed since the first one. It returns what it has when ctx ends after the first.
func (c *Consumer) FetchBatch(ctx context.Context, max int, linger time.Duration) ([]Message, error) {
	r := c.reader()
	first, err := r.FetchMessage(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", c.cfg.Topic, err)
	}
	out := []Message{fromKafka(first)}
	lctx, cancel := context.WithTimeout(ctx, linger)
	defer cancel()
	for len(out) < max {
		m, err := r.FetchMessage(lctx)
		if err != nil {
			break // linger over or ctx done: return what we have
		}
		out = append(out, fromKafka(m))
	}
	return out, nil
}

// Commit commits the offsets of msgs (the highest per partition wins).
func (c *Consumer) Commit(ctx context.Context, msgs ...Message) error {
	km := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		km[i] = kafka.Message{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset}
	}
	if err := c.reader().CommitMessages(ctx, km...); err != nil {
		return fmt.Errorf("commit offsets: %w", err)
	}
	return nil
}

// Close leaves the group. Idempotent.
func (c *Consumer) Close() error {
	if c.r == nil {
		return nil
	}
	return c.r.Close()
}

func fromKafka(m kafka.Message) Message {
	return Message{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value}
}

// EnsureTopics creates the topics that do not exist yet, with the given partition count and
// replication factor 1 when the cluster has one broker (otherwise 3).
func EnsureTopics(ctx context.Context, brokers []string, partitions int, topics ...string) error {
	if len(brokers) == 0 {
		return errors.New("ensure topics: no brokers")
	}
	d := &kafka.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return fmt.Errorf("dial %s: %w", brokers[0], err)
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("find controller: %w", err)
	}
	bs, err := conn.Brokers()
	if err != nil {
		return fmt.Errorf("list brokers: %w", err)
	}
	rf := 1
	if len(bs) >= 3 {
		rf = 3
	}
	cc, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		return fmt.Errorf("dial controller: %w", err)
	}
	defer cc.Close()
	cfgs := make([]kafka.TopicConfig, len(topics))
	for i, t := range topics {
		cfgs[i] = kafka.TopicConfig{Topic: t, NumPartitions: partitions, ReplicationFactor: rf}
	}
	if err := cc.CreateTopics(cfgs...); err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topics %v: %w", topics, err)
	}
	return nil
}
