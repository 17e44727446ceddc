package stack

import (
	"context"
	"fmt"
	"time"
)

// StartProc starts p on its own, outside a Stack, with its log under logDir, and waits up to
// timeout for p.Ready. The bench uses it for processes a stack does not run, such as the bare
// forwarder it measures the edge against. Stop it with p.Stop.
func StartProc(ctx context.Context, p *Proc, logDir string, timeout time.Duration) error {
	return p.start(ctx, logDir, timeout)
}

// MockURL is the base URL of the stack's mock upstream (meaningful when s.Mock is not nil).
func (s *Stack) MockURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d", s.cfg.Ports.Mock)
}
