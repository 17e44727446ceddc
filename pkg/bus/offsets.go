package bus

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
)

// GroupOffsets returns the next offsets group has committed on topic, by partition;
// partitions without a commit are left out.
func GroupOffsets(ctx context.Context, brokers []string, group, topic string) (map[int]int64, error) {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	parts, err := partitions(ctx, c, topic)
	if err != nil {
		return nil, err
	}
	resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return nil, fmt.Errorf("fetch offsets of group %s: %w", group, err)
	}
	if errors.Is(resp.Error, kafka.GroupIdNotFound) {
		return map[int]int64{}, nil // no member has ever committed
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("fetch offsets of group %s: %w", group, resp.Error)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("fetch offset of group %s on %s/%d: %w", group, topic, p.Partition, p.Error)
		}
		if p.CommittedOffset >= 0 { // -1: nothing committed
			out[p.Partition] = p.CommittedOffset
		}
	}
	return out, nil
}

// ErrGroupActive: the group has members, so its offsets cannot be moved from outside it.
var ErrGroupActive = errors.New("consumer group has running members")

// SetGroupOffsets commits offsets (next offset by partition) for group on topic from
// outside the group, as an operator tool would. Kafka takes such a commit only while the
// group has no member, so it first checks that none is running and returns ErrGroupActive
// otherwise.
func SetGroupOffsets(ctx context.Context, brokers []string, group, topic string, offsets map[int]int64) error {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	d, err := c.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil {
		return fmt.Errorf("describe group %s: %w", group, err)
	}
	for _, g := range d.Groups {
		if errors.Is(g.Error, kafka.GroupIdNotFound) {
			continue // never had a member
		}
		if g.Error != nil {
			return fmt.Errorf("describe group %s: %w", group, g.Error)
		}
		if len(g.Members) > 0 {
			return fmt.Errorf("set offsets of group %s: %w (%d, state %s)", group, ErrGroupActive, len(g.Members), g.GroupState)
		}
	}
	commits := make([]kafka.OffsetCommit, 0, len(offsets))
	for p, o := range offsets {
		commits = append(commits, kafka.OffsetCommit{Partition: p, Offset: o})
	}
	sort.Slice(commits, func(i, j int) bool { return commits[i].Partition < commits[j].Partition })
	resp, err := c.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: group, GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{topic: commits}})
	if err != nil {
		return fmt.Errorf("commit offsets of group %s: %w", group, err)
	}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return fmt.Errorf("commit offset of group %s on %s/%d: %w", group, topic, p.Partition, p.Error)
		}
	}
	return nil
}

func partitions(ctx context.Context, c *kafka.Client, topic string) ([]int, error) {
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return nil, fmt.Errorf("metadata of %s: %w", topic, t.Error)
		}
		parts := make([]int, 0, len(t.Partitions))
		for _, p := range t.Partitions {
			parts = append(parts, p.ID)
		}
		sort.Ints(parts)
		return parts, nil
	}
	return nil, fmt.Errorf("metadata of %s: no such topic", topic)
}

// GroupEmptyWait is how long a process that moves its group's offsets at start should wait
// for the group to empty (SetGroupOffsetsWhenEmpty): a member killed just before it started
// stays in the group until its session (10 s for Consumer) times out.
const GroupEmptyWait = 30 * time.Second

// SetGroupOffsetsWhenEmpty is SetGroupOffsets retried once a second while the group still has
// members, for up to wait: a consumer of the group killed just before this process started
// stays a member until its session times out (10 s for Consumer). It returns nil once the
// offsets are set; otherwise the last error of SetGroupOffsets, which wraps ErrGroupActive
// when members stayed for the whole wait (or until ctx ended).
func SetGroupOffsetsWhenEmpty(ctx context.Context, brokers []string, group, topic string, offsets map[int]int64, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := SetGroupOffsets(ctx, brokers, group, topic, offsets)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrGroupActive) || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// FirstOffsets returns the earliest offset still held on each partition of topic: where a
// consumer that must read everything it can starts. Records before it are gone (retention).
func FirstOffsets(ctx context.Context, brokers []string, topic string) (map[int]int64, error) {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	parts, err := partitions(ctx, c, topic)
	if err != nil {
		return nil, err
	}
	reqs := make([]kafka.OffsetRequest, len(parts))
	for i, p := range parts {
		reqs[i] = kafka.FirstOffsetOf(p)
	}
	resp, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("list first offsets of %s: %w", topic, err)
	}
	out := make(map[int]int64, len(parts))
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("list first offset of %s/%d: %w", topic, p.Partition, p.Error)
		}
		out[p.Partition] = p.FirstOffset
	}
	if len(out) != len(parts) {
		return nil, fmt.Errorf("list first offsets of %s: %d of %d partitions answered", topic, len(out), len(parts))
	}
	return out, nil
}
